//! Counters a source publishes while it runs, and the state it is in.
//!
//! States and transitions (live sources loop; files go straight to `Ended`):
//!
//! ```text
//!            start                first frame
//!   ──► Connecting ───────────────────────────► Streaming
//!          ▲   │ EOS / error / stall                 │ EOS / error / stall
//!          │   ▼                                     ▼
//!          └─ Backoff ◄──────────────────────── (live source)
//!
//!   any state ── shutdown, file end or failure, attempts exhausted, consumer gone ──► Ended
//! ```

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Where a source is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceState {
    /// A pipeline is starting and no frame came yet.
    Connecting,
    /// Frames are flowing.
    Streaming,
    /// The last attempt failed; waiting before the next one.
    Backoff,
    /// The source stopped for good (`last_error` says why, if it failed).
    Ended,
}

impl SourceState {
    fn from_u8(v: u8) -> SourceState {
        match v {
            0 => SourceState::Connecting,
            1 => SourceState::Streaming,
            2 => SourceState::Backoff,
            _ => SourceState::Ended,
        }
    }
}

/// Live counters, updated by the source thread (and the pad probe on GStreamer's streaming thread).
/// Shared as `Arc<SourceStats>`; read with [`SourceStats::snapshot`].
#[derive(Debug, Default)]
pub struct SourceStats {
    pub(crate) frames_decoded: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) frames_delivered: AtomicU64,
    pub(crate) dropped_queue: AtomicU64,
    pub(crate) dropped_unpaired: AtomicU64,
    pub(crate) inference_frames: AtomicU64,
    pub(crate) skipped_still: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    state: AtomicU8,
    /// Redacted; only the source thread writes it.
    last_error: Mutex<Option<String>>,
    /// The video decoder of the current connection; only the source thread writes it.
    decoder: Mutex<Option<String>>,
}

/// A copy of a source's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStatsSnapshot {
    /// Where the source was when the snapshot was taken.
    pub state: SourceState,
    /// Frames out of the decoder, over all connections.
    pub frames_decoded: u64,
    /// Frames handed to the consumer's queue.
    pub frames_delivered: u64,
    /// All drops: `dropped_in_pipeline + dropped_in_queue + dropped_unpaired`.
    pub frames_dropped: u64,
    /// Decoded but never reached the source thread (appsink `drop=true` on live sources; frames still in flight
    /// when a pipeline was torn down).
    pub dropped_in_pipeline: u64,
    /// Evicted from a full live queue (the consumer was slower than the source).
    pub dropped_in_queue: u64,
    /// Model-size frames whose full-size twin was missing (live sources only, when the two appsinks dropped
    /// different frames).
    pub dropped_unpaired: u64,
    /// Delivered frames marked `infer = true`.
    pub inference_frames: u64,
    /// Frames picked for inference (by `every`/`fps`) that the motion gate skipped because nothing moved
    /// (delivered with `infer = false`).
    pub frames_skipped_still: u64,
    /// Connection attempts after the first.
    pub reconnects: u64,
    /// The last error, password removed.
    pub last_error: Option<String>,
    /// The GStreamer element that decodes the video (`avdec_h264` in software, `nvv4l2decoder` on a Jetson), as
    /// found in the running pipeline once frames flow; `"none"` when the source delivers raw video (a CSI or
    /// YUYV camera); `None` before the first frame.
    pub decoder: Option<String>,
}

/// One line for logs: "decoded 250, delivered 250, inferred 250, dropped 0, reconnects 0, decoder avdec_h264",
/// with where frames were dropped and the last error when there are any.
impl std::fmt::Display for SourceStatsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "decoded {}, delivered {}, inferred {}, dropped {}",
            self.frames_decoded, self.frames_delivered, self.inference_frames, self.frames_dropped
        )?;
        if self.frames_dropped > 0 {
            write!(
                f,
                " (in the pipeline {}, from the queue {}, unpaired {})",
                self.dropped_in_pipeline, self.dropped_in_queue, self.dropped_unpaired
            )?;
        }
        if self.frames_skipped_still > 0 {
            write!(f, ", skipped still {}", self.frames_skipped_still)?;
        }
        write!(f, ", reconnects {}, decoder {}", self.reconnects, self.decoder.as_deref().unwrap_or("unknown"))?;
        if let Some(e) = &self.last_error {
            write!(f, ", last error: {e}")?;
        }
        Ok(())
    }
}

impl SourceStats {
    /// A consistent-enough copy of the counters (each is read atomically, not all at one instant).
    pub fn snapshot(&self) -> SourceStatsSnapshot {
        let decoded = self.frames_decoded.load(Ordering::Relaxed);
        let received = self.frames_received.load(Ordering::Relaxed);
        let dropped_queue = self.dropped_queue.load(Ordering::Relaxed);
        let dropped_unpaired = self.dropped_unpaired.load(Ordering::Relaxed);
        let dropped_in_pipeline = decoded.saturating_sub(received);
        SourceStatsSnapshot {
            state: self.state(),
            frames_decoded: decoded,
            frames_delivered: self.frames_delivered.load(Ordering::Relaxed),
            frames_dropped: dropped_in_pipeline + dropped_queue + dropped_unpaired,
            dropped_in_pipeline,
            dropped_in_queue: dropped_queue,
            dropped_unpaired,
            inference_frames: self.inference_frames.load(Ordering::Relaxed),
            frames_skipped_still: self.skipped_still.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            last_error: self.last_error(),
            decoder: self.decoder(),
        }
    }

    /// The state now.
    pub fn state(&self) -> SourceState {
        SourceState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// The last error, password removed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_state(&self, state: SourceState) {
        let v = match state {
            SourceState::Connecting => 0,
            SourceState::Streaming => 1,
            SourceState::Backoff => 2,
            SourceState::Ended => 3,
        };
        self.state.store(v, Ordering::Release);
    }

    /// The video decoder in use, once known: see [`SourceStatsSnapshot::decoder`].
    pub fn decoder(&self) -> Option<String> {
        self.decoder.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_decoder(&self, decoder: String) {
        *self.decoder.lock().unwrap_or_else(|e| e.into_inner()) = Some(decoder);
    }

    /// Records an error; the caller has already redacted it.
    pub(crate) fn set_last_error(&self, message: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
