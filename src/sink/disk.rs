//! Write failures in an output directory (a full disk, most often), reported once, not once per frame.
//!
//! Every writer of the output directory (the event log, clips, snapshots) tells the one [`WriteFailures`] of
//! the run about each write that failed and each that succeeded. The first failure of an episode logs one line
//! that names the directory and, for a full disk, says "disk full"; the failures after it are only counted; the
//! first success after them ends the episode. Detection never stops for it: the caller goes on with the next
//! frame.
//!
//! A disk that is nearly full flaps: a clip that fails is deleted, which frees room for a few event lines, and
//! the next clip fills it again. So an episode ends only when writes have worked for [`SETTLED_AFTER`] with no
//! failure in between: a write that works sooner says nothing, and a failure after it belongs to the same
//! episode (one "disk full" line, not a "writing again" at once after it). And a new episode is reported only
//! [`REREPORT_AFTER`] after the last report; those in between are counted (see [`WriteFailureStats`]) and
//! logged at debug level.
//!
//! States of the one [`State::episode`]:
//!
//! | now                          | a write fails                  | a write works                              |
//! |------------------------------|--------------------------------|--------------------------------------------|
//! | idle (`None`)                | failing; report (rate-limited) | idle                                       |
//! | failing (`working_since` none)| failing, counted              | recovering (`working_since` = now)         |
//! | recovering                   | failing, counted (no report)   | idle after [`SETTLED_AFTER`] ("writing again") |

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, error, info};

/// Least time between two reports of failing writes.
pub const REREPORT_AFTER: Duration = Duration::from_secs(60);

/// How long writes must work, with no failure, for an episode to end ("writing again").
pub const SETTLED_AFTER: Duration = Duration::from_secs(10);

/// Whether an I/O error means there is no room: a full disk, a quota, or a file size limit (RLIMIT_FSIZE).
pub fn is_disk_full(kind: io::ErrorKind) -> bool {
    matches!(kind, io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge)
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

/// An episode of failures: from the first failed write to the next write that works.
#[derive(Debug, Clone)]
struct Episode {
    /// Writes failed in it.
    failed: u64,
    /// Whether its beginning was reported (at error level).
    reported: bool,
    /// The first of the writes that have worked since the last failure: `None` while writes fail.
    working_since: Option<Instant>,
}

/// Idle: `episode` is `None`. Failing: `Some`, until a write works.
#[derive(Debug, Default)]
struct State {
    episode: Option<Episode>,
    last_report: Option<Instant>,
    stats: WriteFailureStats,
}

/// The write failures of one output directory. Shared (behind an `Arc`) by every writer of the run; the
/// internal mutex is held only to update counters and is never held while logging or writing.
#[derive(Debug)]
pub struct WriteFailures {
    dir: PathBuf,
    rereport_after: Duration,
    settled_after: Duration,
    state: Mutex<State>,
}

impl WriteFailures {
    /// No failure yet, for the output directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_times(dir, REREPORT_AFTER, SETTLED_AFTER)
    }

    /// [`WriteFailures::new`] with another least time between two reports, and another time for writes to work
    /// before an episode ends.
    pub fn with_times(dir: impl Into<PathBuf>, rereport_after: Duration, settled_after: Duration) -> Self {
        WriteFailures { dir: dir.into(), rereport_after, settled_after, state: Mutex::new(State::default()) }
    }

    /// Records that writing `what` (a file) failed with `error`. Logs one line (and returns it) only when this
    /// begins an episode and the last report is at least [`REREPORT_AFTER`] old.
    pub fn failed(&self, what: &Path, error: &io::Error) -> Option<String> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        state.stats.failed += 1;
        if let Some(e) = &mut state.episode {
            e.failed += 1;
            e.working_since = None;
            return None;
        }
        state.stats.episodes += 1;
        let now = Instant::now();
        if state.last_report.is_some_and(|t| now.duration_since(t) < self.rereport_after) {
            state.episode = Some(Episode { failed: 1, reported: false, working_since: None });
            drop(guard);
            debug!("output directory {}: writing {} failed again: {error}", self.dir.display(), what.display());
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
        state.episode = Some(Episode { failed: 1, reported: true, working_since: None });
        state.last_report = Some(now);
        state.stats.first.get_or_insert_with(|| message.clone());
        drop(guard);
        error!("{message}");
        Some(message)
    }

    /// Records a write that worked. Ends an episode when writes have worked for [`SETTLED_AFTER`] since the
    /// last failure, with a line at info level when the episode was reported (and returns that line).
    pub fn succeeded(&self) -> Option<String> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let episode = guard.episode.as_mut()?;
        let now = Instant::now();
        let since = *episode.working_since.get_or_insert(now);
        if now.duration_since(since) < self.settled_after {
            return None;
        }
        let episode = guard.episode.take()?;
        drop(guard);
        let msg =
            format!("output directory {}: writing again, after {} failed writes", self.dir.display(), episode.failed);
        if episode.reported {
            info!("{msg}");
            Some(msg)
        } else {
            debug!("{msg}");
            None
        }
    }

    /// Whether writes are failing now (until an episode has ended, see [`WriteFailures::succeeded`]).
    pub fn failing(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).episode.is_some()
    }

    /// The counters now.
    pub fn stats(&self) -> WriteFailureStats {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_episode() {
        let w = WriteFailures::with_times("/data/out", Duration::ZERO, Duration::ZERO);
        let full = io::Error::from(io::ErrorKind::StorageFull);
        let first = w.failed(Path::new("/data/out/events.jsonl"), &full).expect("the first failure is reported");
        assert!(first.contains("/data/out") && first.contains("disk full") && !first.contains('\n'), "{first}");
        for _ in 0..100 {
            assert!(w.failed(Path::new("/data/out/events.jsonl"), &full).is_none(), "reported once");
        }
        assert!(w.failing());
        assert!(w.succeeded().is_some_and(|m| m.contains("writing again, after 101 failed writes")));
        assert!(!w.failing());
        let other = w.failed(Path::new("/data/out/x.mp4"), &io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(other.is_some_and(|m| !m.contains("disk full")), "a new episode is reported again");
        let s = w.stats();
        assert_eq!((s.failed, s.episodes), (102, 2));
        assert_eq!(s.first.as_deref(), Some(first.as_str()));
        assert!(is_disk_full(io::ErrorKind::FileTooLarge) && !is_disk_full(io::ErrorKind::NotFound));
    }

    #[test]
    fn a_flapping_disk_is_one_episode_with_no_writing_again() {
        // A failed clip is deleted and a few lines fit, then the disk is full again: one episode, one report,
        // and no "writing again" that the next failure makes false at once.
        let w = WriteFailures::new("/data/out");
        let full = io::Error::from(io::ErrorKind::StorageFull);
        let mut reports = 0;
        for _ in 0..50 {
            reports += usize::from(w.failed(Path::new("/data/out/events.jsonl"), &full).is_some());
            for _ in 0..3 {
                assert_eq!(w.succeeded(), None, "writes have not worked for long");
            }
        }
        assert_eq!(reports, 1);
        assert!(w.failing());
        let s = w.stats();
        assert_eq!((s.failed, s.episodes), (50, 1));
    }

    #[test]
    fn an_episode_ends_when_writes_have_worked_for_a_while() {
        let settle = Duration::from_millis(30);
        let w = WriteFailures::with_times("/data/out", Duration::ZERO, settle);
        let full = io::Error::from(io::ErrorKind::StorageFull);
        assert!(w.failed(Path::new("/data/out/events.jsonl"), &full).is_some());
        let first_ok = Instant::now();
        assert_eq!(w.succeeded(), None);
        // A failure while recovering starts the wait over, and is not reported again.
        assert!(w.failed(Path::new("/data/out/events.jsonl"), &full).is_none());
        assert_eq!(w.succeeded(), None);
        let deadline = first_ok + Duration::from_secs(10);
        let ended = loop {
            if let Some(m) = w.succeeded() {
                break m;
            }
            assert!(Instant::now() < deadline, "the episode never ended");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(first_ok.elapsed() >= settle, "ended after {:?}", first_ok.elapsed());
        assert!(ended.contains("writing again, after 2 failed writes"), "{ended}");
        assert!(!w.failing());
        assert_eq!(w.stats().episodes, 1);
    }
}
