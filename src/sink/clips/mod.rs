//! Event clips: `<out>/<source>/<event-id>.mp4`, the full frame from the pre-roll to the post-roll, cut from the
//! source's recording ([`crate::sink::recording`]).
//!
//! ```text
//! source pipeline: … ─ parser ─▶ [probe: PacketTap] ─▶ decoder ─ …           (GStreamer streaming thread)
//!                                    └─▶ rec-<source>: the recording, segments on disk (sink::recording)
//! post-<source>: ClipRecorder (the ClipSink of the watch loop): start → pin the recording from the pre-roll;
//!                closed (after the post-roll) → one job in the clip queue
//! clip-<n> (a pool of `workers`, `[output] max_open_clips`): take the oldest job, cut its span out of the
//!                recording into `.<id>.mp4.part` (remux; other codecs: encode to H.264), rename it, make the
//!                evidence (crop clip, snapshots, sidecar), then one `clips` line in events.jsonl.
//! ```
//!
//! - **Never refused:** every event's clip is cut. A job holds only the event's boxes and times; its packets
//!   wait on disk, in the recording, which keeps them (pinned) until the clip is cut. The queue holds
//!   [`ClipSettings::queue_capacity`] jobs; past that the post stage waits for room (a file source slows down, a
//!   live one drops frames before inference), it never drops a clip. A clip fails only for a stated reason: a
//!   full disk, a source without an encoded stream (a raw camera), a stop's time limit, `max_gb` removing what it
//!   needed.
//! - **Bounded:** at most `workers` clips are cut at once, each reading its segments one at a time and
//!   pushing its packets into a muxer that holds a few MiB; so memory, threads and file descriptors stay bounded
//!   however many events there are.
//! - **Span:** from the keyframe at or before `start − pre_roll_s` to the packets decoded up to
//!   `end + post_roll_s` (and the B-frames shown before them): at least the span (cut by the stream's own start
//!   and end) and at most one GOP more. Its timestamps are moved to start near 0.
//! - **Never half-written:** every clip is muxed to `.<event-id>.mp4.part` and renamed when the muxer has
//!   finished. On shutdown the post stage ends every event (`reason: shutdown`), each recording writes what it
//!   has, and [`ClipWriter::finish`] waits for the workers, each clip bounded by the stop's deadline.
//!
//! Here: the settings, the jobs and the [`ClipWriter`] that starts the recordings and the workers; `recorder`:
//! the [`ClipRecorder`] of one source (on its post thread); `worker`: the clip workers.
//!
//! Threads and locks: the job queue is one bounded channel that every worker takes from, oldest first. The
//! recording's mutex is described in [`crate::sink::recording`]. The event log's mutex is taken alone, for one
//! line.

mod recorder;
mod stats;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Sender, bounded};
use gstreamer as gst;
use tracing::warn;

use super::disk::WriteFailures;
use super::events::{Clips, ClipsRecord, ClipsStatus, EventLog};
pub use super::evidence::{EvidenceSettings, FrameBox};
use super::recording::{Recording, RecordingSettings};
use crate::source::PacketTap;
use crate::track::LifecycleEvent;
pub use recorder::ClipRecorder;
pub use stats::{ClipStats, ClipStatsSnapshot};
use worker::Worker;

/// Default [`ClipSettings::workers`].
pub const DEFAULT_WORKERS: usize = 2;
/// Default [`ClipSettings::queue_capacity`]. Each waiting clip holds its event's boxes (tens of KiB) and pins
/// its span of the recording on disk; past this many the post stage waits for a worker (a file slows down, a live
/// source drops frames before inference), so memory and the recording's disk stay flat under a storm (with 4096
/// the 30-minute storm of BENCHMARKS.md grew RSS from 134 to 453 MiB). Two workers cut well over 100 clips a
/// second, so only a file replayed far faster than real time ever fills it.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;
/// Default [`ClipSettings::finish_timeout_ms`].
pub const DEFAULT_FINISH_TIMEOUT_MS: u64 = 60_000;
/// Default `[output] max_open_clips`: the clips cut at once, [`ClipSettings::workers`].
pub const DEFAULT_MAX_OPEN_CLIPS: usize = DEFAULT_WORKERS;
/// The frames of a source remembered for the sidecar's boxes before an event starts, beyond the pre-roll.
const HISTORY_EXTRA_S: f64 = 15.0;
/// At most this many frames are remembered for the sidecar before an event starts.
const HISTORY_MAX_FRAMES: usize = 4096;

/// What the user sets for clips.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipSettings {
    /// Clip worker threads, shared by every source: the clips cut at once (`[output] max_open_clips`). Each
    /// holds one muxer (a few threads, a bus fd, a file) while it cuts. Default [`DEFAULT_WORKERS`].
    pub workers: usize,
    /// Clips waiting for a worker; when full, the post stage waits for room (never drops a clip). Default
    /// [`DEFAULT_QUEUE_CAPACITY`].
    pub queue_capacity: usize,
    /// The recording of each source, from which the clips are cut.
    pub recording: RecordingSettings,
    /// The run number of the output directory ([`crate::sink::run::Run`]): the recording's segments carry it.
    pub run: u64,
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
            recording: RecordingSettings::default(),
            run: 0,
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
const NO_SPACE: &str = crate::sink::recording::cut::NO_SPACE;

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

/// Everything a worker needs to cut an event's clip, make its evidence and write its `clips` line.
struct FinishJob {
    /// The source's recording, or why there is none.
    recording: Result<Arc<crate::sink::recording::Shared>, String>,
    /// The recording's pin on the clip's span, let go once it is cut.
    pin: Option<u64>,
    /// The span, in stream time.
    from_s: f64,
    to_s: f64,
    /// `<out>/<source>`.
    dir: PathBuf,
    /// Relative paths, as in the event's lines.
    planned: Clips,
    record: ClipsRecord,
    short_name: String,
    /// The event's last notification (its `end`, or whatever came last).
    event: LifecycleEvent,
    boxes: Vec<FrameBox>,
}

/// The clip writer: its workers, shared by every source of a run. Make one [`ClipRecorder`] per source with
/// [`ClipWriter::recorder`]; [`ClipWriter::finish`] after the recorders are dropped.
pub struct ClipWriter {
    settings: Arc<ClipSettings>,
    sender: Option<Sender<FinishJob>>,
    threads: Vec<(String, JoinHandle<()>)>,
    outputs: Outputs,
    /// One per source, made by [`ClipWriter::recorder`].
    recordings: Mutex<Vec<Recording>>,
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
        let mut threads = Vec::new();
        let (tx, rx) = bounded::<FinishJob>(settings.queue_capacity.max(1));
        for i in 0..settings.workers.max(1) {
            let worker = Worker { settings: settings.clone(), outputs: outputs.clone() };
            let name = format!("clip-{i}");
            let rx = rx.clone();
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || worker.run(rx))
                .map_err(|error| ClipError::Thread { name: name.clone(), error })?;
            threads.push((name, handle));
        }
        Ok(ClipWriter { settings, sender: Some(tx), threads, outputs, recordings: Mutex::new(Vec::new()) })
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

    /// The recorder (the [`super::events::ClipSink`]) of one source: starts the source's recording, fed by
    /// `tap`, in `<out_dir>/<short_name>/rec`. `queries` are the (text, label) of every query. If the recording
    /// cannot start, every clip of the source fails and says why.
    pub fn recorder(
        &self,
        tap: Arc<PacketTap>,
        out_dir: &Path,
        short_name: &str,
        display: &str,
        queries: Vec<(String, String)>,
    ) -> ClipRecorder {
        let dir = out_dir.join(short_name);
        // The tap's ring keeps the longest pre-roll of the source's queries: the recording keeps as much.
        let pre_roll_s = tap.ring_settings().max_time_s;
        let recording =
            match Recording::start(&tap, &dir, short_name, self.settings.run, pre_roll_s, &self.settings.recording) {
                Ok(r) => {
                    let shared = r.shared();
                    self.recordings.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                    Ok(shared)
                }
                Err(e) => {
                    let source = crate::redact::redact_url(display);
                    warn!(%source, error = %e, "no recording: its events get no clips");
                    Err(e.to_string())
                }
            };
        ClipRecorder {
            recording,
            sender: self.sender.clone(),
            settings: self.settings.clone(),
            outputs: self.outputs.clone(),
            dir,
            short_name: short_name.to_string(),
            display: display.to_string(),
            queries,
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
        // The recordings write what they have first: the last clips need their last packets.
        let recordings = std::mem::take(&mut *self.recordings.lock().unwrap_or_else(|e| e.into_inner()));
        let shared: Vec<_> = recordings.iter().map(Recording::shared).collect();
        for r in recordings {
            r.finish();
        }
        self.sender = None;
        for (name, t) in self.threads.drain(..) {
            if t.join().is_err() {
                warn!(thread = %name, "clip worker panicked");
            }
        }
        // After the workers: the last clips let go of their pins, which lets the ring remove what it keeps no more.
        let mut totals = super::recording::RecordingStats::default();
        for s in shared.iter().map(|s| s.stats()) {
            totals.packets_lost += s.packets_lost;
            totals.segments_written += s.segments_written;
            totals.segments_removed += s.segments_removed;
            totals.pauses += s.pauses;
        }
        ClipStatsSnapshot {
            dropped_packets: totals.packets_lost,
            segments_written: totals.segments_written,
            segments_removed: totals.segments_removed,
            recording_pauses: totals.pauses,
            ..self.outputs.stats.snapshot()
        }
    }
}
