//! A clip worker (`clip-<n>`): takes the oldest queued clip, cuts its span out of the source's recording into
//! one MP4 ([`crate::sink::recording::cut`]), makes the evidence and writes the `clips` line.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tracing::{debug, warn};

use super::{ClipSettings, FinishJob, FrameBox, NO_SPACE, Outputs};
use crate::sink::events::{Clips, ClipsRecord, ClipsStatus};
use crate::sink::recording::Gap;
use crate::sink::recording::cut::{self, CutError};

/// Why a clip or its evidence was left unfinished when a stop ran out of time.
const STOP_LIMIT: &str = "the stop's time limit ([output] shutdown_timeout_s) ran out first";

/// A clip worker thread.
pub(super) struct Worker {
    pub(super) settings: Arc<ClipSettings>,
    pub(super) outputs: Outputs,
}

impl Worker {
    pub(super) fn run(self, rx: Receiver<FinishJob>) {
        while let Ok(job) = rx.recv() {
            self.outputs.stats.taken();
            let pin = job.pin;
            let recording = job.recording.clone();
            self.finish(job);
            if let (Ok(r), Some(pin)) = (recording, pin) {
                r.unpin(pin);
            }
            self.outputs.stats.done();
        }
    }

    fn finish(&self, job: FinishJob) {
        if self.outputs.deadline().is_some_and(|d| Instant::now() >= d) {
            return self.not_finished(job);
        }
        let mut deadline = Instant::now() + Duration::from_millis(self.settings.finish_timeout_ms);
        if let Some(stop) = self.outputs.deadline() {
            deadline = deadline.min(stop);
        }
        let final_path = job.dir.join(format!("{}.mp4", job.record.event_id));
        let result = self.cut(&job, &final_path, deadline);
        let mut clips = job.planned.clone();
        let mut snapshot = None;
        match result {
            Ok((clip_start_s, gaps, note)) => {
                clips.status = ClipsStatus::Written;
                debug!(event = %job.record.event_id, clip_start_s, "clip written");
                if self.settings.make_evidence && self.outputs.deadline().is_some_and(|d| Instant::now() >= d) {
                    // The full clip is whole; what is made from it would go past the stop's limit.
                    (clips.crop_clip, clips.snapshot, clips.crop_snapshot, clips.sidecar) = (None, None, None, None);
                    clips.status = ClipsStatus::Failed;
                    clips.error = Some(format!("the clip is written, its evidence is not: {STOP_LIMIT}"));
                } else if self.outputs.rejected.as_ref().is_some_and(|r| r.is_rejected(&job.record.event_id)) {
                    // Rejected already, with keep_rejected = false: the evidence would be removed at once.
                    (clips.crop_clip, clips.snapshot, clips.crop_snapshot, clips.sidecar) = (None, None, None, None);
                } else if self.settings.make_evidence {
                    snapshot = self.evidence(&job, &final_path, clip_start_s, gaps, &mut clips);
                    // Its decoder and encoder are gone: what they freed goes back to the system.
                    crate::memory::release_free_heap();
                }
                if let (Some(note), ClipsStatus::Written) = (note, clips.status) {
                    debug!(event = %job.record.event_id, %note, "clip cut short");
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
        if let Some(r) = &self.outputs.rejected {
            r.clips_final(&job.record.event_id, &mut clips);
        }
        let snapshot = snapshot.filter(|_| clips.status != ClipsStatus::Removed);
        let record = ClipsRecord { clips, ..job.record };
        self.outputs.write(&job.short_name, &record, snapshot.as_deref());
    }

    /// Cuts the clip: returns the stream time of its first frame, the gaps in it, and why it ends early if it
    /// does.
    fn cut(&self, job: &FinishJob, out: &Path, deadline: Instant) -> Result<(f64, Vec<Gap>, Option<String>), String> {
        let recording = job.recording.as_ref().map_err(|e| format!("the source has no recording: {e}"))?;
        let written = cut::span_of_run(recording, job.from_s, job.to_s, deadline).and_then(|mut span| {
            cut::write_span(&mut span, out, &self.settings.encoder, deadline).map(|w| (w, span.gaps))
        });
        match written {
            Ok((w, gaps)) => {
                let gaps = gaps.into_iter().filter(|g| g.at_s >= w.first_s && g.at_s <= w.end_s).collect();
                Ok((w.first_s, gaps, w.cut_short))
            }
            Err(CutError::Nothing(_)) if !recording.any_packet() => Err(format!(
                "no encoded video packets came from {}: its video is raw (not compressed), so there is \
                 nothing to cut a clip from; for a camera, choose its MJPEG or H.264 mode",
                crate::redact::redact_url(&job.record.source)
            )),
            // The recording had no room to keep this span: the disk is full (reported once for the run).
            Err(e) if recording.no_room() => Err(format!("{e}: the recording is paused: {NO_SPACE}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A stop's limit came before this clip's turn: nothing is written, and the `clips` line says it was not
    /// finished.
    fn not_finished(&self, job: FinishJob) {
        let mut clips = job.planned.clone();
        (clips.clip, clips.crop_clip, clips.snapshot, clips.crop_snapshot, clips.sidecar) =
            (None, None, None, None, None);
        clips.status = ClipsStatus::Failed;
        clips.error = Some(format!("not finished: {STOP_LIMIT}"));
        warn!(event = %job.record.event_id, "clip not finished before the stop's time limit");
        let record = ClipsRecord { clips, ..job.record };
        self.outputs.write(&job.short_name, &record, None);
    }

    /// The crop clip, snapshots and sidecar (crate::sink::evidence), from the complete clip; null paths for what
    /// could not be written, and their errors in `clips.error` (status `failed`). Returns the full snapshot.
    fn evidence(
        &self,
        job: &FinishJob,
        clip: &Path,
        clip_start_s: f64,
        gaps: Vec<Gap>,
        clips: &mut Clips,
    ) -> Option<Vec<u8>> {
        use crate::sink::evidence as ev;
        let s = &self.settings.evidence;
        let id = &job.record.event_id;
        // The boxes of the frames in the clip (the history reaches back further than its keyframe).
        let boxes: Vec<FrameBox> = job.boxes.iter().filter(|b| b.pts_s >= clip_start_s - 1e-6).copied().collect();
        let mut sidecar =
            ev::Sidecar::new(&job.event, &job.record.source, &job.record.query, &job.record.label, clip_start_s, boxes);
        sidecar.gaps = gaps;
        let mut errors = Vec::new();
        let peak = &job.event.peak;
        let peak = FrameBox { frame: peak.at.frame, pts_s: peak.at.pts_s, bbox: peak.bbox, score: peak.score };
        // One set of boxes for both crops, so that they are cut to one region at one size.
        let event_boxes = ev::EventBoxes { frames: &sidecar.frames, peak };
        match ev::write_crop_clip(clip, clip_start_s, &event_boxes, &job.dir.join(format!("{id}-crop.mp4")), s) {
            Ok(region) => sidecar.crop = Some(region),
            Err(e) => {
                errors.push(e.to_string());
                clips.crop_clip = None;
                sidecar.files.crop_clip = None;
            }
        }
        let full_out = job.dir.join(format!("{id}.jpg"));
        let crop_out = job.dir.join(format!("{id}-crop.jpg"));
        let label = &job.record.label;
        let snapshot = match ev::write_snapshots(clip, clip_start_s, &event_boxes, label, &full_out, &crop_out, s) {
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
