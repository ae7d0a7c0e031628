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
//!                               │ ClipRecorder: on start a pin on the source's recording (rec-<name>, fed by
//!                               ▼ the packet tap), after the post-roll a job (bounded queue; waits, never refuses)
//! clip-<n> (shared): cut each event's clip from the recording, rename it into place, its evidence, its `clips` line
//! ```
//! The post stage feeds the tracker's outputs to the event engine ([`crate::track::lifecycle`]), in stream time:
//! the frame's PTS, or its index / 25 for a frame without one. The engine, not the tracker, decides when an event
//! starts and ends; each of its notifications becomes a line of `events.jsonl`.
//! Live sources never fall behind: their queue drops the oldest frame, and the counters show it.
//! Files block at every step (backpressure), so every frame is processed, in order, and the same file and model
//! give the same output.
//!
//! Shutdown: the first request drains (sources stop, queued frames are finished, the video is closed and
//! renamed into place, every open event gets its `end` line with `reason: shutdown` and its clip is cut up to
//! the last packet recorded); the caller exits at once on the second. When a file simply ends, open events end with `reason: eos`.

mod drain;
mod infer;
mod post;
pub mod stats;
mod summary;
mod turn;
mod verify;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Sender, bounded};
use tracing::{info, warn};

use crate::config::StandingQuery;
use crate::geom::Detection;
use crate::geom::ResizeRule;
use crate::gst::{self, EncoderPurpose, PipelineChoice};
use crate::infer::{Detector, FrameScale};
use crate::shutdown::ShutdownToken;
use crate::sink::clips::{ClipSettings, ClipWriter};
use crate::sink::disk::WriteFailures;
use crate::sink::events::ClipSink;
use crate::sink::run::{Run, remove_stale_parts};
use crate::sink::{EventLog, EventLogSettings};
use crate::source::{
    self, Frame, FrameQueue, FrameSettings, Notify, ReconnectSettings, SourceHandle, SourceSpec, SourceStatsSnapshot,
};
use crate::source::{MotionSettings, PacketTap, RingSettings};
use crate::track::{Tracker, TrackerSettings};
use drain::{Drain, DrainSettings};
use infer::{InferStage, InferStats, QueryBands};
use post::{PostStage, PostStats, tracker_settings_for_events};
pub use summary::{ModelRun, SourceSummary, Summary};
use verify::{AlertGate, Collector, VerdictWriter, VerifyJob, VerifyStage};
pub use verify::{OVERLOADED, VERIFY_NICE, VerifySettings, VerifySummary};

/// Frames in flight between the inference thread and one source's post thread.
const POST_QUEUE: usize = 4;
/// How long the inference thread waits for a frame before looking at shutdown again.
const POLL: Duration = Duration::from_millis(100);
/// Seconds the pre-roll ring keeps beyond the longest pre-roll: decoding runs ahead of the post stage (by the
/// queues between them), and an event's start is its earliest match in the k-of-n window, some frames before it
/// is decided.
const RING_LAG_S: f64 = 3.0;
/// Text drawn on every frame made with a random-weight test model (defined with the drawing code).
pub use crate::draw::TEST_MODEL_BANNER;

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
    #[error(
        "query {query:?} has verify, but no verifier model is configured: set [verify] model in the config (or \
         --verifier DIR)"
    )]
    NoVerifier { query: String },
    #[error("verifier {model}: it takes {fixed} frames, but [verify] frames = {configured}; set frames = {fixed}")]
    VerifierFrames { model: String, fixed: usize, configured: usize },
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
    /// Draw [`TEST_MODEL_BANNER`] on every annotated frame, and on the snapshots and crop clips of events.
    pub test_model: bool,
    pub tracker: TrackerSettings,
    pub reconnect: ReconnectSettings,
    pub pipeline: PipelineChoice,
    /// Draw a progress bar for files on stderr (when it is a terminal). Default true.
    pub progress: bool,
    /// Source names as the config gives them, by position; `None` keeps the derived name.
    pub source_names: Vec<Option<String>>,
    /// The motion gate of each source, by position (as `source_names`). A source without an entry gets
    /// [`MotionSettings::default_for`] its kind: on for live sources, off for files.
    pub motion: Vec<MotionSettings>,
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
    /// The longest a stop waits for what is open (clips, evidence, alerts) once it is seen. Default
    /// [`DEFAULT_SHUTDOWN_TIMEOUT_S`]; `[output] shutdown_timeout_s`.
    pub shutdown_timeout: Duration,
    /// Sources refused before the run (a missing file, an unsupported URL), each as [`SourceSummary::not_started`]:
    /// listed in the summary with their error, after the sources that ran. Default: none.
    pub not_started: Vec<SourceSummary>,
    /// The verifier of queries with `verify` (`[verify]`). Default: none (a query with `verify` is then an
    /// error).
    pub verify: Option<VerifySettings>,
    /// The HTTP control plane's shared state (`--http`): the run publishes its sources, frames and counters
    /// there and takes query changes from it. Default: none.
    pub control: Option<Arc<crate::http::Control>>,
    /// Pace files at this many times their frame rate, as a camera would deliver them (`--realtime`). Default:
    /// off (as fast as they decode).
    pub realtime: Option<f64>,
}

/// Default [`WatchSettings::shutdown_timeout`], in seconds. `deploy/lookout.service` stops the service after
/// `TimeoutStopSec=90s`, well above it (a test keeps it so).
pub const DEFAULT_SHUTDOWN_TIMEOUT_S: f64 = 30.0;

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
            motion: Vec::new(),
            decode_only: false,
            serve_rtsp: None,
            alerts: None,
            retention: None,
            clips: None,
            shutdown_timeout: Duration::from_secs_f64(DEFAULT_SHUTDOWN_TIMEOUT_S),
            not_started: Vec::new(),
            verify: None,
            control: None,
            realtime: None,
        }
    }
}

/// Live counters a progress bar can read while the run goes on.
#[derive(Debug, Default)]
pub struct Progress {
    pub frames_processed: std::sync::atomic::AtomicU64,
    pub events: std::sync::atomic::AtomicU64,
    /// Rounds of the inference loop, including rounds without frames: the systemd watchdog is fed while it moves,
    /// so cameras that are down do not cause restarts, but a stuck inference does.
    pub infer_rounds: std::sync::atomic::AtomicU64,
    /// Clips still being written, once the last frame is processed or a stop began (0 before).
    pub clips_pending: std::sync::atomic::AtomicU64,
}

/// The model branch's shape for a detector's [`FrameScale`], on top of `base` (what `watch` sets up and
/// `lookout pipelines show` prints).
pub fn frame_settings_for(scale: FrameScale, base: FrameSettings) -> FrameSettings {
    FrameSettings {
        model_size: scale.input_size(),
        keep_aspect_longest: match scale {
            FrameScale::FitLonger { side } => Some(side),
            _ => None,
        },
        resize_rule: match scale {
            FrameScale::FitWithin { max_width, max_height } => {
                Some(ResizeRule::MaxHeightWidth { max_height, max_width })
            }
            FrameScale::ShortestEdge { shortest_edge, longest_edge } => {
                Some(ResizeRule::ShortestEdge { shortest_edge, longest_edge })
            }
            FrameScale::Stretch { .. } | FrameScale::FitLonger { .. } => None,
        },
        ..base
    }
}

/// Runs `watch` until every file has ended, `max_duration` passed, or a stop was requested on `shutdown`.
///
/// A source that fails to start is reported and left out; the others run.
pub fn run(
    mut detector: Box<dyn Detector>,
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

    let verifying = queries.iter().find(|q| q.verify.is_some());
    if let Some(q) = verifying
        && settings.verify.is_none()
    {
        return Err(WatchError::NoVerifier { query: q.label.clone() });
    }

    let started = Instant::now();
    let texts: Vec<String> = queries.iter().map(|q| q.text.clone()).collect();
    let query_set = detector.encode(&texts)?;
    detector.warm_up(&query_set)?;
    if let Some(c) = &settings.control {
        c.begin_queries(&queries, query_set.clone());
        c.model_loaded();
    }
    // The verifier, and each verifying query's prompts encoded once for the run. With the control plane it is
    // loaded even when no query verifies yet: one added over the API may.
    let verifier = match (&settings.verify, verifying.is_some() || settings.control.is_some()) {
        (Some(v), true) => {
            // The detector's session options and threads: the two take turns on the cores (turn.rs).
            let mut verifier = crate::infer::load_verifier(&v.model, &v.session, v.precision)?;
            if let Some(fixed) = verifier.num_frames()
                && fixed != v.frames
            {
                return Err(WatchError::VerifierFrames {
                    model: v.model.display().to_string(),
                    fixed,
                    configured: v.frames,
                });
            }
            let prompts = verify::encode_prompts(verifier.as_mut(), &queries)?;
            Some((verifier, prompts, v.clone()))
        }
        _ => None,
    };

    // Frames are scaled inside GStreamer the way the detector asks.
    let scale = detector.frame_scale();
    let frame_settings = frame_settings_for(
        scale,
        FrameSettings {
            // Verification crops the frames at their decoded size: the same frames, never decoded twice.
            // The control plane shows the annotated frames.
            full_frames: settings.annotate
                || settings.serve_rtsp.is_some()
                || verifier.is_some()
                || settings.control.is_some(),
            every: settings.every,
            fps: settings.fps,
            ..FrameSettings::default()
        },
    );

    std::fs::create_dir_all(&settings.out_dir)
        .map_err(|error| crate::sink::SinkError::CreateDir { path: settings.out_dir.clone(), error })?;
    // A new number for this run (event ids never repeat across runs into one directory), and the temporary
    // files of a run that crashed removed, whichever outputs are on.
    let run = Run::start(&settings.out_dir, SystemTime::now())?;
    remove_stale_parts(&settings.out_dir);
    info!(run = run.number, out = %settings.out_dir.display(), "run {} in this output directory", run.number);
    let event_log = Arc::new(Mutex::new(EventLog::open(
        &settings.out_dir,
        EventLogSettings { wall_time: settings.wall_time, ..EventLogSettings::default() },
    )?));
    if let Some(c) = &settings.control {
        c.set_event_log(event_log.clone());
    }
    // A full disk is reported once for the whole run, whichever writer meets it first.
    let write_failures = Arc::new(WriteFailures::new(&settings.out_dir));

    // Sources.
    let notify = Notify::new();
    let mut handles: Vec<SourceHandle> = Vec::new();
    let mut taps: Vec<Option<Arc<PacketTap>>> = Vec::new();
    let mut failed: Vec<SourceSummary> = Vec::new();
    let mut gated: Vec<bool> = Vec::new();
    for (position, spec) in specs.into_iter().enumerate() {
        let motion =
            settings.motion.get(position).cloned().unwrap_or_else(|| MotionSettings::default_for(spec.is_live()));
        // Decoding only measures the pipeline: no inference to skip.
        let motion = MotionSettings { enabled: motion.enabled && !settings.decode_only, ..motion };
        let frame_settings = FrameSettings { motion, ..frame_settings.clone() };
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
                info!(source = %h.spec.display, motion_gate = frame_settings.motion.enabled, "motion gate");
                handles.push(h);
                taps.push(tap);
                gated.push(frame_settings.motion.enabled);
            }
            Err(e) => {
                warn!(source = %spec.display, error = %e, "source not started");
                failed.push(SourceSummary::not_started(spec.display.clone(), spec.short_name.clone(), e.to_string()));
            }
        }
    }
    if handles.is_empty() {
        return Err(WatchError::AllSourcesFailed(failed.first().and_then(|f| f.error.clone()).unwrap_or_default()));
    }
    let http_sources: Vec<Arc<crate::http::SourceEntry>> = match &settings.control {
        Some(c) => handles
            .iter()
            .map(|h| {
                c.add_source(crate::http::SourceEntry::new(
                    &h.spec.short_name,
                    &h.spec.display,
                    h.spec.is_live(),
                    h.stats.clone(),
                    started,
                ))
            })
            .collect(),
        None => Vec::new(),
    };
    if let Some(c) = &settings.control {
        c.open_changes();
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
            let alerter = Arc::new(alerter);
            if let Some(c) = &settings.control {
                // A weak reference: the alerter is unwrapped at the end to deliver what is left.
                let weak = Arc::downgrade(&alerter);
                c.set_alert_stats(Box::new(move || weak.upgrade().map(|a| a.stats()).unwrap_or_default()));
            }
            Some(alerter)
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

    // With keep_rejected = false, where the verdicts and the clips of verifying events meet.
    let rejected_evidence = settings
        .verify
        .as_ref()
        .filter(|v| !v.keep_rejected && verifier.is_some())
        .map(|_| Arc::new(crate::sink::rejected::RejectedEvidence::new(&settings.out_dir)));
    let clip_writer = match &settings.clips {
        Some(c) => {
            let mut c = c.clone();
            c.encoder = encoder_for(EncoderPurpose::Record);
            c.evidence.encoder = c.encoder.clone();
            c.evidence.test_model = settings.test_model;
            c.run = run.number;
            Some(ClipWriter::start_with(
                c,
                event_log.clone(),
                alerter.clone(),
                write_failures.clone(),
                rejected_evidence.clone(),
            )?)
        }
        None => None,
    };

    // The verify thread, fed by the post stages through one bounded queue.
    let verifier_precision = verifier.as_ref().map(|(_, _, v)| v.precision);
    // Inference and the verifier take turns on the cores (see turn.rs); without a verifier there is no one to wait for.
    let turns = Arc::new(turn::Turns::default());
    let gate = Arc::new(AlertGate::default());
    let mut verify_thread: Option<JoinHandle<()>> = None;
    let mut verify_link: Option<(Sender<VerifyJob>, VerdictWriter, VerifySettings)> = None;
    if let Some((verifier, prompts, v)) = verifier {
        let (tx, rx) = bounded::<VerifyJob>(v.queue);
        let writer = VerdictWriter {
            log: event_log.clone(),
            alerter: alerter.clone(),
            gate: gate.clone(),
            write_failures: write_failures.clone(),
            model: verifier.name().to_string(),
            rejected: rejected_evidence.clone(),
        };
        let stage = VerifyStage { verifier, prompts, rx, writer: writer.clone(), turns: turns.clone() };
        verify_thread = Some(
            std::thread::Builder::new()
                .name("verify".into())
                .spawn(move || {
                    verify::lower_this_threads_priority(VERIFY_NICE);
                    stage.run()
                })
                .map_err(|error| WatchError::Thread { name: "verify".into(), error })?,
        );
        verify_link = Some((tx, writer, v));
    }
    let evidence = settings.clips.as_ref().map(|c| c.evidence.clone()).unwrap_or_default();

    // Post stages, one per source.
    let mut post_threads: Vec<JoinHandle<PostStats>> = Vec::new();
    let mut post_senders: Vec<Sender<Processed>> = Vec::new();
    for (i, (h, tap)) in handles.iter().zip(&taps).enumerate() {
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
            event_id_prefix: run.event_id_prefix(&h.spec.short_name),
            run_number: run.number,
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
            collector: verify_link
                .as_ref()
                .filter(|_| {
                    settings.control.is_some()
                        || queries.iter().any(|q| q.verify.is_some() && q.applies_to(&h.spec.short_name))
                })
                .map(|(tx, writer, v)| {
                    Collector::new(
                        v.frames,
                        v.seconds,
                        evidence.clone(),
                        tx.clone(),
                        writer.clone(),
                        h.spec.display.clone(),
                        h.spec.short_name.clone(),
                        queries.clone(),
                    )
                }),
            gate: gate.clone(),
            http: http_sources.get(i).cloned(),
        };
        let name = format!("post-{}", h.spec.short_name);
        let t = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || stage.run())
            .map_err(|error| WatchError::Thread { name, error })?;
        post_threads.push(t);
        post_senders.push(tx);
    }

    let model_run = summary::ModelRun::of(detector.model());
    // Inference on this thread's child; the caller's thread only supervises.
    let queues: Vec<FrameQueue> = handles.iter().map(|h| h.queue.clone()).collect();
    let infer = InferStage {
        detector,
        query_set,
        applies: handles.iter().map(|h| queries.iter().map(|q| q.applies_to(&h.spec.short_name)).collect()).collect(),
        bands: QueryBands::new(
            &queries.iter().map(|q| (q.threshold, q.text_threshold.unwrap_or(0.0))).collect::<Vec<_>>(),
            settings.tracker.low_score,
        ),
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
        control: settings.control.clone(),
        http_sources: http_sources.clone(),
        realtime: settings.realtime,
        turns: verifier_precision.is_some().then(|| turns.clone()),
    };
    let infer_thread = std::thread::Builder::new()
        .name("infer".into())
        .spawn(move || infer.run())
        .map_err(|error| WatchError::Thread { name: "infer".into(), error })?;

    let drain = Drain::spawn(DrainSettings {
        shutdown: shutdown.clone(),
        max_duration: settings.max_duration,
        started,
        timeout: settings.shutdown_timeout,
        clips: clip_writer.as_ref().map(|w| (w.stats_handle(), w.stop_deadline())),
        progress: progress.clone(),
    });
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
    // Every collector has gone with its post thread: the verifier finishes the queued events.
    drop(verify_link);
    if let Some(t) = verify_thread
        && t.join().is_err()
    {
        warn!("the verify thread panicked");
    }
    drain.frames_done.store(true, std::sync::atomic::Ordering::Relaxed);
    // Every recorder is gone with its post thread: the workers finish the queued clips (each with a deadline, and
    // all of them by the stop's deadline when there is a stop).
    let clips = clip_writer.map(ClipWriter::finish).map(|mut c| {
        for tap in taps.iter().flatten() {
            c.dropped_packets += tap.dropped_packets.load(std::sync::atomic::Ordering::Relaxed);
            c.ring_gops_dropped_bytes += tap.ring_stats().gops_dropped_bytes;
        }
        c
    });
    let stop_deadline = drain.finish();
    // Every post thread and clip worker is done, so this is the last reference: deliver what can be delivered in time; the rest
    // stays in the spool for the next start.
    if let Some(c) = &settings.control {
        // Waits for a scrape that holds the alerter for a moment, so that it can be unwrapped below.
        c.clear_alert_stats();
    }
    if let Some(alerter) = alerter.and_then(|a| Arc::try_unwrap(a).ok()) {
        let drain =
            settings.alerts.as_ref().map_or(Duration::from_secs(5), |a| Duration::from_millis(a.shutdown_timeout_ms));
        // Within what is left of the stop's limit.
        let left = stop_deadline.map_or(drain, |d| d.saturating_duration_since(Instant::now()));
        let timeout = if shutdown.is_aborting() { Duration::ZERO } else { drain.min(left) };
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
        // Counts that go down while the deliveries go out (the shutdown blocks this thread).
        let _report = (!timeout.is_zero()).then(|| {
            drain::Reporter::spawn(
                "alerts waiting to be delivered",
                alerter.waiting_counter(),
                Instant::now() + timeout,
                |line| info!("{line}"),
            )
        });
        alerter.shutdown(timeout);
    }
    if let Some(r) = retention {
        r.stop();
    }
    // Every writer of the log is done: the lines still kept for want of room get a last try, the rest are lost.
    let event_log_stats = event_log.lock().unwrap_or_else(|e| e.into_inner()).close();

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
            motion_gate: gated.get(i).copied().unwrap_or(false),
            frames_skipped_still: s.frames_skipped_still,
            frames_dropped: s.frames_dropped,
            reconnects: s.reconnects,
            events: post.events,
            updates: post.updates,
            frame_age: infer_stats.frame_age.get(i).map(|h| h.summary()).unwrap_or_default(),
            error: exit.error.map(|e| e.to_string()).or(post.error),
            annotated: post.annotated,
            encoder: post.encoder,
        });
    }
    summaries.extend(failed);
    summaries.extend(settings.not_started.iter().cloned());
    let summary = Summary {
        model: Some(model_run),
        events: summaries.iter().map(|s| s.events).sum(),
        updates: summaries.iter().map(|s| s.updates).sum(),
        sources: summaries,
        inference: infer_stats.batch_latency.summary(),
        batches: infer_stats.batches,
        clips,
        event_lines_lost: event_log_stats.lost,
        verification: verifier_precision.map(|p| {
            let t = turns.totals();
            VerifySummary {
                precision: Some(p),
                inference_waited_ms: t.inference_waited.as_millis() as u64,
                verifier_ms: t.verifier_held.as_millis() as u64,
                ..gate.summary()
            }
        }),
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    let path = settings.out_dir.join("summary.json");
    match std::fs::write(&path, serde_json::to_vec_pretty(&summary).unwrap_or_default()) {
        Ok(()) => _ = write_failures.succeeded(),
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

/// One frame on its way from the inference thread to its post thread.
struct Processed {
    frame: Frame,
    /// `Some` on inference frames (possibly empty), `None` on frames the tracker carries.
    detections: Option<Vec<Detection>>,
    /// With the control plane: the queries in force for this frame (queries added since the start have new
    /// indices, which the post stage learns here).
    queries: Option<Arc<crate::http::queries::ActiveQueries>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GStreamer must scale a frame to the size the detector expects: the source's arithmetic
    /// ([`FrameSettings::model_size_for`]) and the detector's ([`FrameScale::size_for`]) agree.
    #[test]
    fn the_source_scales_frames_as_the_detector_asks() {
        let scales = [
            FrameScale::Stretch { width: 96, height: 64 },
            FrameScale::FitLonger { side: 960 },
            FrameScale::FitWithin { max_width: 320, max_height: 320 },
            FrameScale::FitWithin { max_width: 1333, max_height: 800 },
            FrameScale::ShortestEdge { shortest_edge: 800, longest_edge: 1333 },
        ];
        let frames = [(1920, 1080), (1080, 1920), (1232, 693), (640, 480), (352, 288), (7, 3000), (1, 1)];
        for scale in scales {
            let settings = frame_settings_for(scale, FrameSettings::default());
            settings.validate().unwrap();
            for (w, h) in frames {
                assert_eq!(settings.model_size_for(w, h), scale.size_for(w, h), "{scale:?} {w}x{h}");
            }
        }
    }
}
