//! The clip writer's counters.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters of the clip writer, shared by its workers and recorders.
#[derive(Debug, Default)]
pub struct ClipStats {
    /// Events whose clip was started.
    pub started: AtomicU64,
    /// Clips written and renamed into place.
    pub written: AtomicU64,
    /// Clips that failed (the `clips` line says why).
    pub failed: AtomicU64,
    /// Clips being cut now (at most [`super::ClipSettings::workers`]).
    pub open: AtomicU64,
    /// The most clips cut at once.
    pub peak_open: AtomicU64,
    /// Clips waiting for a worker now (their packets wait on disk, in the recording).
    pub waiting: AtomicU64,
    /// The most clips waiting at once.
    pub peak_waiting: AtomicU64,
}

/// The counters at the end of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClipStatsSnapshot {
    /// Events whose clip was started.
    pub started: u64,
    /// Clips written and renamed into place.
    pub written: u64,
    /// Clips that failed (their `clips` line says why).
    pub failed: u64,
    /// The most clips cut at once (never more than the workers, `max_open_clips`).
    pub peak_open: u64,
    /// The most clips waiting for a worker at once.
    pub peak_waiting: u64,
    /// Packets the recordings lost (a full queue, a full disk), over every source; the feeds' lost packets.
    pub dropped_packets: u64,
    /// GOPs the pre-roll rings dropped to stay under their byte bound.
    pub ring_gops_dropped_bytes: u64,
    /// Segments of the recordings written, over every source.
    pub segments_written: u64,
    /// Segments removed by `[recording] keep` or `max_gb`.
    pub segments_removed: u64,
    /// Times a recording paused on a full disk.
    pub recording_pauses: u64,
}

impl ClipStats {
    pub(super) fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// One more clip waiting for a worker.
    pub(super) fn queued(&self) {
        let n = self.waiting.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_waiting.fetch_max(n, Ordering::Relaxed);
    }

    /// A worker took a waiting clip: it is being cut.
    pub(super) fn taken(&self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let n = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_open.fetch_max(n, Ordering::Relaxed);
    }

    /// A clip is done (written or failed).
    pub(super) fn done(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ClipStatsSnapshot {
        ClipStatsSnapshot {
            started: self.started.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            peak_open: self.peak_open.load(Ordering::Relaxed),
            peak_waiting: self.peak_waiting.load(Ordering::Relaxed),
            ..ClipStatsSnapshot::default()
        }
    }
}
