//! The events index (`<out>/events.sqlite`), fed by tailing `events.jsonl`, and the event routes.
//!
//! `events.jsonl` stays the primary record: the index holds each line with the columns a search needs, and is
//! made again from the file when it is missing, unreadable, fails SQLite's integrity check, or has indexed more
//! bytes than the file holds (the file was replaced). The `events-index` thread reads the file's new complete
//! lines every [`TAIL_EVERY`], indexes them, counts them for `/metrics` and sends each to the SSE clients.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;
use tokio_stream::StreamExt;
use tracing::{info, warn};

use super::{ApiError, AppState, HttpError};
use crate::sink::events::EVENTS_FILE_NAME;

/// How often the tailer looks for new lines.
pub const TAIL_EVERY: Duration = Duration::from_millis(100);
/// Lines kept for SSE clients that fall behind (a client further behind skips, and is told how many).
const EVENTS_BROADCAST: usize = 1024;
/// The index file, in the output directory.
pub const INDEX_FILE: &str = "events.sqlite";
/// Most lines one `GET /api/v1/events` returns.
const MAX_LIMIT: u32 = 1000;
const DEFAULT_LIMIT: u32 = 100;
/// Bumped when the table changes: an index of another version is made again.
const SCHEMA_VERSION: i64 = 1;

/// Counts for `/metrics`, of the lines written since the server started.
#[derive(Debug, Default, Clone)]
pub struct LineCounts {
    /// By (query label, line type).
    pub events: BTreeMap<(String, String), u64>,
    pub clips_written: u64,
    pub clips_failed: u64,
}

/// The index and the tailer's state.
pub struct EventIndex {
    path: PathBuf,
    log: PathBuf,
    db: Mutex<Connection>,
    /// Bytes of `events.jsonl` indexed.
    offset: Mutex<u64>,
    /// Lines before this offset were there before the server started (not counted in the metrics).
    count_from: u64,
    pub counts: Mutex<LineCounts>,
    pub broadcast: tokio::sync::broadcast::Sender<Arc<str>>,
    stop: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Times the index was made again from `events.jsonl` since the server started.
    pub rebuilt: std::sync::atomic::AtomicU64,
}

fn open_db(path: &Path) -> rusqlite::Result<(Connection, u64)> {
    let db = Connection::open(path)?;
    let ok: String = db.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if ok != "ok" {
        return Err(rusqlite::Error::InvalidQuery);
    }
    let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != SCHEMA_VERSION {
        db.execute_batch(&format!(
            "DROP TABLE IF EXISTS lines; DROP TABLE IF EXISTS meta;
             CREATE TABLE lines (seq INTEGER PRIMARY KEY AUTOINCREMENT, offset INTEGER NOT NULL UNIQUE,
                 type TEXT, event_id TEXT, source TEXT, query TEXT, label TEXT, wall_time TEXT, line TEXT NOT NULL);
             CREATE INDEX lines_event ON lines(event_id);
             CREATE INDEX lines_query ON lines(query);
             CREATE INDEX lines_label ON lines(label);
             CREATE INDEX lines_source ON lines(source);
             CREATE INDEX lines_wall ON lines(wall_time);
             CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO meta VALUES ('offset', 0);
             PRAGMA user_version = {SCHEMA_VERSION};"
        ))?;
    }
    let offset: i64 = db.query_row("SELECT value FROM meta WHERE key = 'offset'", [], |r| r.get(0))?;
    db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
    Ok((db, offset.max(0) as u64))
}

impl EventIndex {
    /// Opens `<out>/events.sqlite`, making it again from `events.jsonl` when it is missing or damaged.
    pub fn open(out_dir: &Path) -> Result<Self, HttpError> {
        let path = out_dir.join(INDEX_FILE);
        let log = out_dir.join(EVENTS_FILE_NAME);
        let log_len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut rebuilt = 0;
        let (db, offset) = match open_db(&path) {
            Ok((db, offset)) if offset <= log_len => (db, offset),
            result => {
                match &result {
                    Ok(_) => {
                        warn!(index = %path.display(), "the events index is ahead of events.jsonl; making it again")
                    }
                    Err(e) => {
                        warn!(index = %path.display(), error = %e, "the events index is damaged; making it again from events.jsonl")
                    }
                }
                drop(result);
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                rebuilt = 1;
                open_db(&path).map_err(|e| HttpError::Index { path: path.clone(), message: e.to_string() })?
            }
        };
        if offset < log_len {
            info!(index = %path.display(), "indexing {} bytes of events.jsonl", log_len - offset);
        }
        let (broadcast, _) = tokio::sync::broadcast::channel(EVENTS_BROADCAST);
        let index = EventIndex {
            path,
            log,
            db: Mutex::new(db),
            offset: Mutex::new(offset),
            count_from: log_len,
            counts: Mutex::new(LineCounts::default()),
            broadcast,
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
            rebuilt: std::sync::atomic::AtomicU64::new(rebuilt),
        };
        // What was written before this start is indexed now, so the first search sees it.
        index.catch_up();
        Ok(index)
    }

    /// Starts the `events-index` thread.
    pub fn spawn_tailer(self: Arc<Self>) -> std::io::Result<()> {
        let me = self.clone();
        let t = std::thread::Builder::new().name("events-index".into()).spawn(move || {
            while !me.stop.load(Ordering::Relaxed) {
                me.catch_up();
                std::thread::sleep(TAIL_EVERY);
            }
            me.catch_up();
        })?;
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        Ok(())
    }

    /// Stops the tailer after a last look at the file.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take()
            && t.join().is_err()
        {
            warn!("the events-index thread panicked");
        }
    }

    /// Indexes the complete lines written since the last look.
    fn catch_up(&self) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(mut file) = std::fs::File::open(&self.log) else {
            return;
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len <= *offset {
            return;
        }
        let mut buf = Vec::with_capacity((len - *offset).min(1 << 24) as usize);
        if file.seek(SeekFrom::Start(*offset)).is_err() || file.take(len - *offset).read_to_end(&mut buf).is_err() {
            return;
        }
        // Only whole lines: a line being written is read at the next look.
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let mut db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(tx) = db.transaction() else {
            return;
        };
        let mut at = *offset;
        let mut sent = Vec::new();
        for raw in buf[..=end].split_inclusive(|&b| b == b'\n') {
            let line_offset = at;
            at += raw.len() as u64;
            let text = String::from_utf8_lossy(raw).trim().to_string();
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
                // A line broken by a crash: events.jsonl keeps it, the index skips it.
                continue;
            };
            let s = |k: &str| value.get(k).and_then(|v| v.as_str()).map(str::to_string);
            if let Err(e) = tx.execute(
                "INSERT OR IGNORE INTO lines (offset, type, event_id, source, query, label, wall_time, line)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    line_offset as i64,
                    s("type"),
                    s("event_id"),
                    s("source"),
                    s("query"),
                    s("label"),
                    s("wall_time"),
                    text
                ],
            ) {
                warn!(index = %self.path.display(), error = %e, "a line was not indexed");
                continue;
            }
            let seq = tx.last_insert_rowid();
            if line_offset >= self.count_from {
                let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
                let kind = s("type").unwrap_or_default();
                if kind == "clips" {
                    match value.pointer("/clips/status").and_then(|v| v.as_str()) {
                        Some("written") => counts.clips_written += 1,
                        Some("failed") => counts.clips_failed += 1,
                        _ => {}
                    }
                }
                let label = s("label").unwrap_or_default();
                *counts.events.entry((label, kind)).or_default() += 1;
                sent.push(with_seq(value, seq));
            }
        }
        let _ = tx.execute("UPDATE meta SET value = ?1 WHERE key = 'offset'", params![at as i64]);
        if let Err(e) = tx.commit() {
            warn!(index = %self.path.display(), error = %e, "the events index was not updated");
            return;
        }
        *offset = at;
        drop(db);
        for v in sent {
            let _ = self.broadcast.send(Arc::from(v.to_string()));
        }
    }

    /// Lines matching `filter`, newest first.
    fn search(&self, filter: &EventFilter, sources: &[(String, String)]) -> rusqlite::Result<Vec<serde_json::Value>> {
        let mut sql = String::from("SELECT seq, line FROM lines WHERE 1=1");
        let mut args: Vec<String> = Vec::new();
        if let Some(since) = &filter.since {
            match since.parse::<i64>() {
                Ok(_) => sql.push_str(&format!(" AND seq > ?{}", args.len() + 1)),
                Err(_) => sql.push_str(&format!(" AND wall_time >= ?{}", args.len() + 1)),
            }
            args.push(since.clone());
        }
        if let Some(q) = &filter.query {
            let n = args.len() + 1;
            sql.push_str(&format!(" AND (query = ?{n} OR label = ?{n})"));
            args.push(q.clone());
        }
        if let Some(s) = &filter.source {
            // A short name stands for its display name (what the lines hold).
            let display = sources.iter().find(|(short, _)| short == s).map(|(_, d)| d.clone());
            let n = args.len() + 1;
            sql.push_str(&format!(" AND (source = ?{n} OR source = ?{})", n + 1));
            args.push(s.clone());
            args.push(display.unwrap_or_else(|| s.clone()));
        }
        if let Some(t) = &filter.r#type {
            sql.push_str(&format!(" AND type = ?{}", args.len() + 1));
            args.push(t.clone());
        }
        let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT {limit}"));
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = db.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, line) = row?;
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                out.push(with_seq(v, seq));
            }
        }
        Ok(out)
    }

    /// The newest `clips` object of an event (its `clips` line, or the one its `start` planned).
    fn clips_of(&self, event_id: &str) -> rusqlite::Result<Option<serde_json::Value>> {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let line: Option<String> = db
            .query_row(
                "SELECT line FROM lines WHERE event_id = ?1 AND line LIKE '%\"clips\":{%' ORDER BY seq DESC LIMIT 1",
                params![event_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(line.and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok()).and_then(|v| v.get("clips").cloned()))
    }
}

fn with_seq(mut v: serde_json::Value, seq: i64) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("seq".into(), seq.into());
    }
    v
}

/// `GET /api/v1/events` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventFilter {
    /// A `seq` (lines after it) or an RFC 3339 time (lines written at or after it).
    since: Option<String>,
    /// A query's text or label.
    query: Option<String>,
    /// A source's name or display name.
    source: Option<String>,
    /// A line type: start, update, end, clips, verification, queries.
    r#type: Option<String>,
    limit: Option<u32>,
    /// The token may come in the URL (see the module documentation of `http`).
    #[allow(dead_code)]
    token: Option<String>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    filter: Result<Query<EventFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(filter) = filter.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if filter.limit == Some(0) {
        return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let sources: Vec<(String, String)> =
        state.control.sources().iter().map(|s| (s.name.clone(), s.display.clone())).collect();
    let index = state.index.clone();
    let lines = tokio::task::spawn_blocking(move || index.search(&filter, &sources))
        .await
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("events index: {e}")))?;
    Ok(axum::Json(serde_json::json!({"events": lines})).into_response())
}

pub(super) async fn stream(State(state): State<AppState>) -> impl IntoResponse {
    let rx = state.index.broadcast.subscribe();
    let events = tokio_stream::wrappers::BroadcastStream::new(rx).map(|line| {
        Ok::<_, std::convert::Infallible>(match line {
            Ok(line) => Event::default().event("line").data(line.as_ref()),
            // This client fell behind by `n` lines: it is told, and goes on with the newest.
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                Event::default().event("skipped").data(n.to_string())
            }
        })
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// `GET /api/v1/events/{id}/{clip.mp4|crop.mp4|snapshot.jpg|sidecar.json}`, with range requests.
pub(super) async fn evidence(
    State(state): State<AppState>,
    UrlPath((id, file)): UrlPath<(String, String)>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let key = match file.as_str() {
        "clip.mp4" => "clip",
        "crop.mp4" => "crop_clip",
        "snapshot.jpg" => "snapshot",
        "sidecar.json" => "sidecar",
        _ => {
            return Err(ApiError::not_found(format!(
                "{file:?}: an event has clip.mp4, crop.mp4, snapshot.jpg and sidecar.json"
            )));
        }
    };
    let index = state.index.clone();
    let event = id.clone();
    let clips = tokio::task::spawn_blocking(move || index.clips_of(&event))
        .await
        .ok()
        .and_then(|r| r.ok())
        .flatten()
        .ok_or_else(|| ApiError::not_found(format!("no event {id:?} with evidence in events.jsonl")))?;
    let relative = clips
        .get(key)
        .and_then(|v| v.as_str())
        .ok_or_else(|| ApiError::not_found(format!("event {id:?} has no {file} (clips status {})", clips["status"])))?;
    let out = state.control.out_dir.canonicalize().unwrap_or_else(|_| state.control.out_dir.clone());
    let path = out.join(relative);
    // The path comes from events.jsonl; it must still be inside the output directory.
    let path = match path.canonicalize() {
        Ok(p) if p.starts_with(&out) => p,
        Ok(_) => return Err(ApiError::not_found(format!("event {id:?}: {file} is outside the output directory"))),
        Err(_) => {
            return Err(ApiError::not_found(format!(
                "event {id:?}: {file} is not there (yet: clips are written after the post-roll; or deleted by \
                 retention)"
            )));
        }
    };
    use tower::ServiceExt;
    let response = tower_http::services::ServeFile::new(path)
        .oneshot(request)
        .await
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(response.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_log(dir: &Path, lines: &[&str]) {
        std::fs::write(dir.join(EVENTS_FILE_NAME), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    }

    const A: &str =
        r#"{"type":"start","event_id":"bikes-r1-0-1-3","source":"bikes.mp4","query":"a bike","label":"bike"}"#;
    const B: &str =
        r#"{"type":"end","event_id":"bikes-r1-0-1-3","source":"bikes.mp4","query":"a bike","label":"bike"}"#;

    fn all(index: &EventIndex) -> Vec<serde_json::Value> {
        let f = EventFilter { since: None, query: None, source: None, r#type: None, limit: None, token: None };
        index.search(&f, &[]).unwrap()
    }

    #[test]
    fn a_damaged_index_is_made_again_from_events_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[A, "{broken", B]);
        let index = EventIndex::open(dir.path()).unwrap();
        assert_eq!(all(&index).len(), 2);
        drop(index);
        // Garbage in place of the database.
        std::fs::write(dir.path().join(INDEX_FILE), b"this is not a database, but it is long enough to look like one")
            .unwrap();
        let index = EventIndex::open(dir.path()).unwrap();
        assert_eq!(index.rebuilt.load(Ordering::Relaxed), 1);
        let lines = all(&index);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["type"], "end");
        drop(index);
        // Missing: made again too.
        std::fs::remove_file(dir.path().join(INDEX_FILE)).unwrap();
        assert_eq!(all(&EventIndex::open(dir.path()).unwrap()).len(), 2);
    }

    #[test]
    fn an_index_ahead_of_a_replaced_log_is_made_again_and_new_lines_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[A, B, A]);
        drop(EventIndex::open(dir.path()).unwrap());
        write_log(dir.path(), &[A]);
        let index = EventIndex::open(dir.path()).unwrap();
        assert_eq!(index.rebuilt.load(Ordering::Relaxed), 1);
        assert_eq!(all(&index).len(), 1);
        assert!(index.counts.lock().unwrap().events.is_empty(), "lines from before the start are not counted");
        let mut rx = index.broadcast.subscribe();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(EVENTS_FILE_NAME))
            .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{B}\n{{\"type\":\"sta").as_bytes()))
            .unwrap();
        index.catch_up();
        assert_eq!(all(&index).len(), 2, "the half-written line waits");
        assert_eq!(index.counts.lock().unwrap().events[&("bike".to_string(), "end".to_string())], 1);
        let sent: serde_json::Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(sent["type"], "end");
        assert_eq!(sent["seq"], 2);
    }
}
