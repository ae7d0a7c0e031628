//! `watch`: standing queries on every frame of several sources, with tracking, events and annotated video.
//!
//! Threads and channels (every channel bounded):
//! ```text
//! source-<name> (one per source) ── FrameQueue (live: drop oldest, cap 2 | file: block, cap 4) ──┐
//!                                                                                               ▼
//!                         infer: one Detector shared by every source; takes one frame per source per round
//!                                (fair: a fast file cannot starve a camera) and runs them as one batch
//!                                                                                               │
//!                             per source: crossbeam bounded(POST_QUEUE), blocking ◄─────────────┘
//!                                                                                               ▼
//! post-<name> (one per source): tracker (a box on every frame), event engine, events.jsonl, annotated.mp4
//!                               │ ClipRecorder: on start a feed of the source's encoded packets (pre-roll
//!                               ▼ ring), after the post-roll a Finish job (bounded queues, never blocks)
//! clip-<n> (shared): remux/transcode each event's clip, rename it into place, its evidence, its `clips` line
//! ```
//! The post stage feeds the tracker's outputs to the event engine ([`crate::track::lifecycle`]), in stream time:
//! the frame's PTS, or its index / 25 for a frame without one. The engine, not the tracker, decides when an event
//! starts and ends; each of its notifications becomes a line of `events.jsonl`.
//! Live sources never fall behind: their queue drops the oldest frame, and the counters show it.
//! Files block at every step (backpressure), so every frame is processed, in order, and the same file and model
//! give the same output.
//!
//! Shutdown: the first request drains (sources stop, queued frames are finished, the video is closed and
//! renamed into place, every open event gets its `end` line with `reason: shutdown` and its clip is finished at
//! the last packet received); the caller exits at once on the second. When a file simply ends, open events end with `reason: eos`.

pub mod stats;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, bounded};
use ndarray::{Array4, Axis};
use serde::Serialize;
use tracing::{info, warn};

use crate::config::StandingQuery;
use crate::draw::{Canvas, annotate_detections, draw_banner, draw_timestamp};
use crate::geom::{Detection, Transform};
use crate::gst::{self, EncoderPurpose, PipelineChoice};
use crate::infer::postprocess::{Selection, select};
use crate::infer::preprocess::{self, Family};
use crate::infer::{Detector, QuerySet};
use crate::picture::Picture;
use crate::shutdown::ShutdownToken;
use crate::sink::clips::{ClipSettings, ClipStatsSnapshot, ClipWriter};
use crate::sink::disk::WriteFailures;
use crate::sink::events::{ClipSink, Clips};
use crate::sink::{EventLog, EventLogSettings, EventRecord, VideoSettings, VideoWriter, format_rfc3339_utc};
use crate::source::{
    self, Frame, FrameQueue, FrameSettings, Notify, ReconnectSettings, SourceHandle, SourceSpec, SourceStatsSnapshot,
};
use crate::source::{PacketTap, RingSettings};
use crate::track::lifecycle::FALLBACK_FPS;
use crate::track::{
    EndReason, EventLifecycle, EventSettings, EventSink, FrameTime, LifecycleEvent, StreamClock, TrackOutput, Tracker,
    TrackerSettings,
};
use stats::{LatencyHistogram, LatencySummary};

/// Frames in flight between the inference thread and one source's post thread.
const POST_QUEUE: usize = 4;
/// How long the inference thread waits for a frame before looking at shutdown again.
const POLL: Duration = Duration::from_millis(100);
/// Seconds the pre-roll ring keeps beyond the longest pre-roll: decoding runs ahead of the post stage (by the
/// queues between them), and an event's start is its earliest match in the k-of-n window, some frames before it
/// is decided.
const RING_LAG_S: f64 = 3.0;
/// Text drawn on every frame made with a random-weight test model.
pub const TEST_MODEL_BANNER: &str = "test model: boxes are not meaningful";

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("no sources: give files, rtsp:// or http(s):// URLs, /dev/videoN or csi://N")]
    NoSources,
    #[error("no queries: give at least one with -q \"...\" or a [[query]] in the config")]
    NoQueries,
    #[error("query {query:?} applies to source {source_name:?}, which is not one of the sources ({known})")]
    QueryWithoutSource { query: String, source_name: String, known: String },
    #[error(transparent)]
    Infer(#[from] crate::infer::InferError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Alert(#[from] crate::sink::alerts::AlertError),
    #[error(transparent)]
    Retention(#[from] crate::sink::retention::RetentionError),
    #[error(transparent)]
    Clip(#[from] crate::sink::clips::ClipError),
    #[error("could not start thread {name}: {error}")]
    Thread { name: String, error: std::io::Error },
    #[error("every source failed to start; the first: {0}")]
    AllSourcesFailed(String),
}

/// What `watch` does, beyond the sources and queries.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Output directory: `events.jsonl`, `summary.json`, and one directory per source. Default "out".
    pub out_dir: PathBuf,
    /// Write `<out>/<source>/annotated.mp4`. Default false.
    pub annotate: bool,
    /// Infer every Nth frame (the tracker carries boxes in between). Default 1.
    pub every: u32,
    /// Instead of `every`: at most this many inferences per second of stream time. Default: off.
    pub fps: Option<f64>,
    /// Stop (drain) after this long. Default: run until the files end or Ctrl-C.
    pub max_duration: Option<Duration>,
    /// Put the wall-clock time in each event. Default true; off for byte-identical golden tests.
    pub wall_time: bool,
    /// Draw [`TEST_MODEL_BANNER`] on every annotated frame.
    pub test_model: bool,
    pub tracker: TrackerSettings,
    pub reconnect: ReconnectSettings,
    pub pipeline: PipelineChoice,
    /// Draw a progress bar for files on stderr (when it is a terminal). Default true.
    pub progress: bool,
    /// Source names as the config gives them, by position; `None` keeps the derived name.
    pub source_names: Vec<Option<String>>,
    /// Decode, scale and track but never run the model: measures the pipeline alone (`make bench-watch`).
    pub decode_only: bool,
    /// Republish each source's annotated video at `rtsp://ADDRESS:PORT/<source>`. Default: off.
    pub serve_rtsp: Option<(String, u16)>,
    /// MQTT and webhook alerts for every event line (after it is in events.jsonl). Default: off.
    pub alerts: Option<crate::sink::alerts::AlertSettings>,
    /// Deleting the oldest clips and snapshots of `out_dir` on a `retention` thread. Default: off.
    pub retention: Option<crate::sink::retention::RetentionSettings>,
    /// Each event's clip (`<out>/<source>/<event-id>.mp4`, pre-roll to post-roll) and evidence. Default: off
    /// here; the `watch` command turns it on unless `--no-clips`.
    pub clips: Option<ClipSettings>,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            out_dir: PathBuf::from("out"),
            annotate: false,
            every: 1,
            fps: None,
            max_duration: None,
            wall_time: true,
            test_model: false,
            tracker: TrackerSettings::default(),
            reconnect: ReconnectSettings::default(),
            pipeline: PipelineChoice::Auto,
            progress: true,
            source_names: Vec::new(),
            decode_only: false,
            serve_rtsp: None,
            alerts: None,
            retention: None,
            clips: None,
        }
    }
}

/// Per-source figures at the end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct SourceSummary {
    pub source: String,
    pub name: String,
    /// The element that decoded the video (`avdec_h264`, `nvv4l2decoder` when the Jetson's hardware decodes,
    /// `none` for raw video); `None` if no frame came.
    pub decoder: Option<String>,
    pub frames_decoded: u64,
    pub frames_processed: u64,
    pub frames_inferred: u64,
    pub frames_dropped: u64,
    pub reconnects: u64,
    pub events: u64,
    /// Age of a frame when inference started on it (decode → inference): bounded for live sources.
    pub frame_age: LatencySummary,
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotated: Option<PathBuf>,
    /// The element that encoded `annotated` (`x264enc`, `nvv4l2h264enc` when the Jetson's NVENC does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder: Option<String>,
}

/// The end-of-run report, also written to `<out>/summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub sources: Vec<SourceSummary>,
    /// Time of one inference batch (preprocess + model + class head + selection).
    pub inference: LatencySummary,
    pub batches: u64,
    pub events: u64,
    /// Clips started, written and failed (when clips are on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clips: Option<ClipStatsSnapshot>,
    pub wall_seconds: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "summary ({:.1} s):", self.wall_seconds)?;
        for s in &self.sources {
            writeln!(
                f,
                "  {}: decoder {}, decoded {}, processed {}, inferred {}, dropped {}, reconnects {}, events {}, frame age p50 {:.0} ms p95 {:.0} ms{}{}",
                s.source,
                s.decoder.as_deref().unwrap_or("unknown (no frame)"),
                s.frames_decoded,
                s.frames_processed,
                s.frames_inferred,
                s.frames_dropped,
                s.reconnects,
                s.events,
                s.frame_age.p50_ms,
                s.frame_age.p95_ms,
                s.encoder.as_ref().map(|e| format!(", annotated video encoded by {e}")).unwrap_or_default(),
                s.error.as_ref().map(|e| format!(" (error: {e})")).unwrap_or_default()
            )?;
        }
        writeln!(
            f,
            "  inference: {} batches, p50 {:.1} ms, p95 {:.1} ms; events {}",
            self.batches, self.inference.p50_ms, self.inference.p95_ms, self.events
        )?;
        if let Some(c) = &self.clips {
            writeln!(
                f,
                "  clips: {} written, {} failed ({} over max_open_clips, {} at most at once)",
                c.written, c.failed, c.over_cap, c.peak_open
            )?;
        }
        Ok(())
    }
}

/// One frame on its way from the inference thread to its post thread.
struct Processed {
    frame: Frame,
    /// `Some` on inference frames (possibly empty), `None` on frames the tracker carries.
    detections: Option<Vec<Detection>>,
}

/// Live counters a progress bar can read while the run goes on.
#[derive(Debug, Default)]
pub struct Progress {
    pub frames_processed: std::sync::atomic::AtomicU64,
    pub events: std::sync::atomic::AtomicU64,
    /// Rounds of the inference loop, including rounds without frames: the systemd watchdog is fed while it moves,
    /// so cameras that are down do not cause restarts, but a stuck inference does.
    pub infer_rounds: std::sync::atomic::AtomicU64,
}

/// Runs `watch` until every file has ended, `max_duration` passed, or a stop was requested on `shutdown`.
///
/// A source that fails to start is reported and left out; the others run.
pub fn run(
    mut detector: Detector,
    queries: Vec<StandingQuery>,
    sources: Vec<SourceSpec>,
    settings: WatchSettings,
    shutdown: ShutdownToken,
    progress: Arc<Progress>,
) -> Result<Summary, WatchError> {
    if sources.is_empty() {
        return Err(WatchError::NoSources);
    }
    if queries.is_empty() {
        return Err(WatchError::NoQueries);
    }
    let mut specs = sources;
    for (spec, name) in specs.iter_mut().zip(&settings.source_names) {
        if let Some(name) = name {
            spec.short_name = name.clone();
        }
    }
    source::dedupe_short_names(&mut specs);
    check_query_sources(&queries, &specs)?;

    let started = Instant::now();
    let texts: Vec<String> = queries.iter().map(|q| q.text.clone()).collect();
    let query_set = detector.encode_queries(&texts)?;
    detector.warm_up(&query_set)?;

    let family = detector.model.family;
    let size = detector.input_size();
    let frame_settings = FrameSettings {
        model_size: (size, size),
        keep_aspect_longest: (family == Family::Owlv2).then_some(size),
        full_frames: settings.annotate || settings.serve_rtsp.is_some(),
        every: settings.every,
        fps: settings.fps,
        ..FrameSettings::default()
    };

    std::fs::create_dir_all(&settings.out_dir)
        .map_err(|error| crate::sink::SinkError::CreateDir { path: settings.out_dir.clone(), error })?;
    let event_log = Arc::new(Mutex::new(EventLog::open(
        &settings.out_dir,
        EventLogSettings { wall_time: settings.wall_time, ..EventLogSettings::default() },
    )?));
    // A full disk is reported once for the whole run, whichever writer meets it first.
    let write_failures = Arc::new(WriteFailures::new(&settings.out_dir));

    // Sources.
    let notify = Notify::new();
    let mut handles: Vec<SourceHandle> = Vec::new();
    let mut taps: Vec<Option<Arc<PacketTap>>> = Vec::new();
    let mut failed: Vec<SourceSummary> = Vec::new();
    for spec in specs {
        // The ring keeps the longest pre-roll of the queries that apply to the source.
        let tap = settings.clips.as_ref().map(|c| {
            let pre_roll_s =
                queries.iter().filter(|q| q.applies_to(&spec.short_name)).map(|q| q.pre_roll_s).fold(0.0f64, f64::max);
            PacketTap::new(RingSettings { max_time_s: pre_roll_s + RING_LAG_S, max_bytes: c.ring_max_bytes })
        });
        let options = source::SpawnOptions {
            pipeline: settings.pipeline.clone(),
            notify: Some(notify.clone()),
            packet_tap: tap.clone(),
        };
        match source::spawn_with(spec.clone(), &frame_settings, &settings.reconnect, shutdown.clone(), options) {
            Ok(h) => {
                handles.push(h);
                taps.push(tap);
            }
            Err(e) => {
                warn!(source = %spec.display, error = %e, "source not started");
                failed.push(SourceSummary {
                    source: spec.display.clone(),
                    name: spec.short_name.clone(),
                    decoder: None,
                    frames_decoded: 0,
                    frames_processed: 0,
                    frames_inferred: 0,
                    frames_dropped: 0,
                    reconnects: 0,
                    events: 0,
                    frame_age: LatencySummary::default(),
                    error: Some(e.to_string()),
                    annotated: None,
                    encoder: None,
                });
            }
        }
    }
    if handles.is_empty() {
        return Err(WatchError::AllSourcesFailed(failed.first().and_then(|f| f.error.clone()).unwrap_or_default()));
    }

    // The encoders come from the same template as the sources' decoders (NVENC on a Jetson), with the generic
    // software encoder where the template's cannot be made here.
    let encoder_for = |purpose: EncoderPurpose| match gst::select(&settings.pipeline, &gst::GstRegistry) {
        Ok(template) => gst::usable_encoder(&template, purpose),
        Err(_) => gst::generic_encoder(purpose),
    };
    let record_encoder = settings.annotate.then(|| encoder_for(EncoderPurpose::Record));
    let rtsp = match &settings.serve_rtsp {
        Some((address, port)) => Some(Arc::new(crate::sink::rtsp::RtspPublisher::start_with_encoder(
            address,
            *port,
            &encoder_for(EncoderPurpose::Live),
        )?)),
        None => None,
    };

    let alerter = match &settings.alerts {
        Some(a) => {
            let alerter = crate::sink::alerts::Alerter::start(a)?;
            // A second Ctrl-C exits without waiting for the destinations: what they have not confirmed goes to
            // the spool first.
            let keep = alerter.keeper();
            shutdown.on_abort(move || {
                let kept = keep();
                if kept > 0 {
                    warn!("exiting: {kept} alerts not yet delivered were written to the spool for the next start");
                }
            });
            Some(Arc::new(alerter))
        }
        None => None,
    };
    let retention = match &settings.retention {
        Some(r) => {
            let mut r = r.clone();
            if let Some(a) = &settings.alerts {
                r.protect.push(a.spool.dir.clone());
            }
            Some(crate::sink::retention::Retention::spawn(r)?)
        }
        None => None,
    };

    let clip_writer = match &settings.clips {
        Some(c) => {
            let mut c = c.clone();
            c.encoder = encoder_for(EncoderPurpose::Record);
            c.evidence.encoder = c.encoder.clone();
            Some(ClipWriter::start(c, event_log.clone(), alerter.clone(), write_failures.clone())?)
        }
        None => None,
    };

    // Post stages, one per source.
    let mut post_threads: Vec<JoinHandle<PostStats>> = Vec::new();
    let mut post_senders: Vec<Sender<Processed>> = Vec::new();
    for (h, tap) in handles.iter().zip(&taps) {
        let clip_sink: Option<Box<dyn ClipSink + Send>> = match (&clip_writer, tap) {
            (Some(w), Some(tap)) => Some(Box::new(w.recorder(
                tap.clone(),
                &settings.out_dir,
                &h.spec.short_name,
                &h.spec.display,
                queries.iter().map(|q| (q.text.clone(), q.label.clone())).collect(),
            ))),
            _ => None,
        };
        let (tx, rx) = bounded::<Processed>(POST_QUEUE);
        let video_fps = h.spec.path().and_then(source::probe_media).and_then(|m| m.framerate);
        let stage = PostStage {
            spec: h.spec.clone(),
            rx,
            tracker: Tracker::new(tracker_settings_for_events(&settings.tracker, &queries, video_fps)),
            event_log: event_log.clone(),
            event_id_prefix: event_id_prefix(&h.spec, SystemTime::now()),
            clip_sink,
            queries: queries.clone(),
            settings: settings.clone(),
            video_fps,
            progress: progress.clone(),
            shutdown: shutdown.clone(),
            started,
            rtsp: rtsp.clone(),
            alerter: alerter.clone(),
            record_encoder: record_encoder.clone(),
            write_failures: write_failures.clone(),
        };
        let name = format!("post-{}", h.spec.short_name);
        let t = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || stage.run())
            .map_err(|error| WatchError::Thread { name, error })?;
        post_threads.push(t);
        post_senders.push(tx);
    }

    // Inference on this thread's child; the caller's thread only supervises.
    let queues: Vec<FrameQueue> = handles.iter().map(|h| h.queue.clone()).collect();
    let infer = InferStage {
        detector,
        query_set,
        applies: handles.iter().map(|h| queries.iter().map(|q| q.applies_to(&h.spec.short_name)).collect()).collect(),
        thresholds: queries.iter().map(|q| q.threshold).collect(),
        live: handles.iter().map(|h| h.spec.is_live()).collect(),
        every: settings.every,
        fps: settings.fps,
        decode_only: settings.decode_only,
        progress: progress.clone(),
        queues,
        notify,
        outputs: post_senders,
        shutdown: shutdown.clone(),
        max_duration: settings.max_duration,
        started,
    };
    let infer_thread = std::thread::Builder::new()
        .name("infer".into())
        .spawn(move || infer.run())
        .map_err(|error| WatchError::Thread { name: "infer".into(), error })?;

    let infer_stats = infer_thread.join().unwrap_or_else(|_| {
        warn!("inference thread panicked");
        InferStats::default()
    });
    // Inference is over (files ended, or a stop): stop the sources and collect everything.
    let exits: Vec<_> = handles
        .into_iter()
        .map(|h| {
            h.queue.close();
            (h.spec.clone(), h.join())
        })
        .collect();
    let post_stats: Vec<PostStats> = post_threads
        .into_iter()
        .map(|t| {
            t.join().unwrap_or_else(|_| {
                warn!("a post thread panicked");
                PostStats::default()
            })
        })
        .collect();
    // Every recorder is gone with its post thread: the workers finish the queued clips (each with a deadline).
    let clips = clip_writer.map(ClipWriter::finish).map(|mut c| {
        for tap in taps.iter().flatten() {
            c.dropped_packets += tap.dropped_packets.load(std::sync::atomic::Ordering::Relaxed);
            c.ring_gops_dropped_bytes += tap.ring_stats().gops_dropped_bytes;
        }
        c
    });
    // Every post thread and clip worker is done, so this is the last reference: deliver what can be delivered in time; the rest
    // stays in the spool for the next start.
    if let Some(alerter) = alerter.and_then(|a| Arc::try_unwrap(a).ok()) {
        let drain =
            settings.alerts.as_ref().map_or(Duration::from_secs(5), |a| Duration::from_millis(a.shutdown_timeout_ms));
        let timeout = if shutdown.is_aborting() { Duration::ZERO } else { drain };
        let stats = alerter.stats();
        let spooled: u64 = stats.destinations.iter().map(|d| d.spool_entries).sum();
        let unsent = alerter.unsent();
        if !timeout.is_zero() && (spooled > 0 || unsent > 0 || stats.destinations.iter().any(|d| !d.connected)) {
            info!(
                "stopping: delivering the alerts still waiting ({spooled} in the spool, {unsent} queued or in \
                 flight) for up to {:.0} s; the rest stays in the spool for the next start (interrupt again to \
                 stop now)",
                timeout.as_secs_f64()
            );
        }
        alerter.shutdown(timeout);
    }
    if let Some(r) = retention {
        r.stop();
    }

    let mut summaries = Vec::new();
    for (i, (spec, exit)) in exits.into_iter().enumerate() {
        let s: SourceStatsSnapshot = exit.stats;
        let post = post_stats.get(i).cloned().unwrap_or_default();
        summaries.push(SourceSummary {
            source: spec.display.clone(),
            name: spec.short_name.clone(),
            decoder: s.decoder.clone(),
            frames_decoded: s.frames_decoded,
            frames_processed: post.frames,
            frames_inferred: infer_stats.inferred.get(i).copied().unwrap_or(0),
            frames_dropped: s.frames_dropped,
            reconnects: s.reconnects,
            events: post.events,
            frame_age: infer_stats.frame_age.get(i).map(|h| h.summary()).unwrap_or_default(),
            error: exit.error.map(|e| e.to_string()).or(post.error),
            annotated: post.annotated,
            encoder: post.encoder,
        });
    }
    summaries.extend(failed);
    let summary = Summary {
        events: summaries.iter().map(|s| s.events).sum(),
        sources: summaries,
        inference: infer_stats.batch_latency.summary(),
        batches: infer_stats.batches,
        clips,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    let path = settings.out_dir.join("summary.json");
    match std::fs::write(&path, serde_json::to_vec_pretty(&summary).unwrap_or_default()) {
        Ok(()) => write_failures.succeeded(),
        Err(e) => {
            write_failures.failed(&path, &e);
        }
    }
    Ok(summary)
}

fn check_query_sources(queries: &[StandingQuery], specs: &[SourceSpec]) -> Result<(), WatchError> {
    let known: Vec<&str> = specs.iter().map(|s| s.short_name.as_str()).collect();
    for q in queries {
        for name in &q.sources {
            if !known.contains(&name.as_str()) {
                return Err(WatchError::QueryWithoutSource {
                    query: q.label.clone(),
                    source_name: name.clone(),
                    known: known.join(", "),
                });
            }
        }
    }
    Ok(())
}

#[derive(Debug, Default)]
struct InferStats {
    batches: u64,
    batch_latency: LatencyHistogram,
    /// Per source: frames inferred, and their age at inference.
    inferred: Vec<u64>,
    frame_age: Vec<LatencyHistogram>,
}

/// The inference stage: one model session for every source.
struct InferStage {
    detector: Detector,
    query_set: QuerySet,
    /// `applies[source][query]`.
    applies: Vec<Vec<bool>>,
    thresholds: Vec<f32>,
    live: Vec<bool>,
    every: u32,
    fps: Option<f64>,
    decode_only: bool,
    progress: Arc<Progress>,
    queues: Vec<FrameQueue>,
    notify: Arc<Notify>,
    outputs: Vec<Sender<Processed>>,
    shutdown: ShutdownToken,
    max_duration: Option<Duration>,
    started: Instant,
}

impl InferStage {
    fn run(mut self) -> InferStats {
        let n = self.queues.len();
        let mut stats =
            InferStats { inferred: vec![0; n], frame_age: vec![LatencyHistogram::default(); n], ..Default::default() };
        // Per source: index and PTS of the last inferred frame, for pacing live sources whose marked frames were
        // dropped (a live queue keeps the newest frames, which may all be unmarked).
        let mut last_inferred: Vec<Option<(u64, Option<u64>)>> = vec![None; n];
        let size = self.detector.input_size() as usize;
        let mut batch_tensor = Array4::<f32>::zeros((0, 3, size, size));
        let min_threshold = self.thresholds.iter().copied().fold(1.0f32, f32::min);
        let selection = Selection { threshold: Some(min_threshold), always_best: false, ..Selection::default() };
        let mut stopped = false;
        loop {
            self.progress.infer_rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !stopped && self.max_duration.is_some_and(|d| self.started.elapsed() >= d) {
                info!("--max-seconds reached; draining");
                stopped = true;
                for q in &self.queues {
                    q.close();
                }
            }
            if self.shutdown.is_aborting() {
                break;
            }
            let batch = source::next_batch(&self.queues, &self.notify, POLL);
            if batch.items.is_empty() {
                if batch.all_closed {
                    break;
                }
                continue;
            }
            // Decide which frames to infer.
            let mut to_infer: Vec<usize> = Vec::new();
            for (k, (src, frame)) in batch.items.iter().enumerate() {
                if self.should_infer(*src, frame, &last_inferred) {
                    to_infer.push(k);
                }
            }
            let mut results: Vec<Option<Vec<Detection>>> = vec![None; batch.items.len()];
            if !to_infer.is_empty() {
                let t0 = Instant::now();
                if batch_tensor.len_of(Axis(0)) != to_infer.len() {
                    batch_tensor = Array4::<f32>::zeros((to_infer.len(), 3, size, size));
                }
                let mut transforms = Vec::with_capacity(to_infer.len());
                let mut ok = vec![true; to_infer.len()];
                for (b, &k) in to_infer.iter().enumerate() {
                    let (src, frame) = &batch.items[k];
                    stats.frame_age[*src].record(frame.received.elapsed());
                    let m = &frame.model;
                    let slot = batch_tensor.index_axis_mut(Axis(0), b);
                    if let Err(e) = preprocess::tensor_from_scaled_rgb(
                        self.detector.model.family,
                        &self.detector.model.preprocessor,
                        &m.data,
                        m.width,
                        m.height,
                        m.stride,
                        slot,
                    ) {
                        warn!(error = %e, "frame skipped");
                        ok[b] = false;
                    }
                    transforms.push(match self.detector.model.family {
                        Family::OwlVit => Transform::stretch(frame.orig_width, frame.orig_height),
                        Family::Owlv2 => Transform::pad_square(frame.orig_width, frame.orig_height),
                    });
                }
                match self.detector.run(batch_tensor.view(), &self.query_set) {
                    Ok(raws) => {
                        for (b, &k) in to_infer.iter().enumerate() {
                            if !ok[b] {
                                continue;
                            }
                            let src = batch.items[k].0;
                            let dets: Vec<Detection> = select(&raws[b], &transforms[b], &selection)
                                .into_iter()
                                .filter(|d| self.applies[src][d.query] && d.score >= self.thresholds[d.query])
                                .collect();
                            results[k] = Some(dets);
                            stats.inferred[src] += 1;
                            let f = &batch.items[k].1;
                            last_inferred[src] = Some((f.index, f.pts_ns));
                        }
                    }
                    Err(e) => warn!(error = %e, "inference failed; frames passed on without detections"),
                }
                stats.batches += 1;
                stats.batch_latency.record(t0.elapsed());
            }
            for ((src, frame), detections) in batch.items.into_iter().zip(results) {
                // Blocking: a post thread that falls behind slows inference, and live queues then drop.
                if self.outputs[src].send(Processed { frame, detections }).is_err() {
                    warn!(source = src, "post thread gone");
                }
            }
        }
        stats
    }

    fn should_infer(&self, src: usize, frame: &Frame, last: &[Option<(u64, Option<u64>)>]) -> bool {
        if self.decode_only {
            return false;
        }
        if frame.infer {
            return true;
        }
        if !self.live[src] {
            return false;
        }
        match (last[src], self.fps) {
            (None, _) => true,
            (Some((_, Some(last_pts))), Some(fps)) => {
                frame.pts_ns.is_some_and(|p| p.saturating_sub(last_pts) as f64 >= 1e9 / fps)
            }
            (Some((last_index, _)), _) => frame.index >= last_index + self.every as u64,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct PostStats {
    frames: u64,
    events: u64,
    error: Option<String>,
    annotated: Option<PathBuf>,
    /// The annotated video's encoder element.
    encoder: Option<String>,
}

/// One source's tracking, events and annotated video.
struct PostStage {
    spec: SourceSpec,
    rx: Receiver<Processed>,
    tracker: Tracker,
    event_log: Arc<Mutex<EventLog>>,
    /// Starts every event id of the source (see [`event_id_prefix`]).
    event_id_prefix: String,
    /// The clip writer, told of every frame and event; without one every event's `clips.status` is `none`.
    clip_sink: Option<Box<dyn ClipSink + Send>>,
    queries: Vec<StandingQuery>,
    settings: WatchSettings,
    video_fps: Option<f64>,
    progress: Arc<Progress>,
    /// Read once the frames stop coming, to tell a shutdown from the end of the stream.
    shutdown: ShutdownToken,
    /// When the run started, for `max_duration` (which stops the run like a shutdown).
    started: Instant,
    /// The RTSP server for `--serve-rtsp`, shared by every source.
    rtsp: Option<Arc<crate::sink::rtsp::RtspPublisher>>,
    /// MQTT/webhook alerts, shared by every source.
    alerter: Option<Arc<crate::sink::alerts::Alerter>>,
    /// The pipeline template's encoder for the annotated video.
    record_encoder: Option<String>,
    /// Failed writes of the output directory, shared by every source.
    write_failures: Arc<WriteFailures>,
}

/// The tracker settings for a source: `base`, keeping a lost track at least as long as the longest
/// `end_after_s` of the queries (in frames at `video_fps`, or 25 fps), so that an object back within
/// `end_after_s` keeps its track id and so its event.
fn tracker_settings_for_events(
    base: &TrackerSettings,
    queries: &[StandingQuery],
    video_fps: Option<f64>,
) -> TrackerSettings {
    let fps = video_fps.filter(|f| f.is_finite() && *f > 0.0).unwrap_or(FALLBACK_FPS);
    let end_after_s = queries.iter().map(|q| q.end_after_s).fold(0.0f64, f64::max);
    let frames = (end_after_s * fps).ceil().min(1e9) as u64 + 1;
    TrackerSettings { max_age_frames: base.max_age_frames.max(frames), ..base.clone() }
}

/// The prefix of a source's event ids: its short name. A live source adds the run's start time
/// (`gate-20231114T221320Z`), so that the ids, and the clip files named after them, of a restarted service
/// never collide with those of the run before; a file's ids stay the same on every run.
fn event_id_prefix(spec: &SourceSpec, run_started: SystemTime) -> String {
    if !spec.is_live() {
        return spec.short_name.clone();
    }
    // 2023-11-14T22:13:20.000Z → 20231114T221320Z
    let stamp: String = format_rfc3339_utc(run_started)[..19].chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{}-{stamp}Z", spec.short_name)
}

/// The post stage's [`EventSink`]: each notification goes to the clip writer (when there is one) and then, as a
/// line, to `events.jsonl`.
struct LogSink<'a> {
    log: &'a Mutex<EventLog>,
    /// The source's display name (redacted by [`EventRecord::from_lifecycle`]).
    source: &'a str,
    queries: &'a [StandingQuery],
    clip_sink: &'a mut Option<Box<dyn ClipSink + Send>>,
    progress: &'a Progress,
    stats: &'a mut PostStats,
    alerter: Option<&'a crate::sink::alerts::Alerter>,
    /// Topic-safe source name for alerts.
    short_name: &'a str,
    write_failures: &'a WriteFailures,
}

impl EventSink for LogSink<'_> {
    fn on_event(&mut self, ev: &LifecycleEvent) {
        let clips = match self.clip_sink {
            Some(c) => c.on_event(ev),
            None => Clips::none(),
        };
        let Some(q) = self.queries.get(ev.query) else {
            return;
        };
        let Some(record) = EventRecord::from_lifecycle(ev, self.source, &q.text, &q.label, clips) else {
            return;
        };
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let result = log.write(&record);
        match result {
            Ok(()) => {
                // events.jsonl first (the source of truth), then the alert: the very bytes of the line. The
                // alerter never blocks, so the log's lock is held only for a copy.
                if let Some(alerter) = self.alerter {
                    alerter.send(self.short_name, log.last_line(), None);
                }
                drop(log);
                self.write_failures.succeeded();
                self.stats.events += 1;
                self.progress.events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                drop(log);
                // A full disk must not stop detection: report once (not once per event), count, go on.
                let reported = match e.io_error() {
                    Some((path, io)) => self.write_failures.failed(path, io),
                    None => {
                        warn!(event = %ev.event_id, error = %e, "event not written");
                        Some(e.to_string())
                    }
                };
                if let Some(message) = reported {
                    self.stats.error.get_or_insert(message);
                }
            }
        }
    }
}

impl PostStage {
    /// Where the event engine's starts, updates and ends go: events.jsonl, the clips and the alerts.
    fn log_sink<'a>(&'a mut self, stats: &'a mut PostStats) -> LogSink<'a> {
        LogSink {
            log: &self.event_log,
            source: &self.spec.display,
            queries: &self.queries,
            clip_sink: &mut self.clip_sink,
            progress: &self.progress,
            stats,
            alerter: self.alerter.as_deref(),
            short_name: &self.spec.short_name,
            write_failures: &self.write_failures,
        }
    }

    fn run(mut self) -> PostStats {
        let mut stats = PostStats::default();
        let labels: Vec<String> = self.queries.iter().map(|q| q.label.clone()).collect();
        let mut lifecycle =
            EventLifecycle::new(self.event_id_prefix.clone(), self.queries.iter().map(EventSettings::from).collect());
        let mut clock = StreamClock::new();
        let mut video: Option<VideoWriter> = None;
        let mut video_failed = false;
        let mut rtsp_feed: Option<crate::sink::rtsp::RtspFeed> = None;
        let mut tracks: Vec<TrackOutput> = Vec::new();
        let dir = self.settings.out_dir.join(&self.spec.short_name);
        let mut first_pts: Option<u64> = None;
        // The annotated frame, reused: the decoded frame is copied in (in its own format, I420 from the bundled
        // templates), drawn on and handed to the encoder and the RTSP feed.
        let mut annotated: Option<Picture> = None;

        while let Ok(p) = self.rx.recv() {
            let frame = p.frame;
            stats.frames += 1;
            self.progress.frames_processed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let at = FrameTime {
                frame: frame.index,
                pts_s: clock.seconds(frame.index, frame.pts_ns),
                // When the frame left GStreamer: for a live source, close to when it was captured.
                wall: match self.settings.wall_time {
                    true => SystemTime::now().checked_sub(frame.received.elapsed()),
                    false => None,
                },
            };
            tracks.clear();
            match &p.detections {
                Some(dets) => self.tracker.update_into(frame.index, dets, &mut tracks),
                None => self.tracker.predict_into(frame.index, &mut tracks),
            }
            let mut sink = self.log_sink(&mut stats);
            if let Some(c) = sink.clip_sink.as_mut() {
                c.on_frame(&at, frame.pts_ns, &tracks);
            }
            match &p.detections {
                Some(_) => lifecycle.update(at, &tracks, &mut sink),
                None => lifecycle.advance(at, &mut sink),
            }

            let want_video = self.settings.annotate && !video_failed;
            let want_rtsp = self.rtsp.is_some();
            if (want_video || want_rtsp)
                && let Some(full) = &frame.full
            {
                if want_video && video.is_none() {
                    let fps = self.video_fps.unwrap_or(30.0);
                    let (n, d) = fps_fraction(fps);
                    let _ = std::fs::create_dir_all(&dir);
                    let video_settings = VideoSettings {
                        template_encoder: self.record_encoder.clone(),
                        format: full.format,
                        ..VideoSettings::new(full.width, full.height, n, d)
                    };
                    match VideoWriter::create(&dir.join("annotated.mp4"), video_settings) {
                        Ok(w) => {
                            info!(source = %self.spec.display, encoder = %w.encoder(), "annotated video started");
                            stats.encoder = Some(w.encoder().to_string());
                            video = Some(w);
                        }
                        Err(e) => {
                            warn!(source = %self.spec.display, error = %e, "annotated video disabled");
                            stats.error = Some(e.to_string());
                            video_failed = true;
                        }
                    }
                }
                let picture = match annotated.as_mut() {
                    Some(p) => full.copy_to(p).map(|()| p),
                    None => Picture::black(full.format, full.width, full.height)
                        .and_then(|mut p| full.copy_to(&mut p).map(|()| annotated.insert(p))),
                };
                let Some(picture) = picture else {
                    // Checked when the frame was mapped: cannot happen.
                    warn!(source = %self.spec.display, "a full-size frame could not be copied; not drawn");
                    continue;
                };
                {
                    let mut canvas = Canvas::from_picture(picture);
                    let shown: Vec<TrackOutput> = tracks.iter().filter(|t| t.confirmed && !t.lost).copied().collect();
                    annotate_detections(&mut canvas, &shown, &labels);
                    let pts = frame.pts_ns.unwrap_or(0);
                    let t0 = *first_pts.get_or_insert(pts);
                    draw_timestamp(
                        &mut canvas,
                        &format!(
                            "{} #{} t={:.2}s",
                            self.spec.short_name,
                            frame.index,
                            (pts.saturating_sub(t0)) as f64 / 1e9
                        ),
                    );
                    if self.settings.test_model {
                        draw_banner(&mut canvas, TEST_MODEL_BANNER);
                    }
                }
                if let Some(publisher) = &self.rtsp {
                    if rtsp_feed.is_none() {
                        match publisher.feed_of(&self.spec.short_name, full.format, full.width, full.height) {
                            Ok(feed) => rtsp_feed = Some(feed),
                            Err(e) => warn!(source = %self.spec.display, error = %e, "RTSP republishing failed"),
                        }
                    }
                    if let Some(feed) = &rtsp_feed {
                        feed.push_picture(picture);
                    }
                }
                if let Some(w) = video.as_mut()
                    && let Err(e) = w.push_picture(picture, frame.pts_ns.unwrap_or(frame.index * 33_333_333))
                {
                    warn!(source = %self.spec.display, error = %e, "annotated video stopped");
                    stats.error = Some(e.to_string());
                    video = None;
                    video_failed = true;
                }
            }
        }
        // End of stream or shutdown: every open event ends, and the video is closed properly. `max_duration`
        // stops the run as a shutdown does (the file did not end).
        let stopped =
            self.shutdown.is_stopping() || self.settings.max_duration.is_some_and(|d| self.started.elapsed() >= d);
        let reason = if stopped { EndReason::Shutdown } else { EndReason::Eos };
        lifecycle.finish(reason, &mut self.log_sink(&mut stats));
        self.tracker.finish();
        if let Some(w) = video {
            match w.finish() {
                Ok(path) => stats.annotated = Some(path),
                Err(e) => {
                    warn!(source = %self.spec.display, error = %e, "annotated video could not be finished");
                    stats.error = Some(e.to_string());
                }
            }
        }
        stats
    }
}

/// A frame rate as a GStreamer fraction (29.97 → 30000/1001).
fn fps_fraction(fps: f64) -> (u32, u32) {
    if (fps * 1001.0 / 1000.0 - (fps * 1001.0 / 1000.0).round()).abs() < 1e-3 && fps.fract() != 0.0 {
        (((fps * 1001.0).round()) as u32, 1001)
    } else {
        ((fps * 1000.0).round() as u32, 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_the_decoder_and_encoder_of_each_source() {
        let source = |decoder: Option<&str>, encoder: Option<&str>| SourceSummary {
            source: "rtsp://***@cam/1".into(),
            name: "1".into(),
            decoder: decoder.map(String::from),
            frames_decoded: 10,
            frames_processed: 10,
            frames_inferred: 10,
            frames_dropped: 0,
            reconnects: 0,
            events: 0,
            frame_age: LatencySummary::default(),
            error: None,
            annotated: None,
            encoder: encoder.map(String::from),
        };
        let summary = Summary {
            sources: vec![source(Some("nvv4l2decoder"), Some("nvv4l2h264enc")), source(None, None)],
            inference: LatencySummary::default(),
            batches: 1,
            events: 0,
            clips: None,
            wall_seconds: 1.0,
        };
        let text = summary.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("  rtsp://***@cam/1: decoder nvv4l2decoder, decoded 10,"), "{text}");
        assert!(lines[1].ends_with(", annotated video encoded by nvv4l2h264enc"), "{text}");
        assert!(lines[2].contains("decoder unknown (no frame),") && !lines[2].contains("encoded by"), "{text}");
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["sources"][0]["decoder"], "nvv4l2decoder");
        assert!(json["sources"][1]["decoder"].is_null() && json["sources"][1].get("encoder").is_none());
    }

    #[test]
    fn ntsc_rates_become_1001_fractions() {
        assert_eq!(fps_fraction(29.97002997), (30000, 1001));
        assert_eq!(fps_fraction(25.0), (25000, 1000));
    }
}
