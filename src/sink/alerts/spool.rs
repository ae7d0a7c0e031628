//! The spool: alerts waiting on disk for a destination that is down, one directory per destination.
//!
//! Each alert is one file, `<seq>.alert` with `seq` zero-padded to 20 digits, so the names sort in the order the
//! alerts were made. A file is written under `<seq>.tmp`, synced, and renamed: a crash (or a power cut, with
//! [`SpoolSettings::sync`]) leaves either the whole entry or a `.tmp` file, which the next start deletes. An entry
//! is removed only once its destination has confirmed it (MQTT PUBACK, HTTP 2xx).
//!
//! A file holds one header line of JSON (`{"source":"gate","kind":"event"}`), then the payload as it was given:
//! the event's JSON, or a snapshot's JPEG bytes.
//!
//! The spool is bounded by [`SpoolSettings::max_entries`] and [`SpoolSettings::max_bytes`]. When it is full, new
//! alerts for that destination are refused (they remain in `events.jsonl`), with one warning per episode.
//!
//! Entries the destination refused for good (an HTTP 4xx, a payload larger than the broker takes) and entries
//! that cannot be read back are moved to `rejected/`, kept for a person to look at, never retried.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::AlertKind;

/// Default [`SpoolSettings::max_entries`].
pub const DEFAULT_SPOOL_MAX_ENTRIES: u64 = 10_000;
/// Default [`SpoolSettings::max_bytes`]: 256 MiB.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 << 20;
/// Default [`SpoolSettings::sync`].
pub const DEFAULT_SPOOL_SYNC: bool = true;
/// Name of the spool directory inside the output directory, when none is set.
pub const DEFAULT_SPOOL_DIR_NAME: &str = "alert-spool";
/// Subdirectory of a destination's spool holding the entries it refused for good.
pub const REJECTED_DIR_NAME: &str = "rejected";

const ENTRY_EXT: &str = "alert";
const TMP_EXT: &str = "tmp";

/// What the user sets for the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSettings {
    /// The directory holding one subdirectory per destination (`mqtt`, `webhook-<host>-<hash>`). It persists
    /// across runs: what is left in it is delivered on the next start. Default `<output dir>/alert-spool`.
    pub dir: PathBuf,
    /// Most entries kept for one destination. Default [`DEFAULT_SPOOL_MAX_ENTRIES`].
    pub max_entries: u64,
    /// Most bytes kept for one destination. Default [`DEFAULT_SPOOL_MAX_BYTES`].
    pub max_bytes: u64,
    /// fsync each entry and its directory before counting it as stored, so that it survives a power cut.
    /// Default [`DEFAULT_SPOOL_SYNC`].
    pub sync: bool,
}

impl SpoolSettings {
    /// The defaults, with the spool at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolSettings {
            dir: dir.into(),
            max_entries: DEFAULT_SPOOL_MAX_ENTRIES,
            max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            sync: DEFAULT_SPOOL_SYNC,
        }
    }
}

/// Errors of the spool. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool holds as many entries or bytes as it may.
    #[error(
        "alert spool {} is full ({entries} alerts, {bytes} bytes; limits {max_entries} alerts, {max_bytes} bytes)",
        dir.display()
    )]
    Full { dir: PathBuf, entries: u64, bytes: u64, max_entries: u64, max_bytes: u64 },
    /// A file or directory of the spool could not be read or written.
    #[error("alert spool {}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    /// An entry's file is not what the spool writes.
    #[error("alert spool entry {} is damaged: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
}

/// The header line of an entry.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    source: String,
    kind: AlertKind,
}

/// An entry read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledAlert {
    pub seq: u64,
    pub source: String,
    pub kind: AlertKind,
    pub payload: Vec<u8>,
}

/// The spool of one destination.
///
/// Shared (behind a mutex) by the destination's worker and by callers whose alerts do not fit in the worker's
/// queue. The index in memory is the list of entry files; only this struct adds or removes them.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_entries: u64,
    max_bytes: u64,
    sync: bool,
    /// Sequence number → size of the entry's file in bytes.
    index: BTreeMap<u64, u64>,
    bytes: u64,
    /// Whether the "spool is full" warning was given in this episode (reset once there is room again).
    full_warned: bool,
}

impl Spool {
    /// Opens (creating it if needed) the spool directory `dir`, deletes the temporary files a crash left, and
    /// indexes the entries a previous run left.
    pub fn open(dir: &Path, settings: &SpoolSettings) -> Result<Spool, SpoolError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |error| SpoolError::Io { path, error }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut index = BTreeMap::new();
        let mut bytes = 0;
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            let Some((stem, ext)) = name.split_once('.') else { continue };
            let Ok(seq) = stem.parse::<u64>() else { continue };
            match ext {
                // An entry whose rename never happened: the alert was not stored, the caller was told so.
                TMP_EXT => fs::remove_file(&path).map_err(io_err(&path))?,
                ENTRY_EXT => {
                    let len = entry.metadata().map_err(io_err(&path))?.len();
                    index.insert(seq, len);
                    bytes += len;
                }
                _ => {}
            }
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_entries: settings.max_entries,
            max_bytes: settings.max_bytes,
            sync: settings.sync,
            index,
            bytes,
            full_warned: false,
        })
    }

    /// The directory of this spool.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.index.len() as u64
    }

    /// Whether the spool holds no entry.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Total size of the entries' files.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The highest sequence number stored, if any.
    pub fn last_seq(&self) -> Option<u64> {
        self.index.keys().next_back().copied()
    }

    /// The lowest sequence number stored that is above `after` (or the lowest of all).
    pub fn first_after(&self, after: Option<u64>) -> Option<u64> {
        match after {
            None => self.index.keys().next().copied(),
            Some(a) => self.index.range(a + 1..).next().map(|(k, _)| *k),
        }
    }

    /// Whether an entry `seq` is stored.
    pub fn contains(&self, seq: u64) -> bool {
        self.index.contains_key(&seq)
    }

    fn entry_path(&self, seq: u64, ext: &str) -> PathBuf {
        self.dir.join(format!("{seq:020}.{ext}"))
    }

    /// Stores an alert. Storing the same `seq` again replaces it.
    ///
    /// Returns [`SpoolError::Full`] when it would exceed a limit; the caller reports it (see
    /// [`Spool::note_full`]).
    pub fn append(&mut self, seq: u64, source: &str, kind: AlertKind, payload: &[u8]) -> Result<(), SpoolError> {
        let mut header = serde_json::to_vec(&Header { source: source.to_string(), kind })
            .expect("a header of two strings serialises");
        header.push(b'\n');
        let len = (header.len() + payload.len()) as u64;
        let replaced = self.index.get(&seq).copied().unwrap_or(0);
        let entries = self.len() + u64::from(!self.contains(seq));
        if entries > self.max_entries || self.bytes - replaced + len > self.max_bytes {
            return Err(SpoolError::Full {
                dir: self.dir.clone(),
                entries: self.len(),
                bytes: self.bytes,
                max_entries: self.max_entries,
                max_bytes: self.max_bytes,
            });
        }
        let tmp = self.entry_path(seq, TMP_EXT);
        let path = self.entry_path(seq, ENTRY_EXT);
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(&header)?;
            file.write_all(payload)?;
            if self.sync {
                file.sync_all()?;
            }
            Ok(())
        })();
        if let Err(error) = written {
            // Best effort: a partial temporary file is also removed at the next start.
            let _ = fs::remove_file(&tmp);
            return Err(SpoolError::Io { path: tmp, error });
        }
        fs::rename(&tmp, &path).map_err(|error| SpoolError::Io { path: path.clone(), error })?;
        if self.sync {
            sync_dir(&self.dir).map_err(|error| SpoolError::Io { path: self.dir.clone(), error })?;
        }
        self.index.insert(seq, len);
        self.bytes = self.bytes - replaced + len;
        Ok(())
    }

    /// Reads entry `seq` back.
    pub fn read(&self, seq: u64) -> Result<SpooledAlert, SpoolError> {
        let path = self.entry_path(seq, ENTRY_EXT);
        let bytes = fs::read(&path).map_err(|error| SpoolError::Io { path: path.clone(), error })?;
        let corrupt = |message: String| SpoolError::Corrupt { path: path.clone(), message };
        let nl = bytes.iter().position(|b| *b == b'\n').ok_or_else(|| corrupt("no header line".into()))?;
        let header: Header =
            serde_json::from_slice(&bytes[..nl]).map_err(|e| corrupt(format!("bad header line: {e}")))?;
        Ok(SpooledAlert { seq, source: header.source, kind: header.kind, payload: bytes[nl + 1..].to_vec() })
    }

    /// Removes entry `seq` once its destination has confirmed it. Removing an entry that is not there is not an
    /// error (a duplicate confirmation).
    pub fn remove(&mut self, seq: u64) -> Result<(), SpoolError> {
        let Some(len) = self.index.remove(&seq) else { return Ok(()) };
        self.bytes -= len;
        self.note_room();
        let path = self.entry_path(seq, ENTRY_EXT);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(SpoolError::Io { path, error }),
        }
    }

    /// Moves entry `seq` to `rejected/`, out of the queue, and returns where it went.
    pub fn reject(&mut self, seq: u64) -> Result<PathBuf, SpoolError> {
        let from = self.entry_path(seq, ENTRY_EXT);
        let to = self.rejected_path(seq)?;
        if let Some(len) = self.index.remove(&seq) {
            self.bytes -= len;
            self.note_room();
        }
        fs::rename(&from, &to).map_err(|error| SpoolError::Io { path: to.clone(), error })?;
        Ok(to)
    }

    /// Writes an alert that never went through the spool straight to `rejected/`, and returns where it went.
    pub fn write_rejected(
        &mut self,
        seq: u64,
        source: &str,
        kind: AlertKind,
        payload: &[u8],
    ) -> Result<PathBuf, SpoolError> {
        let to = self.rejected_path(seq)?;
        let mut bytes = serde_json::to_vec(&Header { source: source.to_string(), kind }).expect("header serialises");
        bytes.push(b'\n');
        bytes.extend_from_slice(payload);
        fs::write(&to, bytes).map_err(|error| SpoolError::Io { path: to.clone(), error })?;
        Ok(to)
    }

    fn rejected_path(&self, seq: u64) -> Result<PathBuf, SpoolError> {
        let dir = self.dir.join(REJECTED_DIR_NAME);
        fs::create_dir_all(&dir).map_err(|error| SpoolError::Io { path: dir.clone(), error })?;
        // Sequence numbers start again once a spool has emptied, so the time keeps names unique.
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        Ok(dir.join(format!("{ms}-{seq:020}.{ENTRY_EXT}")))
    }

    /// Records that the spool refused an entry for being full; true the first time in an episode, when the
    /// caller should warn.
    pub fn note_full(&mut self) -> bool {
        !std::mem::replace(&mut self.full_warned, true)
    }

    fn note_room(&mut self) {
        // Warn again only once there is clearly room (a tenth of the limits), not on every entry that leaves.
        if self.len() * 10 <= self.max_entries * 9 && self.bytes * 10 <= self.max_bytes * 9 {
            self.full_warned = false;
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    OpenOptions::new().read(true).open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> SpoolSettings {
        SpoolSettings { max_entries: 3, max_bytes: 1000, ..SpoolSettings::new(dir) }
    }

    #[test]
    fn entries_come_back_in_order_after_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let s = settings(tmp.path());
        let mut spool = Spool::open(tmp.path(), &s).unwrap();
        spool.append(10, "gate", AlertKind::Event, b"{\"n\":10}").unwrap();
        spool.append(2, "gate", AlertKind::Event, b"{\"n\":2}").unwrap();
        spool.append(7, "yard", AlertKind::Snapshot, &[0xff, 0xd8, b'\n', 0]).unwrap();
        assert_eq!(spool.first_after(None), Some(2));
        assert_eq!(spool.first_after(Some(2)), Some(7));
        assert_eq!(spool.first_after(Some(10)), None);
        drop(spool);

        // A crash half way through an entry leaves a temporary file: it is not an entry.
        fs::write(tmp.path().join(format!("{:020}.tmp", 11)), b"{\"source\":").unwrap();
        let spool = Spool::open(tmp.path(), &s).unwrap();
        assert_eq!(spool.len(), 3);
        assert_eq!(spool.last_seq(), Some(10));
        assert!(!tmp.path().join(format!("{:020}.tmp", 11)).exists());
        let snap = spool.read(7).unwrap();
        assert_eq!(
            snap,
            SpooledAlert {
                seq: 7,
                source: "yard".into(),
                kind: AlertKind::Snapshot,
                payload: vec![0xff, 0xd8, b'\n', 0]
            }
        );
        assert_eq!(spool.read(2).unwrap().payload, b"{\"n\":2}");
    }

    #[test]
    fn limits_refuse_new_entries_and_warn_once() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(tmp.path(), &settings(tmp.path())).unwrap();
        for seq in 1..=3 {
            spool.append(seq, "gate", AlertKind::Event, b"{}").unwrap();
        }
        assert!(matches!(spool.append(4, "gate", AlertKind::Event, b"{}"), Err(SpoolError::Full { .. })));
        assert!(spool.note_full());
        assert!(!spool.note_full(), "one warning per episode");
        spool.remove(1).unwrap();
        spool.remove(2).unwrap();
        assert!(spool.note_full(), "warns again after it drained");
        spool.append(4, "gate", AlertKind::Event, b"{}").unwrap();
        let big = vec![b'x'; 1000];
        let err = spool.append(5, "gate", AlertKind::Event, &big).unwrap_err();
        assert!(err.to_string().contains("is full"), "{err}");
        assert_eq!(spool.len(), 2);
        assert_eq!(
            spool.bytes(),
            fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum::<u64>()
        );
    }

    #[test]
    fn rejected_and_damaged_entries_leave_the_queue() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(tmp.path(), &settings(tmp.path())).unwrap();
        spool.append(1, "gate", AlertKind::Event, b"{}").unwrap();
        let to = spool.reject(1).unwrap();
        assert!(to.starts_with(tmp.path().join(REJECTED_DIR_NAME)) && to.is_file());
        assert!(spool.is_empty() && spool.bytes() == 0);

        fs::write(tmp.path().join(format!("{:020}.alert", 5)), b"no header").unwrap();
        let spool = Spool::open(tmp.path(), &settings(tmp.path())).unwrap();
        let err = spool.read(5).unwrap_err();
        assert!(matches!(err, SpoolError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&format!("{:020}.alert", 5)), "names the file: {err}");
    }
}
