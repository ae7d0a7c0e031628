//! The event log: `<out>/events.jsonl`, one JSON object per line, appended.
//!
//! Each line is written with a single `write` to a file opened in append mode, so a line is either in the
//! file or not, and whatever was recorded survives a crash of the process (the kernel holds it).
//! `sync_each_line` also survives a power cut, at the cost of an fsync per line.
//! If a write fails half way (a full disk), the next line starts on a new line, so one broken line never
//! spoils the ones after it.
//!
//! For file sources every field is deterministic except the wall-clock times (`wall_time`, and those of
//! `start` and `end`), which [`EventLogSettings::wall_time`] turns off, so that two runs over the same file
//! give the same bytes.
//!
//! # Lines
//!
//! Each line is one notification of the event engine ([`crate::track::lifecycle`]): `start`, `update` or
//! `end`, all three with the same `event_id`:
//!
//! ```json
//! {"type":"start","event_id":"gate-0-7-120","source":"rtsp://***@10.0.0.5/stream","query":"a person climbing the fence","label":"climbing","track_id":7,"frame":122,"pts_s":4.88,"box":[310.0,42.5,388.0,260.0],"score":0.41,"start":{"frame":120,"pts_s":4.8},"peak":{"frame":122,"pts_s":4.88,"score":0.41,"box":[310.0,42.5,388.0,260.0]},"clips":{"status":"none","clip":null,"crop_clip":null,"snapshot":null,"crop_snapshot":null,"sidecar":null}}
//! {"type":"end","event_id":"gate-0-7-120",...,"start":{"frame":120,"pts_s":4.8},"end":{"frame":301,"pts_s":12.04},"duration_s":7.24,"peak":{...},"reason":"lost","clips":{...}}
//! ```
//!
//! - `frame`, `pts_s`: the frame on which the line was decided; `box`, `score`: the latest match (on `end`,
//!   the last one). `pts_s` is stream time in seconds: the frame's PTS, or its index / 25 without one.
//! - `start`, `end`: the event's first and last match, with `wall_time` when the log has wall-clock times.
//! - `peak`: the best score of the event so far, its frame and its box.
//! - `reason` (on `end`): `lost` (no match for `end_after_s`), `eos` (the stream ended) or `shutdown`.
//! - `clips`: where the evidence will be, relative to the output directory, and `status`: `none` (no clip
//!   writer: the paths are null), `pending` (a [`ClipSink`] will write them; they may not exist yet),
//!   `written` or `failed` (with a short `error`).
//!
//! When the clip writer has finished an event's evidence (after the post-roll that follows its `end`), one
//! more line gives the final status, with the same `event_id` ([`ClipsRecord`]):
//!
//! ```json
//! {"type":"clips","event_id":"gate-0-7-120","source":"rtsp://***@10.0.0.5/stream","query":"a person climbing the fence","label":"climbing","track_id":7,"clips":{"status":"written","clip":"gate/gate-0-7-120.mp4","crop_clip":"gate/gate-0-7-120-crop.mp4","snapshot":"gate/gate-0-7-120.jpg","crop_snapshot":"gate/gate-0-7-120-crop.jpg","sidecar":"gate/gate-0-7-120.json"}}
//! {"type":"clips","event_id":"gate-0-8-300",...,"clips":{"status":"failed",...,"error":"writing gate/gate-0-8-300.mp4 failed: ..."}}
//! ```
//!
//! When `written`, its paths are of files that exist. When `failed`, `error` says why: if the full-frame clip
//! failed, the paths are of what was meant; if only some of the evidence failed (the crop clip, a snapshot, the
//! sidecar), the clip's path stays and the paths of the missing pieces are null. The `clips` line of an event comes after its `end` line, but other events'
//! lines may come in between (clips are written on their own threads).
//!
//! `event_id` and the fields after `score` are left out when empty: a record with only the fields up to `score`
//! is a line too (the unit tests' shortest).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::SinkError;
use crate::geom::PixelBox;
use crate::redact::redact_url;
use crate::track::{EndReason, FrameTime, LifecycleEvent, LifecycleKind, TrackOutput};

/// Name of the event log inside the output directory.
pub const EVENTS_FILE_NAME: &str = "events.jsonl";

/// The `type` of an [`EventRecord`]: which notification of the event engine the line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventLineKind {
    /// The event started.
    Start,
    /// The event is still going on (rate-limited by the query's `update_interval_s`).
    Update,
    /// The event ended.
    End,
}

impl EventLineKind {
    /// `"start"`, `"update"` or `"end"`, as in the event log.
    pub fn as_str(self) -> &'static str {
        match self {
            EventLineKind::Start => "start",
            EventLineKind::Update => "update",
            EventLineKind::End => "end",
        }
    }
}

/// One line of `events.jsonl`. Fields are written in this order; the optional ones are left out when
/// `None` (see the module documentation for which lines have which).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRecord {
    /// `"start"`, `"update"` or `"end"`.
    #[serde(rename = "type")]
    pub kind: EventLineKind,
    /// The same on an event's `start`, `update`s and `end`; also the stem of its clip files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Display name of the source, with any password removed.
    pub source: String,
    /// The query's text.
    pub query: String,
    /// The query's short label.
    pub label: String,
    /// The tracker's id of the object, unique within the source.
    pub track_id: u64,
    /// Index of the video frame.
    pub frame: u64,
    /// Stream time of the frame in seconds (to the microsecond), or null when the frame had no timestamp.
    pub pts_s: Option<f64>,
    /// When the line was written, RFC 3339 in UTC; omitted when the log is set to leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time: Option<String>,
    /// `[x0, y0, x1, y1]` in pixels of the frame.
    #[serde(rename = "box")]
    pub bbox: PixelBox,
    /// Score of the detection, 0..1.
    pub score: f32,
    /// The event's first match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Stamp>,
    /// The event's last match (on `end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Stamp>,
    /// Seconds from `start` to `end` (on `end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// The best match of the event so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<Peak>,
    /// Why the event ended (on `end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<EndReason>,
    /// The event's clips and snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clips: Option<Clips>,
}

/// A point of an event in time: a frame, its stream time and (optionally) its wall-clock time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stamp {
    /// Index of the video frame.
    pub frame: u64,
    /// Stream time in seconds, to the microsecond.
    pub pts_s: f64,
    /// When the frame was captured or decoded, RFC 3339 in UTC; omitted when the log leaves wall-clock times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time: Option<String>,
}

impl Stamp {
    fn of(at: &FrameTime) -> Self {
        Stamp { frame: at.frame, pts_s: round_us(at.pts_s), wall_time: at.wall.map(format_rfc3339_utc) }
    }
}

/// The best match of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peak {
    /// Index of the video frame.
    pub frame: u64,
    /// Stream time in seconds, to the microsecond.
    pub pts_s: f64,
    /// The best score of the event so far.
    pub score: f32,
    /// The box with that score, in pixels of the frame.
    #[serde(rename = "box")]
    pub bbox: PixelBox,
}

/// Whether an event's clips exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClipsStatus {
    /// Nothing is written for this event (no clip writer); the paths are null.
    None,
    /// A clip writer will write the files at these paths; they may not exist yet (a clip is complete only
    /// after the post-roll that follows the `end`).
    Pending,
    /// The files are complete.
    Written,
    /// The clip writer could not write them (a full disk, a failed encoder); the paths are of what was meant.
    Failed,
}

/// Where an event's evidence is, relative to the output directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clips {
    /// Whether the files exist.
    pub status: ClipsStatus,
    /// `<source>/<event-id>.mp4`: the full frame, pre-roll to post-roll.
    pub clip: Option<String>,
    /// `<source>/<event-id>-crop.mp4`: cropped to the event's boxes.
    pub crop_clip: Option<String>,
    /// `<source>/<event-id>.jpg`: the full frame at the peak, with its box.
    pub snapshot: Option<String>,
    /// `<source>/<event-id>-crop.jpg`: the crop at the peak.
    pub crop_snapshot: Option<String>,
    /// `<source>/<event-id>.json`: every frame's box and score.
    pub sidecar: Option<String>,
    /// Why the evidence could not be written (`failed` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Clips {
    /// No evidence is written: status `none`, every path null.
    pub fn none() -> Self {
        Clips {
            status: ClipsStatus::None,
            clip: None,
            crop_clip: None,
            snapshot: None,
            crop_snapshot: None,
            sidecar: None,
            error: None,
        }
    }

    /// The paths a clip writer writes for `event_id` of the source whose directory is `source_dir` (its short
    /// name), with status `pending`.
    pub fn planned(source_dir: &str, event_id: &str) -> Self {
        let path = |suffix: &str| Some(format!("{source_dir}/{event_id}{suffix}"));
        Clips {
            status: ClipsStatus::Pending,
            clip: path(".mp4"),
            crop_clip: path("-crop.mp4"),
            snapshot: path(".jpg"),
            crop_snapshot: path("-crop.jpg"),
            sidecar: path(".json"),
            error: None,
        }
    }
}

/// The seam between the watch loop and the clip writer ([`crate::sink::clips::ClipRecorder`]): the watch loop
/// tells it of every frame and every notification, and logs the [`Clips`] it answers.
pub trait ClipSink {
    /// Told of every frame of the source, before its notifications: its time, its PTS in the pipeline's
    /// timeline (to map stream time to the packets' time) and the tracker's outputs (the boxes and scores of
    /// the sidecar). The default does nothing, for a sink that needs neither.
    fn on_frame(&mut self, at: &FrameTime, pts_ns: Option<u64>, tracks: &[TrackOutput]) {
        let _ = (at, pts_ns, tracks);
    }

    /// Told of each notification before its line (if any) is logged; `closed` means the post-roll is over
    /// and the clip can be finished. Returns what it will write for the event: [`Clips::planned`] with status
    /// `pending`, or [`Clips::none`]. The answer to `closed` is not logged.
    fn on_event(&mut self, event: &LifecycleEvent) -> Clips;
}

/// The `type` of a [`ClipsRecord`]: always `"clips"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClipsLineKind {
    Clips,
}

/// The last line of an event: the final status of its evidence (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipsRecord {
    /// Always `"clips"`.
    #[serde(rename = "type")]
    pub kind: ClipsLineKind,
    /// The event's id, as on its `start`, `update` and `end` lines.
    pub event_id: String,
    /// Display name of the source, with any password removed.
    pub source: String,
    /// The query's text.
    pub query: String,
    /// The query's short label.
    pub label: String,
    /// The tracker's id of the object.
    pub track_id: u64,
    /// When the line was written, RFC 3339 in UTC; omitted when the log leaves wall-clock times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time: Option<String>,
    /// The evidence, with its final status: `written` or `failed`.
    pub clips: Clips,
}

impl ClipsRecord {
    /// The line for `event_id`; `source` is redacted here.
    pub fn new(event_id: &str, source: &str, query: &str, label: &str, track_id: u64, clips: Clips) -> Self {
        ClipsRecord {
            kind: ClipsLineKind::Clips,
            event_id: event_id.to_string(),
            source: redact_url(source),
            query: query.to_string(),
            label: label.to_string(),
            track_id,
            wall_time: None,
            clips,
        }
    }
}

impl EventRecord {
    /// The line of an event engine notification, or `None` for `closed` (which has none). `source` is
    /// redacted here; `wall_time` is left empty for the log to stamp.
    pub fn from_lifecycle(ev: &LifecycleEvent, source: &str, query: &str, label: &str, clips: Clips) -> Option<Self> {
        let kind = match ev.kind {
            LifecycleKind::Start => EventLineKind::Start,
            LifecycleKind::Update => EventLineKind::Update,
            LifecycleKind::End(_) => EventLineKind::End,
            LifecycleKind::Closed => return None,
        };
        Some(EventRecord {
            kind,
            event_id: Some(ev.event_id.clone()),
            source: redact_url(source),
            query: query.to_string(),
            label: label.to_string(),
            track_id: ev.track_id,
            frame: ev.at.frame,
            pts_s: Some(round_us(ev.at.pts_s)),
            wall_time: None,
            bbox: ev.last.bbox,
            score: ev.last.score,
            start: Some(Stamp::of(&ev.start.at)),
            end: ev.end.as_ref().map(Stamp::of),
            duration_s: ev.end.map(|end| round_us(end.pts_s - ev.start.at.pts_s)),
            peak: Some(Peak {
                frame: ev.peak.at.frame,
                pts_s: round_us(ev.peak.at.pts_s),
                score: ev.peak.score,
                bbox: ev.peak.bbox,
            }),
            reason: ev.reason(),
            clips: Some(clips),
        })
    }

    /// The record without any wall-clock time (its own, and those of `start` and `end`).
    pub fn without_wall_times(&self) -> Self {
        let strip = |s: &Option<Stamp>| s.as_ref().map(|s| Stamp { wall_time: None, ..s.clone() });
        EventRecord { wall_time: None, start: strip(&self.start), end: strip(&self.end), ..self.clone() }
    }
}

/// Seconds rounded to the microsecond, so the log reads `1.96`, not `1.9600000000000002`.
pub fn round_us(s: f64) -> f64 {
    (s * 1e6).round() / 1e6
}

/// Nanoseconds as seconds rounded to the microsecond, so the log reads `1.533333`, not `1.5333333330000001`.
pub fn pts_seconds(pts_ns: u64) -> f64 {
    (pts_ns as f64 / 1_000.0).round() / 1_000_000.0
}

/// `t` as RFC 3339 in UTC with milliseconds, such as `2023-11-14T22:13:20.000Z`. Times before 1970 are
/// written as the epoch.
pub fn format_rfc3339_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days (http://howardhinnant.github.io/date_algorithms.html).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// What the user sets for the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLogSettings {
    /// Stamp each line with the wall-clock time it was written (`wall_time`). Default true; turn it off for
    /// output that is the same byte for byte on every run over the same file.
    pub wall_time: bool,
    /// fsync the file after each line, so lines survive a power cut too. Default false.
    pub sync_each_line: bool,
}

/// Default [`EventLogSettings::wall_time`].
pub const DEFAULT_WALL_TIME: bool = true;
/// Default [`EventLogSettings::sync_each_line`].
pub const DEFAULT_SYNC_EACH_LINE: bool = false;

impl Default for EventLogSettings {
    fn default() -> Self {
        EventLogSettings { wall_time: DEFAULT_WALL_TIME, sync_each_line: DEFAULT_SYNC_EACH_LINE }
    }
}

/// Counters of an event log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventLogStats {
    /// Lines written whole.
    pub lines: u64,
    /// Lines that could not be written.
    pub errors: u64,
}

/// The event log of one run. Owned by the one stage that writes events; not shared between threads.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: File,
    settings: EventLogSettings,
    /// The line being written, reused.
    line: Vec<u8>,
    /// The file does not end with a newline (a write failed half way): start the next line with one.
    broken_line: bool,
    stats: EventLogStats,
}

impl EventLog {
    /// Opens (creating it and `out_dir` if needed) `<out_dir>/events.jsonl` for appending.
    pub fn open(out_dir: &Path, settings: EventLogSettings) -> Result<Self, SinkError> {
        std::fs::create_dir_all(out_dir)
            .map_err(|error| SinkError::CreateDir { path: out_dir.to_path_buf(), error })?;
        Self::open_file(&out_dir.join(EVENTS_FILE_NAME), settings)
    }

    /// Opens (creating it if needed) the log at `path` for appending; its directory must exist.
    pub fn open_file(path: &Path, settings: EventLogSettings) -> Result<Self, SinkError> {
        let open_err = |error| SinkError::Open { path: path.to_path_buf(), error };
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(open_err)?;
        // A previous run that died half way through a line left the file without a final newline.
        let broken_line = ends_without_newline(&mut file).map_err(open_err)?;
        Ok(EventLog {
            path: path.to_path_buf(),
            file,
            settings,
            line: Vec::with_capacity(512),
            broken_line,
            stats: EventLogStats::default(),
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last line [`EventLog::write`] wrote, without its newline: the bytes alerts send, so that an alert is
    /// the line itself (same numbers, same wall-clock times). Empty before the first write; after a failed write,
    /// the line that failed.
    pub fn last_line(&self) -> &[u8] {
        let line = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
        line.strip_prefix(b"\n").unwrap_or(line)
    }

    /// Lines written and failed so far.
    pub fn stats(&self) -> EventLogStats {
        self.stats
    }

    /// Appends `record` as one line. Without a `wall_time`, the log stamps it now (when set to); with
    /// `wall_time` turned off, every wall-clock time in the record is left out (`start` and `end` too).
    ///
    /// On an error (such as a full disk) the record is lost, but the log stays usable: the caller logs the
    /// error and goes on, and later lines are written once there is room again.
    pub fn write(&mut self, record: &EventRecord) -> Result<(), SinkError> {
        self.line.clear();
        if self.broken_line {
            self.line.push(b'\n');
        }
        let result = match (self.settings.wall_time, &record.wall_time) {
            (true, None) => {
                let stamped = EventRecord { wall_time: Some(format_rfc3339_utc(SystemTime::now())), ..record.clone() };
                serde_json::to_writer(&mut self.line, &stamped)
            }
            (false, _) => serde_json::to_writer(&mut self.line, &record.without_wall_times()),
            _ => serde_json::to_writer(&mut self.line, record),
        };
        // Serialising a struct of strings and numbers into memory does not fail (NaN becomes null).
        result.map_err(|e| SinkError::Write { path: self.path.clone(), error: io::Error::other(e) })?;
        self.finish_line()
    }

    /// Appends an event's final `clips` line, stamped with the time now when the log has wall-clock times.
    pub fn write_clips(&mut self, record: &ClipsRecord) -> Result<(), SinkError> {
        self.line.clear();
        if self.broken_line {
            self.line.push(b'\n');
        }
        let wall_time = self.settings.wall_time.then(|| format_rfc3339_utc(SystemTime::now()));
        let record = ClipsRecord { wall_time, ..record.clone() };
        serde_json::to_writer(&mut self.line, &record)
            .map_err(|e| SinkError::Write { path: self.path.clone(), error: io::Error::other(e) })?;
        self.finish_line()
    }

    /// Ends the line in `self.line` and writes it.
    fn finish_line(&mut self) -> Result<(), SinkError> {
        self.line.push(b'\n');

        match write_line(&mut self.file, &self.line, self.settings.sync_each_line) {
            Ok(()) => {
                self.broken_line = false;
                self.stats.lines += 1;
                Ok(())
            }
            Err((written, error)) => {
                if written > 0 {
                    self.broken_line = self.line[written - 1] != b'\n';
                }
                self.stats.errors += 1;
                Err(SinkError::Write { path: self.path.clone(), error })
            }
        }
    }
}

/// Writes all of `line`, then syncs if asked. On an error, returns how many bytes were written before it.
fn write_line(file: &mut File, line: &[u8], sync: bool) -> Result<(), (usize, io::Error)> {
    let mut written = 0;
    while written < line.len() {
        match file.write(&line[written..]) {
            Ok(0) => return Err((written, io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    file.flush().map_err(|e| (written, e))?;
    if sync {
        file.sync_data().map_err(|e| (written, e))?;
    }
    Ok(())
}

fn ends_without_newline(file: &mut File) -> io::Result<bool> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The shortest line: the fields up to `score`.
    fn record(kind: EventLineKind) -> EventRecord {
        EventRecord {
            kind,
            event_id: None,
            source: redact_url("rtsp://admin:pw@cam1/live"),
            query: "a red car".into(),
            label: "car".into(),
            track_id: 3,
            frame: 46,
            pts_s: Some(pts_seconds(1_533_333_333)),
            wall_time: None,
            bbox: PixelBox { x0: 1.0, y0: 2.5, x1: 30.0, y1: 40.0 },
            score: 0.42,
            start: None,
            end: None,
            duration_s: None,
            peak: None,
            reason: None,
            clips: None,
        }
    }

    #[test]
    fn rfc3339_of_known_instants() {
        let at = |s: u64, ms: u64| format_rfc3339_utc(UNIX_EPOCH + Duration::from_millis(s * 1000 + ms));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_700_000_000, 999), "2023-11-14T22:13:20.999Z");
        assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000Z");
        assert_eq!(format_rfc3339_utc(UNIX_EPOCH - Duration::from_secs(5)), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn line_schema_is_stable() {
        let json = serde_json::to_string(&record(EventLineKind::Start)).unwrap();
        assert_eq!(
            json,
            r#"{"type":"start","source":"rtsp://***@cam1/live","query":"a red car","label":"car","track_id":3,"frame":46,"pts_s":1.533333,"box":[1.0,2.5,30.0,40.0],"score":0.42}"#
        );
        let mut r = record(EventLineKind::End);
        r.pts_s = None;
        r.wall_time = Some("2023-11-14T22:13:20.999Z".into());
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.contains(r#""type":"end""#)
                && json.contains(r#""pts_s":null,"wall_time":"2023-11-14T22:13:20.999Z","box""#)
        );
        assert_eq!(serde_json::from_str::<EventRecord>(&json).unwrap(), r);
    }

    fn lifecycle_event(kind: LifecycleKind) -> LifecycleEvent {
        use crate::track::Sample;
        let at = |frame: u64| FrameTime { frame, pts_s: frame as f64 / 25.0, wall: None };
        let sample = |frame: u64, score: f32| Sample {
            at: at(frame),
            bbox: PixelBox { x0: 1.0, y0: 2.5, x1: 30.0, y1: 40.0 },
            score,
        };
        LifecycleEvent {
            kind,
            event_id: "cam1-0-3-46".into(),
            query: 0,
            track_id: 3,
            at: at(99),
            last: sample(49, 0.4),
            start: sample(46, 0.3),
            end: matches!(kind, LifecycleKind::End(_)).then(|| at(49)),
            peak: Sample {
                at: FrameTime { wall: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)), ..at(47) },
                ..sample(47, 0.42)
            },
            pre_roll_s: 5.0,
            post_roll_s: 5.0,
        }
    }

    #[test]
    fn lifecycle_line_schema_is_stable() {
        let ev = lifecycle_event(LifecycleKind::End(EndReason::Lost));
        let mut ev_wall = ev.clone();
        ev_wall.start.at.wall = Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let r = EventRecord::from_lifecycle(
            &ev_wall,
            "rtsp://admin:pw@cam1/live",
            "a red car",
            "car",
            Clips::planned("cam1", &ev.event_id),
        )
        .unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"type":"end","event_id":"cam1-0-3-46","source":"rtsp://***@cam1/live","query":"a red car","label":"car","track_id":3,"frame":99,"pts_s":3.96,"box":[1.0,2.5,30.0,40.0],"score":0.4,"start":{"frame":46,"pts_s":1.84,"wall_time":"2023-11-14T22:13:20.000Z"},"end":{"frame":49,"pts_s":1.96},"duration_s":0.12,"peak":{"frame":47,"pts_s":1.88,"score":0.42,"box":[1.0,2.5,30.0,40.0]},"reason":"lost","clips":{"status":"pending","clip":"cam1/cam1-0-3-46.mp4","crop_clip":"cam1/cam1-0-3-46-crop.mp4","snapshot":"cam1/cam1-0-3-46.jpg","crop_snapshot":"cam1/cam1-0-3-46-crop.jpg","sidecar":"cam1/cam1-0-3-46.json"}}"#
        );
        assert_eq!(serde_json::from_str::<EventRecord>(&json).unwrap(), r);
        assert!(!serde_json::to_string(&r.without_wall_times()).unwrap().contains("wall_time"));

        let start =
            EventRecord::from_lifecycle(&lifecycle_event(LifecycleKind::Start), "cam1", "q", "l", Clips::none());
        let json = serde_json::to_string(&start.unwrap()).unwrap();
        assert!(json.starts_with(r#"{"type":"start","event_id":"cam1-0-3-46","#), "{json}");
        assert!(!json.contains("\"end\"") && !json.contains("reason") && !json.contains("duration_s"), "{json}");
        assert!(json.ends_with(r#""clips":{"status":"none","clip":null,"crop_clip":null,"snapshot":null,"crop_snapshot":null,"sidecar":null}}"#));
        assert!(
            EventRecord::from_lifecycle(&lifecycle_event(LifecycleKind::Closed), "c", "q", "l", Clips::none())
                .is_none()
        );
    }

    #[test]
    fn stamps_or_omits_wall_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), EventLogSettings::default()).unwrap();
        log.write(&record(EventLineKind::Start)).unwrap();
        let mut log = EventLog::open(dir.path(), EventLogSettings { wall_time: false, ..Default::default() }).unwrap();
        let mut r = record(EventLineKind::End);
        r.wall_time = Some("2000-01-01T00:00:00.000Z".into());
        log.write(&r).unwrap();
        let text = std::fs::read_to_string(dir.path().join(EVENTS_FILE_NAME)).unwrap();
        let lines: Vec<EventRecord> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "the second open appends");
        let stamped = lines[0].wall_time.as_deref().unwrap();
        assert!(stamped.len() == 24 && stamped.ends_with('Z') && stamped.as_bytes()[10] == b'T', "{stamped}");
        assert_eq!(lines[1].wall_time, None);
    }

    #[test]
    fn a_full_disk_is_a_write_error_naming_the_file_and_the_log_goes_on() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            return;
        }
        let mut log = EventLog::open_file(full, EventLogSettings::default()).unwrap();
        for _ in 0..2 {
            let err = log.write(&record(EventLineKind::Update)).unwrap_err();
            assert!(matches!(err, SinkError::Write { .. }), "{err}");
            assert_eq!(err.io_error_kind(), Some(io::ErrorKind::StorageFull));
            assert!(err.to_string().contains("/dev/full"), "{err}");
        }
        assert_eq!(log.stats(), EventLogStats { lines: 0, errors: 2 });
    }

    #[test]
    fn a_broken_last_line_is_ended_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVENTS_FILE_NAME);
        std::fs::write(&path, "{\"type\":\"sta").unwrap();
        let mut log = EventLog::open(dir.path(), EventLogSettings { wall_time: false, ..Default::default() }).unwrap();
        log.write(&record(EventLineKind::Start)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(serde_json::from_str::<EventRecord>(lines[1]).is_ok());
    }
}
