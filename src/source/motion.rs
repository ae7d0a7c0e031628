//! The motion gate: a cheap motion detector per source, run on a small grey copy of every frame, that lets
//! frames where nothing moves skip inference.
//!
//! Most CCTV frames show nothing moving, and running the detector on them costs as much as on any other frame.
//! Like an NVR (Frigate runs its detector only where there is motion), lookout first asks a question that costs
//! nearly nothing: did anything change?
//!
//! # The detector ([`MotionDetector`])
//!
//! GStreamer makes a grey copy of each decoded frame, [`DEFAULT_GREY_WIDTH`] pixels wide (GRAY8; the height
//! keeps the aspect ratio), in its own branch of the source's pipeline: scaling down averages out sensor noise
//! and compression artefacts, and leaves about 15 000 pixels to look at. For each of them:
//! 1. the difference from a **background**, a running average of the past frames (exponential, with a time
//!    constant of [`BACKGROUND_TIME_S`] of stream time, so it does not depend on the frame rate);
//! 2. **thresholded**: the pixel has changed when the difference is above [`MotionSettings::diff_threshold`]
//!    grey levels, which `sensitivity` sets;
//! 3. the frame **moves** when the changed pixels cover at least `min_area` of it. The box around them is the
//!    moving region (drawn by `--annotate`).
//!
//! Then the background takes a step towards the frame. An object that stops becomes background within a few
//! time constants, and the scene is still again. When most of the frame changes at once (lights switched on,
//! a camera's day/night switch: over [`RELEARN_FRACTION`]), the frame counts as moving and the background is
//! learnt again from it, instead of showing motion until the average catches up. The first frame, before there
//! is any background, counts as moving, so each source is inferred at its start.
//!
//! # The gate ([`MotionGate`])
//!
//! A frame picked for inference (by `every` or `fps`) is inferred when it moves, or when no frame of the source
//! has been inferred for `max_interval` of stream time: a target standing still is checked again that often.
//! Otherwise it is **skipped** (counted in [`super::SourceStatsSnapshot::frames_skipped_still`]) and delivered
//! with `infer = false` and a still [`Motion`]: the tracker holds its tracks on such a frame, and the event
//! engine does not count it as a miss (see `crate::track`).

use std::time::Duration;

use crate::geom::PixelBox;

/// Width of the grey copy the detector looks at, in pixels.
pub const DEFAULT_GREY_WIDTH: u32 = 160;
/// Default [`MotionSettings::sensitivity`]: a change of 30 grey levels (of 255) counts, as Frigate's default.
pub const DEFAULT_SENSITIVITY: f32 = 0.7;
/// Default [`MotionSettings::min_area`]: 0.1% of the frame, 14 pixels of a 160x90 grey copy; a person 40 m from
/// a 1080p camera with a 90° lens covers about that much.
pub const DEFAULT_MIN_AREA: f32 = 0.001;
/// Default [`MotionSettings::max_interval`]: a still scene is still checked every 5 s.
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(5);
/// Time constant of the running-average background, in seconds of stream time: each frame moves the background
/// towards itself by `1 - exp(-dt / BACKGROUND_TIME_S)`. A person who stops is background (and the frames still)
/// about 4 s later at the default sensitivity.
pub const BACKGROUND_TIME_S: f64 = 2.0;
/// When more than this fraction of the frame changes at once, the background is learnt again from the frame.
pub const RELEARN_FRACTION: f32 = 0.6;
/// The smallest change that counts at sensitivity 1, in grey levels.
const MIN_DIFF: f32 = 8.0;
/// The smallest change that counts at sensitivity 0, in grey levels.
const MAX_DIFF: f32 = 80.0;

/// What the user sets for the motion gate (`[motion]`, a source's `motion = { ... }`, `--motion`).
#[derive(Debug, Clone, PartialEq)]
pub struct MotionSettings {
    /// Run the gate. Default: on for live sources, off for files (see the README, "Motion gate").
    pub enabled: bool,
    /// How small a change of brightness counts, 0 to 1: a pixel has changed when it differs from the background
    /// by more than `8 + 72 × (1 − sensitivity)` grey levels of 255 (1: 8 levels, 0.7: 30, 0: 80). Higher finds
    /// fainter motion and also more noise. Default [`DEFAULT_SENSITIVITY`].
    pub sensitivity: f32,
    /// The least fraction of the frame that must change for the frame to move, 0 to 1. Default
    /// [`DEFAULT_MIN_AREA`].
    pub min_area: f32,
    /// A frame picked for inference is inferred anyway when no frame was for this long (stream time). Default
    /// [`DEFAULT_MAX_INTERVAL`].
    pub max_interval: Duration,
    /// Width of the grey copy, in pixels. Default [`DEFAULT_GREY_WIDTH`].
    pub grey_width: u32,
}

impl Default for MotionSettings {
    fn default() -> Self {
        MotionSettings {
            enabled: false,
            sensitivity: DEFAULT_SENSITIVITY,
            min_area: DEFAULT_MIN_AREA,
            max_interval: DEFAULT_MAX_INTERVAL,
            grey_width: DEFAULT_GREY_WIDTH,
        }
    }
}

impl MotionSettings {
    /// The default settings, on.
    pub fn on() -> Self {
        MotionSettings { enabled: true, ..Default::default() }
    }

    /// The default settings of a source: on for a live source (a camera that mostly watches nothing move, where
    /// each skipped frame is compute saved for the other cameras), off for a file (footage replayed to be
    /// searched, where every picked frame is wanted and there is no hurry).
    pub fn default_for(live: bool) -> Self {
        MotionSettings { enabled: live, ..Default::default() }
    }

    /// The grey levels a pixel must differ from the background by to count as changed.
    pub fn diff_threshold(&self) -> f32 {
        MIN_DIFF + (MAX_DIFF - MIN_DIFF) * (1.0 - self.sensitivity.clamp(0.0, 1.0))
    }

    /// Checks the values, naming the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sensitivity) {
            return Err(format!("motion sensitivity {} is out of range; give 0 to 1 (default 0.7)", self.sensitivity));
        }
        if !(0.0..=1.0).contains(&self.min_area) {
            return Err(format!(
                "motion min_area {} is out of range; give a fraction of the frame from 0 to 1 (default 0.001)",
                self.min_area
            ));
        }
        if self.max_interval.is_zero() {
            return Err("motion max_interval is 0; give a duration such as \"5s\" (default 5s)".into());
        }
        if self.grey_width < 8 {
            return Err(format!("motion grey width {} is too small; use at least 8 (default 160)", self.grey_width));
        }
        Ok(())
    }

    /// The size of the grey copy of a `width` x `height` frame: [`MotionSettings::grey_width`] wide (never wider
    /// than the frame), the height keeping the aspect ratio, rounded to even (at least 2).
    pub fn grey_size_for(&self, width: u32, height: u32) -> (u32, u32) {
        let w = self.grey_width.min(width.max(1));
        // Even, for the converters that give I420 first (nvvidconv).
        let h = ((height.max(1) as f64 * w as f64 / width.max(1) as f64 / 2.0).round().max(1.0) as u32) * 2;
        (w, h)
    }
}

/// A grey image as the grey branch delivers it: one byte per pixel, rows `stride` bytes apart.
#[derive(Debug, Clone, Copy)]
pub struct GreyImage<'a> {
    pub width: u32,
    pub height: u32,
    pub stride: usize,
    pub data: &'a [u8],
}

impl GreyImage<'_> {
    fn row(&self, y: u32) -> &[u8] {
        let start = y as usize * self.stride;
        &self.data[start..start + self.width as usize]
    }

    fn fits(&self) -> bool {
        self.width > 0
            && self.height > 0
            && self.stride >= self.width as usize
            && self.data.len() >= self.stride * (self.height as usize - 1) + self.width as usize
    }
}

/// What the motion detector saw on one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Motion {
    /// The frame moves: enough of it changed (or it is the first, or the lighting changed).
    pub moving: bool,
    /// The fraction of the frame that changed, 0 to 1.
    pub changed: f32,
    /// The box around the changed pixels, in pixels of the decoded frame; `None` when nothing changed.
    pub region: Option<PixelBox>,
}

/// The background of one source: a running average of its grey frames.
#[derive(Debug)]
struct Background {
    width: u32,
    height: u32,
    /// Grey levels, `width * height`, row by row.
    pixels: Vec<f32>,
    /// Stream time of the last frame, in ns.
    last_ns: u64,
}

/// The motion detector of one source. See the module documentation.
#[derive(Debug)]
pub struct MotionDetector {
    settings: MotionSettings,
    /// `None` before the first frame (and after [`MotionDetector::reset`]).
    background: Option<Background>,
}

impl MotionDetector {
    pub fn new(settings: MotionSettings) -> Self {
        MotionDetector { settings, background: None }
    }

    /// Forgets the background (a new connection: the camera may have moved).
    pub fn reset(&mut self) {
        self.background = None;
    }

    /// Compares a grey frame at stream time `t_ns` with the background, then updates the background.
    /// `(full_width, full_height)` is the decoded frame's size, for the region. A frame whose size differs from
    /// the background's, or whose time goes backwards, starts a new background.
    pub fn observe(&mut self, grey: &GreyImage<'_>, t_ns: u64, full_width: u32, full_height: u32) -> Motion {
        let first = Motion { moving: true, changed: 0.0, region: None };
        if !grey.fits() {
            return first;
        }
        let (w, h) = (grey.width, grey.height);
        let bg = match &mut self.background {
            Some(bg) if bg.width == w && bg.height == h && t_ns >= bg.last_ns => bg,
            _ => {
                let pixels = (0..h).flat_map(|y| grey.row(y).iter().map(|&v| f32::from(v))).collect();
                self.background = Some(Background { width: w, height: h, pixels, last_ns: t_ns });
                return first;
            }
        };
        let threshold = self.settings.diff_threshold();
        let dt_s = (t_ns - bg.last_ns) as f64 / 1e9;
        let alpha = (1.0 - (-dt_s / BACKGROUND_TIME_S).exp()) as f32;
        bg.last_ns = t_ns;
        let (mut changed, mut x0, mut y0, mut x1, mut y1) = (0usize, u32::MAX, u32::MAX, 0u32, 0u32);
        for y in 0..h {
            let row = grey.row(y);
            let bg_row = &mut bg.pixels[(y * w) as usize..((y + 1) * w) as usize];
            for (x, (b, &v)) in bg_row.iter_mut().zip(row).enumerate() {
                let v = f32::from(v);
                if (v - *b).abs() > threshold {
                    changed += 1;
                    let x = x as u32;
                    (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
                }
                *b += alpha * (v - *b);
            }
        }
        let area = (w * h) as f32;
        let fraction = changed as f32 / area;
        if fraction > RELEARN_FRACTION {
            for y in 0..h {
                let bg_row = &mut bg.pixels[(y * w) as usize..((y + 1) * w) as usize];
                for (b, &v) in bg_row.iter_mut().zip(grey.row(y)) {
                    *b = f32::from(v);
                }
            }
        }
        let region = (changed > 0).then(|| {
            let (sx, sy) = (full_width.max(1) as f32 / w as f32, full_height.max(1) as f32 / h as f32);
            PixelBox { x0: x0 as f32 * sx, y0: y0 as f32 * sy, x1: (x1 + 1) as f32 * sx, y1: (y1 + 1) as f32 * sy }
        });
        // At least one pixel, so that min_area = 0 does not make every frame move.
        let moving = changed > 0 && fraction >= self.settings.min_area;
        Motion { moving, changed: fraction, region }
    }
}

/// What the gate decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateDecision {
    /// Infer the frame.
    pub infer: bool,
    /// The frame was picked for inference but skipped because nothing moved.
    pub skipped: bool,
}

/// The motion gate of one source: its detector, and when a frame was last inferred. See the module
/// documentation.
#[derive(Debug)]
pub struct MotionGate {
    detector: MotionDetector,
    max_interval_ns: u64,
    /// Stream time of the last frame let through for inference.
    last_infer_ns: Option<u64>,
}

impl MotionGate {
    pub fn new(settings: MotionSettings) -> Self {
        let max_interval_ns = settings.max_interval.as_nanos().min(u64::MAX as u128) as u64;
        MotionGate { detector: MotionDetector::new(settings), max_interval_ns, last_infer_ns: None }
    }

    /// A new connection: a new background, and the next picked frame is inferred.
    pub fn reset(&mut self) {
        self.detector.reset();
        self.last_infer_ns = None;
    }

    /// Runs the detector on a frame's grey copy (`None` when it had none: the frame then counts as moving, so a
    /// missing copy never hides a frame) and decides whether the frame, `picked` by `every`/`fps`, is inferred.
    pub fn decide(
        &mut self,
        picked: bool,
        grey: Option<&GreyImage<'_>>,
        t_ns: u64,
        full_size: (u32, u32),
    ) -> (GateDecision, Motion) {
        let motion = match grey {
            Some(g) => self.detector.observe(g, t_ns, full_size.0, full_size.1),
            None => Motion { moving: true, changed: 0.0, region: None },
        };
        if self.last_infer_ns.is_some_and(|last| t_ns < last) {
            // Timestamps restart after a live reconnect.
            self.last_infer_ns = None;
        }
        let due = self.last_infer_ns.is_none_or(|last| t_ns - last >= self.max_interval_ns);
        let infer = picked && (motion.moving || due);
        if infer {
            self.last_infer_ns = Some(t_ns);
        }
        (GateDecision { infer, skipped: picked && !infer }, motion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u32 = 160;
    const H: u32 = 90;
    const FRAME_NS: u64 = 40_000_000;

    /// A grey frame of one level with a `side` x `side` square of `fg` at `(x, y)`.
    fn frame(bg: u8, square: Option<(u32, u32, u32, u8)>) -> Vec<u8> {
        let mut v = vec![bg; (W * H) as usize];
        if let Some((x, y, side, fg)) = square {
            for yy in y..(y + side).min(H) {
                for xx in x..(x + side).min(W) {
                    v[(yy * W + xx) as usize] = fg;
                }
            }
        }
        v
    }

    fn image(data: &[u8]) -> GreyImage<'_> {
        GreyImage { width: W, height: H, stride: W as usize, data }
    }

    #[test]
    fn the_first_frame_moves_and_a_still_scene_does_not() {
        let mut d = MotionDetector::new(MotionSettings::on());
        let still = frame(60, None);
        assert!(d.observe(&image(&still), 0, 1280, 720).moving, "no background yet");
        for i in 1..50 {
            let m = d.observe(&image(&still), i * FRAME_NS, 1280, 720);
            assert!(!m.moving && m.changed == 0.0 && m.region.is_none(), "frame {i}: {m:?}");
        }
    }

    #[test]
    fn noise_below_the_threshold_is_still() {
        let mut d = MotionDetector::new(MotionSettings::on());
        d.observe(&image(&frame(100, None)), 0, W, H);
        // ±20 grey levels everywhere, in a fixed pattern: under the default 30.
        let noisy: Vec<u8> = (0..W * H).map(|i| if i % 3 == 0 { 120 } else { 80 }).collect();
        let m = d.observe(&image(&noisy), FRAME_NS, W, H);
        assert!(!m.moving && m.changed == 0.0, "{m:?}");
        // At sensitivity 1 (8 levels) the same frame moves; it changes most of the frame, so the background is
        // learnt again from it and the next identical frame is still.
        let mut d = MotionDetector::new(MotionSettings { sensitivity: 1.0, ..MotionSettings::on() });
        d.observe(&image(&frame(100, None)), 0, W, H);
        assert!(d.observe(&image(&noisy), FRAME_NS, W, H).moving);
        assert!(!d.observe(&image(&noisy), 2 * FRAME_NS, W, H).moving, "relearnt");
    }

    #[test]
    fn a_moving_square_moves_and_its_region_is_mapped_to_the_full_frame() {
        let mut d = MotionDetector::new(MotionSettings::on());
        d.observe(&image(&frame(0, None)), 0, 1280, 720);
        // 8x8 grey pixels = 64 of 14 400 (0.44%): above the default 0.1%.
        let m = d.observe(&image(&frame(0, Some((40, 20, 8, 255)))), FRAME_NS, 1280, 720);
        assert!(m.moving, "{m:?}");
        assert!((m.changed - 64.0 / (W * H) as f32).abs() < 1e-6);
        // 8x scale: x 40..48 → 320..384, y 20..28 → 160..224.
        assert_eq!(m.region, Some(PixelBox { x0: 320.0, y0: 160.0, x1: 384.0, y1: 224.0 }));
    }

    #[test]
    fn min_area_decides_how_much_must_change() {
        let settings = MotionSettings { min_area: 0.01, ..MotionSettings::on() };
        let mut d = MotionDetector::new(settings);
        d.observe(&image(&frame(0, None)), 0, W, H);
        // 64 pixels = 0.44% < 1%: changed, but not moving.
        let m = d.observe(&image(&frame(0, Some((40, 20, 8, 255)))), FRAME_NS, W, H);
        assert!(!m.moving && m.changed > 0.0 && m.region.is_some(), "{m:?}");
        // 16x16 = 1.8%: moving.
        let m = d.observe(&image(&frame(0, Some((60, 20, 16, 255)))), 2 * FRAME_NS, W, H);
        assert!(m.moving, "{m:?}");
    }

    #[test]
    fn an_object_that_stops_becomes_background() {
        let mut d = MotionDetector::new(MotionSettings::on());
        d.observe(&image(&frame(0, None)), 0, W, H);
        let parked = frame(0, Some((40, 20, 10, 200)));
        let mut still_from = None;
        for i in 1..=500u64 {
            let m = d.observe(&image(&parked), i * FRAME_NS, W, H);
            if i == 1 {
                assert!(m.moving);
            }
            if !m.moving && still_from.is_none() {
                still_from = Some(i);
            }
            if still_from.is_some() {
                assert!(!m.moving, "frame {i} moves again");
            }
        }
        // 200 levels decay below 30 after ln(200/30) time constants: 3.8 s, 95 frames at 25 fps.
        let t = still_from.expect("becomes still") as f64 * FRAME_NS as f64 / 1e9;
        assert!((3.5..4.2).contains(&t), "{t}");
    }

    #[test]
    fn padded_rows_and_a_new_size_start_again() {
        let mut d = MotionDetector::new(MotionSettings::on());
        // 10x2 frame with rows padded to 12 bytes.
        let mut data = vec![50u8; 24];
        let img = GreyImage { width: 10, height: 2, stride: 12, data: &data };
        d.observe(&img, 0, 10, 2);
        // The padding changes: nothing moves.
        data[10] = 255;
        data[11] = 255;
        let img = GreyImage { width: 10, height: 2, stride: 12, data: &data };
        assert!(!d.observe(&img, FRAME_NS, 10, 2).moving);
        // A different size: a new background, counted as moving.
        let img = GreyImage { width: 8, height: 2, stride: 8, data: &data[..16] };
        assert!(d.observe(&img, 2 * FRAME_NS, 8, 2).moving);
        // Too short a buffer is never trusted as still.
        let img = GreyImage { width: 10, height: 3, stride: 12, data: &data };
        assert!(d.observe(&img, 3 * FRAME_NS, 10, 3).moving);
    }

    #[test]
    fn the_gate_skips_still_frames_and_infers_after_max_interval() {
        let mut gate = MotionGate::new(MotionSettings { max_interval: Duration::from_secs(2), ..MotionSettings::on() });
        let still = frame(30, None);
        let mut inferred = Vec::new();
        let mut skipped = 0;
        // 6 s at 25 fps, every frame picked.
        for i in 0..150u64 {
            let (d, m) = gate.decide(true, Some(&image(&still)), i * FRAME_NS, (W, H));
            assert_eq!(d.skipped, !d.infer);
            assert_eq!(m.moving, i == 0);
            if d.infer {
                inferred.push(i);
            } else {
                skipped += 1;
            }
        }
        // The first (no background), then every 2 s (50 frames).
        assert_eq!(inferred, [0, 50, 100]);
        assert_eq!(skipped, 147);
        // A frame not picked is never inferred, nor counted as skipped.
        let (d, _) = gate.decide(false, Some(&image(&frame(30, Some((0, 0, 40, 255))))), 150 * FRAME_NS, (W, H));
        assert_eq!(d, GateDecision { infer: false, skipped: false });
        // A moving frame that is picked is inferred.
        let (d, m) = gate.decide(true, Some(&image(&frame(30, Some((50, 0, 40, 255))))), 151 * FRAME_NS, (W, H));
        assert!(d.infer && m.moving);
        // Without a grey copy the frame counts as moving.
        let (d, m) = gate.decide(true, None, 152 * FRAME_NS, (W, H));
        assert!(d.infer && m.moving);
        // Timestamps that restart (a reconnect) make the next frame due.
        gate.decide(true, Some(&image(&still)), 153 * FRAME_NS, (W, H));
        let (d, _) = gate.decide(true, Some(&image(&still)), 0, (W, H));
        assert!(d.infer);
    }

    #[test]
    fn settings_are_checked_and_sizes_keep_the_aspect() {
        assert!(MotionSettings::on().validate().is_ok());
        assert!(MotionSettings { sensitivity: 1.5, ..MotionSettings::on() }.validate().unwrap_err().contains("0 to 1"));
        assert!(MotionSettings { min_area: -0.1, ..MotionSettings::on() }.validate().is_err());
        assert!(MotionSettings { max_interval: Duration::ZERO, ..MotionSettings::on() }.validate().is_err());
        assert_eq!(MotionSettings::on().diff_threshold().round(), 30.0);
        assert_eq!(MotionSettings { sensitivity: 1.0, ..MotionSettings::on() }.diff_threshold(), 8.0);
        assert_eq!(MotionSettings { sensitivity: 0.0, ..MotionSettings::on() }.diff_threshold(), 80.0);
        let s = MotionSettings::on();
        assert_eq!(s.grey_size_for(1920, 1080), (160, 90));
        assert_eq!(s.grey_size_for(640, 272), (160, 68));
        assert_eq!(s.grey_size_for(100, 50), (100, 50));
        assert_eq!(s.grey_size_for(1080, 1920), (160, 284));
    }
}
