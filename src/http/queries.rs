//! Standing queries changed while `watch` runs: the encoder thread, and `queries.json` (the table and its types
//! are in [`super::table`]).
//!
//! A query lives in a *slot*: its index in the detections and in the event engine of every source. Slots are
//! only ever appended during a run, never reused: a removed query's slot turns inactive (no more detections,
//! so its open events end as they would when the object leaves), and an edited query (`PUT`) is a new slot
//! with the same id. The event engine and tracker therefore only ever grow, and no index changes meaning
//! under a frame in flight.
//!
//! A change goes: HTTP handler (validates the body as the command line validates `[[query]]`) → bounded
//! channel [`CHANGE_QUEUE`] (full: 503) → the `query-encoder` thread, which encodes the texts with the infer
//! thread's detector's [`TextEncoder`] (the same tokenizer and text graph, shared: no second copy of the model,
//! and the infer thread never waits for a text encoder), publishes the
//! new [`ActiveQueries`] (the infer thread picks it up at its next round: the next frame), writes a `queries`
//! line to `events.jsonl` and saves `<out>/queries.json`, then answers the handler.
//!
//! At the next start with `--http`, `<out>/queries.json` wins over `-q` and the config's `[[query]]` (a
//! warning says so): the API's changes are the operator's latest word. Delete the file to go back to the
//! config.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::ApiError;
use super::control::Control;
pub use super::table::{ActiveQueries, CHANGE_QUEUE, QUERIES_FILE, QueryBody, QuerySettings, QueryView, Slot};
use super::table::{Change, ChangeKind};
use crate::config::StandingQuery;
use crate::infer::{QuerySet, TextEncoder};

/// The `queries` line of `events.jsonl`: what changed, and every query in force after it.
#[derive(Debug, Serialize)]
struct QueriesRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    change: &'static str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    wall_time: Option<String>,
    queries: Vec<QueryView>,
}

/// `queries.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedQueries {
    queries: Vec<QueryView>,
}

/// The queries kept in `<out_dir>/queries.json` by an earlier run with `--http`, as `(id, query)`; `None`
/// when there is no such file. A damaged file is an error naming it.
pub fn load_saved(out_dir: &Path) -> Result<Option<Vec<(String, StandingQuery)>>, String> {
    let path = out_dir.join(QUERIES_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: cannot read ({e}); fix or delete it", path.display())),
    };
    let saved: SavedQueries = serde_json::from_str(&text)
        .map_err(|e| format!("{}: {e}; fix it or delete it to start from the config's queries", path.display()))?;
    saved
        .queries
        .iter()
        .map(|v| v.to_query().map(|q| (v.id.clone(), q)))
        .collect::<Result<Vec<_>, String>>()
        .map(Some)
        .map_err(|e| format!("{}: {e}; fix it or delete it", path.display()))
}

fn save(out_dir: &Path, queries: &ActiveQueries) -> std::io::Result<PathBuf> {
    let path = out_dir.join(QUERIES_FILE);
    let saved = SavedQueries { queries: queries.active().map(|s| QueryView::of(&s.id, &s.query)).collect() };
    let tmp = out_dir.join(format!(".{QUERIES_FILE}.part"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&saved).unwrap_or_default())?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

impl Control {
    /// The queries the run starts with, and their encoded texts (the watch loop, before the first frame).
    pub fn begin_queries(&self, queries: &[StandingQuery], set: QuerySet) {
        let mut active = ActiveQueries::empty();
        let ids = self.query_settings.initial_ids.clone().unwrap_or_default();
        for (i, q) in queries.iter().enumerate() {
            let id = match ids.get(i) {
                Some(id) => id.clone(),
                None => active.new_id(),
            };
            active.slots.push(Slot { id, query: q.clone(), active: true });
        }
        active.set_slots = (0..queries.len()).collect();
        active.set = Some(set);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(active);
    }

    /// The active queries as the API shows them.
    pub fn query_views(&self) -> Vec<QueryView> {
        self.queries().active().map(|s| QueryView::of(&s.id, &s.query)).collect()
    }
}

/// The encoder thread: applies the changes one at a time (see the module documentation).
pub(super) fn run_encoder(control: Arc<Control>, rx: crossbeam_channel::Receiver<Change>) {
    let mut encoder = control.query_settings.encoder.lock().unwrap_or_else(|e| e.into_inner()).take();
    for change in rx {
        let result = apply(&control, &mut encoder, change.kind);
        let _ = change.reply.send(result);
    }
}

fn apply(
    control: &Control,
    encoder: &mut Option<Box<dyn TextEncoder>>,
    change: ChangeKind,
) -> Result<Option<QueryView>, ApiError> {
    if !control.changes_open() {
        return Err(ApiError::unavailable(
            "the run is starting (the model and the sources are not in place yet); try again in a moment (GET \
             /readyz says when it is ready)"
                .into(),
        ));
    }
    let current = control.queries();
    let mut next = (*current).clone();
    let sources: Vec<String> = control.sources().iter().map(|s| s.name.clone()).collect();
    let settings = &control.query_settings;
    let find = |next: &ActiveQueries, id: &str| {
        next.slots
            .iter()
            .position(|s| s.active && s.id == id)
            .ok_or_else(|| ApiError::not_found(format!("no query with id {id:?}; GET /api/v1/queries lists them")))
    };
    let change_name = change.name();
    let (id, answer) = match change {
        ChangeKind::Add(body) => {
            let q = body.to_query(settings, &sources).map_err(ApiError::bad_request)?;
            let id = next.new_id();
            next.slots.push(Slot { id: id.clone(), query: q.clone(), active: true });
            (id.clone(), Some(QueryView::of(&id, &q)))
        }
        ChangeKind::Replace(id, body) => {
            let i = find(&next, &id)?;
            let q = body.to_query(settings, &sources).map_err(ApiError::bad_request)?;
            next.slots[i].active = false;
            next.slots.push(Slot { id: id.clone(), query: q.clone(), active: true });
            (id.clone(), Some(QueryView::of(&id, &q)))
        }
        ChangeKind::Remove(id) => {
            let i = find(&next, &id)?;
            next.slots[i].active = false;
            (id, None)
        }
    };
    let set_slots: Vec<usize> = next.slots.iter().enumerate().filter(|(_, s)| s.active).map(|(i, _)| i).collect();
    let texts: Vec<String> = set_slots.iter().map(|&i| next.slots[i].query.text.clone()).collect();
    next.set = if texts.is_empty() {
        None
    } else {
        let Some(e) = encoder.as_mut() else {
            return Err(ApiError::unavailable("this run has no query encoder (another encoder thread took it)".into()));
        };
        Some(e.encode(&texts).map_err(|e| ApiError::bad_request(e.to_string()))?)
    };
    next.set_slots = set_slots;
    // Published under the lock, so that two readers never see the version without its queries.
    {
        let mut current = control.current.lock().unwrap_or_else(|e| e.into_inner());
        next.version = current.version + 1;
        let version = next.version;
        *current = Arc::new(next.clone());
        control.version.store(version, std::sync::atomic::Ordering::Release);
    }
    info!(change = change_name, id = %id, version = next.version, "queries changed");
    let record = QueriesRecord {
        kind: "queries",
        change: change_name,
        id: &id,
        wall_time: Some(crate::sink::events::format_rfc3339_utc(std::time::SystemTime::now())),
        queries: next.active().map(|s| QueryView::of(&s.id, &s.query)).collect(),
    };
    if let Some(log) = control.event_log.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
        && let Err(e) = log.lock().unwrap_or_else(|e| e.into_inner()).write_json(&record)
    {
        warn!(error = %e.error, "the queries line was not written to events.jsonl");
    }
    if let Err(e) = save(&control.out_dir, &next) {
        warn!(error = %e, dir = %control.out_dir.display(), "queries.json not saved");
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(out: &Path) -> Arc<Control> {
        let c = Control::new(
            "m",
            "cpu",
            out,
            false,
            QuerySettings {
                default_threshold: 0.3,
                default_text_threshold: None,
                has_text_threshold: false,
                has_verifier: false,
                initial_ids: None,
                encoder: std::sync::Mutex::new(Some(Box::new(crate::infer::TextsOnly))),
            },
        );
        let verifying = StandingQuery {
            verify: Some(crate::config::QueryVerify::with_defaults("a fight")),
            ..StandingQuery::from_text("two people", Some(0.4))
        };
        let refused = apply(&c, &mut Some(Box::new(crate::infer::TextsOnly)), ChangeKind::Remove("q1".into()));
        assert_eq!(refused.unwrap_err().status, axum::http::StatusCode::SERVICE_UNAVAILABLE, "before the start");
        c.begin_queries(
            &[StandingQuery::from_text("a dog", Some(0.4)), verifying],
            QuerySet::texts_only(vec!["a dog".into(), "two people".into()]),
        );
        c.open_changes();
        c
    }

    fn body(text: &str) -> QueryBody {
        serde_json::from_value(serde_json::json!({ "text": text })).unwrap()
    }

    #[test]
    fn slots_are_appended_and_retired_never_reused() {
        let out = tempfile::tempdir().unwrap();
        let c = control(out.path());
        let mut detector: Option<Box<dyn TextEncoder>> = Some(Box::new(crate::infer::TextsOnly));
        let added = apply(&c, &mut detector, ChangeKind::Add(body("a cat"))).unwrap().unwrap();
        assert_eq!((added.id.as_str(), added.threshold), ("q3", 0.3), "the next id, the default threshold");
        apply(&c, &mut detector, ChangeKind::Remove("q1".into())).unwrap();
        let q = c.queries();
        assert_eq!(q.version, 2);
        assert_eq!(
            q.slots.iter().map(|s| (s.id.as_str(), s.active)).collect::<Vec<_>>(),
            [("q1", false), ("q2", true), ("q3", true)]
        );
        assert_eq!(q.set_slots, [1, 2]);
        assert_eq!(q.set.as_ref().unwrap().texts(), ["two people", "a cat"]);
        assert_eq!(c.query_version(), 2);
        // An edit is a new slot with the same id.
        apply(&c, &mut detector, ChangeKind::Replace("q3".into(), body("a black cat"))).unwrap();
        let q = c.queries();
        assert_eq!(q.slots.len(), 4);
        assert_eq!((q.slots[3].id.as_str(), q.slots[2].active), ("q3", false));
        // Everything removed: no set, and the frames go on with nothing to find.
        apply(&c, &mut detector, ChangeKind::Remove("q2".into())).unwrap();
        apply(&c, &mut detector, ChangeKind::Remove("q3".into())).unwrap();
        assert!(c.queries().set.is_none());
        // Kept for the next start, ids included.
        let saved = load_saved(out.path()).unwrap().unwrap();
        assert!(saved.is_empty());
    }

    #[test]
    fn bad_changes_are_refused_with_what_to_do() {
        let out = tempfile::tempdir().unwrap();
        let c = control(out.path());
        let mut detector: Option<Box<dyn TextEncoder>> = Some(Box::new(crate::infer::TextsOnly));
        let verifying: QueryBody =
            serde_json::from_value(serde_json::json!({"text": "two people", "verify": "a fight"})).unwrap();
        let e = apply(&c, &mut detector, ChangeKind::Replace("q2".into(), verifying)).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(e.message.contains("no verifier model") && e.message.contains("[verify] model"), "{}", e.message);
        let e = apply(&c, &mut detector, ChangeKind::Remove("q9".into())).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::NOT_FOUND);
        let gate: QueryBody =
            serde_json::from_value(serde_json::json!({"text": "a van", "sources": ["gate"]})).unwrap();
        let e = apply(&c, &mut detector, ChangeKind::Add(gate)).unwrap_err();
        assert!(e.message.contains("gate"), "{}", e.message);
        assert_eq!(c.query_version(), 0, "nothing changed");
        assert!(!out.path().join(QUERIES_FILE).exists());
    }

    #[test]
    fn saved_queries_come_back_with_their_ids_and_a_damaged_file_is_named() {
        let out = tempfile::tempdir().unwrap();
        let c = control(out.path());
        apply(&c, &mut Some(Box::new(crate::infer::TextsOnly) as Box<dyn TextEncoder>), ChangeKind::Add(body("a cat")))
            .unwrap();
        let saved = load_saved(out.path()).unwrap().unwrap();
        let ids: Vec<&str> = saved.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["q1", "q2", "q3"]);
        assert_eq!(saved[1].1.verify.as_ref().unwrap().sentence, "a fight");
        assert_eq!(saved[1].1, c.queries().slots[1].query, "every setting kept");
        std::fs::write(out.path().join(QUERIES_FILE), "{\"queries\": [{\"text\": 3}]}").unwrap();
        let e = load_saved(out.path()).unwrap_err();
        assert!(e.contains("queries.json") && e.contains("delete"), "{e}");
    }
}
