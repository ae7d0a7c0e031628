//! Waiting on a pipeline's bus with a deadline: for end-of-stream after the last frame (a clip's muxer, an
//! encoder, a probe that decodes a whole file), or for the first of any messages (a preroll's `AsyncDone`).
//!
//! The wait never spins: each pop waits at most the time left, and a pop that returns nothing well before the
//! deadline means the bus cannot be waited on (GStreamer's state when the process is out of file descriptors and
//! the bus has no poll, or a flushing bus), which is an error of its own ([`WaitError::Broken`]) rather than a
//! loop until the deadline.

use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

/// A pop that returns nothing while more than this is left before the deadline did not wait:
/// [`WaitError::Broken`].
pub const BUS_EARLY_RETURN: Duration = Duration::from_millis(20);

/// Why a wait on a bus ended without the message waited for.
#[derive(Debug)]
pub enum WaitError {
    /// The pipeline has no bus.
    NoBus,
    /// The deadline passed first.
    Timeout,
    /// The bus returned nothing well before the deadline: it cannot be waited on.
    Broken,
    /// The pipeline posted an error first (a [`gst::MessageView::Error`] message).
    Error(gst::Message),
}

/// Waits until `deadline` for the first message of one of `types` on `pipeline`'s bus. An error message ends
/// the wait first, as [`WaitError::Error`]; other messages are left out by the bus's filter.
pub fn wait_for(
    pipeline: &gst::Pipeline,
    types: &[gst::MessageType],
    deadline: Instant,
) -> Result<gst::Message, WaitError> {
    let bus = pipeline.bus().ok_or(WaitError::NoBus)?;
    let mut all = types.to_vec();
    all.push(gst::MessageType::Error);
    wait_for_with(deadline, |left| bus.timed_pop_filtered(gst::ClockTime::from_nseconds(left.as_nanos() as u64), &all))
}

/// Waits until `deadline` for end-of-stream on `pipeline`'s bus (or its first error).
pub fn wait_eos(pipeline: &gst::Pipeline, deadline: Instant) -> Result<(), WaitError> {
    wait_for(pipeline, &[gst::MessageType::Eos], deadline).map(drop)
}

/// [`wait_for`] with `pop(left)`: the bus's next message of the types waited for (or an error) within `left`.
/// The seam for tests of a bus that cannot be waited on.
pub fn wait_for_with(
    deadline: Instant,
    mut pop: impl FnMut(Duration) -> Option<gst::Message>,
) -> Result<gst::Message, WaitError> {
    // One turn: a pop that waits until the deadline at most, then a return. Bounded by the deadline.
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(WaitError::Timeout);
    }
    match pop(left) {
        None if deadline.saturating_duration_since(Instant::now()) > BUS_EARLY_RETURN => Err(WaitError::Broken),
        None => Err(WaitError::Timeout),
        Some(m) if matches!(m.view(), gst::MessageView::Error(_)) => Err(WaitError::Error(m)),
        Some(m) => Ok(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(description: &str) -> gst::Pipeline {
        gst::init().unwrap();
        gst::parse::launch(description).unwrap().downcast::<gst::Pipeline>().unwrap()
    }

    #[test]
    fn a_deadline_that_expires_is_a_timeout_after_the_deadline_and_not_much_later() {
        // Never started: its bus stays empty.
        let quiet = pipeline("fakesrc ! fakesink");
        let started = Instant::now();
        let error = wait_eos(&quiet, Instant::now() + Duration::from_millis(200)).unwrap_err();
        assert!(matches!(error, WaitError::Timeout), "{error:?}");
        assert!(started.elapsed() >= Duration::from_millis(180), "{:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        // A deadline already past does not pop at all.
        let mut tries = 0;
        let error = wait_for_with(Instant::now(), |_| {
            tries += 1;
            None
        })
        .unwrap_err();
        assert!(matches!(error, WaitError::Timeout) && tries == 0, "{error:?} after {tries} tries");
    }

    #[test]
    fn a_bus_that_returns_at_once_is_broken_after_one_try() {
        gst::init().unwrap();
        let mut tries = 0;
        let started = Instant::now();
        let error = wait_for_with(Instant::now() + Duration::from_secs(10), |_| {
            tries += 1;
            None
        })
        .unwrap_err();
        assert!(matches!(error, WaitError::Broken), "{error:?}");
        assert_eq!(tries, 1);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }

    #[test]
    fn eos_ends_the_wait_and_an_error_fails_it() {
        let done = pipeline("videotestsrc num-buffers=3 ! fakesink");
        done.set_state(gst::State::Playing).unwrap();
        let result = wait_eos(&done, Instant::now() + Duration::from_secs(20));
        done.set_state(gst::State::Null).unwrap();
        assert!(result.is_ok(), "{result:?}");

        let deadline = Instant::now() + Duration::from_secs(10);
        let error =
            wait_for_with(deadline, |_| Some(gst::message::Error::new(gst::CoreError::Failed, "broken"))).unwrap_err();
        match error {
            WaitError::Error(m) => match m.view() {
                gst::MessageView::Error(e) => assert!(e.error().to_string().contains("broken"), "{e:?}"),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        let m = wait_for_with(deadline, |_| Some(gst::message::Eos::new())).unwrap();
        assert!(matches!(m.view(), gst::MessageView::Eos(_)));
    }
}
