//! A `watch` run's events against annotated intervals (`lookout eval events`).
//!
//! **Events** come from the run's `events.jsonl` (see the event log's documentation in the README): each event
//! has a `start` line, `update` lines and an `end` line with one `event_id`. Its interval is from its first match
//! (`start.pts_s`) to its last (`end.pts_s` on the `end` line). An event with no `end` line (the run was killed)
//! runs to the latest `pts_s` of its lines and is counted as `open`. Other lines (`clips`, `verification`) and
//! fields are ignored, so logs of older and newer versions read alike.
//!
//! **Truth** is a JSON file: either a list of intervals `[{"source", "query", "start_s", "end_s"}, ...]`, or
//! `{"footage": [{"source", "duration_s"}, ...], "intervals": [...]}`, which also gives how long each source's
//! footage is, for false alerts per hour. A truth `source` names an event's `source` exactly, or its file name
//! (`bikes.mp4` for `/data/cams/bikes.mp4`).
//!
//! Which events count: those of an annotated source (one named in `intervals` or `footage`) with an annotated
//! query (one that some interval names, or that matches an event's `label`). Annotating one interval of a query
//! thus says that every other event of that query on the annotated sources is a false alert. Events of other
//! sources or queries are listed as not annotated, and counted nowhere.
//!
//! **Figures**, per (source, query) and over all:
//! - events and intervals are matched one to one at temporal IoU ≥ [`MIN_TEMPORAL_IOU`]
//!   ([`super::metrics::match_intervals`]): precision = matched events / events, recall = matched intervals /
//!   intervals;
//! - time to the first alert, for each interval that any event overlaps: the first such event's start minus the
//!   interval's start (an alert raised before the annotated start is negative);
//! - false alerts per hour: unmatched events over the hours of footage, when `footage` gives the duration of
//!   every annotated source.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::metrics::match_intervals;
use super::{EvalError, Result};

/// Temporal IoU at or above which an event matches an annotated interval.
pub const MIN_TEMPORAL_IOU: f64 = 0.3;

/// One event of the log, as an interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventSpan {
    pub event_id: String,
    pub source: String,
    pub query: String,
    pub label: String,
    pub start_s: f64,
    pub end_s: f64,
    /// No `end` line: the run stopped before the event ended.
    pub open: bool,
}

/// The fields of an `events.jsonl` line that the evaluation reads.
#[derive(Debug, Deserialize)]
struct LogLine {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    track_id: Option<u64>,
    #[serde(default)]
    pts_s: Option<f64>,
    #[serde(default)]
    start: Option<LogStamp>,
    #[serde(default)]
    end: Option<LogStamp>,
}

#[derive(Debug, Deserialize)]
struct LogStamp {
    pts_s: f64,
}

/// Reads the events of `path` (an `events.jsonl`), at most its first `limit` lines. `progress` is told the bytes
/// read so far, after each line. A line that is not JSON is an error naming it; a last line cut short (a crash
/// while writing) is skipped.
pub fn read_events(path: &Path, limit: Option<usize>, progress: &mut dyn FnMut(u64)) -> Result<Vec<EventSpan>> {
    Ok(resume_events(path, ReadState::default(), limit, progress, &mut |_| {})?.spans)
}

/// How far a reading of an `events.jsonl` has gone: the whole lines read, and the events they gave. This is what
/// [`Checkpoint`] keeps, so that an interrupted `eval events` (or one run again on a log that has grown since)
/// goes on from here instead of from the first line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadState {
    /// Bytes of whole lines read (the file's offset to read on from).
    pub offset: u64,
    /// Lines read (the next line's number is `lines + 1`).
    pub lines: usize,
    /// The events so far, in the order of their first line.
    pub spans: Vec<EventSpan>,
}

/// The result of [`resume_events`].
pub struct EventsRead {
    /// Where the reading stopped: past the last whole line (a last line without its newline is not in it, as the
    /// writer may still be writing it).
    pub state: ReadState,
    /// The events to score: `state.spans`, and a last line without its newline if it is whole JSON.
    pub spans: Vec<EventSpan>,
}

/// Reads the events of `path` from `from` on (its offset, its line count and its events; `ReadState::default()`
/// reads from the start), until the end of the file or line `limit` (counted from the file's first line).
/// `progress` is told the bytes read so far, and `checkpoint` the state after each whole line: it decides itself
/// how often to keep it. A line that is not JSON is an error naming it.
pub fn resume_events(
    path: &Path,
    from: ReadState,
    limit: Option<usize>,
    progress: &mut dyn FnMut(u64),
    checkpoint: &mut dyn FnMut(&ReadState),
) -> Result<EventsRead> {
    let read_err = |err| EvalError::Read { path: path.into(), err };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    file.seek(SeekFrom::Start(from.offset)).map_err(read_err)?;
    let mut reader = std::io::BufReader::new(file);
    let mut state = from;
    let mut by_id: BTreeMap<String, usize> =
        state.spans.iter().enumerate().map(|(i, s)| (s.event_id.clone(), i)).collect();
    let mut buf = Vec::new();
    // A last line without its newline, applied to a copy of the events only.
    let mut tail: Option<Vec<EventSpan>> = None;
    loop {
        let n = state.lines + 1;
        if limit.is_some_and(|l| n > l) {
            break;
        }
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf).map_err(read_err)?;
        if read == 0 {
            break;
        }
        progress(state.offset + read as u64);
        if !buf.ends_with(b"\n") {
            // Cut short by a crash, or still being written: counted if it is whole JSON, never kept as read.
            let mut spans = state.spans.clone();
            let mut ids = by_id.clone();
            if apply_line(path, n, &buf, &mut spans, &mut ids).is_ok() {
                tail = Some(spans);
            }
            break;
        }
        apply_line(path, n, &buf, &mut state.spans, &mut by_id)?;
        state.offset += read as u64;
        state.lines = n;
        checkpoint(&state);
    }
    let spans = tail.unwrap_or_else(|| state.spans.clone());
    Ok(EventsRead { state, spans })
}

/// Applies line `n` of the log (`bytes`, with or without its newline) to the events.
fn apply_line(
    path: &Path,
    n: usize,
    bytes: &[u8],
    spans: &mut Vec<EventSpan>,
    by_id: &mut BTreeMap<String, usize>,
) -> Result<()> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return Ok(());
    }
    let bad = |message: String| EvalError::Annotation { file: path.into(), entry: format!("line {n}"), message };
    let line: LogLine = serde_json::from_str(text).map_err(|e| bad(format!("not an event line ({e})")))?;
    if !matches!(line.kind.as_str(), "start" | "update" | "end") {
        return Ok(());
    }
    let (Some(source), Some(query)) = (line.source, line.query) else {
        return Err(bad("an event line without source or query".into()));
    };
    // The line's time: the last match on `end`, else the frame's, else the event's start.
    let at = line.end.as_ref().map(|s| s.pts_s).or(line.pts_s).or(line.start.as_ref().map(|s| s.pts_s));
    let Some(at) = at else {
        return Err(bad("an event line without a time (pts_s)".into()));
    };
    let start = line.start.as_ref().map_or(at, |s| s.pts_s);
    // Logs always carry event_id; without one, the track and start time name the event.
    let id = line.event_id.unwrap_or_else(|| format!("{source}|{query}|{:?}|{start}", line.track_id));
    let i = *by_id.entry(id.clone()).or_insert_with(|| {
        spans.push(EventSpan {
            event_id: id,
            source: source.clone(),
            query: query.clone(),
            label: line.label.clone().unwrap_or_default(),
            start_s: start,
            end_s: start,
            open: true,
        });
        spans.len() - 1
    });
    let span = &mut spans[i];
    span.start_s = span.start_s.min(start);
    span.end_s = span.end_s.max(at);
    if line.kind == "end" {
        span.open = false;
        if let Some(end) = &line.end {
            span.end_s = end.pts_s;
        }
    }
    Ok(())
}

/// How many bytes at the start and at the end of what was read a [`Checkpoint`] fingerprints.
const FINGERPRINT_BYTES: u64 = 64 * 1024;

/// A reading of an `events.jsonl` kept on disk (`eval-events.progress.json` beside the report), so that the next
/// `eval events` with the same report goes on where it stopped.
///
/// `events.jsonl` only grows, so a checkpoint is good for a file whose bytes up to its offset are the same: it is
/// checked by the SHA-256 of the first and of the last 64 KiB read. A log that was replaced or cut is read from the
/// start again.
#[derive(Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The events file, as given (for a person reading the checkpoint; the fingerprints decide).
    pub events_file: String,
    pub head_sha256: String,
    pub tail_sha256: String,
    pub state: ReadState,
}

fn sha256_of_range(file: &mut std::fs::File, from: u64, len: u64) -> std::io::Result<String> {
    use sha2::Digest;
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut bytes)?;
    if (bytes.len() as u64) < len {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file is shorter than the checkpoint"));
    }
    Ok(format!("{:x}", sha2::Sha256::digest(&bytes)))
}

/// The fingerprints of the first `offset` bytes of `events`: (head, tail).
fn fingerprints(events: &Path, offset: u64) -> std::io::Result<(String, String)> {
    let mut file = std::fs::File::open(events)?;
    let head = sha256_of_range(&mut file, 0, offset.min(FINGERPRINT_BYTES))?;
    let tail_len = offset.min(FINGERPRINT_BYTES);
    let tail = sha256_of_range(&mut file, offset - tail_len, tail_len)?;
    Ok((head, tail))
}

impl Checkpoint {
    /// The checkpoint of `state`, a reading of `events`.
    pub fn of(events: &Path, state: &ReadState) -> Result<Checkpoint> {
        let (head_sha256, tail_sha256) =
            fingerprints(events, state.offset).map_err(|err| EvalError::Read { path: events.into(), err })?;
        Ok(Checkpoint { events_file: events.display().to_string(), head_sha256, tail_sha256, state: state.clone() })
    }

    /// Writes the checkpoint to `path` whole: to a temporary file, then renamed over the last one.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        let text =
            serde_json::to_vec(self).map_err(|e| EvalError::BadFile { path: path.into(), message: e.to_string() })?;
        std::fs::write(&tmp, text).map_err(|err| EvalError::Write { path: tmp.clone(), err })?;
        std::fs::rename(&tmp, path).map_err(|err| EvalError::Write { path: path.into(), err })
    }

    /// The reading kept at `path`, if there is one and it is a reading of `events` as it is now. `Err` says,
    /// in words, why a checkpoint that is there cannot be used (the caller logs it and reads from the start).
    pub fn load(path: &Path, events: &Path) -> std::result::Result<Option<ReadState>, String> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read it ({e})")),
        };
        let kept: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| format!("not a checkpoint ({e})"))?;
        let now = fingerprints(events, kept.state.offset)
            .map_err(|e| format!("{} is not the log it was made from ({e})", events.display()))?;
        if now != (kept.head_sha256, kept.tail_sha256) {
            return Err(format!(
                "{} is not the log it was made from (its first {} bytes differ)",
                events.display(),
                kept.state.offset
            ));
        }
        Ok(Some(kept.state))
    }
}

/// One annotated interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruthInterval {
    pub source: String,
    pub query: String,
    pub start_s: f64,
    pub end_s: f64,
}

/// How long one source's footage is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Footage {
    pub source: String,
    pub duration_s: f64,
}

/// The truth file, in either of its forms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Truth {
    #[serde(default)]
    pub footage: Vec<Footage>,
    pub intervals: Vec<TruthInterval>,
}

/// Reads and checks a truth file (see the module docs).
pub fn read_truth(path: &Path) -> Result<Truth> {
    let text = std::fs::read_to_string(path).map_err(|err| EvalError::Read { path: path.into(), err })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| EvalError::BadFile { path: path.into(), message: format!("not JSON ({e})") })?;
    let bad = |entry: String, message: String| EvalError::Annotation { file: path.into(), entry, message };
    let truth = if let serde_json::Value::Array(list) = value {
        let mut intervals = Vec::with_capacity(list.len());
        for (i, v) in list.into_iter().enumerate() {
            intervals.push(serde_json::from_value(v).map_err(|e| {
                bad(format!("interval {i}"), format!("not {{\"source\", \"query\", \"start_s\", \"end_s\"}} ({e})"))
            })?);
        }
        Truth { footage: Vec::new(), intervals }
    } else {
        // The object form: its entries are checked one by one too, to name the bad one.
        let obj = value.as_object().ok_or_else(|| EvalError::BadFile {
            path: path.into(),
            message: "must be a list of intervals or {\"footage\": [...], \"intervals\": [...]}".into(),
        })?;
        if let Some(k) = obj.keys().find(|k| *k != "footage" && *k != "intervals") {
            return Err(bad(format!("key \"{k}\""), "unknown: the keys are \"footage\" and \"intervals\"".into()));
        }
        let list = |key: &str| obj.get(key).and_then(|v| v.as_array()).cloned().unwrap_or_default();
        let mut truth = Truth::default();
        for (i, v) in list("intervals").into_iter().enumerate() {
            truth.intervals.push(serde_json::from_value(v).map_err(|e| {
                bad(format!("intervals[{i}]"), format!("not {{\"source\", \"query\", \"start_s\", \"end_s\"}} ({e})"))
            })?);
        }
        for (i, v) in list("footage").into_iter().enumerate() {
            truth.footage.push(
                serde_json::from_value(v)
                    .map_err(|e| bad(format!("footage[{i}]"), format!("not {{\"source\", \"duration_s\"}} ({e})")))?,
            );
        }
        truth
    };
    for (i, t) in truth.intervals.iter().enumerate() {
        let entry = format!("interval {i} ({} \"{}\")", t.source, t.query);
        if !(t.start_s.is_finite() && t.end_s.is_finite() && t.start_s >= 0.0 && t.end_s > t.start_s) {
            return Err(bad(
                entry,
                format!("start_s {} and end_s {} must be 0 <= start_s < end_s", t.start_s, t.end_s),
            ));
        }
        if let Some(f) = truth.footage.iter().find(|f| f.source == t.source)
            && t.end_s > f.duration_s + 1e-6
        {
            return Err(bad(entry, format!("ends at {} s, after the footage's duration_s {}", t.end_s, f.duration_s)));
        }
    }
    for (i, f) in truth.footage.iter().enumerate() {
        if !(f.duration_s.is_finite() && f.duration_s > 0.0) {
            return Err(bad(format!("footage[{i}] ({})", f.source), "duration_s must be more than 0".into()));
        }
    }
    Ok(truth)
}

/// Whether an event's `source` is the truth's `source`: the same text, or the same file name.
pub fn same_source(event_source: &str, truth_source: &str) -> bool {
    event_source == truth_source || Path::new(event_source).file_name().is_some_and(|n| n == truth_source)
}

/// Time to the first alert, over the intervals that were alerted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FirstAlert {
    /// Intervals that some event overlaps.
    pub intervals_alerted: usize,
    pub mean_s: f64,
    pub median_s: f64,
    pub max_s: f64,
}

/// The figures of one (source, query) pair, or of all together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scores {
    pub events: usize,
    pub intervals: usize,
    pub matched: usize,
    /// `None` without events.
    pub precision: Option<f64>,
    /// `None` without intervals.
    pub recall: Option<f64>,
    pub false_alerts: usize,
    /// `None` when an annotated source has no `duration_s`.
    pub false_alerts_per_hour: Option<f64>,
    /// `None` when no interval was alerted.
    pub first_alert: Option<FirstAlert>,
}

/// One (source, query) pair of the truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairScores {
    pub source: String,
    pub query: String,
    /// Per interval of the pair, in the truth's order: the time to its first alert, `None` if none came.
    pub first_alert_s: Vec<Option<f64>>,
    #[serde(flatten)]
    pub scores: Scores,
}

/// Events that were not counted: their source or query is not annotated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotAnnotated {
    pub source: String,
    pub query: String,
    pub events: usize,
}

/// Everything `eval events` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventsReport {
    pub events_file: PathBuf,
    pub truth_file: PathBuf,
    pub min_temporal_iou: f64,
    /// Counted events that had no `end` line.
    pub open_events: usize,
    /// Hours of annotated footage; `None` when some annotated source has no `duration_s`.
    pub hours: Option<f64>,
    pub overall: Scores,
    pub pairs: Vec<PairScores>,
    pub not_annotated: Vec<NotAnnotated>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn first_alert(delays: &[f64]) -> Option<FirstAlert> {
    if delays.is_empty() {
        return None;
    }
    Some(FirstAlert {
        intervals_alerted: delays.len(),
        mean_s: delays.iter().sum::<f64>() / delays.len() as f64,
        median_s: median(delays.to_vec()),
        max_s: delays.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Scores `events` against `truth` (see the module docs).
pub fn score(events: &[EventSpan], truth: &Truth, events_file: &Path, truth_file: &Path) -> EventsReport {
    // The (source, query) pairs of the truth, in first-seen order: the intervals' and, for sources in `footage`
    // with none of a query's intervals, that query too (all its events there are false alerts).
    let queries: BTreeSet<&str> = truth.intervals.iter().map(|t| t.query.as_str()).collect();
    let mut sources: Vec<&str> = Vec::new();
    for s in truth.intervals.iter().map(|t| t.source.as_str()).chain(truth.footage.iter().map(|f| f.source.as_str())) {
        if !sources.contains(&s) {
            sources.push(s);
        }
    }
    let hours = sources
        .iter()
        .map(|s| truth.footage.iter().find(|f| f.source == *s).map(|f| f.duration_s))
        .sum::<Option<f64>>()
        .map(|s| s / 3600.0);
    let mut pairs = Vec::new();
    let mut counted = vec![false; events.len()];
    let (mut all_delays, mut open_events) = (Vec::new(), 0);
    let (mut n_events, mut n_intervals, mut n_matched) = (0, 0, 0);
    for &source in &sources {
        for &query in &queries {
            let intervals: Vec<&TruthInterval> =
                truth.intervals.iter().filter(|t| t.source == source && t.query == query).collect();
            let mine: Vec<usize> = (0..events.len())
                .filter(|&i| {
                    let e = &events[i];
                    !counted[i] && same_source(&e.source, source) && (e.query == query || e.label == query)
                })
                .collect();
            if intervals.is_empty() && mine.is_empty() {
                continue;
            }
            for &i in &mine {
                counted[i] = true;
                open_events += usize::from(events[i].open);
            }
            let predicted: Vec<(f64, f64)> = mine.iter().map(|&i| (events[i].start_s, events[i].end_s)).collect();
            let annotated: Vec<(f64, f64)> = intervals.iter().map(|t| (t.start_s, t.end_s)).collect();
            let matched = match_intervals(&predicted, &annotated, MIN_TEMPORAL_IOU).len();
            let first_alert_s: Vec<Option<f64>> = annotated
                .iter()
                .map(|&(start, end)| {
                    predicted
                        .iter()
                        .filter(|p| p.0 <= end && p.1 >= start)
                        .map(|p| p.0)
                        .min_by(f64::total_cmp)
                        .map(|first| first - start)
                })
                .collect();
            let delays: Vec<f64> = first_alert_s.iter().flatten().copied().collect();
            all_delays.extend(&delays);
            let hours_here = truth.footage.iter().find(|f| f.source == source).map(|f| f.duration_s / 3600.0);
            let false_alerts = predicted.len() - matched;
            n_events += predicted.len();
            n_intervals += annotated.len();
            n_matched += matched;
            pairs.push(PairScores {
                source: source.into(),
                query: query.into(),
                first_alert_s,
                scores: Scores {
                    events: predicted.len(),
                    intervals: annotated.len(),
                    matched,
                    precision: ratio(matched, predicted.len()),
                    recall: ratio(matched, annotated.len()),
                    false_alerts,
                    false_alerts_per_hour: hours_here.map(|h| false_alerts as f64 / h),
                    first_alert: first_alert(&delays),
                },
            });
        }
    }
    let mut not_annotated: Vec<NotAnnotated> = Vec::new();
    for (e, _) in events.iter().zip(&counted).filter(|(_, c)| !**c) {
        match not_annotated.iter_mut().find(|n| n.source == e.source && n.query == e.query) {
            Some(n) => n.events += 1,
            None => not_annotated.push(NotAnnotated { source: e.source.clone(), query: e.query.clone(), events: 1 }),
        }
    }
    let false_alerts = n_events - n_matched;
    EventsReport {
        events_file: events_file.into(),
        truth_file: truth_file.into(),
        min_temporal_iou: MIN_TEMPORAL_IOU,
        open_events,
        hours,
        overall: Scores {
            events: n_events,
            intervals: n_intervals,
            matched: n_matched,
            precision: ratio(n_matched, n_events),
            recall: ratio(n_matched, n_intervals),
            false_alerts,
            false_alerts_per_hour: hours.map(|h| false_alerts as f64 / h),
            first_alert: first_alert(&all_delays),
        },
        pairs,
        not_annotated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, source: &str, query: &str, start_s: f64, end_s: f64) -> EventSpan {
        EventSpan {
            event_id: id.into(),
            source: source.into(),
            query: query.into(),
            label: query.into(),
            start_s,
            end_s,
            open: false,
        }
    }

    fn interval(source: &str, query: &str, start_s: f64, end_s: f64) -> TruthInterval {
        TruthInterval { source: source.into(), query: query.into(), start_s, end_s }
    }

    #[test]
    fn scores_by_hand() {
        let truth = Truth {
            footage: vec![Footage { source: "gate.mp4".into(), duration_s: 1800.0 }],
            intervals: vec![
                interval("gate.mp4", "a person", 10.0, 20.0),
                interval("gate.mp4", "a person", 100.0, 110.0),
                interval("gate.mp4", "a person", 300.0, 310.0),
            ],
        };
        let events = vec![
            // tIoU 8/12 with [10, 20]: a match; the first alert 2 s late.
            span("a", "/cams/gate.mp4", "a person", 12.0, 22.0),
            // Overlaps [100, 110] by 1 s of 28: tIoU 0.036, no match, but an alert 9 s late.
            span("b", "/cams/gate.mp4", "a person", 109.0, 128.0),
            // Nothing there: a false alert.
            span("c", "/cams/gate.mp4", "a person", 500.0, 505.0),
            // Another camera: not annotated.
            span("d", "/cams/yard.mp4", "a person", 10.0, 20.0),
        ];
        let r = score(&events, &truth, Path::new("events.jsonl"), Path::new("truth.json"));
        let o = &r.overall;
        assert_eq!((o.events, o.intervals, o.matched, o.false_alerts), (3, 3, 1, 2));
        assert_eq!(o.precision, Some(1.0 / 3.0));
        assert_eq!(o.recall, Some(1.0 / 3.0));
        assert_eq!(r.hours, Some(0.5));
        assert_eq!(o.false_alerts_per_hour, Some(4.0)); // 2 in half an hour
        let fa = o.first_alert.as_ref().unwrap();
        assert_eq!((fa.intervals_alerted, fa.mean_s, fa.median_s, fa.max_s), (2, 5.5, 5.5, 9.0));
        assert_eq!(r.pairs.len(), 1);
        assert_eq!(r.pairs[0].first_alert_s, vec![Some(2.0), Some(9.0), None]);
        assert_eq!(
            r.not_annotated,
            vec![NotAnnotated { source: "/cams/yard.mp4".into(), query: "a person".into(), events: 1 }]
        );
    }

    #[test]
    fn without_footage_no_rate_per_hour() {
        let truth = Truth { footage: vec![], intervals: vec![interval("gate.mp4", "a car", 0.0, 4.0)] };
        let r = score(&[span("a", "gate.mp4", "a car", 1.0, 3.0)], &truth, Path::new("e"), Path::new("t"));
        assert_eq!(r.overall.matched, 1); // tIoU 0.5
        assert_eq!(r.hours, None);
        assert_eq!(r.overall.false_alerts_per_hour, None);
    }

    #[test]
    fn reads_events_start_to_end_and_open_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let lines = [
            r#"{"type":"start","event_id":"e1","source":"a.mp4","query":"q","label":"q","track_id":1,"frame":10,"pts_s":0.4,"box":[0,0,1,1],"score":0.5,"start":{"frame":10,"pts_s":0.4}}"#,
            r#"{"type":"start","event_id":"e2","source":"a.mp4","query":"q","label":"q","track_id":2,"frame":20,"pts_s":0.8,"box":[0,0,1,1],"score":0.5,"start":{"frame":20,"pts_s":0.8}}"#,
            r#"{"type":"update","event_id":"e2","source":"a.mp4","query":"q","label":"q","track_id":2,"frame":30,"pts_s":1.2,"box":[0,0,1,1],"score":0.5,"start":{"frame":20,"pts_s":0.8}}"#,
            r#"{"type":"end","event_id":"e1","source":"a.mp4","query":"q","label":"q","track_id":1,"frame":60,"pts_s":2.4,"box":[0,0,1,1],"score":0.5,"start":{"frame":10,"pts_s":0.4},"end":{"frame":50,"pts_s":2.0}}"#,
            r#"{"type":"clips","event_id":"e1","source":"a.mp4","query":"q","label":"q","track_id":1,"clips":{"status":"none"}}"#,
            r#"{"type":"start","event_id":"e3","sou"#,
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let spans = read_events(&path, None, &mut |_| {}).unwrap();
        assert_eq!(spans.len(), 2, "the torn last line is skipped");
        assert_eq!((spans[0].start_s, spans[0].end_s, spans[0].open), (0.4, 2.0, false));
        assert_eq!((spans[1].start_s, spans[1].end_s, spans[1].open), (0.8, 1.2, true));
        let first = read_events(&path, Some(1), &mut |_| {}).unwrap();
        assert_eq!(first.len(), 1);
        std::fs::write(&path, format!("{}\nnot json\n{}\n", lines[0], lines[1])).unwrap();
        let err = read_events(&path, None, &mut |_| {}).unwrap_err().to_string();
        assert!(err.contains("events.jsonl: line 2: not an event line"), "{err}");
    }

    #[test]
    fn truth_errors_name_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("truth.json");
        std::fs::write(&path, r#"[{"source":"a","query":"q","start_s":5,"end_s":2}]"#).unwrap();
        let err = read_truth(&path).unwrap_err().to_string();
        assert!(err.contains("truth.json: interval 0 (a \"q\"): start_s 5 and end_s 2"), "{err}");
        std::fs::write(&path, r#"{"intervals":[{"source":"a","query":"q","start_s":1,"end_s":2},{"source":"a"}]}"#)
            .unwrap();
        let err = read_truth(&path).unwrap_err().to_string();
        assert!(err.contains("truth.json: intervals[1]: not"), "{err}");
        std::fs::write(
            &path,
            r#"{"footage":[{"source":"a","duration_s":10}],"intervals":[{"source":"a","query":"q","start_s":1,"end_s":12}]}"#,
        )
        .unwrap();
        assert!(read_truth(&path).unwrap_err().to_string().contains("after the footage's duration_s 10"));
    }
}
