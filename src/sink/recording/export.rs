//! `lookout export`: any span of a source's recording as one MP4, cut as event clips are ([`super::cut`]).
//!
//! A time is either seconds of stream time, as `pts_s` in `events.jsonl` (`12.5`), in one lookout run (the
//! newest in the recording unless `run` is given), or a wall-clock time in UTC as lookout writes it
//! (`2026-12-06T10:52:16Z`, `2026-12-06T10:52:16.120Z`), found by the segments' `wall` and `wall_end`. Both ends
//! must be of the same kind.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::cut::{self, CutError};
use super::index::{self, SegmentEntry};
use super::{REC_DIR, parse_rfc3339_utc};

/// One end of the span to export.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeArg {
    /// Seconds of stream time in one run.
    Stream(f64),
    /// A wall-clock time.
    Wall(SystemTime),
}

impl TimeArg {
    /// Parses `12.5` (stream seconds) or `2026-12-06T10:52:16Z` (UTC).
    pub fn parse(text: &str) -> Result<TimeArg, ExportError> {
        if let Ok(s) = text.trim().parse::<f64>()
            && s.is_finite()
            && s >= 0.0
        {
            return Ok(TimeArg::Stream(s));
        }
        parse_rfc3339_utc(text).map(TimeArg::Wall).ok_or_else(|| ExportError::BadTime { text: text.to_string() })
    }
}

/// What was exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub path: PathBuf,
    pub run: u64,
    /// Stream time of its first frame and the end of its last, in its run.
    pub first_s: f64,
    pub end_s: f64,
    /// Gaps inside it (reconnects, a full disk).
    pub gaps: usize,
}

/// Errors of `export`; each is one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "{text:?} is not a time; give seconds of stream time as in events.jsonl (12.5) or a UTC time (2026-12-06T10:52:16Z)"
    )]
    BadTime { text: String },
    #[error("--from and --to must both be seconds or both be UTC times")]
    MixedTimes,
    #[error("--from {from} is not before --to {to}; give a span that moves forward")]
    Backwards { from: String, to: String },
    #[error("{} has no recording; check --out and --source (a source's recording is <out>/<source>/rec, made by `lookout watch` with clips on)", dir.display())]
    NoRecording { dir: PathBuf },
    #[error("run {run} has no recording in {}; runs recorded there: {runs}", dir.display())]
    NoRun { run: u64, dir: PathBuf, runs: String },
    #[error("nothing recorded in {} from {from} to {to}; the recording holds {holds}", dir.display())]
    NothingThere { dir: PathBuf, from: String, to: String, holds: String },
    #[error("cannot export from {}: {message}", dir.display())]
    Cut { dir: PathBuf, message: String },
}

/// What the recording in `dir` holds, for an error message.
fn holds(entries: &[SegmentEntry]) -> String {
    let mut runs: Vec<String> = Vec::new();
    for run in entries.iter().map(|e| e.run).collect::<std::collections::BTreeSet<_>>() {
        let of: Vec<&SegmentEntry> = entries.iter().filter(|e| e.run == run).collect();
        if let (Some(a), Some(b)) = (of.first(), of.last()) {
            runs.push(format!("run {run}: {:.3}..{:.3} s ({} .. {})", a.start_s, b.end_s, a.wall, b.wall_end));
        }
    }
    runs.join("; ")
}

/// Writes `[from, to]` of the recording of `<out>/<source>` to `path` (default
/// `<out>/<source>/export-r<run>-<from>-<to>.mp4`). `encoder`: for codecs that are not H.264/H.265.
pub fn export(
    out: &Path,
    source: &str,
    from: TimeArg,
    to: TimeArg,
    run: Option<u64>,
    path: Option<PathBuf>,
    encoder: &str,
) -> Result<Exported, ExportError> {
    let dir = out.join(source).join(REC_DIR);
    let entries = index::read_segments(&dir);
    let entries: Vec<SegmentEntry> = entries.into_iter().filter(|e| dir.join(&e.file).is_file()).collect();
    if entries.is_empty() {
        return Err(ExportError::NoRecording { dir: out.join(source) });
    }
    let show = |t: &TimeArg| match t {
        TimeArg::Stream(s) => format!("{s} s"),
        TimeArg::Wall(w) => crate::sink::format_rfc3339_utc(*w),
    };
    let (run, from_s, to_s) = match (from, to) {
        (TimeArg::Stream(a), TimeArg::Stream(b)) => {
            let run = run.unwrap_or_else(|| entries.iter().map(|e| e.run).max().unwrap_or(0));
            if !entries.iter().any(|e| e.run == run) {
                let runs: std::collections::BTreeSet<u64> = entries.iter().map(|e| e.run).collect();
                let runs = runs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
                return Err(ExportError::NoRun { run, dir, runs });
            }
            (run, a, b)
        }
        (TimeArg::Wall(a), TimeArg::Wall(b)) => {
            // The run of the first segment that reaches `from`, and stream times by the segments' wall clocks.
            let wall = |e: &SegmentEntry| (parse_rfc3339_utc(&e.wall), parse_rfc3339_utc(&e.wall_end));
            let seg = entries
                .iter()
                .filter(|e| run.is_none_or(|r| e.run == r))
                .find(|e| matches!(wall(e), (_, Some(end)) if end >= a) && matches!(wall(e), (Some(s), _) if s <= b))
                .ok_or_else(|| ExportError::NothingThere {
                    dir: dir.clone(),
                    from: show(&from),
                    to: show(&to),
                    holds: holds(&entries),
                })?;
            let at = |t: SystemTime, e: &SegmentEntry| -> f64 {
                let start = parse_rfc3339_utc(&e.wall).unwrap_or(t);
                match t.duration_since(start) {
                    Ok(d) => e.start_s + d.as_secs_f64(),
                    Err(e2) => e.start_s - e2.duration().as_secs_f64(),
                }
            };
            let last = entries
                .iter()
                .filter(|e| e.run == seg.run)
                .rfind(|e| matches!(wall(e), (Some(s), _) if s <= b))
                .unwrap_or(seg);
            (seg.run, at(a, seg), at(b, last))
        }
        _ => return Err(ExportError::MixedTimes),
    };
    if from_s >= to_s {
        return Err(ExportError::Backwards { from: show(&from), to: show(&to) });
    }
    let of_run: Vec<SegmentEntry> = entries.iter().filter(|e| e.run == run).cloned().collect();
    let nothing =
        || ExportError::NothingThere { dir: dir.clone(), from: show(&from), to: show(&to), holds: holds(&entries) };
    if !of_run.iter().any(|e| e.end_s > from_s && e.start_s < to_s) {
        return Err(nothing());
    }
    let mut span = cut::span_of_segments(&dir, &of_run, from_s, to_s).map_err(|e| match e {
        CutError::Nothing(_) => nothing(),
        e => ExportError::Cut { dir: dir.clone(), message: e.to_string() },
    })?;
    let path = path.unwrap_or_else(|| out.join(source).join(format!("export-r{run}-{from_s:.3}-{to_s:.3}.mp4")));
    let written = cut::write_span(&mut span, &path, encoder, Instant::now() + std::time::Duration::from_secs(600))
        .map_err(|e| match e {
            CutError::Nothing(_) => nothing(),
            e => ExportError::Cut { dir: dir.clone(), message: e.to_string() },
        })?;
    Ok(Exported { path, run, first_s: written.first_s, end_s: written.end_s, gaps: span.gaps.len() })
}
