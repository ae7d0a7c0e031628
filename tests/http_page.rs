//! The control plane's page in headless Chromium, driven over the DevTools protocol (`--remote-debugging-pipe`):
//! it loads, shows the source and the events of a bikes.mp4 run, and a query added through its form is taken.
//! A screenshot is kept in `<CARGO_TARGET_TMPDIR>/http_page/page.png`.

#[path = "common/control.rs"]
mod control;

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use control::{ControlRun, WAIT, tool, wait_for};
use serde_json::{Value, json};

/// Chromium driven over a pipe: commands on its fd 3, answers and events on its fd 4, each ended by a NUL.
struct Browser {
    child: Child,
    to: std::fs::File,
    from: Receiver<Value>,
    next_id: u64,
    session: Option<String>,
}

fn pipe() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

impl Browser {
    fn start(chromium: &std::path::Path, profile: &std::path::Path) -> Browser {
        let (cmd_read, cmd_write) = pipe();
        let (ans_read, ans_write) = pipe();
        let mut command = Command::new(chromium);
        command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--remote-debugging-pipe",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2, close) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(cmd_read, 3) < 0 || libc::dup2(ans_write, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for fd in [cmd_write, ans_read] {
                    libc::close(fd);
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        // SAFETY: the descriptors come from pipe() above and are owned here from now on.
        let (to, mut from_file) = unsafe {
            libc::close(cmd_read);
            libc::close(ans_write);
            (std::fs::File::from_raw_fd(cmd_write), std::fs::File::from_raw_fd(ans_read))
        };
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            while let Ok(n) = from_file.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    if let Ok(v) = serde_json::from_slice::<Value>(&buf[..end]) {
                        let _ = tx.send(v);
                    }
                    buf.drain(..=end);
                }
            }
        });
        Browser { child, to, from: rx, next_id: 1, session: None }
    }

    /// Sends `method` (to the attached page when there is one) and waits for its answer.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.from.recv_timeout(left).unwrap_or_else(|_| panic!("no answer to {method} in {WAIT:?}"));
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page; its value.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true}));
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    fn wait_true(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + WAIT;
        while self.eval(expression) != json!(true) {
            assert!(Instant::now() < deadline, "the page did not show {what} in {WAIT:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).map(value).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &v)| acc | (u32::from(v) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn the_page_shows_the_run_and_adds_a_query() {
    let Some(chromium) = tool(&["chromium", "chromium-browser", "google-chrome"]) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    // A third of real time: 30 s, time for the browser to start on a busy machine, and for the first events'
    // clips (written after their post-roll).
    let run = ControlRun::start(&out.path().join("run"), 0.33, &[]);
    wait_for("readyz", || Some(()).filter(|_| run.get("/readyz").status == 200));
    wait_for("a first event line", || run.lines().into_iter().find(|l| l["type"] == "start"));

    let mut browser = Browser::start(&chromium, &out.path().join("profile"));
    let targets = browser.call("Target.getTargets", json!({}));
    let page = targets["targetInfos"].as_array().unwrap().iter().find(|t| t["type"] == "page").expect("a page").clone();
    let attached = browser.call("Target.attachToTarget", json!({"targetId": page["targetId"], "flatten": true}));
    browser.session = Some(attached["sessionId"].as_str().unwrap().to_string());
    browser.call("Page.enable", json!({}));
    browser.call("Page.navigate", json!({"url": run.url("/")}));

    // The source with its live picture and counters, the command line's query, the events so far.
    browser.wait_true(
        "the source's tile",
        "document.querySelectorAll('#sources .source[data-source=\"bikes\"]').length === 1",
    );
    browser.wait_true(
        "the source's latest frame",
        "(() => { const i = document.querySelector('#sources img'); return !!i && i.complete && i.naturalWidth > 100; })()",
    );
    // The picture is refreshed: the frame it shows moves on.
    browser.eval(
        "window.frameOf = async () => Number((await fetch('api/v1/sources/bikes/latest.jpg')).headers.get('x-lookout-frame')); true",
    );
    let first = browser.eval("frameOf()").as_u64().unwrap();
    browser.wait_true("a newer frame", &format!("frameOf().then(f => f > {first})"));
    browser.wait_true(
        "the tile showing a newer picture",
        "(() => { const i = document.querySelector('#sources img'); const s = i.src; \
         return new Promise(r => setTimeout(() => r(i.src !== s && i.complete), 1500)); })()",
    );
    browser.wait_true("the counters", "document.querySelector('#sources .counters').textContent.includes('decoded')");
    browser.wait_true(
        "the standing query",
        "document.querySelector('#queries tbody').textContent.includes('a person riding a bicycle')",
    );
    browser.wait_true("the events", "document.querySelectorAll('#events li[data-type=\"start\"]').length > 0");

    // A query added through the form.
    browser.eval(
        "(() => { const f = document.getElementById('query-form'); f.text.value = 'a green bicycle'; \
         f.label.value = 'green'; f.threshold.value = '0'; f.min_frames.value = '1'; f.window.value = '1'; \
         document.getElementById('query-submit').click(); return true; })()",
    );
    browser.wait_true(
        "the added query in the table",
        "[...document.querySelectorAll('#queries tbody tr')].some(r => r.textContent.includes('a green bicycle'))",
    );
    assert_eq!(browser.eval("document.getElementById('query-error').textContent"), json!(""));
    let queries = run.get("/api/v1/queries").json();
    assert!(
        queries["queries"].as_array().unwrap().iter().any(|q| q["text"] == "a green bicycle" && q["threshold"] == 0.0),
        "{queries}"
    );
    // Its events come to the page through the event stream.
    browser.wait_true(
        "an event of the added query",
        "[...document.querySelectorAll('#events li[data-type=\"start\"]')].some(li => li.textContent.includes('green'))",
    );
    assert!(run.lines().iter().any(|l| l["type"] == "start" && l["label"] == "green"));

    // Edited and removed through the table's buttons.
    browser.eval(
        "(() => { [...document.querySelectorAll('#queries tbody tr')].find(r => r.textContent.includes('a green \
         bicycle')).querySelector('button.edit').click(); const f = document.getElementById('query-form'); \
         f.label.value = 'greenish'; document.getElementById('query-submit').click(); return true; })()",
    );
    browser.wait_true(
        "the edited query",
        "[...document.querySelectorAll('#queries tbody tr')].some(r => r.textContent.includes('greenish'))",
    );
    browser.eval(
        "(() => { [...document.querySelectorAll('#queries tbody tr')].find(r => r.textContent.includes('greenish'))\
         .querySelector('button.remove').click(); return true; })()",
    );
    browser
        .wait_true("the query removed", "!document.querySelector('#queries tbody').textContent.includes('greenish')");
    let changes: Vec<String> = run
        .lines()
        .iter()
        .filter(|l| l["type"] == "queries")
        .map(|l| l["change"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(changes, ["add", "update", "remove"]);

    // A bad query shows the server's error on the page.
    browser.eval(
        "(() => { const f = document.getElementById('query-form'); f.text.value = 'a dog'; f.min_frames.value = '9'; \
         f.window.value = '3'; document.getElementById('query-submit').click(); return true; })()",
    );
    browser.wait_true("the error", "document.getElementById('query-error').textContent.includes('min_frames')");

    // An event's snapshot, and its clip played in place (the browser reads it with range requests).
    browser.wait_true(
        "an event with its snapshot",
        "(() => { const i = document.querySelector('#events li img'); return !!i && i.complete && i.naturalWidth > 0; })()",
    );
    browser.eval("document.querySelector('#events li img').click(); true");
    browser.wait_true(
        "the clip playing in place",
        "(() => { const v = document.querySelector('#events li video'); return !!v && v.readyState >= 1 && v.duration > 0; })()",
    );

    let shot = browser.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64_decode(shot["data"].as_str().unwrap());
    let img = image::load_from_memory(&png).unwrap();
    assert!(img.width() >= 800 && img.height() >= 600, "{}x{}", img.width(), img.height());
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("http_page");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("page.png"), &png).unwrap();
    eprintln!("screenshot: {}", dir.join("page.png").display());
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
}
