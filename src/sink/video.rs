//! The annotated video: I420 or RGB frames encoded to H.264 in an MP4 through GStreamer.
//!
//! ```text
//! appsrc (I420 or RGB, time format, not live, blocks when max_queued_frames are queued)
//!   [─ videoscale to even size] ─ encoder ─ mp4mux ─ filesink <name>.part
//! encoder: the pipeline template's (`template_encoder`, e.g. nvvidconv ! nvv4l2h264enc ! h264parse on a Jetson)
//!          or the built-in one: videoconvert ─ I420 ─ x264enc | openh264enc ─ h264parse
//! ```
//!
//! A template encoder that cannot be made or started is replaced by the built-in one, with a warning: a Jetson
//! whose encoder is busy or missing in a container still records.
//!
//! The file is written as `<name>.part` and renamed to `<name>` only after end-of-stream reached the sink
//! and the file was synced, so a file under the final name is always complete and plays: mp4mux writes the
//! index (`moov`) last, and a file cut before it does not play.
//!
//! `push` blocks while the encoder is behind (backpressure, bounded by `max_queued_frames`): a file source
//! simply slows down, and the caller of a live source decides what to drop before pushing.
//!
//! # Threads and states
//!
//! The caller's thread pushes frames and finishes. One named thread (`video-bus`) watches the pipeline's
//! bus and records the outcome in `Shared`: end-of-stream, or the first error. On an error it also sets
//! the pipeline to NULL, which wakes a `push` blocked on a full queue (it returns at once with the error)
//! instead of leaving it blocked forever on a pipeline that no longer drains (a full disk, for one).
//!
//! | outcome  | set by                  | then                                                   |
//! |----------|-------------------------|--------------------------------------------------------|
//! | Running  | creation                | `push` works                                           |
//! | Eos      | bus thread, on EOS      | `finish` syncs and renames `.part` to the final name   |
//! | Failed   | bus thread, on an error | `push` and `finish` return the error; `.part` removed  |
//!
//! `Shared::outcome` is the only lock; it is never held while calling into GStreamer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::SinkError;
use crate::gst::bus::{self, WaitError};
use crate::gst::part::{PartError, PartFile, PartName};
use crate::picture::{Picture, PixelFormat};

const X264_HINT: &str = "install gstreamer1.0-plugins-ugly (x264enc), or choose the openh264 encoder";
const OPENH264_HINT: &str = "install gstreamer1.0-plugins-bad (openh264enc), or choose the x264 encoder";
/// Name of the application message that tells the bus thread to stop.
const STOP_MESSAGE: &str = "lookout-video-writer-stop";

/// Which H.264 encoder to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoEncoder {
    /// x264enc when it is installed, else openh264enc.
    #[default]
    Auto,
    /// x264enc (gstreamer1.0-plugins-ugly).
    X264,
    /// openh264enc (gstreamer1.0-plugins-bad), for where x264 is not installed.
    OpenH264,
}

/// x264's speed/quality preset: faster presets cost less CPU and give larger files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpeedPreset {
    Ultrafast,
    Superfast,
    #[default]
    Veryfast,
    Faster,
    Fast,
    Medium,
}

impl SpeedPreset {
    /// The name x264enc's `speed-preset` property knows it by.
    pub fn as_str(self) -> &'static str {
        match self {
            SpeedPreset::Ultrafast => "ultrafast",
            SpeedPreset::Superfast => "superfast",
            SpeedPreset::Veryfast => "veryfast",
            SpeedPreset::Faster => "faster",
            SpeedPreset::Fast => "fast",
            SpeedPreset::Medium => "medium",
        }
    }
}

/// Default [`VideoSettings::key_int_max`].
pub const DEFAULT_KEY_INT_MAX: u32 = 60;
/// x264's constant-quality level (`pass=qual quantizer=`) when no bitrate is set; the generic template's too.
const X264_QUANTIZER: u32 = 24;
/// The bitrate x264 may not exceed at constant quality, in kbit/s.
const X264_QUALITY_CAP_KBPS: u32 = 8192;
/// Default [`VideoSettings::bitrate_kbps`].
pub const DEFAULT_BITRATE_KBPS: u32 = 0;
/// Bitrate given to openh264enc when [`VideoSettings::bitrate_kbps`] is 0 (its own default, 128 kbit/s, is
/// far too low for annotated video).
pub const OPENH264_FALLBACK_BITRATE_KBPS: u32 = 2048;
/// Default [`VideoSettings::max_queued_frames`].
pub const DEFAULT_MAX_QUEUED_FRAMES: u32 = 4;
/// Default [`VideoSettings::finish_timeout_ms`].
pub const DEFAULT_FINISH_TIMEOUT_MS: u64 = 30_000;

/// What the user sets for one annotated video.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoSettings {
    /// Frame width in pixels. An odd width is scaled down to an even one (H.264 in 4:2:0 needs even sizes).
    pub width: u32,
    /// Frame height in pixels; odd heights as for `width`.
    pub height: u32,
    /// Frame rate numerator (frames per `fps_d` seconds); must be positive.
    pub fps_n: u32,
    /// Frame rate denominator; must be positive.
    pub fps_d: u32,
    /// Pixel format of the frames pushed: RGB ([`VideoWriter::push`]) or I420 ([`VideoWriter::push_picture`],
    /// which takes RGB pictures too). Default RGB.
    pub format: PixelFormat,
    /// The built-in encoder, used when `template_encoder` is `None` or fails. Default [`VideoEncoder::Auto`].
    pub encoder: VideoEncoder,
    /// The pipeline template's encoder fragment ([`crate::gst::usable_encoder`] with
    /// [`crate::gst::EncoderPurpose::Record`]): raw video in, parsed H.264 out. When set it is tried first and
    /// the built-in settings below (`speed_preset` to `bitrate_kbps`) do not apply to it. Default `None`.
    pub template_encoder: Option<String>,
    /// x264 only. Default [`SpeedPreset::Veryfast`].
    pub speed_preset: SpeedPreset,
    /// x264 only: `tune=zerolatency` (no B-frames, no lookahead: less delay and memory, larger files).
    /// Default false.
    pub zerolatency: bool,
    /// Longest distance between keyframes, in frames (x264 `key-int-max`, openh264 `gop-size`). Default 60.
    pub key_int_max: u32,
    /// Target bitrate in kbit/s; 0 is constant quality for x264 (quantizer 24, at most 8 Mbit/s) and 1 Mbit/s
    /// for openh264. Default 0.
    pub bitrate_kbps: u32,
    /// Frames queued in front of the encoder before `push` blocks. Default 4.
    pub max_queued_frames: u32,
    /// How long `finish` waits for the encoder and muxer to drain. Default 30000 ms.
    pub finish_timeout_ms: u64,
}

impl VideoSettings {
    /// Settings with the defaults for frames of `width` x `height` at `fps_n / fps_d` frames per second.
    pub fn new(width: u32, height: u32, fps_n: u32, fps_d: u32) -> Self {
        VideoSettings {
            width,
            height,
            fps_n,
            fps_d,
            format: PixelFormat::Rgb,
            encoder: VideoEncoder::default(),
            template_encoder: None,
            speed_preset: SpeedPreset::default(),
            zerolatency: false,
            key_int_max: DEFAULT_KEY_INT_MAX,
            bitrate_kbps: DEFAULT_BITRATE_KBPS,
            max_queued_frames: DEFAULT_MAX_QUEUED_FRAMES,
            finish_timeout_ms: DEFAULT_FINISH_TIMEOUT_MS,
        }
    }
}

/// How the pipeline ended, as the bus thread saw it.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Running,
    Eos,
    Failed(String),
}

/// State shared between the writer and its bus thread.
#[derive(Debug)]
struct Shared {
    outcome: Mutex<Outcome>,
    cond: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn outcome(&self) -> Outcome {
        self.outcome.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, outcome: Outcome) {
        let mut current = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        // The first end is the one that counts.
        if *current == Outcome::Running {
            *current = outcome;
        }
        self.cond.notify_all();
    }

    /// Waits up to `timeout` for the pipeline to end; `Running` if it did not.
    fn wait(&self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        let mut current = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        while *current == Outcome::Running {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            current = self.cond.wait_timeout(current, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        current.clone()
    }
}

/// The pipeline while it runs. `None` in [`VideoWriter`] once finished.
#[derive(Debug)]
struct Running {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    pool: gst::BufferPool,
    shared: Arc<Shared>,
    bus_thread: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops and joins the bus thread, then stops the pipeline.
    fn shut_down(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(bus) = self.pipeline.bus() {
            let _ = bus.post(gst::message::Application::new(gst::Structure::new_empty(STOP_MESSAGE)));
        }
        if let Some(thread) = self.bus_thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the video bus thread panicked");
        }
        let _ = self.pipeline.set_state(gst::State::Null);
        let _ = self.pool.set_active(false);
    }
}

/// Writes annotated RGB frames to an H.264 MP4. See the module documentation.
///
/// Dropping a writer that was not finished finishes it as well as it can (and logs the outcome).
#[derive(Debug)]
pub struct VideoWriter {
    path: PathBuf,
    part_path: PathBuf,
    /// `<name>.part`, which the filesink writes; `None` once finished.
    part: Option<PartFile>,
    settings: VideoSettings,
    /// The encoder element's factory name.
    encoder: String,
    /// True when the template's encoder is in use (false: the built-in one, by choice or after a fallback).
    template_encoder_used: bool,
    /// Layout of the frames given to appsrc (its stride is GStreamer's default for RGB: rows padded to 4 bytes).
    info: gst_video::VideoInfo,
    frame_duration_ns: u64,
    /// Stream time of the first frame pushed: the video starts at 0.
    first_pts_ns: Option<u64>,
    last_pts_ns: Option<u64>,
    frames: u64,
    state: Option<Running>,
}

impl VideoWriter {
    /// Starts writing `path` (as `path` + `.part` until finished), creating its directory if needed.
    pub fn create(path: &Path, settings: VideoSettings) -> Result<Self, SinkError> {
        gst::init().map_err(|e| SinkError::GstInit(e.to_string()))?;
        let bad = |message: String| SinkError::Settings { path: path.to_path_buf(), message };
        if settings.width == 0 || settings.height == 0 {
            return Err(bad(format!("frame size {}x{} is empty", settings.width, settings.height)));
        }
        if settings.fps_n == 0
            || settings.fps_d == 0
            || settings.fps_n > i32::MAX as u32
            || settings.fps_d > i32::MAX as u32
        {
            return Err(bad(format!("frame rate {}/{} is not a positive fraction", settings.fps_n, settings.fps_d)));
        }
        // filesink reports a file it cannot open only as a GStreamer error; opening it here gives the OS error.
        // Dropped on any error below, which removes it.
        let part = PartFile::create(path, PartName::Visible).map_err(|e| match e {
            PartError::NoFileName { .. } => bad("the path has no file name".into()),
            PartError::CreateDir { dir, error } => SinkError::CreateDir { path: dir, error },
            PartError::Create { part, error } => SinkError::Open { path: part, error },
            e => bad(e.to_string()),
        })?;
        let part_path = part.part_path().to_path_buf();
        let part_location = part_path.to_str().ok_or_else(|| bad("the path is not valid UTF-8".into()))?.to_string();

        let fps = gst::Fraction::new(settings.fps_n as i32, settings.fps_d as i32);
        let info = gst_video::VideoInfo::builder(settings.format.video_format(), settings.width, settings.height)
            .fps(fps)
            .build()
            .map_err(|e| bad(format!("no {} layout for this size: {e}", settings.format.caps_name())))?;
        let frame_duration_ns = gst::ClockTime::SECOND
            .mul_div_round(settings.fps_d as u64, settings.fps_n as u64)
            .map(|d| d.nseconds())
            .unwrap_or(0);

        let from_template = settings.template_encoder.as_deref().map(|fragment| {
            let result = Self::build(&part_location, &settings, &info, EncoderChoice::Template(fragment));
            if let Err(e) = &result {
                tracing::warn!(
                    path = %path.display(),
                    encoder = %fragment,
                    error = %e.message(),
                    "the pipeline template's encoder failed; using the built-in software encoder"
                );
            }
            result
        });
        let (result, template_encoder_used) = match from_template {
            Some(Ok(running)) => (Ok(running), true),
            _ => (Self::build(&part_location, &settings, &info, EncoderChoice::Builtin), false),
        };
        let (running, encoder) = result.map_err(|e| e.into_sink_error(path))?;
        tracing::debug!(path = %path.display(), encoder = %encoder, "started annotated video");
        Ok(VideoWriter {
            path: path.to_path_buf(),
            part_path,
            part: Some(part),
            settings,
            encoder,
            template_encoder_used,
            info,
            frame_duration_ns,
            first_pts_ns: None,
            last_pts_ns: None,
            frames: 0,
            state: Some(running),
        })
    }

    fn build(
        location: &str,
        settings: &VideoSettings,
        info: &gst_video::VideoInfo,
        choice: EncoderChoice,
    ) -> Result<(Running, String), BuildError> {
        let caps = info.to_caps().map_err(|e| BuildError::Other(format!("no caps for {info:?}: {e}")))?;
        let appsrc = make("appsrc", "install gstreamer1.0-plugins-base")?
            .dynamic_cast::<gst_app::AppSrc>()
            .map_err(|_| BuildError::Other("appsrc is not an AppSrc".into()))?;
        appsrc.set_caps(Some(&caps));
        appsrc.set_format(gst::Format::Time);
        appsrc.set_is_live(false);
        // Blocking is the backpressure; the bus thread unblocks it on an error (see the module documentation).
        appsrc.set_block(true);
        appsrc.set_max_bytes(info.size() as u64 * settings.max_queued_frames.max(1) as u64);

        // H.264 in 4:2:0 needs even sizes: scale an odd-sized frame down by one pixel first.
        let (even_w, even_h) = ((settings.width & !1).max(2), (settings.height & !1).max(2));
        let mut resize: Vec<gst::Element> = Vec::new();
        if (even_w, even_h) != (settings.width, settings.height) {
            let even = gst_video::VideoCapsBuilder::new().width(even_w as i32).height(even_h as i32).build();
            let filter = make("capsfilter", "install gstreamer1.0-plugins-base")?;
            filter.set_property("caps", &even);
            resize = vec![make("videoscale", "install gstreamer1.0-plugins-base")?, filter];
        }
        let (encode, encoder_name): (Vec<gst::Element>, String) = match choice {
            EncoderChoice::Template(fragment) => {
                let bin = crate::gst::encoder_bin(fragment, "template", crate::gst::EncoderPurpose::Record)
                    .map_err(|e| BuildError::Other(e.to_string()))?;
                let name =
                    crate::gst::element::find_element_by_klass(&bin, "Encoder").unwrap_or_else(|| "encoder".into());
                (vec![bin.upcast()], name)
            }
            EncoderChoice::Builtin => {
                let convert = make("videoconvert", "install gstreamer1.0-plugins-base")?;
                let i420 = gst_video::VideoCapsBuilder::new().format(gst_video::VideoFormat::I420).build();
                let filter = make("capsfilter", "install gstreamer1.0-plugins-base")?;
                filter.set_property("caps", &i420);
                let (encoder, encoder_name) = make_encoder(settings)?;
                let parse = make("h264parse", "install gstreamer1.0-plugins-bad (h264parse)")?;
                (vec![convert, filter, encoder, parse], encoder_name.to_string())
            }
        };
        let mux = make("mp4mux", "install gstreamer1.0-plugins-good (mp4mux)")?;
        let sink = make("filesink", "install gstreamer1.0-plugins-base")?;
        sink.set_property("location", location);

        let pipeline = gst::Pipeline::with_name("video-writer");
        let mut chain: Vec<&gst::Element> = vec![appsrc.upcast_ref()];
        chain.extend(&resize);
        chain.extend(&encode);
        chain.extend([&mux, &sink]);
        pipeline
            .add_many(chain.iter().copied())
            .map_err(|e| BuildError::Other(format!("cannot build pipeline: {e}")))?;
        gst::Element::link_many(chain.iter().copied())
            .map_err(|e| BuildError::Other(format!("cannot link {encoder_name} pipeline: {e}")))?;

        let pool = gst::BufferPool::new();
        let mut config = pool.config();
        // No upper bound: appsrc's max-bytes bounds the frames in flight, and the pool reuses freed buffers.
        config.set_params(Some(&caps), info.size() as u32, 0, 0);
        pool.set_config(config).map_err(|e| BuildError::Other(format!("cannot configure buffer pool: {e}")))?;
        pool.set_active(true).map_err(|e| BuildError::Other(format!("cannot activate buffer pool: {e}")))?;

        let shared = Arc::new(Shared {
            outcome: Mutex::new(Outcome::Running),
            cond: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let bus = pipeline.bus().ok_or_else(|| BuildError::Other("pipeline has no bus".into()))?;
        let bus_thread = {
            let (pipeline, shared) = (pipeline.clone(), shared.clone());
            std::thread::Builder::new()
                .name("video-bus".into())
                .spawn(move || watch_bus(&bus, &pipeline, &shared))
                .map_err(|e| BuildError::Other(format!("cannot start the bus thread: {e}")))?
        };
        let mut running = Running { pipeline, appsrc, pool, shared, bus_thread: Some(bus_thread) };
        if let Err(e) = running.pipeline.set_state(gst::State::Playing) {
            // The bus says why; give it a moment to arrive.
            let why = match running.shared.wait(Duration::from_secs(2)) {
                Outcome::Failed(m) => m,
                _ => e.to_string(),
            };
            running.shut_down();
            return Err(BuildError::Other(format!("cannot start the {encoder_name} pipeline: {why}")));
        }
        Ok((running, encoder_name))
    }

    /// The final path (the file is at [`VideoWriter::part_path`] until finished).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary path written to until the video is complete.
    pub fn part_path(&self) -> &Path {
        &self.part_path
    }

    /// The encoder element in use: `"x264enc"` or `"openh264enc"` built in, or the template's (`nvv4l2h264enc`).
    pub fn encoder(&self) -> &str {
        &self.encoder
    }

    /// True when the pipeline template's encoder is in use; false when the built-in one is, because no template
    /// encoder was given or because it failed (a warning says why).
    pub fn template_encoder_used(&self) -> bool {
        self.template_encoder_used
    }

    /// Frames pushed so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The settings the writer was created with.
    pub fn settings(&self) -> &VideoSettings {
        &self.settings
    }

    /// Queues one frame: `height` rows of `width` RGB pixels, each row `stride` bytes after the previous,
    /// at stream time `pts_ns` (the first frame's time becomes 0 in the file). Blocks while the queue is full.
    ///
    /// Times must increase; a frame whose time does not is placed one frame after the previous one.
    pub fn push(&mut self, rgb: &[u8], stride: usize, pts_ns: u64) -> Result<(), SinkError> {
        let (width, height) = (self.settings.width, self.settings.height);
        let row = width as usize * 3;
        if stride < row || rgb.len() < stride * (height as usize - 1) + row {
            return Err(SinkError::FrameSize { path: self.path.clone(), len: rgb.len(), stride, width, height });
        }
        if self.settings.format != PixelFormat::Rgb {
            return Err(self.video_error(format!(
                "RGB rows were pushed to a {} video; use push_picture",
                self.settings.format.caps_name()
            )));
        }
        let dst_stride = self.info.stride()[0] as usize;
        self.push_with(pts_ns, |map| {
            for (dst, src) in map.chunks_mut(dst_stride).zip(rgb.chunks(stride)).take(height as usize) {
                dst[..row].copy_from_slice(&src[..row]);
            }
        })
    }

    /// Queues one frame given as a [`Picture`] of the writer's format and size (see [`VideoWriter::push`] for
    /// times and blocking). Its layout is the one appsrc expects, so the frame is copied once, whole.
    pub fn push_picture(&mut self, picture: &Picture, pts_ns: u64) -> Result<(), SinkError> {
        let l = picture.layout();
        if (l.format, l.width, l.height) != (self.settings.format, self.settings.width, self.settings.height) {
            return Err(self.video_error(format!(
                "a {} frame of {}x{} was pushed to a {} video of {}x{}",
                l.format.caps_name(),
                l.width,
                l.height,
                self.settings.format.caps_name(),
                self.settings.width,
                self.settings.height
            )));
        }
        self.push_with(pts_ns, |dst| {
            let n = dst.len().min(picture.data().len());
            dst[..n].copy_from_slice(&picture.data()[..n]);
        })
    }

    /// Fills a pooled buffer with `fill` and pushes it at `pts_ns`.
    fn push_with(&mut self, pts_ns: u64, fill: impl FnOnce(&mut [u8])) -> Result<(), SinkError> {
        let pts = self.next_pts(pts_ns);
        let Some(running) = self.state.as_ref() else {
            return Err(self.video_error("the video was already finished".into()));
        };
        if let Outcome::Failed(message) = running.shared.outcome() {
            return Err(self.video_error(message));
        }
        let mut buffer = running.pool.acquire_buffer(None).map_err(|flow| self.flow_error(flow))?;
        {
            let Some(buf) = buffer.get_mut() else {
                return Err(self.video_error("a pooled buffer is shared".into()));
            };
            buf.set_pts(gst::ClockTime::from_nseconds(pts));
            if self.frame_duration_ns > 0 {
                buf.set_duration(gst::ClockTime::from_nseconds(self.frame_duration_ns));
            }
            let mut map =
                buf.map_writable().map_err(|e| self.video_error(format!("cannot map a frame buffer: {e}")))?;
            fill(&mut map);
        }
        running.appsrc.push_buffer(buffer).map_err(|flow| self.flow_error(flow))?;
        self.frames += 1;
        Ok(())
    }

    fn next_pts(&mut self, pts_ns: u64) -> u64 {
        let first = *self.first_pts_ns.get_or_insert(pts_ns);
        let mut pts = pts_ns.saturating_sub(first);
        if let Some(last) = self.last_pts_ns
            && pts <= last
        {
            pts = last + self.frame_duration_ns.max(1);
        }
        self.last_pts_ns = Some(pts);
        pts
    }

    fn video_error(&self, message: String) -> SinkError {
        SinkError::Video { path: self.path.clone(), message }
    }

    /// The error behind a failed push: the bus's message when there is one (it may come a moment later).
    fn flow_error(&self, flow: gst::FlowError) -> SinkError {
        let message = match self.state.as_ref().map(|r| r.shared.wait(Duration::from_secs(1))) {
            Some(Outcome::Failed(m)) => m,
            _ => format!("the pipeline stopped taking frames ({flow:?})"),
        };
        self.video_error(message)
    }

    /// Ends the stream, waits for the file to be complete, and renames it to its final name, which it returns.
    ///
    /// On an error the `.part` file is removed and nothing is left under the final name.
    pub fn finish(mut self) -> Result<PathBuf, SinkError> {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> Result<PathBuf, SinkError> {
        let Some(mut running) = self.state.take() else {
            return Err(self.video_error("the video was already finished".into()));
        };
        let timeout = Duration::from_millis(self.settings.finish_timeout_ms);
        let outcome = if self.frames == 0 {
            Outcome::Failed("no frames were written".into())
        } else {
            let _ = running.appsrc.end_of_stream();
            running.shared.wait(timeout)
        };
        running.shut_down();
        // Dropped (and so removed) on any error.
        let part = self.part.take();
        match outcome {
            Outcome::Eos => self.complete(part),
            Outcome::Failed(message) => Err(self.video_error(message)),
            Outcome::Running => Err(self.video_error(format!(
                "the encoder did not finish within {} ms (finish_timeout_ms)",
                self.settings.finish_timeout_ms
            ))),
        }
    }

    /// Syncs the finished `.part` file to disk and gives it its final name ([`PartFile::finish`]).
    fn complete(&self, part: Option<PartFile>) -> Result<PathBuf, SinkError> {
        let part = part.ok_or_else(|| self.video_error("the video was already finished".into()))?;
        // Synced before the rename, so that after a power cut the final name never points at missing data.
        part.finish().map_err(|e| match e {
            PartError::Rename { from, to, error } => SinkError::Rename { from, to, error },
            PartError::Sync { part, error } => SinkError::Write { path: part, error },
            e => self.video_error(e.to_string()),
        })?;
        tracing::debug!(path = %self.path.display(), frames = self.frames, "finished annotated video");
        Ok(self.path.clone())
    }
}

impl Drop for VideoWriter {
    fn drop(&mut self) {
        if self.state.is_none() {
            return;
        }
        match self.finish_inner() {
            Ok(path) => tracing::info!(path = %path.display(), "annotated video finished on drop"),
            Err(e) => tracing::warn!(error = %e, "annotated video could not be finished on drop"),
        }
    }
}

/// Runs on the `video-bus` thread until end-of-stream, an error, or a stop request.
fn watch_bus(bus: &gst::Bus, pipeline: &gst::Pipeline, shared: &Shared) {
    use gst::MessageType;
    while !shared.stop.load(Ordering::SeqCst) {
        // The timeout only bounds how long a lost stop message could keep this thread alive.
        let types = [MessageType::Eos, MessageType::Error, MessageType::Application];
        let Some(msg) = bus.timed_pop_filtered(gst::ClockTime::from_mseconds(500), &types) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => {
                shared.set(Outcome::Eos);
                return;
            }
            gst::MessageView::Error(err) => {
                let from = err.src().map(|s| s.path_string().to_string()).unwrap_or_else(|| "?".into());
                let debug = err.debug().map(|d| format!(" ({d})")).unwrap_or_default();
                shared.set(Outcome::Failed(format!("{} from {from}{debug}", err.error())));
                // Wakes a push blocked on a queue that will never drain again.
                let _ = pipeline.set_state(gst::State::Null);
                return;
            }
            gst::MessageView::Application(app) if app.structure().is_some_and(|s| s.name() == STOP_MESSAGE) => return,
            _ => {}
        }
    }
}

/// Which encoder [`VideoWriter::build`] tries.
enum EncoderChoice<'a> {
    /// A pipeline template's gst-launch fragment.
    Template(&'a str),
    /// x264enc or openh264enc, as `VideoSettings::encoder` says.
    Builtin,
}

/// Errors while building, before the writer knows its own path.
enum BuildError {
    Missing { element: &'static str, hint: &'static str },
    Other(String),
}

impl BuildError {
    fn message(&self) -> String {
        match self {
            BuildError::Missing { element, hint } => format!("GStreamer element {element} is missing: {hint}"),
            BuildError::Other(message) => message.clone(),
        }
    }

    fn into_sink_error(self, path: &Path) -> SinkError {
        match self {
            BuildError::Missing { element, hint } => SinkError::MissingElement { element, hint },
            BuildError::Other(message) => SinkError::Video { path: path.to_path_buf(), message },
        }
    }
}

fn make(element: &'static str, hint: &'static str) -> Result<gst::Element, BuildError> {
    gst::ElementFactory::make(element).build().map_err(|_| BuildError::Missing { element, hint })
}

fn make_encoder(settings: &VideoSettings) -> Result<(gst::Element, &'static str), BuildError> {
    let have_x264 = gst::ElementFactory::find("x264enc").is_some();
    let use_x264 = match settings.encoder {
        VideoEncoder::X264 => true,
        VideoEncoder::OpenH264 => false,
        VideoEncoder::Auto => have_x264,
    };
    if use_x264 {
        let enc = make("x264enc", X264_HINT)?;
        enc.set_property_from_str("speed-preset", settings.speed_preset.as_str());
        if settings.zerolatency {
            enc.set_property_from_str("tune", "zerolatency");
        }
        enc.set_property("key-int-max", settings.key_int_max);
        if settings.bitrate_kbps > 0 {
            enc.set_property("bitrate", settings.bitrate_kbps.min(2_048_000));
        } else {
            // Constant quality, as the generic template's encoder (pipelines/generic.toml): x264's default is a
            // fixed 2 Mbit/s, which made small crops 4-5 times the bytes of their full-frame clip.
            enc.set_property_from_str("pass", "qual");
            enc.set_property("quantizer", X264_QUANTIZER);
            enc.set_property("bitrate", X264_QUALITY_CAP_KBPS);
        }
        Ok((enc, "x264enc"))
    } else {
        let hint = if settings.encoder == VideoEncoder::Auto {
            "install gstreamer1.0-plugins-ugly (x264enc) or gstreamer1.0-plugins-bad (openh264enc)"
        } else {
            OPENH264_HINT
        };
        let enc = make("openh264enc", hint)?;
        enc.set_property("gop-size", settings.key_int_max);
        let kbps = if settings.bitrate_kbps > 0 { settings.bitrate_kbps } else { OPENH264_FALLBACK_BITRATE_KBPS };
        enc.set_property("bitrate", kbps.saturating_mul(1000));
        enc.set_property_from_str("complexity", "low");
        Ok((enc, "openh264enc"))
    }
}

/// What [`probe_video`] found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoInfo {
    /// Frames decoded.
    pub frames: u64,
    /// Width of the decoded frames in pixels.
    pub width: u32,
    /// Height of the decoded frames in pixels.
    pub height: u32,
    /// Duration as the container states it, or else up to the end of the last frame.
    pub duration: Option<Duration>,
}

/// How long [`probe_video`] waits for a file to decode.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

/// Decodes the video stream of `path` completely (as fast as it goes, to a fakesink) and counts its frames.
///
/// Meant for tests and checks: it costs a full decode.
pub fn probe_video(path: &Path) -> Result<VideoInfo, SinkError> {
    gst::init().map_err(|e| SinkError::GstInit(e.to_string()))?;
    let fail = |message: String| SinkError::Probe { path: path.to_path_buf(), message };
    if !path.is_file() {
        return Err(fail("no such file".into()));
    }
    let location = path.to_str().ok_or_else(|| fail("the path is not valid UTF-8".into()))?;
    let missing = |e: BuildError| e.into_sink_error(path);
    let src = make("filesrc", "install gstreamer1.0-plugins-base").map_err(missing)?;
    src.set_property("location", location);
    let decode = make("decodebin", "install gstreamer1.0-plugins-base").map_err(missing)?;
    let sink = make("fakesink", "install gstreamer1.0-plugins-base").map_err(missing)?;
    sink.set_property("sync", false);

    let pipeline = gst::Pipeline::with_name("video-probe");
    pipeline.add_many([&src, &decode, &sink]).map_err(|e| fail(e.to_string()))?;
    src.link(&decode).map_err(|e| fail(e.to_string()))?;

    let sink_pad = sink.static_pad("sink").ok_or_else(|| fail("fakesink has no sink pad".into()))?;
    let frames = Arc::new(AtomicU64::new(0));
    let end_ns = Arc::new(AtomicU64::new(0));
    {
        let (frames, end_ns) = (frames.clone(), end_ns.clone());
        sink_pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buffer) = info.buffer() {
                frames.fetch_add(1, Ordering::Relaxed);
                if let Some(pts) = buffer.pts() {
                    let end = pts + buffer.duration().unwrap_or(gst::ClockTime::ZERO);
                    end_ns.fetch_max(end.nseconds(), Ordering::Relaxed);
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    let weak_pipeline = pipeline.downgrade();
    decode.connect_pad_added(move |_, pad| {
        let is_video =
            pad.current_caps().and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/"))).unwrap_or(false);
        if is_video && !sink_pad.is_linked() {
            let _ = pad.link(&sink_pad);
            return;
        }
        // Anything else (audio, a second video stream) goes to a fakesink of its own, so it does not stall.
        let Some(pipeline) = weak_pipeline.upgrade() else { return };
        if let Ok(other) = gst::ElementFactory::make("fakesink").property("sync", false).build()
            && pipeline.add(&other).is_ok()
        {
            let _ = other.sync_state_with_parent();
            if let Some(other_pad) = other.static_pad("sink") {
                let _ = pad.link(&other_pad);
            }
        }
    });

    let result = run_to_eos(&pipeline).map_err(fail);
    let caps = sink.static_pad("sink").and_then(|p| p.current_caps());
    let duration = pipeline.query_duration::<gst::ClockTime>();
    let _ = pipeline.set_state(gst::State::Null);
    result?;

    let caps = caps.ok_or_else(|| fail("the file has no video stream".into()))?;
    let info = gst_video::VideoInfo::from_caps(&caps).map_err(|e| fail(format!("unexpected caps {caps}: {e}")))?;
    let end = end_ns.load(Ordering::Relaxed);
    Ok(VideoInfo {
        frames: frames.load(Ordering::Relaxed),
        width: info.width(),
        height: info.height(),
        duration: duration.map(|d| Duration::from_nanos(d.nseconds())).or((end > 0).then(|| Duration::from_nanos(end))),
    })
}

/// Plays `pipeline` until end-of-stream or an error, within [`PROBE_TIMEOUT`].
fn run_to_eos(pipeline: &gst::Pipeline) -> Result<(), String> {
    pipeline.set_state(gst::State::Playing).map_err(|e| format!("cannot start decoding: {e}"))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    bus::wait_eos(pipeline, deadline).map_err(|e| match e {
        WaitError::NoBus => "pipeline has no bus".to_string(),
        WaitError::Timeout => format!("decoding did not finish within {} s", PROBE_TIMEOUT.as_secs()),
        WaitError::Broken => "could not wait on the pipeline's bus (is the process out of file descriptors?)".into(),
        WaitError::Error(m) => match m.view() {
            gst::MessageView::Error(err) => {
                let debug = err.debug().map(|d| format!(" ({d})")).unwrap_or_default();
                format!("{}{debug}", err.error())
            }
            _ => "decoding failed".into(),
        },
    })
}
