//! Write failures in an output directory (a full disk, most often), reported once, not once per frame.
//!
//! Every writer of the output directory (the event log, clips, snapshots) tells the one [`WriteFailures`] of
//! the run about each write that failed and each that succeeded. The first failure of an episode logs one line
//! that names the directory and, for a full disk, says "disk full"; the failures after it are only counted; the
//! first success after them ends the episode with one line saying how many writes were lost. Detection never
//! stops for it: the caller goes on with the next frame.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::{error, info};

/// Whether an I/O error means there is no room: a full disk, a quota, or a file size limit (RLIMIT_FSIZE).
pub fn is_disk_full(kind: io::ErrorKind) -> bool {
    matches!(kind, io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge)
}

/// An episode of failures: from the first failed write to the next write that works.
#[derive(Debug, Clone)]
struct Episode {
    /// Writes failed in it.
    failed: u64,
}

/// Counters of [`WriteFailures`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteFailureStats {
    /// Writes that failed, in every episode.
    pub failed: u64,
    /// Episodes: times the directory stopped taking writes.
    pub episodes: u64,
    /// The line that reported the first episode.
    pub first: Option<String>,
}

/// The write failures of one output directory. Shared (behind an `Arc`) by every writer of the run; the
/// internal mutex is held only to update counters and is never held while logging or writing.
#[derive(Debug)]
pub struct WriteFailures {
    dir: PathBuf,
    state: Mutex<(Option<Episode>, WriteFailureStats)>,
}

impl WriteFailures {
    /// No failure yet, for the output directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WriteFailures { dir: dir.into(), state: Mutex::new((None, WriteFailureStats::default())) }
    }

    /// Records that writing `what` (a file) failed with `error`. Logs one line (and returns it) only when this
    /// begins an episode.
    pub fn failed(&self, what: &Path, error: &io::Error) -> Option<String> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (episode, stats) = &mut *guard;
        stats.failed += 1;
        if let Some(e) = episode {
            e.failed += 1;
            return None;
        }
        let message = if is_disk_full(error.kind()) {
            format!(
                "output directory {}: disk full ({error}, writing {}); detection goes on, but events, clips and \
                 snapshots are not recorded until there is room: free space, or set [retention] max_disk_gb",
                self.dir.display(),
                what.display()
            )
        } else {
            format!(
                "output directory {}: cannot write {}: {error}; detection goes on, but events, clips and snapshots \
                 are not recorded until writes work again: check the directory",
                self.dir.display(),
                what.display()
            )
        };
        *episode = Some(Episode { failed: 1 });
        stats.episodes += 1;
        stats.first.get_or_insert_with(|| message.clone());
        drop(guard);
        error!("{message}");
        Some(message)
    }

    /// Records a write that worked; ends an episode (with one line) if there was one.
    pub fn succeeded(&self) {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(episode) = guard.0.take() else { return };
        drop(guard);
        info!("output directory {}: writing again, after {} failed writes", self.dir.display(), episode.failed);
    }

    /// Whether writes are failing now.
    pub fn failing(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0.is_some()
    }

    /// The counters now.
    pub fn stats(&self) -> WriteFailureStats {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_episode() {
        let w = WriteFailures::new("/data/out");
        let full = io::Error::from(io::ErrorKind::StorageFull);
        let first = w.failed(Path::new("/data/out/events.jsonl"), &full).expect("the first failure is reported");
        assert!(first.contains("/data/out") && first.contains("disk full") && !first.contains('\n'), "{first}");
        for _ in 0..100 {
            assert!(w.failed(Path::new("/data/out/events.jsonl"), &full).is_none(), "reported once");
        }
        assert!(w.failing());
        w.succeeded();
        assert!(!w.failing());
        let other = w.failed(Path::new("/data/out/x.mp4"), &io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(other.is_some_and(|m| !m.contains("disk full")), "a new episode is reported again");
        let s = w.stats();
        assert_eq!((s.failed, s.episodes), (102, 2));
        assert_eq!(s.first.as_deref(), Some(first.as_str()));
        assert!(is_disk_full(io::ErrorKind::FileTooLarge) && !is_disk_full(io::ErrorKind::NotFound));
    }
}
