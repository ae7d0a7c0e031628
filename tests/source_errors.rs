//! What `watch` says when a source fails, through the real binary: a camera that refuses the password (RTSP and
//! HTTP 401), an HTTP server that is not there, and an AVI cut short. Each message is in words that say what is
//! wrong and what to do, not GStreamer's ("Internal data stream error", "reason error (-5)").
//!
//! The 401 cameras are small servers on 127.0.0.1 that answer every request with 401 Unauthorized.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{fixture, tiny_model};

const PASSWORD: &str = "s3cretpw";

/// A server on 127.0.0.1 that answers every request with 401 Unauthorized: RTSP (answering each request of a
/// connection, with its CSeq) or HTTP (one answer, then the connection closes). Stopped on drop.
struct Refuser {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Refuser {
    fn start(rtsp: bool) -> Refuser {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("refuser".into())
            .spawn(move || {
                let deadline = Instant::now() + common::WAIT;
                while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => answer(stream, rtsp),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
                        Err(_) => return,
                    }
                }
            })
            .unwrap();
        Refuser { port, stop, thread: Some(thread) }
    }
}

impl Drop for Refuser {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers the requests of one connection with 401 until the client closes it (at most 2 s of silence).
fn answer(mut stream: TcpStream, rtsp: bool) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut chunk) {
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let request = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let reply = if rtsp {
                let cseq =
                    request.lines().find_map(|l| l.strip_prefix("CSeq:").map(str::trim)).unwrap_or("1").to_string();
                format!("RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n\r\n")
            } else {
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
                    .to_string()
            };
            if stream.write_all(reply.as_bytes()).is_err() || !rtsp {
                return;
            }
        }
    }
}

/// `watch` on `source` for `seconds`, with reconnection every 100-200 ms so that a few retries happen.
fn watch(source: &str, seconds: &str, out: &Path) -> Output {
    let config = out.join("fast-reconnect.toml");
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(&config, "[reconnect]\ninitial_ms = 100\nmax_ms = 200\n").unwrap();
    Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["watch", source, "--max-seconds", seconds, "--no-clips", "--intra-threads", "1", "-q", "a car", "-m"])
        .arg(tiny_model("owlvit"))
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(out.join("run"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A camera that refuses the password: one line says it is an authentication failure and what to do; the
/// retries go on, with backoff, naming the same reason.
fn refused_password_is_said_once(rtsp: bool) {
    let server = Refuser::start(rtsp);
    let scheme = if rtsp { "rtsp" } else { "http" };
    let url = format!("{scheme}://admin:{PASSWORD}@127.0.0.1:{}/live", server.port);
    let out = tempfile::tempdir().unwrap();
    let o = watch(&url, "3", out.path());
    let err = stderr(&o);
    let once: Vec<&str> = err.lines().filter(|l| l.contains("not a network fault")).collect();
    assert_eq!(once.len(), 1, "said once: {err}");
    assert!(
        once[0].contains("authentication failed: the camera refused the user name and password")
            && once[0].contains("401")
            && once[0].contains("check the user name and password"),
        "{}",
        once[0]
    );
    let retries = err.lines().filter(|l| l.contains("reconnecting") && l.contains("authentication failed")).count();
    assert!(retries >= 2, "the retries go on, with the reason in words: {err}");
    assert!(!err.contains(PASSWORD), "password in the log: {err}");
    drop(server);

    // Without credentials in the URL: the camera wants some.
    let server = Refuser::start(rtsp);
    let o = watch(&format!("{scheme}://127.0.0.1:{}/live", server.port), "2", out.path());
    let err = stderr(&o);
    let once: Vec<&str> = err.lines().filter(|l| l.contains("not a network fault")).collect();
    assert_eq!(once.len(), 1, "{err}");
    assert!(once[0].contains("authentication required") && once[0].contains("put a user name and password in the URL"));
}

#[test]
fn an_rtsp_camera_that_refuses_the_password_is_an_authentication_failure_said_once() {
    refused_password_is_said_once(true);
}

#[test]
fn an_http_camera_that_refuses_the_password_is_an_authentication_failure_said_once() {
    refused_password_is_said_once(false);
}

/// souphttpsrc reports a refused connection as "Internal data stream error (reason error (-5))": lookout tries
/// the port itself and says what happened.
#[test]
fn an_http_server_that_is_not_there_is_named_in_words() {
    let port = common::free_port();
    let out = tempfile::tempdir().unwrap();
    let o = watch(&format!("http://127.0.0.1:{port}/video.mjpg"), "2", out.path());
    let err = stderr(&o);
    let reconnects: Vec<&str> = err.lines().filter(|l| l.contains("reconnecting")).collect();
    assert!(!reconnects.is_empty(), "{err}");
    for l in reconnects {
        assert!(l.contains(&format!("cannot connect to 127.0.0.1:{port}: connection refused")), "{l}");
        assert!(!l.contains("(-5)") && !l.contains("Internal data stream error"), "{l}");
    }
}

/// An AVI keeps its index at the end: cut short, its demuxer plays what is left and reports that as the whole
/// file. The RIFF header still says how long it was, and the run says it is truncated, as for an MP4.
#[test]
fn a_truncated_avi_is_reported_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let avi = dir.path().join("bikes.avi");
    let desc = format!(
        "filesrc location={} ! qtdemux ! h264parse ! avimux ! filesink location={}",
        fixture("bikes.mp4").display(),
        avi.display()
    );
    let ok = Command::new("gst-launch-1.0").arg("-q").args(desc.split(' ')).status().unwrap().success();
    assert!(ok, "could not make {}", avi.display());
    let bytes = std::fs::read(&avi).unwrap();
    let cut = dir.path().join("cut.avi");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();

    let run = |file: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_lookout"))
            .args(["watch", "--no-clips", "--json", "--threshold", "1", "--intra-threads", "1", "-q", "a car", "-m"])
            .arg(tiny_model("owlvit"))
            .arg(file)
            .arg("--out")
            .arg(dir.path().join("run"))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (o.status.code(), summary["sources"][0].clone(), stderr(&o))
    };
    let (code, source, err) = run(&avi);
    assert_eq!(code, Some(0), "the whole AVI is fine: {err}");
    assert!(source["error"].is_null() && source["frames_processed"] == 250, "{source}");

    let (code, source, err) = run(&cut);
    assert_eq!(code, Some(2), "{err}");
    let frames = source["frames_processed"].as_u64().unwrap();
    assert!(frames > 0 && frames < 250, "what is left is played: {frames}");
    let error = source["error"].as_str().unwrap_or_else(|| panic!("no error: {source}"));
    let stated = bytes.len();
    assert!(
        error.contains(&format!("is {} bytes but its AVI header says {stated}: it is truncated", stated / 2)),
        "{error}"
    );
    assert!(err.contains("cut.avi") && err.contains("truncated"), "{err}");
}
