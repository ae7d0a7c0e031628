//! Outputs: the event log and the annotated video.
//!
//! - [`events`]: `events.jsonl`, one JSON object per line for each track's start, update and end.
//! - [`clips`]: each event's full-frame clip, cut from the source's encoded packets (taken from the source's
//!   [`crate::source::tap`]) by the clip workers.
//! - [`evidence`]: what is made from an event's full-frame clip: the clip cropped to the event, the snapshots
//!   and the sidecar JSON.
//! - [`video`]: annotated RGB frames encoded to an H.264 MP4 through GStreamer, written under a temporary
//!   name and renamed only once complete; and [`video::probe_video`], which decodes a file back to count
//!   its frames.
//!
//! Files are written under a temporary name and renamed once whole ([`crate::gst::part`]).
//!
//! Every error names the file involved and is returned to the caller, which logs it and keeps running:
//! a full disk must not stop the detection.

use std::io;
use std::path::PathBuf;

pub mod alerts;
pub mod clips;
pub mod disk;
pub mod events;
pub mod evidence;
pub mod recording;
pub mod rejected;
pub mod retention;
pub mod rtsp;
pub mod run;
pub mod video;

pub use events::{EVENTS_FILE_NAME, EventLog, EventLogSettings, EventLogStats, EventRecord, format_rfc3339_utc};
pub use evidence::{
    CropRegion, EventBoxes, EvidenceError, EvidenceFiles, EvidenceSettings, FrameBox, Sidecar, write_crop_clip,
    write_sidecar, write_snapshots,
};
pub use video::{SpeedPreset, VideoEncoder, VideoInfo, VideoSettings, VideoWriter, probe_video};

/// Errors of the sinks. Each names the file and says what to check.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// An output directory could not be created.
    #[error("cannot create output directory {}: {error}; check that it is a writable directory", path.display())]
    CreateDir { path: PathBuf, error: io::Error },
    /// A file could not be opened or created.
    #[error("cannot open {} for writing: {error}; check that its directory is writable", path.display())]
    Open { path: PathBuf, error: io::Error },
    /// Writing a file failed (for example, the disk is full).
    #[error("cannot write to {}: {error}; check free disk space (what was being written is lost)", path.display())]
    Write { path: PathBuf, error: io::Error },
    /// A finished file could not be given its final name.
    #[error("cannot rename {} to {}: {error}", from.display(), to.display())]
    Rename { from: PathBuf, to: PathBuf, error: io::Error },
    /// `gst::init` failed.
    #[error("cannot initialise GStreamer: {0}")]
    GstInit(String),
    /// A GStreamer element is not installed.
    #[error("GStreamer element {element} is not installed: {hint}")]
    MissingElement { element: &'static str, hint: &'static str },
    /// The video settings cannot work (empty size, zero frame rate, a path without a file name).
    #[error("bad video settings for {}: {message}", path.display())]
    Settings { path: PathBuf, message: String },
    /// A frame buffer is smaller than its size and stride say.
    #[error(
        "frame for {} has {len} bytes with a stride of {stride}, too few for {width}x{height} RGB pixels",
        path.display()
    )]
    FrameSize { path: PathBuf, len: usize, stride: usize, width: u32, height: u32 },
    /// The encoding pipeline failed, or did not finish in time.
    #[error("writing video {} failed: {message}", path.display())]
    Video { path: PathBuf, message: String },
    /// A video could not be decoded by [`probe_video`].
    #[error("cannot read video {}: {message}", path.display())]
    Probe { path: PathBuf, message: String },
}

impl SinkError {
    /// The kind of the underlying I/O error, if there is one (for example `StorageFull` for a full disk).
    pub fn io_error_kind(&self) -> Option<io::ErrorKind> {
        match self {
            SinkError::CreateDir { error, .. }
            | SinkError::Open { error, .. }
            | SinkError::Write { error, .. }
            | SinkError::Rename { error, .. } => Some(error.kind()),
            _ => None,
        }
    }

    /// The file and the underlying I/O error, if there is one.
    pub fn io_error(&self) -> Option<(&std::path::Path, &io::Error)> {
        match self {
            SinkError::CreateDir { path, error }
            | SinkError::Open { path, error }
            | SinkError::Write { path, error }
            | SinkError::Rename { to: path, error, .. } => Some((path, error)),
            _ => None,
        }
    }
}
