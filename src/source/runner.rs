//! The source thread: builds the pipeline, pulls and pairs frames, pushes them to the queue, and supervises.
//!
//! Threads and locks:
//! - the source thread owns the pipeline and does all pulling, pairing and pushing;
//! - GStreamer's streaming thread runs the pad probe on the tee, which only touches `DecodedLog` (its own mutex,
//!   never held across anything else) and atomics in [`SourceStats`];
//! - the consumer only touches the [`FrameQueue`].
//!
//! Nothing takes two locks at once.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tracing::{debug, error, info, warn};

use super::launch::{self, BuiltPipeline, Credentials};
use super::motion::{GreyImage, MotionGate};
use super::{
    Frame, FrameQueue, FrameSettings, FullFrame, Notify, Pushed, QueuePolicy, ReconnectSettings, RgbFrame, SourceError,
    SourceKind, SourceSpec, SourceState, SourceStats, SourceStatsSnapshot, explain,
};
use crate::gst::{GstRegistry, PipelineChoice, PipelineTemplate};
use crate::shutdown::ShutdownToken;

/// How often the source thread wakes while waiting for a frame, to look at the bus, the watchdog and shutdown.
const POLL: Duration = Duration::from_millis(100);
/// How long a live source waits for the full-size twin of a model frame before dropping the pair.
const LIVE_PAIR_TIMEOUT: Duration = Duration::from_secs(1);
/// Decoded frames remembered for matching pulled frames back to their decoded index.
const DECODED_LOG_LEN: usize = 256;
/// Stream time per frame assumed for the motion gate when a frame has no PTS (25 fps, as the event engine).
const FALLBACK_FRAME_NS: u64 = 40_000_000;
/// PTS jitter tolerated by the `fps` gate: containers round timestamps (30 fps in a 1/1000 timebase).
const FPS_TOLERANCE_NS: u64 = 1_000_000;
/// A file whose video stops this much (and over 10%) short of its stated duration is reported as truncated.
const TRUNCATION_MIN_NS: u64 = 1_000_000_000;

/// Why a live source's pipeline was restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartReason {
    /// The stream ended (a camera or server closed it).
    Eos,
    /// GStreamer reported an error; the message has its password removed.
    Error(String),
    /// No frame came for this long (the stall watchdog).
    Stalled { after_ms: u64 },
}

impl fmt::Display for RestartReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartReason::Eos => f.write_str("end of stream"),
            RestartReason::Error(message) => write!(f, "error: {message}"),
            RestartReason::Stalled { after_ms } => write!(f, "stalled: no frame for {after_ms} ms"),
        }
    }
}

/// Less common spawn parameters.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// The pipeline template (`--pipeline`). Default: automatic.
    pub pipeline: PipelineChoice,
    /// The [`Notify`] the source's queue signals; give every source the same one to wait on all of them with
    /// [`super::next_batch`]. Default: a new one.
    pub notify: Option<Arc<Notify>>,
    /// Where the encoded packets go (the input of the video decoder), for clips. Default: nowhere.
    pub packet_tap: Option<Arc<super::PacketTap>>,
}

/// A running source. Dropping it closes the queue and joins the thread.
#[derive(Debug)]
pub struct SourceHandle {
    pub spec: SourceSpec,
    pub stats: Arc<SourceStats>,
    /// Where the frames come out. Close it to tell the source the consumer is gone.
    pub queue: FrameQueue,
    thread: Option<JoinHandle<Result<(), SourceError>>>,
}

/// How a source ended.
#[derive(Debug)]
pub struct SourceExit {
    pub stats: SourceStatsSnapshot,
    /// `None` for a clean end (file finished, shutdown, consumer gone).
    pub error: Option<SourceError>,
}

impl SourceHandle {
    /// Waits for the source thread to end (after shutdown, the end of a file, or a fatal error) and returns its
    /// final stats. A panic on the thread is reported as [`SourceError::Panicked`].
    pub fn join(mut self) -> SourceExit {
        let error = self.join_thread();
        SourceExit { stats: self.stats.snapshot(), error }
    }

    /// True once the source thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    fn join_thread(&mut self) -> Option<SourceError> {
        let thread = self.thread.take()?;
        match thread.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                let message = self.spec.scrub(&message);
                error!(source = %self.spec.display, %message, "source thread panicked");
                self.queue.close();
                self.stats.set_state(SourceState::Ended);
                self.stats.set_last_error(format!("panic: {message}"));
                Some(SourceError::Panicked { name: self.spec.display.clone(), message })
            }
        }
    }
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            // No detached threads: the source sees the closed queue within one poll and ends.
            self.queue.close();
            self.join_thread();
        }
    }
}

/// Starts a source with the automatic pipeline template and its own [`Notify`].
pub fn spawn(
    spec: SourceSpec,
    settings: &FrameSettings,
    reconnect: &ReconnectSettings,
    shutdown: ShutdownToken,
) -> Result<SourceHandle, SourceError> {
    spawn_with(spec, settings, reconnect, shutdown, SpawnOptions::default())
}

/// Starts a source: checks the settings, renders and test-parses the pipeline (so a template typo fails here,
/// not later on the thread), and starts the source thread.
pub fn spawn_with(
    spec: SourceSpec,
    settings: &FrameSettings,
    reconnect: &ReconnectSettings,
    shutdown: ShutdownToken,
    options: SpawnOptions,
) -> Result<SourceHandle, SourceError> {
    settings.validate()?;
    gst::init().map_err(|e| SourceError::Init(e.to_string()))?;
    let pipeline_err = |source| SourceError::Pipeline { name: spec.display.clone(), source };
    let template = crate::gst::select(&options.pipeline, &GstRegistry).map_err(pipeline_err)?;
    let description = launch::render(&template, &spec, settings, Credentials::Include).map_err(pipeline_err)?;
    drop(launch::build(&description, &template.name, settings.full_frames).map_err(pipeline_err)?);

    let live = spec.is_live();
    let policy = if live { QueuePolicy::DropOldest } else { QueuePolicy::Block };
    let notify = options.notify.unwrap_or_default();
    let queue = FrameQueue::new(settings.queue_capacity(live), policy, notify);
    let stats = Arc::new(SourceStats::default());
    info!(source = %spec.display, kind = %spec.kind, live, template = %template.name, queue = queue.capacity(), "starting source");
    if let Ok(shown) = launch::render(&template, &spec, settings, Credentials::Redact) {
        debug!(source = %spec.display, pipeline = %shown, "pipeline");
    }
    let source = Source {
        spec: spec.clone(),
        settings: settings.clone(),
        reconnect: reconnect.clone(),
        shutdown,
        stats: stats.clone(),
        queue: queue.clone(),
        template,
        description,
        gate: InferGate::new(settings),
        motion: settings.motion.enabled.then(|| MotionGate::new(settings.motion.clone())),
        packet_tap: options.packet_tap,
        last_index: None,
        last_end_ns: None,
        last_warning: None,
        auth_failed: false,
        auth_reported: false,
    };
    let thread = std::thread::Builder::new()
        .name(format!("src{}-{}", spec.id, spec.short_name))
        .spawn(move || source.run())
        .map_err(|source| SourceError::Thread { name: spec.display.clone(), source })?;
    Ok(SourceHandle { spec, stats, queue, thread: Some(thread) })
}

/// How one pipeline run ended.
enum RunEnd {
    Shutdown,
    /// An HTTP stream with a known duration (a progressive file, an HLS playlist with an end) reached its end:
    /// it is over, not disconnected.
    Finished,
    ConsumerGone,
    Stopped {
        reason: RestartReason,
        frames: u64,
    },
    Fatal(SourceError),
}

/// What became of one pulled frame.
enum Delivery {
    Delivered,
    /// Dropped before the queue (no full-size twin).
    Skipped,
    ConsumerGone,
    Shutdown,
    Failed(String),
}

/// The source thread's state.
struct Source {
    spec: SourceSpec,
    settings: FrameSettings,
    reconnect: ReconnectSettings,
    shutdown: ShutdownToken,
    stats: Arc<SourceStats>,
    queue: FrameQueue,
    template: PipelineTemplate,
    /// The launch description, with credentials: never logged.
    description: String,
    gate: InferGate,
    /// The motion gate, when it is on: runs after `gate` on the frames it picked.
    motion: Option<MotionGate>,
    /// The clips' packet tap, installed on every run's decoder.
    packet_tap: Option<Arc<super::PacketTap>>,
    /// The last decoded index handed out, for frames the decoded log cannot match.
    last_index: Option<u64>,
    /// PTS + duration of the last frame pulled in this run.
    last_end_ns: Option<u64>,
    /// The last GStreamer warning of this run (rtspsrc warns "Could not read from resource" before its EOS).
    last_warning: Option<String>,
    /// This run ended because the camera refused the credentials (401).
    auth_failed: bool,
    /// The authentication failure was said (once, until a run delivers frames again).
    auth_reported: bool,
}

impl Source {
    fn run(mut self) -> Result<(), SourceError> {
        let result = self.supervise();
        self.stats.set_state(SourceState::Ended);
        self.queue.close();
        match &result {
            Ok(()) => info!(source = %self.spec.display, "source ended: {}", self.stats.snapshot()),
            Err(e) => {
                self.stats.set_last_error(e.to_string());
                error!(source = %self.spec.display, error = %e, "source ended with an error");
            }
        }
        result
    }

    /// `run()` of the NVR pattern: run the pipeline, and for a live source restart it with backoff.
    fn supervise(&mut self) -> Result<(), SourceError> {
        let name = self.spec.display.clone();
        let mut failures: u32 = 0;
        loop {
            if self.shutdown.is_stopping() || self.queue.is_closed() {
                return Ok(());
            }
            self.stats.set_state(SourceState::Connecting);
            let (reason, frames) = match self.run_once() {
                RunEnd::Shutdown => {
                    debug!(source = %name, "stopping: shutdown requested");
                    return Ok(());
                }
                RunEnd::Finished => {
                    info!(source = %name, "stream reached its end (it has a duration, so it is not live)");
                    return Ok(());
                }
                RunEnd::ConsumerGone => {
                    debug!(source = %name, "stopping: the consumer closed the queue");
                    return Ok(());
                }
                RunEnd::Fatal(e) => return Err(e),
                RunEnd::Stopped { reason, frames } => (reason, frames),
            };
            match (&reason, &self.last_warning) {
                (RestartReason::Eos, None) => {}
                (RestartReason::Eos, Some(warning)) => {
                    self.stats.set_last_error(format!("{name}: {reason} after warning: {warning}"))
                }
                _ => self.stats.set_last_error(format!("{name}: {reason}")),
            }
            if !self.spec.is_live() {
                return match reason {
                    RestartReason::Eos if frames > 0 => Ok(()),
                    RestartReason::Eos => Err(SourceError::Stream {
                        name,
                        message: "the file ended before any video frame: check that it has a video stream".into(),
                    }),
                    // decodebin drops a demuxer's error when it comes while the demuxer is being started (its
                    // error filtering during autoplugging races with qtdemux's streaming thread), so a damaged
                    // file can also show up as silence: say what that most likely means.
                    RestartReason::Stalled { after_ms } if frames == 0 => Err(SourceError::Stream {
                        name,
                        message: format!(
                            "no video frame within {after_ms} ms of opening it and no error from GStreamer: it is \
                             probably damaged or not a video; check that it plays in another player"
                        ),
                    }),
                    other => Err(SourceError::Stream {
                        name,
                        message: format!("{other}; check that the file is complete and plays in another player"),
                    }),
                };
            }
            // A run that delivered frames was a success that later ended: start counting afresh.
            failures = if frames > 0 { 1 } else { failures + 1 };
            if frames > 0 {
                self.auth_reported = false;
            }
            // Retrying will not fix wrong credentials, and a user reading "reconnecting" lines would look at the
            // network: say once what it is. The retries go on (the password may be changed on the camera).
            if self.auth_failed
                && !self.auth_reported
                && let RestartReason::Error(message) = &reason
            {
                self.auth_reported = true;
                error!(
                    source = %name,
                    "{message}: {}. This is not a network fault: the retries (with backoff) fail the same way until \
                     the credentials are right",
                    explain::auth_advice(self.spec.display.contains("***@"))
                );
            }
            if let Some(max) = self.reconnect.max_attempts
                && failures >= max
            {
                return Err(SourceError::GaveUp { name, attempts: failures, last: reason.to_string() });
            }
            let backoff = self.reconnect.backoff(failures);
            warn!(
                source = %name,
                %reason,
                warning = self.last_warning.as_deref().unwrap_or(""),
                frames,
                failures,
                backoff_ms = backoff.as_millis() as u64,
                "live source stopped; reconnecting after backoff"
            );
            self.stats.set_state(SourceState::Backoff);
            if !self.wait_backoff(backoff) {
                return Ok(());
            }
            SourceStats::add(&self.stats.reconnects, 1);
        }
    }

    /// Waits out a backoff; false if shutdown came or the consumer closed the queue meanwhile (checked every
    /// [`POLL`], so dropping a [`SourceHandle`] never waits for a long backoff).
    fn wait_backoff(&self, backoff: Duration) -> bool {
        let deadline = Instant::now() + backoff;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            if self.shutdown.wait_timeout(left.min(POLL)) || self.queue.is_closed() {
                return false;
            }
        }
    }

    /// `run_once()` of the NVR pattern: one pipeline from start to end.
    fn run_once(&mut self) -> RunEnd {
        let built = match launch::build(&self.description, &self.template.name, self.settings.full_frames) {
            Ok(b) => b,
            Err(source) => return RunEnd::Fatal(SourceError::Pipeline { name: self.spec.display.clone(), source }),
        };
        let _stop = StopOnDrop(built.pipeline.clone());
        self.last_end_ns = None;
        self.last_warning = None;
        self.auth_failed = false;
        // A new connection: the camera may have moved, and its timestamps start again.
        if let Some(m) = &mut self.motion {
            m.reset();
        }
        let decoded = Arc::new(DecodedLog::default());
        self.install_probe(&built, decoded.clone());
        if let Some(tap) = &self.packet_tap {
            // A new run starts a new timeline: the ring starts again, clips being recorded are cut here.
            tap.new_run();
            super::tap::install(&built.pipeline, tap);
        }
        let Some(bus) = built.pipeline.bus() else {
            return RunEnd::Fatal(SourceError::Stream {
                name: self.spec.display.clone(),
                message: "pipeline has no bus".into(),
            });
        };
        if built.pipeline.set_state(gst::State::Playing).is_err() {
            let message = self.bus_error(&bus).unwrap_or_else(|| "the pipeline could not start".into());
            return RunEnd::Stopped { reason: RestartReason::Error(message), frames: 0 };
        }

        let stall = self.reconnect.stall_timeout();
        let pair_timeout = if self.spec.is_live() { LIVE_PAIR_TIMEOUT } else { stall };
        let mut pending = Pending::default();
        let mut last_frame = Instant::now();
        let mut frames: u64 = 0;
        loop {
            if self.shutdown.is_stopping() {
                // EOS lets elements that care (muxers added later) finish; the guard then stops the pipeline.
                built.pipeline.send_event(gst::event::Eos::new());
                return RunEnd::Shutdown;
            }
            if self.queue.is_closed() {
                return RunEnd::ConsumerGone;
            }
            if let Some(message) = self.bus_error(&bus) {
                return RunEnd::Stopped { reason: RestartReason::Error(message), frames };
            }
            match built.model_sink.try_pull_sample(gst::ClockTime::from_nseconds(POLL.as_nanos() as u64)) {
                Some(sample) => {
                    match self.deliver(&sample, &built, &decoded, &mut pending, pair_timeout) {
                        Delivery::Delivered => {
                            if frames == 0 {
                                self.stats.set_state(SourceState::Streaming);
                                // The decoder exists by now: decodebin plugs it when the stream's caps are known.
                                let decoder = video_decoder(&built.pipeline);
                                info!(source = %self.spec.display, %decoder, "streaming");
                                self.stats.set_decoder(decoder);
                            }
                            frames += 1;
                        }
                        Delivery::Skipped => {}
                        Delivery::ConsumerGone => return RunEnd::ConsumerGone,
                        Delivery::Shutdown => return RunEnd::Shutdown,
                        Delivery::Failed(message) => {
                            return RunEnd::Stopped { reason: RestartReason::Error(message), frames };
                        }
                    }
                    last_frame = Instant::now();
                }
                None if built.model_sink.is_eos() => {
                    // Demuxers post their error and then push EOS: prefer the error.
                    let error = self.bus_error(&bus).or_else(|| self.truncation(&built.pipeline));
                    if error.is_none() && self.spec.kind == SourceKind::Http && has_duration(&built.pipeline) {
                        return RunEnd::Finished;
                    }
                    let reason = error.map_or(RestartReason::Eos, RestartReason::Error);
                    return RunEnd::Stopped { reason, frames };
                }
                None if last_frame.elapsed() >= stall => {
                    let after_ms = last_frame.elapsed().as_millis() as u64;
                    return RunEnd::Stopped { reason: RestartReason::Stalled { after_ms }, frames };
                }
                None => {}
            }
        }
    }

    /// Counts decoded frames and remembers their index by PTS; on new caps, notes the decoded size and, when the
    /// aspect ratio is kept, sets the model size on the `model_caps` capsfilter. Runs on GStreamer's streaming
    /// thread, before the caps event reaches the branches, so the capsfilter is set before they negotiate.
    fn install_probe(&self, built: &BuiltPipeline, decoded: Arc<DecodedLog>) {
        let Some(pad) = built.tee.static_pad("sink") else { return };
        let stats = self.stats.clone();
        let settings = self.settings.clone();
        let model_caps = built.model_caps.clone();
        let motion_caps = built.motion.as_ref().map(|(caps, _)| caps.clone());
        let name = self.spec.display.clone();
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Buffer(buffer)) => decoded.record(buffer, &stats),
                    Some(gst::PadProbeData::BufferList(list)) => list.iter().for_each(|b| decoded.record(b, &stats)),
                    Some(gst::PadProbeData::Event(event)) => {
                        if let gst::EventView::Caps(caps) = event.view()
                            && let Some(s) = caps.caps().structure(0)
                            && let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height"))
                        {
                            let (w, h) = (w.max(1) as u32, h.max(1) as u32);
                            decoded.set_dims(w, h);
                            if settings.keeps_aspect() {
                                let (mw, mh) = settings.model_size_for(w, h);
                                let mut new = model_caps.property::<gst::Caps>("caps");
                                if let Some(s) = new.make_mut().structure_mut(0) {
                                    s.set("width", mw as i32);
                                    s.set("height", mh as i32);
                                }
                                model_caps.set_property("caps", &new);
                            }
                            if let Some(caps) = &motion_caps {
                                let (gw, gh) = settings.motion.grey_size_for(w, h);
                                set_size(caps, gw, gh);
                            }
                            debug!(source = %name, width = w, height = h, "decoded size");
                        }
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
    }

    /// Turns a model sample (and its full-size twin) into a [`Frame`] and queues it by the source's policy.
    fn deliver(
        &mut self,
        sample: &gst::Sample,
        built: &BuiltPipeline,
        decoded: &DecodedLog,
        pending: &mut Pending,
        pair_timeout: Duration,
    ) -> Delivery {
        let received = Instant::now();
        SourceStats::add(&self.stats.frames_received, 1);
        let pts_ns = sample.buffer().and_then(|b| b.pts()).map(|t| t.nseconds());
        if let Some(pts) = pts_ns {
            let duration = sample.buffer().and_then(|b| b.duration()).map_or(0, |d| d.nseconds());
            self.last_end_ns = Some(pts + duration);
        }
        let model = match RgbFrame::from_sample(sample) {
            Ok(f) => f,
            Err(e) => return Delivery::Failed(format!("model frame: {e}")),
        };
        let full = match &built.full_sink {
            None => None,
            Some(sink) => match take_twin(sink, pts_ns, &mut pending.full, pair_timeout) {
                Some(s) => match FullFrame::from_sample(&s) {
                    Ok(f) => Some(f),
                    Err(e) => return Delivery::Failed(format!("full frame: {e}")),
                },
                None => {
                    SourceStats::add(&self.stats.dropped_unpaired, 1);
                    debug!(source = %self.spec.display, ?pts_ns, "no full-size twin; frame dropped");
                    return Delivery::Skipped;
                }
            },
        };
        let (index, orig_width, orig_height) = match decoded.take(pts_ns) {
            Some(d) => (d.index, d.width, d.height),
            None => {
                let (w, h) = full.as_ref().map_or(decoded.dims(), |f| (f.width, f.height));
                (self.last_index.map_or(0, |i| i + 1), w, h)
            }
        };
        self.last_index = Some(index);
        let picked = self.gate.decide(index, pts_ns);
        let (infer, motion) = match (&mut self.motion, &built.motion) {
            (Some(gate), Some((_, sink))) => {
                // A grey copy that did not come (a live appsink dropped it) leaves the frame counted as moving.
                let grey = take_twin(sink, pts_ns, &mut pending.grey, pair_timeout);
                let t_ns = pts_ns.unwrap_or(index.saturating_mul(FALLBACK_FRAME_NS));
                let (decision, motion) =
                    with_grey(grey.as_ref(), |g| gate.decide(picked, g, t_ns, (orig_width, orig_height)));
                if decision.skipped {
                    SourceStats::add(&self.stats.skipped_still, 1);
                }
                (decision.infer, Some(motion))
            }
            _ => (picked, None),
        };
        let frame = Frame {
            source: self.spec.id,
            index,
            pts_ns,
            received,
            infer,
            model,
            full,
            orig_width,
            orig_height,
            motion,
        };
        let pushed = match self.queue.policy() {
            // Live: never wait; the oldest queued frame makes room.
            QueuePolicy::DropOldest => self.queue.push(frame),
            // File: wait for the consumer (backpressure), but notice a shutdown while waiting.
            QueuePolicy::Block => {
                let mut frame = frame;
                loop {
                    match self.queue.push_timeout(frame, POLL) {
                        Pushed::TimedOut(f) if self.shutdown.is_stopping() => {
                            drop(f);
                            return Delivery::Shutdown;
                        }
                        Pushed::TimedOut(f) => frame = f,
                        other => break other,
                    }
                }
            }
        };
        match pushed {
            Pushed::Queued => {}
            Pushed::Evicted(_) => SourceStats::add(&self.stats.dropped_queue, 1),
            Pushed::Closed(_) => return Delivery::ConsumerGone,
            Pushed::TimedOut(_) => unreachable!("handled above"),
        }
        SourceStats::add(&self.stats.frames_delivered, 1);
        if infer {
            SourceStats::add(&self.stats.inference_frames, 1);
        }
        Delivery::Delivered
    }

    /// For a file that reached its end: an error if the last frame is well short of the duration the container
    /// states. A file cut short after its index (an MP4 with `faststart`, a copy interrupted half-way) plays its
    /// first part and ends without any GStreamer error; this is how it is noticed.
    fn truncation(&self, pipeline: &gst::Pipeline) -> Option<String> {
        if self.spec.is_live() {
            return None;
        }
        // An AVI's demuxer reports the duration of what is left, so its RIFF header is what shows the loss.
        if let Some((actual, stated)) = self.spec.path().and_then(super::media::riff_shortfall) {
            return Some(format!(
                "the file is {actual} bytes but its AVI header says {stated}: it is truncated (the video stops at \
                 {:.2} s, and what came after is lost)",
                self.last_end_ns.unwrap_or(0) as f64 / 1e9
            ));
        }
        let duration_ns = pipeline.query_duration::<gst::ClockTime>()?.nseconds();
        let end_ns = self.last_end_ns.unwrap_or(0);
        let missing_ns = duration_ns.saturating_sub(end_ns);
        // Tolerate container rounding and audio tracks a little longer than the video.
        (missing_ns > TRUNCATION_MIN_NS && missing_ns * 10 > duration_ns).then(|| {
            format!(
                "the video ends at {:.2} s but the file says it lasts {:.2} s: it is truncated or damaged",
                end_ns as f64 / 1e9,
                duration_ns as f64 / 1e9
            )
        })
    }

    /// The first error on the bus, redacted, if any; warnings are logged and skipped.
    fn bus_error(&mut self, bus: &gst::Bus) -> Option<String> {
        while let Some(msg) = bus.pop() {
            match msg.view() {
                gst::MessageView::Error(err) => {
                    let from = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
                    let details = err.debug().map(|d| self.spec.scrub(&d)).unwrap_or_default();
                    // The debug string is "file.c(line): function (): /element/path:\nthe useful part".
                    let tail = details.rsplit_once(":\n").map(|(_, tail)| tail.trim()).unwrap_or("");
                    let summary = self.spec.scrub(&err.error().to_string());
                    let bus_error = explain::BusError {
                        kind: self.spec.kind,
                        has_credentials: self.spec.display.contains("***@"),
                        from: &from,
                        summary: &summary,
                        detail: tail,
                        not_authorized: err.error().matches(gst::ResourceError::NotAuthorized),
                    };
                    let explained = explain::explain(&bus_error, || explain::probe(self.spec.secret_uri()));
                    let message = self.spec.scrub(&explained.message);
                    debug!(source = %self.spec.display, %message, %details, "GStreamer error");
                    self.auth_failed = explained.auth;
                    return Some(message);
                }
                gst::MessageView::Warning(w) => {
                    let message = self.spec.scrub(&w.error().to_string());
                    debug!(source = %self.spec.display, %message, "GStreamer warning");
                    self.last_warning = Some(message);
                }
                _ => {}
            }
        }
        None
    }
}

/// Samples pulled from a twin branch ahead of their model frame, kept for it.
#[derive(Default)]
struct Pending {
    full: Option<gst::Sample>,
    grey: Option<gst::Sample>,
}

/// Sets the width and height of a capsfilter's caps.
fn set_size(capsfilter: &gst::Element, width: u32, height: u32) {
    let mut caps = capsfilter.property::<gst::Caps>("caps");
    if let Some(s) = caps.make_mut().structure_mut(0) {
        s.set("width", width as i32);
        s.set("height", height as i32);
    }
    capsfilter.set_property("caps", &caps);
}

/// Maps a GRAY8 sample (no copy) and hands it to `f`; `None` to `f` when there is no sample or it cannot be read.
fn with_grey<R>(sample: Option<&gst::Sample>, f: impl FnOnce(Option<&GreyImage<'_>>) -> R) -> R {
    use gstreamer_video::prelude::*;
    let mapped = sample.and_then(|sample| {
        let info = gstreamer_video::VideoInfo::from_caps(sample.caps()?).ok()?;
        if info.format() != gstreamer_video::VideoFormat::Gray8 {
            return None;
        }
        gstreamer_video::VideoFrame::from_buffer_readable(sample.buffer_owned()?, &info).ok()
    });
    let grey = mapped.as_ref().and_then(|frame| {
        Some(GreyImage {
            width: frame.width(),
            height: frame.height(),
            stride: usize::try_from(frame.plane_stride()[0]).ok()?,
            data: frame.plane_data(0).ok()?,
        })
    });
    f(grey.as_ref())
}

/// Pulls the sample of a twin branch (full size, grey) with the same PTS as the model sample.
///
/// The motion gate's grey copy comes from its own branch of the tee and is paired here by PTS, as the full-size
/// frame is, rather than made from the model frame in Rust: GStreamer scales it (in hardware on a Jetson) from the
/// decoded frame while the other branches work, and the model frame's size and aspect are the model's, not the
/// scene's. A buffer meta carrying the grey copy would need a custom element; pairing needs nothing new.
///
/// Files deliver every frame on every branch, so the twin is next. A live source's appsinks may drop different
/// frames: older twin samples are skipped, a newer one is kept for the next model frame and `None` returned.
fn take_twin(
    sink: &gst_app::AppSink,
    pts_ns: Option<u64>,
    pending: &mut Option<gst::Sample>,
    timeout: Duration,
) -> Option<gst::Sample> {
    let deadline = Instant::now() + timeout;
    loop {
        let sample = match pending.take() {
            Some(s) => s,
            None => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                sink.try_pull_sample(gst::ClockTime::from_nseconds(left.as_nanos() as u64))?
            }
        };
        let full_pts = sample.buffer().and_then(|b| b.pts()).map(|t| t.nseconds());
        match (full_pts, pts_ns) {
            (a, b) if a == b => return Some(sample),
            (Some(a), Some(b)) if a < b => continue,
            (Some(_), Some(_)) => {
                *pending = Some(sample);
                return None;
            }
            // Without timestamps, pair in order.
            _ => return Some(sample),
        }
    }
}

/// One decoded frame as the tee saw it.
#[derive(Debug, Clone, Copy)]
struct Decoded {
    pts_ns: Option<u64>,
    index: u64,
    width: u32,
    height: u32,
}

/// Recently decoded frames, written by the pad probe (streaming thread) and read by the source thread.
#[derive(Debug, Default)]
struct DecodedLog {
    /// Oldest first; at most [`DECODED_LOG_LEN`].
    entries: Mutex<VecDeque<Decoded>>,
    /// The decoded size from the last caps event.
    dims: Mutex<(u32, u32)>,
}

impl DecodedLog {
    fn record(&self, buffer: &gst::BufferRef, stats: &SourceStats) {
        let index = stats.frames_decoded.fetch_add(1, Ordering::Relaxed);
        let (width, height) = self.dims();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= DECODED_LOG_LEN {
            entries.pop_front();
        }
        entries.push_back(Decoded { pts_ns: buffer.pts().map(|t| t.nseconds()), index, width, height });
    }

    /// The entry for this PTS, forgetting it and everything older (those were dropped on the way).
    fn take(&self, pts_ns: Option<u64>) -> Option<Decoded> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.is_empty() {
            return None;
        }
        let pos = match pts_ns {
            Some(_) => entries.iter().position(|d| d.pts_ns == pts_ns)?,
            None => 0,
        };
        let found = entries.get(pos).copied();
        entries.drain(..=pos);
        found
    }

    fn set_dims(&self, width: u32, height: u32) {
        *self.dims.lock().unwrap_or_else(|e| e.into_inner()) = (width, height);
    }

    fn dims(&self) -> (u32, u32) {
        *self.dims.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Decides which frames are for inference: every Nth decoded frame, or at most F per second of stream time.
#[derive(Debug)]
struct InferGate {
    every: u64,
    fps: Option<f64>,
    last_slot: Option<u64>,
    last_pts: Option<u64>,
}

impl InferGate {
    fn new(settings: &FrameSettings) -> InferGate {
        InferGate { every: settings.every.max(1) as u64, fps: settings.fps, last_slot: None, last_pts: None }
    }

    fn decide(&mut self, index: u64, pts_ns: Option<u64>) -> bool {
        match (self.fps, pts_ns) {
            (Some(fps), Some(pts)) => {
                // Timestamps restart after a live reconnect.
                if self.last_pts.is_some_and(|last| pts < last) {
                    self.last_slot = None;
                }
                self.last_pts = Some(pts);
                let slot = ((pts + FPS_TOLERANCE_NS) as f64 * fps / 1e9).floor() as u64;
                let infer = self.last_slot.is_none_or(|last| slot > last);
                if infer {
                    self.last_slot = Some(slot);
                }
                infer
            }
            _ => index.is_multiple_of(self.every),
        }
    }
}

/// The video decoders in a running pipeline, by factory name (`avdec_h264`, `nvv4l2decoder`; two joined by `+`
/// when a stream has two), or `none` when the source delivers raw video.
fn video_decoder(pipeline: &gst::Pipeline) -> String {
    let decoders = crate::gst::element::elements_by_klass(pipeline.upcast_ref(), "Decoder");
    if decoders.is_empty() { "none".to_string() } else { decoders.join("+") }
}

/// True if the pipeline knows how long it lasts: files and VOD streams do, live streams do not.
fn has_duration(pipeline: &gst::Pipeline) -> bool {
    pipeline.query_duration::<gst::ClockTime>().is_some_and(|d| d > gst::ClockTime::ZERO)
}

/// Stops the pipeline however `run_once` returns.
struct StopOnDrop(gst::Pipeline);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_n() {
        let mut g = InferGate::new(&FrameSettings { every: 3, ..Default::default() });
        let picked: Vec<u64> = (0..10).filter(|&i| g.decide(i, Some(i * 33_333_333))).collect();
        assert_eq!(picked, [0, 3, 6, 9]);
    }

    #[test]
    fn fps_by_stream_time() {
        let mut g = InferGate::new(&FrameSettings { fps: Some(10.0), ..Default::default() });
        // 30 fps with truncated timestamps: 33_333_333 ns apart.
        let picked: Vec<u64> = (0..30).filter(|&i| g.decide(i, Some(i * 33_333_333))).collect();
        assert_eq!(picked, (0..30).step_by(3).collect::<Vec<_>>());
        // A reconnect restarts the timestamps.
        assert!(g.decide(30, Some(0)));
    }

    #[test]
    fn decoded_log_matches_and_forgets_older() {
        gst::init().unwrap();
        let log = DecodedLog::default();
        let stats = SourceStats::default();
        for pts in [0u64, 10, 20, 30] {
            let mut b = gst::Buffer::new();
            b.get_mut().unwrap().set_pts(gst::ClockTime::from_nseconds(pts));
            log.record(&b, &stats);
        }
        assert_eq!(log.take(Some(20)).unwrap().index, 2);
        assert!(log.take(Some(10)).is_none());
        assert_eq!(log.take(Some(30)).unwrap().index, 3);
        assert!(log.take(None).is_none());
    }
}
