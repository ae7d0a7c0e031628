//! Event clips: `<out>/<source>/<event-id>.mp4`, the full frame from the pre-roll to the post-roll, cut from the
//! source's own encoded packets.
//!
//! ```text
//! source pipeline: … ─ parser ─▶ [probe: PacketTap] ─▶ decoder ─ …           (GStreamer streaming thread)
//!                                    │ pre-roll ring (last pre_roll_s, keyframe aligned, bounded in bytes)
//!                                    └─▶ Feed of each event being recorded ──▶ appsrc of its clip pipeline
//! post-<source>: ClipRecorder (the ClipSink of the watch loop): start → open a Feed, Start job;
//!                closed (after the post-roll) → close the Feed, Finish job
//! clip-<n> workers (bounded job queues): Start: build `appsrc ! h264parse ! mp4mux ! filesink` (H.264/H.265:
//!                remux, no re-encode; other codecs: decode and encode to H.264) and hand it the feed;
//!                Finish: EOS, wait for the muxer (with a deadline), rename `.<id>.mp4.part` → `<id>.mp4`, the
//!                evidence (crop clip, snapshots, sidecar), then one `clips` line in events.jsonl.
//! ```
//!
//! - **The tap** is a buffer probe on the input pad of the video decoder (found by its klass, inside decodebin
//!   too), not a tee with an appsink: the packets are the ones the decoder decodes (frames are decoded once),
//!   nothing is copied (the ring holds references), no template changes, and no leaky queue that could drop a
//!   packet in the middle of a GOP and spoil the clip. The probe takes one mutex for microseconds and never waits
//!   on a clip. A raw camera (V4L2 YUY2) has no decoder and so no packets: its events get `clips.status: failed`
//!   with an error that says so.
//! - **Timestamps:** packets and decoded frames share the pipeline's timeline; stream time (`FrameTime::pts_s`)
//!   is that plus the [`crate::track::StreamClock`] offset, which [`ClipRecorder`] learns from each frame. A clip
//!   starts at the keyframe at or before `start − pre_roll_s` (or the ring's first keyframe), and takes every
//!   packet decoded up to `end + post_roll_s`, so it lasts at least pre + event + post (cut by the stream's own
//!   start and end) and at most one GOP more. Its timestamps are moved to start near 0.
//! - **Never half-written:** every clip is muxed to `.<event-id>.mp4.part` and renamed when the muxer has
//!   finished. On shutdown the post stage ends every event (`reason: shutdown`), the clips are finished at the
//!   last packet received, and [`ClipWriter::finish`] waits for the workers. Stale `.part` files of a crashed run
//!   are removed when a source's recorder starts.
//! - **Never stalls:** the job queues are bounded; when one is full the clip is marked failed at once. A feed
//!   that grows past [`ClipSettings::max_clip_bytes`] (workers or disk too slow) fails its clip.
//!
//! Threads and locks: see [`crate::source::tap`] for the tap and feed mutexes. A worker owns its pipelines (a map by
//! recording id); a recording's jobs always go to the same worker, so its Finish follows its Start. The event
//! log's mutex is taken alone, for one line.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use serde::Serialize;
use tracing::{debug, info, warn};

use super::disk::WriteFailures;
use super::events::{ClipSink, Clips, ClipsRecord, ClipsStatus, EventLog};
pub use super::evidence::{EvidenceSettings, FrameBox};
use crate::gst::bus::{self, WaitError};
use crate::gst::part::{PartError, PartFile, PartName};
use crate::source::{Feed, PacketTap};
use crate::track::{FrameTime, LifecycleEvent, LifecycleKind, TrackOutput};

/// Default [`ClipSettings::workers`].
pub const DEFAULT_WORKERS: usize = 2;
/// Default [`ClipSettings::queue_capacity`].
pub const DEFAULT_QUEUE_CAPACITY: usize = 32;
/// Default [`ClipSettings::max_clip_bytes`]: 256 MiB.
pub const DEFAULT_MAX_CLIP_BYTES: usize = 256 << 20;
/// Default [`ClipSettings::finish_timeout_ms`].
pub const DEFAULT_FINISH_TIMEOUT_MS: u64 = 60_000;
/// Default [`ClipSettings::max_open_clips`].
pub const DEFAULT_MAX_OPEN_CLIPS: usize = 16;
/// The frames of a source remembered for the sidecar's boxes before an event starts, beyond the pre-roll.
const HISTORY_EXTRA_S: f64 = 15.0;
/// At most this many frames are remembered for the sidecar before an event starts.
const HISTORY_MAX_FRAMES: usize = 4096;

/// What the user sets for clips.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipSettings {
    /// Clip worker threads (shared by every source). Default [`DEFAULT_WORKERS`].
    pub workers: usize,
    /// Jobs waiting for each worker; when full, the clip is marked failed (never blocks). Default
    /// [`DEFAULT_QUEUE_CAPACITY`].
    pub queue_capacity: usize,
    /// Clips being recorded at once, over every source: each holds a pipeline (threads, a bus fd, a file) and
    /// its packets from its event's start until its worker has finished it. Past it a new event's clip fails at
    /// once (counted in [`ClipStatsSnapshot::over_cap`]), so memory, threads and fds stay bounded however many
    /// events there are. Default [`DEFAULT_MAX_OPEN_CLIPS`].
    pub max_open_clips: usize,
    /// The bytes a clip may hold in memory (before its worker takes it, or waiting in its appsrc); past it the
    /// clip fails. Default [`DEFAULT_MAX_CLIP_BYTES`].
    pub max_clip_bytes: usize,
    /// Bytes of each source's pre-roll ring. Default [`crate::source::ring::DEFAULT_MAX_BYTES`].
    pub ring_max_bytes: usize,
    /// How long finishing a clip (EOS through the muxer, or the encoder for a transcode) may take. Default
    /// [`DEFAULT_FINISH_TIMEOUT_MS`].
    pub finish_timeout_ms: u64,
    /// The raw-video → H.264 encoder for sources that are not H.264/H.265: a pipeline template's `encoder`
    /// fragment (from a converter to `h264parse`). Default: the generic template's (x264); the watch loop uses
    /// that of the sources' template (NVENC on a Jetson), or the generic one where it cannot be made.
    pub encoder: String,
    /// For the crop clip and the snapshots.
    pub evidence: EvidenceSettings,
    /// Make each written clip's evidence (crop clip, snapshots, sidecar). Default true; when false, those paths
    /// are null and only the full-frame clip is written.
    pub make_evidence: bool,
}

impl Default for ClipSettings {
    fn default() -> Self {
        ClipSettings {
            workers: DEFAULT_WORKERS,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_open_clips: DEFAULT_MAX_OPEN_CLIPS,
            max_clip_bytes: DEFAULT_MAX_CLIP_BYTES,
            ring_max_bytes: crate::source::ring::DEFAULT_MAX_BYTES,
            finish_timeout_ms: DEFAULT_FINISH_TIMEOUT_MS,
            encoder: crate::gst::generic_encoder(crate::gst::EncoderPurpose::Record),
            evidence: EvidenceSettings::default(),
            make_evidence: true,
        }
    }
}

/// Errors of the clip writer.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("could not start clip worker thread {name}: {error}")]
    Thread { name: String, error: std::io::Error },
    #[error("cannot initialise GStreamer for clips: {0}")]
    GstInit(String),
}

/// Counters of the clip writer, shared by its workers and recorders.
#[derive(Debug, Default)]
pub struct ClipStats {
    /// Events whose clip was started.
    pub started: AtomicU64,
    /// Clips written and renamed into place.
    pub written: AtomicU64,
    /// Clips that failed (the `clips` line says why).
    pub failed: AtomicU64,
    /// Jobs refused because a worker's queue was full.
    pub queue_full: AtomicU64,
    /// Clips refused because [`ClipSettings::max_open_clips`] were being recorded.
    pub over_cap: AtomicU64,
    /// Clips being recorded now (each holds an [`OpenSlot`]).
    pub open: AtomicU64,
    /// The most clips recorded at once.
    pub peak_open: AtomicU64,
}

/// The counters at the end of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClipStatsSnapshot {
    /// Events whose clip was started.
    pub started: u64,
    /// Clips written and renamed into place.
    pub written: u64,
    /// Clips that failed (their `clips` line says why).
    pub failed: u64,
    /// Jobs refused because a worker's queue was full.
    pub queue_full: u64,
    /// Clips refused at once because `max_open_clips` clips were being recorded.
    pub over_cap: u64,
    /// The most clips recorded at once (never more than `max_open_clips`).
    pub peak_open: u64,
    /// Packets a clip could not take because it was over its bound (its clip failed), over every source.
    pub dropped_packets: u64,
    /// GOPs the pre-roll rings dropped to stay under their byte bound (a pre-roll shorter than asked).
    pub ring_gops_dropped_bytes: u64,
}

impl ClipStats {
    fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ClipStatsSnapshot {
        ClipStatsSnapshot {
            started: self.started.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            queue_full: self.queue_full.load(Ordering::Relaxed),
            over_cap: self.over_cap.load(Ordering::Relaxed),
            peak_open: self.peak_open.load(Ordering::Relaxed),
            ..ClipStatsSnapshot::default()
        }
    }
}

/// One of the [`ClipSettings::max_open_clips`] places of a clip being recorded: taken when its event starts,
/// given back when dropped (its worker has finished the clip, or the clip failed before it got a pipeline).
#[derive(Debug)]
struct OpenSlot {
    stats: Arc<ClipStats>,
}

impl OpenSlot {
    /// A place, or `None` when `max` clips are open already (counted in `over_cap`). Never waits.
    fn take(stats: &Arc<ClipStats>, max: usize) -> Option<OpenSlot> {
        let max = max.max(1) as u64;
        let taken = stats.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        match taken {
            Ok(before) => {
                stats.peak_open.fetch_max(before + 1, Ordering::Relaxed);
                Some(OpenSlot { stats: stats.clone() })
            }
            Err(_) => {
                ClipStats::add(&stats.over_cap);
                None
            }
        }
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The end of a clip's error when the disk is full (filesink's `GST_RESOURCE_ERROR_NO_SPACE_LEFT`).
const NO_SPACE: &str = "disk full";

/// Where the finished lines go: the event log (always), and the alerter (when there is one).
#[derive(Clone)]
struct Outputs {
    log: Arc<Mutex<EventLog>>,
    alerter: Option<Arc<crate::sink::alerts::Alerter>>,
    stats: Arc<ClipStats>,
    /// Failed writes of the output directory (a full disk), reported once for the whole run.
    write_failures: Arc<WriteFailures>,
}

impl Outputs {
    /// Writes the final `clips` line of an event, then alerts it (events.jsonl first, the source of truth).
    fn write(&self, short_name: &str, record: &ClipsRecord, snapshot: Option<&[u8]>) {
        match record.clips.status {
            ClipsStatus::Written => ClipStats::add(&self.stats.written),
            _ => ClipStats::add(&self.stats.failed),
        }
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        match log.write_clips(record) {
            Ok(()) => {
                // events.jsonl first (the source of truth), then the alert: the very bytes of the line.
                if let Some(a) = &self.alerter {
                    a.send(short_name, log.last_line(), snapshot);
                }
                drop(log);
                self.write_failures.succeeded();
            }
            Err(e) => {
                drop(log);
                match e.io_error() {
                    Some((path, io)) => {
                        self.write_failures.failed(path, io);
                    }
                    None => warn!(event = %record.event_id, error = %e, "clips line not written"),
                }
            }
        }
    }
}

/// A job for a clip worker.
enum Job {
    Start(StartJob),
    Finish(Box<FinishJob>),
}

struct StartJob {
    id: u64,
    feed: Arc<Feed>,
    /// The clip's final path, `<out>/<source>/<event-id>.mp4` (muxed to `.<event-id>.mp4.part` first).
    out: PathBuf,
}

/// Everything the worker needs to finish an event's evidence and write its `clips` line.
struct FinishJob {
    id: u64,
    feed: Arc<Feed>,
    out: PathBuf,
    /// `<out>/<source>`.
    dir: PathBuf,
    /// Relative paths, as in the event's lines.
    planned: Clips,
    record: ClipsRecord,
    short_name: String,
    /// The event's last notification (its `end`, or whatever came last).
    event: LifecycleEvent,
    boxes: Vec<FrameBox>,
    /// Stream time minus pipeline time, in seconds.
    offset_s: f64,
    /// Given back as soon as the clip's pipeline is closed (before the evidence, which works from the file).
    slot: Option<OpenSlot>,
}

/// The clip writer: its workers, shared by every source of a run. Make one [`ClipRecorder`] per source with
/// [`ClipWriter::recorder`]; [`ClipWriter::finish`] after the recorders are dropped.
pub struct ClipWriter {
    settings: Arc<ClipSettings>,
    senders: Vec<Sender<Job>>,
    threads: Vec<(String, JoinHandle<()>)>,
    outputs: Outputs,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for ClipWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipWriter").field("workers", &self.threads.len()).finish()
    }
}

impl ClipWriter {
    /// Starts the workers (`clip-0`, `clip-1`, …).
    pub fn start(
        settings: ClipSettings,
        log: Arc<Mutex<EventLog>>,
        alerter: Option<Arc<crate::sink::alerts::Alerter>>,
        write_failures: Arc<WriteFailures>,
    ) -> Result<Self, ClipError> {
        gst::init().map_err(|e| ClipError::GstInit(e.to_string()))?;
        let settings = Arc::new(settings);
        let outputs = Outputs { log, alerter, stats: Arc::new(ClipStats::default()), write_failures };
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        // A clip in flight has at most one Start and one Finish waiting, and at most `max_open_clips` are in
        // flight: with room for twice that, the Finish of a clip whose pipeline is open is never refused.
        let capacity = settings.queue_capacity.max(2 * settings.max_open_clips).max(1);
        for i in 0..settings.workers.max(1) {
            let (tx, rx) = bounded::<Job>(capacity);
            let worker = Worker { settings: settings.clone(), outputs: outputs.clone(), running: HashMap::new() };
            let name = format!("clip-{i}");
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || worker.run(rx))
                .map_err(|error| ClipError::Thread { name: name.clone(), error })?;
            senders.push(tx);
            threads.push((name, handle));
        }
        Ok(ClipWriter { settings, senders, threads, outputs, next_id: Arc::new(AtomicU64::new(0)) })
    }

    /// The settings in use.
    pub fn settings(&self) -> &ClipSettings {
        &self.settings
    }

    /// The recorder (the [`ClipSink`]) of one source: `tap` is the source's packet tap, `out_dir` the run's
    /// output directory, `queries` the (text, label) of every query. Removes stale `.part` files of an earlier
    /// run from `<out_dir>/<short_name>`.
    pub fn recorder(
        &self,
        tap: Arc<PacketTap>,
        out_dir: &Path,
        short_name: &str,
        display: &str,
        queries: Vec<(String, String)>,
    ) -> ClipRecorder {
        let dir = out_dir.join(short_name);
        remove_stale_parts(&dir);
        ClipRecorder {
            tap,
            senders: self.senders.clone(),
            next_id: self.next_id.clone(),
            settings: self.settings.clone(),
            outputs: self.outputs.clone(),
            dir,
            short_name: short_name.to_string(),
            display: display.to_string(),
            queries,
            offset_s: 0.0,
            history: VecDeque::new(),
            history_s: HISTORY_EXTRA_S,
            active: HashMap::new(),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> ClipStatsSnapshot {
        self.outputs.stats.snapshot()
    }

    /// Waits for the workers to finish every queued clip (each bounded by `finish_timeout_ms`) and ends them.
    /// Call after every [`ClipRecorder`] is dropped (the workers end when the last sender is gone).
    pub fn finish(mut self) -> ClipStatsSnapshot {
        self.senders.clear();
        for (name, t) in self.threads.drain(..) {
            if t.join().is_err() {
                warn!(thread = %name, "clip worker panicked");
            }
        }
        self.outputs.stats.snapshot()
    }
}

/// Evidence is off: only the full-frame clip is planned.
fn without_evidence(c: &mut Clips) {
    c.crop_clip = None;
    c.snapshot = None;
    c.crop_snapshot = None;
    c.sidecar = None;
}

/// Removes `.*.part` files (temporary names of clips and evidence) left in `dir` by a run that crashed.
fn remove_stale_parts(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".part") {
            match std::fs::remove_file(e.path()) {
                Ok(()) => info!(file = %e.path().display(), "removed a partial clip left by an earlier run"),
                Err(error) => warn!(file = %e.path().display(), %error, "could not remove a stale partial clip"),
            }
        }
    }
}

/// One event being recorded.
struct Active {
    id: u64,
    worker: usize,
    feed: Arc<Feed>,
    out: PathBuf,
    query: usize,
    track_id: u64,
    boxes: Vec<FrameBox>,
    last: LifecycleEvent,
    /// Set when the clip failed already (a full queue, too many clips open): every line says so.
    error: Option<String>,
    /// Its place among the open clips; `None` once it failed.
    slot: Option<OpenSlot>,
}

/// The tracks of one recent frame, for the boxes of an event's pre-roll.
struct HistoryFrame {
    at: FrameTime,
    tracks: Vec<TrackOutput>,
}

/// One source's [`ClipSink`]: opens a feed on each event's start and hands the clip to a worker; lives on the
/// source's post thread.
pub struct ClipRecorder {
    tap: Arc<PacketTap>,
    senders: Vec<Sender<Job>>,
    next_id: Arc<AtomicU64>,
    settings: Arc<ClipSettings>,
    outputs: Outputs,
    /// `<out>/<source>`.
    dir: PathBuf,
    short_name: String,
    /// Redacted when written.
    display: String,
    /// (text, label) by query index.
    queries: Vec<(String, String)>,
    /// Stream time minus pipeline time, from the last frame with a PTS.
    offset_s: f64,
    history: VecDeque<HistoryFrame>,
    history_s: f64,
    /// By event id.
    active: HashMap<String, Active>,
}

impl ClipRecorder {
    fn planned(&self, event_id: &str, error: &Option<String>) -> Clips {
        let mut c = Clips::planned(&self.short_name, event_id);
        if !self.settings.make_evidence {
            without_evidence(&mut c);
        }
        if let Some(e) = error {
            c.status = ClipsStatus::Failed;
            c.error = Some(e.clone());
        }
        c
    }

    fn pipeline_ns(&self, stream_s: f64) -> u64 {
        ((stream_s - self.offset_s).max(0.0) * 1e9) as u64
    }

    fn record(&self, ev: &LifecycleEvent, clips: Clips) -> ClipsRecord {
        let (query, label) = self.queries.get(ev.query).cloned().unwrap_or_default();
        ClipsRecord::new(&ev.event_id, &self.display, &query, &label, ev.track_id, clips)
    }

    fn start(&mut self, ev: &LifecycleEvent) -> Clips {
        ClipStats::add(&self.outputs.stats.started);
        let Some(slot) = OpenSlot::take(&self.outputs.stats, self.settings.max_open_clips) else {
            return self.refuse(ev);
        };
        let from_s = ev.start.at.pts_s - ev.pre_roll_s;
        let feed = self.tap.open_feed(self.pipeline_ns(from_s), self.settings.max_clip_bytes);
        feed.release_until(self.pipeline_ns(ev.last.at.pts_s + ev.post_roll_s));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let worker = (id % self.senders.len().max(1) as u64) as usize;
        let out = self.dir.join(format!("{}.mp4", ev.event_id));
        let _ = std::fs::create_dir_all(&self.dir);
        // The boxes of the track since the pre-roll (up to a GOP earlier: the worker keeps those of the clip).
        let boxes = self
            .history
            .iter()
            .filter(|h| h.at.pts_s >= from_s - HISTORY_EXTRA_S)
            .flat_map(|h| {
                h.tracks
                    .iter()
                    .filter(|t| t.track_id == ev.track_id && t.query == ev.query && t.matched_this_frame)
                    .map(|t| FrameBox { frame: h.at.frame, pts_s: h.at.pts_s, bbox: t.bbox, score: t.score })
            })
            .collect();
        let job = Job::Start(StartJob { id, feed: feed.clone(), out: out.clone() });
        let error = self.submit(worker, job).err();
        if let Some(e) = &error {
            feed.fail(e.clone());
            self.tap.close_feed(&feed);
        }
        let clips = self.planned(&ev.event_id, &error);
        let slot = error.is_none().then_some(slot);
        let active = Active {
            id,
            worker,
            feed,
            out,
            query: ev.query,
            track_id: ev.track_id,
            boxes,
            last: ev.clone(),
            error,
            slot,
        };
        self.active.insert(ev.event_id.clone(), active);
        clips
    }

    /// An event past [`ClipSettings::max_open_clips`]: its clip fails at once, and it holds nothing (no feed on
    /// the tap, no pipeline, no boxes) until its `clips` line is written when it closes.
    fn refuse(&mut self, ev: &LifecycleEvent) -> Clips {
        let error = format!(
            "{} clips were being recorded at once (max_open_clips): this event has no clip; raise max_open_clips \
             in [output], or a query's threshold if it matches that often",
            self.settings.max_open_clips.max(1)
        );
        debug!(event = %ev.event_id, %error, "clip refused");
        let clips = self.planned(&ev.event_id, &Some(error.clone()));
        let active = Active {
            id: u64::MAX,
            worker: 0,
            feed: Feed::failed(error.clone()),
            out: PathBuf::new(),
            query: ev.query,
            track_id: ev.track_id,
            boxes: Vec::new(),
            last: ev.clone(),
            error: Some(error),
            slot: None,
        };
        self.active.insert(ev.event_id.clone(), active);
        clips
    }

    fn submit(&self, worker: usize, job: Job) -> Result<(), String> {
        let Some(tx) = self.senders.get(worker) else { return Err("no clip worker".into()) };
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                ClipStats::add(&self.outputs.stats.queue_full);
                Err(format!(
                    "the clip workers' queue is full ({} jobs): clips are made slower than events come",
                    self.settings.queue_capacity
                ))
            }
            Err(TrySendError::Disconnected(_)) => Err("the clip workers have stopped".into()),
        }
    }

    fn closed(&mut self, ev: &LifecycleEvent) {
        let Some(a) = self.active.remove(&ev.event_id) else { return };
        self.tap.close_feed(&a.feed);
        let planned = Clips::planned(&self.short_name, &ev.event_id);
        if let Some(error) = a.error {
            let mut clips = planned;
            clips.status = ClipsStatus::Failed;
            clips.error = Some(error);
            self.outputs.write(&self.short_name, &self.record(&a.last, clips), None);
            return;
        }
        let record = self.record(&a.last, planned.clone());
        let job = FinishJob {
            id: a.id,
            feed: a.feed.clone(),
            out: a.out,
            dir: self.dir.clone(),
            planned,
            record,
            short_name: self.short_name.clone(),
            event: a.last,
            boxes: a.boxes,
            offset_s: self.offset_s,
            slot: a.slot,
        };
        if let Err(error) = self.submit(a.worker, Job::Finish(Box::new(job))) {
            // The worker drops the pipeline and its `.part` when it ends.
            a.feed.fail(error.clone());
            let mut clips = Clips::planned(&self.short_name, &ev.event_id);
            clips.status = ClipsStatus::Failed;
            clips.error = Some(error);
            self.outputs.write(&self.short_name, &self.record(ev, clips), None);
        }
    }
}

impl ClipSink for ClipRecorder {
    fn on_frame(&mut self, at: &FrameTime, pts_ns: Option<u64>, tracks: &[TrackOutput]) {
        if let Some(ns) = pts_ns {
            self.offset_s = at.pts_s - ns as f64 / 1e9;
        }
        // A failed clip needs no boxes.
        for a in self.active.values_mut().filter(|a| a.error.is_none()) {
            if let Some(t) =
                tracks.iter().find(|t| t.track_id == a.track_id && t.query == a.query && t.matched_this_frame)
            {
                a.boxes.push(FrameBox { frame: at.frame, pts_s: at.pts_s, bbox: t.bbox, score: t.score });
            }
        }
        self.history.push_back(HistoryFrame { at: *at, tracks: tracks.to_vec() });
        while self.history.len() > HISTORY_MAX_FRAMES
            || self.history.front().is_some_and(|h| h.at.pts_s < at.pts_s - self.history_s)
        {
            self.history.pop_front();
        }
    }

    fn on_event(&mut self, ev: &LifecycleEvent) -> Clips {
        match ev.kind {
            LifecycleKind::Start => {
                // The pre-roll of the longest query must fit in what is remembered.
                self.history_s = self.history_s.max(ev.pre_roll_s + HISTORY_EXTRA_S);
                self.start(ev)
            }
            LifecycleKind::Update | LifecycleKind::End(_) => {
                let offset_s = self.offset_s;
                let Some(a) = self.active.get_mut(&ev.event_id) else { return Clips::none() };
                a.last = ev.clone();
                let ns = |s: f64| ((s - offset_s).max(0.0) * 1e9) as u64;
                match (ev.kind, ev.end) {
                    (LifecycleKind::End(_), Some(end)) => a.feed.cut_after(ns(end.pts_s + ev.post_roll_s)),
                    _ => a.feed.release_until(ns(ev.last.at.pts_s + ev.post_roll_s)),
                }
                let error = a.error.clone();
                self.planned(&ev.event_id, &error)
            }
            LifecycleKind::Closed => {
                self.closed(ev);
                Clips::none()
            }
        }
    }
}

/// A clip pipeline being fed.
struct Running {
    pipeline: gst::Pipeline,
    /// `.<event-id>.mp4.part`, which the pipeline's filesink writes.
    part: PartFile,
}

impl Running {
    /// Stops the pipeline and removes its `.part`.
    fn abandon(self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        drop(self.part);
    }
}

/// A clip worker thread: owns the pipelines of the recordings routed to it.
struct Worker {
    settings: Arc<ClipSettings>,
    outputs: Outputs,
    running: HashMap<u64, Running>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Job>) {
        while let Ok(job) = rx.recv() {
            match job {
                Job::Start(j) => self.start(j),
                Job::Finish(j) => self.finish(*j),
            }
        }
        // Recordings whose Finish never came (a full queue): nothing under a final name, no `.part` left.
        for (_, r) in self.running.drain() {
            r.abandon();
        }
    }

    /// Builds the clip's pipeline and hands it the feed. Without caps yet (no packet has come), the feed keeps
    /// buffering and Finish tries again.
    fn start(&mut self, job: StartJob) {
        let Some(caps) = job.feed.caps() else { return };
        let part = match PartFile::named(&job.out, PartName::Hidden) {
            Ok(part) => part,
            Err(e) => return job.feed.fail(e.to_string()),
        };
        match build_clip_pipeline(&caps, part.part_path(), &self.settings.encoder) {
            Ok((pipeline, appsrc)) => {
                if job.feed.go_live(appsrc) {
                    self.running.insert(job.id, Running { pipeline, part });
                } else {
                    Running { pipeline, part }.abandon();
                }
            }
            Err(e) => job.feed.fail(e),
        }
    }

    fn finish(&mut self, mut job: FinishJob) {
        if !self.running.contains_key(&job.id) {
            self.start(StartJob { id: job.id, feed: job.feed.clone(), out: job.out.clone() });
        }
        let running = self.running.remove(&job.id);
        let (appsrc, summary) = job.feed.finish();
        let final_path = job.dir.join(format!("{}.mp4", job.record.event_id));
        let result = match (running, appsrc, summary.error.clone()) {
            (Some(r), _, Some(error)) => {
                r.abandon();
                Err(error)
            }
            (_, _, Some(error)) => Err(error),
            (Some(r), Some(appsrc), None) if summary.packets > 0 => {
                self.complete(r, &appsrc, &final_path).map(|()| summary.first_pts_ns)
            }
            (r, _, None) => {
                if let Some(r) = r {
                    r.abandon();
                }
                Err(format!(
                    "no encoded video packets came from {}: its video is raw (not compressed), so there is \
                     nothing to cut a clip from; for a camera, choose its MJPEG or H.264 mode",
                    crate::redact::redact_url(&job.record.source)
                ))
            }
        };
        // The pipeline is closed: its place goes to the next event. The evidence below reads the file.
        drop(job.slot.take());
        let mut clips = job.planned.clone();
        let mut snapshot = None;
        match result {
            Ok(first_pts_ns) => {
                clips.status = ClipsStatus::Written;
                let clip_start_s = first_pts_ns.map_or(0.0, |ns| ns as f64 / 1e9 + job.offset_s);
                debug!(event = %job.record.event_id, clip_start_s, "clip written");
                if self.settings.make_evidence {
                    snapshot = self.evidence(&job, &final_path, clip_start_s, &mut clips);
                    // Its decoder and encoder are gone: what they freed goes back to the system.
                    crate::memory::release_free_heap();
                }
            }
            Err(error) => {
                // A full disk is reported once for the run (with the event log's failures), not once per clip.
                if error.ends_with(NO_SPACE) {
                    let io = std::io::Error::new(std::io::ErrorKind::StorageFull, error.clone());
                    self.outputs.write_failures.failed(&final_path, &io);
                } else {
                    warn!(event = %job.record.event_id, %error, "clip failed");
                }
                clips.status = ClipsStatus::Failed;
                clips.error = Some(error);
            }
        }
        let record = ClipsRecord { clips, ..job.record };
        self.outputs.write(&job.short_name, &record, snapshot.as_deref());
    }

    /// EOS, wait for the muxer, rename into place.
    fn complete(&self, r: Running, appsrc: &gst_app::AppSrc, final_path: &Path) -> Result<(), String> {
        let _ = appsrc.end_of_stream();
        let deadline = Instant::now() + Duration::from_millis(self.settings.finish_timeout_ms);
        let outcome = wait_eos(&r.pipeline, deadline);
        let _ = r.pipeline.set_state(gst::State::Null);
        if let Err(e) = outcome {
            // Dropping the part removes it.
            return Err(format!("writing {} failed: {e}", final_path.display()));
        }
        // On disk before it gets its final name, so that not even a power cut leaves a broken file under it.
        match r.part.finish() {
            Ok(_) => Ok(()),
            Err(e @ PartError::Rename { .. }) => Err(e.to_string()),
            Err(e) => Err(format!("writing {} failed: {e}", final_path.display())),
        }
    }

    /// The crop clip, snapshots and sidecar (crate::sink::evidence), from the complete clip; null paths for what
    /// could not be written, and their errors in `clips.error` (status `failed`). Returns the full snapshot.
    fn evidence(&self, job: &FinishJob, clip: &Path, clip_start_s: f64, clips: &mut Clips) -> Option<Vec<u8>> {
        use super::evidence as ev;
        let s = &self.settings.evidence;
        let id = &job.record.event_id;
        // The boxes of the frames in the clip (the history reaches back further than its keyframe).
        let boxes: Vec<FrameBox> = job.boxes.iter().filter(|b| b.pts_s >= clip_start_s - 1e-6).copied().collect();
        let mut sidecar =
            ev::Sidecar::new(&job.event, &job.record.source, &job.record.query, &job.record.label, clip_start_s, boxes);
        let mut errors = Vec::new();
        match ev::write_crop_clip(clip, clip_start_s, &sidecar.frames, &job.dir.join(format!("{id}-crop.mp4")), s) {
            Ok(region) => sidecar.crop = Some(region),
            Err(e) => {
                errors.push(e.to_string());
                clips.crop_clip = None;
                sidecar.files.crop_clip = None;
            }
        }
        let peak = &job.event.peak;
        let peak = FrameBox { frame: peak.at.frame, pts_s: peak.at.pts_s, bbox: peak.bbox, score: peak.score };
        let full_out = job.dir.join(format!("{id}.jpg"));
        let crop_out = job.dir.join(format!("{id}-crop.jpg"));
        let snapshot = match ev::write_snapshots(clip, clip_start_s, &peak, &job.record.label, &full_out, &crop_out, s)
        {
            Ok(jpeg) => Some(jpeg),
            Err(e) => {
                errors.push(e.to_string());
                // One of the two may exist: name only what does.
                if !full_out.exists() {
                    clips.snapshot = None;
                    sidecar.files.snapshot = None;
                }
                if !crop_out.exists() {
                    clips.crop_snapshot = None;
                    sidecar.files.crop_snapshot = None;
                }
                None
            }
        };
        if let Err(e) = ev::write_sidecar(&job.dir.join(format!("{id}.json")), &sidecar) {
            errors.push(e.to_string());
            clips.sidecar = None;
        }
        if !errors.is_empty() {
            warn!(event = %id, errors = %errors.join("; "), "evidence incomplete");
            clips.status = ClipsStatus::Failed;
            clips.error = Some(errors.join("; "));
        }
        snapshot
    }
}

/// `appsrc ! h264parse|h265parse ! mp4mux ! filesink` for H.264/H.265 (a remux); for any other codec
/// `appsrc ! decodebin ! <encoder> ! mp4mux ! filesink` (a transcode; the encoder fragment ends in h264parse).
/// Playing.
fn build_clip_pipeline(
    caps: &gst::Caps,
    tmp: &Path,
    encoder: &str,
) -> Result<(gst::Pipeline, gst_app::AppSrc), String> {
    let codec = caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
    // Packets the source's parser has already framed as mp4mux takes them go straight in: a second parser would
    // re-derive their timestamps, and GstBaseParse leaves without a PTS a buffer whose PTS repeats the one before
    // it (files with broken timestamps have such runs): mp4mux then fails the whole clip ("Buffer has no PTS").
    let ready_for_mp4 = caps.structure(0).is_some_and(|s| {
        matches!(s.get::<&str>("stream-format"), Ok("avc" | "avc3" | "hvc1" | "hev1"))
            && s.get::<&str>("alignment") == Ok("au")
    });
    let middle = match codec.as_str() {
        // (The caps filter makes mp4mux give a video pad.)
        "video/x-h264" | "video/x-h265" if ready_for_mp4 => codec.clone(),
        "video/x-h264" => "h264parse".to_string(),
        "video/x-h265" => "h265parse".to_string(),
        _ => format!("decodebin ! {encoder}"),
    };
    let desc = format!(
        "appsrc name=src format=time is-live=false block=false max-bytes=0 ! {middle} ! mp4mux ! filesink name=sink"
    );
    let pipeline = gst::parse::launch(&desc)
        .map_err(|e| format!("clip pipeline for {codec} does not build: {e}; check the encoder `{encoder}`"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "clip pipeline is not a pipeline".to_string())?;
    let appsrc = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .ok_or_else(|| "clip pipeline has no appsrc".to_string())?;
    appsrc.set_caps(Some(caps));
    let sink = pipeline.by_name("sink").ok_or_else(|| "clip pipeline has no filesink".to_string())?;
    sink.set_property("location", tmp.to_string_lossy().as_ref());
    if pipeline.set_state(gst::State::Playing).is_err() {
        let _ = pipeline.set_state(gst::State::Null);
        return Err(format!("clip pipeline for {codec} could not start writing {}", tmp.display()));
    }
    Ok((pipeline, appsrc))
}

/// Waits for EOS (or an error) on the pipeline's bus until `deadline` ([`bus::wait_eos`]). Never spins: a wait
/// that returns nothing well before the deadline (a bus without a poll, GStreamer's state when the process is out
/// of file descriptors, or a flushing bus) fails the clip at once.
fn wait_eos(pipeline: &gst::Pipeline, deadline: Instant) -> Result<(), String> {
    bus::wait_eos(pipeline, deadline).map_err(wait_error)
}

/// [`wait_eos`] with `pop(left)`: the bus's next EOS or error within `left` (the tests' seam).
#[cfg(test)]
fn wait_eos_with(deadline: Instant, pop: impl FnMut(Duration) -> Option<gst::Message>) -> Result<(), String> {
    bus::wait_for_with(deadline, pop).map(drop).map_err(wait_error)
}

/// A clip's error for a wait on its pipeline's bus that did not see EOS.
fn wait_error(e: WaitError) -> String {
    match e {
        WaitError::NoBus => "the clip pipeline has no bus".into(),
        WaitError::Timeout => "the muxer did not finish in time".into(),
        WaitError::Broken => {
            "could not wait on the clip pipeline's bus (is the process out of file descriptors?)".into()
        }
        WaitError::Error(m) => {
            let from = m.src().map(|s| s.name().to_string()).unwrap_or_default();
            let gst::MessageView::Error(e) = m.view() else { return format!("an error ({from})") };
            if e.error().matches(gst::ResourceError::NoSpaceLeft) {
                return format!("{} ({from}): {NO_SPACE}", e.error());
            }
            format!("{} ({from})", e.error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geom::PixelBox;
    use crate::sink::EventLogSettings;
    use crate::track::{EndReason, Sample};

    fn event(kind: LifecycleKind) -> LifecycleEvent {
        let at = |frame: u64| FrameTime { frame, pts_s: frame as f64 / 25.0, wall: None };
        let sample = Sample { at: at(50), bbox: PixelBox { x0: 1.0, y0: 2.0, x1: 30.0, y1: 40.0 }, score: 0.5 };
        LifecycleEvent {
            kind,
            event_id: "cam-0-3-50".into(),
            query: 0,
            track_id: 3,
            at: at(60),
            last: sample,
            start: sample,
            end: matches!(kind, LifecycleKind::End(_) | LifecycleKind::Closed).then(|| at(55)),
            peak: sample,
            pre_roll_s: 1.0,
            post_roll_s: 1.0,
        }
    }

    /// A recorder whose one worker queue (capacity 1) is already full and never drained.
    fn recorder_with_a_full_queue(out: &Path) -> (ClipRecorder, Receiver<Job>) {
        let (recorder, rx) = recorder_with(out, ClipSettings { queue_capacity: 1, ..ClipSettings::default() });
        let blocker = recorder.tap.open_feed(0, 1 << 20);
        recorder.senders[0].try_send(Job::Start(StartJob { id: 99, feed: blocker, out: out.join("x") })).unwrap();
        (recorder, rx)
    }

    /// A recorder with one worker queue of `settings.queue_capacity` that no worker drains (the test does).
    fn recorder_with(out: &Path, settings: ClipSettings) -> (ClipRecorder, Receiver<Job>) {
        gst::init().unwrap();
        let log = Arc::new(Mutex::new(
            EventLog::open(out, EventLogSettings { wall_time: false, ..Default::default() }).unwrap(),
        ));
        let (tx, rx) = bounded::<Job>(settings.queue_capacity);
        let tap = PacketTap::new(crate::source::RingSettings::default());
        let settings = Arc::new(settings);
        let outputs = Outputs {
            log,
            alerter: None,
            stats: Arc::new(ClipStats::default()),
            write_failures: Arc::new(WriteFailures::new(out)),
        };
        let recorder = ClipRecorder {
            tap,
            senders: vec![tx],
            next_id: Arc::new(AtomicU64::new(0)),
            settings,
            outputs,
            dir: out.join("cam"),
            short_name: "cam".into(),
            display: "rtsp://u:pw@cam/live".into(),
            queries: vec![("a person".into(), "person".into())],
            offset_s: 0.0,
            history: VecDeque::new(),
            history_s: HISTORY_EXTRA_S,
            active: HashMap::new(),
        };
        (recorder, rx)
    }

    #[test]
    fn a_full_queue_fails_the_clip_at_once_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, _rx) = recorder_with_a_full_queue(dir.path());
        let started = Instant::now();
        let clips = r.on_event(&event(LifecycleKind::Start));
        assert_eq!(clips.status, ClipsStatus::Failed);
        assert!(clips.error.as_deref().unwrap().contains("queue is full"), "{clips:?}");
        assert_eq!(r.on_event(&event(LifecycleKind::End(EndReason::Lost))).status, ClipsStatus::Failed);
        r.on_event(&event(LifecycleKind::Closed));
        assert!(started.elapsed() < Duration::from_secs(1), "never waits for the workers");
        assert_eq!(r.outputs.stats.snapshot().queue_full, 1);
        let text = std::fs::read_to_string(dir.path().join(crate::sink::EVENTS_FILE_NAME)).unwrap();
        let line: ClipsRecord = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line.clips.status, ClipsStatus::Failed);
        assert_eq!((line.event_id.as_str(), line.source.as_str()), ("cam-0-3-50", "rtsp://***@cam/live"));
        assert_eq!(line.clips.clip.as_deref(), Some("cam/cam-0-3-50.mp4"));
    }

    fn event_of_track(kind: LifecycleKind, track_id: u64) -> LifecycleEvent {
        LifecycleEvent { event_id: format!("cam-0-{track_id}-50"), track_id, ..event(kind) }
    }

    #[test]
    fn past_max_open_clips_a_clip_fails_at_once_and_its_place_comes_back_when_a_clip_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        let settings = ClipSettings { queue_capacity: 16, max_open_clips: 2, ..ClipSettings::default() };
        let (mut r, rx) = recorder_with(dir.path(), settings);
        let started = Instant::now();
        for track in 0..2 {
            assert_eq!(r.on_event(&event_of_track(LifecycleKind::Start, track)).status, ClipsStatus::Pending);
        }
        // The third event at once is over the bound: failed at once, with the reason, and nothing held for it.
        let third = r.on_event(&event_of_track(LifecycleKind::Start, 2));
        assert_eq!(third.status, ClipsStatus::Failed);
        let reason = third.error.unwrap();
        assert!(reason.contains("2 clips were being recorded at once (max_open_clips)"), "{reason}");
        assert!(!reason.contains('\n'));
        assert_eq!(r.tap.open_feeds(), 2, "a refused clip takes no packets");
        assert!(r.on_event(&event_of_track(LifecycleKind::Update, 2)).status == ClipsStatus::Failed);
        let s = r.outputs.stats.snapshot();
        assert_eq!((s.started, s.over_cap, s.peak_open), (3, 1, 2));
        assert!(rx.try_recv().is_ok_and(|j| matches!(j, Job::Start(_))));
        assert!(rx.try_recv().is_ok_and(|j| matches!(j, Job::Start(_))));
        assert!(rx.is_empty(), "the refused clip sent no job");
        // Track 0 closes: its place is held by its Finish job until the worker is done with it.
        r.on_event(&event_of_track(LifecycleKind::Closed, 0));
        let finish = rx.try_recv().unwrap();
        assert_eq!(r.on_event(&event_of_track(LifecycleKind::Start, 3)).status, ClipsStatus::Failed);
        drop(finish);
        assert_eq!(r.on_event(&event_of_track(LifecycleKind::Start, 4)).status, ClipsStatus::Pending);
        // The refused event's line is written when it closes, and says why.
        r.on_event(&event_of_track(LifecycleKind::Closed, 2));
        let text = std::fs::read_to_string(dir.path().join(crate::sink::EVENTS_FILE_NAME)).unwrap();
        let line: ClipsRecord = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!((line.event_id.as_str(), line.clips.status), ("cam-0-2-50", ClipsStatus::Failed));
        assert!(line.clips.error.unwrap().contains("max_open_clips"));
        let s = r.outputs.stats.snapshot();
        assert_eq!((s.over_cap, s.peak_open, r.outputs.stats.open.load(Ordering::Relaxed)), (2, 2, 2));
        assert!(started.elapsed() < Duration::from_secs(2), "never waits");
    }

    #[test]
    fn wait_eos_fails_at_once_on_a_bus_it_cannot_wait_on() {
        gst::init().unwrap();
        // A bus without a poll returns nothing at once (after a GStreamer-CRITICAL): one try, not a loop.
        let mut tries = 0;
        let started = Instant::now();
        let error = wait_eos_with(Instant::now() + Duration::from_secs(10), |_| {
            tries += 1;
            None
        })
        .unwrap_err();
        assert_eq!(tries, 1);
        assert!(started.elapsed() < Duration::from_secs(1), "returned after {:?}", started.elapsed());
        assert!(error.contains("could not wait on the clip pipeline's bus"), "{error}");
        // A real bus that just has nothing waits until the deadline, and says the muxer was too slow.
        let quiet = gst::parse::launch("fakesrc ! fakesink").unwrap().downcast::<gst::Pipeline>().unwrap();
        let started = Instant::now();
        let error = wait_eos(&quiet, Instant::now() + Duration::from_millis(200)).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(180), "{:?}", started.elapsed());
        assert!(error.contains("did not finish in time"), "{error}");
    }

    #[test]
    fn stale_parts_are_removed_and_whole_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".a.mp4.part"), b"x").unwrap();
        std::fs::write(dir.path().join("a.mp4"), b"x").unwrap();
        remove_stale_parts(dir.path());
        assert!(!dir.path().join(".a.mp4.part").exists() && dir.path().join("a.mp4").exists());
    }
}
