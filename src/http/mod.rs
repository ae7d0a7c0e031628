//! The HTTP control plane of `watch` (`--http ADDR`): a REST API, Server-Sent Events, a live page and
//! Prometheus metrics.
//!
//! Threads (none of them on the frame path):
//! ```text
//! http (tokio runtime, HTTP_WORKERS workers) ── axum: every route below; reads what the watch loop publishes in
//!      │                                        [`Control`] (atomics, or a lock held for a copy)
//!      ├─ fps sampler (a task): each source's frames in and out per second, every second
//!      └─ SSE clients: a tokio broadcast channel (EVENTS_BROADCAST lines; a client that falls behind skips)
//! events-index (std thread) ── tails events.jsonl every TAIL_EVERY ─► SQLite index (<out>/events.sqlite) + broadcast
//! query-encoder (std thread) ◄─ bounded(CHANGE_QUEUE) ── query changes; encodes the texts with its own detector
//! ```
//!
//! Routes (JSON unless said; every error is `{"error": "..."}` with a 4xx or 5xx status):
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | always 200 while the server runs; never asks for the token |
//! | `GET /readyz` | 200 once the model is loaded and every source delivered a frame, else 503 and what is missing |
//! | `GET /api/v1/sources` | per source: state, decoder, fps in and out, frames decoded, inferred, dropped and skipped still (motion gate), reconnects, last error |
//! | `GET /api/v1/sources/{name}/latest.jpg` | the latest frame with its boxes drawn |
//! | `GET /api/v1/sources/{name}/stream.mjpeg` | the same, as an MJPEG stream (`multipart/x-mixed-replace`) |
//! | `GET, POST /api/v1/queries` | the standing queries; add one |
//! | `GET, PUT, DELETE /api/v1/queries/{id}` | one query; replace it; remove it |
//! | `GET /api/v1/events?since=&query=&source=&type=&limit=` | lines of `events.jsonl`, newest first, from the index |
//! | `GET /api/v1/events/stream` | Server-Sent Events: one per line of `events.jsonl` as it is written |
//! | `GET /api/v1/events/{id}/clip.mp4`, `crop.mp4`, `snapshot.jpg`, `sidecar.json` | an event's evidence, with range requests |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /` | the page (HTML, CSS and JS embedded in the binary) |
//!
//! Access: the server listens on 127.0.0.1 by default. Any other address needs a token file; every request but
//! `/healthz` must then carry `Authorization: Bearer <token>` (or the `lookout_token` cookie the page gets when
//! opened once as `/?token=<token>`). `--http-read-only` refuses every change with 403. Request bodies are at
//! most [`MAX_BODY_BYTES`].

pub mod control;
mod events;
mod frames;
mod metrics;
mod page;
pub mod queries;
pub mod table;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tracing::{info, warn};

pub use control::{Control, SourceEntry};
pub use queries::{QuerySettings, QueryView};

/// Largest request body accepted (a query is a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// After a stop, how long open requests get to finish. Streams (SSE, MJPEG) never finish by themselves: they are
/// cut after it, so that a client cannot hold the end of the run.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// Worker threads of the server's runtime: enough for many clients, few enough to leave the cores to inference.
const HTTP_WORKERS: usize = 2;
/// The cookie the page keeps the token in.
const TOKEN_COOKIE: &str = "lookout_token";

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("--http {addr}: cannot listen there ({error}); give a free port, or another address")]
    Bind { addr: SocketAddr, error: std::io::Error },
    #[error("--http: could not start the server's {what}: {error}")]
    Start { what: &'static str, error: std::io::Error },
    #[error("events index {path}: {message}")]
    Index { path: PathBuf, message: String },
}

/// What the server is asked to do.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// The bearer token every request but `/healthz` needs; `None`: no token (loopback only).
    pub token: Option<String>,
    /// Refuse every change (403).
    pub read_only: bool,
}

/// `ADDR:PORT`, `[V6]:PORT`, or `PORT` alone (on 127.0.0.1).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| format!("--http {s:?}: give ADDR:PORT (127.0.0.1:8080) or a port alone (8080, on 127.0.0.1)"))
}

/// Refuses an address other than loopback without a token: the API changes what the cameras watch and shows
/// their pictures.
pub fn check_access(listen: SocketAddr, token: Option<&str>) -> Result<(), String> {
    if listen.ip().is_loopback() || token.is_some() {
        return Ok(());
    }
    Err(format!(
        "--http {listen}: serving on an address other than 127.0.0.1 needs --http-token-file FILE (a bearer token \
         every request must carry); give one, or listen on 127.0.0.1"
    ))
}

/// The token in `path`: its first line, trimmed; an empty or unreadable file is an error naming it.
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--http-token-file {}: cannot read it ({e})", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < 8 {
        return Err(format!(
            "--http-token-file {}: the token (its first line) must have at least 8 characters",
            path.display()
        ));
    }
    Ok(token)
}

/// An error answered as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
    pub fn bad_request(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn unavailable(message: String) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(ErrorBody { error: &self.message })).into_response()
    }
}

/// What every handler reads.
#[derive(Clone)]
pub(crate) struct AppState {
    control: Arc<Control>,
    settings: Arc<HttpSettings>,
    index: Arc<events::EventIndex>,
    frames: Arc<frames::JpegCache>,
}

/// The running server. [`Server::stop`] ends it and joins its threads.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
    encoder: Option<JoinHandle<()>>,
    index: Arc<events::EventIndex>,
    control: Arc<Control>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

impl Server {
    /// Binds `settings.listen` (an error here is the start's error) and serves on its own threads.
    pub fn start(settings: HttpSettings, control: Arc<Control>) -> Result<Server, HttpError> {
        let listener = std::net::TcpListener::bind(settings.listen)
            .map_err(|error| HttpError::Bind { addr: settings.listen, error })?;
        listener.set_nonblocking(true).map_err(|error| HttpError::Start { what: "listener", error })?;
        let addr = listener.local_addr().map_err(|error| HttpError::Start { what: "listener", error })?;
        std::fs::create_dir_all(&control.out_dir).map_err(|error| HttpError::Start { what: "output dir", error })?;
        let index = Arc::new(events::EventIndex::open(&control.out_dir)?);
        index.clone().spawn_tailer().map_err(|error| HttpError::Start { what: "events-index thread", error })?;

        let (tx, rx) = crossbeam_channel::bounded(queries::CHANGE_QUEUE);
        *control.changes.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let c = control.clone();
        let encoder = std::thread::Builder::new()
            .name("query-encoder".into())
            .spawn(move || queries::run_encoder(c, rx))
            .map_err(|error| HttpError::Start { what: "query-encoder thread", error })?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(HTTP_WORKERS)
            .thread_name("http-worker")
            .enable_all()
            .build()
            .map_err(|error| HttpError::Start { what: "runtime", error })?;
        let state = AppState {
            control: control.clone(),
            settings: Arc::new(settings),
            index: index.clone(),
            frames: Arc::new(frames::JpegCache::default()),
        };
        let app = router(state.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            warn!(error = %e, "the HTTP server could not start");
                            return;
                        }
                    };
                    tokio::spawn(frames::sample_fps(state.control.clone()));
                    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    };
                    let serve = axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx.clone()));
                    tokio::select! {
                        result = serve => {
                            if let Err(e) = result {
                                warn!(error = %e, "the HTTP server stopped");
                            }
                        }
                        () = async { stopped(stop_rx).await; tokio::time::sleep(STOP_GRACE).await } => {}
                    }
                });
                // Streams (SSE, MJPEG) never end by themselves: do not wait for them.
                runtime.shutdown_timeout(Duration::from_millis(500));
            })
            .map_err(|error| HttpError::Start { what: "http thread", error })?;
        info!(%addr, "HTTP control plane on http://{addr}/");
        Ok(Server { addr, shutdown: Some(stop_tx), thread: Some(thread), encoder: Some(encoder), index, control })
    }

    /// The address served (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving, and joins the server's threads.
    pub fn stop(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        self.index.stop();
        // The encoder ends once its queue's sender is gone.
        self.control.changes.lock().unwrap_or_else(|e| e.into_inner()).take();
        for (name, t) in [("http", self.thread.take()), ("query-encoder", self.encoder.take())] {
            if let Some(t) = t
                && t.join().is_err()
            {
                warn!("the {name} thread panicked");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/sources", get(frames::sources))
        .route("/api/v1/sources/{name}/latest.jpg", get(frames::latest_jpg))
        .route("/api/v1/sources/{name}/stream.mjpeg", get(frames::mjpeg))
        .route("/api/v1/queries", get(query_list).post(query_add))
        .route("/api/v1/queries/{id}", get(query_get).put(query_replace).delete(query_remove))
        .route("/api/v1/events", get(events::list))
        .route("/api/v1/events/stream", get(events::stream))
        .route("/api/v1/events/{id}/{file}", get(events::evidence))
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/style.css", get(page::style))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(api)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; GET / shows the page, and the API is under /api/v1/".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
}

/// The token (when there is one) and read-only mode, before every route but `/healthz`.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut set_cookie = None;
    if let Some(token) = &state.settings.token {
        let headers = request.headers();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let cookie =
            headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
                v.split(';').map(str::trim).find_map(|kv| kv.strip_prefix(TOKEN_COOKIE)?.strip_prefix('='))
            });
        let in_query = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
            .map(str::to_string);
        let ok = |given: Option<&str>| given.is_some_and(|g| same(g.as_bytes(), token.as_bytes()));
        if ok(in_query.as_deref()) {
            // The page opened once with ?token= keeps it for its images, streams and calls.
            set_cookie = Some(format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"));
        } else if !ok(bearer) && !ok(cookie) {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this server needs a token: send 'Authorization: Bearer <token>' (the first line of the \
                 --http-token-file), or open the page once as /?token=<token>",
            )
            .into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    if state.settings.read_only && ![Method::GET, Method::HEAD].contains(request.method()) {
        return ApiError::new(StatusCode::FORBIDDEN, "this server is read-only (--http-read-only): no changes")
            .into_response();
    }
    let mut response = next.run(request).await;
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, c);
    }
    response
}

/// Compares two tokens in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (ready, waiting) = state.control.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(serde_json::json!({"ready": ready, "waiting": waiting}))).into_response()
}

/// A JSON body, with its errors as JSON (axum's own rejections are plain text).
fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("the body is not a query: {e}")))
}

/// `GET /api/v1/queries` (a struct, not `json!`, so that thresholds keep their short f32 form: 0.65, not
/// 0.6499999761581421).
#[derive(Serialize)]
struct QueryList {
    queries: Vec<QueryView>,
}

async fn query_list(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(QueryList { queries: state.control.query_views() })
}

async fn query_get(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<axum::Json<QueryView>, ApiError> {
    state
        .control
        .query_views()
        .into_iter()
        .find(|q| q.id == id)
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(format!("no query with id {id:?}; GET /api/v1/queries lists them")))
}

async fn change(state: &AppState, kind: table::ChangeKind) -> Result<Option<QueryView>, ApiError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let sender = state.control.changes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(sender) = sender else {
        return Err(ApiError::unavailable("the run is stopping: queries can no longer change".into()));
    };
    sender.try_send(table::Change { kind, reply }).map_err(|_| {
        ApiError::unavailable(format!("{} query changes are waiting already; try again", queries::CHANGE_QUEUE))
    })?;
    answer.await.map_err(|_| ApiError::unavailable("the query encoder stopped".into()))?
}

async fn query_add(
    State(state): State<AppState>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    let view = change(&state, table::ChangeKind::Add(body)).await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

async fn query_replace(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    let view = change(&state, table::ChangeKind::Replace(id, body)).await?;
    Ok(axum::Json(view).into_response())
}

async fn query_remove(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    change(&state, table::ChangeKind::Remove(id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_alone_is_loopback_and_other_addresses_need_a_token() {
        let local = parse_listen("8080").unwrap();
        assert_eq!(local.to_string(), "127.0.0.1:8080");
        assert!(check_access(local, None).is_ok());
        let any = parse_listen("0.0.0.0:8080").unwrap();
        let e = check_access(any, None).unwrap_err();
        assert!(e.contains("--http-token-file") && !e.contains('\n'), "{e}");
        assert!(check_access(any, Some("secret-token")).is_ok());
        assert!(parse_listen("[::1]:9000").unwrap().ip().is_loopback());
        assert!(parse_listen("nonsense").is_err());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abcdefgh", b"abcdefgh"));
        assert!(!same(b"abcdefgh", b"abcdefgx"));
        assert!(!same(b"abcdefgh", b"abcdefg"));
    }
}
