//! Tracking: carrying boxes from one inference frame to the next, and the lifecycle events of each track.
//!
//! - [`tracker`]: a ByteTrack-style multi-object tracker, one per source, that gives each object a stable id,
//!   predicts its box on the frames between inference frames, and reports when a track starts, is
//!   updated and ends.

pub mod tracker;

pub use tracker::{TrackEvent, TrackEventKind, TrackOutput, Tracker, TrackerSettings, TrackerStats};
