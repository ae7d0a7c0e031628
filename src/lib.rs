//! lookout: find what a sentence describes in an image or a live video.
//!
//! The library holds everything but the command line:
//! - [`infer`]: model directories, preprocessing, ONNX Runtime sessions, the class head and postprocessing.
//! - [`geom`]: boxes in model space and in pixels, and the one conversion between them.
//! - [`models`]: the manifest of downloadable models and the verified downloader.
//! - [`source`]: GStreamer ingest of files, RTSP, HTTP, V4L2 and CSI sources, and their encoded packets (the
//!   packet tap and the pre-roll ring).
//! - [`track`]: the tracker and the event engine (they depend on [`geom`] alone).
//! - [`sink`]: outputs (event log, annotated video, images).
//! - [`draw`]: drawing boxes and labels on RGB and I420 images.
//! - [`eval`]: measuring a model on referring-expression sets and a run's events on annotated footage.
//! - [`imageio`]: reading photos (PNG, and JPEG decoded as Pillow decodes it).
//! - [`picture`]: full-resolution frames (I420 or RGB) as lookout draws on and encodes them.
//! - [`gst`]: GStreamer pipeline templates and the encoders they name, waiting on a bus with a deadline, and
//!   files written as `.part` and renamed.
//! - [`http`]: the control plane of `watch`: REST API, live page, events index and Prometheus metrics.
//! - [`config`]: the TOML configuration for `watch`.
//! - [`watchdog`]: systemd notifications (ready, watchdog, stopping).
//! - [`memory`]: process-wide malloc settings.

pub mod config;
pub mod draw;
pub mod eval;
pub mod geom;
pub mod gst;
pub mod http;
pub mod imageio;
pub mod infer;
pub mod memory;
pub mod models;
pub mod picture;
pub mod redact;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod track;
pub mod watch;
pub mod watchdog;
