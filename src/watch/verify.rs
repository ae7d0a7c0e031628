//! The verification stage: each event of a query with `verify` is confirmed or rejected on its own frames.
//!
//! ```text
//! post-<name>: on an event's start, a Collector takes N full-size frames (already decoded for the run: nothing
//!   is decoded twice) spread over the event's first `seconds`, with the track's box on each; then crops them
//!   to the union of those boxes with the crop clip's margin rule (CropRegion) and hands them on
//!        │ crossbeam bounded(`[verify] queue`), try_send: when full, the event's verdict is `error`,
//!        ▼ reason `overloaded`, written at once; the frame path never waits for the verifier
//! verify (one for the run): Verifier::logits on the crops and the query's prompts (encoded once at start),
//!   softmax, verdict; one `verification` line in events.jsonl, then to the alerter
//! ```
//!
//! Frames are sampled at stream times `t0 + seconds * i / N` (i = 0..N, t0 the `start` line's frame): the
//! first frame at or after each. The window closes when N frames are taken, when its time has passed, when the
//! event ends or the stream does; with fewer than N frames the ones taken are spread over N
//! ([`crate::infer::verify::spread`]), repeating some, so the verifier always sees N.
//!
//! Alerts of a query with `alert_on = "verified"` go through an [`AlertGate`]: its `start` line is held (the
//! line is in events.jsonl as always), sent just before the `verification` line when the verdict is
//! `confirmed`, and dropped otherwise; its `update` and `end` lines are alerted only once it is confirmed.
//! Lock order: the event log, then the gate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use image::RgbImage;
use serde::Serialize;
use tracing::warn;

use crate::config::{AlertOn, StandingQuery};
use crate::geom::PixelBox;
use crate::infer::verify::{Verdict, judge, spread};
use crate::infer::{PromptSet, SessionOptions, Verifier};
use crate::picture::{Picture, PixelFormat, YuvMatrix};
use crate::sink::EventLog;
use crate::sink::alerts::Alerter;
use crate::sink::disk::WriteFailures;
use crate::sink::events::{VerdictField, VerificationLineKind, VerificationRecord};
use crate::sink::evidence::{CropRegion, EvidenceSettings};
use crate::sink::rejected::RejectedEvidence;
use crate::source::FullFrame;
use crate::track::{FrameTime, LifecycleEvent, TrackOutput};

/// How much lower than the other threads the verify thread runs (a nice increment): its work outside its turn
/// (taking jobs, writing verdicts) never delays inference.
pub const VERIFY_NICE: i32 = 5;

/// Lowers the calling thread's scheduling priority by `nice` (Linux: a thread's nice value is its own). Best
/// effort: a failure leaves the priority as it was.
pub(super) fn lower_this_threads_priority(nice: i32) {
    // SAFETY: gettid and setpriority take no pointers; PRIO_PROCESS with a thread id affects only that thread.
    unsafe {
        let tid = libc::gettid();
        let now = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, (now + nice).min(19)) != 0 {
            tracing::debug!("could not lower the verify thread's priority");
        }
    }
}

/// What `watch` verifies with (`[verify]`; see [`crate::config::VerifyConfig`] for the defaults).
#[derive(Debug, Clone)]
pub struct VerifySettings {
    /// The verifier's model directory.
    pub model: PathBuf,
    /// ONNX Runtime settings for its session.
    pub session: SessionOptions,
    /// The per-event graph's arithmetic (`[verify] precision`).
    pub precision: crate::infer::Precision,
    /// Frames of each event the verifier sees.
    pub frames: usize,
    /// Seconds of stream time, from the event's start, the frames are spread over.
    pub seconds: f64,
    /// Events waiting for the verifier before `overloaded`.
    pub queue: usize,
    /// Keep the clips and snapshots of rejected events (`[output] keep_rejected`, default true); when false they
    /// are removed after the verdict ([`crate::sink::rejected`]).
    pub keep_rejected: bool,
}

/// The verification counters of a run, in the summary and `summary.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VerifySummary {
    /// Events with a `verification` line (every verdict, errors too).
    pub verified: u64,
    pub confirmed: u64,
    pub rejected: u64,
    /// Events whose verdict is `error` because the verifier's queue was full.
    pub overloaded: u64,
    /// Events whose verdict is `error` for another reason (the verifier failed, no frame of the track).
    pub errors: u64,
    /// The verifier's per-event graph precision (`[verify] precision`), when a verifier ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<crate::infer::Precision>,
    /// Milliseconds inference waited for the verifier's turns on the cores (`watch/turn.rs`), over the run.
    pub inference_waited_ms: u64,
    /// Milliseconds the verifier held its turns (its runs, prompts included), over the run.
    pub verifier_ms: u64,
}

/// One gate entry: an event of an `alert_on = "verified"` query.
#[derive(Debug, Default)]
struct Held {
    /// The `start` line, until the verdict.
    start: Option<Vec<u8>>,
    /// The `end` line, when the event ended before its verdict.
    end: Option<Vec<u8>>,
    /// The verdict, once known: `true` for confirmed.
    confirmed: Option<bool>,
    /// The event has ended: the entry goes once the verdict is known too.
    ended: bool,
}

/// Holds the alerts of `alert_on = "verified"` events until their verdict (see the module documentation), and
/// counts verdicts. Shared by the post stages and the verify thread.
#[derive(Debug, Default)]
pub(super) struct AlertGate {
    held: Mutex<HashMap<String, Held>>,
    verified: AtomicU64,
    confirmed: AtomicU64,
    rejected: AtomicU64,
    overloaded: AtomicU64,
    errors: AtomicU64,
}

impl AlertGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An `alert_on = "verified"` event started: its line is held.
    pub(super) fn hold_start(&self, event_id: &str, line: &[u8]) {
        self.lock().insert(event_id.to_string(), Held { start: Some(line.to_vec()), ..Held::default() });
    }

    /// Whether a later line (update, end) of a held event may be alerted now: only once it is confirmed. An
    /// `end` line (`ended`) that comes before the verdict is held too, and sent after the `verification` line
    /// if the event is confirmed; the entry goes once the event has ended and its verdict is known.
    pub(super) fn may_alert(&self, event_id: &str, line: &[u8], ended: bool) -> bool {
        let mut held = self.lock();
        let Some(h) = held.get_mut(event_id) else {
            return false;
        };
        let confirmed = h.confirmed == Some(true);
        if ended {
            h.ended = true;
            match h.confirmed {
                Some(_) => {
                    held.remove(event_id);
                }
                None => h.end = Some(line.to_vec()),
            }
        }
        confirmed
    }

    /// Records a verdict; returns the held `start` and `end` lines to send around the `verification` line when
    /// it is `confirmed`.
    fn settle(&self, event_id: &str, confirmed: bool) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let mut held = self.lock();
        let Some(h) = held.get_mut(event_id) else {
            return (None, None);
        };
        h.confirmed = Some(confirmed);
        let start = h.start.take().filter(|_| confirmed);
        let end = h.end.take().filter(|_| confirmed);
        if h.ended {
            held.remove(event_id);
        }
        (start, end)
    }

    pub(super) fn summary(&self) -> VerifySummary {
        VerifySummary {
            verified: self.verified.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            overloaded: self.overloaded.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            precision: None,
            inference_waited_ms: 0,
            verifier_ms: 0,
        }
    }
}

/// Where verdicts are written: the event log, the alerter and the gate.
#[derive(Clone)]
pub(super) struct VerdictWriter {
    pub log: Arc<Mutex<EventLog>>,
    pub alerter: Option<Arc<Alerter>>,
    pub gate: Arc<AlertGate>,
    pub write_failures: Arc<WriteFailures>,
    /// The verifier's name, for the lines.
    pub model: String,
    /// With `[output] keep_rejected = false`: a rejected event's clips and snapshots are removed.
    pub rejected: Option<Arc<RejectedEvidence>>,
}

impl VerdictWriter {
    /// Writes the `verification` line, then alerts: the held `start` line first when confirmed.
    fn write(&self, short_name: &str, record: &VerificationRecord) {
        let rejected = record.verdict == VerdictField::Rejected;
        let removing = rejected && self.rejected.is_some();
        let with_evidence;
        let record = if removing {
            with_evidence = VerificationRecord { evidence: Some(EVIDENCE_REMOVED.into()), ..record.clone() };
            &with_evidence
        } else {
            record
        };
        let g = &self.gate;
        g.verified.fetch_add(1, Ordering::Relaxed);
        let counter = match (record.verdict, record.reason.as_deref()) {
            (VerdictField::Confirmed, _) => &g.confirmed,
            (VerdictField::Rejected, _) => &g.rejected,
            (VerdictField::Error, Some(OVERLOADED)) => &g.overloaded,
            (VerdictField::Error, _) => &g.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        match log.write_verification(record) {
            Ok(()) => {
                let (start, end) = g.settle(&record.event_id, record.verdict == VerdictField::Confirmed);
                if let Some(alerter) = &self.alerter {
                    if let Some(start) = start {
                        alerter.send(short_name, &start, None);
                    }
                    alerter.send(short_name, log.last_line(), None);
                    if let Some(end) = end {
                        alerter.send(short_name, &end, None);
                    }
                }
                drop(log);
                // The line says the files go: only now are they removed (or, when not final yet, once they are).
                if let Some(r) = &self.rejected {
                    r.verdict(&record.event_id, rejected);
                }
                self.write_failures.succeeded();
            }
            Err(e) => {
                drop(log);
                g.settle(&record.event_id, false);
                // No line says why they would be gone: the files stay.
                if let Some(r) = &self.rejected {
                    r.verdict(&record.event_id, false);
                }
                match e.error.io_error() {
                    Some((path, io)) => {
                        self.write_failures.failed(path, io);
                    }
                    None => warn!(event = %record.event_id, error = %e, "verification not written"),
                }
            }
        }
    }
}

/// `evidence` of a rejected event's `verification` line when its files are removed.
pub const EVIDENCE_REMOVED: &str = "removed";

/// `reason` of a verdict that could not be queued.
pub const OVERLOADED: &str = "overloaded";

/// An event's crops on their way to the verify thread.
pub(super) struct VerifyJob {
    /// The line to write; its `prompts` are the query's.
    pub record: VerificationRecord,
    pub short_name: String,
    /// The query's slot: its prompts are encoded once per slot (a slot never changes its query).
    pub query: usize,
    /// The query's `verify_threshold`.
    pub threshold: f32,
    pub frames: Vec<RgbImage>,
}

/// The `verify` thread: one verifier for every source.
pub(super) struct VerifyStage {
    pub verifier: Box<dyn Verifier>,
    /// Per query slot, its prompts encoded: the run's queries at the start, and those added over the control plane
    /// when their first event comes (encoded here, off the frame path).
    pub prompts: HashMap<usize, PromptSet>,
    pub rx: Receiver<VerifyJob>,
    pub writer: VerdictWriter,
    /// Turns on the cores with inference (see `turn.rs`): the verifier's graphs run only in its turn.
    pub turns: Arc<super::turn::Turns>,
}

impl VerifyStage {
    /// Verifies every job until every post stage has gone.
    pub(super) fn run(mut self) {
        while let Ok(mut job) = self.rx.recv() {
            if !self.prompts.contains_key(&job.query) {
                let _turn = self.turns.verifier();
                match self.verifier.encode(&job.record.prompts) {
                    Ok(p) => _ = self.prompts.insert(job.query, p),
                    Err(e) => warn!(query = %job.record.query, error = %e, "the verifier cannot take the prompts"),
                }
            }
            let result = match self.prompts.get(&job.query) {
                Some(prompts) => {
                    let _turn = self.turns.verifier();
                    self.verifier
                        .logits(&job.frames, prompts)
                        .map(|l| judge(&l, job.threshold))
                        .map_err(|e| e.to_string())
                }
                None => Err(format!("the verifier cannot take the prompts of query {:?}", job.record.query)),
            };
            match result {
                Ok((score, verdict)) => {
                    job.record.score = Some(score);
                    job.record.verdict = match verdict {
                        Verdict::Confirmed => VerdictField::Confirmed,
                        Verdict::Rejected => VerdictField::Rejected,
                    };
                }
                Err(e) => {
                    warn!(event = %job.record.event_id, error = %e, "verification failed");
                    job.record.reason = Some(e.to_string());
                }
            }
            self.writer.write(&job.short_name, &job.record);
        }
    }
}

/// Encodes each verifying query's prompts once, for the run, by query slot.
pub(super) fn encode_prompts(
    verifier: &mut dyn Verifier,
    queries: &[StandingQuery],
) -> crate::infer::Result<HashMap<usize, PromptSet>> {
    let mut prompts = HashMap::new();
    for (i, q) in queries.iter().enumerate() {
        if let Some(v) = &q.verify {
            prompts.insert(i, verifier.encode(&v.prompts())?);
        }
    }
    Ok(prompts)
}

/// One frame taken for an event.
struct Sample {
    index: u64,
    pts_s: f64,
    picture: Picture,
    bbox: PixelBox,
}

/// An event whose frames are being taken.
struct Collecting {
    event_id: String,
    query: usize,
    track_id: u64,
    t0: f64,
    samples: Vec<Sample>,
}

/// A post stage's side of verification: takes the frames of its source's events (see the module
/// documentation) and queues them for the verify thread.
pub(super) struct Collector {
    pub frames: usize,
    pub seconds: f64,
    /// The crop clip's margin rule.
    pub evidence: EvidenceSettings,
    pub tx: Sender<VerifyJob>,
    pub writer: VerdictWriter,
    /// Display name of the source (redacted in the line).
    pub source: String,
    pub short_name: String,
    pub queries: Vec<StandingQuery>,
    pending: Vec<Collecting>,
}

impl Collector {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        frames: usize,
        seconds: f64,
        evidence: EvidenceSettings,
        tx: Sender<VerifyJob>,
        writer: VerdictWriter,
        source: String,
        short_name: String,
        queries: Vec<StandingQuery>,
    ) -> Self {
        Collector { frames, seconds, evidence, tx, writer, source, short_name, queries, pending: Vec::new() }
    }

    /// A query added over the control plane (its slot is the next index).
    pub(super) fn add_query(&mut self, query: StandingQuery) {
        self.queries.push(query);
    }

    /// An event started: when its query verifies, its frames are taken from this frame on.
    pub(super) fn start(&mut self, ev: &LifecycleEvent) {
        if self.queries.get(ev.query).is_some_and(|q| q.verify.is_some()) {
            if let Some(r) = &self.writer.rejected {
                r.expect(&ev.event_id);
            }
            self.pending.push(Collecting {
                event_id: ev.event_id.clone(),
                query: ev.query,
                track_id: ev.track_id,
                t0: ev.at.pts_s,
                samples: Vec::with_capacity(self.frames),
            });
        }
    }

    /// Whether any event is waiting for frames.
    pub(super) fn is_collecting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes this frame for the events that want it, and hands on those whose window is complete.
    pub(super) fn on_frame(&mut self, at: &FrameTime, full: Option<&FullFrame>, tracks: &[TrackOutput]) {
        let mut done = Vec::new();
        for (k, c) in self.pending.iter_mut().enumerate() {
            if at.pts_s > c.t0 + self.seconds + 1e-9 {
                done.push(k);
                continue;
            }
            let due = c.t0 + self.seconds * c.samples.len() as f64 / self.frames as f64;
            if at.pts_s + 1e-9 >= due
                && let Some(full) = full
                && let Some(t) = tracks.iter().find(|t| t.track_id == c.track_id && t.query == c.query)
            {
                // A copy: the pipeline's buffer is not held while the window is open.
                let Some(mut picture) = Picture::black(full.format, full.width, full.height) else {
                    continue;
                };
                if full.copy_to(&mut picture).is_some() {
                    c.samples.push(Sample { index: at.frame, pts_s: at.pts_s, picture, bbox: t.bbox });
                }
            }
            if c.samples.len() >= self.frames {
                done.push(k);
            }
        }
        for k in done.into_iter().rev() {
            let c = self.pending.swap_remove(k);
            self.submit(c);
        }
    }

    /// The event ended: it is verified on the frames taken so far.
    pub(super) fn end(&mut self, event_id: &str) {
        if let Some(k) = self.pending.iter().position(|c| c.event_id == event_id) {
            let c = self.pending.swap_remove(k);
            self.submit(c);
        }
    }

    /// The stream ended: every event is verified on the frames taken so far.
    pub(super) fn finish(&mut self) {
        // In start order, so the lines come in the order of the events.
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_by(|a, b| a.t0.total_cmp(&b.t0));
        for c in pending {
            self.submit(c);
        }
    }

    fn submit(&mut self, c: Collecting) {
        let Some(q) = self.queries.get(c.query) else {
            return;
        };
        let prompts = q.verify.as_ref().map(|v| v.prompts()).unwrap_or_default();
        let mut record = VerificationRecord {
            kind: VerificationLineKind::Verification,
            event_id: c.event_id.clone(),
            source: self.source.clone(),
            query: q.text.clone(),
            label: q.label.clone(),
            track_id: c.track_id,
            wall_time: None,
            model: self.writer.model.clone(),
            score: None,
            verdict: VerdictField::Error,
            reason: None,
            prompts,
            frames: Vec::new(),
            seconds: 0.0,
            evidence: None,
        };
        let crops = crops(&c.samples, &self.evidence);
        if crops.is_empty() {
            record.reason = Some("no frame of the event's track could be cropped".into());
            self.writer.write(&self.short_name, &record);
            return;
        }
        let picked = spread(c.samples.len(), self.frames);
        record.frames = picked.iter().map(|&i| c.samples[i].index).collect();
        let (first, last) = (c.samples[0].pts_s, c.samples[c.samples.len() - 1].pts_s);
        record.seconds = ((last - first) * 1e6).round() / 1e6;
        let frames: Vec<RgbImage> = picked.iter().map(|&i| crops[i].clone()).collect();
        let threshold = q.verify.as_ref().map_or(crate::infer::verify::DEFAULT_VERIFY_THRESHOLD, |v| v.threshold);
        let job = VerifyJob { record, short_name: self.short_name.clone(), query: c.query, threshold, frames };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(mut job)) => {
                job.record.reason = Some(OVERLOADED.into());
                self.writer.write(&self.short_name, &job.record);
            }
            Err(TrySendError::Disconnected(mut job)) => {
                job.record.reason = Some("the verifier has stopped".into());
                self.writer.write(&self.short_name, &job.record);
            }
        }
    }
}

/// Each sample cropped to the union of the samples' boxes, with the crop clip's margin rule; empty when no
/// region can be made.
fn crops(samples: &[Sample], evidence: &EvidenceSettings) -> Vec<RgbImage> {
    let Some(first) = samples.first() else {
        return Vec::new();
    };
    let (w, h) = (first.picture.width(), first.picture.height());
    let Some(region) = CropRegion::around(samples.iter().map(|s| s.bbox), w, h, evidence) else {
        return Vec::new();
    };
    samples.iter().filter_map(|s| crop_rgb(&s.picture, &region)).collect()
}

/// The region of `picture` as RGB, converting only the region's pixels (I420 with the colour matrix
/// [`YuvMatrix::for_height`] picks, as [`Picture::to_rgb`]). `None` when the region is not inside the picture.
pub(super) fn crop_rgb(picture: &Picture, r: &CropRegion) -> Option<RgbImage> {
    let l = picture.layout();
    if r.x + r.width > l.width || r.y + r.height > l.height || r.width == 0 || r.height == 0 {
        return None;
    }
    let data = picture.data();
    let mut out = RgbImage::new(r.width, r.height);
    match l.format {
        PixelFormat::Rgb => {
            for (dy, row) in out.rows_mut().enumerate() {
                let y = r.y as usize + dy;
                let start = l.offsets[0] + y * l.strides[0] + r.x as usize * 3;
                for (dx, p) in row.enumerate() {
                    let s = start + dx * 3;
                    p.0 = [data[s], data[s + 1], data[s + 2]];
                }
            }
        }
        PixelFormat::I420 => {
            let m = YuvMatrix::for_height(l.height);
            for (dy, row) in out.rows_mut().enumerate() {
                let y = r.y as usize + dy;
                for (dx, p) in row.enumerate() {
                    let x = r.x as usize + dx;
                    let luma = data[l.offsets[0] + y * l.strides[0] + x];
                    let u = data[l.offsets[1] + (y / 2) * l.strides[1] + x / 2];
                    let v = data[l.offsets[2] + (y / 2) * l.strides[2] + x / 2];
                    p.0 = m.to_rgb([luma, u, v]);
                }
            }
        }
    }
    Some(out)
}

/// Whether `q`'s alerts wait for the verdict.
pub(super) fn alerts_wait(q: &StandingQuery) -> bool {
    q.verify.as_ref().is_some_and(|v| v.alert_on == AlertOn::Verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verify thread's priority is lowered, and only its own.
    #[test]
    fn only_the_calling_thread_is_lowered() {
        let prio = || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let here = prio();
        let there = std::thread::spawn(move || {
            let before = prio();
            lower_this_threads_priority(VERIFY_NICE);
            (before, prio())
        })
        .join()
        .unwrap();
        assert_eq!(there, (here, (here + VERIFY_NICE).min(19)));
        assert_eq!(prio(), here, "the test thread is as it was");
    }

    #[test]
    fn crop_of_i420_matches_the_whole_conversion() {
        gstreamer::init().expect("GStreamer initialises");
        let (w, h) = (64u32, 48u32);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let rgb_pic = Picture::from_rgb(w, h, &rgb).unwrap();
        let r = CropRegion { x: 10, y: 6, width: 20, height: 12, out_width: 20, out_height: 12 };
        let crop = crop_rgb(&rgb_pic, &r).unwrap();
        assert_eq!(
            crop.get_pixel(0, 0).0,
            [rgb[(6 * 64 + 10) * 3], rgb[(6 * 64 + 10) * 3 + 1], rgb[(6 * 64 + 10) * 3 + 2]]
        );
        // I420: the crop is the same pixels as the whole frame converted.
        let mut i420 = Picture::black(PixelFormat::I420, w, h).unwrap();
        {
            let (layout, data) = i420.parts_mut();
            let layout = *layout;
            for (k, b) in data.iter_mut().enumerate().take(layout.size) {
                *b = (k * 13 % 200 + 20) as u8;
            }
        }
        let whole = i420.to_rgb();
        let crop = crop_rgb(&i420, &r).unwrap();
        for (dx, dy, p) in crop.enumerate_pixels() {
            let s = (((r.y + dy) * w + r.x + dx) * 3) as usize;
            assert_eq!(p.0, [whole[s], whole[s + 1], whole[s + 2]], "at {dx},{dy}");
        }
        assert!(crop_rgb(&i420, &CropRegion { x: 60, ..r }).is_none(), "outside the picture");
    }

    /// A scripted verifier that tells when it starts an event and waits for leave to finish it: the test decides
    /// when the verify thread is busy.
    struct Gated {
        started: Sender<()>,
        go: Receiver<()>,
    }

    impl Verifier for Gated {
        fn name(&self) -> &str {
            "gated"
        }
        fn num_frames(&self) -> Option<usize> {
            None
        }
        fn encode(&mut self, prompts: &[String]) -> crate::infer::Result<PromptSet> {
            Ok(PromptSet::texts_only(prompts.to_vec()))
        }
        fn logits(&mut self, _: &[RgbImage], _: &PromptSet) -> crate::infer::Result<Vec<f32>> {
            let _ = self.started.send(());
            let _ = self.go.recv_timeout(std::time::Duration::from_secs(60));
            Ok(vec![2.0, 0.0])
        }
    }

    fn collecting(id: &str) -> Collecting {
        let picture = Picture::from_rgb(64, 48, &[90u8; 64 * 48 * 3]).unwrap();
        let bbox = PixelBox { x0: 10.0, y0: 10.0, x1: 30.0, y1: 30.0 };
        Collecting {
            event_id: id.into(),
            query: 0,
            track_id: 1,
            t0: 0.0,
            samples: vec![Sample { index: 5, pts_s: 0.2, picture, bbox }],
        }
    }

    #[test]
    fn a_full_queue_gives_overloaded_at_once_and_never_blocks() {
        gstreamer::init().expect("GStreamer initialises");
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path(), crate::sink::EventLogSettings { wall_time: false, ..Default::default() })
            .unwrap();
        let gate = Arc::new(AlertGate::default());
        let writer = VerdictWriter {
            log: Arc::new(Mutex::new(log)),
            alerter: None,
            gate: gate.clone(),
            write_failures: Arc::new(WriteFailures::new(dir.path())),
            model: "gated".into(),
            rejected: None,
        };
        let mut query = StandingQuery::from_text("a person", None);
        query.verify = Some(crate::config::QueryVerify::with_defaults("a person falling"));
        let (started_tx, started_rx) = crossbeam_channel::bounded(4);
        let (go_tx, go_rx) = crossbeam_channel::bounded(4);
        let mut verifier = Gated { started: started_tx, go: go_rx };
        let prompts = encode_prompts(&mut verifier, std::slice::from_ref(&query)).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let stage = VerifyStage {
            verifier: Box::new(verifier),
            prompts,
            rx,
            writer: writer.clone(),
            turns: Default::default(),
        };
        let thread = std::thread::spawn(move || stage.run());
        let mut c =
            Collector::new(8, 2.0, EvidenceSettings::default(), tx, writer, "cam".into(), "cam".into(), vec![query]);
        // a: taken by the verifier, which then waits; b: in the queue (capacity 1); c: the queue is full.
        c.submit(collecting("a"));
        started_rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap();
        c.submit(collecting("b"));
        c.submit(collecting("c"));
        let read = || std::fs::read_to_string(dir.path().join(crate::sink::EVENTS_FILE_NAME)).unwrap();
        let first: serde_json::Value = serde_json::from_str(read().lines().next().unwrap()).unwrap();
        assert_eq!(first["event_id"], "c");
        assert_eq!((first["verdict"].as_str(), first["reason"].as_str()), (Some("error"), Some("overloaded")));
        assert!(first["score"].is_null());
        go_tx.send(()).unwrap();
        go_tx.send(()).unwrap();
        drop(c);
        thread.join().unwrap();
        let lines: Vec<serde_json::Value> = read().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let verdicts: Vec<(&str, &str)> =
            lines.iter().map(|l| (l["event_id"].as_str().unwrap(), l["verdict"].as_str().unwrap())).collect();
        assert_eq!(verdicts, [("c", "error"), ("a", "confirmed"), ("b", "confirmed")]);
        // One frame taken, spread over the 8 the verifier sees.
        assert_eq!(lines[1]["frames"], serde_json::json!([5, 5, 5, 5, 5, 5, 5, 5]));
        assert_eq!(
            gate.summary(),
            VerifySummary {
                verified: 3,
                confirmed: 2,
                rejected: 0,
                overloaded: 1,
                errors: 0,
                precision: None,
                inference_waited_ms: 0,
                verifier_ms: 0
            }
        );
    }

    #[test]
    fn the_gate_holds_the_start_until_confirmed() {
        let g = AlertGate::default();
        g.hold_start("a", b"start-a");
        g.hold_start("b", b"start-b");
        g.hold_start("c", b"start-c");
        assert!(!g.may_alert("a", b"update-a", false), "not before the verdict");
        assert_eq!(g.settle("a", true), (Some(b"start-a".to_vec()), None));
        assert!(g.may_alert("a", b"update-a", false) && g.may_alert("a", b"end-a", true));
        assert_eq!(g.settle("b", false), (None, None), "a rejected start is never sent");
        assert!(!g.may_alert("b", b"end-b", true));
        // An end before the verdict is held, and sent after it when confirmed.
        assert!(!g.may_alert("c", b"end-c", true));
        assert_eq!(g.settle("c", true), (Some(b"start-c".to_vec()), Some(b"end-c".to_vec())));
        assert!(g.lock().is_empty(), "entries go once ended and settled");
        assert!(!g.may_alert("unknown", b"x", false));
    }
}
