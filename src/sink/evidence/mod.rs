//! The evidence of one event, made from its full-frame clip: a clip cropped to the event, two snapshots and a
//! sidecar JSON with every box (issue 4, "Clips and snapshots").
//!
//! The clip writer calls these on its own worker thread once `<out>/<source>/<event-id>.mp4` is complete:
//!
//! | file                 | function               | what                                                        |
//! |----------------------|------------------------|-------------------------------------------------------------|
//! | `<event-id>-crop.mp4`| [`write_crop_clip`]    | every frame of the clip cropped to the event's region, H.264 |
//! | `<event-id>.jpg`     | [`write_snapshots`]    | the full frame at the peak, with its box and "label score"  |
//! | `<event-id>-crop.jpg`| [`write_snapshots`]    | the peak frame cropped to the event's region, without drawing |
//! | `<event-id>.json`    | [`write_sidecar`]      | the event and the box and score of each of its frames       |
//!
//! # The crop region
//!
//! [`CropRegion::of_event`] decides it, once for the event, in pixels of the full frame, for the crop clip and the
//! crop snapshot alike (one region, one size: the crop snapshot is a frame of the crop clip):
//! 1. the union of the event's boxes in the clip and its peak's box ([`EventBoxes`]; boxes with a corner that is
//!    not a number are ignored), clipped to the frame;
//! 2. plus [`EvidenceSettings::crop_margin`] of the union's width (height) on the left and right (top and bottom);
//! 3. widened to at least [`MIN_REGION_PX`] on each side, and its shorter side widened to at least 1/[`MAX_ASPECT`]
//!    of its longer side, so a thin box does not become a 320x5000 video;
//! 4. moved (not cut) to lie inside the frame; only when it is larger than the frame is it cut to the frame;
//! 5. its corners rounded outwards to even pixels, so its offset and size are even (4:2:0 video needs that).
//!
//! The output is the region scaled up, keeping its aspect ratio, until its shorter side is at least
//! [`EvidenceSettings::crop_min_size`] (both sides even, as the encoder needs; the crop snapshot is scaled to the
//! same size); a region already that large is not scaled.
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
//! Cropping and scaling are GStreamer's; the only pixels Rust touches are those of the two snapshots, and, with
//! a test model ([`EvidenceSettings::test_model`]), the top rows of each crop clip frame, where a probe on the
//! I420 caps filter copies the banner of the annotated video. The full-frame clip gets no banner: it is the
//! camera's own packets (remuxed; or, for codecs MP4 cannot hold, decoded and encoded without drawing), the
//! record of what the camera saw, from which all the rest is made.
//! `<encoder>` is [`EvidenceSettings::encoder`], a gst-launch fragment (the `encoder` of `pipelines/*.toml`).
//!
//! # Files are never half-written
//!
//! Each file is written as `.<name>.part` in its own directory, synced, and renamed to `<name>`; on any error the
//! `.part` file is removed. A file under its final name is therefore always whole.
//!
//! # Layout
//!
//! - `region`: the crop region ([`CropRegion`]);
//! - `crop_clip`: the cropped clip ([`write_crop_clip`]);
//! - `snapshot`: the two snapshots ([`write_snapshots`]), from the clip decoded to RGB (`decoder`);
//! - `sidecar`: the sidecar JSON ([`Sidecar`], [`write_sidecar`]);
//! - here: the settings, the errors, and the files written as `.part` and renamed ([`crate::gst::part`]);
//!   `pipeline` runs a GStreamer pipeline to its end within a deadline ([`crate::gst::bus`]).
//!
//! # Threads
//!
//! Everything runs on the caller's thread and blocks until the file is complete (or [`PIPELINE_TIMEOUT`] has
//! passed). No thread is started here; GStreamer's streaming threads belong to the pipeline, which is set to
//! NULL (stopping them) before every return. Nothing is shared, so there are no locks.

mod crop_clip;
mod decoder;
mod pipeline;
mod region;
mod sidecar;
mod snapshot;

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gstreamer as gst;
use serde::{Deserialize, Serialize};

use crate::geom::PixelBox;
use crate::gst::part::{self, PartError, PartName};
pub use crop_clip::write_crop_clip;
pub use region::CropRegion;
pub use sidecar::{EvidenceFiles, Sidecar, write_sidecar};
pub use snapshot::write_snapshots;

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
pub const SIDECAR_SCHEMA_VERSION: u32 = 2;

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

/// An event's boxes in its clip: those of its frames, and its peak's. Both crops of the event are cut to the one
/// region around them all ([`CropRegion::of_event`]), so that the crop snapshot is a frame of the crop clip, at
/// its size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventBoxes<'a> {
    /// The box of each frame of the event in the clip.
    pub frames: &'a [FrameBox],
    /// The best match: the frame of the snapshots.
    pub peak: FrameBox,
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
    /// The boxes come from a test model (random weights): both snapshots and the crop clip carry the banner of
    /// the annotated video ([`crate::draw::TEST_MODEL_BANNER`]) across their top. Default false.
    pub test_model: bool,
}

impl Default for EvidenceSettings {
    fn default() -> Self {
        EvidenceSettings {
            crop_margin: DEFAULT_CROP_MARGIN,
            crop_min_size: DEFAULT_CROP_MIN_SIZE,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
            encoder: crate::gst::generic_encoder(crate::gst::EncoderPurpose::Record),
            test_model: false,
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
        PartError::Exists { path } => {
            (path, io::Error::new(io::ErrorKind::AlreadyExists, "already exists and is never overwritten"))
        }
    };
    EvidenceError::Write { what, path, error }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
