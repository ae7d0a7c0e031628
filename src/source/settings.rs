//! What the user sets for ingest: frame sizes and rates ([`FrameSettings`]) and reconnection ([`ReconnectSettings`]).

use std::time::Duration;

use serde::Deserialize;

use super::SourceError;
use crate::geom::ResizeRule;

/// OWL-ViT (v1) B/32 input size.
pub const DEFAULT_MODEL_SIZE: (u32, u32) = (768, 768);
/// Infer on every frame.
pub const DEFAULT_EVERY: u32 = 1;
/// Live sources keep at most this many frames: the consumer sees (nearly) the freshest frame.
pub const DEFAULT_LIVE_QUEUE: usize = 2;
/// File sources buffer this many decoded frames ahead of the consumer before blocking.
pub const DEFAULT_FILE_QUEUE: usize = 8;

/// First wait after a live source fails.
pub const DEFAULT_INITIAL_BACKOFF_MS: u64 = 500;
/// Longest wait between reconnection attempts.
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 30_000;
/// Each consecutive failure multiplies the wait by this.
pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;
/// No frame for this long means the source is stalled (a camera that stops sending without closing the
/// connection is common; rtspsrc's own TCP timeout is 20 s).
pub const DEFAULT_STALL_TIMEOUT_MS: u64 = 10_000;

/// How frames are shaped and paced for the consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameSettings {
    /// OWL-ViT-style input `(width, height)`: the frame is stretched to it, aspect ratio not kept.
    /// Ignored when `keep_aspect_longest` is set. Default [`DEFAULT_MODEL_SIZE`].
    pub model_size: (u32, u32),
    /// OWLv2-style: scale so that the longer side is this many pixels, keeping the aspect ratio
    /// (the consumer pads to a square). Default `None`.
    pub keep_aspect_longest: Option<u32>,
    /// Grounding DINO-style: scale keeping the aspect ratio by one of transformers' size rules, into a box that
    /// need not be square (the consumer pads and masks the rest). Takes precedence over `keep_aspect_longest`.
    /// Default `None`.
    pub resize_rule: Option<ResizeRule>,
    /// Also deliver a full-resolution RGB copy of each frame (for annotation and crops). Default `false`.
    pub full_frames: bool,
    /// Mark every Nth decoded frame (by decoded index, 0, N, 2N, ...) for inference; the frames in between are
    /// still delivered with `infer = false`. Default [`DEFAULT_EVERY`].
    pub every: u32,
    /// Instead of `every`: infer on at most this many frames per second of stream time (by PTS). Default `None`.
    pub fps: Option<f64>,
    /// Queue capacity for live sources (drop oldest when full). Default [`DEFAULT_LIVE_QUEUE`].
    pub live_queue: usize,
    /// Queue capacity for files (block when full). Default [`DEFAULT_FILE_QUEUE`].
    pub file_queue: usize,
    /// The motion gate ([`super::motion`]): when on, the pipeline also makes a small grey copy of each frame,
    /// and picked frames where nothing moves are delivered with `infer = false`. Default: off.
    pub motion: super::MotionSettings,
}

impl Default for FrameSettings {
    fn default() -> Self {
        FrameSettings {
            model_size: DEFAULT_MODEL_SIZE,
            keep_aspect_longest: None,
            resize_rule: None,
            full_frames: false,
            every: DEFAULT_EVERY,
            fps: None,
            live_queue: DEFAULT_LIVE_QUEUE,
            file_queue: DEFAULT_FILE_QUEUE,
            motion: super::MotionSettings::default(),
        }
    }
}

impl FrameSettings {
    /// Checks the values make sense, naming the bad one.
    pub fn validate(&self) -> Result<(), SourceError> {
        let bad = |what: String| Err(SourceError::Settings(what));
        if self.keep_aspect_longest.is_none() && (self.model_size.0 == 0 || self.model_size.1 == 0) {
            return bad(format!("model size {}x{} has a zero side", self.model_size.0, self.model_size.1));
        }
        if self.keep_aspect_longest == Some(0) {
            return bad("keep_aspect_longest is 0; use the model's input size (e.g. 960 for OWLv2 B/16)".into());
        }
        if self.every == 0 {
            return bad("every is 0; use 1 to infer on every frame".into());
        }
        if let Some(fps) = self.fps
            && !(fps.is_finite() && fps > 0.0)
        {
            return bad(format!("fps {fps} must be a positive number"));
        }
        if self.live_queue == 0 || self.file_queue == 0 {
            return bad("queue capacities must be at least 1".into());
        }
        if self.motion.enabled {
            self.motion.validate().map_err(SourceError::Settings)?;
        }
        Ok(())
    }

    /// The model-branch size for a decoded frame of `width` x `height`: `model_size`, or the aspect-keeping size
    /// whose longer side is `keep_aspect_longest` (each side at least 1 pixel).
    pub fn model_size_for(&self, width: u32, height: u32) -> (u32, u32) {
        if let Some(rule) = self.resize_rule {
            let (h, w) = rule.output_hw((self.model_size.1, self.model_size.0), height.max(1), width.max(1));
            return (w, h);
        }
        match self.keep_aspect_longest {
            None => self.model_size,
            Some(longest) => {
                let (w, h) = (width.max(1) as f64, height.max(1) as f64);
                let scale = longest as f64 / w.max(h);
                let side = |v: f64| ((v * scale).round() as u32).clamp(1, longest);
                if width >= height { (longest, side(h)) } else { (side(w), longest) }
            }
        }
    }

    /// Whether the model branch's size follows the decoded size (set on its caps once they are known).
    pub fn keeps_aspect(&self) -> bool {
        self.keep_aspect_longest.is_some() || self.resize_rule.is_some_and(|r| r != ResizeRule::Exact)
    }

    /// Queue capacity for a live or file source.
    pub fn queue_capacity(&self, live: bool) -> usize {
        if live { self.live_queue } else { self.file_queue }
    }
}

/// How a live source is supervised: exponential backoff between attempts, and the stall watchdog.
///
/// Files are never retried: a file that ends or fails is over.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectSettings {
    /// Wait after the first failure, in milliseconds. Default [`DEFAULT_INITIAL_BACKOFF_MS`].
    pub initial_ms: u64,
    /// Cap on the wait, in milliseconds. Default [`DEFAULT_MAX_BACKOFF_MS`].
    pub max_ms: u64,
    /// Growth of the wait per consecutive failure. Default [`DEFAULT_BACKOFF_MULTIPLIER`].
    pub multiplier: f64,
    /// Give up after this many consecutive failed attempts (an attempt that delivered frames resets the count).
    /// Default `None`: retry for ever, as a camera that is rebooting comes back.
    pub max_attempts: Option<u32>,
    /// Restart when no frame arrived for this long, in milliseconds (also bounds the wait for the first frame).
    /// Default [`DEFAULT_STALL_TIMEOUT_MS`].
    pub stall_timeout_ms: u64,
}

impl Default for ReconnectSettings {
    fn default() -> Self {
        ReconnectSettings {
            initial_ms: DEFAULT_INITIAL_BACKOFF_MS,
            max_ms: DEFAULT_MAX_BACKOFF_MS,
            multiplier: DEFAULT_BACKOFF_MULTIPLIER,
            max_attempts: None,
            stall_timeout_ms: DEFAULT_STALL_TIMEOUT_MS,
        }
    }
}

impl ReconnectSettings {
    /// The wait before attempt `failures + 1`, after `failures` (≥ 1) consecutive failures:
    /// `initial_ms * multiplier^(failures-1)`, capped at `max_ms`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(64) as i32;
        let ms = self.initial_ms as f64 * self.multiplier.max(1.0).powi(exp);
        Duration::from_millis(ms.min(self.max_ms as f64).max(0.0) as u64)
    }

    /// The stall watchdog as a duration.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aspect_sizes() {
        let s = FrameSettings { keep_aspect_longest: Some(960), ..Default::default() };
        assert_eq!(s.model_size_for(1920, 1080), (960, 540));
        assert_eq!(s.model_size_for(1080, 1920), (540, 960));
        assert_eq!(s.model_size_for(640, 272), (960, 408));
        assert_eq!(s.model_size_for(10_000, 1), (960, 1));
        let s = FrameSettings::default();
        assert_eq!(s.model_size_for(1920, 1080), DEFAULT_MODEL_SIZE);
        // Grounding DINO's fixed 320x320 graph: transformers truncates, so 1232x693 is 319 wide.
        let s = FrameSettings {
            resize_rule: Some(ResizeRule::MaxHeightWidth { max_height: 320, max_width: 320 }),
            ..Default::default()
        };
        assert!(s.keeps_aspect());
        assert_eq!(s.model_size_for(1920, 1080), (320, 180));
        assert_eq!(s.model_size_for(1232, 693), (319, 179));
        let s = FrameSettings {
            resize_rule: Some(ResizeRule::ShortestEdge { shortest_edge: 800, longest_edge: 1333 }),
            ..Default::default()
        };
        assert_eq!(s.model_size_for(1280, 720), (1333, 750));
        assert_eq!(s.model_size_for(640, 480), (1066, 800));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let r = ReconnectSettings { initial_ms: 100, max_ms: 1000, multiplier: 2.0, ..Default::default() };
        let waits: Vec<u64> = (1..=6).map(|n| r.backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn validation_names_the_field() {
        let err = FrameSettings { every: 0, ..Default::default() }.validate().unwrap_err().to_string();
        assert!(err.contains("every"), "{err}");
        assert!(FrameSettings { fps: Some(f64::NAN), ..Default::default() }.validate().is_err());
        assert!(FrameSettings::default().validate().is_ok());
    }

    #[test]
    fn reconnect_settings_from_toml() {
        let r: ReconnectSettings = toml::from_str("initial_ms = 250\nmax_attempts = 3").unwrap();
        assert_eq!((r.initial_ms, r.max_attempts, r.max_ms), (250, Some(3), DEFAULT_MAX_BACKOFF_MS));
        assert!(toml::from_str::<ReconnectSettings>("initial = 1").is_err());
    }
}
