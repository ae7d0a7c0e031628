//! The evidence of one event, made from its full-frame clip: a clip cropped to the event, two snapshots and a
//! sidecar JSON with every box (issue 4, "Clips and snapshots").
//!
//! The clip writer calls these on its own worker thread once `<out>/<source>/<event-id>.mp4` is complete:
//!
//! | file                 | function               | what                                                        |
//! |----------------------|------------------------|-------------------------------------------------------------|
//! | `<event-id>-crop.mp4`| [`write_crop_clip`]    | every frame of the clip cropped to the event's region, H.264 |
//! | `<event-id>.jpg`     | [`write_snapshots`]    | the full frame at the peak, with its box and "label score"  |
//! | `<event-id>-crop.jpg`| [`write_snapshots`]    | the peak box plus the margin, without drawing               |
//! | `<event-id>.json`    | [`write_sidecar`]      | the event and the box and score of each of its frames       |
//!
//! # The crop region
//!
//! [`CropRegion::around`] decides it, once for the whole clip, in pixels of the full frame:
//! 1. the union of the event's boxes (boxes with a corner that is not a number are ignored), clipped to the frame;
//! 2. plus [`EvidenceSettings::crop_margin`] of the union's width (height) on the left and right (top and bottom);
//! 3. widened to at least [`MIN_REGION_PX`] on each side, and its shorter side widened to at least 1/[`MAX_ASPECT`]
//!    of its longer side, so a thin box does not become a 320x5000 video;
//! 4. moved (not cut) to lie inside the frame; only when it is larger than the frame is it cut to the frame;
//! 5. its corners rounded outwards to even pixels, so its offset and size are even (4:2:0 video needs that).
//!
//! The output is the region scaled up, keeping its aspect ratio, until its shorter side is at least
//! [`EvidenceSettings::crop_min_size`] (both sides even); a region already that large is not scaled.
//! The region is never larger than the frame, so a frame smaller than `crop_min_size` is cropped to at most
//! itself and then scaled up like any small region: a 200x100 clip with the default 320 gives up to 640x320.
//! A frame narrower or lower than 2 pixels cannot be cropped to an even size: [`EvidenceError::FrameTooSmall`].
//! Pixels are taken as square (the output has a pixel aspect ratio of 1/1), as camera streams have them.
//!
//! # Pipelines
//!
//! ```text
//! crop clip: filesrc ─ decodebin ─ videocrop ─ videoscale ─ WxH ─ videoconvert ─ I420 ─ <encoder> ─ h264parse
//!            ─ mp4mux ─ filesink .<event-id>-crop.mp4.part
//! snapshot:  filesrc ─ decodebin ─ videoconvert ─ RGB ─ appsink; prerolled (the first frame), then an accurate
//!            seek to just before the peak, and the frame nearest to it is taken
//! ```
//!
//! Cropping and scaling are GStreamer's; the only pixels Rust touches are those of the two snapshots.
//! `<encoder>` is [`EvidenceSettings::encoder`], a gst-launch fragment (the `encoder` of `pipelines/*.toml`).
//!
//! # Files are never half-written
//!
//! Each file is written as `.<name>.part` in its own directory, synced, and renamed to `<name>`; on any error the
//! `.part` file is removed. A file under its final name is therefore always whole.
//!
//! # Threads
//!
//! Everything runs on the caller's thread and blocks until the file is complete (or [`PIPELINE_TIMEOUT`] has
//! passed). No thread is started here; GStreamer's streaming threads belong to the pipeline, which is set to
//! NULL (stopping them) before every return. Nothing is shared, so there are no locks.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use serde::{Deserialize, Serialize};

use super::events::{Peak, Stamp, round_us};
use crate::draw::{Canvas, annotate_detections};
use crate::geom::{Detection, PixelBox};
use crate::gst::bus::{self, WaitError};
use crate::gst::part::{self, PartError, PartName};
use crate::redact::redact_url;
use crate::track::{FrameTime, LifecycleEvent};

/// Default [`EvidenceSettings::crop_margin`].
pub const DEFAULT_CROP_MARGIN: f32 = 0.2;
/// Default [`EvidenceSettings::crop_min_size`].
pub const DEFAULT_CROP_MIN_SIZE: u32 = 320;
/// Default [`EvidenceSettings::jpeg_quality`].
pub const DEFAULT_JPEG_QUALITY: u8 = 90;
/// The crop region is at least this many pixels wide and high (or the whole frame, if smaller).
pub const MIN_REGION_PX: u32 = 16;
/// The crop region's longer side is at most this many times its shorter side (unless the frame is thinner).
pub const MAX_ASPECT: f32 = 4.0;
/// How long one file may take to decode and encode before it is given up.
pub const PIPELINE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a clip may take to show its first decoded frame before it is taken as undecodable.
///
/// decodebin can lose the error of a demuxer that fails while it is being plugged (seen with an MP4 cut before
/// its index: most times an error, sometimes nothing at all), so a clip that never prerolls is given up on.
pub const PREROLL_TIMEOUT: Duration = Duration::from_secs(20);
/// Version of the sidecar's schema ([`Sidecar::schema_version`]); raised on any change that breaks readers.
pub const SIDECAR_SCHEMA_VERSION: u32 = 1;

/// One frame's box of an event (stream time, pixels of the full decoded frame).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameBox {
    /// Index of the video frame in the source (as in `events.jsonl`).
    pub frame: u64,
    /// Stream time of the frame in seconds (as in `events.jsonl`).
    pub pts_s: f64,
    /// `[x0, y0, x1, y1]` in pixels of the full frame.
    #[serde(rename = "box")]
    pub bbox: PixelBox,
    /// Score of the match, 0..1.
    pub score: f32,
}

/// What the user sets for the evidence of events.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceSettings {
    /// Fraction of the union box's width (height) added on its left and right (top and bottom). Default 0.2.
    pub crop_margin: f32,
    /// The cropped clip and the crop snapshot are scaled up until their shorter side is at least this many
    /// pixels. Default 320.
    pub crop_min_size: u32,
    /// JPEG quality of the snapshots, 1..=100. Default 90.
    pub jpeg_quality: u8,
    /// gst-launch description of a raw video (I420) to H.264 encoder: the `encoder` of `pipelines/*.toml`, such
    /// as `x264enc speed-preset=superfast` or, on Jetson, `nvvidconv ! nvv4l2h264enc`. Default: that of the
    /// generic template, x264enc as the annotated video ([`super::video`]) sets it up (`veryfast`, a keyframe at
    /// least every 60 frames).
    pub encoder: String,
}

impl Default for EvidenceSettings {
    fn default() -> Self {
        EvidenceSettings {
            crop_margin: DEFAULT_CROP_MARGIN,
            crop_min_size: DEFAULT_CROP_MIN_SIZE,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
            encoder: crate::gst::generic_encoder(crate::gst::EncoderPurpose::Record),
        }
    }
}

/// Where an event is cropped from the full frame, and the size it is scaled to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropRegion {
    /// Left edge in pixels of the full frame; even.
    pub x: u32,
    /// Top edge in pixels of the full frame; even.
    pub y: u32,
    /// Width in pixels of the full frame; even, at least 2.
    pub width: u32,
    /// Height in pixels of the full frame; even, at least 2.
    pub height: u32,
    /// Width of the output (the crop scaled up); even.
    pub out_width: u32,
    /// Height of the output; even.
    pub out_height: u32,
}

impl CropRegion {
    /// The region for `boxes` in a frame of `frame_width` x `frame_height` pixels (see the module documentation),
    /// or `None` when no box has four finite corners or the frame is less than 2x2 pixels.
    pub fn around(
        boxes: impl IntoIterator<Item = PixelBox>,
        frame_width: u32,
        frame_height: u32,
        s: &EvidenceSettings,
    ) -> Option<CropRegion> {
        // Even frame sizes: an odd last column or row is never part of the crop.
        let (fw, fh) = (frame_width & !1, frame_height & !1);
        if fw < 2 || fh < 2 {
            return None;
        }
        let finite = |b: &PixelBox| b.x0.is_finite() && b.y0.is_finite() && b.x1.is_finite() && b.y1.is_finite();
        let union = boxes
            .into_iter()
            .filter(finite)
            .map(|b| PixelBox { x0: b.x0.min(b.x1), y0: b.y0.min(b.y1), x1: b.x0.max(b.x1), y1: b.y0.max(b.y1) })
            .reduce(|a, b| a.union(&b))?
            .clip(fw, fh);
        let margin = if s.crop_margin.is_finite() { s.crop_margin.max(0.0) } else { DEFAULT_CROP_MARGIN };
        let (fwf, fhf) = (fw as f32, fh as f32);
        let (cx, cy) = ((union.x0 + union.x1) / 2.0, (union.y0 + union.y1) / 2.0);
        let mut w = union.width() * (1.0 + 2.0 * margin);
        let mut h = union.height() * (1.0 + 2.0 * margin);
        w = w.max(MIN_REGION_PX as f32);
        h = h.max(MIN_REGION_PX as f32);
        w = w.max(h / MAX_ASPECT);
        h = h.max(w / MAX_ASPECT);
        let (x0, x1) = place(cx, w.min(fwf), fwf);
        let (y0, y1) = place(cy, h.min(fhf), fhf);
        // Outwards to even pixels; fw and fh are even, so the clamp keeps them even.
        let floor_even = |v: f32| (v.max(0.0).floor() as u32) & !1;
        let ceil_even = |v: f32, max: u32| ((v.ceil().max(0.0) as u32).saturating_add(1) & !1).min(max);
        let (x, y) = (floor_even(x0), floor_even(y0));
        let (width, height) = (ceil_even(x1, fw) - x, ceil_even(y1, fh) - y);
        // At least 2x2: the frame is, and a region of less is grown on the side that has room.
        let (x, width) = at_least_two(x, width, fw);
        let (y, height) = at_least_two(y, height, fh);
        let (out_width, out_height) = scaled_up(width, height, s.crop_min_size);
        Some(CropRegion { x, y, width, height, out_width, out_height })
    }

    /// The region as a box in pixels of the full frame.
    pub fn as_box(&self) -> PixelBox {
        PixelBox {
            x0: self.x as f32,
            y0: self.y as f32,
            x1: (self.x + self.width) as f32,
            y1: (self.y + self.height) as f32,
        }
    }

    /// Whether `b` lies wholly inside the region.
    pub fn contains(&self, b: &PixelBox) -> bool {
        let r = self.as_box();
        b.x0 >= r.x0 && b.y0 >= r.y0 && b.x1 <= r.x1 && b.y1 <= r.y1
    }
}

/// An interval of length `len` (at most `max`) centred on `centre` where possible, moved to lie in `[0, max]`.
fn place(centre: f32, len: f32, max: f32) -> (f32, f32) {
    let start = (centre - len / 2.0).clamp(0.0, (max - len).max(0.0));
    (start, (start + len).min(max))
}

/// `(start, len)` grown to at least 2 inside `[0, max]` (`max` is even and at least 2).
fn at_least_two(start: u32, len: u32, max: u32) -> (u32, u32) {
    if len >= 2 { (start, len) } else { (start.min(max - 2), 2) }
}

/// `width` x `height` scaled up, keeping the aspect ratio, until the shorter side is at least `min_size`;
/// both rounded up to even.
fn scaled_up(width: u32, height: u32, min_size: u32) -> (u32, u32) {
    let short = width.min(height).max(1) as u64;
    let min = min_size as u64;
    if short >= min {
        return (width, height);
    }
    // Integer arithmetic, so that the shorter side is exactly `min_size` (rounded up to even), never one more.
    let up = |v: u32| (v as u64 * min).div_ceil(short);
    let even = |v: u64| (v.saturating_add(1) & !1).min(u32::MAX as u64 - 1) as u32;
    (even(up(width)), even(up(height)))
}

/// The file names of an event's evidence, relative to the sidecar's directory (`<out>/<source>/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceFiles {
    /// `<event-id>.mp4`: the full frame, pre-roll to post-roll.
    pub clip: Option<String>,
    /// `<event-id>-crop.mp4`: cropped to [`Sidecar::crop`]; null when it could not be written.
    pub crop_clip: Option<String>,
    /// `<event-id>.jpg`: the full frame at the peak with its box; null when it could not be written.
    pub snapshot: Option<String>,
    /// `<event-id>-crop.jpg`: the peak box plus the margin; null when it could not be written.
    pub crop_snapshot: Option<String>,
}

impl EvidenceFiles {
    /// The names [`super::events::Clips::planned`] gives the files of `event_id`, without the directory.
    pub fn planned(event_id: &str) -> Self {
        let name = |suffix: &str| Some(format!("{event_id}{suffix}"));
        EvidenceFiles {
            clip: name(".mp4"),
            crop_clip: name("-crop.mp4"),
            snapshot: name(".jpg"),
            crop_snapshot: name("-crop.jpg"),
        }
    }
}

/// The sidecar `<event-id>.json`: the event and the box and score of every frame of its clip.
///
/// ```json
/// {
///   "schema_version": 1,
///   "event_id": "gate-0-7-120",
///   "source": "rtsp://***@10.0.0.5/stream",
///   "query": "a person climbing the fence",
///   "label": "climbing",
///   "track_id": 7,
///   "start": {"frame": 120, "pts_s": 4.8},
///   "end": {"frame": 301, "pts_s": 12.04},
///   "peak": {"frame": 122, "pts_s": 4.88, "score": 0.41, "box": [310.0, 42.5, 388.0, 260.0]},
///   "clip_start_s": 0.0,
///   "files": {"clip": "gate-0-7-120.mp4", "crop_clip": "gate-0-7-120-crop.mp4",
///             "snapshot": "gate-0-7-120.jpg", "crop_snapshot": "gate-0-7-120-crop.jpg"},
///   "crop": {"x": 250, "y": 0, "width": 198, "height": 272, "out_width": 320, "out_height": 440},
///   "frames": [{"frame": 120, "pts_s": 4.8, "box": [300.0, 40.0, 380.0, 250.0], "score": 0.35}, ...]
/// }
/// ```
///
/// - Times are stream times in seconds, as in `events.jsonl`; `start`, `end` and `peak` are those of its `end`
///   line (`wall_time` is there when the log has wall-clock times). `end` is null if the event had not ended.
/// - `clip_start_s`: the stream time of the clip's first frame, so frame `pts_s - clip_start_s` seconds into
///   the clip is the one a box belongs to.
/// - `files`: names in the sidecar's own directory; a file that could not be written is null.
/// - `crop`: the region of the cropped clip in pixels of the full frame, and its output size; null without one.
/// - `frames`: in frame order, one entry for each frame of the clip on which the event's track matched.
///   Frames without a box of the event (the pre- and post-roll, frames that were not run through the model,
///   frames where the match was missed) are **left out**, not listed as null: `frame` and `pts_s` say where
///   each entry is.
/// - `source` is always written with its password removed ([`redact_url`]), whatever the struct holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// [`SIDECAR_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The event's id, as in `events.jsonl`.
    pub event_id: String,
    /// Display name of the source; its password is removed when written.
    pub source: String,
    /// The query's text.
    pub query: String,
    /// The query's short label.
    pub label: String,
    /// The tracker's id of the object.
    pub track_id: u64,
    /// The event's first match.
    pub start: Stamp,
    /// The event's last match; null if it had not ended.
    pub end: Option<Stamp>,
    /// The best match.
    pub peak: Peak,
    /// Stream time of the clip's first frame, in seconds.
    pub clip_start_s: f64,
    /// The evidence files.
    pub files: EvidenceFiles,
    /// The region of the cropped clip.
    pub crop: Option<CropRegion>,
    /// Every frame of the clip with a box of the event, in frame order.
    pub frames: Vec<FrameBox>,
}

impl Sidecar {
    /// The sidecar of `event` (its `end` or `closed` notification), with the planned file names and no crop
    /// region yet. `frames` are sorted into frame order, their times rounded to the microsecond (as in `events.jsonl`).
    pub fn new(
        event: &LifecycleEvent,
        source: &str,
        query: &str,
        label: &str,
        clip_start_s: f64,
        mut frames: Vec<FrameBox>,
    ) -> Self {
        let stamp = |t: &FrameTime| Stamp {
            frame: t.frame,
            pts_s: round_us(t.pts_s),
            wall_time: t.wall.map(super::format_rfc3339_utc),
        };
        frames.sort_by_key(|f| f.frame);
        for f in &mut frames {
            f.pts_s = round_us(f.pts_s);
        }
        Sidecar {
            schema_version: SIDECAR_SCHEMA_VERSION,
            event_id: event.event_id.clone(),
            source: redact_url(source),
            query: query.to_string(),
            label: label.to_string(),
            track_id: event.track_id,
            start: stamp(&event.start.at),
            end: event.end.as_ref().map(stamp),
            peak: Peak {
                frame: event.peak.at.frame,
                pts_s: round_us(event.peak.at.pts_s),
                score: event.peak.score,
                bbox: event.peak.bbox,
            },
            clip_start_s: round_us(clip_start_s),
            files: EvidenceFiles::planned(&event.event_id),
            crop: None,
            frames,
        }
    }
}

/// Errors of the evidence module. Each is one line that names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// `gst::init` failed.
    #[error("cannot initialise GStreamer: {0}; check the GStreamer installation")]
    GstInit(String),
    /// The full-frame clip does not exist.
    #[error("input clip {} does not exist; the full-frame clip must be complete before its evidence is made", path.display())]
    MissingClip { path: PathBuf },
    /// The full-frame clip cannot be decoded (corrupt, truncated, not a video).
    #[error("cannot decode input clip {}: {message}; check that it is a complete MP4 that plays", path.display())]
    BadClip { path: PathBuf, message: String },
    /// The clip's frames are too small to crop to an even size.
    #[error("input clip {} has {width}x{height} frames, too small to crop (at least 2x2 is needed)", path.display())]
    FrameTooSmall { path: PathBuf, width: u32, height: u32 },
    /// There is no box to crop to.
    #[error("no box with finite corners to crop {} to; pass the event's boxes", path.display())]
    NoBox { path: PathBuf },
    /// The encoder description does not parse, or names an element that is not installed.
    #[error("encoder {encoder:?} for {} cannot be used: {message}; set `encoder` to a gst-launch raw video to H.264 fragment whose elements are installed", path.display())]
    Encoder { path: PathBuf, encoder: String, message: String },
    /// A GStreamer element the evidence needs is not installed.
    #[error("GStreamer element {element} needed for {} is not installed; {hint}", path.display())]
    MissingElement { path: PathBuf, element: &'static str, hint: &'static str },
    /// Writing an output file failed (for example, the disk is full).
    #[error("could not write {what} {}: {error}; free disk space or set retention (max_disk_gb, max_age_days)", path.display())]
    Write { what: &'static str, path: PathBuf, error: io::Error },
    /// Decoding, cropping or encoding failed, or did not finish within [`PIPELINE_TIMEOUT`].
    #[error("could not make {what} {}: {message}; check the input clip and the encoder", path.display())]
    Pipeline { what: &'static str, path: PathBuf, message: String },
}

impl EvidenceError {
    /// The kind of the underlying I/O error of a [`EvidenceError::Write`] (`StorageFull` for a full disk).
    pub fn io_error_kind(&self) -> Option<io::ErrorKind> {
        match self {
            EvidenceError::Write { error, .. } => Some(error.kind()),
            _ => None,
        }
    }
}

const CROP_CLIP: &str = "crop clip";
const SNAPSHOT: &str = "snapshot";
const CROP_SNAPSHOT: &str = "crop snapshot";
const SIDECAR: &str = "sidecar";

/// Decodes `full_clip` (an MP4 whose first frame is at stream time `clip_start_s`), crops every frame to the
/// union of `boxes` plus the margin (one fixed, even size for the whole clip, clamped to the frame), scales it up
/// to at least `crop_min_size`, encodes H.264 and writes `out` (as `.<name>.part`, then renamed).
///
/// Every frame of the input is in the output, with its timestamps. Returns the region and the output size.
/// `clip_start_s` does not change the crop (the region is fixed for the whole clip); it is taken for symmetry
/// with [`write_snapshots`].
pub fn write_crop_clip(
    full_clip: &Path,
    clip_start_s: f64,
    boxes: &[FrameBox],
    out: &Path,
    s: &EvidenceSettings,
) -> Result<CropRegion, EvidenceError> {
    let _ = clip_start_s;
    init()?;
    check_input(full_clip)?;
    for (element, hint) in [
        ("videocrop", "install gstreamer1.0-plugins-good"),
        ("videoscale", "install gstreamer1.0-plugins-base"),
        ("h264parse", "install gstreamer1.0-plugins-bad"),
        ("mp4mux", "install gstreamer1.0-plugins-good"),
    ] {
        if gst::ElementFactory::find(element).is_none() {
            return Err(EvidenceError::MissingElement { path: out.to_path_buf(), element, hint });
        }
    }
    if let Err(e) = gst::parse::bin_from_description(&s.encoder, true) {
        return Err(EvidenceError::Encoder {
            path: out.to_path_buf(),
            encoder: s.encoder.clone(),
            message: e.to_string(),
        });
    }
    let (width, height) = {
        let decoder = RgbDecoder::open(full_clip)?;
        (decoder.info.width(), decoder.info.height())
    };
    if width < 2 || height < 2 {
        return Err(EvidenceError::FrameTooSmall { path: full_clip.to_path_buf(), width, height });
    }
    let region = CropRegion::around(boxes.iter().map(|b| b.bbox), width, height, s)
        .ok_or_else(|| EvidenceError::NoBox { path: out.to_path_buf() })?;

    let description = format!(
        "filesrc name=src ! decodebin ! videocrop name=crop left={} top={} right={} bottom={} \
         ! videoscale add-borders=false ! video/x-raw,width={},height={},pixel-aspect-ratio=1/1 \
         ! videoconvert ! video/x-raw,format=I420 ! {} ! h264parse ! mp4mux ! filesink name=sink",
        region.x,
        region.y,
        width - region.x - region.width,
        height - region.y - region.height,
        region.out_width,
        region.out_height,
        s.encoder,
    );
    let fail = |message: String| EvidenceError::Pipeline { what: CROP_CLIP, path: out.to_path_buf(), message };
    let part = PartFile::create(out, CROP_CLIP)?;
    let pipeline = Pipeline::launch(&description).map_err(fail)?;
    pipeline.element("src").map_err(fail)?.set_property("location", full_clip);
    pipeline.element("sink").map_err(fail)?.set_property("location", part.part_path());
    let crop_sink = pipeline.element("crop").map_err(fail)?.static_pad("sink");
    crop_sink
        .ok_or_else(|| fail("videocrop has no sink pad".into()))?
        .add_probe(gst::PadProbeType::BUFFER, increasing_pts());
    let started = Instant::now();
    pipeline.run_to_eos().map_err(|e| e.into_evidence_error(CROP_CLIP, out))?;
    drop(pipeline);
    part.finish()?;
    tracing::debug!(
        path = %out.display(),
        ?region,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "wrote crop clip"
    );
    Ok(region)
}

/// A buffer probe that keeps decoded frames' times increasing: a frame without a time, or whose time is not after
/// the previous frame's, is placed one frame duration (1 ms when unknown) after it.
///
/// Clips are cut from the source's own packets, timestamps and all, and some files repeat presentation times
/// (seen: H.264 with B-frames written by a concatenating muxer). A decoder shows such frames anyway, but an encoder
/// given two frames at one time drops the time, and mp4mux then refuses the whole crop clip ("Buffer has no PTS").
fn increasing_pts() -> impl Fn(&gst::Pad, &mut gst::PadProbeInfo) -> gst::PadProbeReturn + Send + Sync + 'static {
    // The previous frame's time in ns; u64::MAX before the first.
    let last = std::sync::atomic::AtomicU64::new(u64::MAX);
    move |_, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() {
            let pts = buffer.pts().map(|t| t.nseconds());
            let prev = last.load(std::sync::atomic::Ordering::Relaxed);
            let step = buffer.duration().map_or(1_000_000, |d| d.nseconds().max(1));
            let fixed = match (pts, prev) {
                (Some(p), u64::MAX) => p,
                (Some(p), l) if p > l => p,
                (None, u64::MAX) => 0,
                (_, l) => l.saturating_add(step),
            };
            if pts != Some(fixed) {
                buffer.make_mut().set_pts(gst::ClockTime::from_nseconds(fixed));
            }
            last.store(fixed, std::sync::atomic::Ordering::Relaxed);
        }
        gst::PadProbeReturn::Ok
    }
}

/// Writes the frame of `full_clip` nearest to `peak.pts_s` (its first frame is at stream time `clip_start_s`)
/// with the box and "label score" drawn, as JPEG at `full_out`, and the crop of the box plus the margin (scaled
/// up as the cropped clip is, nothing drawn) at `crop_out`. Returns the full snapshot's JPEG bytes (the MQTT
/// `snapshot` topic publishes them).
///
/// A peak before the clip's start gives its first frame, one after its end its last frame.
pub fn write_snapshots(
    full_clip: &Path,
    clip_start_s: f64,
    peak: &FrameBox,
    label: &str,
    full_out: &Path,
    crop_out: &Path,
    s: &EvidenceSettings,
) -> Result<Vec<u8>, EvidenceError> {
    init()?;
    check_input(full_clip)?;
    let mut decoder = RgbDecoder::open(full_clip)?;
    let offset_s = peak.pts_s - clip_start_s;
    let frame = decoder.frame_nearest(if offset_s.is_finite() { offset_s } else { 0.0 })?;
    drop(decoder);
    let (width, height) = frame.dimensions();

    let quality = s.jpeg_quality.clamp(1, 100);
    let crop_bytes = match CropRegion::around([peak.bbox], width, height, s) {
        Some(r) => {
            let crop = image::imageops::crop_imm(&frame, r.x, r.y, r.width, r.height).to_image();
            let crop = if (r.out_width, r.out_height) == (r.width, r.height) {
                crop
            } else {
                image::imageops::resize(&crop, r.out_width, r.out_height, image::imageops::FilterType::Triangle)
            };
            Some(encode_jpeg(&crop, quality, CROP_SNAPSHOT, crop_out)?)
        }
        None if width < 2 || height < 2 => {
            return Err(EvidenceError::FrameTooSmall { path: full_clip.to_path_buf(), width, height });
        }
        None => return Err(EvidenceError::NoBox { path: crop_out.to_path_buf() }),
    };

    let mut full = frame;
    let det = Detection { query: 0, score: peak.score, bbox: peak.bbox };
    annotate_detections(&mut Canvas::from_image(&mut full), &[det], &[label.to_string()]);
    let full_bytes = encode_jpeg(&full, quality, SNAPSHOT, full_out)?;

    write_atomically(full_out, SNAPSHOT, &full_bytes)?;
    if let Some(bytes) = crop_bytes {
        write_atomically(crop_out, CROP_SNAPSHOT, &bytes)?;
    }
    Ok(full_bytes)
}

/// Writes `sidecar` as pretty-printed JSON at `out` (as `.<name>.part`, then renamed), with its source redacted.
pub fn write_sidecar(out: &Path, sidecar: &Sidecar) -> Result<(), EvidenceError> {
    let redacted = Sidecar { source: redact_url(&sidecar.source), ..sidecar.clone() };
    let mut json = serde_json::to_vec_pretty(&redacted).map_err(|e| EvidenceError::Write {
        what: SIDECAR,
        path: out.to_path_buf(),
        error: io::Error::other(e),
    })?;
    json.push(b'\n');
    write_atomically(out, SIDECAR, &json)
}

fn init() -> Result<(), EvidenceError> {
    gst::init().map_err(|e| EvidenceError::GstInit(e.to_string()))
}

fn check_input(path: &Path) -> Result<(), EvidenceError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(EvidenceError::BadClip { path: path.to_path_buf(), message: "it is not a file".into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(EvidenceError::MissingClip { path: path.to_path_buf() }),
        Err(e) => Err(EvidenceError::BadClip { path: path.to_path_buf(), message: e.to_string() }),
    }
}

fn encode_jpeg(img: &image::RgbImage, quality: u8, what: &'static str, path: &Path) -> Result<Vec<u8>, EvidenceError> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality).encode_image(img).map_err(|e| {
        EvidenceError::Pipeline { what, path: path.to_path_buf(), message: format!("cannot encode JPEG: {e}") }
    })?;
    Ok(bytes)
}

/// `bytes` written to `path` through a `.part` file in the same directory.
fn write_atomically(path: &Path, what: &'static str, bytes: &[u8]) -> Result<(), EvidenceError> {
    let part = PartFile::create(path, what)?;
    let write = |mut file: &File| file.write_all(bytes).and_then(|()| file.flush());
    write(part.file()).map_err(|error| part.error(error))?;
    part.finish()
}

/// A file being written as `.<name>.part` next to its final name ([`part::PartFile`]: removed when dropped
/// unless finished), its errors an [`EvidenceError::Write`] of `what`.
struct PartFile {
    inner: part::PartFile,
    what: &'static str,
}

impl PartFile {
    /// Creates (truncating) `.<name>.part` in `path`'s directory, creating the directory if needed.
    fn create(path: &Path, what: &'static str) -> Result<Self, EvidenceError> {
        match part::PartFile::create(path, PartName::Hidden) {
            Ok(inner) => Ok(PartFile { inner, what }),
            Err(e) => Err(part_error(what, path, e)),
        }
    }

    fn part_path(&self) -> &Path {
        self.inner.part_path()
    }

    fn file(&self) -> &File {
        // Made by `create`, which keeps it open until finished.
        self.inner.file().expect("the part file is open until finished")
    }

    fn error(&self, error: io::Error) -> EvidenceError {
        EvidenceError::Write { what: self.what, path: self.inner.path().to_path_buf(), error }
    }

    /// Syncs the file and gives it its final name.
    fn finish(self) -> Result<(), EvidenceError> {
        let path = self.inner.path().to_path_buf();
        self.inner.finish().map(drop).map_err(|e| part_error(self.what, &path, e))
    }
}

/// A [`PartError`] as the evidence's error: it names the directory or the `.part` file that could not be
/// created, and the final file otherwise.
fn part_error(what: &'static str, path: &Path, e: PartError) -> EvidenceError {
    let (path, error) = match e {
        PartError::NoFileName { path } => {
            (path, io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))
        }
        PartError::CreateDir { dir, error } => (dir, error),
        PartError::Create { part, error } => (part, error),
        PartError::Sync { error, .. } | PartError::Rename { error, .. } => (path.to_path_buf(), error),
    };
    EvidenceError::Write { what, path, error }
}

/// Why a pipeline did not reach end-of-stream.
#[derive(Debug)]
enum RunError {
    /// The file could not be written (`filesink` failed): the disk is full, or the directory went away.
    Write(io::Error),
    /// The deadline passed first.
    Timeout,
    /// Anything else, with GStreamer's message.
    Other(String),
}

impl RunError {
    fn into_evidence_error(self, what: &'static str, path: &Path) -> EvidenceError {
        match self {
            RunError::Write(error) => EvidenceError::Write { what, path: path.to_path_buf(), error },
            e => EvidenceError::Pipeline { what, path: path.to_path_buf(), message: run_error_text(e) },
        }
    }
}

/// A pipeline that is set to NULL when dropped, so its streaming threads never outlive the call.
struct Pipeline(gst::Pipeline);

impl Pipeline {
    fn launch(description: &str) -> Result<Self, String> {
        let element = gst::parse::launch(description).map_err(|e| format!("cannot build the pipeline: {e}"))?;
        let pipeline =
            element.downcast::<gst::Pipeline>().map_err(|_| "the description is not a pipeline".to_string())?;
        Ok(Pipeline(pipeline))
    }

    fn element(&self, name: &str) -> Result<gst::Element, String> {
        self.0.by_name(name).ok_or_else(|| format!("the pipeline has no element {name}"))
    }

    /// Waits until `deadline` for the first of `types` ([`bus::wait_for`]); an error message ends the wait as an
    /// error.
    fn wait_for(&self, types: &[gst::MessageType], deadline: Instant) -> Result<gst::Message, RunError> {
        bus::wait_for(&self.0, types, deadline).map_err(|e| match e {
            WaitError::NoBus => RunError::Other("the pipeline has no bus".into()),
            WaitError::Timeout => RunError::Timeout,
            WaitError::Broken => {
                RunError::Other("could not wait on the pipeline's bus (is the process out of file descriptors?)".into())
            }
            WaitError::Error(m) => match m.view() {
                gst::MessageView::Error(err) => run_error(err),
                _ => RunError::Other("the pipeline failed".into()),
            },
        })
    }

    /// The first error the pipeline posted within `timeout`, if any.
    fn error_within(&self, timeout: Duration) -> Option<RunError> {
        let bus = self.0.bus()?;
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_nseconds(timeout.as_nanos() as u64), &[gst::MessageType::Error])?;
        match msg.view() {
            gst::MessageView::Error(err) => Some(run_error(err)),
            _ => None,
        }
    }

    /// Sets `state`; when that fails, the pipeline's own error (given a moment to arrive) says why.
    fn set_state(&self, state: gst::State) -> Result<(), RunError> {
        match self.0.set_state(state) {
            Ok(_) => Ok(()),
            Err(e) => Err(self
                .error_within(Duration::from_secs(2))
                .unwrap_or_else(|| RunError::Other(format!("cannot set the pipeline to {state:?}: {e}")))),
        }
    }

    /// Plays the pipeline to end-of-stream within [`PIPELINE_TIMEOUT`].
    fn run_to_eos(&self) -> Result<(), RunError> {
        let deadline = Instant::now() + PIPELINE_TIMEOUT;
        self.set_state(gst::State::Playing)?;
        self.wait_for(&[gst::MessageType::Eos], deadline).map(|_| ())
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// GStreamer's error as a [`RunError`]: a failed write (a full disk) is an I/O error of its own.
fn run_error(err: &gst::message::Error) -> RunError {
    let error = err.error();
    let from = err.src().map(|s| s.name().to_string()).unwrap_or_else(|| "?".into());
    let text = format!("{error} (from {from})");
    if error.matches(gst::ResourceError::NoSpaceLeft) {
        RunError::Write(io::Error::new(io::ErrorKind::StorageFull, "No space left on device"))
    } else if error.matches(gst::ResourceError::Write) || error.matches(gst::ResourceError::OpenWrite) {
        RunError::Write(io::Error::other(text))
    } else {
        let debug = err.debug().map(|d| format!(": {}", d.lines().next().unwrap_or_default())).unwrap_or_default();
        RunError::Other(format!("{text}{debug}"))
    }
}

/// A clip decoded to RGB frames on request: prerolled on its first frame, which gives the size and the first
/// timestamp, and seeked from there.
struct RgbDecoder {
    path: PathBuf,
    pipeline: Pipeline,
    sink: gst_app::AppSink,
    info: gst_video::VideoInfo,
    first: gst::Sample,
    first_pts: Duration,
}

impl RgbDecoder {
    fn open(path: &Path) -> Result<Self, EvidenceError> {
        let bad = |message: String| EvidenceError::BadClip { path: path.to_path_buf(), message };
        // max-buffers bounds the decoded frames waiting here; the pipeline blocks until they are taken.
        let pipeline = Pipeline::launch(
            "filesrc name=src ! decodebin ! videoconvert ! video/x-raw,format=RGB \
             ! appsink name=sink sync=false max-buffers=2 enable-last-sample=false",
        )
        .map_err(bad)?;
        pipeline.element("src").map_err(bad)?.set_property("location", path);
        let sink = pipeline
            .element("sink")
            .map_err(bad)?
            .downcast::<gst_app::AppSink>()
            .map_err(|_| bad("sink is not an appsink".into()))?;
        let deadline = Instant::now() + PREROLL_TIMEOUT;
        pipeline.set_state(gst::State::Paused).map_err(|e| bad(run_error_text(e)))?;
        let msg = pipeline.wait_for(&[gst::MessageType::AsyncDone, gst::MessageType::Eos], deadline).map_err(|e| {
            bad(match e {
                RunError::Timeout => format!(
                    "no frame was decoded within {} s; it is incomplete or holds no video",
                    PREROLL_TIMEOUT.as_secs()
                ),
                e => run_error_text(e),
            })
        })?;
        if let gst::MessageView::Eos(_) = msg.view() {
            return Err(bad("it has no video frames".into()));
        }
        let first = sink
            .try_pull_preroll(gst::ClockTime::from_seconds(5))
            .ok_or_else(|| bad("it has no video frames".into()))?;
        let caps = first.caps().ok_or_else(|| bad("the first frame has no caps".into()))?;
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| bad(format!("unexpected caps {caps}: {e}")))?;
        let first_pts = stream_time(&first).unwrap_or_default();
        Ok(RgbDecoder { path: path.to_path_buf(), pipeline, sink, info, first, first_pts })
    }

    /// Nominal duration of one frame (40 ms when the clip does not say).
    fn frame_duration(&self) -> Duration {
        let fps = self.info.fps();
        if fps.numer() > 0 && fps.denom() > 0 {
            Duration::from_secs_f64(fps.denom() as f64 / fps.numer() as f64)
        } else {
            Duration::from_millis(40)
        }
    }

    /// The frame whose time is nearest `offset_s` seconds after the first frame's.
    fn frame_nearest(&mut self, offset_s: f64) -> Result<image::RgbImage, EvidenceError> {
        let bad = |message: String| EvidenceError::BadClip { path: self.path.clone(), message };
        let frame = self.frame_duration();
        let offset = Duration::from_secs_f64(offset_s.clamp(0.0, 1e9));
        if offset <= frame / 2 {
            return self.to_image(&self.first.clone());
        }
        let target = self.first_pts + offset;
        // Accurate seek to a frame before the target: the decoder starts at the keyframe before and drops the
        // frames before the seek position, and the frames from there are compared with the target.
        let mut seek_to = target.saturating_sub(frame);
        if let Some(duration) = self.pipeline.0.query_duration::<gst::ClockTime>() {
            let duration = Duration::from_nanos(duration.nseconds());
            seek_to = seek_to.min(duration.saturating_sub(frame * 2));
        }
        self.pipeline
            .0
            .seek_simple(
                gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                gst::ClockTime::from_nseconds(seek_to.as_nanos() as u64),
            )
            .map_err(|e| bad(format!("cannot seek to {:.3} s: {e}", seek_to.as_secs_f64())))?;
        self.pipeline.set_state(gst::State::Playing).map_err(|e| bad(run_error_text(e)))?;

        let deadline = Instant::now() + PIPELINE_TIMEOUT;
        let mut best: Option<(Duration, gst::Sample)> = None;
        // Bounded: the frames from the seek position until one past the target, or the end of the clip.
        loop {
            if Instant::now() >= deadline {
                return Err(bad(format!("no frame decoded within {} s", PIPELINE_TIMEOUT.as_secs())));
            }
            // Short pulls, so that a failed pipeline (which sends no more frames) is noticed on its bus.
            let Some(sample) = self.sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) else {
                if self.sink.is_eos() {
                    break;
                }
                if let Some(e) = self.pipeline.error_within(Duration::ZERO) {
                    return Err(bad(run_error_text(e)));
                }
                continue;
            };
            let Some(pts) = stream_time(&sample) else { continue };
            let distance = pts.abs_diff(target);
            if best.as_ref().is_none_or(|(d, _)| distance < *d) {
                best = Some((distance, sample));
            }
            if pts >= target {
                break;
            }
        }
        match best {
            Some((_, sample)) => self.to_image(&sample),
            None => self.to_image(&self.first.clone()),
        }
    }

    /// The sample's frame as a packed RGB image.
    fn to_image(&self, sample: &gst::Sample) -> Result<image::RgbImage, EvidenceError> {
        let bad = |message: String| EvidenceError::BadClip { path: self.path.clone(), message };
        let buffer = sample.buffer().ok_or_else(|| bad("a decoded frame has no buffer".into()))?;
        let info = match sample.caps() {
            Some(caps) => gst_video::VideoInfo::from_caps(caps).map_err(|e| bad(format!("unexpected caps: {e}")))?,
            None => self.info.clone(),
        };
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
            .map_err(|e| bad(format!("cannot map a decoded frame: {e}")))?;
        let (width, height) = (info.width(), info.height());
        let stride = frame.plane_stride()[0] as usize;
        let data = frame.plane_data(0).map_err(|e| bad(format!("cannot read a decoded frame: {e}")))?;
        let row = width as usize * 3;
        let mut pixels = Vec::with_capacity(row * height as usize);
        for y in 0..height as usize {
            let start = y * stride;
            let line = data.get(start..start + row).ok_or_else(|| bad("a decoded frame is too short".into()))?;
            pixels.extend_from_slice(line);
        }
        image::RgbImage::from_raw(width, height, pixels).ok_or_else(|| bad("a decoded frame is too short".into()))
    }
}

/// The stream time of the sample's buffer.
fn stream_time(sample: &gst::Sample) -> Option<Duration> {
    let pts = sample.buffer()?.pts()?;
    let time = match sample.segment().and_then(|s| s.downcast_ref::<gst::ClockTime>()) {
        Some(segment) => segment.to_stream_time(pts)?,
        None => pts,
    };
    Some(Duration::from_nanos(time.nseconds()))
}

fn run_error_text(e: RunError) -> String {
    match e {
        RunError::Write(error) => error.to_string(),
        RunError::Timeout => format!("did not finish within {} s", PIPELINE_TIMEOUT.as_secs()),
        RunError::Other(message) => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb(x0: f32, y0: f32, x1: f32, y1: f32) -> PixelBox {
        PixelBox { x0, y0, x1, y1 }
    }

    fn region(boxes: &[PixelBox], w: u32, h: u32, s: &EvidenceSettings) -> CropRegion {
        CropRegion::around(boxes.iter().copied(), w, h, s).unwrap()
    }

    /// Even offset and size, inside the frame, holding every box (clipped to the frame), output even and at
    /// least the minimum on the shorter side.
    fn check(r: &CropRegion, boxes: &[PixelBox], w: u32, h: u32, min: u32) {
        for v in [r.x, r.y, r.width, r.height, r.out_width, r.out_height] {
            assert_eq!(v % 2, 0, "{r:?}");
        }
        assert!(r.width >= 2 && r.height >= 2, "{r:?}");
        assert!(r.x + r.width <= w && r.y + r.height <= h, "{r:?} in {w}x{h}");
        for b in boxes {
            assert!(r.contains(&b.clip(w & !1, h & !1)), "{r:?} holds {b:?}");
        }
        assert!(r.out_width.min(r.out_height) >= min, "{r:?}");
        assert!(r.out_width >= r.width && r.out_height >= r.height, "{r:?}");
    }

    #[test]
    fn union_plus_margin_centred_and_even() {
        let s = EvidenceSettings::default();
        let boxes = [pb(101.0, 51.0, 151.0, 151.0), pb(121.0, 71.0, 201.0, 131.0)];
        let r = region(&boxes, 640, 272, &s);
        // Union 101..201 x 51..151 (100 x 100), plus 20 % on each side: 81..221 x 31..171.
        assert_eq!((r.x, r.y, r.width, r.height), (80, 30, 142, 142), "{r:?}");
        // 142 < 320: scaled up to 320 x 320.
        assert_eq!((r.out_width, r.out_height), (320, 320));
        check(&r, &boxes, 640, 272, 320);
    }

    #[test]
    fn region_is_moved_inside_the_frame_not_cut() {
        let s = EvidenceSettings::default();
        let boxes = [pb(600.0, 200.0, 640.0, 272.0)];
        let r = region(&boxes, 640, 272, &s);
        // 40 x 72 grows to 56 x 100.8 (margin), moved left and up to end at the frame's edge.
        assert_eq!((r.x + r.width, r.y + r.height), (640, 272), "{r:?}");
        assert_eq!(r.width, 56);
        check(&r, &boxes, 640, 272, 320);
    }

    #[test]
    fn region_larger_than_the_frame_is_the_frame() {
        let s = EvidenceSettings::default();
        let boxes = [pb(-50.0, -20.0, 700.0, 300.0)];
        let r = region(&boxes, 640, 272, &s);
        assert_eq!((r.x, r.y, r.width, r.height, r.out_width, r.out_height), (0, 0, 640, 272, 754, 320));
        check(&r, &boxes, 640, 272, 320);
    }

    /// A frame smaller than `crop_min_size`: cropped to at most itself and scaled up.
    #[test]
    fn a_frame_smaller_than_the_minimum_is_scaled_up() {
        let s = EvidenceSettings::default();
        let boxes = [pb(0.0, 0.0, 200.0, 100.0)];
        let r = region(&boxes, 200, 100, &s);
        assert_eq!((r.x, r.y, r.width, r.height, r.out_width, r.out_height), (0, 0, 200, 100, 640, 320));
        // Odd frame sizes: the last column and row are left out.
        let r = region(&[pb(0.0, 0.0, 201.0, 101.0)], 201, 101, &s);
        assert_eq!((r.width, r.height), (200, 100));
        check(&r, &[], 201, 101, 320);
        // The smallest frame that can be cropped.
        let r = region(&[pb(0.0, 0.0, 1.0, 1.0)], 3, 2, &s);
        assert_eq!((r.x, r.y, r.width, r.height, r.out_width, r.out_height), (0, 0, 2, 2, 320, 320));
        assert_eq!(CropRegion::around([pb(0.0, 0.0, 1.0, 1.0)], 1, 100, &s), None);
        assert_eq!(CropRegion::around([pb(0.0, 0.0, 1.0, 1.0)], 100, 1, &s), None);
    }

    #[test]
    fn thin_and_tiny_boxes_are_widened() {
        let s = EvidenceSettings::default();
        // A 2 x 200 pole: 2.8 wide with the margin, widened to 280 / 4 = 70.
        let boxes = [pb(300.0, 36.0, 302.0, 236.0)];
        let r = region(&boxes, 640, 272, &s);
        assert!(r.width >= 70 && r.width <= 72, "{r:?}");
        assert!(r.height as f32 <= MAX_ASPECT * r.width as f32 + 2.0, "{r:?}");
        check(&r, &boxes, 640, 272, 320);
        // A point: the minimum region.
        let boxes = [pb(10.0, 10.0, 10.0, 10.0)];
        let r = region(&boxes, 640, 272, &s);
        assert!(r.width >= MIN_REGION_PX && r.width <= MIN_REGION_PX + 2, "{r:?}");
        check(&r, &boxes, 640, 272, 320);
    }

    #[test]
    fn broken_boxes_are_ignored_and_none_gives_none() {
        let s = EvidenceSettings::default();
        let good = pb(100.0, 100.0, 140.0, 140.0);
        let r = region(&[pb(f32::NAN, 0.0, 1.0, 1.0), good, pb(0.0, f32::INFINITY, 1.0, 1.0)], 640, 272, &s);
        assert_eq!(r, region(&[good], 640, 272, &s));
        // Corners given the wrong way round are put right.
        assert_eq!(region(&[pb(140.0, 140.0, 100.0, 100.0)], 640, 272, &s), r);
        assert_eq!(CropRegion::around([], 640, 272, &s), None);
        assert_eq!(CropRegion::around([pb(f32::NAN, 0.0, 1.0, 1.0)], 640, 272, &s), None);
    }

    #[test]
    fn margin_and_minimum_size_are_settings() {
        let boxes = [pb(100.0, 100.0, 200.0, 200.0)];
        let s = EvidenceSettings { crop_margin: 0.0, crop_min_size: 50, ..Default::default() };
        let r = region(&boxes, 640, 272, &s);
        assert_eq!((r.x, r.y, r.width, r.height, r.out_width, r.out_height), (100, 100, 100, 100, 100, 100));
        let s = EvidenceSettings { crop_margin: f32::NAN, crop_min_size: 301, ..Default::default() };
        let r = region(&boxes, 640, 272, &s);
        // A margin that is not a number is the default; 301 is rounded up to even.
        assert_eq!((r.width, r.out_width), (140, 302));
    }

    #[test]
    fn scaling_up_keeps_the_aspect_and_hits_the_minimum() {
        assert_eq!(scaled_up(100, 50, 320), (640, 320));
        assert_eq!(scaled_up(142, 142, 320), (320, 320));
        assert_eq!(scaled_up(98, 142, 320), (320, 464));
        assert_eq!(scaled_up(400, 330, 320), (400, 330));
        assert_eq!(scaled_up(2, 2, 0), (2, 2));
    }

    #[test]
    fn errors_are_one_line_and_name_the_file() {
        let path = PathBuf::from("out/cam/x-crop.mp4");
        let errors = [
            EvidenceError::MissingClip { path: path.clone() },
            EvidenceError::BadClip { path: path.clone(), message: "truncated".into() },
            EvidenceError::FrameTooSmall { path: path.clone(), width: 1, height: 1 },
            EvidenceError::NoBox { path: path.clone() },
            EvidenceError::Encoder { path: path.clone(), encoder: "nope".into(), message: "no element".into() },
            EvidenceError::MissingElement { path: path.clone(), element: "videocrop", hint: "install it" },
            EvidenceError::Write {
                what: CROP_CLIP,
                path: path.clone(),
                error: io::Error::new(io::ErrorKind::StorageFull, "No space left on device"),
            },
            EvidenceError::Pipeline { what: CROP_CLIP, path: path.clone(), message: "failed".into() },
        ];
        for e in &errors {
            let text = e.to_string();
            assert!(!text.contains('\n') && text.contains("out/cam/x-crop.mp4"), "{text}");
        }
        assert_eq!(
            errors[6].to_string(),
            "could not write crop clip out/cam/x-crop.mp4: No space left on device; free disk space or set retention \
             (max_disk_gb, max_age_days)"
        );
        assert_eq!(errors[6].io_error_kind(), Some(io::ErrorKind::StorageFull));
        assert_eq!(errors[0].io_error_kind(), None);
    }

    #[test]
    fn part_files_are_removed_unless_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b.json");
        let part = PartFile::create(&path, SIDECAR).unwrap();
        let part_path = part.part_path().to_path_buf();
        assert_eq!(part_path, dir.path().join("a/.b.json.part"));
        assert!(part_path.is_file());
        drop(part);
        assert!(!part_path.exists() && !path.exists());
        write_atomically(&path, SIDECAR, b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        assert!(!part_path.exists());
    }

    /// The sidecar's schema, field by field and in order: changing it means raising SIDECAR_SCHEMA_VERSION.
    #[test]
    fn sidecar_schema_is_stable() {
        use crate::track::{EndReason, LifecycleKind, Sample};
        let at = |frame: u64| FrameTime { frame, pts_s: frame as f64 / 25.0, wall: None };
        let sample = |frame: u64, score: f32| Sample { at: at(frame), bbox: pb(1.0, 2.5, 30.0, 40.0), score };
        let event = LifecycleEvent {
            kind: LifecycleKind::End(EndReason::Lost),
            event_id: "cam1-0-3-46".into(),
            query: 0,
            track_id: 3,
            at: at(99),
            last: sample(49, 0.4),
            start: sample(46, 0.3),
            end: Some(at(49)),
            peak: sample(47, 0.5),
            pre_roll_s: 5.0,
            post_roll_s: 5.0,
        };
        let frames = vec![
            FrameBox { frame: 48, pts_s: 1.92, bbox: pb(2.0, 3.0, 31.0, 41.0), score: 0.25 },
            FrameBox { frame: 47, pts_s: 1.8800000000000001, bbox: pb(1.0, 2.5, 30.0, 40.0), score: 0.5 },
        ];
        let mut sidecar = Sidecar::new(&event, "rtsp://admin:pw@cam1/live", "a red car", "car", 0.04, frames);
        sidecar.crop = Some(CropRegion { x: 0, y: 0, width: 40, height: 50, out_width: 320, out_height: 400 });
        sidecar.files.crop_snapshot = None;
        assert_eq!(
            serde_json::to_string(&sidecar).unwrap(),
            r#"{"schema_version":1,"event_id":"cam1-0-3-46","source":"rtsp://***@cam1/live","query":"a red car","label":"car","track_id":3,"start":{"frame":46,"pts_s":1.84},"end":{"frame":49,"pts_s":1.96},"peak":{"frame":47,"pts_s":1.88,"score":0.5,"box":[1.0,2.5,30.0,40.0]},"clip_start_s":0.04,"files":{"clip":"cam1-0-3-46.mp4","crop_clip":"cam1-0-3-46-crop.mp4","snapshot":"cam1-0-3-46.jpg","crop_snapshot":null},"crop":{"x":0,"y":0,"width":40,"height":50,"out_width":320,"out_height":400},"frames":[{"frame":47,"pts_s":1.88,"box":[1.0,2.5,30.0,40.0],"score":0.5},{"frame":48,"pts_s":1.92,"box":[2.0,3.0,31.0,41.0],"score":0.25}]}"#
        );
    }
}
