//! The motion gate end to end: clips this test makes with GStreamer (a still scene, a white square that enters,
//! stops, leaves), run through `watch` with a detector that finds the square in the frames it is given, so the test
//! sees exactly which frames were inferred.

mod common;
#[path = "common/rtsp.rs"]
mod rtsp;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{decode, tiny_model};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use lookout::config::StandingQuery;
use lookout::geom::{Detection, PixelBox};
use lookout::infer::postprocess::Selection;
use lookout::infer::{DetectTimings, Detector, FrameScale, Image, ModelDir, QuerySet};
use lookout::shutdown::Shutdown;
use lookout::source::{MotionSettings, SourceSpec};
use lookout::watch::{Progress, Summary, WatchSettings};
use serde_json::Value;

const W: u32 = 320;
const H: u32 = 240;
const FPS: u64 = 10;
const SIDE: u32 = 40;

/// Writes an H.264 MP4 of `frames` at 10 fps: a static grey gradient, with the white square's top-left corner at
/// `frames[i]` when it is `Some`.
fn make_clip(path: &Path, frames: &[Option<(u32, u32)>]) {
    let pictures = frames.iter().map(|square| {
        let mut rgb = vec![0u8; (W * H * 3) as usize];
        for y in 0..H {
            for x in 0..W {
                let v = (40 + x * 60 / W + y * 30 / H) as u8;
                let inside =
                    square.is_some_and(|(sx, sy)| (sx..sx + SIDE).contains(&x) && (sy..sy + SIDE).contains(&y));
                let p = ((y * W + x) * 3) as usize;
                rgb[p..p + 3].fill(if inside { 255 } else { v });
            }
        }
        rgb
    });
    encode(path, (W, H), FPS, pictures);
}

/// Encodes packed RGB pictures of `size` at `fps` to an H.264 MP4 (a keyframe every 10 frames), within 60 s.
fn encode(path: &Path, size: (u32, u32), fps: u64, pictures: impl Iterator<Item = Vec<u8>>) {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time block=true max-bytes=4000000 caps=video/x-raw,format=RGB,width={},height={},framerate={fps}/1 \
         ! videoconvert ! x264enc speed-preset=ultrafast key-int-max=10 bframes=0 ! mp4mux ! filesink location=\"{}\"",
        size.0,
        size.1,
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    for (i, rgb) in pictures.enumerate() {
        let mut buffer = gst::Buffer::from_mut_slice(rgb);
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(i as u64 * 1_000_000_000 / fps));
            b.set_duration(gst::ClockTime::from_nseconds(1_000_000_000 / fps));
        }
        src.push_buffer(buffer).unwrap();
    }
    src.end_of_stream().unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(60), &[gst::MessageType::Eos, gst::MessageType::Error])
        .expect("the clip is written within 60 s");
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    pipeline.set_state(gst::State::Null).unwrap();
}

/// A stand-in for a model that finds the white square: the box around the frame's near-white pixels. Records,
/// for every frame it is given, whether the square was in it.
struct SquareFinder {
    model: ModelDir,
    seen: Arc<Mutex<Vec<bool>>>,
}

impl Detector for SquareFinder {
    fn model(&self) -> &ModelDir {
        &self.model
    }
    fn frame_scale(&self) -> FrameScale {
        FrameScale::Stretch { width: 160, height: 120 }
    }
    fn text_encoder(&self) -> Box<dyn lookout::infer::TextEncoder> {
        Box::new(lookout::infer::TextsOnly)
    }
    fn encode(&mut self, texts: &[String]) -> lookout::infer::Result<QuerySet> {
        Ok(QuerySet::texts_only(texts.to_vec()))
    }
    fn detect(
        &mut self,
        images: &[Image<'_>],
        _queries: &QuerySet,
        _selection: &Selection,
    ) -> lookout::infer::Result<Vec<lookout::infer::Result<Vec<Detection>>>> {
        let mut out = Vec::new();
        for image in images {
            let Image::Scaled(f) = image else { panic!("watch gives scaled frames") };
            let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
            for y in 0..f.height {
                let row = &f.rgb[y as usize * f.stride..y as usize * f.stride + f.width as usize * 3];
                for (x, p) in row.chunks_exact(3).enumerate() {
                    if p.iter().all(|&c| c > 200) {
                        let x = x as u32;
                        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
                    }
                }
            }
            let found = x1 > 0;
            self.seen.lock().unwrap().push(found);
            let (sx, sy) = (f.orig_width as f32 / f.width as f32, f.orig_height as f32 / f.height as f32);
            let bbox = PixelBox { x0: x0 as f32 * sx, y0: y0 as f32 * sy, x1: x1 as f32 * sx, y1: y1 as f32 * sy };
            out.push(Ok(if found { vec![Detection { query: 0, score: 0.9, bbox }] } else { vec![] }));
        }
        Ok(out)
    }
    fn warm_up(&mut self, _queries: &QuerySet) -> lookout::infer::Result<()> {
        Ok(())
    }
    fn last_timings(&self) -> DetectTimings {
        DetectTimings::default()
    }
}

struct Run {
    summary: Summary,
    /// Per inferred frame, in order: whether the square was in it.
    seen: Vec<bool>,
    events: Vec<Value>,
}

/// `watch` on `clip` with the motion gate as given (or off), the query ending its events 1 s after the last
/// match.
fn watch(clip: &Path, out: &Path, motion: Option<MotionSettings>, annotate: bool) -> Run {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let detector = SquareFinder { model: ModelDir::open(&tiny_model("owlvit")).unwrap(), seen: seen.clone() };
    let query = StandingQuery { end_after_s: 1.0, ..StandingQuery::from_text("a white square", Some(0.5)) };
    let source = SourceSpec::parse(clip.to_str().unwrap(), 0).unwrap();
    let settings = WatchSettings {
        out_dir: out.to_path_buf(),
        wall_time: false,
        progress: false,
        annotate,
        max_duration: Some(Duration::from_secs(60)),
        motion: vec![motion.unwrap_or_default()],
        ..WatchSettings::default()
    };
    let started = Instant::now();
    let summary = lookout::watch::run(
        Box::new(detector),
        vec![query],
        vec![source],
        settings,
        Shutdown::new().token(),
        Arc::new(Progress::default()),
    )
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(60), "stopped by max_duration: {summary}");
    let events = std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen = seen.lock().unwrap().clone();
    Run { summary, seen, events }
}

fn gate(max_interval_s: u64) -> Option<MotionSettings> {
    Some(MotionSettings { max_interval: Duration::from_secs(max_interval_s), ..MotionSettings::on() })
}

/// 3 s of a still scene, then 3 s of the square crossing it: the still span is inferred once (its first frame:
/// there is no background yet), every moving frame is inferred, and the annotated video says which is which.
#[test]
fn still_frames_skip_inference_and_moving_ones_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("still-then-moving.mp4");
    let frames: Vec<Option<(u32, u32)>> = (0..60u32).map(|i| (i >= 30).then(|| ((i - 30) * 9, 100))).collect();
    make_clip(&clip, &frames);
    let run = watch(&clip, &tmp.path().join("gated"), gate(30), true);
    let s = &run.summary.sources[0];
    assert!(s.error.is_none(), "{}", run.summary);
    assert_eq!(s.frames_processed, 60, "{}", run.summary);
    // The still span: only its first frame; the moving span: every frame.
    let (with, without) = (run.seen.iter().filter(|&&f| f).count(), run.seen.iter().filter(|&&f| !f).count());
    assert_eq!((without, with), (1, 30), "{:?}", run.seen);
    assert!(s.motion_gate);
    assert_eq!((s.frames_inferred, s.frames_skipped_still), (31, 29), "{}", run.summary);
    assert!(run.summary.to_string().contains("inferred 31, skipped still 29,"), "{}", run.summary);

    // The annotated video: "still" (grey) in the bottom-right corner on the still span, "motion" (amber) on the
    // moving one.
    let annotated = run.summary.sources[0].annotated.clone().expect("annotated video");
    let decoded = decode(&annotated, |i| i == 20 || i == 45);
    let corner = |i: usize| *decoded[i].image.as_ref().unwrap().get_pixel(W - 2, H - 2);
    let (still, moving) = (corner(20), corner(45));
    assert!(still[0].abs_diff(still[2]) < 30 && (80..140).contains(&still[0]), "grey label: {still:?}");
    assert!(moving[0] > 200 && moving[2] < 80, "amber label: {moving:?}");

    // Without the gate, every frame is inferred.
    let ungated = watch(&clip, &tmp.path().join("ungated"), None, false);
    assert_eq!(ungated.seen.len(), 60);
    assert!(!ungated.summary.sources[0].motion_gate);
    assert!(!ungated.summary.to_string().contains("skipped still"), "{}", ungated.summary);
}

/// 6 s of a square standing still from the first frame: nothing moves after the first frame, yet with
/// max_interval = 2 s the square is inferred every 2 s, and those inferences start its event (2 of 3).
#[test]
fn max_interval_infers_a_still_scene_again() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("standing.mp4");
    make_clip(&clip, &vec![Some((140, 100)); 60]);
    let run = watch(&clip, &tmp.path().join("out"), gate(2), false);
    let s = &run.summary.sources[0];
    assert_eq!((s.frames_inferred, s.frames_skipped_still), (3, 57), "{}", run.summary);
    assert_eq!(run.seen, [true, true, true]);
    let starts: Vec<&Value> = run.events.iter().filter(|e| e["type"] == "start").collect();
    assert_eq!(starts.len(), 1, "{:#?}", run.events);
    let start_s = starts[0]["pts_s"].as_f64().unwrap();
    assert!((1.9..2.2).contains(&start_s), "started at the second inference, 2 s in: {start_s}");
}

/// The square enters (2 s), stands still for 8 s (it becomes background about 4 s after it stops, and the gate
/// then skips every frame: max_interval 30 s forces none), and leaves (2 s). Its event lasts through the still
/// span (end_after_s is 1 s): one event, ended after the square left, not while it stood still.
#[test]
fn a_track_is_not_ended_by_skipped_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("enter-stop-leave.mp4");
    let frames: Vec<Option<(u32, u32)>> = (0..120u32)
        .map(|i| match i {
            0..20 => Some((i * 7, 100)),
            20..100 => Some((140, 100)),
            _ => Some((140 + (i - 99) * 9, 100)).filter(|(x, _)| *x < W),
        })
        .collect();
    make_clip(&clip, &frames);
    let run = watch(&clip, &tmp.path().join("out"), gate(30), false);
    let s = &run.summary.sources[0];
    assert!(s.frames_skipped_still >= 20, "the still span was skipped: {}", run.summary);
    let starts = run.events.iter().filter(|e| e["type"] == "start").count();
    let ends: Vec<&Value> = run.events.iter().filter(|e| e["type"] == "end").collect();
    assert_eq!((starts, ends.len()), (1, 1), "{:#?}", run.events);
    // The square starts leaving at frame 100 (10 s); the end comes after that, with a reason of lost (it left the
    // frame at 13.2 s... or eos when the clip ends first).
    let end_at = ends[0]["pts_s"].as_f64().unwrap();
    assert!(end_at >= 10.0, "the event ended at {end_at} s, during the still span: {:#?}", run.events);
}

/// Frames of one span of the real-footage clip: bikes.mp4 is 250 frames at 25 fps.
const SPAN: u64 = 250;

/// `lookout watch` on `clip` with the test model at a fixed threshold and `--motion on|off`: the summary and the
/// event lines.
fn watch_cli(clip: &Path, out: &Path, motion: &str) -> (Value, Vec<Value>) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .env("RUST_LOG", "warn")
        .arg("watch")
        .arg(clip)
        .args(["-q", "a person riding a bicycle", "--threshold", "0.6", "-m"])
        .arg(tiny_model("owlvit"))
        .arg("--out")
        .arg(out)
        .args(["--intra-threads", "1", "--no-wall-time", "--json", "--no-clips", "--motion", motion])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    let events = std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (summary, events)
}

/// Real footage: bikes.mp4 (10 s of traffic, every frame moving), then 10 s of its last frame held (a camera on a
/// street where nothing happens), twice. The gate infers the moving spans as the ungated run does, and little of
/// the still ones; the events that start in the moving spans are the same.
#[test]
fn real_footage_the_gate_infers_the_moving_spans_and_keeps_their_events() {
    let tmp = tempfile::tempdir().unwrap();
    let bikes = decode(&common::fixture("bikes.mp4"), |_| true);
    assert_eq!(bikes.len() as u64, SPAN);
    let size = bikes[0].size;
    let last = bikes.last().unwrap().image.as_ref().unwrap().as_raw().clone();
    let span = || bikes.iter().map(|d| d.image.as_ref().unwrap().as_raw().clone());
    let frozen = || std::iter::repeat_n(last.clone(), SPAN as usize);
    let clip = tmp.path().join("bikes-loop.mp4");
    encode(&clip, size, 25, span().chain(frozen()).chain(span()).chain(frozen()));

    let (gated, gated_events) = watch_cli(&clip, &tmp.path().join("gated"), "on");
    let (ungated, ungated_events) = watch_cli(&clip, &tmp.path().join("ungated"), "off");
    let (g, u) = (&gated["sources"][0], &ungated["sources"][0]);
    let n = |v: &Value, key: &str| v[key].as_u64().unwrap();
    assert_eq!((n(u, "frames_inferred"), n(u, "frames_skipped_still")), (4 * SPAN, 0), "{u}");
    assert_eq!(n(g, "frames_inferred") + n(g, "frames_skipped_still"), 4 * SPAN, "{g}");
    // Every frame of the moving spans is inferred (bikes.mp4 moves all the time), and at most a third of the still
    // ones (measured: 26%: the background takes a few seconds to forget the traffic, then one frame every 5 s).
    let still_inferred = n(g, "frames_inferred") - 2 * SPAN;
    assert!(n(g, "frames_inferred") >= 2 * SPAN && still_inferred * 3 <= 2 * SPAN, "{g}");
    eprintln!(
        "frames inferred: gated {} of {} ({:.1}%; still spans {still_inferred} of {}), ungated {}",
        n(g, "frames_inferred"),
        4 * SPAN,
        100.0 * n(g, "frames_inferred") as f64 / (4 * SPAN) as f64,
        2 * SPAN,
        n(u, "frames_inferred")
    );
    // The same events start in the moving spans, on the same frames, with the same boxes.
    let moving = |frame: u64| (frame / SPAN).is_multiple_of(2);
    let starts = |events: &[Value]| -> Vec<(u64, u64, String)> {
        events
            .iter()
            .filter(|e| e["type"] == "start" && moving(e["start"]["frame"].as_u64().unwrap()))
            .map(|e| (e["start"]["frame"].as_u64().unwrap(), e["frame"].as_u64().unwrap(), e["box"].to_string()))
            .collect()
    };
    let (gs, us) = (starts(&gated_events), starts(&ungated_events));
    assert!(us.len() >= 10, "the test model's events at this threshold: {us:?}");
    assert_eq!(gs, us);
}

/// A still camera: a static pattern, live over RTSP, 25 fps. (Not `smpte`: its corner of snow is motion.)
const STILL_CAMERA: &str = "( videotestsrc is-live=true pattern=colors ! video/x-raw,width=320,height=240,framerate=25/1 \
     ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bframes=0 \
     ! rtph264pay name=pay0 pt=96 config-interval=-1 )";

/// The gate is on by default for live sources: of two RTSP cameras, the one that shows a still pattern is
/// inferred about once every 5 s, the one with a moving ball on most frames.
#[test]
fn live_sources_have_the_gate_by_default() {
    let still = rtsp::RtspServer::serve(0, "/still", STILL_CAMERA);
    let moving = rtsp::RtspServer::start(0, "/ball");
    let tmp = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .env("RUST_LOG", "warn")
        .arg("watch")
        .arg(format!("rtsp://127.0.0.1:{}/still", still.port))
        .arg(format!("rtsp://127.0.0.1:{}/ball", moving.port))
        .args(["-q", "a ball", "-m"])
        .arg(tiny_model("owlvit"))
        .arg("--out")
        .arg(tmp.path())
        .args(["--intra-threads", "1", "--json", "--no-clips", "--max-seconds", "6"])
        .output()
        .unwrap();
    drop((still, moving));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    let (s, m) = (&summary["sources"][0], &summary["sources"][1]);
    let n = |v: &Value, key: &str| v[key].as_u64().unwrap();
    eprintln!("still camera: {s}\nmoving camera: {m}");
    assert!(s["motion_gate"].as_bool().unwrap() && m["motion_gate"].as_bool().unwrap(), "{summary}");
    // The still camera: its first frame, then one every 5 s (frames whose grey copy a live appsink dropped count
    // as moving: a few more).
    assert!(n(s, "frames_processed") > 30, "{s}");
    assert!(n(s, "frames_inferred") <= 8 && n(s, "frames_skipped_still") > 20, "{s}");
    // The moving camera: nothing skipped.
    assert!(n(m, "frames_inferred") > 30 && n(m, "frames_skipped_still") * 10 <= n(m, "frames_inferred"), "{m}");
}
