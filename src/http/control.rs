//! What the watch loop publishes for the control plane, and what the control plane hands back (the queries).
//!
//! [`Control`] is shared as `Arc<Control>` between the watch threads and the HTTP server. The frame path only
//! ever does atomic operations on it, or takes a lock that the server holds for a copy:
//! - the infer thread: [`Control::query_version`] (one atomic load per round), [`Control::queries`] when the
//!   version moved, [`SourceEntry::inferred`] and [`Control::observe_inference`] per frame;
//! - each post thread: [`SourceEntry::wants_frame`] (atomics) and, only while a client watches,
//!   [`SourceEntry::publish`] (a copy of the annotated frame, at most [`PUBLISH_EVERY`]).
//!
//! Lock order: `sources` (read) before a source's `latest`; `current` is never held with another lock.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::picture::Picture;
use crate::sink::EventLog;
use crate::sink::alerts::AlertStats;
use crate::source::SourceStats;

use super::table::{ActiveQueries, Change, QuerySettings};

/// A source's annotated frame is copied for the server at most this often.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// A source's frames are copied for this long after a client last asked for one (the copy costs the post
/// thread a memcpy of a full frame; nobody watching costs nothing).
pub const WANTED_FOR: Duration = Duration::from_secs(5);

/// One source as the control plane sees it.
#[derive(Debug)]
pub struct SourceEntry {
    /// Short name: in URLs, paths and metrics.
    pub name: String,
    /// Display name, password removed.
    pub display: String,
    /// A camera or stream (drops frames when behind) rather than a file (blocks).
    pub live: bool,
    /// The source's own counters.
    pub stats: Arc<SourceStats>,
    /// Frames run through the model.
    pub inferred: AtomicU64,
    /// Frames through the post stage (tracked, events decided).
    pub processed: AtomicU64,
    /// Frames per second in (decoded) and out (inferred), as f64 bits, sampled every second by the server.
    pub fps_in: AtomicU64,
    pub fps_out: AtomicU64,
    /// Milliseconds since [`Control::started`] until which frames are wanted (0: never asked).
    wanted_until_ms: AtomicU64,
    /// Milliseconds since [`Control::started`] of the last published frame.
    published_ms: AtomicU64,
    latest: Mutex<Option<Arc<LatestFrame>>>,
    started: Instant,
}

/// The latest annotated frame of a source.
#[derive(Debug)]
pub struct LatestFrame {
    /// Counts up with every published frame of the source (1 for the first).
    pub seq: u64,
    /// The source's frame index.
    pub frame: u64,
    pub picture: Picture,
}

impl SourceEntry {
    pub fn new(name: &str, display: &str, live: bool, stats: Arc<SourceStats>, started: Instant) -> Self {
        SourceEntry {
            name: name.to_string(),
            display: crate::redact::redact_url(display),
            live,
            stats,
            inferred: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            fps_in: AtomicU64::new(0f64.to_bits()),
            fps_out: AtomicU64::new(0f64.to_bits()),
            wanted_until_ms: AtomicU64::new(0),
            published_ms: AtomicU64::new(0),
            latest: Mutex::new(None),
            started,
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Called by the server when a client asks for frames: the post thread publishes for [`WANTED_FOR`].
    pub fn want_frames(&self) {
        self.wanted_until_ms.store(self.now_ms() + WANTED_FOR.as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether the post thread should draw and publish this frame: a client asked lately, and the last
    /// published frame is at least [`PUBLISH_EVERY`] old (or there is none).
    pub fn wants_frame(&self) -> bool {
        let now = self.now_ms();
        let latest = self.published_ms.load(Ordering::Relaxed);
        let none_yet = latest == 0 && self.latest.lock().map(|l| l.is_none()).unwrap_or(true);
        // The first frame is always taken, so that a page opened later has a picture at once.
        none_yet
            || (now < self.wanted_until_ms.load(Ordering::Relaxed) && now >= latest + PUBLISH_EVERY.as_millis() as u64)
    }

    /// Publishes a copy of `picture` (the annotated frame `frame`).
    pub fn publish(&self, frame: u64, picture: &Picture) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let seq = latest.as_ref().map_or(1, |l| l.seq + 1);
        *latest = Some(Arc::new(LatestFrame { seq, frame, picture: picture.clone() }));
        self.published_ms.store(self.now_ms().max(1), Ordering::Relaxed);
    }

    /// The latest published frame, if any.
    pub fn latest(&self) -> Option<Arc<LatestFrame>> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn fps(&self) -> (f64, f64) {
        (f64::from_bits(self.fps_in.load(Ordering::Relaxed)), f64::from_bits(self.fps_out.load(Ordering::Relaxed)))
    }
}

/// The state shared by the watch loop and the HTTP server. See the module documentation.
pub struct Control {
    pub started: Instant,
    /// The model's name (a label of every metric).
    pub model: String,
    /// Where the image graph runs (a label of every metric).
    pub device: String,
    pub out_dir: PathBuf,
    pub read_only: bool,
    model_loaded: AtomicBool,
    /// The run's queries and sources are in place: query changes are taken from then on (see
    /// [`Control::open_changes`]).
    changes_open: AtomicBool,
    sources: RwLock<Vec<Arc<SourceEntry>>>,
    /// Inference latency per batch, in seconds.
    pub inference_seconds: prometheus::Histogram,
    pub(super) version: AtomicU64,
    pub(super) current: Mutex<Arc<ActiveQueries>>,
    pub(super) event_log: Mutex<Option<Arc<Mutex<EventLog>>>>,
    pub(super) alerts: Mutex<Option<Box<dyn Fn() -> AlertStats + Send + Sync>>>,
    /// Query changes for the encoder thread, which the server starts.
    pub(super) changes: Mutex<Option<crossbeam_channel::Sender<Change>>>,
    pub(super) query_settings: QuerySettings,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("model", &self.model).field("out_dir", &self.out_dir).finish()
    }
}

impl Control {
    /// The shared state of a run into `out_dir` with `model` on `device`; `query_settings` says how queries
    /// added over the API get their defaults and their encoder.
    pub fn new(model: &str, device: &str, out_dir: &Path, read_only: bool, query_settings: QuerySettings) -> Arc<Self> {
        let inference_seconds = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("lookout_inference_seconds", "Time of one inference batch")
                .const_label("model", model)
                .const_label("device", device)
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("valid histogram options");
        Arc::new(Control {
            started: Instant::now(),
            model: model.to_string(),
            device: device.to_string(),
            out_dir: out_dir.to_path_buf(),
            read_only,
            model_loaded: AtomicBool::new(false),
            changes_open: AtomicBool::new(false),
            sources: RwLock::new(Vec::new()),
            inference_seconds,
            version: AtomicU64::new(0),
            current: Mutex::new(Arc::new(ActiveQueries::empty())),
            event_log: Mutex::new(None),
            alerts: Mutex::new(None),
            changes: Mutex::new(None),
            query_settings,
        })
    }

    /// Marks the model as loaded (for `/readyz`).
    pub fn model_loaded(&self) {
        self.model_loaded.store(true, Ordering::Relaxed);
    }

    /// The run's queries ([`Control::begin_queries`]) and sources are in place: query changes are taken from now
    /// on. Before, a change would be applied to a table the start then replaces, and lost; it gets a 503.
    pub fn open_changes(&self) {
        self.changes_open.store(true, Ordering::Release);
    }

    /// Whether query changes are taken ([`Control::open_changes`]).
    pub fn changes_open(&self) -> bool {
        self.changes_open.load(Ordering::Acquire)
    }

    /// Ready: the model is loaded and every source delivered a frame.
    pub fn is_ready(&self) -> (bool, Vec<String>) {
        let mut waiting = Vec::new();
        if !self.model_loaded.load(Ordering::Relaxed) {
            waiting.push("model".to_string());
        }
        let sources = self.sources();
        if sources.is_empty() {
            waiting.push("sources".to_string());
        }
        for s in &sources {
            if s.stats.snapshot().frames_delivered == 0 {
                waiting.push(format!("source {}", s.name));
            }
        }
        (waiting.is_empty(), waiting)
    }

    /// Registers a running source (the watch loop, once it started).
    pub fn add_source(&self, entry: SourceEntry) -> Arc<SourceEntry> {
        let entry = Arc::new(entry);
        self.sources.write().unwrap_or_else(|e| e.into_inner()).push(entry.clone());
        entry
    }

    pub fn sources(&self) -> Vec<Arc<SourceEntry>> {
        self.sources.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn source(&self, name: &str) -> Option<Arc<SourceEntry>> {
        self.sources().into_iter().find(|s| s.name == name)
    }

    /// The event log the `queries` lines go to.
    pub fn set_event_log(&self, log: Arc<Mutex<EventLog>>) {
        *self.event_log.lock().unwrap_or_else(|e| e.into_inner()) = Some(log);
    }

    /// Where `/metrics` reads the alerts' counters.
    pub fn set_alert_stats(&self, stats: Box<dyn Fn() -> AlertStats + Send + Sync>) {
        *self.alerts.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
    }

    /// Forgets the alerts' counters (the end of the run); waits for a scrape that is reading them.
    pub fn clear_alert_stats(&self) {
        self.alerts.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    pub(super) fn alert_stats(&self) -> Option<AlertStats> {
        self.alerts.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|f| f())
    }

    /// Counts up with every change of the queries; one atomic load (the infer thread, every round).
    pub fn query_version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The queries now in force.
    pub fn queries(&self) -> Arc<ActiveQueries> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records one inference batch's duration.
    pub fn observe_inference(&self, d: Duration) {
        self.inference_seconds.observe(d.as_secs_f64());
    }
}
