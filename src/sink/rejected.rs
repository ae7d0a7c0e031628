//! `[output] keep_rejected = false`: the clips and snapshots of an event the verifier rejected are removed, once
//! both the verdict and the files are final, and never those of a confirmed event or of one whose verdict is an
//! error.
//!
//! Two threads finish an event, in either order: the verify thread (its verdict) and a clip worker (its files,
//! after the post-roll that follows the event's end). [`RejectedEvidence`] is where they meet, one entry per
//! verifying event in flight:
//!
//! | entry      | verdict comes: rejected          | verdict: confirmed or error | clips come (final)                     |
//! |------------|----------------------------------|-----------------------------|----------------------------------------|
//! | `Pending`  | → `Rejected`                     | entry removed               | → `Written` (the paths)                |
//! | `Rejected` | —                                | —                           | files removed, `clips` status `removed`, entry removed |
//! | `Written`  | files removed, entry removed     | entry removed               | —                                      |
//!
//! So the record always says why the files are gone: a rejected event's `verification` line carries
//! `"evidence": "removed"`, and when the verdict came first its `clips` line has status `removed` too (the paths
//! are of what was removed). An entry is made when a verifying event starts and goes with its verdict or its
//! removal, so the map holds only events in flight. One mutex, taken alone; files are removed under it, which
//! is what makes exactly one side remove them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing::{debug, warn};

use super::events::{Clips, ClipsStatus};

/// One verifying event in flight (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    /// Neither the verdict nor the files are final.
    Pending,
    /// Rejected; the files are not final yet.
    Rejected,
    /// The files are final (these paths); the verdict is not.
    Written(Clips),
}

/// Where the verdicts and the clips of verifying events meet (see the module documentation).
#[derive(Debug)]
pub struct RejectedEvidence {
    /// The run's output directory: the clips' paths are relative to it.
    out_dir: PathBuf,
    entries: Mutex<HashMap<String, Entry>>,
}

impl RejectedEvidence {
    /// For the output directory `out_dir`.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        RejectedEvidence { out_dir: out_dir.into(), entries: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A verifying event started: its verdict will come.
    pub fn expect(&self, event_id: &str) {
        self.lock().insert(event_id.to_string(), Entry::Pending);
    }

    /// The verdict is final (`rejected` or not). Returns the files removed now (when the clips came first).
    pub fn verdict(&self, event_id: &str, rejected: bool) -> Vec<PathBuf> {
        let mut entries = self.lock();
        match entries.remove(event_id) {
            Some(Entry::Written(clips)) if rejected => self.remove(event_id, &clips),
            Some(Entry::Pending) if rejected => {
                entries.insert(event_id.to_string(), Entry::Rejected);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// Whether the event is already rejected: its clip worker need not make the evidence it would remove.
    pub fn is_rejected(&self, event_id: &str) -> bool {
        self.lock().get(event_id) == Some(&Entry::Rejected)
    }

    /// The event's files are final, as `clips` says, just before its `clips` line. When it is already rejected
    /// the files are removed now and `clips` gets status `removed` (a `failed` one stays `failed`).
    pub fn clips_final(&self, event_id: &str, clips: &mut Clips) {
        let mut entries = self.lock();
        match entries.get(event_id) {
            Some(Entry::Rejected) => {
                entries.remove(event_id);
                self.remove(event_id, clips);
                // A clip that failed stays `failed` (its error says why); what of it was written is gone too.
                if clips.status == ClipsStatus::Written {
                    clips.status = ClipsStatus::Removed;
                }
            }
            Some(Entry::Pending) => {
                entries.insert(event_id.to_string(), Entry::Written(clips.clone()));
            }
            _ => {}
        }
    }

    /// Events in flight.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no event is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes the files `clips` names that exist; returns those removed.
    fn remove(&self, event_id: &str, clips: &Clips) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for rel in
            [&clips.clip, &clips.crop_clip, &clips.snapshot, &clips.crop_snapshot, &clips.sidecar].into_iter().flatten()
        {
            let path = self.out_dir.join(rel);
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(event = event_id, path = %path.display(), error = %e, "cannot remove a rejected event's file")
                }
            }
        }
        debug!(event = event_id, files = removed.len(), "rejected event's evidence removed");
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path, id: &str) -> Clips {
        std::fs::create_dir_all(dir.join("cam")).unwrap();
        let mut clips = Clips::planned("cam", id);
        clips.status = ClipsStatus::Written;
        for rel in [&clips.clip, &clips.snapshot, &clips.sidecar].into_iter().flatten() {
            std::fs::write(dir.join(rel), b"x").unwrap();
        }
        clips
    }

    fn exists(dir: &std::path::Path, clips: &Clips) -> bool {
        dir.join(clips.clip.as_ref().unwrap()).exists() || dir.join(clips.snapshot.as_ref().unwrap()).exists()
    }

    #[test]
    fn a_rejected_events_files_go_whichever_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let r = RejectedEvidence::new(dir.path());
        // The clips first, then the verdict.
        r.expect("a");
        let mut a = files(dir.path(), "a");
        r.clips_final("a", &mut a);
        assert_eq!(a.status, ClipsStatus::Written);
        assert!(exists(dir.path(), &a), "not before the verdict");
        assert_eq!(r.verdict("a", true).len(), 3);
        assert!(!exists(dir.path(), &a));
        // The verdict first, then the clips.
        r.expect("b");
        assert!(r.verdict("b", true).is_empty());
        assert!(r.is_rejected("b"));
        let mut b = files(dir.path(), "b");
        r.clips_final("b", &mut b);
        assert_eq!(b.status, ClipsStatus::Removed);
        assert!(!exists(dir.path(), &b));
        assert!(r.is_empty(), "entries go with their event");
    }

    #[test]
    fn confirmed_errored_and_unverified_events_keep_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let r = RejectedEvidence::new(dir.path());
        for (id, clips_first) in [("c", true), ("d", false)] {
            r.expect(id);
            let mut c = files(dir.path(), id);
            if clips_first {
                r.clips_final(id, &mut c);
                assert!(r.verdict(id, false).is_empty(), "confirmed or error");
            } else {
                assert!(r.verdict(id, false).is_empty());
                r.clips_final(id, &mut c);
            }
            assert_eq!(c.status, ClipsStatus::Written);
            assert!(exists(dir.path(), &c), "{id}");
        }
        // An event of a query without verify: never expected, never touched.
        let mut e = files(dir.path(), "e");
        r.clips_final("e", &mut e);
        assert!(r.verdict("e", true).is_empty());
        assert!(exists(dir.path(), &e));
        assert!(r.is_empty());
    }
}
