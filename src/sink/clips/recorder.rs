//! The recorder of one source: on each event's start it pins the source's recording from the pre-roll; on its
//! close it queues the clip for a worker. Runs on the source's post thread; waits only when the clip queue is full.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::stats::ClipStats;
use super::{ClipSettings, FinishJob, FrameBox, HISTORY_EXTRA_S, HISTORY_MAX_FRAMES, Outputs};
use crate::sink::events::{ClipSink, Clips, ClipsRecord, ClipsStatus};
use crate::sink::recording::Shared;
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
    /// The recording's pin on the event's span.
    pin: Option<u64>,
    from_s: f64,
    query: usize,
    track_id: u64,
    boxes: Vec<FrameBox>,
    last: LifecycleEvent,
}

/// The tracks of one recent frame, for the boxes of an event's pre-roll.
pub(super) struct HistoryFrame {
    at: FrameTime,
    tracks: Vec<TrackOutput>,
}

/// One source's [`ClipSink`]: pins the recording for each event and queues its clip; lives on the source's post
/// thread. Dropped when the source is over: its recording then writes what it has.
pub struct ClipRecorder {
    /// The source's recording, or why it could not start.
    pub(super) recording: Result<Arc<Shared>, String>,
    pub(super) sender: Option<Sender<FinishJob>>,
    pub(super) settings: Arc<ClipSettings>,
    pub(super) outputs: Outputs,
    /// `<out>/<source>`.
    pub(super) dir: PathBuf,
    pub(super) short_name: String,
    /// Redacted when written.
    pub(super) display: String,
    /// (text, label) by query index.
    pub(super) queries: Vec<(String, String)>,
    pub(super) history: VecDeque<HistoryFrame>,
    pub(super) history_s: f64,
    /// By event id.
    pub(super) active: HashMap<String, Active>,
}

impl ClipRecorder {
    fn planned(&self, event_id: &str) -> Clips {
        let mut c = Clips::planned(&self.short_name, event_id);
        if !self.settings.make_evidence {
            without_evidence(&mut c);
        }
        c
    }

    fn record(&self, ev: &LifecycleEvent, clips: Clips) -> ClipsRecord {
        let (query, label) = self.queries.get(ev.query).cloned().unwrap_or_default();
        ClipsRecord::new(&ev.event_id, &self.display, &query, &label, ev.track_id, clips)
    }

    fn start(&mut self, ev: &LifecycleEvent) -> Clips {
        ClipStats::add(&self.outputs.stats.started);
        let from_s = ev.start.at.pts_s - ev.pre_roll_s;
        let pin = self.recording.as_ref().ok().map(|r| r.pin(from_s));
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
        let active = Active { pin, from_s, query: ev.query, track_id: ev.track_id, boxes, last: ev.clone() };
        self.active.insert(ev.event_id.clone(), active);
        self.planned(&ev.event_id)
    }

    /// Queues the clip of a closed event (waits while the queue is full: a clip is never refused).
    fn closed(&mut self, ev: &LifecycleEvent) {
        let Some(a) = self.active.remove(&ev.event_id) else { return };
        let last = &a.last;
        let end = last.end.unwrap_or(last.last.at);
        let to_s = end.pts_s + last.post_roll_s;
        let planned = self.planned(&ev.event_id);
        let job = FinishJob {
            recording: self.recording.clone(),
            pin: a.pin,
            from_s: a.from_s,
            to_s,
            dir: self.dir.clone(),
            planned: planned.clone(),
            record: self.record(last, planned.clone()),
            short_name: self.short_name.clone(),
            event: a.last.clone(),
            boxes: a.boxes,
        };
        self.outputs.stats.queued();
        let sent = self.sender.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if !sent {
            self.outputs.stats.waiting.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            if let (Ok(r), Some(pin)) = (&self.recording, a.pin) {
                r.unpin(pin);
            }
            let mut clips = planned;
            clips.status = ClipsStatus::Failed;
            clips.error = Some("the clip workers have stopped".into());
            self.outputs.write(&self.short_name, &self.record(ev, clips), None);
        }
    }
}

impl ClipSink for ClipRecorder {
    fn add_query(&mut self, text: &str, label: &str) {
        self.queries.push((text.to_string(), label.to_string()));
    }

    fn on_frame(&mut self, at: &FrameTime, pts_ns: Option<u64>, tracks: &[TrackOutput]) {
        if let (Some(ns), Ok(r)) = (pts_ns, &self.recording) {
            r.mark(ns, at.pts_s, at.frame);
        }
        for a in self.active.values_mut() {
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
                let Some(a) = self.active.get_mut(&ev.event_id) else { return Clips::none() };
                a.last = ev.clone();
                self.planned(&ev.event_id)
            }
            LifecycleKind::Closed => {
                self.closed(ev);
                Clips::none()
            }
        }
    }
}

impl Drop for ClipRecorder {
    fn drop(&mut self) {
        // The source is over (its post stage ends): the recording writes what it has, so that the last clips,
        // queued, need not wait for the other sources.
        if let Ok(r) = &self.recording {
            r.source_over();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use crossbeam_channel::{Receiver, bounded};

    use super::*;
    use crate::geom::PixelBox;
    use crate::sink::disk::WriteFailures;
    use crate::sink::{EventLog, EventLogSettings};
    use crate::source::{PacketTap, RingSettings};
    use crate::track::{EndReason, Sample};

    fn event(kind: LifecycleKind, track_id: u64) -> LifecycleEvent {
        let at = |frame: u64| FrameTime { frame, pts_s: frame as f64 / 25.0, wall: None };
        let sample = Sample { at: at(50), bbox: PixelBox { x0: 1.0, y0: 2.0, x1: 30.0, y1: 40.0 }, score: 0.5 };
        LifecycleEvent {
            kind,
            event_id: format!("cam-0-{track_id}-50"),
            query: 0,
            track_id,
            at: at(60),
            last: sample,
            start: sample,
            end: matches!(kind, LifecycleKind::End(_) | LifecycleKind::Closed).then(|| at(55)),
            peak: sample,
            pre_roll_s: 1.0,
            post_roll_s: 1.5,
        }
    }

    /// A recorder on a real (empty) recording whose job queue no worker drains (the test does).
    fn recorder(out: &Path, capacity: usize) -> (ClipRecorder, Receiver<FinishJob>, crate::sink::recording::Recording) {
        gstreamer::init().unwrap();
        let log = Arc::new(Mutex::new(
            EventLog::open(out, EventLogSettings { wall_time: false, ..Default::default() }).unwrap(),
        ));
        let (tx, rx) = bounded::<FinishJob>(capacity);
        let tap = PacketTap::new(RingSettings::default());
        let rec = crate::sink::recording::Recording::start(&tap, &out.join("cam"), "cam", 1, 1.0, &Default::default())
            .unwrap();
        let outputs = Outputs {
            deadline: crate::sink::clips::StopDeadline::default(),
            log,
            alerter: None,
            stats: Arc::new(ClipStats::default()),
            write_failures: Arc::new(WriteFailures::new(out)),
            rejected: None,
        };
        let recorder = ClipRecorder {
            recording: Ok(rec.shared()),
            sender: Some(tx),
            settings: Arc::new(ClipSettings::default()),
            outputs,
            dir: out.join("cam"),
            short_name: "cam".into(),
            display: "rtsp://u:pw@cam/live".into(),
            queries: vec![("a person".into(), "person".into())],
            history: VecDeque::new(),
            history_s: HISTORY_EXTRA_S,
            active: HashMap::new(),
        };
        (recorder, rx, rec)
    }

    #[test]
    fn every_event_is_queued_with_its_span_and_the_recording_is_pinned_until_then() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, rx, _rec) = recorder(dir.path(), 64);
        let started = Instant::now();
        // Far more simultaneous events than workers: none is refused.
        for track in 0..40 {
            assert_eq!(r.on_event(&event(LifecycleKind::Start, track)).status, ClipsStatus::Pending);
        }
        for track in 0..40 {
            assert_eq!(r.on_event(&event(LifecycleKind::End(EndReason::Lost), track)).status, ClipsStatus::Pending);
            r.on_event(&event(LifecycleKind::Closed, track));
        }
        assert!(started.elapsed() < Duration::from_secs(2), "never waits while the queue has room");
        let jobs: Vec<FinishJob> = rx.try_iter().collect();
        assert_eq!(jobs.len(), 40);
        for j in &jobs {
            // Start 2.0 s - pre-roll 1.0 s; end 2.2 s + post-roll 1.5 s.
            assert!((j.from_s - 1.0).abs() < 1e-9 && (j.to_s - 3.7).abs() < 1e-9, "{} {}", j.from_s, j.to_s);
            assert!(j.pin.is_some());
        }
        let s = r.outputs.stats.snapshot();
        assert_eq!((s.started, s.peak_waiting), (40, 40));
    }
}
