//! The recorder of one source: on each event's start it opens a feed on the source's packet tap and hands the
//! clip to a worker; on its close, the Finish job. Runs on the source's post thread and never waits.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Sender, TrySendError};
use tracing::debug;

use super::stats::{ClipStats, OpenSlot};
use super::{ClipSettings, FinishJob, FrameBox, HISTORY_EXTRA_S, HISTORY_MAX_FRAMES, Job, Outputs, StartJob};
use crate::sink::events::{ClipSink, Clips, ClipsRecord, ClipsStatus};
use crate::source::{Feed, PacketTap};
use crate::track::{FrameTime, LifecycleEvent, LifecycleKind, TrackOutput};

/// Evidence is off: only the full-frame clip is planned.
fn without_evidence(c: &mut Clips) {
    c.crop_clip = None;
    c.snapshot = None;
    c.crop_snapshot = None;
    c.sidecar = None;
}

/// One event being recorded.
pub(super) struct Active {
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
pub(super) struct HistoryFrame {
    at: FrameTime,
    tracks: Vec<TrackOutput>,
}

/// One source's [`ClipSink`]: opens a feed on each event's start and hands the clip to a worker; lives on the
/// source's post thread.
pub struct ClipRecorder {
    pub(super) tap: Arc<PacketTap>,
    pub(super) senders: Vec<Sender<Job>>,
    pub(super) next_id: Arc<AtomicU64>,
    pub(super) settings: Arc<ClipSettings>,
    pub(super) outputs: Outputs,
    /// `<out>/<source>`.
    pub(super) dir: PathBuf,
    pub(super) short_name: String,
    /// Redacted when written.
    pub(super) display: String,
    /// (text, label) by query index.
    pub(super) queries: Vec<(String, String)>,
    /// Stream time minus pipeline time, from the last frame with a PTS.
    pub(super) offset_s: f64,
    pub(super) history: VecDeque<HistoryFrame>,
    pub(super) history_s: f64,
    /// By event id.
    pub(super) active: HashMap<String, Active>,
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use crossbeam_channel::{Receiver, bounded};
    use gstreamer as gst;

    use super::*;
    use crate::geom::PixelBox;
    use crate::sink::disk::WriteFailures;
    use crate::sink::{EventLog, EventLogSettings};
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
            deadline: crate::sink::clips::StopDeadline::default(),
            log,
            alerter: None,
            stats: Arc::new(ClipStats::default()),
            write_failures: Arc::new(WriteFailures::new(out)),
            rejected: None,
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
}
