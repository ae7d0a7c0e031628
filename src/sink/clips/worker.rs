//! A clip worker (`clip-<n>`): owns the pipelines of the recordings routed to it. Start builds a clip's pipeline
//! and hands it the feed; Finish ends the stream, waits for the muxer (with a deadline), renames the clip into
//! place, makes the evidence and writes the `clips` line.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tracing::{debug, warn};

use super::{ClipSettings, FinishJob, FrameBox, Job, NO_SPACE, Outputs, StartJob};
use crate::gst::bus::{self, WaitError};
use crate::gst::part::{PartError, PartFile, PartName};
use crate::sink::events::{Clips, ClipsRecord, ClipsStatus};

/// Why a clip or its evidence was left unfinished when a stop ran out of time.
const STOP_LIMIT: &str = "the stop's time limit ([output] shutdown_timeout_s) ran out first";

/// A clip pipeline being fed.
pub(super) struct Running {
    pipeline: gst::Pipeline,
    /// `.<event-id>.mp4.part`, which the pipeline's filesink writes.
    part: PartFile,
}

impl Running {
    /// Stops the pipeline and removes its `.part`.
    fn abandon(self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        drop(self.part);
    }
}

/// A clip worker thread: owns the pipelines of the recordings routed to it.
pub(super) struct Worker {
    pub(super) settings: Arc<ClipSettings>,
    pub(super) outputs: Outputs,
    pub(super) running: HashMap<u64, Running>,
}

impl Worker {
    pub(super) fn run(mut self, rx: Receiver<Job>) {
        while let Ok(job) = rx.recv() {
            match job {
                Job::Start(j) => self.start(j),
                Job::Finish(j) => self.finish(*j),
            }
        }
        // Recordings whose Finish never came (a full queue): nothing under a final name, no `.part` left.
        for (_, r) in self.running.drain() {
            r.abandon();
        }
    }

    /// Builds the clip's pipeline and hands it the feed. Without caps yet (no packet has come), the feed keeps
    /// buffering and Finish tries again.
    fn start(&mut self, job: StartJob) {
        let Some(caps) = job.feed.caps() else { return };
        let part = match PartFile::named(&job.out, PartName::Hidden) {
            Ok(part) => part,
            Err(e) => return job.feed.fail(e.to_string()),
        };
        match build_clip_pipeline(&caps, part.part_path(), &self.settings.encoder) {
            Ok((pipeline, appsrc)) => {
                if job.feed.go_live(appsrc) {
                    self.running.insert(job.id, Running { pipeline, part });
                } else {
                    Running { pipeline, part }.abandon();
                }
            }
            Err(e) => job.feed.fail(e),
        }
    }

    fn finish(&mut self, mut job: FinishJob) {
        if self.outputs.deadline().is_some_and(|d| Instant::now() >= d) {
            return self.not_finished(job);
        }
        if !self.running.contains_key(&job.id) {
            self.start(StartJob { id: job.id, feed: job.feed.clone(), out: job.out.clone() });
        }
        let running = self.running.remove(&job.id);
        let (appsrc, summary) = job.feed.finish();
        let final_path = job.dir.join(format!("{}.mp4", job.record.event_id));
        let result = match (running, appsrc, summary.error.clone()) {
            (Some(r), _, Some(error)) => {
                r.abandon();
                Err(error)
            }
            (_, _, Some(error)) => Err(error),
            (Some(r), Some(appsrc), None) if summary.packets > 0 => {
                self.complete(r, &appsrc, &final_path).map(|()| summary.first_pts_ns)
            }
            (r, _, None) => {
                if let Some(r) = r {
                    r.abandon();
                }
                Err(format!(
                    "no encoded video packets came from {}: its video is raw (not compressed), so there is \
                     nothing to cut a clip from; for a camera, choose its MJPEG or H.264 mode",
                    crate::redact::redact_url(&job.record.source)
                ))
            }
        };
        // The pipeline is closed: its place goes to the next event. The evidence below reads the file.
        drop(job.slot.take());
        let mut clips = job.planned.clone();
        let mut snapshot = None;
        match result {
            Ok(first_pts_ns) => {
                clips.status = ClipsStatus::Written;
                let clip_start_s = first_pts_ns.map_or(0.0, |ns| ns as f64 / 1e9 + job.offset_s);
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
                    snapshot = self.evidence(&job, &final_path, clip_start_s, &mut clips);
                    // Its decoder and encoder are gone: what they freed goes back to the system.
                    crate::memory::release_free_heap();
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

    /// A stop's limit came before this clip's turn: nothing is written (its `.part` goes with its pipeline), and
    /// the `clips` line says it was not finished.
    fn not_finished(&mut self, mut job: FinishJob) {
        if let Some(r) = self.running.remove(&job.id) {
            r.abandon();
        }
        let _ = job.feed.finish();
        drop(job.slot.take());
        let mut clips = job.planned.clone();
        (clips.clip, clips.crop_clip, clips.snapshot, clips.crop_snapshot, clips.sidecar) =
            (None, None, None, None, None);
        clips.status = ClipsStatus::Failed;
        clips.error = Some(format!("not finished: {STOP_LIMIT}"));
        warn!(event = %job.record.event_id, "clip not finished before the stop's time limit");
        let record = ClipsRecord { clips, ..job.record };
        self.outputs.write(&job.short_name, &record, None);
    }

    /// EOS, wait for the muxer, rename into place.
    fn complete(&self, r: Running, appsrc: &gst_app::AppSrc, final_path: &Path) -> Result<(), String> {
        let _ = appsrc.end_of_stream();
        let mut deadline = Instant::now() + Duration::from_millis(self.settings.finish_timeout_ms);
        if let Some(stop) = self.outputs.deadline() {
            deadline = deadline.min(stop);
        }
        let outcome = wait_eos(&r.pipeline, deadline);
        let _ = r.pipeline.set_state(gst::State::Null);
        if let Err(e) = outcome {
            // Dropping the part removes it.
            return Err(format!("writing {} failed: {e}", final_path.display()));
        }
        // On disk before it gets its final name, so that not even a power cut leaves a broken file under it.
        match r.part.finish() {
            Ok(_) => Ok(()),
            Err(e @ (PartError::Rename { .. } | PartError::Exists { .. })) => Err(e.to_string()),
            Err(e) => Err(format!("writing {} failed: {e}", final_path.display())),
        }
    }

    /// The crop clip, snapshots and sidecar (crate::sink::evidence), from the complete clip; null paths for what
    /// could not be written, and their errors in `clips.error` (status `failed`). Returns the full snapshot.
    fn evidence(&self, job: &FinishJob, clip: &Path, clip_start_s: f64, clips: &mut Clips) -> Option<Vec<u8>> {
        use crate::sink::evidence as ev;
        let s = &self.settings.evidence;
        let id = &job.record.event_id;
        // The boxes of the frames in the clip (the history reaches back further than its keyframe).
        let boxes: Vec<FrameBox> = job.boxes.iter().filter(|b| b.pts_s >= clip_start_s - 1e-6).copied().collect();
        let mut sidecar =
            ev::Sidecar::new(&job.event, &job.record.source, &job.record.query, &job.record.label, clip_start_s, boxes);
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

/// `appsrc ! h264parse|h265parse ! mp4mux ! filesink` for H.264/H.265 (a remux); for any other codec
/// `appsrc ! decodebin ! <encoder> ! mp4mux ! filesink` (a transcode; the encoder fragment ends in h264parse).
/// Playing.
fn build_clip_pipeline(
    caps: &gst::Caps,
    tmp: &Path,
    encoder: &str,
) -> Result<(gst::Pipeline, gst_app::AppSrc), String> {
    let codec = caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
    // Packets the source's parser has already framed as mp4mux takes them go straight in: a second parser would
    // re-derive their timestamps, and GstBaseParse leaves without a PTS a buffer whose PTS repeats the one before
    // it (files with broken timestamps have such runs): mp4mux then fails the whole clip ("Buffer has no PTS").
    let ready_for_mp4 = caps.structure(0).is_some_and(|s| {
        matches!(s.get::<&str>("stream-format"), Ok("avc" | "avc3" | "hvc1" | "hev1"))
            && s.get::<&str>("alignment") == Ok("au")
    });
    let middle = match codec.as_str() {
        // (The caps filter makes mp4mux give a video pad.)
        "video/x-h264" | "video/x-h265" if ready_for_mp4 => codec.clone(),
        "video/x-h264" => "h264parse".to_string(),
        "video/x-h265" => "h265parse".to_string(),
        _ => format!("decodebin ! {encoder}"),
    };
    let desc = format!(
        "appsrc name=src format=time is-live=false block=false max-bytes=0 ! {middle} ! mp4mux ! filesink name=sink"
    );
    let pipeline = gst::parse::launch(&desc)
        .map_err(|e| format!("clip pipeline for {codec} does not build: {e}; check the encoder `{encoder}`"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "clip pipeline is not a pipeline".to_string())?;
    let appsrc = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .ok_or_else(|| "clip pipeline has no appsrc".to_string())?;
    appsrc.set_caps(Some(caps));
    let sink = pipeline.by_name("sink").ok_or_else(|| "clip pipeline has no filesink".to_string())?;
    sink.set_property("location", tmp.to_string_lossy().as_ref());
    if pipeline.set_state(gst::State::Playing).is_err() {
        let _ = pipeline.set_state(gst::State::Null);
        return Err(format!("clip pipeline for {codec} could not start writing {}", tmp.display()));
    }
    Ok((pipeline, appsrc))
}

/// Waits for EOS (or an error) on the pipeline's bus until `deadline` ([`bus::wait_eos`]). Never spins: a wait
/// that returns nothing well before the deadline (a bus without a poll, GStreamer's state when the process is out
/// of file descriptors, or a flushing bus) fails the clip at once.
fn wait_eos(pipeline: &gst::Pipeline, deadline: Instant) -> Result<(), String> {
    bus::wait_eos(pipeline, deadline).map_err(wait_error)
}

/// [`wait_eos`] with `pop(left)`: the bus's next EOS or error within `left` (the tests' seam).
#[cfg(test)]
fn wait_eos_with(deadline: Instant, pop: impl FnMut(Duration) -> Option<gst::Message>) -> Result<(), String> {
    bus::wait_for_with(deadline, pop).map(drop).map_err(wait_error)
}

/// A clip's error for a wait on its pipeline's bus that did not see EOS.
fn wait_error(e: WaitError) -> String {
    match e {
        WaitError::NoBus => "the clip pipeline has no bus".into(),
        WaitError::Timeout => "the muxer did not finish in time".into(),
        WaitError::Broken => {
            "could not wait on the clip pipeline's bus (is the process out of file descriptors?)".into()
        }
        WaitError::Error(m) => {
            let from = m.src().map(|s| s.name().to_string()).unwrap_or_default();
            let gst::MessageView::Error(e) = m.view() else { return format!("an error ({from})") };
            if e.error().matches(gst::ResourceError::NoSpaceLeft) {
                return format!("{} ({from}): {NO_SPACE}", e.error());
            }
            format!("{} ({from})", e.error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_eos_fails_at_once_on_a_bus_it_cannot_wait_on() {
        gst::init().unwrap();
        // A bus without a poll returns nothing at once (after a GStreamer-CRITICAL): one try, not a loop.
        let mut tries = 0;
        let started = Instant::now();
        let error = wait_eos_with(Instant::now() + Duration::from_secs(10), |_| {
            tries += 1;
            None
        })
        .unwrap_err();
        assert_eq!(tries, 1);
        assert!(started.elapsed() < Duration::from_secs(1), "returned after {:?}", started.elapsed());
        assert!(error.contains("could not wait on the clip pipeline's bus"), "{error}");
        // A real bus that just has nothing waits until the deadline, and says the muxer was too slow.
        let quiet = gst::parse::launch("fakesrc ! fakesink").unwrap().downcast::<gst::Pipeline>().unwrap();
        let started = Instant::now();
        let error = wait_eos(&quiet, Instant::now() + Duration::from_millis(200)).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(180), "{:?}", started.elapsed());
        assert!(error.contains("did not finish in time"), "{error}");
    }
}
