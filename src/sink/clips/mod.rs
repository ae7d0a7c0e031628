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
//! Here: the settings, the counters' home (`stats`), the jobs and the [`ClipWriter`] that starts the workers;
//! `recorder`: the [`ClipRecorder`] of one source (on its post thread); `worker`: the clip workers, which build,
//! finish and rename each clip's pipeline and then make its evidence ([`super::evidence`]).
//!
//! Threads and locks: see [`crate::source::tap`] for the tap and feed mutexes. A worker owns its pipelines (a map by
//! recording id); a recording's jobs always go to the same worker, so its Finish follows its Start. The event
//! log's mutex is taken alone, for one line.

mod recorder;
mod stats;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Sender, bounded};
use gstreamer as gst;
use tracing::warn;

use super::disk::WriteFailures;
use super::events::{Clips, ClipsRecord, ClipsStatus, EventLog};
pub use super::evidence::{EvidenceSettings, FrameBox};
use crate::source::{Feed, PacketTap};
use crate::track::LifecycleEvent;
pub use recorder::ClipRecorder;
use stats::OpenSlot;
pub use stats::{ClipStats, ClipStatsSnapshot};
use worker::Worker;

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

/// When a stop must be over, shared by the clip workers and whoever begins the stop. Unset while running.
#[derive(Debug, Clone, Default)]
pub struct StopDeadline(Arc<Mutex<Option<Instant>>>);

impl StopDeadline {
    /// Sets the deadline (the first one set stays).
    pub fn set(&self, deadline: Instant) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(deadline);
    }

    /// The deadline, once a stop has begun.
    pub fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
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

/// The end of a clip's error when the disk is full (filesink's `GST_RESOURCE_ERROR_NO_SPACE_LEFT`).
const NO_SPACE: &str = "disk full";

/// Where the finished lines go: the event log (always), and the alerter (when there is one).
#[derive(Clone)]
struct Outputs {
    /// Set when a stop begins: past it a clip still to be finished is recorded as not finished, at once.
    deadline: StopDeadline,
    log: Arc<Mutex<EventLog>>,
    alerter: Option<Arc<crate::sink::alerts::Alerter>>,
    stats: Arc<ClipStats>,
    /// Failed writes of the output directory (a full disk), reported once for the whole run.
    write_failures: Arc<WriteFailures>,
    /// With `[output] keep_rejected = false`: where the clips of verifying events meet their verdicts.
    rejected: Option<Arc<super::rejected::RejectedEvidence>>,
}

impl Outputs {
    /// The stop's deadline, if a stop has begun.
    fn deadline(&self) -> Option<Instant> {
        self.deadline.get()
    }

    /// Writes the final `clips` line of an event, then alerts it (events.jsonl first, the source of truth).
    fn write(&self, short_name: &str, record: &ClipsRecord, snapshot: Option<&[u8]>) {
        match record.clips.status {
            // A removed clip was written: the verifier's rejection removed it, not a failure.
            ClipsStatus::Written | ClipsStatus::Removed => ClipStats::add(&self.stats.written),
            _ => ClipStats::add(&self.stats.failed),
        }
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let result = log.write_clips(record);
        // events.jsonl first (the source of truth), then the alert: the very bytes of the line (also of a line
        // kept while the disk is full: it is written once there is room).
        if let (Some(a), true) = (&self.alerter, result.as_ref().map_or_else(|e| e.kept, |()| true)) {
            a.send(short_name, log.last_line(), snapshot);
        }
        drop(log);
        match result {
            Ok(()) => {
                self.write_failures.succeeded();
            }
            Err(e) => {
                let e = e.error;
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
        Self::start_with(settings, log, alerter, write_failures, None)
    }

    /// [`ClipWriter::start`], and with `rejected` the clips of events the verifier rejects are removed
    /// (`[output] keep_rejected = false`, [`super::rejected`]).
    pub fn start_with(
        settings: ClipSettings,
        log: Arc<Mutex<EventLog>>,
        alerter: Option<Arc<crate::sink::alerts::Alerter>>,
        write_failures: Arc<WriteFailures>,
        rejected: Option<Arc<super::rejected::RejectedEvidence>>,
    ) -> Result<Self, ClipError> {
        gst::init().map_err(|e| ClipError::GstInit(e.to_string()))?;
        let settings = Arc::new(settings);
        let outputs = Outputs {
            deadline: StopDeadline::default(),
            log,
            alerter,
            stats: Arc::new(ClipStats::default()),
            write_failures,
            rejected,
        };
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

    /// The handle that begins a stop: once its deadline is set, a clip whose turn comes after it is recorded as
    /// not finished at once (its `clips` line is `failed` and says so, its `.part` removed), and no clip or
    /// evidence waits past it.
    pub fn stop_deadline(&self) -> StopDeadline {
        self.outputs.deadline.clone()
    }

    /// The counters, live: for reporting what is left while a stop drains.
    pub fn stats_handle(&self) -> Arc<ClipStats> {
        self.outputs.stats.clone()
    }

    /// The settings in use.
    pub fn settings(&self) -> &ClipSettings {
        &self.settings
    }

    /// The recorder (the [`super::events::ClipSink`]) of one source: `tap` is the source's packet tap, `out_dir` the run's
    /// output directory, `queries` the (text, label) of every query. (Stale `.part` files of an earlier run are
    /// removed at the start of the run, by [`crate::sink::run::remove_stale_parts`].)
    pub fn recorder(
        &self,
        tap: Arc<PacketTap>,
        out_dir: &Path,
        short_name: &str,
        display: &str,
        queries: Vec<(String, String)>,
    ) -> ClipRecorder {
        let dir = out_dir.join(short_name);
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
