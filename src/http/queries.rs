//! Standing queries changed while `watch` runs: the table of query slots, the encoder thread, `queries.json`.
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
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::ApiError;
use super::control::Control;
use crate::config::{AlertOn, Config, QueryConfig, StandingQuery};
use crate::infer::{QuerySet, TextEncoder};

/// Changes waiting for the encoder; more get 503 (the client tries again).
pub const CHANGE_QUEUE: usize = 16;
/// The file the API's queries are kept in, in the output directory.
pub const QUERIES_FILE: &str = "queries.json";

/// How queries added over the API get their defaults, and where their text is encoded.
pub struct QuerySettings {
    /// Threshold of a query that gives none (the model's, or the test model's).
    pub default_threshold: f32,
    /// Grounding DINO's default text threshold; `None` for OWL, which refuses one.
    pub default_text_threshold: Option<f32>,
    /// Whether the model has a text threshold at all.
    pub has_text_threshold: bool,
    /// The ids of the queries the run starts with (from `queries.json`); `None`: `q1`, `q2`, ...
    pub initial_ids: Option<Vec<String>>,
    /// The detector's text encoder ([`crate::infer::Detector::text_encoder`]); taken by the encoder thread.
    pub encoder: Mutex<Option<Box<dyn TextEncoder>>>,
}

impl std::fmt::Debug for QuerySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuerySettings").field("default_threshold", &self.default_threshold).finish()
    }
}

/// One slot of the query table.
#[derive(Debug, Clone)]
pub struct Slot {
    pub id: String,
    pub query: StandingQuery,
    /// False once removed or replaced.
    pub active: bool,
}

/// The queries in force: every slot, and the encoded texts of the active ones.
#[derive(Debug, Clone)]
pub struct ActiveQueries {
    /// [`Control::query_version`] when this was published.
    pub version: u64,
    pub slots: Vec<Slot>,
    /// The active slots' texts, encoded; `None` when no query is active.
    pub set: Option<QuerySet>,
    /// `set_slots[i]`: the slot of query `i` of `set`.
    pub set_slots: Vec<usize>,
    next_id: u64,
}

impl ActiveQueries {
    pub(super) fn empty() -> Self {
        ActiveQueries { version: 0, slots: Vec::new(), set: None, set_slots: Vec::new(), next_id: 1 }
    }

    fn new_id(&mut self) -> String {
        loop {
            let id = format!("q{}", self.next_id);
            self.next_id += 1;
            if !self.slots.iter().any(|s| s.id == id) {
                return id;
            }
        }
    }

    fn active(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.active)
    }
}

/// A query as the API shows it (and `queries.json` keeps it): every setting, defaults filled in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueryView {
    pub id: String,
    pub text: String,
    pub label: String,
    pub threshold: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_threshold: Option<f32>,
    pub min_frames: u32,
    pub window: u32,
    pub end_after_s: f64,
    pub post_roll_s: f64,
    pub pre_roll_s: f64,
    pub cooldown_s: f64,
    pub update_interval_s: f64,
    /// Empty: every source.
    pub sources: Vec<String>,
    /// The verifier's sentence, for a query that verifies (set in the config; not changeable over the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contrast: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_threshold: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_on: Option<String>,
}

impl QueryView {
    pub fn of(id: &str, q: &StandingQuery) -> Self {
        QueryView {
            id: id.to_string(),
            text: q.text.clone(),
            label: q.label.clone(),
            threshold: q.threshold,
            text_threshold: q.text_threshold,
            min_frames: q.min_frames,
            window: q.window,
            end_after_s: q.end_after_s,
            post_roll_s: q.post_roll_s,
            pre_roll_s: q.pre_roll_s,
            cooldown_s: q.cooldown_s,
            update_interval_s: q.update_interval_s,
            sources: q.sources.clone(),
            verify: q.verify.as_ref().map(|v| v.sentence.clone()),
            contrast: q.verify.as_ref().map(|v| v.contrast.clone()),
            verify_threshold: q.verify.as_ref().map(|v| v.threshold),
            alert_on: q.verify.as_ref().map(|v| match v.alert_on {
                AlertOn::Start => "start".to_string(),
                AlertOn::Verified => "verified".to_string(),
            }),
        }
    }

    /// Back to a query (from `queries.json`), checked as a `[[query]]` of the config is.
    fn to_query(&self) -> Result<StandingQuery, String> {
        let alert_on = match self.alert_on.as_deref() {
            None => None,
            Some("start") => Some(AlertOn::Start),
            Some("verified") => Some(AlertOn::Verified),
            Some(other) => return Err(format!("query {:?}: alert_on {other:?} is not start or verified", self.text)),
        };
        let config = QueryConfig {
            text: self.text.clone(),
            label: Some(self.label.clone()),
            threshold: Some(self.threshold),
            text_threshold: self.text_threshold,
            min_frames: Some(self.min_frames),
            window: Some(self.window),
            end_after_s: Some(self.end_after_s),
            post_roll_s: Some(self.post_roll_s),
            pre_roll_s: Some(self.pre_roll_s),
            cooldown_s: Some(self.cooldown_s),
            update_interval_s: Some(self.update_interval_s),
            sources: self.sources.clone(),
            verify: self.verify.clone(),
            contrast: self.contrast.clone(),
            verify_threshold: self.verify_threshold,
            alert_on,
        };
        crate::config::check_queries(std::slice::from_ref(&config))?;
        let mut q = standing(config, self.threshold);
        if let (Some(v), Some(contrast)) = (q.verify.as_mut(), &self.contrast) {
            v.contrast = contrast.clone();
        }
        Ok(q)
    }
}

/// The body of `POST /api/v1/queries` and `PUT /api/v1/queries/{id}`: `text` and any of the settings; a
/// setting left out takes its default (a `PUT` replaces the whole query).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    pub text: String,
    pub label: Option<String>,
    pub threshold: Option<f32>,
    pub text_threshold: Option<f32>,
    pub min_frames: Option<u32>,
    pub window: Option<u32>,
    pub end_after_s: Option<f64>,
    pub post_roll_s: Option<f64>,
    pub pre_roll_s: Option<f64>,
    pub cooldown_s: Option<f64>,
    pub update_interval_s: Option<f64>,
    #[serde(default)]
    pub sources: Vec<String>,
}

fn standing(config: QueryConfig, default_threshold: f32) -> StandingQuery {
    let mut queries = Config { queries: vec![config], ..Config::default() }.standing_queries_with(default_threshold);
    queries.remove(0)
}

impl QueryBody {
    /// The query, checked as the command line checks `-q` and `[[query]]`, with the model's defaults.
    fn to_query(&self, settings: &QuerySettings, sources: &[String]) -> Result<StandingQuery, String> {
        if self.text.trim().is_empty() {
            return Err("empty query text: give a sentence that describes what to find".into());
        }
        if self.text_threshold.is_some() && !settings.has_text_threshold {
            return Err(format!(
                "query {:?} sets text_threshold, which only Grounding DINO models have: remove it",
                self.text
            ));
        }
        for s in &self.sources {
            if !sources.contains(s) {
                return Err(format!(
                    "query {:?} applies to source {s:?}, which is not one of the sources ({})",
                    self.text,
                    sources.join(", ")
                ));
            }
        }
        let config = QueryConfig {
            text: self.text.clone(),
            label: self.label.clone().filter(|l| !l.trim().is_empty()),
            threshold: self.threshold,
            text_threshold: self.text_threshold,
            min_frames: self.min_frames,
            window: self.window,
            end_after_s: self.end_after_s,
            post_roll_s: self.post_roll_s,
            pre_roll_s: self.pre_roll_s,
            cooldown_s: self.cooldown_s,
            update_interval_s: self.update_interval_s,
            sources: self.sources.clone(),
            verify: None,
            contrast: None,
            verify_threshold: None,
            alert_on: None,
        };
        crate::config::check_queries(std::slice::from_ref(&config))?;
        let q = standing(config, settings.default_threshold);
        Ok(q.with_model_defaults(None, settings.default_text_threshold))
    }
}

/// One change, with where its answer goes.
pub(super) struct Change {
    pub kind: ChangeKind,
    pub reply: tokio::sync::oneshot::Sender<Result<Option<QueryView>, ApiError>>,
}

pub(super) enum ChangeKind {
    Add(QueryBody),
    Replace(String, QueryBody),
    Remove(String),
}

impl ChangeKind {
    fn name(&self) -> &'static str {
        match self {
            ChangeKind::Add(_) => "add",
            ChangeKind::Replace(..) => "update",
            ChangeKind::Remove(_) => "remove",
        }
    }
}

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
            if next.slots[i].query.verify.is_some() {
                return Err(ApiError::conflict(format!(
                    "query {id:?} verifies its events, which is set in the config only; change it there, or DELETE \
                     it and POST a new one"
                )));
            }
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
                initial_ids: None,
                encoder: Mutex::new(Some(Box::new(crate::infer::TextsOnly))),
            },
        );
        let verifying = StandingQuery {
            verify: Some(crate::config::QueryVerify::with_defaults("a fight")),
            ..StandingQuery::from_text("two people", Some(0.4))
        };
        c.begin_queries(
            &[StandingQuery::from_text("a dog", Some(0.4)), verifying],
            QuerySet::texts_only(vec!["a dog".into(), "two people".into()]),
        );
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
        let e = apply(&c, &mut detector, ChangeKind::Replace("q2".into(), body("x"))).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::CONFLICT);
        assert!(e.message.contains("config"), "{}", e.message);
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
