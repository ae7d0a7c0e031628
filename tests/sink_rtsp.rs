//! `--serve-rtsp`: the annotated stream republished over RTSP on loopback, watched by a real RTSP client.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use lookout::draw::{Canvas, color_for};
use lookout::gst::{EncoderPurpose, PipelineTemplate, encoder};
use lookout::picture::{Picture, PixelFormat};
use lookout::sink::rtsp::{RtspFeed, RtspPublisher};

#[test]
fn a_client_receives_the_published_frames() {
    // The Jetson template's NVENC encoder, as `watch` passes it on a Jetson: here it cannot be made, so the
    // publisher falls back to the generic software encoder and the stream still plays.
    let jetson = PipelineTemplate::builtin("jetson").unwrap();
    let publisher = RtspPublisher::start_with_encoder("127.0.0.1", 0, jetson.encoder(EncoderPurpose::Live)).unwrap();
    if gst::init().is_ok() && gst::ElementFactory::find("nvv4l2h264enc").is_none() {
        assert_eq!(publisher.encoder(), encoder::generic_encoder(EncoderPurpose::Live));
    }
    assert_ne!(publisher.port(), 0);
    let feed = publisher.feed("cam", 160, 120).unwrap();
    assert_eq!(feed.url, format!("rtsp://127.0.0.1:{}/cam", publisher.port()));

    let (got, pushed) = watch_feed(&feed, |feed, step| {
        let frame = vec![step.wrapping_mul(3); 160 * 120 * 3];
        feed.push(&frame, 160 * 3)
    });
    assert!(got.len() >= 5, "client received {} frames (pushed {pushed})", got.len());
    assert!(got.iter().all(|f| f.dimensions() == (160, 120)));
    // A frame of another format is not sent.
    assert!(!feed.push_picture(&Picture::black(PixelFormat::I420, 160, 120).unwrap()));
}

/// The feed `watch --serve-rtsp` opens for the bundled templates: I420 frames, drawn on, published without
/// conversion. The client sees the drawn block in its colour.
#[test]
fn an_i420_feed_reaches_the_client_with_its_colours() {
    let publisher = RtspPublisher::start("127.0.0.1", 0).unwrap();
    let feed = publisher.feed_of("i420", PixelFormat::I420, 320, 240).unwrap();
    let mut picture = Picture::black(PixelFormat::I420, 320, 240).unwrap();
    {
        let mut canvas = Canvas::from_picture(&mut picture);
        canvas.fill_rect(0, 0, 320, 240, [128, 128, 128]);
        canvas.fill_rect(100, 80, 120, 80, color_for(1));
    }
    let (got, pushed) = watch_feed(&feed, move |feed, _| feed.push_picture(&picture));
    assert!(got.len() >= 5, "client received {} frames (pushed {pushed})", got.len());
    let last = got.last().unwrap();
    let close = |a: [u8; 3], b: [u8; 3]| (0..3).all(|k| (a[k] as i32 - b[k] as i32).abs() <= 20);
    assert!(close(last.get_pixel(160, 120).0, color_for(1)), "block: {:?}", last.get_pixel(160, 120).0);
    assert!(close(last.get_pixel(30, 30).0, [128, 128, 128]), "background: {:?}", last.get_pixel(30, 30).0);
    // RGB rows are not sent to an I420 feed.
    assert!(!feed.push(&vec![0u8; 320 * 240 * 3], 320 * 3));
}

/// Pushes frames with `push` at 25 a second (standing in for the watch loop) while a real RTSP client plays the
/// feed, until the client has decoded 5 frames or 25 s have passed. Returns the frames the client decoded (RGB)
/// and how many were pushed.
fn watch_feed<F>(feed: &RtspFeed, push: F) -> (Vec<image::RgbImage>, u32)
where
    F: Fn(&RtspFeed, u8) -> bool + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (feed, stop) = (feed.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut pushed = 0u32;
            let mut step = 0u8;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                step = step.wrapping_add(1);
                if push(&feed, step) {
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
    let mut got = Vec::new();
    while got.len() < 5 && Instant::now() < deadline {
        if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(500)) {
            got.push(common::rgb_image(&sample));
        }
    }
    client.set_state(gst::State::Null).unwrap();
    stop.store(true, Ordering::Relaxed);
    let pushed = pusher.join().unwrap();
    (got, pushed)
}

#[test]
fn nothing_is_encoded_without_a_viewer() {
    let publisher = RtspPublisher::start("127.0.0.1", 0).unwrap();
    assert!(publisher.encoder().contains("x264enc tune=zerolatency"), "{}", publisher.encoder());
    let feed = publisher.feed("idle", 64, 48).unwrap();
    assert!(!feed.push(&vec![0u8; 64 * 48 * 3], 64 * 3), "no client: the frame is not sent");
}
