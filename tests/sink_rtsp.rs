//! `--serve-rtsp`: the annotated stream republished over RTSP on loopback, watched by a real RTSP client.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use lookout::pipeline::{self, EncoderPurpose, PipelineTemplate};
use lookout::sink::rtsp::RtspPublisher;

#[test]
fn a_client_receives_the_published_frames() {
    // The Jetson template's NVENC encoder, as `watch` passes it on a Jetson: here it cannot be made, so the
    // publisher falls back to the generic software encoder and the stream still plays.
    let jetson = PipelineTemplate::builtin("jetson").unwrap();
    let publisher = RtspPublisher::start_with_encoder("127.0.0.1", 0, jetson.encoder(EncoderPurpose::Live)).unwrap();
    if gst::init().is_ok() && gst::ElementFactory::find("nvv4l2h264enc").is_none() {
        assert_eq!(publisher.encoder(), pipeline::generic_encoder(EncoderPurpose::Live));
    }
    assert_ne!(publisher.port(), 0);
    let feed = publisher.feed("cam", 160, 120).unwrap();
    assert_eq!(feed.url, format!("rtsp://127.0.0.1:{}/cam", publisher.port()));

    // The pusher stands in for the watch loop: 25 frames a second, until the client has seen enough.
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (feed, stop) = (feed.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut frame = vec![0u8; 160 * 120 * 3];
            let mut pushed = 0u32;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                frame.iter_mut().for_each(|b| *b = b.wrapping_add(3));
                if feed.push(&frame, 160 * 3) {
                    pushed += 1;
                }
                // Paces the stand-in at the camera's frame rate.
                std::thread::sleep(Duration::from_millis(40));
            }
            pushed
        })
    };

    let client = gst::parse::launch(&format!(
        "rtspsrc location={} latency=0 ! rtph264depay ! avdec_h264 ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink",
        feed.url
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = client.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    client.set_state(gst::State::Playing).unwrap();
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut got = 0;
    while got < 5 && Instant::now() < deadline {
        if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(500)) {
            let caps = sample.caps().unwrap().structure(0).unwrap().to_owned();
            assert_eq!((caps.get::<i32>("width").unwrap(), caps.get::<i32>("height").unwrap()), (160, 120));
            got += 1;
        }
    }
    client.set_state(gst::State::Null).unwrap();
    stop.store(true, Ordering::Relaxed);
    let pushed = pusher.join().unwrap();
    assert!(got >= 5, "client received {got} frames (pushed {pushed})");
}

#[test]
fn nothing_is_encoded_without_a_viewer() {
    let publisher = RtspPublisher::start("127.0.0.1", 0).unwrap();
    assert!(publisher.encoder().contains("x264enc tune=zerolatency"), "{}", publisher.encoder());
    let feed = publisher.feed("idle", 64, 48).unwrap();
    assert!(!feed.push(&vec![0u8; 64 * 48 * 3], 64 * 3), "no client: the frame is not sent");
}
