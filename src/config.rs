//! The TOML configuration of `lookout watch`.
//!
//! Everything here can also be given on the command line for a quick start (`-q`, sources as arguments,
//! `--every`, `--out`); the file is for standing deployments. Unknown keys are errors, so that a typo
//! never silently leaves a setting at its default.
//!
//! ```toml
//! [output]
//! dir = "runs/today"          # default "out"
//! annotate = true             # default false
//! clips = true                # each event's clip and evidence in dir/<source>/ (default true)
//! max_open_clips = 2          # clips cut from the recording at once; the others wait, never refused (default 2)
//! shutdown_timeout_s = 30     # the longest a stop waits for clips, evidence and alerts (default 30)
//! evidence = true             # crop clip, snapshots and sidecar of each clip (default true)
//! keep_rejected = false       # remove the clips and snapshots of events the verifier rejects (default true)
//!
//! [inference]
//! every = 3                   # infer every 3rd frame (default 1)
//!
//! [motion]                    # the motion gate: frames where nothing moves skip inference (README, "Motion gate")
//! enabled = true              # default: on for live sources, off for files; `--motion on|off` wins
//! sensitivity = 0.7           # 0..1: a pixel changed when it differs by 8 + 72 × (1 − s) grey levels (default 0.7: 30)
//! min_area = 0.001            # fraction of the frame that must change (default 0.001)
//! max_interval = "5s"         # infer anyway after this long without inference (default 5s)
//!
//! [[source]]
//! name = "gate"               # default: derived from the URL or file name
//! url = "rtsp://user:pass@10.0.0.5/stream"
//! motion = { min_area = 0.01 }  # this source's own [motion] keys; the others come from [motion]
//!
//! [[query]]
//! text = "a person snatching a chain"
//! label = "snatching"         # default: the text
//! threshold = 0.25            # default: the model's (0.2 for OWL, 0.4 for Grounding DINO: its cards' box threshold)
//! text_threshold = 0.3        # Grounding DINO only; default 0.3 (its cards'); see StandingQuery::text_threshold
//! min_frames = 3              # k of the last `window` inference frames (default 2 of 3)
//! window = 5
//! end_after_s = 2.0           # the event ends once the match is missing this long (default 2)
//! post_roll_s = 5.0           # evidence kept after the event's end (default 5)
//! pre_roll_s = 5.0            # evidence kept before the event's start (default 5)
//! cooldown_s = 10.0           # no new event for the same track this soon after one ends (default 10)
//! update_interval_s = 5.0     # least time between two `update` events (default 5; 0: every match)
//! sources = ["gate"]          # default: every source
//! verify = "a person snatching a chain from another person"  # confirm each event (needs [verify] model)
//! contrast = ["people walking past each other"]  # default: infer::verify::DEFAULT_CONTRAST; not empty
//! verify_threshold = 0.5      # the sentence's softmax probability that confirms (default 0.5)
//! alert_on = "verified"       # or "start" (default): when this query's alerts go out
//!
//! [verify]
//! verifier = "xclip"          # or "clip": the family (default: the one the model's config.json names)
//! model = "models/xclip"      # the verifier's model directory or manifest name (default: none; for
//!                             # verifier = "clip", clip-vit-base-patch32)
//! frames = 8                  # frames of each event it sees (default 8)
//! seconds = 2.0               # spread over the event's first seconds (default 2)
//! queue = 16                  # events waiting; past it the verdict is error/overloaded (default 16)
//! precision = "fp32"          # or "int8": the per-event graph (models/quantize_int8.py makes it; default fp32)
//!
//! [alerts.mqtt]
//! url = "mqtt://broker.lan:1883"  # see crate::sink::alerts::config for every key
//! password_file = "/etc/lookout/mqtt-password"
//!
//! [recording]                 # each source recorded once, in <dir>/<source>/rec/; clips are cut from it
//! segment_s = 4.0             # seconds of a segment (default 4)
//! keep = "7d"                 # how much is kept: 90s, 30m, 12h, 7d (default: the longest pre-roll + a segment)
//! max_gb = 50.0               # at most this much per source, in GB (default: no limit beyond keep)
//! min_free_mb = 100           # no new segment while the disk has less free (default 100)
//!
//! [retention]
//! max_disk_gb = 200.0         # see crate::sink::retention (default: no limit)
//! max_age_days = 14.0
//! ```
//!
//! Times are seconds of stream time (the frames' timestamps), not of the wall clock: a file replayed faster
//! than real time gives the same events. See [`crate::track::lifecycle`] for how they drive an event.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::track::EventSettings;

// The event settings' defaults are the event engine's; named here too, as the file's documentation refers to them.
pub use crate::track::lifecycle::{
    DEFAULT_COOLDOWN_S, DEFAULT_END_AFTER_S, DEFAULT_MIN_FRAMES, DEFAULT_POST_ROLL_S, DEFAULT_PRE_ROLL_S,
    DEFAULT_THRESHOLD, DEFAULT_UPDATE_INTERVAL_S, DEFAULT_WINDOW,
};

/// Score threshold of a query that sets none (and no `--threshold`) when the model is the bundled test model:
/// its random weights give scores of 0.3 to 0.5 nearly everywhere, which would pass [`DEFAULT_THRESHOLD`] on almost
/// every box of every frame.
pub const TEST_MODEL_THRESHOLD: f32 = 0.65;

/// The threshold of a query that sets none: [`TEST_MODEL_THRESHOLD`] for the test model, else
/// [`DEFAULT_THRESHOLD`].
pub fn default_threshold(test_model: bool) -> f32 {
    if test_model { TEST_MODEL_THRESHOLD } else { DEFAULT_THRESHOLD }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The model; the command line's `-m` overrides it.
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub output: OutputConfig,
    #[serde(default)]
    pub inference: InferenceConfig,
    /// Reconnection of live sources.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// The motion gate of every source (`[motion]`); a source's `motion` overrides it key by key.
    #[serde(default)]
    pub motion: MotionConfig,
    /// Sources, in addition to those on the command line.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// Standing queries, in addition to `-q`.
    #[serde(default, rename = "query")]
    pub queries: Vec<QueryConfig>,
    /// TensorRT settings, used when a graph runs on TensorRT (see `--device`).
    #[serde(default)]
    pub tensorrt: crate::infer::device::TensorRtConfig,
    /// MQTT and webhook alerts (`[alerts.mqtt]`, `[[alerts.webhooks]]`, `[alerts.spool]`); see
    /// [`crate::sink::alerts::config`]. Default: none.
    #[serde(default)]
    pub alerts: crate::sink::alerts::AlertsConfig,
    /// Deleting the oldest outputs (`[retention]`); see [`crate::sink::retention`]. Default: keep everything.
    #[serde(default)]
    pub retention: crate::sink::retention::RetentionConfig,
    /// The second stage that confirms events of queries with `verify` (`[verify]`). Default: no verifier.
    #[serde(default)]
    pub verify: VerifyConfig,
    /// The recording of each source (`[recording]`), from which clips are cut; see [`crate::sink::recording`].
    #[serde(default)]
    pub recording: RecordingConfig,
    /// The HTTP control plane (`[http]`): REST API, page, metrics. Default: off.
    #[serde(default)]
    pub http: HttpConfig,
}

/// `[http]`: the control plane's address and access (`--http`, `--http-token-file`, `--http-read-only` win).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `ADDR:PORT` (or `PORT` alone, on 127.0.0.1) to serve on. Default: no server.
    pub listen: Option<String>,
    /// A file holding the bearer token every request but `/healthz` must carry. Required for an address
    /// other than loopback. Default: none (no token asked).
    pub token_file: Option<PathBuf>,
    /// Refuse every change (queries). Default false.
    pub read_only: Option<bool>,
}

/// Checks queries as a config file's `[[query]]` are checked (for queries given another way: the HTTP API,
/// `queries.json`); the message of the first that fails.
pub fn check_queries(queries: &[QueryConfig]) -> Result<(), String> {
    let config = Config { queries: queries.to_vec(), ..Config::default() };
    config.validate(Path::new("")).map_err(|e| match e {
        ConfigError::Invalid { message, .. } | ConfigError::Parse { message, .. } => message,
        e => e.to_string(),
    })
}

/// `[recording]`: each source's recording, a ring of segments on disk.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    /// Seconds of a segment. Default [`crate::sink::recording::DEFAULT_SEGMENT_S`] (4).
    pub segment_s: Option<f64>,
    /// How much is kept behind the newest packet: a duration such as "90s", "30m", "12h", "7d". Default: the
    /// longest pre-roll of the source's queries plus one segment (only what the next event needs).
    pub keep: Option<String>,
    /// Gigabytes (10^9 bytes) of each source's recording at most. Default: no limit beyond `keep`.
    pub max_gb: Option<f64>,
    /// The recording starts no segment while its disk has less than this many MiB free (left to events.jsonl and
    /// the clips). Default [`crate::sink::recording::DEFAULT_MIN_FREE_BYTES`] (100 MiB).
    pub min_free_mb: Option<u64>,
}

/// `[verify]`: the verifier model and how many frames of each event it sees.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// The verifier's family, `"xclip"` or `"clip"`: the model must be one (its `config.json`'s `model_type`).
    /// Default: whichever family the model is.
    pub verifier: Option<VerifierKind>,
    /// The verifier's model directory (`config.json`, `onnx/`) or a name from the model manifest; `--verifier`
    /// overrides it. Default: [`VerifierKind::default_model`] of `verifier`, else none, and then a query with
    /// `verify` is an error.
    pub model: Option<PathBuf>,
    /// Frames of each event the verifier sees. Default [`DEFAULT_VERIFY_FRAMES`] (8).
    pub frames: Option<usize>,
    /// Seconds of stream time, from the event's start, the frames are spread over. Default
    /// [`DEFAULT_VERIFY_SECONDS`] (2).
    pub seconds: Option<f64>,
    /// Events waiting for the verifier; past it an event's verdict is `error` with reason `overloaded`.
    /// Default [`DEFAULT_VERIFY_QUEUE`] (16).
    pub queue: Option<usize>,
    /// `"fp32"` or `"int8"`: the arithmetic of the graph the verifier runs once per event (X-CLIP's video graph,
    /// CLIP's image encoder; see [`crate::infer::verifier_event_graph`]). Default fp32; `--verifier-precision`
    /// overrides. Independent of `[model] precision`, the detector's.
    pub precision: Option<crate::infer::Precision>,
}

/// `[verify] verifier`: which video-text model confirms events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifierKind {
    /// X-CLIP (`XCLIPModel`), the video verifier: frames mixed over time, then a prompt generator.
    Xclip,
    /// CLIP (`CLIPModel`), the cheap verifier: image embeddings averaged over the frames.
    Clip,
}

impl VerifierKind {
    /// `"xclip"` or `"clip"`: the value in the config, and the model's `model_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifierKind::Xclip => "xclip",
            VerifierKind::Clip => "clip",
        }
    }

    /// `"xclip"` or `"clip"` as a kind.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "xclip" => Some(VerifierKind::Xclip),
            "clip" => Some(VerifierKind::Clip),
            _ => None,
        }
    }

    /// The model used when `[verify] model` is not given: CLIP's manifest entry (`lookout models fetch
    /// clip-vit-base-patch32`); none for X-CLIP, which has no ONNX on the Hub to fetch.
    pub fn default_model(self) -> Option<&'static str> {
        match self {
            VerifierKind::Xclip => None,
            VerifierKind::Clip => Some("clip-vit-base-patch32"),
        }
    }
}

/// Default `[verify] frames`.
pub const DEFAULT_VERIFY_FRAMES: usize = 8;
/// Default `[verify] seconds`.
pub const DEFAULT_VERIFY_SECONDS: f64 = 2.0;
/// Default `[verify] queue`.
pub const DEFAULT_VERIFY_QUEUE: usize = 16;

/// When a verifying query's alerts go out.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AlertOn {
    /// At the event's start, as for a query without `verify` (the default).
    #[default]
    Start,
    /// Only once the verifier confirms the event: its `start` line is held until then, and its other lines are
    /// alerted only once it is confirmed.
    Verified,
}

/// A query's second stage, with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryVerify {
    /// What must be happening (prompt 0).
    pub sentence: String,
    /// The contrast prompts (at least one).
    pub contrast: Vec<String>,
    /// The sentence's probability at or above which an event is confirmed.
    pub threshold: f32,
    pub alert_on: AlertOn,
}

impl QueryVerify {
    /// `sentence` with the default contrast prompts and threshold (`-q "..." --verify`).
    pub fn with_defaults(sentence: &str) -> Self {
        QueryVerify {
            sentence: sentence.to_string(),
            contrast: crate::infer::verify::DEFAULT_CONTRAST.iter().map(|s| s.to_string()).collect(),
            threshold: crate::infer::verify::DEFAULT_VERIFY_THRESHOLD,
            alert_on: AlertOn::Start,
        }
    }

    /// The prompts in the verifier's order: the sentence, then the contrast prompts.
    pub fn prompts(&self) -> Vec<String> {
        std::iter::once(self.sentence.clone()).chain(self.contrast.iter().cloned()).collect()
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A model directory or a name from `lookout models list`. Default: the command line's `-m`.
    pub name: Option<String>,
    /// "split" or "hf". Default: split when the directory has it.
    pub layout: Option<String>,
    /// "fp32" or "int8": the image side's graph (`--precision`). Default "fp32"; `--precision` overrides.
    pub precision: Option<crate::infer::Precision>,
    /// ONNX Runtime intra-op threads; default 0 (one per core).
    pub intra_threads: Option<usize>,
    /// Where the model runs: "auto", "cpu", "cuda[:N]" or "tensorrt[:N]". Default "auto"; `--device` overrides.
    pub device: Option<crate::infer::Device>,
    /// Where the text encoder runs, if not on `device`. Default: `device`.
    pub text_device: Option<crate::infer::Device>,
    /// ONNX Runtime graph optimisation, 0 (none) to 3 (all). Default 3.
    pub optimization_level: Option<u8>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Output directory. Default "out".
    pub dir: Option<PathBuf>,
    /// Write `<dir>/<source>/annotated.mp4`. Default false.
    pub annotate: Option<bool>,
    /// Republish the annotated stream over RTSP at this address (e.g. "127.0.0.1:8554"). Default: off.
    pub serve_rtsp: Option<String>,
    /// Write each event's clip (`<dir>/<source>/<event-id>.mp4`, pre-roll to post-roll) and evidence. Default
    /// true.
    pub clips: Option<bool>,
    /// Clips cut from the recording at once, over every source: the clip workers. The other clips wait (their
    /// packets are on disk) and are never refused. Default [`crate::sink::clips::DEFAULT_MAX_OPEN_CLIPS`] (2).
    pub max_open_clips: Option<usize>,
    /// Make each clip's evidence: the cropped clip, the snapshots and the sidecar. Default true; false writes
    /// only the full-frame clip (cheaper when events are many).
    pub evidence: Option<bool>,
    /// Keep the clips and snapshots of events the verifier rejects. Default true; false removes them once the
    /// verdict and the files are final (never a confirmed event's, never one whose verdict is an error), and the
    /// `verification` line says `"evidence": "removed"` (see [`crate::sink::rejected`]).
    pub keep_rejected: Option<bool>,
    /// The longest a stop (Ctrl-C, SIGTERM, `--max-seconds`) waits for what is still open: queued frames, clips
    /// and their evidence, alerts. What is not finished by then is recorded as not finished (its `clips` line
    /// says so; undelivered alerts stay in the spool). Default [`crate::watch::DEFAULT_SHUTDOWN_TIMEOUT_S`] (30);
    /// keep systemd's `TimeoutStopSec` above it.
    pub shutdown_timeout_s: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {
    /// Infer every Nth decoded frame. Default 1.
    pub every: Option<u32>,
    /// Infer at most this many frames per second of stream time (instead of `every`). Default: off.
    pub fps: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// First wait after a live source fails, in ms. Default 500.
    pub initial_ms: Option<u64>,
    /// Longest wait between attempts, in ms. Default 30000.
    pub max_ms: Option<u64>,
    /// Growth of the wait after each failure. Default 2.0.
    pub multiplier: Option<f64>,
    /// Give up after this many failed attempts in a row. Default: never.
    pub max_attempts: Option<u32>,
    /// A live source that delivers no frame for this long is restarted, in ms. Default 10000.
    pub stall_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name used in output paths, events and logs. Default: derived from the URL or file name.
    pub name: Option<String>,
    /// A file path, `rtsp://`, `http(s)://` or `/dev/videoN`.
    pub url: String,
    /// This source's motion gate: each key set here wins over `[motion]`'s. Default: `[motion]`.
    #[serde(default)]
    pub motion: Option<MotionConfig>,
}

/// `[motion]`, or a source's `motion = { ... }`: the motion gate ([`crate::source::motion`]). Every key is
/// optional; the defaults are the gate's.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MotionConfig {
    /// Run the gate. Default: on for live sources (RTSP, HTTP, V4L2, CSI), off for files.
    pub enabled: Option<bool>,
    /// 0 to 1: a pixel has changed when it differs from the background by more than `8 + 72 × (1 − sensitivity)`
    /// grey levels. Default 0.7 (30 levels).
    pub sensitivity: Option<f32>,
    /// The least fraction of the frame that must change for it to count as moving. Default 0.001.
    pub min_area: Option<f32>,
    /// A duration ("5s", "1m"): a frame is inferred anyway once none was for this long. Default "5s".
    pub max_interval: Option<String>,
}

impl MotionConfig {
    /// Each key of `self`, or else `base`'s.
    pub fn over(&self, base: &MotionConfig) -> MotionConfig {
        MotionConfig {
            enabled: self.enabled.or(base.enabled),
            sensitivity: self.sensitivity.or(base.sensitivity),
            min_area: self.min_area.or(base.min_area),
            max_interval: self.max_interval.clone().or_else(|| base.max_interval.clone()),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// The sentence to find.
    pub text: String,
    /// Short name in events, alerts and on the video. Default: the text.
    pub label: Option<String>,
    /// Score (0..1) at or above which a box counts as a match: Grounding DINO's box threshold. Default: the
    /// model's ([`DEFAULT_THRESHOLD`] for OWL, 0.4 for Grounding DINO).
    pub threshold: Option<f32>,
    /// Grounding DINO only: the least score (0..1) a box must have for this query to name it at all, even to
    /// keep a track going below `threshold`. Default: the model's (0.3).
    pub text_threshold: Option<f32>,
    /// Matches needed among the last `window` inference frames before an event starts. Default [`DEFAULT_MIN_FRAMES`].
    pub min_frames: Option<u32>,
    /// The n of k-of-n. Default [`DEFAULT_WINDOW`].
    pub window: Option<u32>,
    /// Seconds of stream time without a match before an event ends. Default [`DEFAULT_END_AFTER_S`] (2).
    pub end_after_s: Option<f64>,
    /// Seconds of evidence after an event's end. Default [`DEFAULT_POST_ROLL_S`] (5).
    pub post_roll_s: Option<f64>,
    /// Seconds of evidence before an event's start. Default [`DEFAULT_PRE_ROLL_S`] (5).
    pub pre_roll_s: Option<f64>,
    /// Seconds after an event's end before the same track can start another for this query.
    /// Default [`DEFAULT_COOLDOWN_S`] (10).
    pub cooldown_s: Option<f64>,
    /// Least seconds between two `update` events of one event; 0 sends one on every match.
    /// Default [`DEFAULT_UPDATE_INTERVAL_S`] (5).
    pub update_interval_s: Option<f64>,
    /// Names of the sources this query applies to. Default: every source.
    #[serde(default)]
    pub sources: Vec<String>,
    /// What must be happening for an event to be confirmed by the verifier (`[verify]`). Default: no
    /// verification.
    pub verify: Option<String>,
    /// Sentences the verifier weighs `verify` against. Default
    /// [`crate::infer::verify::DEFAULT_CONTRAST`]; an empty list is an error.
    pub contrast: Option<Vec<String>>,
    /// The probability (0..1) of `verify` at or above which an event is confirmed. Default
    /// [`crate::infer::verify::DEFAULT_VERIFY_THRESHOLD`] (0.5).
    pub verify_threshold: Option<f32>,
    /// `"start"` or `"verified"`: when the query's alerts go out. Default `"start"`.
    pub alert_on: Option<AlertOn>,
}

/// A standing query with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct StandingQuery {
    pub text: String,
    pub label: String,
    /// Score at or above which a box counts as a match (Grounding DINO's box threshold).
    pub threshold: f32,
    /// False when `threshold` is the default, which [`StandingQuery::with_model_defaults`] replaces by the
    /// model's own.
    pub threshold_given: bool,
    /// Grounding DINO's text threshold: a box whose score for this query is below it is never passed on, not
    /// even to keep a track (below `threshold` the tracker keeps a track with boxes down to its low band;
    /// above `text_threshold` only). `None`: the model's default, or none for OWL.
    pub text_threshold: Option<f32>,
    pub min_frames: u32,
    pub window: u32,
    /// Seconds without a match before an event ends.
    pub end_after_s: f64,
    /// Seconds of evidence after an event's end.
    pub post_roll_s: f64,
    /// Seconds of evidence before an event's start.
    pub pre_roll_s: f64,
    /// Seconds after an event's end before the same track can start another.
    pub cooldown_s: f64,
    /// Least seconds between two `update` events.
    pub update_interval_s: f64,
    /// Empty: every source.
    pub sources: Vec<String>,
    /// The second stage, when the query verifies its events.
    pub verify: Option<QueryVerify>,
}

impl StandingQuery {
    /// A query from `-q`: the defaults, every source.
    pub fn from_text(text: &str, threshold: Option<f32>) -> Self {
        StandingQuery {
            text: text.to_string(),
            label: text.to_string(),
            threshold: threshold.unwrap_or(DEFAULT_THRESHOLD),
            threshold_given: threshold.is_some(),
            text_threshold: None,
            min_frames: DEFAULT_MIN_FRAMES,
            window: DEFAULT_WINDOW,
            end_after_s: DEFAULT_END_AFTER_S,
            post_roll_s: DEFAULT_POST_ROLL_S,
            pre_roll_s: DEFAULT_PRE_ROLL_S,
            cooldown_s: DEFAULT_COOLDOWN_S,
            update_interval_s: DEFAULT_UPDATE_INTERVAL_S,
            sources: Vec::new(),
            verify: None,
        }
    }

    pub fn applies_to(&self, source_name: &str) -> bool {
        self.sources.is_empty() || self.sources.iter().any(|s| s == source_name)
    }

    /// Fills in the thresholds the user left unset with the model's defaults (from its card); `threshold`
    /// `None` keeps the one already there (the test model's, which wins over a card's).
    pub fn with_model_defaults(mut self, threshold: Option<f32>, text_threshold: Option<f32>) -> Self {
        if let Some(t) = threshold
            && !self.threshold_given
        {
            self.threshold = t;
        }
        if self.text_threshold.is_none() {
            self.text_threshold = text_threshold;
        }
        self
    }
}

impl From<&StandingQuery> for EventSettings {
    fn from(q: &StandingQuery) -> Self {
        EventSettings {
            threshold: q.threshold,
            min_frames: q.min_frames,
            window: q.window,
            end_after_s: q.end_after_s,
            post_roll_s: q.post_roll_s,
            pre_roll_s: q.pre_roll_s,
            cooldown_s: q.cooldown_s,
            update_interval_s: q.update_interval_s,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            // toml's message spans lines (it quotes the offending line); keep it to one.
            message: e.message().to_string() + &span_hint(text, e.span()),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { path: path.to_path_buf(), message };
        if let Some(t) = self.output.shutdown_timeout_s
            && !(t.is_finite() && (0.0..=86_400.0).contains(&t))
        {
            return Err(invalid(format!(
                "[output] shutdown_timeout_s = {t} is out of range; give seconds from 0 to 86400"
            )));
        }
        for q in &self.queries {
            if q.text.trim().is_empty() {
                return Err(invalid("a [[query]] has an empty text".into()));
            }
            if let Some(t) = q.threshold
                && !(0.0..=1.0).contains(&t)
            {
                return Err(invalid(format!("query {:?}: threshold {t} is outside 0..1", q.text)));
            }
            if let Some(t) = q.text_threshold
                && !(0.0..=1.0).contains(&t)
            {
                return Err(invalid(format!("query {:?}: text_threshold {t} is outside 0..1", q.text)));
            }
            let (k, n) = (q.min_frames.unwrap_or(DEFAULT_MIN_FRAMES), q.window.unwrap_or(DEFAULT_WINDOW));
            if k == 0 || k > n {
                return Err(invalid(format!("query {:?}: min_frames {k} must be between 1 and window {n}", q.text)));
            }
            if let Some(v) = &q.verify
                && v.trim().is_empty()
            {
                return Err(invalid(format!(
                    "query {:?}: verify is empty; give the sentence that must be happening",
                    q.text
                )));
            }
            if let Some(c) = &q.contrast {
                if c.is_empty() {
                    return Err(invalid(format!(
                        "query {:?}: contrast is an empty list; give at least one sentence, or leave contrast out for the defaults",
                        q.text
                    )));
                }
                if c.iter().any(|s| s.trim().is_empty()) {
                    return Err(invalid(format!("query {:?}: contrast has an empty sentence", q.text)));
                }
            }
            if let Some(t) = q.verify_threshold
                && !(0.0..=1.0).contains(&t)
            {
                return Err(invalid(format!("query {:?}: verify_threshold {t} is outside 0..1", q.text)));
            }
            if q.verify.is_none() && (q.contrast.is_some() || q.verify_threshold.is_some() || q.alert_on.is_some()) {
                return Err(invalid(format!(
                    "query {:?}: contrast, verify_threshold and alert_on need verify = \"...\" (the sentence to confirm)",
                    q.text
                )));
            }
            for (key, value) in [
                ("end_after_s", q.end_after_s),
                ("post_roll_s", q.post_roll_s),
                ("pre_roll_s", q.pre_roll_s),
                ("cooldown_s", q.cooldown_s),
                ("update_interval_s", q.update_interval_s),
            ] {
                if let Some(v) = value
                    && !(v.is_finite() && v >= 0.0)
                {
                    return Err(invalid(format!(
                        "query {:?}: {key} {v} must be a number of seconds, 0 or more",
                        q.text
                    )));
                }
            }
        }
        if let Some(f) = self.verify.frames
            && !(1..=64).contains(&f)
        {
            return Err(invalid(format!("[verify] frames = {f} is outside 1..64")));
        }
        if let Some(t) = self.verify.seconds
            && !(t.is_finite() && t > 0.0 && t <= 60.0)
        {
            return Err(invalid(format!("[verify] seconds = {t} must be more than 0 and at most 60")));
        }
        if let Some(level) = self.model.optimization_level
            && level > 3
        {
            return Err(invalid(format!("model.optimization_level {level} is outside 0..3")));
        }
        if let Some(every) = self.inference.every
            && every == 0
        {
            return Err(invalid("inference.every must be at least 1".into()));
        }
        Ok(())
    }

    /// The standing queries of the file with defaults filled in.
    pub fn standing_queries(&self) -> Vec<StandingQuery> {
        self.standing_queries_with(DEFAULT_THRESHOLD)
    }

    /// [`Self::standing_queries`], where a query without a threshold gets `default_threshold` (see
    /// [`default_threshold`]).
    pub fn standing_queries_with(&self, default_threshold: f32) -> Vec<StandingQuery> {
        self.queries
            .iter()
            .map(|q| StandingQuery {
                text: q.text.clone(),
                label: q.label.clone().unwrap_or_else(|| q.text.clone()),
                threshold: q.threshold.unwrap_or(default_threshold),
                threshold_given: q.threshold.is_some(),
                text_threshold: q.text_threshold,
                min_frames: q.min_frames.unwrap_or(DEFAULT_MIN_FRAMES),
                window: q.window.unwrap_or(DEFAULT_WINDOW),
                end_after_s: q.end_after_s.unwrap_or(DEFAULT_END_AFTER_S),
                post_roll_s: q.post_roll_s.unwrap_or(DEFAULT_POST_ROLL_S),
                pre_roll_s: q.pre_roll_s.unwrap_or(DEFAULT_PRE_ROLL_S),
                cooldown_s: q.cooldown_s.unwrap_or(DEFAULT_COOLDOWN_S),
                update_interval_s: q.update_interval_s.unwrap_or(DEFAULT_UPDATE_INTERVAL_S),
                sources: q.sources.clone(),
                verify: q.verify.as_ref().map(|sentence| {
                    let d = QueryVerify::with_defaults(sentence);
                    QueryVerify {
                        contrast: q.contrast.clone().unwrap_or(d.contrast),
                        threshold: q.verify_threshold.unwrap_or(d.threshold),
                        alert_on: q.alert_on.unwrap_or_default(),
                        ..d
                    }
                }),
            })
            .collect()
    }
}

fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => format!(
            " (line {})",
            text.as_bytes()[..r.start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
        ),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pre_roll_ring_keeps_the_default_pre_roll() {
        assert_eq!(crate::source::ring::DEFAULT_MAX_TIME_S, DEFAULT_PRE_ROLL_S);
    }

    #[test]
    fn parses_a_full_file() {
        let c = Config::parse(
            r#"
            [output]
            dir = "runs/today"
            annotate = true
            [inference]
            every = 3
            [[source]]
            name = "gate"
            url = "rtsp://u:p@cam/x"
            [[query]]
            text = "a person lying on the ground"
            threshold = 0.3
            min_frames = 3
            window = 5
            sources = ["gate"]
            "#,
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.inference.every, Some(3));
        let q = &c.standing_queries()[0];
        assert_eq!((q.threshold, q.min_frames, q.window), (0.3, 3, 5));
        assert_eq!(q.label, "a person lying on the ground");
        assert!(q.applies_to("gate") && !q.applies_to("other"));
    }

    #[test]
    fn motion_keys_of_a_source_win_over_the_motion_section_one_by_one() {
        let c = Config::parse(
            "[motion]\nenabled = true\nsensitivity = 0.5\nmax_interval = \"10s\"\n\n[[source]]\nurl = \"a.mp4\"\n\
             motion = { min_area = 0.01, max_interval = \"2s\" }\n\n[[source]]\nurl = \"b.mp4\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        let a = c.sources[0].motion.as_ref().unwrap().over(&c.motion);
        assert_eq!(a.enabled, Some(true));
        assert_eq!(a.sensitivity, Some(0.5));
        assert_eq!(a.min_area, Some(0.01));
        assert_eq!(a.max_interval.as_deref(), Some("2s"));
        assert!(c.sources[1].motion.is_none());
        let err = Config::parse("[motion]\nthreshold = 3\n", Path::new("m.toml")).unwrap_err().to_string();
        assert!(err.contains("threshold"), "{err}");
    }

    #[test]
    fn the_test_model_raises_only_thresholds_that_were_not_given() {
        let c =
            Config::parse("[[query]]\ntext = \"a\"\n[[query]]\ntext = \"b\"\nthreshold = 0.3\n", Path::new("c.toml"))
                .unwrap();
        let q = c.standing_queries_with(default_threshold(true));
        assert_eq!((q[0].threshold, q[1].threshold), (TEST_MODEL_THRESHOLD, 0.3));
        let q = c.standing_queries_with(default_threshold(false));
        assert_eq!((q[0].threshold, q[1].threshold), (DEFAULT_THRESHOLD, 0.3));
        assert_eq!(c.standing_queries(), q);
    }

    #[test]
    fn unknown_key_is_an_error_that_names_it() {
        let err = Config::parse("[output]\ndirr = \"x\"\n", Path::new("lookout.toml")).unwrap_err().to_string();
        assert!(err.contains("lookout.toml") && err.contains("dirr") && err.contains("line 2"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let e = Config::parse("[[query]]\ntext = \"x\"\nmin_frames = 4\nwindow = 3\n", Path::new("c.toml"));
        assert!(e.unwrap_err().to_string().contains("min_frames 4"));
        assert!(Config::parse("[[query]]\ntext = \" \"\n", Path::new("c.toml")).is_err());
        let e = Config::parse("[[query]]\ntext = \"x\"\ncooldown_s = -1.0\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("\"x\": cooldown_s -1"), "{e}");
        let e = Config::parse("[[query]]\ntext = \"x\"\nend_after_s = nan\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("end_after_s NaN"), "{e}");
    }

    #[test]
    fn event_times_default_per_query_and_can_be_set() {
        let c = Config::parse(
            "[[query]]\ntext = \"a\"\n[[query]]\ntext = \"b\"\nend_after_s = 1.5\npost_roll_s = 0\npre_roll_s = 2\ncooldown_s = 30\nupdate_interval_s = 0\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let q = c.standing_queries();
        assert_eq!(
            (q[0].end_after_s, q[0].post_roll_s, q[0].pre_roll_s, q[0].cooldown_s, q[0].update_interval_s),
            (
                DEFAULT_END_AFTER_S,
                DEFAULT_POST_ROLL_S,
                DEFAULT_PRE_ROLL_S,
                DEFAULT_COOLDOWN_S,
                DEFAULT_UPDATE_INTERVAL_S
            )
        );
        assert_eq!(
            (q[1].end_after_s, q[1].post_roll_s, q[1].pre_roll_s, q[1].cooldown_s, q[1].update_interval_s),
            (1.5, 0.0, 2.0, 30.0, 0.0)
        );
        let from_cli = StandingQuery::from_text("a", None);
        assert_eq!(from_cli, q[0]);
        // The model's defaults replace only what was not given.
        let dino = |q: &StandingQuery| q.clone().with_model_defaults(Some(0.4), Some(0.3));
        assert_eq!((dino(&q[0]).threshold, dino(&q[0]).text_threshold), (0.4, Some(0.3)));
        assert_eq!(dino(&StandingQuery::from_text("a", Some(0.3))).threshold, 0.3);
        let with_text = Config::parse("[[query]]\ntext = \"x\"\ntext_threshold = 0.5\n", Path::new("c.toml"))
            .unwrap()
            .standing_queries();
        assert_eq!(dino(&with_text[0]).text_threshold, Some(0.5));
        assert!(Config::parse("[[query]]\ntext = \"x\"\ntext_threshold = 1.5\n", Path::new("c.toml")).is_err());
        assert!(Config::parse("[[query]]\ntext = \"x\"\ncooldown = 3\n", Path::new("c.toml")).is_err());
    }

    #[test]
    fn verification_keys_default_and_are_checked() {
        let c = Config::parse(
            "[verify]\nmodel = \"m\"\nframes = 4\n[[query]]\ntext = \"a\"\nverify = \"a falling\"\n[[query]]\ntext = \"b\"\nverify = \"b\"\ncontrast = [\"c\"]\nverify_threshold = 0.7\nalert_on = \"verified\"\n[[query]]\ntext = \"c\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!((c.verify.frames, c.verify.seconds, c.verify.verifier), (Some(4), None, None));
        let c2 = Config::parse("[verify]\nverifier = \"clip\"\n", Path::new("c.toml")).unwrap();
        assert_eq!(c2.verify.verifier, Some(VerifierKind::Clip));
        assert_eq!(VerifierKind::Clip.default_model(), Some("clip-vit-base-patch32"));
        assert_eq!(VerifierKind::parse("xclip"), Some(VerifierKind::Xclip));
        let q = c.standing_queries();
        let v = q[0].verify.as_ref().unwrap();
        assert_eq!(v.prompts()[0], "a falling");
        assert_eq!(v.contrast.len(), crate::infer::verify::DEFAULT_CONTRAST.len());
        assert_eq!((v.threshold, v.alert_on), (0.5, AlertOn::Start));
        let v = q[1].verify.as_ref().unwrap();
        assert_eq!((v.prompts(), v.threshold, v.alert_on), (vec!["b".to_string(), "c".into()], 0.7, AlertOn::Verified));
        assert!(q[2].verify.is_none());
        for (text, expect) in [
            ("[[query]]\ntext = \"x\"\nverify = \"y\"\ncontrast = []\n", "contrast is an empty list"),
            (
                "[[query]]\ntext = \"x\"\nverify = \"y\"\nverify_threshold = -0.1\n",
                "verify_threshold -0.1 is outside 0..1",
            ),
            ("[[query]]\ntext = \"x\"\ncontrast = [\"z\"]\n", "need verify"),
            ("[[query]]\ntext = \"x\"\nverify = \"y\"\nalert_on = \"later\"\n", "later"),
            ("[verify]\nseconds = 0\n", "[verify] seconds = 0"),
            ("[verify]\nmodle = \"m\"\n", "modle"),
            ("[verify]\nverifier = \"vit\"\n", "vit"),
        ] {
            let e = Config::parse(text, Path::new("c.toml")).unwrap_err().to_string();
            assert!(e.contains(expect) && !e.contains('\n'), "{text}: {e}");
        }
    }
}
