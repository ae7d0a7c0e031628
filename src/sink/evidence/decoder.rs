//! A clip decoded to RGB frames on request, for the snapshots (and the crop clip's frame size).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::pipeline::{Pipeline, RunError, run_error_text};
use super::{EvidenceError, PIPELINE_TIMEOUT, PREROLL_TIMEOUT};

/// A clip decoded to RGB frames on request: prerolled on its first frame, which gives the size and the first
/// timestamp, and seeked from there.
pub(super) struct RgbDecoder {
    path: PathBuf,
    pipeline: Pipeline,
    sink: gst_app::AppSink,
    pub(super) info: gst_video::VideoInfo,
    first: gst::Sample,
    first_pts: Duration,
}

impl RgbDecoder {
    pub(super) fn open(path: &Path) -> Result<Self, EvidenceError> {
        let bad = |message: String| EvidenceError::BadClip { path: path.to_path_buf(), message };
        // max-buffers bounds the decoded frames waiting here; the pipeline blocks until they are taken.
        let pipeline = Pipeline::launch(
            "filesrc name=src ! decodebin ! videoconvert ! video/x-raw,format=RGB \
             ! appsink name=sink sync=false max-buffers=2 enable-last-sample=false",
        )
        .map_err(bad)?;
        pipeline.element("src").map_err(bad)?.set_property("location", path);
        let sink = pipeline
            .element("sink")
            .map_err(bad)?
            .downcast::<gst_app::AppSink>()
            .map_err(|_| bad("sink is not an appsink".into()))?;
        let deadline = Instant::now() + PREROLL_TIMEOUT;
        pipeline.set_state(gst::State::Paused).map_err(|e| bad(run_error_text(e)))?;
        let msg = pipeline.wait_for(&[gst::MessageType::AsyncDone, gst::MessageType::Eos], deadline).map_err(|e| {
            bad(match e {
                RunError::Timeout => format!(
                    "no frame was decoded within {} s; it is incomplete or holds no video",
                    PREROLL_TIMEOUT.as_secs()
                ),
                e => run_error_text(e),
            })
        })?;
        if let gst::MessageView::Eos(_) = msg.view() {
            return Err(bad("it has no video frames".into()));
        }
        let first = sink
            .try_pull_preroll(gst::ClockTime::from_seconds(5))
            .ok_or_else(|| bad("it has no video frames".into()))?;
        let caps = first.caps().ok_or_else(|| bad("the first frame has no caps".into()))?;
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| bad(format!("unexpected caps {caps}: {e}")))?;
        let first_pts = stream_time(&first).unwrap_or_default();
        Ok(RgbDecoder { path: path.to_path_buf(), pipeline, sink, info, first, first_pts })
    }

    /// Nominal duration of one frame (40 ms when the clip does not say).
    fn frame_duration(&self) -> Duration {
        let fps = self.info.fps();
        if fps.numer() > 0 && fps.denom() > 0 {
            Duration::from_secs_f64(fps.denom() as f64 / fps.numer() as f64)
        } else {
            Duration::from_millis(40)
        }
    }

    /// The frame whose time is nearest `offset_s` seconds after the first frame's.
    pub(super) fn frame_nearest(&mut self, offset_s: f64) -> Result<image::RgbImage, EvidenceError> {
        let bad = |message: String| EvidenceError::BadClip { path: self.path.clone(), message };
        let frame = self.frame_duration();
        let offset = Duration::from_secs_f64(offset_s.clamp(0.0, 1e9));
        if offset <= frame / 2 {
            return self.to_image(&self.first.clone());
        }
        let target = self.first_pts + offset;
        // Accurate seek to a frame before the target: the decoder starts at the keyframe before and drops the
        // frames before the seek position, and the frames from there are compared with the target.
        let mut seek_to = target.saturating_sub(frame);
        if let Some(duration) = self.pipeline.0.query_duration::<gst::ClockTime>() {
            let duration = Duration::from_nanos(duration.nseconds());
            seek_to = seek_to.min(duration.saturating_sub(frame * 2));
        }
        self.pipeline
            .0
            .seek_simple(
                gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                gst::ClockTime::from_nseconds(seek_to.as_nanos() as u64),
            )
            .map_err(|e| bad(format!("cannot seek to {:.3} s: {e}", seek_to.as_secs_f64())))?;
        self.pipeline.set_state(gst::State::Playing).map_err(|e| bad(run_error_text(e)))?;

        let deadline = Instant::now() + PIPELINE_TIMEOUT;
        let mut best: Option<(Duration, gst::Sample)> = None;
        // Bounded: the frames from the seek position until one past the target, or the end of the clip.
        loop {
            if Instant::now() >= deadline {
                return Err(bad(format!("no frame decoded within {} s", PIPELINE_TIMEOUT.as_secs())));
            }
            // Short pulls, so that a failed pipeline (which sends no more frames) is noticed on its bus.
            let Some(sample) = self.sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) else {
                if self.sink.is_eos() {
                    break;
                }
                if let Some(e) = self.pipeline.error_within(Duration::ZERO) {
                    return Err(bad(run_error_text(e)));
                }
                continue;
            };
            let Some(pts) = stream_time(&sample) else { continue };
            let distance = pts.abs_diff(target);
            if best.as_ref().is_none_or(|(d, _)| distance < *d) {
                best = Some((distance, sample));
            }
            if pts >= target {
                break;
            }
        }
        match best {
            Some((_, sample)) => self.to_image(&sample),
            None => self.to_image(&self.first.clone()),
        }
    }

    /// The sample's frame as a packed RGB image.
    fn to_image(&self, sample: &gst::Sample) -> Result<image::RgbImage, EvidenceError> {
        let bad = |message: String| EvidenceError::BadClip { path: self.path.clone(), message };
        let buffer = sample.buffer().ok_or_else(|| bad("a decoded frame has no buffer".into()))?;
        let info = match sample.caps() {
            Some(caps) => gst_video::VideoInfo::from_caps(caps).map_err(|e| bad(format!("unexpected caps: {e}")))?,
            None => self.info.clone(),
        };
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
            .map_err(|e| bad(format!("cannot map a decoded frame: {e}")))?;
        let (width, height) = (info.width(), info.height());
        let stride = frame.plane_stride()[0] as usize;
        let data = frame.plane_data(0).map_err(|e| bad(format!("cannot read a decoded frame: {e}")))?;
        let row = width as usize * 3;
        let mut pixels = Vec::with_capacity(row * height as usize);
        for y in 0..height as usize {
            let start = y * stride;
            let line = data.get(start..start + row).ok_or_else(|| bad("a decoded frame is too short".into()))?;
            pixels.extend_from_slice(line);
        }
        image::RgbImage::from_raw(width, height, pixels).ok_or_else(|| bad("a decoded frame is too short".into()))
    }
}

/// The stream time of the sample's buffer.
fn stream_time(sample: &gst::Sample) -> Option<Duration> {
    let pts = sample.buffer()?.pts()?;
    let time = match sample.segment().and_then(|s| s.downcast_ref::<gst::ClockTime>()) {
        Some(segment) => segment.to_stream_time(pts)?,
        None => pts,
    };
    Some(Duration::from_nanos(time.nseconds()))
}
