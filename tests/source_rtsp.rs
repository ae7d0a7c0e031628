//! Live sources against in-process servers: an RTSP server (gst-rtsp-server, videotestsrc → H.264) that is stopped
//! and restarted on the same port, an address where nothing listens, a consumer slower than the camera, and a
//! plain HTTP server.
//!
//! Every wait has a deadline; the only sleep is the simulated inference time of the slow consumer.

#[path = "common/rtsp.rs"]
mod rtsp;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use lookout::shutdown::Shutdown;
use lookout::source::{
    self, FrameQueue, FrameSettings, Notify, Popped, ReconnectSettings, SourceError, SourceHandle, SourceSpec,
    SourceState, SpawnOptions,
};
use rtsp::RtspServer;

const PASSWORD: &str = "s3cretpw";

/// Quick reconnection for tests: the outage and recovery take a second or two, not minutes.
fn fast_reconnect() -> ReconnectSettings {
    ReconnectSettings { initial_ms: 200, max_ms: 1000, multiplier: 2.0, max_attempts: None, stall_timeout_ms: 3000 }
}

/// Pops frames from several sources and counts them, checking that each source's indices only go up.
struct Consumer {
    queues: Vec<FrameQueue>,
    notify: Arc<Notify>,
    got: Vec<u64>,
    last_index: Vec<Option<u64>>,
}

impl Consumer {
    fn new(handles: &[&SourceHandle], notify: Arc<Notify>) -> Consumer {
        let n = handles.len();
        Consumer {
            queues: handles.iter().map(|h| h.queue.clone()).collect(),
            notify,
            got: vec![0; n],
            last_index: vec![None; n],
        }
    }

    /// Consumes until `done` holds; panics after `timeout`.
    fn pump_until(&mut self, what: &str, timeout: Duration, mut done: impl FnMut(&Consumer) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}; got {:?}", self.got);
            let batch = source::next_batch(&self.queues, &self.notify, Duration::from_millis(50));
            for (i, frame) in batch.items {
                if let Some(last) = self.last_index[i] {
                    assert!(frame.index > last, "source {i}: index {} after {last}", frame.index);
                }
                self.last_index[i] = Some(frame.index);
                self.got[i] += 1;
            }
        }
    }
}

fn spawn_live(
    url: &str,
    id: usize,
    reconnect: &ReconnectSettings,
    shutdown: &Shutdown,
    notify: &Arc<Notify>,
) -> SourceHandle {
    let spec = SourceSpec::parse(url, id).unwrap();
    let settings = FrameSettings { model_size: (64, 64), ..Default::default() };
    spawn_live_with(spec, &settings, reconnect, shutdown, notify)
}

fn spawn_live_with(
    spec: SourceSpec,
    settings: &FrameSettings,
    reconnect: &ReconnectSettings,
    shutdown: &Shutdown,
    notify: &Arc<Notify>,
) -> SourceHandle {
    let options = SpawnOptions { notify: Some(notify.clone()), ..Default::default() };
    source::spawn_with(spec, settings, reconnect, shutdown.token(), options).unwrap()
}

/// A TCP port on 127.0.0.1 where nothing listens (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn reconnects_after_the_server_restarts_on_the_same_port() {
    let server_a = RtspServer::start(0, "/a");
    let port_a = server_a.port;
    let server_b = RtspServer::start(0, "/b");
    let shutdown = Shutdown::new();
    let notify = Notify::new();
    let reconnect = fast_reconnect();
    let cam_a =
        spawn_live(&format!("rtsp://viewer:{PASSWORD}@127.0.0.1:{port_a}/a"), 0, &reconnect, &shutdown, &notify);
    let cam_b = spawn_live(&format!("rtsp://127.0.0.1:{}/b", server_b.port), 1, &reconnect, &shutdown, &notify);
    assert_eq!(cam_a.spec.display, format!("rtsp://***@127.0.0.1:{port_a}/a"));
    let mut consumer = Consumer::new(&[&cam_a, &cam_b], notify.clone());

    consumer.pump_until("both cameras streaming", Duration::from_secs(30), |c| c.got[0] >= 10 && c.got[1] >= 10);
    assert_eq!(cam_a.stats.state(), SourceState::Streaming);
    // B's frame rate with both cameras up (its server sends 20 frames/s).
    let (t, from) = (Instant::now(), consumer.got[1]);
    consumer.pump_until("20 more frames of B", Duration::from_secs(30), |c| c.got[1] >= from + 20);
    let rate_before = (consumer.got[1] - from) as f64 / t.elapsed().as_secs_f64();

    // Outage: camera A's server goes away. A must fail, back off and retry (at least one failed retry);
    // B keeps streaming meanwhile, at its rate.
    server_a.stop();
    let at_stop = consumer.got.clone();
    let t_stop = Instant::now();
    let decoded_at_stop = cam_a.stats.snapshot().frames_decoded;
    consumer.pump_until("camera A to retry while its server is down", Duration::from_secs(30), |c| {
        cam_a.stats.snapshot().reconnects >= 2 && c.got[1] >= at_stop[1] + 20
    });
    let rate_during = (consumer.got[1] - at_stop[1]) as f64 / t_stop.elapsed().as_secs_f64();
    eprintln!("camera B: {rate_before:.1} frames/s with A up, {rate_during:.1} while A is down");
    assert!(
        rate_during >= 0.7 * rate_before,
        "camera B slowed down while A was down: {rate_before:.1} -> {rate_during:.1} frames/s"
    );
    let during = cam_a.stats.snapshot();
    assert!(during.frames_decoded <= decoded_at_stop + 20, "A cannot decode much while its server is down");
    let last_error = during.last_error.expect("the outage is recorded");
    assert!(!last_error.contains(PASSWORD), "{last_error}");
    assert!(last_error.contains(&format!("rtsp://***@127.0.0.1:{port_a}/a")), "{last_error}");

    // Recovery on the same port.
    let server_a = RtspServer::start(port_a, "/a");
    assert_eq!(server_a.port, port_a);
    let at_restart = consumer.got.clone();
    consumer.pump_until("camera A back after the restart", Duration::from_secs(30), |c| {
        c.got[0] >= at_restart[0] + 10 && c.got[1] >= at_restart[1] + 10
    });
    let a = cam_a.stats.snapshot();
    assert_eq!(a.state, SourceState::Streaming);
    assert!(a.reconnects >= 2);
    assert!(a.frames_decoded > decoded_at_stop);
    let b = cam_b.stats.snapshot();
    assert_eq!(b.reconnects, 0, "camera B never noticed: {b:?}");

    shutdown.drain();
    for handle in [cam_a, cam_b] {
        let exit = handle.join();
        assert!(exit.error.is_none(), "{:?}", exit.error);
        assert_eq!(exit.stats.state, SourceState::Ended);
        assert!(!format!("{:?}", exit.stats).contains(PASSWORD));
    }
    drop(server_a);
    drop(server_b);
}

#[test]
fn unreachable_camera_backs_off_without_crashing_and_can_give_up() {
    let port = closed_port();
    let url = format!("rtsp://admin:{PASSWORD}@127.0.0.1:{port}/stream");
    let shutdown = Shutdown::new();
    let notify = Notify::new();
    let reconnect = ReconnectSettings { initial_ms: 100, max_ms: 400, ..fast_reconnect() };
    let retrying = spawn_live(&url, 0, &reconnect, &shutdown, &notify);
    let limited = ReconnectSettings { max_attempts: Some(2), ..reconnect.clone() };
    let giving_up = spawn_live(&url, 1, &limited, &shutdown, &notify);

    let deadline = Instant::now() + Duration::from_secs(30);
    while retrying.stats.snapshot().reconnects < 3 || !giving_up.is_finished() {
        assert!(Instant::now() < deadline, "no retries: {:?}", retrying.stats.snapshot());
        // Nothing is delivered; the queue's notify doubles as a bounded wait.
        assert!(matches!(retrying.queue.pop_timeout(Duration::from_millis(50)), Popped::Empty));
    }
    let s = retrying.stats.snapshot();
    assert!(matches!(s.state, SourceState::Backoff | SourceState::Connecting), "{s:?}");
    assert_eq!(s.frames_delivered, 0);
    let last_error = s.last_error.unwrap();
    assert!(last_error.contains(&format!("rtsp://***@127.0.0.1:{port}/stream")), "{last_error}");
    assert!(!last_error.contains(PASSWORD), "{last_error}");

    let gave_up = giving_up.join();
    let err = gave_up.error.expect("max_attempts reached");
    assert!(matches!(err, SourceError::GaveUp { attempts: 2, .. }), "{err}");
    assert!(!err.to_string().contains(PASSWORD) && err.to_string().contains("***@127.0.0.1"), "{err}");
    assert_eq!(gave_up.stats.state, SourceState::Ended);

    // Dropping a handle whose source sits in a long backoff does not wait for the backoff.
    let patient = ReconnectSettings { initial_ms: 60_000, max_ms: 60_000, ..reconnect.clone() };
    let waiting = spawn_live(&url, 2, &patient, &shutdown, &notify);
    let deadline = Instant::now() + Duration::from_secs(30);
    while waiting.stats.state() != SourceState::Backoff {
        assert!(Instant::now() < deadline, "never backed off: {:?}", waiting.stats.snapshot());
        assert!(matches!(waiting.queue.pop_timeout(Duration::from_millis(50)), Popped::Empty));
    }
    let started = Instant::now();
    drop(waiting);
    assert!(started.elapsed() < Duration::from_secs(5), "drop waited {:?}", started.elapsed());

    shutdown.drain();
    let started = Instant::now();
    let exit = retrying.join();
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown waits through no backoff");
    assert!(exit.error.is_none(), "{:?}", exit.error);
}

#[test]
fn slow_consumer_gets_fresh_frames_and_drops_are_counted() {
    let server = RtspServer::start(0, "/live");
    let shutdown = Shutdown::new();
    let notify = Notify::new();
    // Full frames too: the two appsinks of a live source drop independently and are paired by PTS.
    let spec = SourceSpec::parse(&format!("rtsp://127.0.0.1:{}/live", server.port), 0).unwrap();
    let settings = FrameSettings { model_size: (64, 64), full_frames: true, ..Default::default() };
    let cam = spawn_live_with(spec, &settings, &fast_reconnect(), &shutdown, &notify);
    let mut consumer = Consumer::new(&[&cam], notify.clone());
    consumer.pump_until("first frame", Duration::from_secs(30), |c| c.got[0] >= 1);

    let mut max_age = Duration::ZERO;
    let mut indices = Vec::new();
    for _ in 0..10 {
        // Simulated inference: 4 frames per second against a 20 fps camera.
        std::thread::sleep(Duration::from_millis(250));
        match cam.queue.pop_timeout(Duration::from_secs(5)) {
            Popped::Item(frame) => {
                max_age = max_age.max(frame.received.elapsed());
                indices.push(frame.index);
                let full = frame.full.expect("full frame paired");
                assert_eq!((full.width, full.height, frame.model.width), (320, 240, 64));
            }
            other => panic!("no frame from a live camera: {other:?}"),
        }
    }
    let s = cam.stats.snapshot();
    assert!(s.dropped_in_queue > 0 && s.frames_dropped >= s.dropped_in_queue, "{s:?}");
    assert!(s.dropped_unpaired * 10 <= s.frames_decoded, "pairing rarely fails: {s:?}");
    assert!(indices.windows(2).all(|w| w[1] > w[0] + 1), "frames were skipped: {indices:?}");
    // The queue holds the 2 newest frames of a 20 fps stream: the popped one is ~50-100 ms old.
    assert!(max_age < Duration::from_millis(500), "{max_age:?}");
    assert_eq!(cam.queue.capacity(), source::DEFAULT_LIVE_QUEUE);

    shutdown.drain();
    assert!(cam.join().error.is_none());
}

/// A minimal HTTP/1.0 file server: every request gets the whole file, or with `hang_after` only that many bytes,
/// after which the connection stays open and silent (a camera that stops sending) until the client closes it.
struct HttpServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    fn start(body: Vec<u8>, hang_after: Option<usize>) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let body = body.clone();
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let sent = &body[..hang_after.unwrap_or(body.len()).min(body.len())];
                    let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(sent));
                    if hang_after.is_some() {
                        // Silent but connected: returns when the client hangs up.
                        while let Ok(n) = stream.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                });
            }
        });
        HttpServer { port, stop, thread: Some(thread) }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A 2-second MP4 (40 frames, 20 fps) with its index first, as streamed over HTTP.
fn faststart_clip() -> Vec<u8> {
    gst::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    let description = format!(
        "videotestsrc num-buffers=40 ! video/x-raw,width=160,height=120,framerate=20/1 ! x264enc speed-preset=ultrafast \
         ! mp4mux faststart=true ! filesink location=\"{}\"",
        clip.display()
    );
    let encoder = gst::parse::launch(&description).unwrap();
    encoder.set_state(gst::State::Playing).unwrap();
    let msg = encoder
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Eos, gst::MessageType::Error])
        .unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)));
    encoder.set_state(gst::State::Null).unwrap();
    std::fs::read(&clip).unwrap()
}

#[test]
fn stalled_stream_is_restarted_by_the_watchdog() {
    let clip = faststart_clip();
    let server = HttpServer::start(clip.clone(), Some(clip.len() / 2));
    let shutdown = Shutdown::new();
    let notify = Notify::new();
    let reconnect = ReconnectSettings { stall_timeout_ms: 1000, ..fast_reconnect() };
    let cam = spawn_live(&format!("http://127.0.0.1:{}/clip.mp4", server.port), 0, &reconnect, &shutdown, &notify);
    let mut consumer = Consumer::new(&[&cam], notify.clone());
    consumer.pump_until("a restart after the stall", Duration::from_secs(30), |c| {
        c.got[0] > 0 && cam.stats.snapshot().reconnects >= 1
    });
    let last_error = cam.stats.snapshot().last_error.unwrap();
    assert!(last_error.contains("stalled: no frame for"), "{last_error}");
    shutdown.drain();
    assert!(cam.join().error.is_none());
    drop(server);
}

#[test]
fn http_source_streams() {
    let server = HttpServer::start(faststart_clip(), None);
    let shutdown = Shutdown::new();
    let notify = Notify::new();
    let cam =
        spawn_live(&format!("http://127.0.0.1:{}/clip.mp4", server.port), 0, &fast_reconnect(), &shutdown, &notify);
    assert!(cam.spec.is_live());
    let mut consumer = Consumer::new(&[&cam], notify.clone());
    // Played at its own pace (2 s), then over: a stream with a duration is not reconnected.
    consumer
        .pump_until("the HTTP clip to end", Duration::from_secs(30), |_| cam.queue.is_closed() && cam.queue.is_empty());
    let exit = cam.join();
    assert!(exit.error.is_none(), "{:?}", exit.error);
    assert_eq!(exit.stats.reconnects, 0);
    assert!(consumer.got[0] >= 30, "paced by the clock, few frames are dropped: {:?}", exit.stats);
    drop(server);
}
