//! Tracking: carrying boxes from one inference frame to the next, and the events made of them.
//!
//! - [`tracker`]: a ByteTrack-style multi-object tracker, one per source, that gives each object a stable id and
//!   predicts its box on the frames between inference frames. It is the association layer, and makes no events.
//! - [`lifecycle`]: the event engine, a state machine per (query, track) fed with the tracker's outputs, that
//!   decides when an event starts (k-of-n hysteresis), is updated and ends (after `end_after`, a post-roll and
//!   a cooldown), in stream time.
//!
//! Tracking depends on nothing but geometry ([`crate::geom`]): the configuration fills in [`EventSettings`],
//! and drawing a track is [`crate::draw`]'s.

pub mod lifecycle;
pub mod tracker;

pub use lifecycle::{
    EndReason, EventLifecycle, EventSettings, EventSink, FrameTime, LifecycleEvent, LifecycleKind, LifecycleStats,
    Sample, StreamClock,
};
pub use tracker::{TrackOutput, Tracker, TrackerSettings, TrackerStats};
