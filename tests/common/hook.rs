//! A webhook receiver for the alert tests: an HTTP server on 127.0.0.1 that records each POST and answers it
//! from a script.
//!
//! Included by the tests that need it with `#[path = "common/hook.rs"] mod hook;`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the server answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// This HTTP status.
    Status(u16),
    /// Nothing: it reads until the client gives up and closes (or 10 s pass).
    Hang,
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Request {
    pub body: serde_json::Value,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
    /// What the server answered (`None`: nothing, [`Reply::Hang`]).
    pub status: Option<u16>,
    /// When the request had been read.
    pub at: Instant,
}

impl Request {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Whether the server answered 2xx.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// An HTTP server that records requests and answers from a script (then 200 when the script is done).
pub struct Hook {
    stop: Arc<AtomicBool>,
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    thread: Option<JoinHandle<()>>,
}

impl Hook {
    /// Listens on 127.0.0.1:`port` (0: any free port, see [`Hook::port`]).
    pub fn start(port: u16, script: &[Reply]) -> Hook {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let mut script: VecDeque<Reply> = script.iter().copied().collect();
        let (stop2, requests2) = (stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let reply = script.pop_front().unwrap_or(Reply::Status(200));
                if let Some(req) = serve(conn, reply) {
                    requests2.lock().unwrap().push(req);
                }
            }
        });
        Hook { stop, port, requests, thread: Some(thread) }
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the acceptor
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Reads one POST and answers it; `None` if it was not a whole request.
fn serve(conn: TcpStream, reply: Reply) -> Option<Request> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("POST ") {
        return None;
    }
    let mut headers = Vec::new();
    let mut len = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
        if k == "content-length" {
            len = v.parse().ok()?;
        }
        headers.push((k, v));
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let body = serde_json::from_slice(&body).expect("the body is JSON");
    let at = Instant::now();
    let status = match reply {
        Reply::Status(s) => {
            let text = if s < 300 { "ok" } else { "the server is having a bad day" };
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 {s} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
            Some(s)
        }
        Reply::Hang => {
            let _ = reader.read_to_end(&mut Vec::new());
            None
        }
    };
    Some(Request { body, headers, status, at })
}
