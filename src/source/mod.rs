//! Ingest for `lookout watch`: GStreamer pipelines that turn files, RTSP and HTTP streams, V4L2 and CSI cameras into
//! RGB frames at the model's size, one bounded queue per source.
//!
//! Each source runs its own pipeline on its own named thread (`src<id>-<short name>`):
//!
//! ```text
//! source chain (decode once) ─ tee ─┬─ scale + RGB at model size ─► appsink model_sink ─┐
//!                                   ├─ RGB at full size (if asked) ─► appsink full_sink ─┼─ paired by PTS ─► Frame
//!                                   └─ grey, 160 wide (motion gate) ─► appsink motion_sink ┘
//! Frame ─► FrameQueue (bounded) ─► consumer (waits on a shared Notify; one frame per source per round)
//! ```
//!
//! Live and file sources differ on purpose, and [`SourceKind::is_live`] decides which applies:
//! - **live** (RTSP, HTTP, V4L2, CSI) never falls behind: the appsinks keep one buffer and drop the rest, and the queue
//!   evicts its oldest frame when full ([`QueuePolicy::DropOldest`]), counting every drop;
//! - **file** blocks: the queue waits for room ([`QueuePolicy::Block`]), the appsinks stop taking buffers, and the
//!   decoder waits; every frame arrives, in order, as fast as the consumer goes (`sync=false`).
//!
//! A source is supervised like a camera in an NVR: `run()` loops over `run_once()`; a live source that ends, fails
//! or stalls is restarted after an exponential backoff ([`ReconnectSettings`]), with the typed
//! [`RestartReason`] logged. A file that ends is over; a file that fails ends with its error; other sources carry on.
//!
//! - [`launch`]: the pipeline's launch string, a template of [`crate::gst::template`] filled in for the source;
//! - [`tap`]: the packet tap on the decoder's input, which keeps the source's encoded packets in its pre-roll
//!   [`ring`] and hands them to the clips being recorded (the clip writer is `crate::sink::clips`'s; ingest
//!   knows nothing of it); [`keyframe`] reads which packets are keyframes from the bitstream for the codecs
//!   whose containers mark them wrong;
//! - [`motion`]: the motion gate, which lets frames where nothing moves skip inference.

mod explain;
mod frame;
pub mod keyframe;
pub mod launch;
mod media;
pub mod motion;
mod queue;
pub mod ring;
mod runner;
mod settings;
mod spec;
mod stats;
pub mod tap;

pub use frame::{Frame, FrameData, FullFrame, RgbFrame};
pub use media::{MediaInfo, probe_duration, probe_media, probe_video_caps};
pub use motion::{GreyImage, Motion, MotionSettings};
pub use queue::{Batch, FrameQueue, Notify, Popped, Pushed, QueueCounters, QueuePolicy, next_batch};
pub use ring::{Packet, PreRollRing, RingSettings, RingStats};
pub use runner::{RestartReason, SourceExit, SourceHandle, SpawnOptions, spawn, spawn_with};
pub use settings::{
    DEFAULT_BACKOFF_MULTIPLIER, DEFAULT_EVERY, DEFAULT_FILE_QUEUE, DEFAULT_INITIAL_BACKOFF_MS, DEFAULT_LIVE_QUEUE,
    DEFAULT_MAX_BACKOFF_MS, DEFAULT_MODEL_SIZE, DEFAULT_STALL_TIMEOUT_MS, FrameSettings, ReconnectSettings,
};
pub use spec::{
    CsiCamera, DEFAULT_CSI_FPS, DEFAULT_CSI_HEIGHT, DEFAULT_CSI_WIDTH, SUPPORTED_SOURCES, SourceKind, SourceSpec,
    dedupe_short_names,
};
pub use stats::{SourceState, SourceStats, SourceStatsSnapshot};
pub use tap::{Feed, PacketTap, TapMessage};

use std::path::PathBuf;

use crate::gst::PipelineError;

/// Everything that can go wrong with a source. Every message names the source (password removed) or the file,
/// and says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("empty source argument: pass {SUPPORTED_SOURCES}")]
    EmptyArgument,
    #[error("unsupported source scheme `{scheme}://` in `{name}`: use {SUPPORTED_SOURCES}")]
    UnsupportedScheme { scheme: String, name: String },
    #[error("invalid source URL `{name}`: {reason}")]
    InvalidUrl { name: String, reason: String },
    #[error("video file `{}` does not exist: check the path (relative paths start from the working directory)", path.display())]
    FileNotFound { path: PathBuf },
    #[error("`{}` is a directory, not a video file: pass the file itself", path.display())]
    NotAFile { path: PathBuf },
    #[error("V4L2 device `{}` does not exist: list cameras with `v4l2-ctl --list-devices`", device.display())]
    DeviceNotFound { device: PathBuf },
    #[error("invalid frame settings: {0}")]
    Settings(String),
    #[error("could not initialise GStreamer: {0}; check that the GStreamer 1.x runtime is installed")]
    Init(String),
    #[error("source `{name}`: {source}")]
    Pipeline { name: String, source: PipelineError },
    /// A file (or a live source's last attempt) failed; the message is already redacted.
    #[error("source `{name}`: {message}")]
    Stream { name: String, message: String },
    #[error("source `{name}` gave up after {attempts} failed attempts in a row; last: {last}")]
    GaveUp { name: String, attempts: u32, last: String },
    #[error("could not start the thread for source `{name}`: {source}")]
    Thread { name: String, source: std::io::Error },
    #[error("the thread of source `{name}` panicked: {message}; this is a bug, please report it")]
    Panicked { name: String, message: String },
}
