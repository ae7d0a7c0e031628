//! The event log: `<out>/events.jsonl`, one JSON object per line, appended.
//!
//! Each line is written with a single `write` of the whole line to a file opened in append mode, and a write
//! that the file takes only part of (a full disk) is cut back off, so a line is either in the file whole or not
//! at all, and whatever was recorded survives a crash of the process (the kernel holds it). `sync_each_line`
//! also survives a power cut, at the cost of an fsync per line.
//!
//! While the disk is full, lines are kept in memory (bounded) and written in order once there is room; those
//! that cannot be kept, or are still kept when the run ends, are counted as lost (`event_lines_lost` in
//! `summary.json`). See [`EventLog`].
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
//! An event of a query with `verify` gets one `verification` line ([`VerificationRecord`]), after its `start`,
//! once the verifier has seen its first seconds (or the event ended sooner):
//!
//! ```json
//! {"type":"verification","event_id":"gate-r1-0-7-120","source":"...","query":"a person","label":"a person","track_id":7,"model":"xclip-base-patch32","score":0.83,"verdict":"confirmed","prompts":["a person snatching a chain","people walking past each other"],"frames":[122,134,147,159,172,184,197,209],"seconds":1.74}
//! {"type":"verification","event_id":"gate-r1-0-8-300",...,"score":null,"verdict":"error","reason":"overloaded",...}
//! ```
//!
//! `verdict` is `confirmed` or `rejected` (the sentence's probability `score` against the query's
//! `verify_threshold`), or `error` with a `reason`: `overloaded` when the verifier's queue was full (the frame
//! path never waits for it), or the verifier's error.
//!
//! With `[output] keep_rejected = false`, a rejected event's `verification` line ends with `"evidence":"removed"`:
//! its clips and snapshots are removed once the verdict and the files are both final ([`crate::sink::rejected`]).
//! When the verdict came before the files, its `clips` line has status `removed` (the paths are of what was
//! removed); when it came after, that line said `written` and this one says the files are gone since.
//!
//! `event_id` and the fields after `score` are left out when empty: a record with only the fields up to `score`
//! is a line too (the unit tests' shortest).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::warn;

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
    /// They were written and then removed, because the verifier rejected the event and `[output]
    /// keep_rejected = false` ([`crate::sink::rejected`]); the paths are of what was removed.
    Removed,
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

    /// Told of a query added while the run goes on (its index is the next one): its text and label, for the
    /// sidecar. The default does nothing.
    fn add_query(&mut self, text: &str, label: &str) {
        let _ = (text, label);
    }
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

/// The `type` of a [`VerificationRecord`]: always `"verification"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerificationLineKind {
    Verification,
}

/// The verifier's answer on an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictField {
    /// The sentence's probability is at or above the query's `verify_threshold`.
    Confirmed,
    /// It is below.
    Rejected,
    /// No verdict: `reason` says why (`overloaded`: the verifier's queue was full; or the verifier's error).
    Error,
}

/// The verifier's line for an event (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationRecord {
    /// Always `"verification"`.
    #[serde(rename = "type")]
    pub kind: VerificationLineKind,
    /// The event's id, as on its other lines.
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
    /// The verifier's name (its model directory's name).
    pub model: String,
    /// The sentence's softmax probability over the prompts, 0..1; null on `error`.
    pub score: Option<f32>,
    pub verdict: VerdictField,
    /// Why there is no verdict (`error` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The prompts: the sentence first, then the contrast prompts.
    pub prompts: Vec<String>,
    /// Indices of the video frames the verifier saw, in time order.
    pub frames: Vec<u64>,
    /// Stream seconds from the first of those frames to the last.
    pub seconds: f64,
    /// `"removed"` on a rejected event when `[output] keep_rejected = false`: its clips and snapshots are removed,
    /// now if they are written, else as soon as they are ([`crate::sink::rejected`]). Left out otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
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
    /// Bytes of lines kept in memory while the file takes no writes (a full disk), to be written in order once
    /// it does; a line that does not fit in them is lost (and counted). Default [`DEFAULT_MAX_KEPT_BYTES`].
    pub max_kept_bytes: usize,
}

/// Default [`EventLogSettings::wall_time`].
pub const DEFAULT_WALL_TIME: bool = true;
/// Default [`EventLogSettings::sync_each_line`].
pub const DEFAULT_SYNC_EACH_LINE: bool = false;
/// Default [`EventLogSettings::max_kept_bytes`]: 4 MiB, some 5000 lines.
pub const DEFAULT_MAX_KEPT_BYTES: usize = 4 << 20;

/// Least time between two tries of the kept lines by [`EventLog::retry_kept_if_due`].
pub const RETRY_KEPT_EVERY: Duration = Duration::from_secs(1);

impl Default for EventLogSettings {
    fn default() -> Self {
        EventLogSettings {
            wall_time: DEFAULT_WALL_TIME,
            sync_each_line: DEFAULT_SYNC_EACH_LINE,
            max_kept_bytes: DEFAULT_MAX_KEPT_BYTES,
        }
    }
}

/// Counters of an event log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventLogStats {
    /// Lines written whole (those written late, after being kept, too).
    pub lines: u64,
    /// Writes that failed (a kept line tried again counts again).
    pub errors: u64,
    /// Lines kept in memory now, waiting for room.
    pub kept: u64,
    /// Lines never written: there was no room to keep them, or the log was closed before they could be.
    pub lost: u64,
}

/// A line that [`EventLog::write`] could not write now: why, and whether it is kept to be written later (in
/// order, before any line after it) or lost.
#[derive(Debug, thiserror::Error)]
#[error("{error} ({})", if *kept { "the line is kept in memory and written once there is room" } else { "the line is lost" })]
pub struct LineNotWritten {
    /// Why the file took no line.
    pub error: SinkError,
    /// The line is kept, and written once the file takes writes again (unless the log is closed first).
    pub kept: bool,
}

/// The seam between [`EventLog`] and its file, so that a test can make writes fail, cut them short, and give
/// room back. [`File`] opened for appending (`O_APPEND`) is the real one.
trait LogFile: Send + std::fmt::Debug {
    /// One `write` at the end of the file: how many bytes of `buf` it took.
    fn append(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// The file's length now.
    fn len(&self) -> io::Result<u64>;
    /// Cuts the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fsync of the data.
    fn sync_data(&self) -> io::Result<()>;
    /// Takes (`true`) or releases the advisory lock that keeps other cooperating writers out while a line is
    /// written and, when cut, taken back.
    fn lock(&self, take: bool) -> io::Result<()>;
}

impl LogFile for File {
    fn append(&mut self, buf: &[u8]) -> io::Result<usize> {
        Write::write(self, buf)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
    fn lock(&self, take: bool) -> io::Result<()> {
        if take { File::lock(self) } else { File::unlock(self) }
    }
}

/// The event log of one run. Shared (behind a mutex) by the post stages and the clip workers; the lock is held
/// for one line at a time.
///
/// A line is written whole or not at all: with one `write` of the complete line, and, when the file takes only
/// part of it (a full disk), by cutting the file back to its length before the write. While the file takes no
/// writes, lines are kept in memory, in order, up to [`EventLogSettings::max_kept_bytes`]; each later write
/// (and [`EventLog::retry_kept_if_due`]) first tries the kept lines, oldest first, so the file's lines stay in
/// the order they were made. What cannot be kept, and what is still kept at [`EventLog::close`], is counted as
/// lost ([`EventLogStats::lost`]).
///
/// Other writers: the file is opened with `O_APPEND`, so each `write` lands at the end whoever else appends,
/// and the cut-back runs under an advisory lock (`flock`) that another lookout on the same file takes too. The
/// file is cut back only when its length is exactly what this write left (so another writer's line is never
/// cut); otherwise the next line starts with a newline, and the broken line stays alone on its line.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: Box<dyn LogFile>,
    settings: EventLogSettings,
    /// The last line made (with its final newline): what [`EventLog::last_line`] gives.
    line: Vec<u8>,
    /// A newline and a line, for the rare write after a broken line.
    scratch: Vec<u8>,
    /// The file does not end with a newline (a previous run died half way through a line, or a cut line could
    /// not be taken back): start the next line with one.
    broken_line: bool,
    /// Lines made while the file took no writes, oldest first, each with its newline.
    kept: VecDeque<Vec<u8>>,
    /// Bytes in `kept`.
    kept_bytes: usize,
    /// When the kept lines were last tried.
    last_try: Option<Instant>,
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
        // A previous run that died half way through a line (a power cut) left the file without a final newline.
        let broken_line = ends_without_newline(&mut file).map_err(open_err)?;
        Ok(Self::with_file(path, Box::new(file), broken_line, settings))
    }

    fn with_file(path: &Path, file: Box<dyn LogFile>, broken_line: bool, settings: EventLogSettings) -> Self {
        EventLog {
            path: path.to_path_buf(),
            file,
            settings,
            line: Vec::with_capacity(512),
            scratch: Vec::new(),
            broken_line,
            kept: VecDeque::new(),
            kept_bytes: 0,
            last_try: None,
            stats: EventLogStats::default(),
        }
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last line [`EventLog::write`] or [`EventLog::write_clips`] made, without its newline: the bytes
    /// alerts send, so that an alert is the line itself (same numbers, same wall-clock times). Empty before the
    /// first write; after a failed write, the line that failed.
    pub fn last_line(&self) -> &[u8] {
        self.line.strip_suffix(b"\n").unwrap_or(&self.line)
    }

    /// Lines written, failed, kept and lost so far.
    pub fn stats(&self) -> EventLogStats {
        EventLogStats { kept: self.kept.len() as u64, ..self.stats }
    }

    /// Appends `record` as one line. Without a `wall_time`, the log stamps it now (when set to); with
    /// `wall_time` turned off, every wall-clock time in the record is left out (`start` and `end` too).
    ///
    /// On an error (such as a full disk) the line is kept, and written before any later line once there is room
    /// ([`LineNotWritten::kept`]), or lost when there is no more room to keep it; either way the log stays
    /// usable: the caller logs the error and goes on.
    pub fn write(&mut self, record: &EventRecord) -> Result<(), LineNotWritten> {
        self.line.clear();
        let result = match (self.settings.wall_time, &record.wall_time) {
            (true, None) => {
                let stamped = EventRecord { wall_time: Some(format_rfc3339_utc(SystemTime::now())), ..record.clone() };
                serde_json::to_writer(&mut self.line, &stamped)
            }
            (false, _) => serde_json::to_writer(&mut self.line, &record.without_wall_times()),
            _ => serde_json::to_writer(&mut self.line, record),
        };
        // Serialising a struct of strings and numbers into memory does not fail (NaN becomes null).
        if let Err(e) = result {
            self.stats.lost += 1;
            let error = SinkError::Write { path: self.path.clone(), error: io::Error::other(e) };
            return Err(LineNotWritten { error, kept: false });
        }
        self.finish_line()
    }

    /// Appends an event's final `clips` line, stamped with the time now when the log has wall-clock times.
    /// Errors as for [`EventLog::write`].
    pub fn write_clips(&mut self, record: &ClipsRecord) -> Result<(), LineNotWritten> {
        self.line.clear();
        let wall_time = self.settings.wall_time.then(|| format_rfc3339_utc(SystemTime::now()));
        let record = ClipsRecord { wall_time, ..record.clone() };
        if let Err(e) = serde_json::to_writer(&mut self.line, &record) {
            self.stats.lost += 1;
            let error = SinkError::Write { path: self.path.clone(), error: io::Error::other(e) };
            return Err(LineNotWritten { error, kept: false });
        }
        self.finish_line()
    }

    /// Appends an event's `verification` line, stamped with the time now when the log has wall-clock times.
    pub fn write_verification(&mut self, record: &VerificationRecord) -> Result<(), LineNotWritten> {
        self.line.clear();
        let wall_time = self.settings.wall_time.then(|| format_rfc3339_utc(SystemTime::now()));
        let record = VerificationRecord { wall_time, source: redact_url(&record.source), ..record.clone() };
        if let Err(e) = serde_json::to_writer(&mut self.line, &record) {
            self.stats.lost += 1;
            let error = SinkError::Write { path: self.path.clone(), error: io::Error::other(e) };
            return Err(LineNotWritten { error, kept: false });
        }
        self.finish_line()
    }

    /// Appends any serialisable line (the control plane's `queries` lines). Errors as for [`EventLog::write`].
    pub fn write_json<T: Serialize>(&mut self, value: &T) -> Result<(), LineNotWritten> {
        self.line.clear();
        if let Err(e) = serde_json::to_writer(&mut self.line, value) {
            self.stats.lost += 1;
            let error = SinkError::Write { path: self.path.clone(), error: io::Error::other(e) };
            return Err(LineNotWritten { error, kept: false });
        }
        self.finish_line()
    }

    /// Tries the kept lines again, when there are any and the last try is at least [`RETRY_KEPT_EVERY`] old:
    /// for a caller that has no line to write (the watch loop, on every frame). `None` when nothing was tried;
    /// else whether every kept line is now written.
    pub fn retry_kept_if_due(&mut self) -> Option<Result<(), SinkError>> {
        if self.kept.is_empty() || self.last_try.is_some_and(|t| t.elapsed() < RETRY_KEPT_EVERY) {
            return None;
        }
        Some(self.write_kept())
    }

    /// The end of the run: tries the kept lines a last time and counts those still not written as lost.
    /// Returns the final counters. The log can still be written after it.
    pub fn close(&mut self) -> EventLogStats {
        if !self.kept.is_empty() && self.write_kept().is_err() {
            self.stats.lost += self.kept.len() as u64;
            self.kept.clear();
            self.kept_bytes = 0;
        }
        self.stats()
    }

    /// Ends the line in `self.line` and writes it after the kept lines, or keeps it.
    fn finish_line(&mut self) -> Result<(), LineNotWritten> {
        self.line.push(b'\n');
        let written = match self.write_kept() {
            Ok(()) => {
                let line = std::mem::take(&mut self.line);
                let r = self.write_whole(&line);
                self.line = line;
                r
            }
            Err(e) => Err(e),
        };
        let Err(error) = written else { return Ok(()) };
        let kept = self.kept_bytes + self.line.len() <= self.settings.max_kept_bytes;
        if kept {
            self.kept_bytes += self.line.len();
            self.kept.push_back(self.line.clone());
        } else {
            self.stats.lost += 1;
        }
        Err(LineNotWritten { error, kept })
    }

    /// Writes the kept lines, oldest first, until one fails.
    fn write_kept(&mut self) -> Result<(), SinkError> {
        if self.kept.is_empty() {
            return Ok(());
        }
        self.last_try = Some(Instant::now());
        while let Some(line) = self.kept.pop_front() {
            if let Err(e) = self.write_whole(&line) {
                self.kept.push_front(line);
                return Err(e);
            }
            self.kept_bytes -= line.len();
        }
        Ok(())
    }

    /// Writes `line` (ending with a newline) whole, with one `write`, or not at all: a write the file took only
    /// part of is cut back off. Syncs after it when set to.
    fn write_whole(&mut self, line: &[u8]) -> Result<(), SinkError> {
        let buf: &[u8] = if self.broken_line {
            self.scratch.clear();
            self.scratch.push(b'\n');
            self.scratch.extend_from_slice(line);
            &self.scratch
        } else {
            line
        };
        // Without the lock (a file system without flock) a line is still whole unless another writer appends
        // between the write and the cut-back, which the length check below sees.
        let locked = self.file.lock(true).is_ok();
        let before = self.file.len();
        let result = loop {
            match self.file.append(buf) {
                Ok(n) if n == buf.len() => break Ok(()),
                Ok(n) => break Err((n, io::Error::new(io::ErrorKind::StorageFull, short_write(n, buf.len())))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err((0, e)),
            }
        };
        if let Err((n, _)) = &result
            && *n > 0
        {
            // Take the cut line back, if the file is as this write left it.
            let cut_back = match before {
                Ok(len) if self.file.len().ok() == Some(len + *n as u64) => self.file.set_len(len).is_ok(),
                _ => false,
            };
            if !cut_back {
                self.broken_line = buf[n - 1] != b'\n';
            }
        }
        if locked {
            let _ = self.file.lock(false);
        }
        match result {
            Ok(()) => {
                self.broken_line = false;
                self.stats.lines += 1;
                if self.settings.sync_each_line
                    && let Err(e) = self.file.sync_data()
                {
                    // The line is in the file (the kernel has it); writing it again would make it twice.
                    warn!(
                        "{}: fsync failed: {e}; the line is written but may not survive a power cut",
                        self.path.display()
                    );
                }
                Ok(())
            }
            Err((_, error)) => {
                self.stats.errors += 1;
                Err(SinkError::Write { path: self.path.clone(), error })
            }
        }
    }
}

fn short_write(n: usize, len: usize) -> String {
    format!("short write: the file took {n} of {len} bytes")
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
            assert!(err.kept, "{err}");
            assert!(matches!(err.error, SinkError::Write { .. }), "{err}");
            assert_eq!(err.error.io_error_kind(), Some(io::ErrorKind::StorageFull));
            assert!(err.to_string().contains("/dev/full") && err.to_string().contains("kept"), "{err}");
        }
        // The second line is not tried before the first: one failed write for each.
        assert_eq!(log.stats(), EventLogStats { lines: 0, errors: 2, kept: 2, lost: 0 });
        assert_eq!(log.close(), EventLogStats { lines: 0, errors: 3, kept: 0, lost: 2 });
    }

    /// A file system with `room` bytes left, shared with the test so that it can give room back.
    #[derive(Debug, Clone, Default)]
    struct Disk(std::sync::Arc<std::sync::Mutex<DiskState>>);

    #[derive(Debug, Default)]
    struct DiskState {
        data: Vec<u8>,
        room: usize,
        /// Bytes another writer appends just before each of our writes.
        intruder: Vec<u8>,
    }

    impl Disk {
        fn with_room(room: usize) -> Self {
            let d = Disk::default();
            d.0.lock().unwrap().room = room;
            d
        }
        fn set_room(&self, room: usize) {
            self.0.lock().unwrap().room = room;
        }
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().data.clone()).unwrap()
        }
    }

    impl LogFile for Disk {
        fn append(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut d = self.0.lock().unwrap();
            let intruder = d.intruder.clone();
            d.data.extend_from_slice(&intruder);
            if d.room == 0 {
                return Err(io::ErrorKind::StorageFull.into());
            }
            let n = buf.len().min(d.room);
            d.room -= n;
            d.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn len(&self) -> io::Result<u64> {
            Ok(self.0.lock().unwrap().data.len() as u64)
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            let mut d = self.0.lock().unwrap();
            let cut = d.data.len() - len as usize;
            d.room += cut;
            d.data.truncate(len as usize);
            Ok(())
        }
        fn sync_data(&self) -> io::Result<()> {
            Ok(())
        }
        fn lock(&self, _take: bool) -> io::Result<()> {
            Ok(())
        }
    }

    fn log_on(disk: &Disk, max_kept_bytes: usize) -> EventLog {
        let settings = EventLogSettings { wall_time: false, max_kept_bytes, ..Default::default() };
        EventLog::with_file(Path::new("/data/out/events.jsonl"), Box::new(disk.clone()), false, settings)
    }

    fn numbered(i: u64) -> EventRecord {
        EventRecord { frame: i, ..record(EventLineKind::Update) }
    }

    fn frames_in(text: &str) -> Vec<u64> {
        text.lines().map(|l| serde_json::from_str::<EventRecord>(l).expect(l).frame).collect()
    }

    #[test]
    fn a_line_the_disk_cuts_short_is_taken_back_kept_and_written_in_order_once_there_is_room() {
        let line_len = serde_json::to_vec(&numbered(10)).unwrap().len() + 1;
        // Room for two lines and half of a third.
        let disk = Disk::with_room(line_len * 5 / 2);
        let mut log = log_on(&disk, DEFAULT_MAX_KEPT_BYTES);
        for i in 10..20 {
            let r = log.write(&numbered(i));
            assert_eq!(r.is_ok(), i < 12, "line {i}: {r:?}");
            if let Err(e) = r {
                assert!(e.kept);
                // The line alerts send is the line made, even when it is kept.
                assert_eq!(serde_json::from_slice::<EventRecord>(log.last_line()).unwrap().frame, i);
            }
        }
        assert_eq!(frames_in(&disk.text()), [10, 11], "the cut third line is taken back: {}", disk.text());
        assert_eq!(log.stats().kept, 8);
        // Room comes back: the kept lines go first, in order, then the new one.
        disk.set_room(1 << 20);
        log.write(&numbered(20)).unwrap();
        assert_eq!(frames_in(&disk.text()), (10..=20).collect::<Vec<_>>());
        assert_eq!(log.close(), EventLogStats { lines: 11, errors: 8, kept: 0, lost: 0 });
    }

    #[test]
    fn the_kept_lines_are_bounded_and_the_rest_counted_lost() {
        let line_len = serde_json::to_vec(&numbered(10)).unwrap().len() + 1;
        let disk = Disk::with_room(0);
        let mut log = log_on(&disk, line_len * 3);
        let kept: Vec<bool> = (10..15).map(|i| log.write(&numbered(i)).unwrap_err().kept).collect();
        assert_eq!(kept, [true, true, true, false, false]);
        assert_eq!(log.stats(), EventLogStats { lines: 0, errors: 5, kept: 3, lost: 2 });
        // Nothing is due again at once; after room comes back, a retry writes the kept lines.
        assert!(log.retry_kept_if_due().is_none(), "tried less than a second ago");
        disk.set_room(1 << 20);
        log.last_try = None;
        assert!(matches!(log.retry_kept_if_due(), Some(Ok(()))));
        assert_eq!(frames_in(&disk.text()), [10, 11, 12]);
        assert!(log.retry_kept_if_due().is_none(), "nothing kept");
        // What is kept when the log closes without room is lost.
        disk.set_room(0);
        log.write(&numbered(15)).unwrap_err();
        // Six lines made: three written, three lost.
        assert_eq!(log.close(), EventLogStats { lines: 3, errors: 7, kept: 0, lost: 3 });
    }

    #[test]
    fn another_writers_line_is_never_cut() {
        let line_len = serde_json::to_vec(&numbered(10)).unwrap().len() + 1;
        let disk = Disk::with_room(line_len / 2);
        // Another writer appends a whole line between our length check and our write.
        disk.0.lock().unwrap().intruder = b"{\"other\":1}\n".to_vec();
        let mut log = log_on(&disk, DEFAULT_MAX_KEPT_BYTES);
        assert!(log.write(&numbered(10)).unwrap_err().kept);
        disk.0.lock().unwrap().intruder.clear();
        disk.set_room(1 << 20);
        log.write(&numbered(11)).unwrap();
        let text = disk.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "{\"other\":1}", "{text}");
        // Our cut half line stays (it could not be taken back safely), alone on its line; ours follow whole.
        assert!(serde_json::from_str::<serde_json::Value>(lines[1]).is_err(), "{text}");
        assert_eq!(frames_in(&lines[2..].join("\n")), [10, 11], "{text}");
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
