//! A GStreamer pipeline run to its end within a deadline, set to NULL when dropped, and its errors.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::{EvidenceError, PIPELINE_TIMEOUT};
use crate::gst::bus::{self, WaitError};

/// Why a pipeline did not reach end-of-stream.
#[derive(Debug)]
pub(super) enum RunError {
    /// The file could not be written (`filesink` failed): the disk is full, or the directory went away.
    Write(io::Error),
    /// The deadline passed first.
    Timeout,
    /// Anything else, with GStreamer's message.
    Other(String),
}

impl RunError {
    pub(super) fn into_evidence_error(self, what: &'static str, path: &Path) -> EvidenceError {
        match self {
            RunError::Write(error) => EvidenceError::Write { what, path: path.to_path_buf(), error },
            e => EvidenceError::Pipeline { what, path: path.to_path_buf(), message: run_error_text(e) },
        }
    }
}

/// A pipeline that is set to NULL when dropped, so its streaming threads never outlive the call.
pub(super) struct Pipeline(pub(super) gst::Pipeline);

impl Pipeline {
    pub(super) fn launch(description: &str) -> Result<Self, String> {
        let element = gst::parse::launch(description).map_err(|e| format!("cannot build the pipeline: {e}"))?;
        let pipeline =
            element.downcast::<gst::Pipeline>().map_err(|_| "the description is not a pipeline".to_string())?;
        Ok(Pipeline(pipeline))
    }

    pub(super) fn element(&self, name: &str) -> Result<gst::Element, String> {
        self.0.by_name(name).ok_or_else(|| format!("the pipeline has no element {name}"))
    }

    /// Waits until `deadline` for the first of `types` ([`bus::wait_for`]); an error message ends the wait as an
    /// error.
    pub(super) fn wait_for(&self, types: &[gst::MessageType], deadline: Instant) -> Result<gst::Message, RunError> {
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
    pub(super) fn error_within(&self, timeout: Duration) -> Option<RunError> {
        let bus = self.0.bus()?;
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_nseconds(timeout.as_nanos() as u64), &[gst::MessageType::Error])?;
        match msg.view() {
            gst::MessageView::Error(err) => Some(run_error(err)),
            _ => None,
        }
    }

    /// Sets `state`; when that fails, the pipeline's own error (given a moment to arrive) says why.
    pub(super) fn set_state(&self, state: gst::State) -> Result<(), RunError> {
        match self.0.set_state(state) {
            Ok(_) => Ok(()),
            Err(e) => Err(self
                .error_within(Duration::from_secs(2))
                .unwrap_or_else(|| RunError::Other(format!("cannot set the pipeline to {state:?}: {e}")))),
        }
    }

    /// Plays the pipeline to end-of-stream within [`PIPELINE_TIMEOUT`].
    pub(super) fn run_to_eos(&self) -> Result<(), RunError> {
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

pub(super) fn run_error_text(e: RunError) -> String {
    match e {
        RunError::Write(error) => error.to_string(),
        RunError::Timeout => format!("did not finish within {} s", PIPELINE_TIMEOUT.as_secs()),
        RunError::Other(message) => message,
    }
}
