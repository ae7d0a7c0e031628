//! Event clips end to end: the real binary, real GStreamer, real ONNX Runtime and the tiny model.
//!
//! - bikes.mp4 (H.264): every event's clip exists, is H.264 remuxed (same codec, no re-encode), plays, and lasts
//!   at least pre + event + post (cut by the file's start and end) and at most one GOP more;
//! - a VP8 source is transcoded to H.264;
//! - every codec (H.264, H.265, VP8, MJPEG, MPEG-4 part 2, DivX 3; the AVI ones also with a CCTV export's index
//!   and with none) is cut at the keyframe at or before the pre-roll, and plays;
//! - SIGTERM in the middle of an event leaves a playable clip, an `end` line with `reason: shutdown`, and no
//!   `.part` file;
//! - a live RTSP camera (an in-process gst-rtsp-server on 127.0.0.1) gets clips cut from its depayloaded packets;
//! - a raw source has no clip, and its `clips` line says why.

mod common;
#[path = "common/rtsp.rs"]
mod rtsp;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, tiny_model};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use rtsp::RtspServer;
use serde_json::Value;

fn lookout() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lookout"));
    c.env("RUST_LOG", "warn");
    c
}

/// `lookout watch SOURCE --config CONFIG --out OUT` with the tiny model.
fn watch_cmd(source: &Path, config: &Path, out: &Path) -> Command {
    let mut c = lookout();
    c.arg("watch")
        .arg(source)
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out)
        .arg("-m")
        .arg(tiny_model("owlvit"))
        .args(["--intra-threads", "1", "--no-wall-time", "--json"]);
    c
}

fn write_config(dir: &Path, query: &str) -> PathBuf {
    let path = dir.join("lookout.toml");
    std::fs::write(&path, query).unwrap();
    path
}

fn lines(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out.join("events.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Writes a clip with GStreamer: `encode` is what goes between the test source and the file sink.
fn make_clip(path: &Path, frames: u32, pattern: &str, encode: &str) {
    let desc = format!(
        "videotestsrc num-buffers={frames} pattern={pattern} ! video/x-raw,width=320,height=240,framerate=25/1 ! {encode} ! filesink location={}",
        path.display()
    );
    let status = Command::new("gst-launch-1.0").arg("-q").args(desc.split(' ')).status().unwrap();
    assert!(status.success(), "could not make {}", path.display());
}

/// What a clip holds: its video codec (the demuxed caps' name), its frames, and the presentation times of its
/// first and last frame, by demuxing it with GStreamer (to EOS, with a deadline).
#[derive(Debug)]
struct ClipInfo {
    codec: String,
    packets: u64,
    first_pts_s: f64,
    last_pts_s: f64,
}

fn clip_info(path: &Path) -> ClipInfo {
    gst::init().unwrap();
    let desc = format!("filesrc location=\"{}\" ! qtdemux ! appsink name=s sync=false", path.display());
    let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let sink = pipeline.by_name("s").unwrap().downcast::<gst_app::AppSink>().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut codec, mut packets, mut first, mut last) = (String::new(), 0u64, f64::MAX, f64::MIN);
    while Instant::now() < deadline {
        match sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) {
            Some(s) => {
                if codec.is_empty() {
                    codec = s.caps().and_then(|c| c.structure(0).map(|s| s.name().to_string())).unwrap_or_default();
                }
                let pts = s.buffer().and_then(|b| b.pts()).unwrap().nseconds() as f64 / 1e9;
                first = first.min(pts);
                last = last.max(pts);
                packets += 1;
            }
            None if sink.is_eos() => break,
            None => {}
        }
    }
    assert!(sink.is_eos(), "{} did not demux to the end in time", path.display());
    pipeline.set_state(gst::State::Null).unwrap();
    ClipInfo { codec, packets, first_pts_s: first, last_pts_s: last }
}

fn no_part_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".part"), "temporary file left: {name}");
    }
}

/// Whether the top 12 rows of `img` are, on average, the red of the test model's banner.
fn top_is_banner_red(img: &image::RgbImage) -> bool {
    let mut sum = [0f64; 3];
    for y in 0..12.min(img.height()) {
        for x in 0..img.width() {
            (0..3).for_each(|c| sum[c] += img.get_pixel(x, y)[c] as f64);
        }
    }
    let red = lookout::draw::BANNER_COLOR[0] as f64 - 40.0;
    let n = (12.min(img.height()) * img.width()) as f64;
    let [r, g, b] = sum.map(|v| v / n);
    r > red && r > g + 80.0 && r > b + 80.0
}

/// Keyframes of bikes.mp4 (presentation times): its longest GOP is 2.44 s.
const BIKES_KEYFRAMES_S: [f64; 6] = [0.08, 1.28, 3.12, 5.56, 7.56, 9.76];
const BIKES_MAX_GOP_S: f64 = 2.44;
const BIKES_FIRST_S: f64 = 0.08;
const BIKES_LAST_S: f64 = 10.04;
const FRAME_S: f64 = 0.04;

#[test]
fn bikes_clips_are_remuxed_and_span_pre_roll_to_post_roll() {
    let out = tempfile::tempdir().unwrap();
    let config = write_config(
        out.path(),
        "[[query]]\ntext = \"a person riding a bicycle\"\nthreshold = 0.62\npre_roll_s = 1.5\npost_roll_s = 1.0\n",
    );
    // A stale partial clip of a crashed run is removed at start.
    std::fs::create_dir_all(out.path().join("run/bikes")).unwrap();
    std::fs::write(out.path().join("run/bikes/.crashed.mp4.part"), b"half").unwrap();
    let o = watch_cmd(&fixture("bikes.mp4"), &config, &out.path().join("run")).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = out.path().join("run");
    let all = lines(&run);
    let ends: Vec<&Value> = all.iter().filter(|l| l["type"] == "end").collect();
    let finals: Vec<&Value> = all.iter().filter(|l| l["type"] == "clips").collect();
    assert!(!ends.is_empty(), "the query gives events on bikes.mp4");
    assert_eq!(ends.len(), finals.len(), "one clips line per event");
    for l in all.iter().filter(|l| l["type"] != "clips") {
        assert_eq!(l["clips"]["status"], "pending", "{l}");
    }
    for end in ends {
        let id = end["event_id"].as_str().unwrap();
        let fin = finals.iter().find(|f| f["event_id"] == id).unwrap();
        assert_eq!(fin["clips"]["status"], "written", "{fin}");
        assert_eq!(fin["clips"]["clip"], format!("bikes/{id}.mp4"));
        let clip = run.join(fin["clips"]["clip"].as_str().unwrap());
        let info = clip_info(&clip);
        assert_eq!(info.codec, "video/x-h264", "remuxed, not re-encoded");
        let decoded = lookout::sink::probe_video(&clip).unwrap();
        assert_eq!((decoded.width, decoded.height), (640, 272));
        assert_eq!(decoded.frames, info.packets, "every packet of {id} decodes (it starts on a keyframe)");

        // Wanted: from start - pre to end + post, cut by the file's first and last frame.
        let (start, stop) = (end["start"]["pts_s"].as_f64().unwrap(), end["end"]["pts_s"].as_f64().unwrap());
        let want_from = (start - 1.5).max(BIKES_FIRST_S);
        let want_to = (stop + 1.0).min(BIKES_LAST_S);
        let want = want_to - want_from;
        let got = info.last_pts_s - info.first_pts_s;
        eprintln!(
            "{id}: clip {got:.2} s ({} frames) for {want:.2} s wanted ({want_from:.2}..{want_to:.2})",
            info.packets
        );
        assert!(got + 1e-3 >= want, "{id}: {got:.3} s < {want:.3} s wanted ({want_from}..{want_to})");
        // One GOP more at most, and the frame or two a B-frame stream decodes ahead at the end.
        assert!(got <= want + BIKES_MAX_GOP_S + 2.0 * FRAME_S + 1e-3, "{id}: {got:.3} s for {want:.3} s wanted");
        assert_eq!(decoded.frames as f64, ((got / FRAME_S).round() + 1.0), "{id}: constant 25 fps, no gap");

        // The evidence, made from the clip: the crop clip is one even size, and its region holds every box.
        for key in ["crop_clip", "snapshot", "crop_snapshot", "sidecar"] {
            let path = run.join(fin["clips"][key].as_str().unwrap_or_else(|| panic!("{key}: {fin}")));
            assert!(path.is_file(), "{}", path.display());
        }
        let sidecar: Value =
            serde_json::from_slice(&std::fs::read(run.join(fin["clips"]["sidecar"].as_str().unwrap())).unwrap())
                .unwrap();
        assert_eq!(sidecar["event_id"], id);
        let frames = sidecar["frames"].as_array().unwrap();
        assert!(!frames.is_empty(), "the boxes of the event's track");
        let clip_start_s = sidecar["clip_start_s"].as_f64().unwrap();
        // The stream time of the clip's first frame: the keyframe at or before the start of the pre-roll.
        let keyframe = BIKES_KEYFRAMES_S.iter().copied().filter(|k| *k <= want_from + 1e-6).fold(0.0, f64::max);
        assert!((clip_start_s - keyframe).abs() < 1e-3, "{id}: clip_start_s {clip_start_s}, keyframe {keyframe}");
        let crop = &sidecar["crop"];
        let (x, y, w, h) = ["x", "y", "width", "height"].map(|k| crop[k].as_f64().unwrap()).into();
        for f in frames {
            let b: Vec<f64> = f["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert!(f["pts_s"].as_f64().unwrap() >= clip_start_s - 1e-3, "a box before the clip: {f}");
            assert!(b[0] >= x - 0.5 && b[1] >= y - 0.5 && b[2] <= x + w + 0.5 && b[3] <= y + h + 0.5, "{f} in {crop}");
        }
        let cropped = lookout::sink::probe_video(&run.join(fin["clips"]["crop_clip"].as_str().unwrap())).unwrap();
        assert_eq!(
            (cropped.width as u64, cropped.height as u64),
            (crop["out_width"].as_u64().unwrap(), crop["out_height"].as_u64().unwrap())
        );
        assert!(cropped.width.is_multiple_of(2) && cropped.height.is_multiple_of(2));
        assert_eq!(cropped.frames, decoded.frames, "every frame of the clip is cropped");
        // One region, one size: the crop snapshot is a frame of the crop clip.
        let crop_snapshot = image::open(run.join(fin["clips"]["crop_snapshot"].as_str().unwrap())).unwrap();
        assert_eq!(
            (crop_snapshot.width(), crop_snapshot.height()),
            (cropped.width, cropped.height),
            "{id}: crop snapshot and crop clip"
        );
        // The test model's banner is on both snapshots and the crop clip; the full clip is the camera's own
        // packets (remuxed), so it has none.
        let snapshot = image::open(run.join(fin["clips"]["snapshot"].as_str().unwrap())).unwrap().to_rgb8();
        let crop_frame = common::decode(&run.join(fin["clips"]["crop_clip"].as_str().unwrap()), |i| i == 0);
        let full_frame = common::decode(&clip, |i| i == 0);
        for (what, img, banner) in [
            ("snapshot", &snapshot, true),
            ("crop snapshot", &crop_snapshot.to_rgb8(), true),
            ("crop clip", crop_frame[0].image.as_ref().unwrap(), true),
            ("full clip", full_frame[0].image.as_ref().unwrap(), false),
        ] {
            assert_eq!(top_is_banner_red(img), banner, "{id}: {what}");
        }

        // Constant quality: the crop clip spends no more bytes per pixel-second than the full clip, which is the
        // source's own encoding (the two have the same frames, so per pixel-frame is per pixel-second). At x264's
        // default bitrate the crop clips spent 1.8-2.5 times as much (4.2-5.1 times the full clip's bytes).
        let per_pixel_frame = |path: &Path, width: u64, height: u64| {
            std::fs::metadata(path).unwrap().len() as f64 / (width * height * decoded.frames) as f64
        };
        let crop_path = run.join(fin["clips"]["crop_clip"].as_str().unwrap());
        let ratio = per_pixel_frame(&crop_path, cropped.width as u64, cropped.height as u64)
            / per_pixel_frame(&clip, decoded.width as u64, decoded.height as u64);
        eprintln!(
            "{id}: crop clip {}x{} {} bytes, full clip 640x272 {} bytes: {ratio:.2} times the bytes per pixel-second",
            cropped.width,
            cropped.height,
            std::fs::metadata(&crop_path).unwrap().len(),
            std::fs::metadata(&clip).unwrap().len()
        );
        assert!(ratio <= 1.0, "{id}: the crop clip spends {ratio:.2} times the full clip's bytes per pixel-second");
    }
    no_part_files(&run.join("bikes"));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["clips"]["written"].as_u64(), Some(finals.len() as u64), "{s}");
}

#[test]
fn a_vp8_source_is_transcoded_to_h264() {
    let out = tempfile::tempdir().unwrap();
    let webm = out.path().join("ball.webm");
    make_clip(&webm, 75, "smpte", "vp8enc deadline=1 keyframe-max-dist=10 ! webmmux");
    // The query's threshold starts tracks: at 0.2 the random test model gives a few events, not one per box.
    let config = write_config(out.path(), "[[query]]\ntext = \"a test pattern\"\nthreshold = 0.2\n");
    let o = watch_cmd(&webm, &config, &out.path().join("run")).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = out.path().join("run");
    let finals: Vec<Value> = lines(&run).into_iter().filter(|l| l["type"] == "clips").collect();
    assert!(!finals.is_empty(), "events on the test pattern");
    for fin in &finals {
        assert_eq!(fin["clips"]["status"], "written", "{fin}");
        let clip = run.join(fin["clips"]["clip"].as_str().unwrap());
        assert_eq!(clip_info(&clip).codec, "video/x-h264");
        let decoded = lookout::sink::probe_video(&clip).unwrap();
        assert_eq!((decoded.width, decoded.height), (320, 240));
        assert!(decoded.frames >= 25, "{} frames", decoded.frames);
    }
    no_part_files(&run.join("ball"));
}

/// Waits for the first `start` line of `run` (up to 120 s), sends `child` SIGTERM, and waits for it to exit (up
/// to 60 s): its exit status and its stderr.
fn sigterm_at_first_event(child: &mut std::process::Child, run: &Path) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lines(run).iter().any(|l| l["type"] == "start") {
        assert!(child.try_wait().unwrap().is_none(), "lookout ended before any event");
        assert!(Instant::now() < deadline, "no start line within 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "lookout did not stop within 60 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (status, stderr)
}

#[test]
fn sigterm_in_an_event_leaves_a_playable_clip_and_a_shutdown_end() {
    let out = tempfile::tempdir().unwrap();
    // Long enough that the run is still going when it is stopped.
    let long = out.path().join("long.mp4");
    make_clip(&long, 6000, "smpte", "x264enc speed-preset=ultrafast key-int-max=25 ! mp4mux");
    let config = write_config(out.path(), "[[query]]\ntext = \"a test pattern\"\nthreshold = 0.0\n");
    let run = out.path().join("run");
    let mut child = watch_cmd(&long, &config, &run).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (status, stderr) = sigterm_at_first_event(&mut child, &run);
    assert!(status.success(), "{status}: {stderr}");
    let all = lines(&run);
    let ends: Vec<&Value> = all.iter().filter(|l| l["type"] == "end").collect();
    assert!(!ends.is_empty());
    assert!(ends.iter().all(|e| e["reason"] == "shutdown"), "{ends:?}");
    let mut written = 0;
    for end in ends {
        let fin = all.iter().find(|l| l["type"] == "clips" && l["event_id"] == end["event_id"]).unwrap();
        // Threshold 0 makes many tracks: every clip is cut (none is refused); one whose turn comes after the
        // stop's time limit fails and says so.
        if fin["clips"]["status"] == "failed" {
            assert!(fin["clips"]["error"].as_str().unwrap().contains("shutdown_timeout_s"), "{fin}");
            continue;
        }
        written += 1;
        assert_eq!(fin["clips"]["status"], "written", "{fin}");
        let clip = run.join(fin["clips"]["clip"].as_str().unwrap());
        let decoded = lookout::sink::probe_video(&clip).unwrap();
        assert!(decoded.frames > 0, "the clip plays");
        assert!(decoded.frames < 6000, "the clip is cut at the shutdown, not at the end of the file");
    }
    assert!(written > 0, "no clip written");
    no_part_files(&run.join("long"));
}

#[test]
fn a_raw_source_has_no_clip_and_the_clips_line_says_why() {
    let out = tempfile::tempdir().unwrap();
    let avi = out.path().join("raw.avi");
    make_clip(&avi, 50, "smpte", "videoconvert ! video/x-raw,format=I420 ! avimux");
    // The query's threshold starts tracks: at 0.2 the random test model gives a few events, not one per box.
    let config = write_config(out.path(), "[[query]]\ntext = \"a test pattern\"\nthreshold = 0.2\n");
    let o = watch_cmd(&avi, &config, &out.path().join("run")).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let finals: Vec<Value> = lines(&out.path().join("run")).into_iter().filter(|l| l["type"] == "clips").collect();
    assert!(!finals.is_empty());
    for fin in &finals {
        assert_eq!(fin["clips"]["status"], "failed", "{fin}");
        let error = fin["clips"]["error"].as_str().unwrap();
        assert!(error.contains("raw") && error.contains("raw.avi"), "{error}");
    }
    no_part_files(&out.path().join("run/raw"));
}

/// A live H.264 camera: 25 fps, a keyframe every 10 frames.
const CAMERA: &str = "( videotestsrc is-live=true pattern=smpte ! video/x-raw,width=320,height=240,framerate=25/1 \
     ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bframes=0 \
     ! rtph264pay name=pay0 pt=96 config-interval=-1 )";

#[test]
fn a_live_rtsp_camera_gets_clips_from_its_own_packets() {
    let server = RtspServer::serve(0, "/cam", CAMERA);
    let out = tempfile::tempdir().unwrap();
    let config = write_config(
        out.path(),
        "[[query]]\ntext = \"a test pattern\"\nthreshold = 0.2\npre_roll_s = 1.0\npost_roll_s = 0.5\n",
    );
    let url = format!("rtsp://viewer:s3cret@127.0.0.1:{}/cam", server.port);
    let run = out.path().join("run");
    // --max-seconds stops the run as a shutdown does: open events end with `reason: shutdown`.
    let o = watch_cmd(Path::new(&url), &config, &run).args(["--max-seconds", "6"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(!stderr.contains("s3cret"), "password leaked: {stderr}");
    let all = lines(&run);
    let finals: Vec<&Value> = all.iter().filter(|l| l["type"] == "clips").collect();
    assert!(!finals.is_empty(), "events on the test pattern: {all:?}");
    let dir = run.join(finals[0]["clips"]["clip"].as_str().unwrap()).parent().unwrap().to_path_buf();
    for fin in finals {
        assert!(!fin.to_string().contains("s3cret"));
        assert_eq!(fin["clips"]["status"], "written", "{fin}");
        let clip = run.join(fin["clips"]["clip"].as_str().unwrap());
        let info = clip_info(&clip);
        assert_eq!(info.codec, "video/x-h264", "remuxed");
        let decoded = lookout::sink::probe_video(&clip).unwrap();
        assert_eq!((decoded.width, decoded.height), (320, 240));
        assert_eq!(decoded.frames, info.packets, "every packet decodes: the clip starts on a keyframe");
        // The event's own span at least (the pre-roll is cut by when the stream started).
        let end = all.iter().find(|l| l["type"] == "end" && l["event_id"] == fin["event_id"]).unwrap();
        let span = end["end"]["pts_s"].as_f64().unwrap() - end["start"]["pts_s"].as_f64().unwrap();
        assert!(info.last_pts_s - info.first_pts_s + 1e-3 >= span, "{fin}: clip shorter than the event ({span} s)");
    }
    no_part_files(&dir);
    drop(server);
}

/// An event storm: dozens of tracks at once (every box of the tiny model matches at threshold 0). Every event's
/// clip is written (clips wait for one of `max_open_clips` workers, on disk; none is refused: before issue 14
/// those past `max_open_clips` failed at once), at most `max_open_clips` are cut at once, each clip is at least
/// its wanted span and at most one GOP more, and every packet of it decodes.
#[test]
fn an_event_storm_gets_every_clip_written_each_its_whole_span() {
    let out = tempfile::tempdir().unwrap();
    let (pre, post) = (0.5, 0.5);
    let config = write_config(
        out.path(),
        &format!(
            "[output]\nmax_open_clips = 3\nevidence = false\n\n[[query]]\ntext = \"a person riding a bicycle\"\n\
             threshold = 0.0\nmin_frames = 1\nwindow = 1\npre_roll_s = {pre}\npost_roll_s = {post}\n"
        ),
    );
    let run = out.path().join("run");
    let o = watch_cmd(&fixture("bikes.mp4"), &config, &run).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all = lines(&run);
    let ends: Vec<&Value> = all.iter().filter(|l| l["type"] == "end").collect();
    let finals: Vec<&Value> = all.iter().filter(|l| l["type"] == "clips").collect();
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!("{} events; clips {}", ends.len(), s["clips"]);
    assert!(ends.len() >= 12, "dozens of simultaneous tracks wanted, got {} events", ends.len());
    assert_eq!(ends.len(), finals.len(), "one clips line per event");
    let c = &s["clips"];
    let peak = c["peak_open"].as_u64().unwrap();
    assert!((1..=3).contains(&peak), "{c}");
    assert_eq!(c["written"].as_u64().unwrap(), finals.len() as u64, "{c}");
    assert!(c["segments_written"].as_u64().unwrap() >= 2, "{c}");
    for end in ends {
        let id = end["event_id"].as_str().unwrap();
        let fin = finals.iter().find(|f| f["event_id"] == id).unwrap();
        assert_eq!(fin["clips"]["status"], "written", "{fin}");
        let clip = run.join(fin["clips"]["clip"].as_str().unwrap());
        let info = clip_info(&clip);
        let decoded = lookout::sink::probe_video(&clip).unwrap();
        assert_eq!(decoded.frames, info.packets, "every packet of {id} decodes (it starts on a keyframe)");
        let (start, stop) = (end["start"]["pts_s"].as_f64().unwrap(), end["end"]["pts_s"].as_f64().unwrap());
        let want_from = (start - pre).max(BIKES_FIRST_S);
        let want_to = (stop + post).min(BIKES_LAST_S);
        let want = want_to - want_from;
        let got = info.last_pts_s - info.first_pts_s;
        assert!(got + 1e-3 >= want, "{id}: {got:.3} s < {want:.3} s wanted ({want_from}..{want_to})");
        assert!(got <= want + BIKES_MAX_GOP_S + 2.0 * FRAME_S + 1e-3, "{id}: {got:.3} s for {want:.3} s wanted");
    }
    no_part_files(&run.join("bikes"));
    no_part_files(&run.join("bikes/rec"));
}

/// bikes.mp4 re-encoded with B-frames (x264enc bframes=2 b-adapt=false, a keyframe every 25 frames) into `path`,
/// its presentation times moved `pts_ahead_s` after its decoding times (a large composition offset, as some
/// encoders write: valid, but PTS and DTS far apart).
fn bikes_with_b_frames(path: &Path, pts_ahead_s: u64) {
    gst::init().unwrap();
    let desc = format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! x264enc bframes=2 b-adapt=false key-int-max=25 \
         speed-preset=ultrafast name=enc ! h264parse ! mp4mux ! filesink location=\"{}\"",
        fixture("bikes.mp4").display(),
        path.display()
    );
    let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let enc = pipeline.by_name("enc").unwrap();
    enc.static_pad("src").unwrap().add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(b)) = &mut info.data {
            let b = b.make_mut();
            if let Some(p) = b.pts() {
                b.set_pts(p + gst::ClockTime::from_seconds(pts_ahead_s));
            }
        }
        gst::PadProbeReturn::Ok
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(60), &[gst::MessageType::Eos, gst::MessageType::Error])
        .expect("re-encoding bikes.mp4 took over 60 s");
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
}

/// B-frames (PTS `pts_ahead_s` ahead of DTS beyond the reordering): every clip is muxed (no "Buffer has no PTS"),
/// plays to its end, and spans the event's pre-roll to its post-roll.
fn b_frame_clips_play_and_span_pre_roll_to_post_roll(pts_ahead_s: u64) {
    let out = tempfile::tempdir().unwrap();
    let src = out.path().join("bframes.mp4");
    bikes_with_b_frames(&src, pts_ahead_s);
    let (pre, post) = (1.0, 0.5);
    let config = write_config(
        out.path(),
        &format!(
            "[output]\nevidence = false\n\n[[query]]\ntext = \"a person riding a bicycle\"\nthreshold = 0.0\n\
             min_frames = 1\nwindow = 1\nend_after_s = 0.5\npre_roll_s = {pre}\npost_roll_s = {post}\n"
        ),
    );
    let run = out.path().join("run");
    let o = watch_cmd(&src, &config, &run).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(!stderr.contains("multiplex") && !stderr.contains("CRITICAL"), "{stderr}");
    let all = lines(&run);
    let ends: Vec<&Value> = all.iter().filter(|l| l["type"] == "end").collect();
    let finals: Vec<&Value> = all.iter().filter(|l| l["type"] == "clips").collect();
    assert!(!ends.is_empty());
    assert_eq!(ends.len(), finals.len(), "one clips line per event");
    // The stream's first and last frame (stream time): events start on the first inferred frame and end at the
    // last one.
    let first_s = ends.iter().map(|e| e["start"]["pts_s"].as_f64().unwrap()).fold(f64::MAX, f64::min);
    let last_s = ends.iter().map(|e| e["end"]["pts_s"].as_f64().unwrap()).fold(f64::MIN, f64::max);
    for end in &ends {
        let id = end["event_id"].as_str().unwrap();
        let fin = finals.iter().find(|f| f["event_id"] == id).unwrap();
        assert_eq!(fin["clips"]["status"], "written", "{fin}");
        let clip = run.join(fin["clips"]["clip"].as_str().unwrap());
        let info = clip_info(&clip);
        let decoded = lookout::sink::probe_video(&clip).unwrap();
        assert_eq!(decoded.frames, info.packets, "{id}: every packet decodes, to EOS");
        let (start, stop) = (end["start"]["pts_s"].as_f64().unwrap(), end["end"]["pts_s"].as_f64().unwrap());
        let want = (stop + post).min(last_s) - (start - pre).max(first_s);
        let got = info.last_pts_s - info.first_pts_s;
        eprintln!("{id}: clip {got:.2} s ({} frames) for {want:.2} s wanted", info.packets);
        assert!(got + FRAME_S + 1e-3 >= want, "{id}: {got:.3} s < {want:.3} s wanted");
        // One GOP (1 s) more at most, and the frames a B-frame stream decodes ahead at the end.
        assert!(got <= want + 1.0 + 3.0 * FRAME_S + 1e-3, "{id}: {got:.3} s for {want:.3} s wanted");
    }
    no_part_files(&run.join("bframes"));
}

#[test]
fn b_frame_clips_are_muxed_whole() {
    b_frame_clips_play_and_span_pre_roll_to_post_roll(0);
}

/// Two runs into one output directory (or a camera service that restarts): every event id is new, and nothing
/// the first run wrote (clips, snapshots, sidecars, the annotated video) is replaced by the second.
#[test]
fn a_second_run_into_the_same_directory_overwrites_nothing_and_repeats_no_id() {
    let out = tempfile::tempdir().unwrap();
    let config = write_config(
        out.path(),
        "[output]\nannotate = true\n\n[[query]]\ntext = \"a person riding a bicycle\"\nthreshold = 0.62\n\
         pre_roll_s = 1.0\npost_roll_s = 0.5\n",
    );
    let run = out.path().join("run");
    let hashes = |dir: &Path| -> std::collections::BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
            .collect()
    };
    let o = watch_cmd(&fixture("bikes.mp4"), &config, &run).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let first_lines = lines(&run);
    let first_files = hashes(&run.join("bikes"));
    assert!(first_files.keys().any(|f| f.ends_with("-crop.mp4")), "the first run wrote clips: {first_files:?}");
    assert!(first_files.contains_key("annotated.mp4"));

    let o = watch_cmd(&fixture("bikes.mp4"), &config, &run).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all = lines(&run);
    assert!(all.len() >= 2 * first_lines.len(), "the second run appends its own lines");
    let ids = |ls: &[Value]| -> std::collections::BTreeSet<String> {
        ls.iter().map(|l| l["event_id"].as_str().unwrap().to_string()).collect()
    };
    let (first_ids, second_ids) = (ids(&first_lines), ids(&all[first_lines.len()..]));
    assert!(!second_ids.is_empty());
    assert!(first_ids.is_disjoint(&second_ids), "ids repeated: {:?}", first_ids.intersection(&second_ids));
    assert!(
        first_ids.iter().all(|i| i.starts_with("bikes-r1-")) && second_ids.iter().all(|i| i.starts_with("bikes-r2-"))
    );
    for l in all[first_lines.len()..].iter().filter(|l| l["type"] == "clips") {
        assert_eq!(l["clips"]["status"], "written", "{l}");
    }
    let after = hashes(&run.join("bikes"));
    for (name, bytes) in &first_files {
        assert!(after.get(name) == Some(bytes), "{name} of the first run was changed or removed");
    }
    assert!(
        after.contains_key("annotated-r2.mp4"),
        "the second run's annotated video has its own name: {:?}",
        after.keys()
    );
}

/// A stop is bounded by `[output] shutdown_timeout_s`: at 0 s nothing waits, every open event still gets its
/// `end` and its `clips` line, each clip not finished says so, no `.part` is left, and what is left is reported
/// while it drains.
#[test]
fn a_stop_is_bounded_by_shutdown_timeout_and_says_what_was_not_finished() {
    let out = tempfile::tempdir().unwrap();
    let long = out.path().join("long.mp4");
    make_clip(&long, 6000, "smpte", "x264enc speed-preset=ultrafast key-int-max=25 ! mp4mux");
    let config = write_config(
        out.path(),
        "[output]\nshutdown_timeout_s = 0\n\n[[query]]\ntext = \"a test pattern\"\nthreshold = 0.2\n",
    );
    let run = out.path().join("run");
    let mut child = watch_cmd(&long, &config, &run)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, stderr) = sigterm_at_first_event(&mut child, &run);
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("stopping: what is still open is finished within 0 s"), "{stderr}");
    let all = lines(&run);
    let starts: Vec<&Value> = all.iter().filter(|l| l["type"] == "start").collect();
    let mut not_finished = 0;
    for start in &starts {
        let id = &start["event_id"];
        assert!(all.iter().any(|l| l["type"] == "end" && &l["event_id"] == id), "{id} has no end");
        let fin = all.iter().find(|l| l["type"] == "clips" && &l["event_id"] == id);
        let fin = fin.unwrap_or_else(|| panic!("{id} has no clips line"));
        if fin["clips"]["status"] == "failed" {
            let error = fin["clips"]["error"].as_str().unwrap();
            if error.contains("shutdown_timeout_s") {
                not_finished += 1;
                if fin["clips"]["clip"].is_null() {
                    assert!(!run.join(format!("long/{}.mp4", id.as_str().unwrap())).exists(), "{fin}");
                }
            }
        }
    }
    assert!(not_finished > 0, "with no time to finish, some clip is recorded as not finished: {all:#?}");
    no_part_files(&run.join("long"));
}

/// How an AVI's index marks keyframes (`AVIIF_KEYFRAME`), as cameras and DVR exports write it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AviIndex {
    /// As avimux writes it: the keyframes, and only they.
    AsWritten,
    /// Only the first frame is marked (seen on CCTV exports): the demuxer flags every later packet a delta unit.
    FirstOnly,
    /// No index at all (a recording cut short): the demuxer flags every packet a keyframe.
    Missing,
}

/// Rewrites the AVI at `path` so that its index marks keyframes as `index` says.
fn rewrite_avi_index(path: &Path, index: AviIndex) {
    if index == AviIndex::AsWritten {
        return;
    }
    let mut d = std::fs::read(path).unwrap();
    let at = d.windows(4).rposition(|w| w == b"idx1").expect("avimux writes an idx1 index");
    let u32_at = |d: &[u8], i: usize| u32::from_le_bytes(d[i..i + 4].try_into().unwrap());
    match index {
        AviIndex::AsWritten => {}
        AviIndex::FirstOnly => {
            // Entries of 16 bytes: chunk id, flags, offset, size.
            let entries = u32_at(&d, at + 4) as usize / 16;
            for k in 0..entries {
                let flags = at + 8 + 16 * k + 4;
                let v = if k == 0 { 0x10 } else { u32_at(&d, flags) & !0x10 };
                d[flags..flags + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        AviIndex::Missing => {
            d.truncate(at);
            let riff = (d.len() - 8) as u32;
            d[4..8].copy_from_slice(&riff.to_le_bytes());
            // avih's dwFlags: no AVIF_HASINDEX (0x10), no AVIF_MUSTUSEINDEX (0x20).
            let avih = d.windows(4).position(|w| w == b"avih").unwrap() + 8 + 12;
            let flags = u32_at(&d, avih) & !0x30;
            d[avih..avih + 4].copy_from_slice(&flags.to_le_bytes());
        }
    }
    std::fs::write(path, d).unwrap();
}

/// 10 s of black, then 4 s of SMPTE bars (320x240 at 25 fps, raw I420) into `path`: the test model sees a test
/// pattern only in the last 4 s, so every event starts 10 s into the file.
fn black_then_bars(path: &Path) {
    let caps = "video/x-raw,format=I420,width=320,height=240,framerate=25/1";
    for (pattern, frames, append) in [("black", 250, false), ("smpte", 100, true)] {
        let desc = format!(
            "videotestsrc num-buffers={frames} pattern={pattern} ! {caps} ! filesink append={append} location={}",
            path.display()
        );
        let status = Command::new("gst-launch-1.0").arg("-q").args(desc.split(' ')).status().unwrap();
        assert!(status.success(), "could not make {}", path.display());
    }
}

/// Every codec the clips take (H.264 and H.265 remuxed; VP8, MJPEG, MPEG-4 part 2 and DivX 3 transcoded), a
/// keyframe every second (every frame for MJPEG), events 10 s in, pre-roll 5 s: each clip starts on a keyframe
/// of the source at most pre-roll + one GOP before its event's start, and plays. The AVI codecs are also tried
/// with the index of a CCTV export (only the first frame marked) and with none: the container's flags are then
/// wrong, so the keyframes are read from the bitstream (a DivX clip of an event at 16.5 s started at 0.0 s).
#[test]
fn every_codec_is_cut_at_the_keyframe_before_the_pre_roll() {
    const GOP_S: f64 = 1.0;
    const PRE_ROLL_S: f64 = 5.0;
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("black-then-bars.yuv");
    black_then_bars(&raw);
    let config = write_config(
        dir.path(),
        &format!(
            "[[query]]\ntext = \"a test pattern\"\nthreshold = 0.5\npre_roll_s = {PRE_ROLL_S}\npost_roll_s = 1.0\n"
        ),
    );
    let cases: &[(&str, &str, &str, AviIndex)] = &[
        ("h264", "x264enc key-int-max=25 speed-preset=ultrafast ! h264parse ! mp4mux", "mp4", AviIndex::AsWritten),
        ("h265", "x265enc key-int-max=25 speed-preset=ultrafast ! h265parse ! mp4mux", "mp4", AviIndex::AsWritten),
        ("vp8", "vp8enc deadline=1 keyframe-max-dist=25 ! webmmux", "webm", AviIndex::AsWritten),
        ("mjpeg", "jpegenc ! avimux", "avi", AviIndex::AsWritten),
        ("mjpeg-first-only", "jpegenc ! avimux", "avi", AviIndex::FirstOnly),
        ("mjpeg-no-index", "jpegenc ! avimux", "avi", AviIndex::Missing),
        ("mpeg4", "avenc_mpeg4 gop-size=25 ! avimux", "avi", AviIndex::AsWritten),
        ("mpeg4-first-only", "avenc_mpeg4 gop-size=25 ! avimux", "avi", AviIndex::FirstOnly),
        ("mpeg4-no-index", "avenc_mpeg4 gop-size=25 ! avimux", "avi", AviIndex::Missing),
        ("divx", "avenc_msmpeg4 gop-size=25 ! avimux", "avi", AviIndex::AsWritten),
        ("divx-first-only", "avenc_msmpeg4 gop-size=25 ! avimux", "avi", AviIndex::FirstOnly),
        ("divx-no-index", "avenc_msmpeg4 gop-size=25 ! avimux", "avi", AviIndex::Missing),
    ];
    let mut wrong = Vec::new();
    for &(name, encode, ext, index) in cases {
        let src = dir.path().join(format!("{name}.{ext}"));
        let desc = format!(
            "filesrc location={} ! rawvideoparse format=i420 width=320 height=240 framerate=25/1 ! {encode} ! \
             filesink location={}",
            raw.display(),
            src.display()
        );
        let status = Command::new("gst-launch-1.0").arg("-q").args(desc.split(' ')).status().unwrap();
        assert!(status.success(), "could not make {}", src.display());
        rewrite_avi_index(&src, index);

        let run = dir.path().join(format!("run-{name}"));
        let o = watch_cmd(&src, &config, &run).output().unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let all = lines(&run);
        let ends: Vec<&Value> = all.iter().filter(|l| l["type"] == "end").collect();
        assert!(!ends.is_empty(), "{name}: the bars give events");
        for end in ends {
            let id = end["event_id"].as_str().unwrap();
            let start = end["start"]["pts_s"].as_f64().unwrap();
            assert!(start >= 10.0 - 1e-6, "{name} {id}: an event in the black, at {start} s");
            let fin = all.iter().find(|l| l["type"] == "clips" && l["event_id"] == id).unwrap();
            if fin["clips"]["status"] != "written" {
                wrong.push(format!("{name} {id}: no clip: {}", fin["clips"]["error"]));
                continue;
            }
            let sidecar: Value =
                serde_json::from_slice(&std::fs::read(run.join(fin["clips"]["sidecar"].as_str().unwrap())).unwrap())
                    .unwrap();
            let clip_start = sidecar["clip_start_s"].as_f64().unwrap();
            let from = start - PRE_ROLL_S;
            // Keyframes every second from the first frame's time (0.08 s with x265's B-frames).
            let first_s = start - end["start"]["frame"].as_f64().unwrap() * FRAME_S;
            let k = (clip_start - first_s) / GOP_S;
            let on_keyframe = encode.starts_with("jpegenc") || (k.round() - k).abs() < 1e-3;
            eprintln!("{name} {id}: event at {start:.2} s, clip from {clip_start:.2} s (pre-roll from {from:.2} s)");
            if !(clip_start <= from + 1e-3 && clip_start >= from - GOP_S - 1e-3 && on_keyframe) {
                wrong.push(format!(
                    "{name} {id}: event at {start:.2} s, clip from {clip_start:.2} s: not the keyframe at or before \
                     {from:.2} s"
                ));
            }
            let clip = run.join(fin["clips"]["clip"].as_str().unwrap());
            match lookout::sink::probe_video(&clip) {
                Ok(v) => {
                    // From the pre-roll (one GOP earlier at most) to the post-roll, cut by the file's end.
                    let want = (end["end"]["pts_s"].as_f64().unwrap() + 1.0).min(first_s + 13.96) - from;
                    let frames = v.frames as f64;
                    if frames < want / FRAME_S - 1.0 || frames > (want + GOP_S) / FRAME_S + 2.0 {
                        wrong.push(format!("{name} {id}: {frames} frames play, {want:.2} s wanted"));
                    }
                }
                Err(e) => wrong.push(format!("{name} {id}: the clip does not play: {e}")),
            }
        }
    }
    assert!(wrong.is_empty(), "{} clips cut wrong:\n{}", wrong.len(), wrong.join("\n"));
}
