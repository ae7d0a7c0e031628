//! The downloader against a real HTTP server on 127.0.0.1, serving the committed tiny model (`models/tiny/owlvit`).
//!
//! The server ([`HubServer`]) speaks just enough HTTP/1.1 for the Hub's `resolve` URLs: `GET`, `Range: bytes=N-`,
//! `Connection: close`. Each file can be told to misbehave: cut the body short once, ignore `Range`, or serve other
//! bytes. Like the Hub with a Git LFS file, it can also send extra headers (`X-Linked-Etag`) and answer the resolve URL
//! with a `302` to a storage URL (`/cdn/...` on the same server), the headers then being on the `302` only. It logs
//! every request, so tests can check what the client asked for. Every test runs inside [`within`],
//! which fails it at a deadline instead of letting it hang; nothing sleeps.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use lookout::models::{
    Cache, Check, FetchOptions, FileAction, Manifest, ModelEntry, ModelsError, OnMissing, Progress, fetch_into, info,
};
use sha2::{Digest, Sha256};

const REPO: &str = "tiny/owlvit";
const REVISION: &str = "0123456789abcdef0123456789abcdef01234567";
const TEST_DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------------------------
// The tiny model and its manifest.

/// The files of the committed tiny model, by repository path.
fn tiny_files() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny/owlvit");
    assert!(dir.is_dir(), "the tiny model is missing at {}; it is committed with the repository", dir.display());
    let mut paths: Vec<String> =
        ["config.json", "preprocessor_config.json", "tokenizer.json"].iter().map(|s| (*s).to_owned()).collect();
    let mut graphs: Vec<String> = std::fs::read_dir(dir.join("onnx"))
        .expect("models/tiny/owlvit/onnx")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".onnx"))
        .map(|n| format!("onnx/{n}"))
        .collect();
    graphs.sort();
    assert!(graphs.contains(&"onnx/model.onnx".to_owned()), "the tiny model has no onnx/model.onnx: {graphs:?}");
    paths.extend(graphs);
    paths.into_iter().map(|p| (p.clone(), std::fs::read(dir.join(&p)).unwrap())).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A manifest entry for `files`, with sizes and hashes unless `without_hash` names the file.
fn entry_for(files: &[(String, Vec<u8>)], without_hash: &[&str]) -> ModelEntry {
    let mut toml = format!(
        "[[model]]\nname = \"tiny-owlvit\"\nfamily = \"owlvit\"\ndescription = \"the committed tiny model\"\n\
         repo = \"{REPO}\"\nrevision = \"{REVISION}\"\n"
    );
    for (path, bytes) in files {
        toml.push_str(&format!("\n[[model.file]]\npath = \"{path}\"\nsize = {}\n", bytes.len()));
        if !without_hash.contains(&path.as_str()) {
            toml.push_str(&format!("sha256 = \"{}\"\n", sha256_hex(bytes)));
        }
    }
    Manifest::from_toml(&toml, "test manifest").unwrap().models.remove(0)
}

fn url_path(file: &str) -> String {
    format!("/{REPO}/resolve/{REVISION}/{file}")
}

fn options(server: &str) -> FetchOptions {
    FetchOptions {
        base_url: Some(server.to_owned()),
        progress: Progress::Hidden,
        connect_timeout_ms: 2_000,
        read_timeout_ms: 5_000,
        max_attempts: 1,
        retry_backoff_ms: 0,
    }
}

fn part_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".part") {
                found.push(p);
            }
        }
    }
    found
}

fn assert_files_equal(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (path, bytes) in files {
        let got = std::fs::read(dir.join(path)).unwrap_or_else(|e| panic!("{path} is not in place: {e}"));
        assert!(got == *bytes, "{path} differs from the original ({} vs {} bytes)", got.len(), bytes.len());
    }
}

/// Runs `f` on its own thread and fails the test if it does not finish by the deadline.
fn within<T: Send + 'static>(deadline: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("test-body".to_owned())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .unwrap();
    match rx.recv_timeout(deadline) {
        Ok(v) => {
            handle.join().unwrap();
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the test did not finish within {deadline:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The body panicked: re-raise its panic here.
            std::panic::resume_unwind(handle.join().unwrap_err())
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A small Hub.

/// How the server treats one file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Behaviour {
    /// Serve it, honouring `Range`.
    Normal,
    /// The next request without `Range`: announce the full length, send this many bytes, close. Then `Normal`.
    TruncateOnceAfter(usize),
    /// Always answer `200` with the whole file, whatever `Range` says.
    IgnoreRange,
    /// Serve these bytes instead (same handling as `Normal`).
    Serve(Vec<u8>),
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    path: String,
    range: Option<String>,
    status: u16,
}

/// The prefix of the storage URLs that [`HubServer::redirect`] sends the client to.
const CDN_PREFIX: &str = "/cdn";

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    behaviour: HashMap<String, Behaviour>,
    /// Extra header lines on the resolve URL's response (the `302` when redirected), by resolve path.
    headers: HashMap<String, Vec<String>>,
    /// Resolve paths answered with a `302` to `{CDN_PREFIX}{path}`.
    redirected: Vec<String>,
    log: Vec<Seen>,
}

struct HubServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HubServer {
    /// Serves `files` (by repository path) under `/{REPO}/resolve/{REVISION}/`.
    fn start(files: &[(String, Vec<u8>)]) -> HubServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            files: files.iter().map(|(p, b)| (url_path(p), b.clone())).collect(),
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new()
                .name("hub-server".to_owned())
                .spawn(move || {
                    // One connection at a time; every response closes its connection. Ends when `stop` is set and
                    // the wake-up connection from `drop` arrives.
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        if let Ok(conn) = conn {
                            serve(conn, &state);
                        }
                    }
                })
                .unwrap()
        };
        HubServer { addr, state, stop, thread: Some(thread) }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, file: &str, behaviour: Behaviour) {
        self.state.lock().unwrap().behaviour.insert(url_path(file), behaviour);
    }

    /// Sends `header` (a whole line, `Name: value`) with the resolve URL's response for `file`.
    fn add_header(&self, file: &str, header: &str) {
        self.state.lock().unwrap().headers.entry(url_path(file)).or_default().push(header.to_owned());
    }

    /// Answers the resolve URL of `file` with `302 Found` to its storage URL, as the Hub does for Git LFS files.
    fn redirect(&self, file: &str) {
        self.state.lock().unwrap().redirected.push(url_path(file));
    }

    fn log(&self) -> Vec<Seen> {
        self.state.lock().unwrap().log.clone()
    }

    fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    fn requests_for(&self, file: &str) -> Vec<Seen> {
        let p = url_path(file);
        self.log().into_iter().filter(|s| s.path == p).collect()
    }

    /// The requests for `file`'s storage URL (after a redirect).
    fn storage_requests_for(&self, file: &str) -> Vec<Seen> {
        let p = format!("{CDN_PREFIX}{}", url_path(file));
        self.log().into_iter().filter(|s| s.path == p).collect()
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut conn: TcpStream, state: &Mutex<State>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() || request_line.is_empty() {
        return; // the wake-up connection, or a client that gave up
    }
    let mut range = None;
    // At most 100 header lines.
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_owned());
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("").to_owned());

    let (status, headers, body, truncate_at) = {
        let mut st = state.lock().unwrap();
        // A storage URL serves the file of its resolve URL, with that file's behaviour and no extra headers.
        let (file_path, storage) = match path.strip_prefix(CDN_PREFIX) {
            Some(p) => (p.to_owned(), true),
            None => (path.clone(), false),
        };
        let behaviour = st.behaviour.get(&file_path).cloned().unwrap_or(Behaviour::Normal);
        let original = st.files.get(&file_path).cloned();
        let extra = if storage { Vec::new() } else { st.headers.get(&file_path).cloned().unwrap_or_default() };
        let redirect = !storage && st.redirected.contains(&file_path);
        let response = match (method, original) {
            ("GET", Some(_)) if redirect => {
                let mut h = vec![format!("Location: {CDN_PREFIX}{file_path}"), "Content-Length: 0".to_owned()];
                h.extend(extra);
                (302, h, Vec::new(), None)
            }
            ("GET", Some(original)) => {
                let content = match &behaviour {
                    Behaviour::Serve(other) => other.clone(),
                    _ => original,
                };
                let start = match (&behaviour, &range) {
                    (Behaviour::IgnoreRange, _) | (_, None) => None,
                    (_, Some(r)) => {
                        r.strip_prefix("bytes=").and_then(|r| r.strip_suffix('-')).and_then(|n| n.parse::<usize>().ok())
                    }
                };
                let truncate_at = match behaviour {
                    Behaviour::TruncateOnceAfter(n) if range.is_none() => {
                        st.behaviour.insert(path.clone(), Behaviour::Normal);
                        Some(n)
                    }
                    _ => None,
                };
                let response = match start {
                    None => (200, vec![format!("Content-Length: {}", content.len())], content, truncate_at),
                    Some(s) if s < content.len() => (
                        206,
                        vec![
                            format!("Content-Length: {}", content.len() - s),
                            format!("Content-Range: bytes {s}-{}/{}", content.len() - 1, content.len()),
                        ],
                        content[s..].to_vec(),
                        None,
                    ),
                    Some(_) => (
                        416,
                        vec!["Content-Length: 0".to_owned(), format!("Content-Range: bytes */{}", content.len())],
                        Vec::new(),
                        None,
                    ),
                };
                let (status, mut h, body, truncate_at) = response;
                h.extend(extra);
                (status, h, body, truncate_at)
            }
            _ => (404, vec!["Content-Length: 9".to_owned()], b"not found".to_vec(), None),
        };
        st.log.push(Seen { path: path.clone(), range: range.clone(), status: response.0 });
        response
    };

    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        416 => "Range Not Satisfiable",
        _ => "Not Found",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\nAccept-Ranges: bytes\r\n");
    for h in headers {
        head.push_str(&h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let sent = match truncate_at {
        Some(n) => &body[..n.min(body.len())],
        None => &body[..],
    };
    let _ = conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(sent)).and_then(|()| conn.flush());
    let _ = conn.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------------------------------------------
// Tests.

#[test]
fn good_files_are_downloaded_verified_and_put_in_place() {
    within(TEST_DEADLINE, || {
        let files = tiny_files();
        let server = HubServer::start(&files);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tiny-owlvit");
        let entry = entry_for(&files, &[]);

        let report = fetch_into(&entry, &dir, &options(&server.base_url())).unwrap();

        assert_eq!(report.dir, dir);
        assert_eq!(report.files.len(), files.len());
        for f in &report.files {
            assert_eq!(f.action, FileAction::Downloaded, "{}", f.path);
            assert_eq!(f.check, Check::Sha256, "{}", f.path);
        }
        assert!(report.unhashed().is_empty());
        assert_files_equal(&dir, &files);
        assert!(part_files(&dir).is_empty(), "left behind: {:?}", part_files(&dir));
        // One plain GET per file, at the Hub's resolve URL.
        let log = server.log();
        assert_eq!(log.len(), files.len(), "{log:?}");
        assert!(log.iter().all(|s| s.range.is_none() && s.status == 200), "{log:?}");
        // The result is a usable model directory in the Hub layout.
        let described = info(&dir).unwrap();
        assert!(described.is_usable(), "{described}");
        assert!(described.layouts.iter().any(|l| l.name == "hf"), "{described}");
    });
}

#[test]
fn a_truncated_transfer_is_resumed_with_range_on_the_next_run() {
    within(TEST_DEADLINE, || {
        let files = tiny_files();
        let (graph, graph_bytes) = files.iter().find(|(p, _)| p == "onnx/model.onnx").unwrap().clone();
        let cut = graph_bytes.len() / 3;
        let server = HubServer::start(&files);
        server.set(&graph, Behaviour::TruncateOnceAfter(cut));
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        let entry = entry_for(&files, &[]);
        let opts = options(&server.base_url()); // one attempt per run

        let err = fetch_into(&entry, &dir, &opts).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ModelsError::Interrupted { received, .. } if received == cut as u64), "{msg}");
        assert!(msg.contains(&format!("{}{}", server.base_url(), url_path(&graph))), "{msg}");
        assert!(msg.contains("run the same command again to resume"), "{msg}");
        let part = dir.join("onnx/model.onnx.part");
        assert_eq!(std::fs::metadata(&part).unwrap().len(), cut as u64, "the partial file is kept");
        assert!(!dir.join(&graph).exists(), "nothing unverified is put in place");

        let report = fetch_into(&entry, &dir, &opts).unwrap();

        let seen = server.requests_for(&graph);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[1].range.as_deref(), Some(format!("bytes={cut}-").as_str()), "{seen:?}");
        assert_eq!(seen[1].status, 206);
        let row = report.files.iter().find(|f| f.path == graph).unwrap();
        assert_eq!(row.action, FileAction::Resumed { from: cut as u64 });
        assert_eq!(row.bytes_received, (graph_bytes.len() - cut) as u64);
        assert_files_equal(&dir, &files);
        assert!(part_files(&dir).is_empty());
    });
}

#[test]
fn a_truncated_transfer_is_resumed_within_one_run_when_retries_are_allowed() {
    within(TEST_DEADLINE, || {
        let files = tiny_files();
        let graph = "onnx/model.onnx";
        let cut = 1000;
        let server = HubServer::start(&files);
        server.set(graph, Behaviour::TruncateOnceAfter(cut));
        let tmp = tempfile::tempdir().unwrap();
        let entry = entry_for(&files, &[]);
        let opts = FetchOptions { max_attempts: 2, ..options(&server.base_url()) };

        let report = fetch_into(&entry, tmp.path(), &opts).unwrap();

        let seen = server.requests_for(graph);
        assert_eq!(seen.iter().map(|s| s.range.clone()).collect::<Vec<_>>(), [None, Some(format!("bytes={cut}-"))]);
        let row = report.files.iter().find(|f| f.path == graph).unwrap();
        assert_eq!(row.action, FileAction::Resumed { from: cut as u64 });
        assert_files_equal(tmp.path(), &files);
        assert!(part_files(tmp.path()).is_empty());
    });
}

#[test]
fn a_server_that_ignores_range_makes_the_download_start_over() {
    within(TEST_DEADLINE, || {
        let files = tiny_files();
        let graph = "onnx/model.onnx";
        let server = HubServer::start(&files);
        let tmp = tempfile::tempdir().unwrap();
        // A `.part` from an earlier run, with bytes that are not the file's: only a restart from 0 gives the right
        // hash.
        std::fs::create_dir_all(tmp.path().join("onnx")).unwrap();
        std::fs::write(tmp.path().join("onnx/model.onnx.part"), vec![0xAB; 500]).unwrap();
        server.set(graph, Behaviour::IgnoreRange);
        let entry = entry_for(&files, &[]);

        let report = fetch_into(&entry, tmp.path(), &options(&server.base_url())).unwrap();

        let seen = server.requests_for(graph);
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].range.as_deref(), seen[0].status), (Some("bytes=500-"), 200));
        let row = report.files.iter().find(|f| f.path == graph).unwrap();
        assert_eq!(row.action, FileAction::Downloaded);
        assert_files_equal(tmp.path(), &files);
        assert!(part_files(tmp.path()).is_empty());
    });
}

#[test]
fn a_wrong_hash_deletes_the_file_and_names_it_and_both_hashes() {
    within(TEST_DEADLINE, || {
        let files = tiny_files();
        let (path, bytes) = files.iter().find(|(p, _)| p == "tokenizer.json").unwrap().clone();
        let mut wrong = bytes.clone();
        wrong[bytes.len() / 2] ^= 0xFF; // same size, other content
        let server = HubServer::start(&files);
        server.set(&path, Behaviour::Serve(wrong.clone()));
        let tmp = tempfile::tempdir().unwrap();
        let entry = entry_for(&files, &[]);

        let err = fetch_into(&entry, tmp.path(), &options(&server.base_url())).unwrap_err();

        let msg = err.to_string();
        let (expected, actual) = (sha256_hex(&bytes), sha256_hex(&wrong));
        assert!(
            matches!(&err, ModelsError::HashMismatch { expected: e, actual: a, .. } if *e == expected && *a == actual),
            "{msg}"
        );
        assert!(msg.contains(&tmp.path().join(&path).display().to_string()), "names the file: {msg}");
        assert!(msg.contains(&expected) && msg.contains(&actual), "names both hashes: {msg}");
        assert!(msg.contains("deleted"), "{msg}");
        assert!(!tmp.path().join(&path).exists(), "the bad file is not in place");
        assert!(part_files(tmp.path()).is_empty(), "the bad download is deleted");
    });
}

#[test]
fn a_server_that_is_down_gives_the_url_and_how_to_place_the_files_by_hand() {
    within(TEST_DEADLINE, || {
        let files = tiny_files();
        // A port that nothing listens on: bind one, then let it go.
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let base = format!("http://{addr}");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tiny-owlvit");
        let entry = entry_for(&files, &[]);

        let err = fetch_into(&entry, &dir, &options(&base)).unwrap_err();

        let msg = err.to_string();
        assert!(matches!(err, ModelsError::Unreachable { .. }), "{msg}");
        let first_url = format!("{base}{}", url_path(&files[0].0));
        assert!(msg.starts_with(&format!("could not download {first_url}: ")), "{msg}");
        assert!(msg.contains(&format!("place them in {}", dir.display())), "{msg}");
        for (path, _) in &files {
            assert!(msg.contains(&format!("{base}{}", url_path(path))), "lists the URL of {path}: {msg}");
            assert!(msg.contains(&dir.join(path).display().to_string()), "lists where {path} goes: {msg}");
        }
    });
}

#[test]
fn files_already_present_and_verified_are_not_downloaded_again() {
    within(TEST_DEADLINE, || {
        let files = tiny_files();
        let server = HubServer::start(&files);
        let tmp = tempfile::tempdir().unwrap();
        let entry = entry_for(&files, &[]);
        let opts = options(&server.base_url());
        fetch_into(&entry, tmp.path(), &opts).unwrap();
        server.clear_log();

        let again = fetch_into(&entry, tmp.path(), &opts).unwrap();

        assert!(server.log().is_empty(), "nothing is requested: {:?}", server.log());
        assert!(again.files.iter().all(|f| f.action == FileAction::AlreadyPresent && f.bytes_received == 0));

        // A file changed on disk no longer verifies: only it is fetched again.
        std::fs::write(tmp.path().join("config.json"), b"{\"model_type\": \"something else\"}").unwrap();
        let repaired = fetch_into(&entry, tmp.path(), &opts).unwrap();
        let paths: Vec<String> = server.log().into_iter().map(|s| s.path).collect();
        assert_eq!(paths, [url_path("config.json")]);
        assert_eq!(repaired.files[0].action, FileAction::Downloaded);
        assert_files_equal(tmp.path(), &files);
    });
}

#[test]
fn a_file_without_a_hash_is_checked_by_size_only() {
    within(TEST_DEADLINE, || {
        let files = tiny_files();
        let server = HubServer::start(&files);
        let tmp = tempfile::tempdir().unwrap();
        let entry = entry_for(&files, &["tokenizer.json"]);

        let report = fetch_into(&entry, tmp.path(), &options(&server.base_url())).unwrap();

        assert_eq!(report.unhashed(), ["tokenizer.json"]);
        let row = report.files.iter().find(|f| f.path == "tokenizer.json").unwrap();
        assert_eq!(row.check, Check::SizeOnly);
        assert_files_equal(tmp.path(), &files);

        // The size is still checked: a longer body is refused and nothing is kept.
        std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
        let mut longer = files.iter().find(|(p, _)| p == "tokenizer.json").unwrap().1.clone();
        longer.extend_from_slice(b"\n\n");
        server.set("tokenizer.json", Behaviour::Serve(longer));
        let err = fetch_into(&entry, tmp.path(), &options(&server.base_url())).unwrap_err();
        assert!(matches!(err, ModelsError::SizeMismatch { .. }), "{err}");
        assert!(!tmp.path().join("tokenizer.json").exists());
        assert!(part_files(tmp.path()).is_empty());
    });
}

#[test]
fn a_missing_file_on_the_server_is_an_http_error_naming_the_url() {
    within(TEST_DEADLINE, || {
        let files = tiny_files();
        let server = HubServer::start(&files[1..]); // the server lacks config.json
        let tmp = tempfile::tempdir().unwrap();
        let entry = entry_for(&files, &[]);

        let err = fetch_into(&entry, tmp.path(), &options(&server.base_url())).unwrap_err();

        let msg = err.to_string();
        assert!(matches!(err, ModelsError::HttpStatus { status: 404, .. }), "{msg}");
        assert!(msg.contains(&format!("{}{}", server.base_url(), url_path("config.json"))), "{msg}");
        assert!(msg.contains("revision"), "says what to check: {msg}");
    });
}

#[test]
fn resolve_fetches_a_manifest_model_on_first_use_only_when_allowed() {
    within(TEST_DEADLINE, || {
        let files = tiny_files();
        let server = HubServer::start(&files);
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path());
        let manifest = Manifest { models: vec![entry_for(&files, &[])] };

        let err = manifest.resolve("tiny-owlvit", &cache, &OnMissing::Fail).unwrap_err();
        assert!(matches!(err, ModelsError::NotFetched { .. }), "{err}");
        assert!(server.log().is_empty());

        let dir = manifest.resolve("tiny-owlvit", &cache, &OnMissing::Fetch(options(&server.base_url()))).unwrap();
        assert_eq!(dir, cache.model_dir("tiny-owlvit"));
        assert_files_equal(&dir, &files);

        // Now it is in the cache: no fetch needed, and a directory path is taken as it is.
        assert_eq!(manifest.resolve("tiny-owlvit", &cache, &OnMissing::Fail).unwrap(), dir);
        assert_eq!(manifest.resolve(dir.to_str().unwrap(), &cache, &OnMissing::Fail).unwrap(), dir);
    });
}

// ---------------------------------------------------------------------------------------------------------------
// Files without a hash in the manifest: the Hub's `X-Linked-Etag` (the SHA-256 of a Git LFS file).

/// Where the downloader records the SHA-256 it checked a file against when the manifest has none.
fn record_of(dir: &Path, path: &str) -> PathBuf {
    dir.join(format!("{path}.sha256"))
}

fn bytes_of(files: &[(String, Vec<u8>)], path: &str) -> Vec<u8> {
    files.iter().find(|(p, _)| p == path).unwrap().1.clone()
}

#[test]
fn without_a_manifest_hash_the_x_linked_etag_is_checked_and_recorded_for_later_runs() {
    within(TEST_DEADLINE, || {
        let files = tiny_files();
        let graph = "onnx/model.onnx";
        let bytes = bytes_of(&files, graph);
        let server = HubServer::start(&files);
        let base = server.base_url();
        server.add_header(graph, &format!("X-Linked-Etag: \"{}\"", sha256_hex(&bytes)));
        server.add_header(graph, &format!("X-Linked-Size: {}", bytes.len()));
        let tmp = tempfile::tempdir().unwrap();
        let entry = entry_for(&files, &[graph]);

        let report = fetch_into(&entry, tmp.path(), &options(&base)).unwrap();

        assert!(report.unhashed().is_empty(), "checked against the server's sha256: {:?}", report.files);
        assert_eq!(report.files.iter().find(|f| f.path == graph).unwrap().check, Check::ServerSha256);
        let record = std::fs::read_to_string(record_of(tmp.path(), graph)).expect("the checked hash is recorded");
        assert_eq!(record.split_whitespace().next(), Some(sha256_hex(&bytes).as_str()), "{record}");
        assert_files_equal(tmp.path(), &files);
        assert!(part_files(tmp.path()).is_empty());

        // Later runs check the file against the record, without the network.
        drop(server);
        let again = fetch_into(&entry, tmp.path(), &options(&base)).unwrap();
        assert!(again.files.iter().all(|f| f.action == FileAction::AlreadyPresent), "{:?}", again.files);
        assert!(again.unhashed().is_empty(), "{:?}", again.files);
        assert_eq!(again.files.iter().find(|f| f.path == graph).unwrap().check, Check::ServerSha256);

        // Same size, other content: the record catches it, so the run goes to the (now absent) server for it.
        let mut changed = bytes.clone();
        changed[bytes.len() / 2] ^= 0xFF;
        std::fs::write(tmp.path().join(graph), &changed).unwrap();
        let err = fetch_into(&entry, tmp.path(), &options(&base)).unwrap_err();
        assert!(matches!(err, ModelsError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains(&url_path(graph)), "{err}");
        assert!(!tmp.path().join(graph).exists(), "the changed file is not kept under its name");
    });
}

/// A file without a manifest hash whose `X-Linked-Etag` is not its SHA-256 (on the `302` when `redirect`).
fn a_wrong_x_linked_etag_is_refused(redirect: bool) {
    let files = tiny_files();
    let path = "tokenizer.json";
    let bytes = bytes_of(&files, path);
    let claimed = sha256_hex(b"some other file");
    let server = HubServer::start(&files);
    server.add_header(path, &format!("X-Linked-Etag: \"{claimed}\""));
    if redirect {
        server.redirect(path);
    }
    let tmp = tempfile::tempdir().unwrap();
    let entry = entry_for(&files, &[path]);

    let err = fetch_into(&entry, tmp.path(), &options(&server.base_url())).unwrap_err();

    let msg = err.to_string();
    assert!(matches!(err, ModelsError::ServerHashMismatch { .. }), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(msg.contains(&tmp.path().join(path).display().to_string()), "names the file: {msg}");
    assert!(msg.contains(&format!("{}{}", server.base_url(), url_path(path))), "names the resolve URL: {msg}");
    assert!(!msg.contains(CDN_PREFIX), "not the storage URL, which may be signed: {msg}");
    assert!(msg.contains(&claimed) && msg.contains(&sha256_hex(&bytes)), "names both hashes: {msg}");
    assert!(!tmp.path().join(path).exists(), "nothing under the final name");
    assert!(part_files(tmp.path()).is_empty(), "the download is deleted");
    assert!(!record_of(tmp.path(), path).exists(), "no hash is recorded");
    if redirect {
        assert_eq!(server.requests_for(path).iter().map(|s| s.status).collect::<Vec<_>>(), [302]);
        assert_eq!(server.storage_requests_for(path).iter().map(|s| s.status).collect::<Vec<_>>(), [200]);
    }
}

#[test]
fn a_wrong_x_linked_etag_refuses_the_download_and_keeps_nothing() {
    within(TEST_DEADLINE, || a_wrong_x_linked_etag_is_refused(false));
}

#[test]
fn a_wrong_x_linked_etag_on_the_redirect_response_refuses_the_download() {
    within(TEST_DEADLINE, || a_wrong_x_linked_etag_is_refused(true));
}

#[test]
fn the_x_linked_etag_of_the_redirect_response_is_used_and_a_resume_follows_the_redirect() {
    within(TEST_DEADLINE, || {
        let files = tiny_files();
        let graph = "onnx/model.onnx";
        let bytes = bytes_of(&files, graph);
        let cut = 1000;
        let server = HubServer::start(&files);
        server.redirect(graph);
        server.add_header(graph, &format!("X-Linked-Etag: \"{}\"", sha256_hex(&bytes)));
        server.set(graph, Behaviour::TruncateOnceAfter(cut));
        let tmp = tempfile::tempdir().unwrap();
        let entry = entry_for(&files, &[graph]);
        let opts = FetchOptions { max_attempts: 2, ..options(&server.base_url()) };

        let report = fetch_into(&entry, tmp.path(), &opts).unwrap();

        let range = Some(format!("bytes={cut}-"));
        let resolve = server.requests_for(graph);
        assert_eq!(
            resolve.iter().map(|s| (s.status, s.range.clone())).collect::<Vec<_>>(),
            [(302, None), (302, range.clone())]
        );
        let storage = server.storage_requests_for(graph);
        assert_eq!(
            storage.iter().map(|s| (s.status, s.range.clone())).collect::<Vec<_>>(),
            [(200, None), (206, range)]
        );
        assert!(report.unhashed().is_empty(), "checked against the 302's X-Linked-Etag: {:?}", report.files);
        let record = std::fs::read_to_string(record_of(tmp.path(), graph)).expect("the checked hash is recorded");
        assert_eq!(record.split_whitespace().next(), Some(sha256_hex(&bytes).as_str()), "{record}");
        assert_files_equal(tmp.path(), &files);
        assert!(part_files(tmp.path()).is_empty());
    });
}

#[test]
fn a_git_blob_etag_leaves_the_file_checked_by_size_only() {
    within(TEST_DEADLINE, || {
        let files = tiny_files();
        let path = "config.json";
        let server = HubServer::start(&files);
        // A file kept in git, not LFS: its ETag is the blob's SHA-1 (40 hex digits), not a SHA-256.
        server.add_header(path, "ETag: \"0123456789abcdef0123456789abcdef01234567\"");
        server.add_header(path, "X-Linked-Etag: \"0123456789abcdef0123456789abcdef01234567\"");
        let tmp = tempfile::tempdir().unwrap();
        let entry = entry_for(&files, &[path]);

        let report = fetch_into(&entry, tmp.path(), &options(&server.base_url())).unwrap();

        assert_eq!(report.unhashed(), [path]);
        assert!(!record_of(tmp.path(), path).exists());
        assert_files_equal(tmp.path(), &files);
    });
}

#[test]
fn a_whole_part_without_a_manifest_hash_is_checked_against_the_x_linked_etag_of_the_416() {
    within(TEST_DEADLINE, || {
        let files = tiny_files();
        let graph = "onnx/model.onnx";
        let bytes = bytes_of(&files, graph);
        let server = HubServer::start(&files);
        server.redirect(graph);
        server.add_header(graph, &format!("X-Linked-Etag: \"{}\"", sha256_hex(&bytes)));
        let tmp = tempfile::tempdir().unwrap();
        // An earlier run got every byte and stopped before the rename.
        std::fs::create_dir_all(tmp.path().join("onnx")).unwrap();
        std::fs::write(tmp.path().join("onnx/model.onnx.part"), &bytes).unwrap();
        let entry = entry_for(&files, &[graph]);

        let report = fetch_into(&entry, tmp.path(), &options(&server.base_url())).unwrap();

        let range = Some(format!("bytes={}-", bytes.len()));
        assert_eq!(
            server.requests_for(graph).iter().map(|s| (s.status, s.range.clone())).collect::<Vec<_>>(),
            [(302, range.clone())]
        );
        assert_eq!(
            server.storage_requests_for(graph).iter().map(|s| (s.status, s.range.clone())).collect::<Vec<_>>(),
            [(416, range)]
        );
        let row = report.files.iter().find(|f| f.path == graph).unwrap();
        assert_eq!((row.action, row.check), (FileAction::Resumed { from: bytes.len() as u64 }, Check::ServerSha256));
        assert!(record_of(tmp.path(), graph).exists());
        assert_files_equal(tmp.path(), &files);
        assert!(part_files(tmp.path()).is_empty());
    });
}
