//! The recording's index, `<out>/<source>/rec/index.jsonl`: one whole JSON line for each segment written and each
//! segment removed, appended as they happen (like `events.jsonl`), compacted when a recording starts.
//!
//! ```json
//! {"type":"segment","file":"r3-000012.mp4","run":3,"prun":0,"start_s":48.0,"end_s":52.04,"start_ns":48000000000,
//!  "end_ns":52040000000,"frame":1200,"wall":"2026-12-06T10:52:16.120Z","wall_end":"2026-12-06T10:52:20.160Z",
//!  "packets":101,"bytes":512311,"codec":"video/x-h264"}
//! {"type":"removed","file":"r3-000001.mp4"}
//! ```
//!
//! - `start_s`, `end_s`: stream time (as `pts_s` in `events.jsonl`) of the segment's first frame (a keyframe) and
//!   the end of its last frame, in the lookout run `run`. `start_ns`, `end_ns`: the same in the source pipeline's
//!   timeline of pipeline run `prun` (0, then one more at each reconnect).
//! - `frame`: the index of its first frame, as in `events.jsonl` (estimated from the decoded frames' times).
//! - `wall`, `wall_end`: the wall-clock time (UTC) its first and last packets were received.
//! - A line is written whole or not at all; a line cut short by a crash is skipped when read.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The index's file name in `rec/`.
pub const INDEX_FILE_NAME: &str = "index.jsonl";

/// One segment of the recording, as its index line says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// File name in `rec/`.
    pub file: String,
    /// The lookout run (`sink::run`) it was recorded in.
    pub run: u64,
    /// The source's pipeline run within that lookout run: 0, and one more at each reconnect.
    pub prun: u64,
    /// Stream time of its first frame, in seconds.
    pub start_s: f64,
    /// Stream time of the end of its last frame, in seconds.
    pub end_s: f64,
    /// Pipeline time of its first frame (ns).
    pub start_ns: u64,
    /// Pipeline time of the end of its last frame (ns).
    pub end_ns: u64,
    /// Index of its first frame, as in `events.jsonl`.
    pub frame: u64,
    /// When its first packet was received (RFC 3339, UTC).
    pub wall: String,
    /// When its last packet was received (RFC 3339, UTC).
    pub wall_end: String,
    /// Packets in it.
    pub packets: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// The codec (the caps' name, such as `video/x-h264`).
    pub codec: String,
}

/// A line of the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum IndexLine {
    /// A segment was written and renamed into place.
    Segment(SegmentEntry),
    /// A segment was removed (the ring's bounds, or it was found broken).
    Removed {
        /// Its file name.
        file: String,
    },
}

/// The index file, open for appending.
#[derive(Debug)]
pub struct Index {
    path: PathBuf,
    file: File,
}

impl Index {
    /// Opens (creating) `dir/index.jsonl` for appending.
    pub fn open(dir: &Path) -> io::Result<Index> {
        let path = dir.join(INDEX_FILE_NAME);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Index { path, file })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one whole line (one `write` of the line and its newline; an error leaves at most a cut line,
    /// which readers skip).
    pub fn append(&mut self, line: &IndexLine) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(line).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.file.write_all(&bytes)
    }
}

/// The segments of the index in `dir` that are still listed (written and not removed), oldest first. A missing
/// index is empty; lines that do not parse (cut by a crash) are skipped.
pub fn read_segments(dir: &Path) -> Vec<SegmentEntry> {
    let Ok(file) = File::open(dir.join(INDEX_FILE_NAME)) else { return Vec::new() };
    let mut segments: Vec<SegmentEntry> = Vec::new();
    for line in BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<IndexLine>(&line) {
            Ok(IndexLine::Segment(s)) => segments.push(s),
            Ok(IndexLine::Removed { file }) => segments.retain(|s| s.file != file),
            Err(_) => {}
        }
    }
    segments
}

/// Rewrites the index in `dir` with one line for each of `segments` (a temporary file, synced and renamed over
/// it: the index is not evidence, and a crash leaves either the old or the new one).
pub fn rewrite(dir: &Path, segments: &[SegmentEntry]) -> io::Result<()> {
    let tmp = dir.join(format!(".{INDEX_FILE_NAME}.part"));
    {
        let mut f = File::create(&tmp)?;
        for s in segments {
            let mut bytes = serde_json::to_vec(&IndexLine::Segment(s.clone())).map_err(io::Error::other)?;
            bytes.push(b'\n');
            f.write_all(&bytes)?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(INDEX_FILE_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn entry(file: &str, start_s: f64) -> SegmentEntry {
        SegmentEntry {
            file: file.into(),
            run: 1,
            prun: 0,
            start_s,
            end_s: start_s + 4.0,
            start_ns: (start_s * 1e9) as u64,
            end_ns: ((start_s + 4.0) * 1e9) as u64,
            frame: (start_s * 25.0) as u64,
            wall: "2026-12-06T10:00:00Z".into(),
            wall_end: "2026-12-06T10:00:04Z".into(),
            packets: 100,
            bytes: 1000,
            codec: "video/x-h264".into(),
        }
    }

    #[test]
    fn removed_segments_and_cut_lines_are_left_out_and_rewrite_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(dir.path()).unwrap();
        for (i, f) in ["a.mp4", "b.mp4", "c.mp4"].iter().enumerate() {
            index.append(&IndexLine::Segment(entry(f, i as f64 * 4.0))).unwrap();
        }
        index.append(&IndexLine::Removed { file: "a.mp4".into() }).unwrap();
        // A crash in the middle of a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(index.path())
            .unwrap()
            .write_all(b"{\"type\":\"segment\",\"fi")
            .unwrap();
        let listed = read_segments(dir.path());
        assert_eq!(listed.iter().map(|s| s.file.as_str()).collect::<Vec<_>>(), ["b.mp4", "c.mp4"]);
        let line = serde_json::to_string(&IndexLine::Removed { file: "a.mp4".into() }).unwrap();
        assert_eq!(line, r#"{"type":"removed","file":"a.mp4"}"#);
        rewrite(dir.path(), &listed).unwrap();
        assert_eq!(std::fs::read_to_string(index.path()).unwrap().lines().count(), 2);
        assert_eq!(read_segments(dir.path()), listed);
    }
}
