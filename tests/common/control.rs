//! A `lookout watch --http 127.0.0.1:0` run on bikes.mp4 for the control-plane tests, and an HTTP client.
//!
//! Included by the tests that need it with `#[path = "common/control.rs"] mod control;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest wait for one condition (generous: the machine is shared).
pub const WAIT: Duration = Duration::from_secs(60);

/// A running `lookout watch ... --http 127.0.0.1:0`; killed when dropped.
pub struct ControlRun {
    child: Child,
    pub port: u16,
    pub out: PathBuf,
    stderr: Arc<Mutex<String>>,
    /// The JSON summary, once the run ended.
    stdout: Arc<Mutex<String>>,
    pub token: Option<String>,
}

impl ControlRun {
    /// `lookout watch bikes.mp4 -q "a person riding a bicycle"` with the tiny OWL-ViT, into `out`, paced at
    /// `speed` times real time, with `extra` arguments; waits for the server's address.
    pub fn start(out: &Path, speed: f64, extra: &[&str]) -> ControlRun {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_lookout"))
            .env("RUST_LOG", "info")
            .arg("watch")
            .arg(root.join("tests/fixtures/bikes.mp4"))
            .args(["-q", "a person riding a bicycle", "-m"])
            .arg(root.join("models/tiny/owlvit"))
            .arg("--out")
            .arg(out)
            .args(["--intra-threads", "1", "--http", "127.0.0.1:0", "--realtime", &speed.to_string()])
            .args(extra)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let out_pipe = child.stdout.take().unwrap();
        let summary = stdout.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(out_pipe).read_to_string(&mut text);
            *summary.lock().unwrap() = text;
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut run = ControlRun { child, port: 0, out: out.to_path_buf(), stderr, stdout, token: None };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(port) = run.stderr().lines().find_map(|l| {
                l.strip_prefix("http: serving on http://127.0.0.1:")?.trim_end_matches('/').parse::<u16>().ok()
            }) {
                run.port = port;
                return run;
            }
            if let Ok(Some(status)) = run.child.try_wait() {
                panic!("lookout exited ({status}) before serving; stderr:\n{}", run.stderr());
            }
            assert!(Instant::now() < deadline, "no 'http: serving on' line after {WAIT:?}; stderr:\n{}", run.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A request; `None` for no body. Answers with the status, the headers (lower-case names) and the body.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> Reply {
        request(self.port, method, path, body, &self.auth(headers))
    }

    fn auth<'a>(&'a self, headers: &[(&'a str, &'a str)]) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if let Some(t) = &self.token
            && !h.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            h.push(("Authorization".into(), format!("Bearer {t}")));
        }
        h
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, &[])
    }

    pub fn json(&self, method: &str, path: &str, body: &serde_json::Value) -> Reply {
        self.request(method, path, Some(body.to_string().as_bytes()), &[("Content-Type", "application/json")])
    }

    /// The lines of `<out>/events.jsonl` so far.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.out.join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for the run to end by itself; its exit status and its JSON summary.
    pub fn wait(mut self) -> (std::process::ExitStatus, serde_json::Value) {
        let deadline = Instant::now() + WAIT * 2;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let summary = wait_for("the summary on stdout", || {
                    serde_json::from_str::<serde_json::Value>(&self.stdout.lock().unwrap()).ok()
                });
                return (status, summary);
            }
            assert!(Instant::now() < deadline, "the run did not end; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ControlRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("status {}: not JSON ({e}): {}", self.status, String::from_utf8_lossy(&self.body))
        })
    }

    /// A 4xx answer with a JSON `error` of one line; the message.
    pub fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "body: {}", String::from_utf8_lossy(&self.body));
        assert!(self.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{self:?}");
        let e = self.json()["error"].as_str().unwrap_or_else(|| panic!("no error field: {self:?}")).to_string();
        assert!(!e.is_empty() && !e.contains('\n'), "{e:?}");
        e
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`), read to the end.
pub fn request(port: u16, method: &str, path: &str, body: Option<&[u8]>, headers: &[(String, String)]) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    if let Some(b) = body {
        // A server may answer (413) before reading a large body: a failed write is then not the test's failure.
        let _ = s.write_all(b);
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse(&raw)
}

fn parse(raw: &[u8]) -> Reply {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("no end of headers");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Reply { status, headers, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < nl + 2 + size {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[(nl + 4 + size).min(b.len())..];
    }
}

/// Opens a streaming GET and reads until `until` holds on what came, or `timeout`; what came.
pub fn read_stream(
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
    until: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline && !until(&got) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    got
}

/// Polls `cond` every 50 ms until it holds; fails naming `what` after [`WAIT`].
pub fn wait_for<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tool the test needs (chromium, promtool): its path; `None` when it is missing and this is not CI. On CI
/// (`CI=true`) a missing tool fails the test: `make test` installs it (deploy/install-deps.sh).
pub fn tool(names: &[&str]) -> Option<PathBuf> {
    for name in names {
        if let Ok(out) = Command::new("which").arg(name).output()
            && out.status.success()
        {
            return Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!ci, "{} not found, and CI=true: run deploy/install-deps.sh (make test does)", names.join(" or "));
    eprintln!("SKIPPED: {} not found; run deploy/install-deps.sh to install it", names.join(" or "));
    None
}
