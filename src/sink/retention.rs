//! Retention: the oldest clips and snapshots of an output directory deleted to keep it within an age and a size.
//!
//! ```toml
//! [retention]
//! max_disk_gb = 200.0     # the whole output directory, in GB (10^9 bytes); default: no limit
//! max_age_days = 14.0     # files older than this are deleted; default: no limit
//! interval_s = 300        # how often `watch` checks, in seconds (default 300)
//! ```
//!
//! `lookout watch` enforces it on a named thread (`retention`) every `interval_s`, and `lookout retention --out
//! DIR` does one pass (deploy/lookout-retention.service runs it hourly).
//!
//! # What is deleted, and what never is
//!
//! A pass walks the output directory (not following symbolic links, and not into another file system mounted
//! below it). It first deletes files older than `max_age_days`; then, while the directory holds more than
//! `max_disk_gb`, the oldest events' files by modification time: an event's clip, crop clip, snapshots and
//! sidecar (`<event-id>*.*`) go together, dated by the newest of them. Directories are left in place.
//!
//! Never deleted, whatever their age:
//! - `events.jsonl` (and any `events*.jsonl`) and `summary.json`: the record of what was seen. They count
//!   towards `max_disk_gb`, so a directory whose event log alone is over the limit stays over it (and says so).
//! - files being written: temporary names (`*.part`, `*.tmp`), and any file changed in the last
//!   [`MIN_AGE`], for writers that update a file in place;
//! - the alert spool (`alert-spool/`, or wherever [`RetentionSettings::protect`] says): undelivered alerts.
//! - the run markers (`.lookout/runs/`): the numbers that keep event ids from repeating across runs.
//! - the recordings (`<source>/rec/`): they count towards `max_disk_gb`, but `[recording] keep`, `max_gb` and
//!   `min_free_mb` bound them (a segment deleted here could be one a clip waiting to be cut needs).
//!
//! Sizes are file lengths (what `du --apparent-size` shows), not allocated blocks.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Deserialize;
use tracing::{info, warn};

/// Default [`RetentionConfig::interval_s`].
pub const DEFAULT_RETENTION_INTERVAL_S: u64 = 300;
/// A file changed more recently than this may still be being written: it is never deleted.
pub const MIN_AGE: Duration = Duration::from_secs(60);
/// Deepest directory level walked below the output directory (`out/<source>/<event>/...` is 3).
const MAX_DEPTH: usize = 8;
/// Bytes in a GB, as disks are sold.
const BYTES_PER_GB: f64 = 1e9;
const SECONDS_PER_DAY: f64 = 86_400.0;

/// `[retention]` in the TOML configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Most GB (10^9 bytes) the output directory may hold. Default: no limit.
    pub max_disk_gb: Option<f64>,
    /// Files older than this many days are deleted. Default: no limit.
    pub max_age_days: Option<f64>,
    /// Seconds between two passes in `watch`. Default [`DEFAULT_RETENTION_INTERVAL_S`].
    pub interval_s: Option<u64>,
}

/// Errors of retention settings and passes. Each names the directory or file.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// A limit is not a positive number.
    #[error("retention: {key} {value} must be a number above 0")]
    Limit { key: &'static str, value: f64 },
    /// The output directory cannot be read.
    #[error("retention: cannot read output directory {}: {error}; check that it exists and is readable", path.display())]
    ReadDir { path: PathBuf, error: io::Error },
    /// The retention thread could not be started.
    #[error("cannot start the retention thread: {0}")]
    Thread(io::Error),
}

/// What the user sets, for one output directory.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionSettings {
    /// The output directory.
    pub dir: PathBuf,
    /// Most bytes the directory may hold. Default: no limit.
    pub max_bytes: Option<u64>,
    /// Files older than this are deleted. Default: no limit.
    pub max_age: Option<Duration>,
    /// Time between two passes of [`Retention::spawn`]. Default [`DEFAULT_RETENTION_INTERVAL_S`].
    pub interval: Duration,
    /// Directories never touched, besides the default alert spool `<dir>/alert-spool`. Default: none.
    pub protect: Vec<PathBuf>,
}

impl RetentionSettings {
    /// The settings of `config` for the output directory `dir`, with `max_disk_gb` and `max_age_days` from the
    /// command line (when given) in place of the file's. `None` when there is no limit at all.
    pub fn from_config(
        dir: &Path,
        config: &RetentionConfig,
        max_disk_gb: Option<f64>,
        max_age_days: Option<f64>,
    ) -> Result<Option<RetentionSettings>, RetentionError> {
        let gb = max_disk_gb.or(config.max_disk_gb);
        let days = max_age_days.or(config.max_age_days);
        for (key, value) in [("max_disk_gb", gb), ("max_age_days", days)] {
            if let Some(v) = value
                && !(v.is_finite() && v > 0.0)
            {
                return Err(RetentionError::Limit { key, value: v });
            }
        }
        if gb.is_none() && days.is_none() {
            return Ok(None);
        }
        Ok(Some(RetentionSettings {
            dir: dir.to_path_buf(),
            max_bytes: gb.map(|g| (g * BYTES_PER_GB) as u64),
            max_age: days.map(|d| Duration::from_secs_f64(d * SECONDS_PER_DAY)),
            interval: Duration::from_secs(config.interval_s.unwrap_or(DEFAULT_RETENTION_INTERVAL_S).max(1)),
            protect: Vec::new(),
        }))
    }
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionStats {
    /// Files deleted for their age.
    pub deleted_old: u64,
    /// Files deleted to bring the directory under its size limit.
    pub deleted_for_space: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Bytes in the directory after the pass.
    pub bytes_now: u64,
    /// Files that could not be deleted (logged).
    pub errors: u64,
}

impl RetentionStats {
    fn add(&mut self, other: &RetentionStats) {
        self.deleted_old += other.deleted_old;
        self.deleted_for_space += other.deleted_for_space;
        self.bytes_freed += other.bytes_freed;
        self.bytes_now = other.bytes_now;
        self.errors += other.errors;
    }
}

/// A file that may be deleted.
#[derive(Debug)]
struct Candidate {
    path: PathBuf,
    len: u64,
    modified: SystemTime,
}

/// The event a file belongs to: its directory and its name up to the first dot, without `-crop`
/// (`gate/gate-0-7-120.mp4`, `gate/gate-0-7-120-crop.jpg` and `gate/gate-0-7-120.json` are one event).
fn event_key(path: &Path) -> (PathBuf, String) {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.split('.').next().unwrap_or_default();
    (dir, stem.strip_suffix("-crop").unwrap_or(stem).to_string())
}

/// Whether a file of this name is never deleted (the event log, the summary, temporary files).
fn is_protected_name(name: &str) -> bool {
    (name.starts_with("events") && name.ends_with(".jsonl"))
        || name == "summary.json"
        || name.ends_with(".part")
        || name.ends_with(".tmp")
        || name.contains(".part.")
}

/// One pass over `settings.dir` at time `now`. Files that cannot be deleted are logged and counted, not errors;
/// only an output directory that cannot be read is.
pub fn enforce(settings: &RetentionSettings, now: SystemTime) -> Result<RetentionStats, RetentionError> {
    let root = &settings.dir;
    let root_meta = fs::metadata(root).map_err(|error| RetentionError::ReadDir { path: root.clone(), error })?;
    // The run markers too: without them run numbers, and so event ids, could repeat.
    let mut protect: Vec<PathBuf> =
        vec![root.join(crate::sink::alerts::spool::DEFAULT_SPOOL_DIR_NAME), root.join(crate::sink::run::RUNS_DIR)];
    protect.extend(settings.protect.iter().cloned());

    let mut total: u64 = 0;
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut stack: Vec<(PathBuf, usize)> = vec![(root.clone(), 0)];
    let mut stats = RetentionStats::default();
    while let Some((dir, depth)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(error) if dir == *root => return Err(RetentionError::ReadDir { path: dir, error }),
            Err(error) => {
                warn!("retention: cannot read {}: {error}; its files are left alone", dir.display());
                stats.errors += 1;
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // symlink_metadata: a link is not followed (nor deleted: it is not a regular file).
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            if meta.dev() != root_meta.dev() {
                continue;
            }
            if meta.is_dir() {
                if depth < MAX_DEPTH && !protect.iter().any(|p| path.starts_with(p)) {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            total += meta.len();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let modified = meta.modified().unwrap_or(now);
            let recent = now.duration_since(modified).map(|age| age < MIN_AGE).unwrap_or(true);
            // A source's recording (`<source>/rec/`) counts towards the limit but is bounded by its own settings
            // ([recording] keep, max_gb, min_free_mb): deleting a segment here could take one a waiting clip needs.
            let in_recording = depth == 2 && dir.file_name().is_some_and(|n| n == crate::sink::recording::REC_DIR);
            if is_protected_name(&name) || recent || in_recording {
                continue;
            }
            candidates.push(Candidate { path, len: meta.len(), modified });
        }
    }

    // Oldest first; the path breaks ties, so that a pass is deterministic.
    candidates.sort_by(|a, b| a.modified.cmp(&b.modified).then_with(|| a.path.cmp(&b.path)));
    let delete = |c: &Candidate, total: &mut u64, stats: &mut RetentionStats| -> bool {
        match fs::remove_file(&c.path) {
            Ok(()) => {
                *total -= c.len;
                stats.bytes_freed += c.len;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                *total -= c.len;
                false
            }
            Err(e) => {
                warn!("retention: cannot delete {}: {e}; check its permissions", c.path.display());
                stats.errors += 1;
                false
            }
        }
    };
    let mut kept = Vec::with_capacity(candidates.len());
    for c in candidates {
        let old = settings.max_age.is_some_and(|max| now.duration_since(c.modified).is_ok_and(|age| age > max));
        if old {
            if delete(&c, &mut total, &mut stats) {
                stats.deleted_old += 1;
            }
        } else {
            kept.push(c);
        }
    }
    if let Some(max) = settings.max_bytes {
        // An event's files (clip, crop clip, snapshots, sidecar) go together, as old as the newest of them, so
        // that no snapshot or sidecar outlives its clip.
        let mut groups: BTreeMap<(PathBuf, String), (SystemTime, Vec<&Candidate>)> = BTreeMap::new();
        for c in &kept {
            let g = groups.entry(event_key(&c.path)).or_insert((c.modified, Vec::new()));
            g.0 = g.0.max(c.modified);
            g.1.push(c);
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_by(|a, b| a.1.0.cmp(&b.1.0).then_with(|| a.0.cmp(&b.0)));
        for (_, (_, files)) in &groups {
            if total <= max {
                break;
            }
            for c in files {
                if delete(c, &mut total, &mut stats) {
                    stats.deleted_for_space += 1;
                }
            }
        }
        if total > max {
            warn!(
                "retention: {} holds {total} bytes, over max_disk_gb ({max} bytes), with nothing more that may be \
                 deleted (events.jsonl, files being written, the alert spool); raise max_disk_gb or move old event \
                 logs away",
                root.display()
            );
        }
    }
    stats.bytes_now = total;
    if stats.deleted_old + stats.deleted_for_space > 0 {
        info!(
            "retention: {}: deleted {} files older than the age limit and {} more for space, {} bytes freed; {} \
             bytes now",
            root.display(),
            stats.deleted_old,
            stats.deleted_for_space,
            stats.bytes_freed,
            total
        );
    }
    Ok(stats)
}

/// Retention running on its own thread (`retention`) for the length of a `watch`.
///
/// Concurrency: the thread owns its settings; the only thing shared is the stop channel. Dropping the sender
/// (in [`Retention::stop`] or on drop) wakes the thread at once, which finishes the file it is deleting and
/// returns its stats.
#[derive(Debug)]
pub struct Retention {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<RetentionStats>>,
}

impl Retention {
    /// Starts the thread: a pass at once, then one every `settings.interval`.
    pub fn spawn(settings: RetentionSettings) -> Result<Retention, RetentionError> {
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("retention".into())
            .spawn(move || run(settings, rx))
            .map_err(RetentionError::Thread)?;
        Ok(Retention { stop: Some(tx), thread: Some(thread) })
    }

    /// Stops the thread and returns what every pass did.
    pub fn stop(mut self) -> RetentionStats {
        self.finish()
    }

    fn finish(&mut self) -> RetentionStats {
        self.stop.take();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(stats)) => stats,
            Some(Err(_)) => {
                warn!("the retention thread panicked");
                RetentionStats::default()
            }
            None => RetentionStats::default(),
        }
    }
}

impl Drop for Retention {
    fn drop(&mut self) {
        self.finish();
    }
}

fn run(settings: RetentionSettings, stop: Receiver<()>) -> RetentionStats {
    let mut total = RetentionStats::default();
    let mut warned = false;
    loop {
        match enforce(&settings, SystemTime::now()) {
            Ok(s) => {
                total.add(&s);
                warned = false;
            }
            // Reported once until it works again, not at every pass.
            Err(e) if !warned => {
                warn!("{e}");
                warned = true;
            }
            Err(_) => {}
        }
        match stop.recv_timeout(settings.interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::time::Instant;

    const DAY: Duration = Duration::from_secs(86_400);

    /// A file of `len` bytes (sparse: nothing is written) last modified `age` before `now`.
    fn file(dir: &Path, rel: &str, len: u64, now: SystemTime, age: Duration) -> PathBuf {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let f = File::create(&path).unwrap();
        f.set_len(len).unwrap();
        f.set_modified(now - age).unwrap();
        path
    }

    fn settings(dir: &Path, max_bytes: Option<u64>, max_age: Option<Duration>) -> RetentionSettings {
        RetentionSettings { dir: dir.into(), max_bytes, max_age, interval: Duration::from_secs(1), protect: vec![] }
    }

    #[test]
    fn the_oldest_go_first_until_the_directory_fits() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let now = SystemTime::now();
        let log = file(d, "events.jsonl", 1000, now, 30 * DAY);
        let a = file(d, "gate/a.mp4", 4000, now, 3 * DAY);
        let a_jpg = file(d, "gate/a.jpg", 500, now, 3 * DAY - Duration::from_secs(1));
        let b = file(d, "yard/b.mp4", 4000, now, 2 * DAY);
        let c = file(d, "gate/c.mp4", 4000, now, DAY);
        // 13500 bytes; at most 9000: a and its snapshot go (8000 + 1000 + ... = 9000 left), b and c stay.
        let stats = enforce(&settings(d, Some(9000), None), now).unwrap();
        assert!(!a.exists() && !a_jpg.exists(), "the oldest go first");
        assert!(b.exists() && c.exists() && log.exists());
        assert_eq!(
            stats,
            RetentionStats { deleted_old: 0, deleted_for_space: 2, bytes_freed: 4500, bytes_now: 9000, errors: 0 }
        );
        // Already within the limit: nothing more.
        assert_eq!(enforce(&settings(d, Some(9000), None), now).unwrap().deleted_for_space, 0);
        // Tighter: b goes, then c; the event log is never deleted, even when it alone is over the limit.
        let stats = enforce(&settings(d, Some(10), None), now).unwrap();
        assert_eq!((stats.deleted_for_space, stats.bytes_now), (2, 1000));
        assert!(!b.exists() && !c.exists() && log.exists());
    }

    #[test]
    fn old_files_go_but_never_the_log_files_being_written_or_the_spool() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let now = SystemTime::now();
        let old = [
            file(d, "gate/old.mp4", 10, now, 20 * DAY),
            file(d, "gate/old-crop.mp4", 10, now, 15 * DAY),
            file(d, "gate/deep/er/old.json", 10, now, 15 * DAY),
        ];
        let kept = [
            file(d, "gate/new.mp4", 10, now, 13 * DAY),
            file(d, "events.jsonl", 10, now, 20 * DAY),
            file(d, "summary.json", 10, now, 20 * DAY),
            file(d, "gate/clip.mp4.part", 10, now, 20 * DAY),
            file(d, "gate/x.tmp", 10, now, 20 * DAY),
            file(d, "alert-spool/mqtt/00000000000000000001.alert", 10, now, 20 * DAY),
            file(d, "elsewhere/spool/1.alert", 10, now, 20 * DAY),
            file(d, ".lookout/runs/1", 10, now, 20 * DAY),
            // A source's recording: [recording] bounds it, not retention.
            file(d, "gate/rec/r1-000001.mp4", 10, now, 20 * DAY),
            file(d, "gate/rec/index.jsonl", 10, now, 20 * DAY),
            // Just written: may be in use, even under the size limit.
            file(d, "gate/fresh.mp4", 10_000, now, Duration::from_secs(5)),
        ];
        let mut s = settings(d, Some(1), Some(14 * DAY));
        s.protect.push(d.join("elsewhere"));
        let stats = enforce(&s, now).unwrap();
        for p in &old {
            assert!(!p.exists(), "{} is older than 14 days", p.display());
        }
        // new.mp4 is not old, but the size limit takes it; the rest stays.
        assert!(!kept[0].exists());
        for p in &kept[1..] {
            assert!(p.exists(), "{} must be kept", p.display());
        }
        assert_eq!((stats.deleted_old, stats.deleted_for_space), (3, 1));
        assert!(d.join("gate/deep/er").is_dir(), "directories stay");
    }

    #[test]
    fn an_events_files_go_together_dated_by_the_newest() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let now = SystemTime::now();
        let e1 = [
            file(d, "gate/gate-0-1-10.mp4", 1000, now, 5 * DAY),
            file(d, "gate/gate-0-1-10-crop.mp4", 100, now, 5 * DAY),
            file(d, "gate/gate-0-1-10-crop.jpg", 10, now, 5 * DAY),
            // Rewritten later: the event counts as this new.
            file(d, "gate/gate-0-1-10.json", 10, now, DAY),
        ];
        let e2 =
            [file(d, "gate/gate-0-2-20.mp4", 1000, now, 3 * DAY), file(d, "gate/gate-0-2-20.jpg", 10, now, 3 * DAY)];
        let other_dir = file(d, "yard/gate-0-1-10.mp4", 1000, now, 2 * DAY);
        // 3130 bytes; at most 2500: e2 (the older event) goes, all of it; e1 stays, all of it.
        let stats = enforce(&settings(d, Some(2500), None), now).unwrap();
        assert!(e2.iter().all(|p| !p.exists()) && e1.iter().all(|p| p.exists()) && other_dir.exists());
        assert_eq!((stats.deleted_for_space, stats.bytes_now), (2, 2120));
        // At most 1500: the yard clip (2 days) goes before e1, whose clip is older but whose sidecar is newer; a
        // file of the same name in another directory is another event.
        enforce(&settings(d, Some(1500), None), now).unwrap();
        assert!(!other_dir.exists() && e1.iter().all(|p| p.exists()));
        // At most 100: e1 goes, all of it.
        assert_eq!(enforce(&settings(d, Some(100), None), now).unwrap().deleted_for_space, 4);
        assert!(e1.iter().all(|p| !p.exists()));
        assert_eq!(event_key(Path::new("a/x-crop.jpg")), (PathBuf::from("a"), "x".to_string()));
    }

    #[test]
    fn settings_come_from_the_file_and_the_command_line() {
        let c = RetentionConfig { max_disk_gb: Some(2.0), max_age_days: Some(7.0), interval_s: Some(10) };
        let s = RetentionSettings::from_config(Path::new("o"), &c, Some(0.5), None).unwrap().unwrap();
        assert_eq!((s.max_bytes, s.max_age, s.interval), (Some(500_000_000), Some(7 * DAY), Duration::from_secs(10)));
        assert!(
            RetentionSettings::from_config(Path::new("o"), &RetentionConfig::default(), None, None).unwrap().is_none()
        );
        let e = RetentionSettings::from_config(Path::new("o"), &c, Some(-1.0), None).unwrap_err();
        assert!(e.to_string().contains("max_disk_gb -1"), "{e}");
        let e = enforce(&settings(Path::new("/nonexistent/out"), Some(1), None), SystemTime::now()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/out"), "{e}");
    }

    #[test]
    fn the_thread_runs_a_pass_at_once_and_stops_when_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let old = file(tmp.path(), "gate/old.mp4", 10, now, 20 * DAY);
        let mut s = settings(tmp.path(), None, Some(DAY));
        s.interval = Duration::from_secs(3600);
        let r = Retention::spawn(s).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while old.exists() {
            assert!(Instant::now() < deadline, "the first pass did not run");
            std::thread::sleep(Duration::from_millis(10));
        }
        let t = Instant::now();
        let stats = r.stop();
        assert!(t.elapsed() < Duration::from_secs(5), "stop wakes the thread: {:?}", t.elapsed());
        assert_eq!(stats.deleted_old, 1);
    }
}
