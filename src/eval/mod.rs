//! Measuring a model, for `lookout eval`: does it find what a sentence describes, on a public set or on one's own
//! annotated footage?
//!
//! - [`dataset`]: referring-expression sets, `{image, sentence, box}` items, read from the RefCOCO/RefCOCOg layout
//!   (`instances.json` + `refs(umd).p`) or from a JSONL file; every annotation is checked before a model loads.
//! - [`metrics`]: box IoU, Acc@0.5 and Acc@0.75, mean IoU, the no-target rate and accuracy by sentence length;
//!   temporal IoU and one-to-one interval matching for events.
//! - [`runlog`]: the per-model results of a run, one whole line per item, read back to resume an interrupted run.
//! - [`events`]: a `watch` run's `events.jsonl` against annotated intervals: precision, recall, time to the first
//!   alert, false alerts per hour.
//! - [`report`]: `results.json` and a self-contained `index.html` with a chart and the worst cases drawn.
//!
//! This module runs no model itself: the caller runs the detector and hands over each item's top-1 box and score.

pub mod dataset;
pub mod events;
pub mod metrics;
pub mod report;
pub mod runlog;

use std::path::PathBuf;

/// Errors of the evaluation. Each is one line naming the file (and the entry in it) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// An annotation is wrong: `entry` says which one (`line 3`, `ref_id 12 sent_id 40`).
    #[error("{}: {entry}: {message}", file.display())]
    Annotation { file: PathBuf, entry: String, message: String },
    /// A file could not be read.
    #[error("{}: cannot read: {err}", path.display())]
    Read { path: PathBuf, err: std::io::Error },
    /// A file could not be written.
    #[error("{}: cannot write: {err}", path.display())]
    Write { path: PathBuf, err: std::io::Error },
    /// A whole file is not what it should be (not JSON, not a pickle of refs, an empty set).
    #[error("{}: {message}", path.display())]
    BadFile { path: PathBuf, message: String },
    /// A report directory's saved results belong to another data set or another order of items.
    #[error("{}: {message}; give another --out, or delete this file to start over", path.display())]
    Resume { path: PathBuf, message: String },
    /// An image could not be decoded for drawing.
    #[error(transparent)]
    Image(#[from] crate::imageio::ImageIoError),
}

pub type Result<T> = std::result::Result<T, EvalError>;
