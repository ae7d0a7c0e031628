//! `lookout watch` on files, end to end: real GStreamer, real ONNX Runtime, the tiny model.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{fixture, golden, tiny_model};

fn lookout() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lookout"));
    c.env("RUST_LOG", "warn");
    c
}

fn watch(args: &[&str], sources: &[&Path], out: &Path) -> Output {
    lookout()
        .arg("watch")
        .args(sources)
        .arg("--out")
        .arg(out)
        .arg("-m")
        .arg(tiny_model("owlvit"))
        .args(["--intra-threads", "1", "--no-wall-time", "--json", "--no-clips"])
        .args(args)
        .output()
        .unwrap()
}

fn summary(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no JSON summary ({e}); stderr: {}", String::from_utf8_lossy(&o.stderr)))
}

/// Writes a short clip with GStreamer: `encode` is the part between the test source and the file sink.
fn make_clip(path: &Path, frames: u32, encode: &str) {
    let desc = format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 ! {encode} ! filesink location={}",
        path.display()
    );
    let status = Command::new("gst-launch-1.0").arg("-q").args(desc.split(' ')).status().unwrap();
    assert!(status.success(), "could not make {}", path.display());
}

const QUERIES: [&str; 4] = ["-q", "a person riding a bicycle", "-q", "a car"];

#[test]
fn bikes_events_match_the_golden_file_and_the_video_has_every_frame() {
    let out = tempfile::tempdir().unwrap();
    let bikes = fixture("bikes.mp4");
    let mut args = QUERIES.to_vec();
    args.extend(["--threshold", "0.45", "--annotate"]);
    // Temporary files of a run that was killed are removed at the start, clips or not (this run has none).
    std::fs::create_dir_all(out.path().join("bikes")).unwrap();
    for stale in ["bikes/.bikes-r1-0-3-63.mp4.part", "bikes/annotated.mp4.part"] {
        std::fs::write(out.path().join(stale), b"half").unwrap();
    }
    let o = watch(&args, &[&bikes], out.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.path().join("bikes/.bikes-r1-0-3-63.mp4.part").exists());
    assert!(!out.path().join("bikes/annotated.mp4.part").exists());
    let s = summary(&o);
    let src = &s["sources"][0];
    assert_eq!(src["frames_decoded"], 250);
    assert_eq!(src["frames_processed"], 250);
    assert_eq!(src["frames_inferred"], 250);
    assert_eq!(src["frames_dropped"], 0);
    // The element that decoded the video, found in the running pipeline (nvv4l2decoder on a Jetson).
    assert_eq!(src["decoder"], "avdec_h264");
    // And the one that encoded the annotated video (nvv4l2h264enc on a Jetson).
    assert_eq!(src["encoder"], "x264enc");

    let video = lookout::sink::probe_video(&out.path().join("bikes/annotated.mp4")).unwrap();
    assert_eq!((video.frames, video.width, video.height), (250, 640, 272));

    let got = std::fs::read_to_string(out.path().join("events.jsonl")).unwrap();
    let golden_path = golden("watch/bikes-owlvit.events.jsonl");
    if std::env::var_os("LOOKOUT_BLESS").is_some() {
        std::fs::create_dir_all(golden_path.parent().unwrap()).unwrap();
        std::fs::write(&golden_path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden_path).unwrap();
    compare_events(&got, &want);
}

/// Same events in the same order: kinds, ids, tracks, frames, times, reasons and queries exactly; boxes within 0.5 px
/// and scores within 1e-3 (ONNX Runtime may order float sums differently on another CPU). The source is compared
/// by file name, since the checkout's path differs from machine to machine. Every event has one `start` first and
/// one `end` last, all with the same id.
fn compare_events(got: &str, want: &str) {
    let parse = |s: &str| -> Vec<serde_json::Value> { s.lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    let (g, w) = (parse(got), parse(want));
    assert!(!w.is_empty(), "the golden file has events");
    assert_eq!(g.len(), w.len(), "number of events");
    let file_name = |v: &serde_json::Value| Path::new(v.as_str().unwrap()).file_name().unwrap().to_owned();
    let close = |a: &serde_json::Value, b: &serde_json::Value, tolerance: f64| {
        (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= tolerance
    };
    let close_box = |a: &serde_json::Value, b: &serde_json::Value| {
        let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
        a.len() == 4 && b.len() == 4 && (0..4).all(|k| close(&a[k], &b[k], 0.5))
    };
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        for key in [
            "type",
            "event_id",
            "query",
            "label",
            "track_id",
            "frame",
            "pts_s",
            "start",
            "end",
            "duration_s",
            "reason",
            "clips",
        ] {
            assert_eq!(a.get(key), b.get(key), "event {i}: {key}");
        }
        assert_eq!(file_name(&a["source"]), file_name(&b["source"]), "event {i}: source");
        assert!(!a.to_string().contains("wall_time"), "--no-wall-time");
        assert!(close_box(&a["box"], &b["box"]), "event {i}: box {} vs {}", a["box"], b["box"]);
        assert!(close(&a["score"], &b["score"], 1e-3), "event {i}: score");
        let (ap, bp) = (&a["peak"], &b["peak"]);
        assert_eq!((&ap["frame"], &ap["pts_s"]), (&bp["frame"], &bp["pts_s"]), "event {i}: peak");
        assert!(close_box(&ap["box"], &bp["box"]) && close(&ap["score"], &bp["score"], 1e-3), "event {i}: peak");
    }
    let mut kinds: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for e in &g {
        kinds.entry(e["event_id"].as_str().unwrap()).or_default().push(e["type"].as_str().unwrap());
    }
    for (id, k) in kinds {
        assert!(k[0] == "start" && k[k.len() - 1] == "end", "{id}: {k:?}");
        assert_eq!((k.iter().filter(|t| **t == "start").count(), k.iter().filter(|t| **t == "end").count()), (1, 1));
    }
}

#[test]
fn every_nth_frame_is_inferred_and_every_frame_is_annotated() {
    let out = tempfile::tempdir().unwrap();
    let clip = out.path().join("ball.mp4");
    make_clip(&clip, 60, "x264enc key-int-max=10 ! mp4mux");
    let mut args = QUERIES.to_vec();
    args.extend(["--every", "7", "--annotate"]);
    let o = watch(&args, &[&clip], &out.path().join("run"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let src = &summary(&o)["sources"][0];
    assert_eq!(src["frames_processed"], 60);
    assert_eq!(src["frames_inferred"], 9, "frames 0, 7, ..., 56");
    let video = lookout::sink::probe_video(&out.path().join("run/ball/annotated.mp4")).unwrap();
    assert_eq!((video.frames, video.width, video.height), (60, 320, 240));
}

#[test]
fn other_containers_and_codecs() {
    let out = tempfile::tempdir().unwrap();
    let mkv = out.path().join("ball.mkv");
    make_clip(&mkv, 30, "vp8enc deadline=1 ! matroskamux");
    let avi = out.path().join("ball.avi");
    make_clip(&avi, 20, "jpegenc ! avimux");
    let o = watch(&QUERIES, &[&mkv, &avi], &out.path().join("run"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = summary(&o);
    let frames: Vec<_> = s["sources"].as_array().unwrap().iter().map(|x| x["frames_processed"].clone()).collect();
    assert_eq!(frames, [30, 20]);
    let decoders: Vec<_> = s["sources"].as_array().unwrap().iter().map(|x| x["decoder"].clone()).collect();
    assert_eq!(decoders, ["vp8dec", "jpegdec"]);
}

#[test]
fn bad_sources_are_named_and_the_good_one_still_runs() {
    let out = tempfile::tempdir().unwrap();
    let truncated = out.path().join("truncated.mp4");
    let bytes = std::fs::read(fixture("bikes.mp4")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let missing = PathBuf::from("/nonexistent/footage.mp4");
    let good = out.path().join("good.mp4");
    make_clip(&good, 15, "x264enc ! mp4mux");
    let o = lookout()
        .args(["watch", "ftp://cam/x", "rtsp://user:secret@"])
        .arg(&missing)
        .arg(&truncated)
        .arg(&good)
        .arg("--out")
        .arg(out.path().join("run"))
        .arg("-m")
        .arg(tiny_model("owlvit"))
        .args(["-q", "a ball", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ftp"), "unknown scheme named: {stderr}");
    assert!(stderr.contains("/nonexistent/footage.mp4"), "missing file named: {stderr}");
    assert!(!stderr.contains("secret"), "password leaked: {stderr}");
    let s = summary(&o);
    let sources = s["sources"].as_array().unwrap();
    let good = sources.iter().find(|x| x["name"] == "good").unwrap();
    assert_eq!(good["frames_processed"], 15);
    let trunc = sources.iter().find(|x| x["name"] == "truncated").unwrap();
    // A truncated MP4 either plays what it has or fails; either way it is reported and the run goes on.
    assert!(trunc["error"].is_string() || trunc["frames_processed"].as_u64().unwrap() < 250, "{trunc}");
}

#[test]
fn each_bad_source_is_one_error_line_and_none_left_is_an_error() {
    let out = tempfile::tempdir().unwrap();
    let run = |sources: &[&str]| {
        let o = lookout()
            .arg("watch")
            .args(sources)
            .arg("--out")
            .arg(out.path().join("run"))
            .arg("-m")
            .arg(tiny_model("owlvit"))
            .args(["-q", "a ball"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        let errors: Vec<String> = stderr.lines().filter(|l| l.starts_with("error:")).map(String::from).collect();
        (o.status.code(), errors, stderr)
    };
    // One missing file: its reason, once, and no run (nothing to watch).
    let (code, errors, stderr) = run(&["/nonexistent/footage.mp4"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(errors.len(), 1, "one line: {stderr}");
    assert!(errors[0].contains("/nonexistent/footage.mp4") && errors[0].contains("does not exist"), "{stderr}");
    assert!(!stderr.contains("TEST MODEL"), "stopped before loading the model: {stderr}");
    // Two bad sources: both named, on one line, once each.
    let (code, errors, stderr) = run(&["/nonexistent/a.mp4", "ftp://cam/x"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(errors.len(), 1, "one line: {stderr}");
    assert!(errors[0].starts_with("error: no usable source: "), "{stderr}");
    assert_eq!(stderr.matches("/nonexistent/a.mp4").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("ftp://cam/x").count(), 1, "{stderr}");
}

#[test]
fn config_errors_name_the_key_and_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let bad_key = dir.path().join("bad.toml");
    std::fs::write(&bad_key, "[output]\ndirectory = \"x\"\n").unwrap();
    let o = watch(&QUERIES, &[&fixture("bikes.mp4")], dir.path()).status;
    assert!(o.success());
    let o = lookout()
        .args(["watch"])
        .arg(fixture("bikes.mp4"))
        .arg("--config")
        .arg(&bad_key)
        .args(["-q", "x", "-m"])
        .arg(tiny_model("owlvit"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("bad.toml") && stderr.contains("directory"), "{stderr}");

    let orphan = dir.path().join("orphan.toml");
    std::fs::write(&orphan, "[[query]]\ntext = \"a red car\"\nsources = [\"gate\"]\n").unwrap();
    let o = lookout()
        .args(["watch"])
        .arg(fixture("bikes.mp4"))
        .arg("--config")
        .arg(&orphan)
        .arg("--out")
        .arg(dir.path().join("run"))
        .arg("-m")
        .arg(tiny_model("owlvit"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("a red car") && stderr.contains("gate") && stderr.contains("bikes"), "{stderr}");
}
