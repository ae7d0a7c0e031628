//! Alerts: each event sent on to an MQTT broker and to webhooks, without losing one.
//!
//! `events.jsonl` is written first and stays the source of truth; the [`Alerter`] then hands the same JSON to
//! every destination. It never blocks the caller on the network: each destination has a bounded queue and a
//! named worker thread (`alert-mqtt`, `alert-webhook-<n>`), and an alert that does not fit in the queue goes
//! straight to that destination's spool on disk.
//!
//! # No alert is lost
//!
//! While a destination is down (for MQTT: until the broker's CONNACK, so a connection being made counts as down),
//! its alerts wait in its [`spool`] (one directory per destination, bounded, crash safe). When it is back they
//! are delivered first, in the order they were made, with `"delivered_late": true` added to each event. An entry leaves the spool only once the destination confirmed it (MQTT PUBACK, HTTP
//! 2xx), so an alert may arrive twice (MQTT QoS 1 is at least once) but is never dropped. On shutdown the
//! workers deliver what they can until a deadline, and what is left stays in the spool for the next start. An
//! exit that cannot wait (a second Ctrl-C) first writes what is still in memory or in flight to the spool
//! ([`Alerter::keeper`]).
//! What is refused for good (an HTTP 4xx) is kept in the spool's `rejected/` directory instead of retried.
//!
//! # Configuration
//!
//! `[alerts.mqtt]`, `[[alerts.webhooks]]` and `[alerts.spool]` in the TOML config, with `--mqtt` and `--webhook`
//! on the command line: see [`config`] for every key, its default, and where the MQTT password goes.
//!
//! # MQTT
//!
//! Topics, with the default prefix `lookout` (see [`MqttSettings`]), as Frigate users know them
//! (`frigate/available`, `frigate/events`):
//!
//! | topic | payload | retained |
//! |---|---|---|
//! | `lookout/available` | `online` on connect; `offline` on shutdown and as the last will | yes |
//! | `lookout/<source>/events` | one event, the same JSON object as a line of `events.jsonl` | no |
//! | `lookout/<source>/snapshot` | the event's snapshot, JPEG bytes | yes (configurable) |
//!
//! Everything is published with QoS 1. `<source>` is the source's name with `/`, `+` and `#` replaced by `_`.
//! With several lookout devices on one broker, give each its own `topic_prefix` (or at least its own
//! `client_id`, which defaults to `lookout-<hostname>`).
//!
//! Home Assistant (MQTT integration, `configuration.yaml`):
//!
//! ```yaml
//! mqtt:
//!   binary_sensor:
//!     - name: "Gate: person snatching a chain"
//!       state_topic: "lookout/gate/events"
//!       availability_topic: "lookout/available"     # payloads online/offline are Home Assistant's defaults
//!       value_template: "{{ 'ON' if value_json.type != 'end' else 'OFF' }}"
//!       json_attributes_topic: "lookout/gate/events"
//!       device_class: motion
//!   camera:
//!     - name: "Gate snapshot"
//!       topic: "lookout/gate/snapshot"
//!       availability_topic: "lookout/available"
//! ```
//!
//! and an automation can trigger on `platform: mqtt`, `topic: lookout/+/events`, with a condition on
//! `trigger.payload_json.type == 'start'`. An event delivered from the spool carries `delivered_late: true`;
//! automations that should only act on fresh news can test for it.
//!
//! # Webhooks
//!
//! Each event is POSTed as `application/json` to each URL, one at a time and in order. A 2xx is a delivery;
//! connection errors, timeouts, 408, 425, 429 and 5xx are retried with exponential backoff (honouring
//! `Retry-After`), the alert waiting in the spool meanwhile; any other status is a refusal. See
//! [`WebhookSettings`].

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

pub mod config;
pub mod mqtt;
mod queue;
pub mod spool;
pub mod webhook;

pub use config::{AlertsConfig, AlertsConfigError};
pub use mqtt::MqttSettings;
pub use spool::{SpoolError, SpoolSettings};
pub use webhook::WebhookSettings;

use queue::{Outbox, Shared, lock};

/// Default [`AlertSettings::queue_capacity`].
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;
/// Default [`AlertSettings::shutdown_timeout_ms`].
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 5_000;

/// What an alert carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    /// An event's JSON object.
    Event,
    /// An event's snapshot, a JPEG (MQTT only).
    Snapshot,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Event => "event",
            AlertKind::Snapshot => "snapshot",
        }
    }
}

/// What the user sets for alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// The MQTT broker. Default: none.
    pub mqtt: Option<MqttSettings>,
    /// Webhook URLs. Default: none.
    pub webhooks: Vec<WebhookSettings>,
    /// Where alerts wait while a destination is down.
    pub spool: SpoolSettings,
    /// Alerts held in memory for each destination, in its channel and again in its worker, before they go to
    /// the spool. Default [`DEFAULT_QUEUE_CAPACITY`].
    pub queue_capacity: usize,
    /// How long dropping an [`Alerter`] without [`Alerter::shutdown`] waits for deliveries, in ms.
    /// Default [`DEFAULT_SHUTDOWN_TIMEOUT_MS`].
    pub shutdown_timeout_ms: u64,
}

impl AlertSettings {
    /// Checks what [`Alerter::start`] checks (URLs, TLS files, ranges) without starting anything or touching the
    /// spool, so that a mistake is reported before a model loads.
    pub fn check(&self) -> Result<(), AlertError> {
        if let Some(m) = &self.mqtt {
            mqtt::Prepared::new(m)?;
        }
        for w in &self.webhooks {
            webhook::Prepared::new(w)?;
        }
        Ok(())
    }

    /// No destination, the spool at `spool_dir`, every other setting at its default.
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        AlertSettings {
            mqtt: None,
            webhooks: Vec::new(),
            spool: SpoolSettings::new(spool_dir),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            shutdown_timeout_ms: DEFAULT_SHUTDOWN_TIMEOUT_MS,
        }
    }
}

/// Errors found when the alerter starts: settings that cannot work. A destination that is down is not an
/// error (it is logged, and its alerts are spooled).
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The broker URL cannot be used.
    #[error("bad MQTT broker URL {url}: {message}; use mqtt://HOST:PORT or mqtts://HOST:PORT")]
    BrokerUrl { url: String, message: String },
    /// A webhook URL cannot be used.
    #[error("bad webhook URL {url}: {message}; use http://HOST[:PORT]/PATH or https://...")]
    WebhookUrl { url: String, message: String },
    /// A setting is out of range.
    #[error("alert settings for {destination}: {message}")]
    Settings { destination: String, message: String },
    /// The TLS settings of the broker cannot be used.
    #[error("TLS for MQTT broker {broker}: {message}")]
    Tls { broker: String, message: String },
    /// A spool directory cannot be used.
    #[error("alerts for {destination}: {error}; check that the directory is writable, or set the spool directory")]
    Spool { destination: String, error: SpoolError },
    /// A worker thread could not be started.
    #[error("cannot start the alert worker for {destination}: {error}")]
    Thread { destination: String, error: std::io::Error },
}

/// Counters of one destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationStats {
    /// The broker or URL, with any password removed.
    pub destination: String,
    /// Alerts handed over by the caller.
    pub offered: u64,
    /// Alerts the destination confirmed (PUBACK, 2xx), counting duplicates after a reconnect.
    pub delivered: u64,
    /// Of those, alerts that came from the spool.
    pub delivered_late: u64,
    /// Alerts written to the spool.
    pub spooled: u64,
    /// Alerts that could not be spooled (spool full or unwritable); they remain in `events.jsonl`.
    pub dropped: u64,
    /// Alerts the destination refused for good, kept in the spool's `rejected/`.
    pub rejected: u64,
    /// Failed attempts: lost connections, refused connections, HTTP errors, timeouts.
    pub failures: u64,
    /// Entries in the spool now.
    pub spool_entries: u64,
    /// Bytes in the spool now.
    pub spool_bytes: u64,
    /// Whether the MQTT connection is up, or the last webhook attempt succeeded.
    pub connected: bool,
}

/// Counters of every destination, MQTT first, then the webhooks in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertStats {
    pub destinations: Vec<DestinationStats>,
}

impl AlertStats {
    /// Alerts left in the spools.
    pub fn spooled_now(&self) -> u64 {
        self.destinations.iter().map(|d| d.spool_entries).sum()
    }
}

/// One destination: its queue and its worker.
#[derive(Debug)]
struct Destination {
    shared: Arc<Shared>,
    takes_snapshots: bool,
    thread_name: String,
    worker: Option<JoinHandle<()>>,
}

/// Sends events to MQTT and webhooks, spooling what cannot go now. See the [module documentation](self).
///
/// Shared by reference between the threads that make events ([`Alerter::send`] takes `&self`). Shut it down
/// with [`Alerter::shutdown`]; dropping it does the same with [`AlertSettings::shutdown_timeout_ms`].
#[derive(Debug)]
pub struct Alerter {
    destinations: Vec<Destination>,
    drop_timeout: Duration,
}

impl Alerter {
    /// Checks the settings, opens the spools (alerts left by an earlier run are delivered first) and starts one
    /// worker thread per destination. Does not wait for any destination: a broker that is down is reported by
    /// its worker, not here.
    pub fn start(settings: &AlertSettings) -> Result<Alerter, AlertError> {
        let mut planned = Vec::new();
        if let Some(m) = &settings.mqtt {
            let prepared = mqtt::Prepared::new(m)?;
            planned.push(Planned {
                name: prepared.name(),
                dir: settings.spool.dir.join(mqtt::SPOOL_SUBDIR),
                takes_snapshots: m.snapshots,
                thread_name: "alert-mqtt".to_string(),
                worker: Worker::Mqtt(Box::new(prepared)),
            });
        }
        for (i, w) in settings.webhooks.iter().enumerate() {
            let prepared = webhook::Prepared::new(w)?;
            planned.push(Planned {
                name: prepared.name(),
                dir: settings.spool.dir.join(prepared.spool_subdir()),
                takes_snapshots: false,
                thread_name: format!("alert-webhook-{i}"),
                worker: Worker::Webhook(Box::new(prepared)),
            });
        }
        warn_about_orphan_spools(&settings.spool.dir, planned.iter().map(|p| &p.dir));

        let drop_timeout = Duration::from_millis(settings.shutdown_timeout_ms);
        let mut alerter = Alerter { destinations: Vec::new(), drop_timeout };
        for Planned { name, dir, takes_snapshots, thread_name, worker } in planned {
            let spool = spool::Spool::open(&dir, &settings.spool)
                .map_err(|error| AlertError::Spool { destination: name.clone(), error })?;
            if !spool.is_empty() {
                info!(
                    "alerts for {name}: {} alerts ({} bytes) from an earlier run wait in {}; they are delivered \
                     first, marked delivered_late",
                    spool.len(),
                    spool.bytes(),
                    dir.display()
                );
            }
            // For a person (and the orphan warning) to know whose alerts these are.
            let _ = std::fs::write(dir.join("destination.txt"), format!("{name}\n"));
            let (shared, rx) = Shared::new(name.clone(), spool, settings.queue_capacity);
            let outbox = Outbox::new(shared.clone(), rx);
            let spawned = std::thread::Builder::new().name(thread_name.clone()).spawn(move || match worker {
                Worker::Mqtt(p) => mqtt::run(*p, outbox),
                Worker::Webhook(p) => webhook::run(*p, outbox),
            });
            // On an error, dropping `alerter` stops the workers already started.
            let handle = spawned.map_err(|error| AlertError::Thread { destination: name.clone(), error })?;
            info!("alerts: sending to {name} (spool {})", dir.display());
            alerter.destinations.push(Destination { shared, takes_snapshots, thread_name, worker: Some(handle) });
        }
        Ok(alerter)
    }

    /// Whether there is any destination at all.
    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty()
    }

    /// Sends one event (one JSON object, as written to `events.jsonl`; a trailing newline is ignored) from the
    /// source named `source`, and optionally its snapshot (JPEG) to the destinations that take snapshots.
    ///
    /// Returns at once: the alert is queued, or, when the queue is full, written to the spool. Failures are
    /// logged and counted in [`Alerter::stats`], never returned: the event is already in `events.jsonl`.
    pub fn send(&self, source: &str, event_json: &[u8], snapshot_jpeg: Option<&[u8]>) {
        if self.destinations.is_empty() {
            return;
        }
        let source: Arc<str> = Arc::from(source);
        let event: Arc<[u8]> = Arc::from(event_json.trim_ascii());
        let snapshot: Option<Arc<[u8]>> = snapshot_jpeg.map(Arc::from);
        for d in &self.destinations {
            d.shared.offer(&source, AlertKind::Event, &event);
            if d.takes_snapshots
                && let Some(s) = &snapshot
            {
                d.shared.offer(&source, AlertKind::Snapshot, s);
            }
        }
    }

    /// Sends a snapshot (JPEG) on its own, for when it is written after its event (the peak frame is known only
    /// later). It goes only to the destinations that take snapshots, in order with the events.
    pub fn send_snapshot(&self, source: &str, jpeg: &[u8]) {
        let source: Arc<str> = Arc::from(source);
        let jpeg: Arc<[u8]> = Arc::from(jpeg);
        for d in self.destinations.iter().filter(|d| d.takes_snapshots) {
            d.shared.offer(&source, AlertKind::Snapshot, &jpeg);
        }
    }

    /// [`Alerter::send`] for an event that is a JSON value.
    pub fn send_value(&self, source: &str, event: &serde_json::Value, snapshot_jpeg: Option<&[u8]>) {
        if self.destinations.is_empty() {
            return;
        }
        // Serialising a `Value` into memory does not fail.
        let json = serde_json::to_vec(event).unwrap_or_default();
        self.send(source, &json, snapshot_jpeg);
    }

    /// Alerts in the destinations' queues and in flight, not yet confirmed (those in the spools aside).
    pub fn unsent(&self) -> usize {
        self.destinations.iter().map(|d| d.shared.unsent()).sum()
    }

    /// What an exit that cannot wait for the destinations (a second Ctrl-C) calls first: it writes every alert
    /// not yet confirmed to its destination's spool, so the next start delivers it (flagged `delivered_late`),
    /// and returns how many. It holds the queues weakly: once the alerter is gone it does nothing.
    pub fn keeper(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let queues: Vec<std::sync::Weak<Shared>> =
            self.destinations.iter().map(|d| Arc::downgrade(&d.shared)).collect();
        move || queues.iter().filter_map(std::sync::Weak::upgrade).map(|q| q.keep_unsent()).sum()
    }

    /// A counter of the alerts still waiting (queued, in flight or in a spool), for reporting while a stop
    /// drains. It holds the queues weakly: once the alerter is gone it gives 0.
    pub fn waiting_counter(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let queues: Vec<std::sync::Weak<Shared>> =
            self.destinations.iter().map(|d| Arc::downgrade(&d.shared)).collect();
        move || {
            queues
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .map(|q| q.unsent() as u64 + lock(&q.stats).spool_entries)
                .sum()
        }
    }

    /// Counters of every destination, now.
    pub fn stats(&self) -> AlertStats {
        AlertStats { destinations: self.destinations.iter().map(|d| lock(&d.shared.stats).clone()).collect() }
    }

    /// Delivers what can be delivered within `timeout`, leaves the rest in the spools for the next start,
    /// publishes `offline` to MQTT, and joins the workers. Takes at most `timeout` plus about a second.
    ///
    /// Alerts sent from other threads after this has begun go to the spools.
    pub fn shutdown(mut self, timeout: Duration) -> AlertStats {
        self.stop(timeout)
    }

    fn stop(&mut self, timeout: Duration) -> AlertStats {
        let deadline = Instant::now() + timeout;
        for d in &self.destinations {
            d.shared.close(deadline);
        }
        for d in &mut self.destinations {
            let Some(handle) = d.worker.take() else { continue };
            if let Err(panic) = handle.join() {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                error!(
                    "alert worker {} ({}) panicked: {msg}; alerts not delivered stay in {}",
                    d.thread_name,
                    d.shared.name,
                    lock(&d.shared.spool).dir().display()
                );
            }
        }
        let stats = self.stats();
        for (d, s) in self.destinations.iter().zip(&stats.destinations) {
            let left = if s.spool_entries > 0 {
                format!("; {} left in {} for the next start", s.spool_entries, lock(&d.shared.spool).dir().display())
            } else {
                String::new()
            };
            let msg = format!(
                "alerts for {}: {} delivered ({} late), {} refused, {} dropped{left}",
                s.destination, s.delivered, s.delivered_late, s.rejected, s.dropped
            );
            if s.spool_entries > 0 || s.dropped > 0 { warn!("{msg}") } else { info!("{msg}") }
        }
        stats
    }
}

impl Drop for Alerter {
    fn drop(&mut self) {
        if self.destinations.iter().any(|d| d.worker.is_some()) {
            self.stop(self.drop_timeout);
        }
    }
}

/// A destination's checked settings, before its worker starts.
enum Worker {
    Mqtt(Box<mqtt::Prepared>),
    Webhook(Box<webhook::Prepared>),
}

struct Planned {
    name: String,
    dir: PathBuf,
    takes_snapshots: bool,
    thread_name: String,
    worker: Worker,
}

/// Spool directories that no configured destination uses hold alerts nobody will deliver: say so.
fn warn_about_orphan_spools<'a>(root: &std::path::Path, used: impl Iterator<Item = &'a PathBuf>) {
    let used: Vec<&PathBuf> = used.collect();
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if !path.is_dir() || used.contains(&&path) {
            continue;
        }
        let waiting = std::fs::read_dir(&path)
            .map(|d| d.flatten().filter(|f| f.path().extension().is_some_and(|x| x == "alert")).count())
            .unwrap_or(0);
        if waiting > 0 {
            let dest = std::fs::read_to_string(path.join("destination.txt")).unwrap_or_default();
            warn!(
                "alert spool {} holds {waiting} undelivered alerts for {}, which is no longer configured; \
                 configure it again to deliver them, or delete the directory",
                path.display(),
                dest.trim()
            );
        }
    }
}

/// `name` as one MQTT topic level: `/`, `+`, `#` and control characters become `_`, and a leading `$` (reserved
/// for the broker) too.
pub fn topic_level(name: &str) -> String {
    let mut s: String =
        name.chars().map(|c| if matches!(c, '/' | '+' | '#') || c.is_control() { '_' } else { c }).collect();
    if s.starts_with('$') {
        s.replace_range(..1, "_");
    }
    if s.is_empty() { "_".to_string() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alerter_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Alerter>();
    }

    #[test]
    fn without_destinations_nothing_happens() {
        let tmp = tempfile::tempdir().unwrap();
        let alerter = Alerter::start(&AlertSettings::new(tmp.path().join("spool"))).unwrap();
        assert!(alerter.is_empty());
        alerter.send("gate", b"{}", Some(b"jpeg"));
        assert_eq!(alerter.shutdown(Duration::ZERO), AlertStats::default());
    }

    #[test]
    fn settings_are_checked_without_starting() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = AlertSettings::new(tmp.path().join("spool"));
        s.mqtt = Some(MqttSettings::new("mqtt://u:hunter2@broker:99999"));
        let e = s.check().unwrap_err().to_string();
        assert!(e.contains("99999") && !e.contains("hunter2"), "{e}");
        s.mqtt = Some(MqttSettings::new("mqtt://broker"));
        s.webhooks.push(WebhookSettings::new("ftp://x/y"));
        assert!(s.check().unwrap_err().to_string().contains("ftp"));
        s.webhooks[0] = WebhookSettings::new("http://127.0.0.1:9/hook");
        s.check().unwrap();
        assert!(!tmp.path().join("spool").exists(), "nothing is created");
    }

    #[test]
    fn source_names_become_single_topic_levels() {
        assert_eq!(topic_level("gate"), "gate");
        assert_eq!(topic_level("yard/north"), "yard_north");
        assert_eq!(topic_level("a+b#c"), "a_b_c");
        assert_eq!(topic_level("$SYS"), "_SYS");
        assert_eq!(topic_level(""), "_");
    }
}
