//! One run of `watch` in an output directory: its number, and the clean-up it owes the runs before it.
//!
//! Every run that writes into `<out>` takes the next free number `N` by creating `<out>/.lookout/runs/N`
//! exclusively (`create_new`): two processes starting at once never get the same number, and a restarted
//! service gets a new one. Event ids start with `<source>-r<N>`, so they, and the clips, snapshots and sidecars
//! named after them, never repeat between runs into the same directory; and [`crate::gst::part`] refuses to
//! replace a file in any case. The marker holds the run's start time and process id, for a person looking.
//!
//! At the start of every run, whatever its outputs, [`remove_stale_parts`] removes the temporary `.part` files
//! that a run which crashed or was killed left in `<out>` and its source directories.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tracing::{info, warn};

use super::SinkError;
use super::events::format_rfc3339_utc;

/// Where the run markers live, under the output directory.
pub const RUNS_DIR: &str = ".lookout/runs";
/// How many numbers a start tries before it gives up (another process taking each one first).
const MAX_ATTEMPTS: u64 = 1000;

/// This run's number in its output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// 1 for the first run into a directory, then 2, 3, …
    pub number: u64,
    /// The marker file that holds the number.
    pub marker: PathBuf,
}

impl Run {
    /// Takes the next free run number of `out_dir` (created if needed).
    pub fn start(out_dir: &Path, started: SystemTime) -> Result<Run, SinkError> {
        let dir = out_dir.join(RUNS_DIR);
        std::fs::create_dir_all(&dir).map_err(|error| SinkError::CreateDir { path: dir.clone(), error })?;
        let highest = std::fs::read_dir(&dir)
            .map_err(|error| SinkError::Open { path: dir.clone(), error })?
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()))
            .max()
            .unwrap_or(0);
        for number in highest + 1..=highest + MAX_ATTEMPTS {
            let marker = dir.join(number.to_string());
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&marker) {
                Ok(mut f) => {
                    let line =
                        format!("{{\"started\":\"{}\",\"pid\":{}}}\n", format_rfc3339_utc(started), std::process::id());
                    // The number is taken by the file's existence; its content is only for a person.
                    if let Err(error) = f.write_all(line.as_bytes()) {
                        warn!(file = %marker.display(), %error, "could not write the run marker's details");
                    }
                    return Ok(Run { number, marker });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(SinkError::Open { path: marker, error }),
            }
        }
        Err(SinkError::Open {
            path: dir,
            error: std::io::Error::other(format!("no free run number after {MAX_ATTEMPTS} tries")),
        })
    }

    /// The prefix of a source's event ids in this run: `<short_name>-r<N>`.
    pub fn event_id_prefix(&self, short_name: &str) -> String {
        format!("{short_name}-r{}", self.number)
    }
}

/// Removes the `.part` files (temporary names of clips, evidence and annotated videos) left in `out_dir` and its
/// direct subdirectories (one per source) by a run that crashed or was killed. Returns how many went.
pub fn remove_stale_parts(out_dir: &Path) -> usize {
    let mut removed = 0;
    let mut dirs = vec![out_dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(out_dir) {
        dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if !path.is_file() || !path.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".part")) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    removed += 1;
                    info!(file = %path.display(), "removed a partial file left by an earlier run");
                }
                Err(error) => {
                    warn!(file = %path.display(), %error, "could not remove a partial file of an earlier run")
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_takes_a_new_number() {
        let out = tempfile::tempdir().unwrap();
        let a = Run::start(out.path(), SystemTime::UNIX_EPOCH).unwrap();
        let b = Run::start(out.path(), SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!((a.number, b.number), (1, 2));
        assert_eq!(b.event_id_prefix("gate"), "gate-r2");
        // A gap (a marker removed by hand) is never filled: numbers only grow.
        std::fs::remove_file(&a.marker).unwrap();
        assert_eq!(Run::start(out.path(), SystemTime::UNIX_EPOCH).unwrap().number, 3);
    }

    #[test]
    fn runs_started_at_once_never_share_a_number() {
        let out = tempfile::tempdir().unwrap();
        let path = out.path().to_path_buf();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || Run::start(&p, SystemTime::UNIX_EPOCH).unwrap().number)
            })
            .collect();
        let mut numbers: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        numbers.sort();
        assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
    }

    #[test]
    fn stale_parts_are_removed_in_the_output_and_source_directories_and_whole_files_kept() {
        let out = tempfile::tempdir().unwrap();
        let cam = out.path().join("cam");
        std::fs::create_dir_all(&cam).unwrap();
        for f in [cam.join(".a.mp4.part"), cam.join("annotated.mp4.part"), out.path().join(".x.part")] {
            std::fs::write(f, b"x").unwrap();
        }
        std::fs::write(cam.join("a.mp4"), b"x").unwrap();
        assert_eq!(remove_stale_parts(out.path()), 3);
        assert!(cam.join("a.mp4").exists());
        assert_eq!(std::fs::read_dir(&cam).unwrap().count(), 1);
    }
}
