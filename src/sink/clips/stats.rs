//! The clip writer's counters, and the places of the clips being recorded ([`super::ClipSettings::max_open_clips`]).

use std::sync::Arc;
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
    /// Jobs refused because a worker's queue was full.
    pub queue_full: AtomicU64,
    /// Clips refused because [`super::ClipSettings::max_open_clips`] were being recorded.
    pub over_cap: AtomicU64,
    /// Clips being recorded now (each holds an [`OpenSlot`]).
    pub open: AtomicU64,
    /// The most clips recorded at once.
    pub peak_open: AtomicU64,
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
    /// Jobs refused because a worker's queue was full.
    pub queue_full: u64,
    /// Clips refused at once because `max_open_clips` clips were being recorded.
    pub over_cap: u64,
    /// The most clips recorded at once (never more than `max_open_clips`).
    pub peak_open: u64,
    /// Packets a clip could not take because it was over its bound (its clip failed), over every source.
    pub dropped_packets: u64,
    /// GOPs the pre-roll rings dropped to stay under their byte bound (a pre-roll shorter than asked).
    pub ring_gops_dropped_bytes: u64,
}

impl ClipStats {
    pub(super) fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ClipStatsSnapshot {
        ClipStatsSnapshot {
            started: self.started.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            queue_full: self.queue_full.load(Ordering::Relaxed),
            over_cap: self.over_cap.load(Ordering::Relaxed),
            peak_open: self.peak_open.load(Ordering::Relaxed),
            ..ClipStatsSnapshot::default()
        }
    }
}

/// One of the [`super::ClipSettings::max_open_clips`] places of a clip being recorded: taken when its event starts,
/// given back when dropped (its worker has finished the clip, or the clip failed before it got a pipeline).
#[derive(Debug)]
pub(super) struct OpenSlot {
    stats: Arc<ClipStats>,
}

impl OpenSlot {
    /// A place, or `None` when `max` clips are open already (counted in `over_cap`). Never waits.
    pub(super) fn take(stats: &Arc<ClipStats>, max: usize) -> Option<OpenSlot> {
        let max = max.max(1) as u64;
        let taken = stats.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        match taken {
            Ok(before) => {
                stats.peak_open.fetch_max(before + 1, Ordering::Relaxed);
                Some(OpenSlot { stats: stats.clone() })
            }
            Err(_) => {
                ClipStats::add(&stats.over_cap);
                None
            }
        }
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::AcqRel);
    }
}
