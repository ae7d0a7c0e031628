//! The post stage of one source, on its `post-<source>` thread: tracking, the event engine, `events.jsonl`,
//! clips, alerts and the annotated video.
//!
//! The tracker gets a box on every frame ([`Tracker::update_into`] on inference frames, [`Tracker::predict_into`]
//! in between, [`Tracker::hold_into`] on the frames the motion gate skipped because nothing moved, which are not
//! misses). The event engine ([`EventLifecycle`]) is fed in stream time (the frame's PTS, or its index / 25
//! for a frame without one) and decides when an event starts and ends; each of its notifications becomes a line
//! of `events.jsonl`, then goes to the clip writer and the alerts.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crossbeam_channel::Receiver;
use tracing::{info, warn};

use super::verify::{AlertGate, Collector, alerts_wait};
use super::{Processed, Progress, TEST_MODEL_BANNER, WatchSettings};
use crate::config::StandingQuery;
use crate::draw::{
    Canvas, LabelPlacer, annotate_detections_with, banner_rect, draw_banner, draw_motion, draw_timestamp, motion_rect,
    timestamp_rect,
};
use crate::picture::Picture;
use crate::shutdown::ShutdownToken;
use crate::sink::disk::WriteFailures;
use crate::sink::events::{ClipSink, Clips};
use crate::sink::{EventLog, EventRecord, VideoSettings, VideoWriter};
use crate::source::SourceSpec;
use crate::track::lifecycle::FALLBACK_FPS;
use crate::track::{
    EndReason, EventLifecycle, EventSettings, EventSink, FrameTime, LifecycleEvent, LifecycleKind, StreamClock,
    TrackOutput, Tracker, TrackerSettings,
};

#[derive(Debug, Default, Clone)]
pub(super) struct PostStats {
    pub frames: u64,
    /// Events started (one per event, however many lines it has).
    pub events: u64,
    /// `update` lines written.
    pub updates: u64,
    pub error: Option<String>,
    pub annotated: Option<PathBuf>,
    /// The annotated video's encoder element.
    pub encoder: Option<String>,
}

/// One source's tracking, events and annotated video.
pub(super) struct PostStage {
    pub spec: SourceSpec,
    pub rx: Receiver<Processed>,
    pub tracker: Tracker,
    pub event_log: Arc<Mutex<EventLog>>,
    /// Starts every event id of the source: `<source>-r<run>` ([`crate::sink::run::Run::event_id_prefix`]).
    pub event_id_prefix: String,
    /// This run's number in the output directory, for naming the annotated video when an earlier run's is there.
    pub run_number: u64,
    /// The clip writer, told of every frame and event; without one every event's `clips.status` is `none`.
    pub clip_sink: Option<Box<dyn ClipSink + Send>>,
    pub queries: Vec<StandingQuery>,
    pub settings: WatchSettings,
    pub video_fps: Option<f64>,
    pub progress: Arc<Progress>,
    /// Read once the frames stop coming, to tell a shutdown from the end of the stream.
    pub shutdown: ShutdownToken,
    /// When the run started, for `max_duration` (which stops the run like a shutdown).
    pub started: Instant,
    /// The RTSP server for `--serve-rtsp`, shared by every source.
    pub rtsp: Option<Arc<crate::sink::rtsp::RtspPublisher>>,
    /// MQTT/webhook alerts, shared by every source.
    pub alerter: Option<Arc<crate::sink::alerts::Alerter>>,
    /// The pipeline template's encoder for the annotated video.
    pub record_encoder: Option<String>,
    /// Failed writes of the output directory, shared by every source.
    pub write_failures: Arc<WriteFailures>,
    /// Takes the frames of events to verify, when a query of the source verifies.
    pub collector: Option<Collector>,
    /// Holds the alerts of `alert_on = "verified"` events until their verdict.
    pub gate: Arc<AlertGate>,
    /// The source's entry in the control plane: counts frames, and takes the annotated frame while a client
    /// watches. Default: none.
    pub http: Option<Arc<crate::http::SourceEntry>>,
}

/// The tracker settings for a source: `base`, keeping a lost track at least as long as the longest
/// `end_after_s` of the queries (in frames at `video_fps`, or 25 fps), so that an object back within
/// `end_after_s` keeps its track id and so its event; and each query's threshold as its `high_score`, so that
/// the threshold decides which detections start a track while the band from `low_score` up keeps one.
pub(super) fn tracker_settings_for_events(
    base: &TrackerSettings,
    queries: &[StandingQuery],
    video_fps: Option<f64>,
) -> TrackerSettings {
    let fps = video_fps.filter(|f| f.is_finite() && *f > 0.0).unwrap_or(FALLBACK_FPS);
    let end_after_s = queries.iter().map(|q| q.end_after_s).fold(0.0f64, f64::max);
    let frames = (end_after_s * fps).ceil().min(1e9) as u64 + 1;
    TrackerSettings {
        max_age_frames: base.max_age_frames.max(frames),
        query_high_scores: queries.iter().map(|q| q.threshold).collect(),
        ..base.clone()
    }
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
    collector: &'a mut Option<Collector>,
    gate: &'a AlertGate,
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
        // events.jsonl first (the source of truth), then the alert: the very bytes of the line (also of a line
        // kept while the disk is full: it is written once there is room). The alerter never blocks, so the log's
        // lock is held only for a copy.
        if let (Some(alerter), true) = (self.alerter, result.as_ref().map_or_else(|e| e.kept, |()| true)) {
            // A query whose alerts wait for the verdict holds its start (and what follows) until it is confirmed.
            let line = log.last_line();
            let now = match (alerts_wait(q), ev.kind) {
                (false, _) => true,
                (true, LifecycleKind::Start) => {
                    self.gate.hold_start(&ev.event_id, line);
                    false
                }
                (true, LifecycleKind::Update) => self.gate.may_alert(&ev.event_id, line, false),
                (true, LifecycleKind::End(_)) => self.gate.may_alert(&ev.event_id, line, true),
                (true, LifecycleKind::Closed) => false,
            };
            if now {
                alerter.send(self.short_name, line, None);
            }
        }
        drop(log);
        match result {
            Ok(()) => {
                // Verification starts with the `start` line and is cut short by the `end` line.
                if let Some(c) = self.collector.as_mut() {
                    match ev.kind {
                        LifecycleKind::Start => c.start(ev),
                        LifecycleKind::End(_) => c.end(&ev.event_id),
                        LifecycleKind::Update | LifecycleKind::Closed => {}
                    }
                }
                self.write_failures.succeeded();
                // An event is counted once, at its start; its updates apart; its end is the same event.
                match ev.kind {
                    LifecycleKind::Start => {
                        self.stats.events += 1;
                        self.progress.events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    LifecycleKind::Update => self.stats.updates += 1,
                    LifecycleKind::End(_) | LifecycleKind::Closed => {}
                }
            }
            Err(e) => {
                let e = e.error;
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
            collector: &mut self.collector,
            gate: &self.gate,
        }
    }

    pub(super) fn run(mut self) -> PostStats {
        let mut stats = PostStats::default();
        let mut labels: Vec<String> = self.queries.iter().map(|q| q.label.clone()).collect();
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
            // Queries added over the control plane since the last frame: new indices, appended.
            if let Some(q) = &p.queries {
                for slot in q.slots.iter().skip(self.queries.len()) {
                    let index = lifecycle.add_query(EventSettings::from(&slot.query));
                    self.tracker.set_query_high_score(index, slot.query.threshold);
                    if let Some(c) = self.clip_sink.as_mut() {
                        c.add_query(&slot.query.text, &slot.query.label);
                    }
                    if let Some(c) = self.collector.as_mut() {
                        c.add_query(slot.query.clone());
                    }
                    labels.push(slot.query.label.clone());
                    self.queries.push(slot.query.clone());
                }
            }
            let frame = p.frame;
            stats.frames += 1;
            if let Some(h) = &self.http {
                h.processed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
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
            // A frame the motion gate found still is not a miss: the tracks and events are held on it.
            let still = p.detections.is_none() && frame.is_still();
            match &p.detections {
                Some(dets) => self.tracker.update_into(frame.index, dets, &mut tracks),
                None if still => self.tracker.hold_into(frame.index, &mut tracks),
                None => self.tracker.predict_into(frame.index, &mut tracks),
            }
            let mut sink = self.log_sink(&mut stats);
            if let Some(c) = sink.clip_sink.as_mut() {
                c.on_frame(&at, frame.pts_ns, &tracks);
            }
            match &p.detections {
                Some(_) => lifecycle.update(at, &tracks, &mut sink),
                None if still => lifecycle.hold(at, &mut sink),
                None => lifecycle.advance(at, &mut sink),
            }
            // Lines kept while the disk was full go out once there is room, even when no new line comes.
            match self.event_log.lock().unwrap_or_else(|e| e.into_inner()).retry_kept_if_due() {
                Some(Ok(())) => _ = self.write_failures.succeeded(),
                Some(Err(e)) => _ = e.io_error().map(|(path, io)| self.write_failures.failed(path, io)),
                None => {}
            }
            if let Some(c) = self.collector.as_mut()
                && c.is_collecting()
            {
                c.on_frame(&at, frame.full.as_ref(), &tracks);
            }

            let want_video = self.settings.annotate && !video_failed;
            let want_rtsp = self.rtsp.is_some();
            let want_http = self.http.as_ref().is_some_and(|h| h.wants_frame());
            if (want_video || want_rtsp || want_http)
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
                    match VideoWriter::create(&annotated_path(&dir, self.run_number), video_settings) {
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
                    let pts = frame.pts_ns.unwrap_or(0);
                    let t0 = *first_pts.get_or_insert(pts);
                    let stamp = format!(
                        "{} #{} t={:.2}s",
                        self.spec.short_name,
                        frame.index,
                        (pts.saturating_sub(t0)) as f64 / 1e9
                    );
                    // Labels keep off the timestamp and the banner, drawn after them.
                    let mut placer = LabelPlacer::new();
                    placer.reserve(timestamp_rect(&canvas, &stamp));
                    if self.settings.test_model {
                        placer.reserve(banner_rect(&canvas, TEST_MODEL_BANNER));
                    }
                    // The motion gate's state, under the detections.
                    if let Some(m) = &frame.motion {
                        placer.reserve(motion_rect(&canvas, m.moving));
                        draw_motion(&mut canvas, m.moving, m.region.as_ref());
                    }
                    annotate_detections_with(&mut canvas, &shown, &labels, &mut placer);
                    draw_timestamp(&mut canvas, &stamp);
                    if self.settings.test_model {
                        draw_banner(&mut canvas, TEST_MODEL_BANNER);
                    }
                }
                if want_http && let Some(h) = &self.http {
                    h.publish(frame.index, picture);
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
        // Events still taking frames are verified on what they have; the sender goes with the collector.
        if let Some(mut c) = self.collector.take() {
            c.finish();
        }
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

/// `<dir>/annotated.mp4`, or `<dir>/annotated-r<run>.mp4` when an earlier run's annotated video is there: a
/// run never replaces another's.
fn annotated_path(dir: &std::path::Path, run_number: u64) -> PathBuf {
    let first = dir.join("annotated.mp4");
    if first.exists() { dir.join(format!("annotated-r{run_number}.mp4")) } else { first }
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
    fn ntsc_rates_become_1001_fractions() {
        assert_eq!(fps_fraction(29.97002997), (30000, 1001));
        assert_eq!(fps_fraction(25.0), (25000, 1000));
    }
}
