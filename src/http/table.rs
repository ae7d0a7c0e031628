//! The standing-query table of a run with the control plane, and the API's query types: the slots and the set in
//! force ([`ActiveQueries`]), how added queries get their defaults ([`QuerySettings`]), the request and answer
//! bodies ([`QueryBody`], [`QueryView`]), and a change on its way to the encoder thread ([`Change`]).
//!
//! [`super::control::Control`] holds the table; [`super::queries`] changes it (the encoder thread) and keeps it
//! in `queries.json`. This file imports neither, so the three run one way.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::ApiError;
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
    /// Whether the run has a verifier (`[verify] model`): queries with `verify` can then be added.
    pub has_verifier: bool,
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

    pub(super) fn new_id(&mut self) -> String {
        loop {
            let id = format!("q{}", self.next_id);
            self.next_id += 1;
            if !self.slots.iter().any(|s| s.id == id) {
                return id;
            }
        }
    }

    pub(super) fn active(&self) -> impl Iterator<Item = &Slot> {
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
    /// The verifier's sentence, for a query that verifies its events (`[verify]`).
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
    pub(super) fn to_query(&self) -> Result<StandingQuery, String> {
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
        checked_standing(config, self.threshold)
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
    /// What must be happening for an event to be confirmed (needs a verifier model: `[verify] model`).
    pub verify: Option<String>,
    pub contrast: Option<Vec<String>>,
    pub verify_threshold: Option<f32>,
    /// `"start"` or `"verified"`.
    pub alert_on: Option<String>,
}

/// The query of `config`, checked as `[[query]]` is, as the config's own queries are made (its contrast prompts
/// included).
fn checked_standing(config: QueryConfig, default_threshold: f32) -> Result<StandingQuery, String> {
    crate::config::check_queries(std::slice::from_ref(&config))?;
    let mut queries = Config { queries: vec![config], ..Config::default() }.standing_queries_with(default_threshold);
    Ok(queries.remove(0))
}

impl QueryBody {
    /// The query, checked as the command line checks `-q` and `[[query]]`, with the model's defaults.
    pub(super) fn to_query(&self, settings: &QuerySettings, sources: &[String]) -> Result<StandingQuery, String> {
        if self.text.trim().is_empty() {
            return Err("empty query text: give a sentence that describes what to find".into());
        }
        if self.text_threshold.is_some() && !settings.has_text_threshold {
            return Err(format!(
                "query {:?} sets text_threshold, which only Grounding DINO models have: remove it",
                self.text
            ));
        }
        if self.verify.is_none()
            && let Some(field) = [
                self.contrast.is_some().then_some("contrast"),
                self.verify_threshold.is_some().then_some("verify_threshold"),
                self.alert_on.is_some().then_some("alert_on"),
            ]
            .into_iter()
            .flatten()
            .next()
        {
            return Err(format!("query {:?} sets {field} but not verify: add the sentence to verify", self.text));
        }
        if self.verify.is_some() && !settings.has_verifier {
            return Err(format!(
                "query {:?} has verify, but this run has no verifier model: set [verify] model in the config (or \
                 --verifier DIR) and start again",
                self.text
            ));
        }
        let alert_on = match self.alert_on.as_deref() {
            None => None,
            Some("start") => Some(AlertOn::Start),
            Some("verified") => Some(AlertOn::Verified),
            Some(other) => return Err(format!("query {:?}: alert_on {other:?} is not start or verified", self.text)),
        };
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
            verify: self.verify.clone(),
            contrast: self.contrast.clone(),
            verify_threshold: self.verify_threshold,
            alert_on,
        };
        Ok(checked_standing(config, settings.default_threshold)?
            .with_model_defaults(None, settings.default_text_threshold))
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
    pub(super) fn name(&self) -> &'static str {
        match self {
            ChangeKind::Add(_) => "add",
            ChangeKind::Replace(..) => "update",
            ChangeKind::Remove(_) => "remove",
        }
    }
}
