//! The MQTT destination: rumqttc's synchronous client, driven by one worker thread (`alert-mqtt`).
//!
//! # States of the worker
//!
//! | state | session | what it does | leaves for |
//! |---|---|---|---|
//! | down | `None` | spools arriving alerts; waits out the backoff | connecting |
//! | connecting | `connected_at: None` | waits for CONNACK (`connect_timeout_s` + 1 s); at CONNACK, what came meanwhile goes to the spool | up; down on error |
//! | up | `connected_at: Some` | publishes `online`, then the oldest alerts (`max_inflight` unacked) | down on error |
//!
//! Going down starts the backoff (`reconnect_initial_ms`, doubling up to `reconnect_max_ms`); it starts again
//! from the beginning only after a connection that held for 10 s, so a broker that accepts and then drops
//! every connection is not hammered.
//!
//! Every connection is a fresh `Client`/`Connection` pair with a clean session. rumqttc keeps unacknowledged
//! publishes across reconnects only when the broker still has the session, and drops them otherwise (a broker
//! restarted without persistence); so the worker never relies on that. It keeps its own list of what is in
//! flight, matched to packet ids through the `Outgoing::Publish(pkid)` events (which come in the order the
//! publishes were handed over) and the `PubAck`s. When a connection ends, whatever was not acknowledged goes to
//! the spool and is sent again, first, on the next connection: at least once, in order.
//!
//! The connection is polled with `recv_timeout` so that the worker also serves its queue. A poll cut short by
//! the timeout can, in a corner case (a socket too slow to take a large snapshot), drop a publish inside
//! rumqttc; `ack_timeout_ms` catches that, like a dead connection, by reconnecting and sending again.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::tokio_rustls::rustls::pki_types::pem::PemObject;
use rumqttc::tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rumqttc::tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use rumqttc::{
    Client, ConnectReturnCode, Connection, ConnectionError, Event, LastWill, MqttOptions, NetworkOptions, Outgoing,
    Packet, QoS, RecvTimeoutError, TlsConfiguration, Transport,
};
use tracing::{debug, info, warn};

use super::queue::{Backoff, Delivery, Outbox};
use super::{AlertError, AlertKind, topic_level};

/// Port of `mqtt://` when the URL has none.
pub const DEFAULT_MQTT_PORT: u16 = 1883;
/// Port of `mqtts://` when the URL has none.
pub const DEFAULT_MQTTS_PORT: u16 = 8883;
/// Default [`MqttSettings::topic_prefix`].
pub const DEFAULT_TOPIC_PREFIX: &str = "lookout";
/// The default client id is this, a dash and the host name.
pub const DEFAULT_CLIENT_ID_PREFIX: &str = "lookout";
/// Default [`MqttSettings::keep_alive_s`].
pub const DEFAULT_KEEP_ALIVE_S: u64 = 30;
/// Default [`MqttSettings::connect_timeout_s`].
pub const DEFAULT_CONNECT_TIMEOUT_S: u64 = 5;
/// Default [`MqttSettings::reconnect_initial_ms`].
pub const DEFAULT_RECONNECT_INITIAL_MS: u64 = 500;
/// Default [`MqttSettings::reconnect_max_ms`].
pub const DEFAULT_RECONNECT_MAX_MS: u64 = 30_000;
/// Default [`MqttSettings::ack_timeout_ms`].
pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 30_000;
/// Default [`MqttSettings::max_inflight`].
pub const DEFAULT_MAX_INFLIGHT: u16 = 16;
/// Default [`MqttSettings::max_packet_bytes`]: 8 MiB.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 8 << 20;
/// Default [`MqttSettings::snapshots`].
pub const DEFAULT_SNAPSHOTS: bool = true;
/// Default [`MqttSettings::retain_snapshots`].
pub const DEFAULT_RETAIN_SNAPSHOTS: bool = true;
/// Payload of the availability topic while connected (Home Assistant's default `payload_available`).
pub const AVAILABLE_ONLINE: &str = "online";
/// Payload of the availability topic after shutdown, and the last will (Home Assistant's `payload_not_available`).
pub const AVAILABLE_OFFLINE: &str = "offline";

/// Name of the MQTT spool inside the spool directory.
pub(crate) const SPOOL_SUBDIR: &str = "mqtt";
/// How often the worker looks at its queue while connected.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long shutdown waits, past its deadline, for `offline` to be acknowledged and DISCONNECT to go out.
const FINISH_GRACE: Duration = Duration::from_secs(1);
/// A connection that held this long ends an outage: the next loss is news, and retries start fast again.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Warn again about a broker that stays down at most this often.
const REWARN_INTERVAL: Duration = Duration::from_secs(60);

/// What the user sets for the MQTT broker.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttSettings {
    /// `mqtt://[USER[:PASSWORD]@]HOST[:PORT]`, or `mqtts://` for TLS. Ports default to [`DEFAULT_MQTT_PORT`]
    /// and [`DEFAULT_MQTTS_PORT`]. Required.
    pub url: String,
    /// User name; overrides one in the URL. Default: none.
    pub username: Option<String>,
    /// Password; overrides one in the URL. Never logged. Default: none.
    pub password: Option<String>,
    /// MQTT client id; it must be unique on the broker. Default `lookout-<hostname>`.
    pub client_id: Option<String>,
    /// First level of every topic. Default [`DEFAULT_TOPIC_PREFIX`].
    pub topic_prefix: String,
    /// PEM file of the CA that signed the broker's certificate (`mqtts://`). Default: the system's CAs.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that require one (with `client_key_file`). Default: none.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`. Default: none.
    pub client_key_file: Option<PathBuf>,
    /// MQTT keep-alive, in seconds (at least 1). Default [`DEFAULT_KEEP_ALIVE_S`].
    pub keep_alive_s: u64,
    /// Time allowed for TCP, TLS and CONNACK, in seconds (at least 1). Default [`DEFAULT_CONNECT_TIMEOUT_S`].
    pub connect_timeout_s: u64,
    /// First wait before reconnecting, in ms. Default [`DEFAULT_RECONNECT_INITIAL_MS`].
    pub reconnect_initial_ms: u64,
    /// Longest wait between reconnects, in ms. Default [`DEFAULT_RECONNECT_MAX_MS`].
    pub reconnect_max_ms: u64,
    /// A publish not acknowledged within this time means the connection is dead: reconnect and send again, in ms.
    /// Default [`DEFAULT_ACK_TIMEOUT_MS`].
    pub ack_timeout_ms: u64,
    /// Publishes sent but not yet acknowledged, at most. Default [`DEFAULT_MAX_INFLIGHT`].
    pub max_inflight: u16,
    /// Largest packet sent; a larger snapshot is refused (kept in `rejected/`). Default
    /// [`DEFAULT_MAX_PACKET_BYTES`].
    pub max_packet_bytes: usize,
    /// Publish snapshots to `<prefix>/<source>/snapshot`. Default [`DEFAULT_SNAPSHOTS`].
    pub snapshots: bool,
    /// Retain the last snapshot of each source, so a dashboard shows it at once. Default
    /// [`DEFAULT_RETAIN_SNAPSHOTS`].
    pub retain_snapshots: bool,
}

impl MqttSettings {
    /// The broker at `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        MqttSettings {
            url: url.into(),
            username: None,
            password: None,
            client_id: None,
            topic_prefix: DEFAULT_TOPIC_PREFIX.to_string(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            keep_alive_s: DEFAULT_KEEP_ALIVE_S,
            connect_timeout_s: DEFAULT_CONNECT_TIMEOUT_S,
            reconnect_initial_ms: DEFAULT_RECONNECT_INITIAL_MS,
            reconnect_max_ms: DEFAULT_RECONNECT_MAX_MS,
            ack_timeout_ms: DEFAULT_ACK_TIMEOUT_MS,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
            snapshots: DEFAULT_SNAPSHOTS,
            retain_snapshots: DEFAULT_RETAIN_SNAPSHOTS,
        }
    }
}

impl fmt::Debug for MqttSettings {
    // By hand, so that the password (in `password` or in the URL) never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttSettings")
            .field("url", &crate::redact::redact_url(&self.url))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("client_id", &self.client_id)
            .field("topic_prefix", &self.topic_prefix)
            .field("ca_file", &self.ca_file)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .field("keep_alive_s", &self.keep_alive_s)
            .field("connect_timeout_s", &self.connect_timeout_s)
            .field("reconnect_initial_ms", &self.reconnect_initial_ms)
            .field("reconnect_max_ms", &self.reconnect_max_ms)
            .field("ack_timeout_ms", &self.ack_timeout_ms)
            .field("max_inflight", &self.max_inflight)
            .field("max_packet_bytes", &self.max_packet_bytes)
            .field("snapshots", &self.snapshots)
            .field("retain_snapshots", &self.retain_snapshots)
            .finish()
    }
}

/// `<prefix>/available`.
pub fn availability_topic(prefix: &str) -> String {
    format!("{prefix}/available")
}

/// `<prefix>/<source>/events`.
pub fn events_topic(prefix: &str, source: &str) -> String {
    format!("{prefix}/{}/events", topic_level(source))
}

/// `<prefix>/<source>/snapshot`.
pub fn snapshot_topic(prefix: &str, source: &str) -> String {
    format!("{prefix}/{}/snapshot", topic_level(source))
}

/// `lookout-<hostname>`, or `lookout` when the host name cannot be read.
pub fn default_client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let host: String =
        host.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(48).collect();
    if host.is_empty() { DEFAULT_CLIENT_ID_PREFIX.to_string() } else { format!("{DEFAULT_CLIENT_ID_PREFIX}-{host}") }
}

/// A broker address taken from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl BrokerUrl {
    /// `mqtt://host:port`, without credentials: how logs and errors name the broker.
    pub fn display(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Parses `mqtt://[user[:pass]@]host[:port][/]` (also `tcp://`; `mqtts://` and `ssl://` for TLS).
pub(crate) fn parse_broker_url(url: &str) -> Result<BrokerUrl, String> {
    let (scheme, rest) = url.split_once("://").ok_or("it has no scheme")?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => return Err(format!("scheme {other}:// is not supported")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err("it has a path or query; a broker URL is only a host and a port".into());
    }
    let (userinfo, hostport) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("an IPv6 address lacks its closing ]")?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("it has no host".into());
    }
    let port = match port {
        None => {
            if tls {
                DEFAULT_MQTTS_PORT
            } else {
                DEFAULT_MQTT_PORT
            }
        }
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("port {p:?} is not a port"))?,
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (Some(percent_decode(user)), Some(percent_decode(pass))),
            None => (Some(percent_decode(u)), None),
        },
    };
    Ok(BrokerUrl { tls, host: host.to_string(), port, username, password })
}

/// `%XX` escapes decoded (as URL user info is written); anything malformed is kept as it is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The settings, checked, with the TLS configuration built: what the worker needs.
pub(crate) struct Prepared {
    broker: BrokerUrl,
    name: String,
    client_id: String,
    prefix: String,
    tls: Option<Arc<ClientConfig>>,
    settings: MqttSettings,
}

impl Prepared {
    pub fn new(s: &MqttSettings) -> Result<Prepared, AlertError> {
        let redacted = crate::redact::redact_url(&s.url);
        let mut broker =
            parse_broker_url(&s.url).map_err(|message| AlertError::BrokerUrl { url: redacted.clone(), message })?;
        if s.username.is_some() {
            broker.username = s.username.clone();
        }
        if s.password.is_some() {
            broker.password = s.password.clone();
        }
        if broker.password.is_some() && broker.username.is_none() {
            broker.username = Some(String::new());
        }
        let name = broker.display();
        let bad = |message: &str| AlertError::Settings { destination: name.clone(), message: message.to_string() };
        let prefix = s.topic_prefix.trim_matches('/').to_string();
        if prefix.is_empty() || prefix.contains(['+', '#']) || prefix.chars().any(char::is_control) {
            return Err(bad("topic_prefix must be a topic without wildcards (+, #), such as \"lookout\""));
        }
        if s.max_inflight == 0 {
            return Err(bad("max_inflight must be at least 1"));
        }
        if s.keep_alive_s == 0 || s.connect_timeout_s == 0 {
            return Err(bad("keep_alive_s and connect_timeout_s must be at least 1"));
        }
        let client_id = s.client_id.clone().unwrap_or_else(default_client_id);
        if client_id.is_empty() {
            return Err(bad("client_id must not be empty"));
        }
        let tls = if broker.tls {
            Some(tls_config(s, &name)?)
        } else {
            if s.ca_file.is_some() || s.client_cert_file.is_some() {
                warn!("MQTT broker {name}: ca_file and client certificates are used only with mqtts://; ignoring them");
            }
            None
        };
        Ok(Prepared { broker, name, client_id, prefix, tls, settings: s.clone() })
    }

    /// The broker as logs name it.
    pub fn name(&self) -> String {
        self.name.clone()
    }

    fn options(&self) -> MqttOptions {
        let s = &self.settings;
        let mut o = MqttOptions::new(self.client_id.clone(), self.broker.host.clone(), self.broker.port);
        o.set_keep_alive(Duration::from_secs(s.keep_alive_s))
            .set_clean_session(true)
            .set_last_will(LastWill::new(availability_topic(&self.prefix), AVAILABLE_OFFLINE, QoS::AtLeastOnce, true))
            .set_max_packet_size(64 << 10, s.max_packet_bytes)
            // Room for the alerts in flight, `online`/`offline` and DISCONNECT: handing over never has to wait.
            .set_inflight(s.max_inflight.saturating_add(2))
            .set_request_channel_capacity(usize::from(s.max_inflight) + 8);
        if let Some(user) = &self.broker.username {
            o.set_credentials(user.clone(), self.broker.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())));
        }
        o
    }
}

/// Where the system keeps its CA bundle, for `mqtts://` without `ca_file` (after `$SSL_CERT_FILE`).
const SYSTEM_CA_FILES: &[&str] =
    &["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

fn tls_config(s: &MqttSettings, broker: &str) -> Result<Arc<ClientConfig>, AlertError> {
    let tls_err = |message: String| AlertError::Tls { broker: broker.to_string(), message };
    let read_certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, AlertError> {
        CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| tls_err(format!("cannot read certificates from {}: {e}", path.display())))
    };
    let mut roots = RootCertStore::empty();
    match &s.ca_file {
        Some(ca) => {
            let certs = read_certs(ca)?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(tls_err(format!(
                    "{} holds no usable CA certificate; point ca_file at the PEM file of the CA that signed the \
                     broker's certificate",
                    ca.display()
                )));
            }
        }
        None => {
            let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
            let path = env.into_iter().chain(SYSTEM_CA_FILES.iter().map(PathBuf::from)).find(|p| p.is_file());
            let Some(path) = path else {
                return Err(tls_err(
                    "no system CA bundle found (install ca-certificates), and ca_file is not set".to_string(),
                ));
            };
            roots.add_parsable_certificates(read_certs(&path)?);
            if roots.is_empty() {
                return Err(tls_err(format!("{} holds no usable CA certificate; set ca_file", path.display())));
            }
        }
    }
    // ring is the provider already in the tree (through ureq); naming it keeps aws-lc out.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&s.client_cert_file, &s.client_key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let certs = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| tls_err(format!("cannot read a private key from {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls_err(format!("client certificate {}: {e}", cert.display())))?
        }
        _ => return Err(tls_err("set both client_cert_file and client_key_file, or neither".to_string())),
    };
    Ok(Arc::new(config))
}

/// What the broker should see next, or has not acknowledged yet.
enum Sent {
    Alert(Delivery),
    Availability,
}

struct InFlight {
    what: Sent,
    since: Instant,
}

/// One connection to the broker; `None` in the worker when it is down.
struct Session {
    client: Client,
    connection: Connection,
    /// When CONNACK came; `None` while connecting.
    connected_at: Option<Instant>,
    /// Handed to rumqttc, packet id not known yet, in the order handed over.
    unassigned: VecDeque<InFlight>,
    /// Sent, waiting for PUBACK, by packet id.
    awaiting: HashMap<u16, InFlight>,
}

impl Session {
    fn outstanding(&self) -> usize {
        self.unassigned.len() + self.awaiting.len()
    }

    fn oldest(&self) -> Option<Instant> {
        self.unassigned.iter().chain(self.awaiting.values()).map(|f| f.since).min()
    }

    /// The alerts handed over and not confirmed, oldest first.
    fn into_unconfirmed(self) -> Vec<Delivery> {
        let mut alerts: Vec<Delivery> = self
            .unassigned
            .into_iter()
            .chain(self.awaiting.into_values())
            .filter_map(|f| match f.what {
                Sent::Alert(d) => Some(d),
                Sent::Availability => None,
            })
            .collect();
        alerts.sort_by_key(|d| d.seq);
        alerts
    }

    fn availability_pending(&self) -> bool {
        self.unassigned.iter().chain(self.awaiting.values()).any(|f| matches!(f.what, Sent::Availability))
    }
}

/// The current outage, for logging it once rather than at every attempt. It lasts until a connection has held
/// for [`STABLE_AFTER`], so that a connection that keeps dropping right after CONNACK (two devices with one
/// client id take the session from each other) is one outage, with growing waits and few warnings.
struct Outage {
    since: Instant,
    attempts: u64,
    last_warned: Instant,
    /// "Connected again" was logged.
    recovered: bool,
}

struct Worker {
    p: Prepared,
    outbox: Outbox,
    backoff: Backoff,
    outage: Option<Outage>,
}

/// The worker thread's body: runs until the alerter shuts down and its deadline passes or all is delivered.
pub(crate) fn run(p: Prepared, outbox: Outbox) {
    let backoff = Backoff::new(
        Duration::from_millis(p.settings.reconnect_initial_ms),
        Duration::from_millis(p.settings.reconnect_max_ms),
    );
    let mut w = Worker { p, outbox, backoff, outage: None };
    let mut session: Option<Session> = None;
    let mut retry_at = Instant::now();
    loop {
        let deadline = w.outbox.deadline();
        if let Some(d) = deadline {
            let idle = session.as_ref().is_none_or(|s| s.outstanding() == 0) && w.outbox.is_drained();
            if idle || Instant::now() >= d {
                break;
            }
        }
        match session.as_mut() {
            None => {
                if Instant::now() < retry_at {
                    let until = deadline.map_or(retry_at, |d| d.min(retry_at));
                    w.outbox.wait(Some(until), false);
                    continue;
                }
                session = Some(w.connect());
            }
            Some(s) => {
                if let Err(why) = w.step(s, deadline) {
                    let s = session.take().expect("session is some");
                    w.lost(s, &why);
                    retry_at = Instant::now() + w.backoff.next_delay();
                }
            }
        }
    }
    w.finish(session);
}

impl Worker {
    fn connect(&mut self) -> Session {
        let (client, mut connection) = Client::new(self.p.options(), usize::from(self.p.settings.max_inflight) + 8);
        let mut net = NetworkOptions::new();
        net.set_connection_timeout(self.p.settings.connect_timeout_s);
        connection.eventloop.set_network_options(net);
        debug!("MQTT broker {}: connecting as {}", self.p.name, self.p.client_id);
        Session { client, connection, connected_at: None, unassigned: VecDeque::new(), awaiting: HashMap::new() }
    }

    /// Sends what the window allows, then waits a little for the broker. An error ends the session.
    fn step(&mut self, s: &mut Session, deadline: Option<Instant>) -> Result<(), String> {
        let timeout = if s.connected_at.is_some() {
            while s.outstanding() < usize::from(self.p.settings.max_inflight) {
                let Some(d) = self.outbox.next() else { break };
                self.publish(s, d)?;
            }
            if let Some(oldest) = s.oldest()
                && oldest.elapsed() > Duration::from_millis(self.p.settings.ack_timeout_ms)
            {
                return Err(format!(
                    "no acknowledgement within {} ms; the connection is taken for dead",
                    self.p.settings.ack_timeout_ms
                ));
            }
            POLL_INTERVAL
        } else {
            let t = Duration::from_secs(self.p.settings.connect_timeout_s) + Duration::from_secs(1);
            deadline.map_or(t, |d| t.min(d.saturating_duration_since(Instant::now())))
        };
        match s.connection.recv_timeout(timeout) {
            Ok(Ok(event)) => {
                self.handle(s, event)?;
                Ok(())
            }
            Ok(Err(e)) => Err(describe(&e, &self.p)),
            Err(RecvTimeoutError::Timeout) if s.connected_at.is_some() => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "no CONNACK within {} s; check the host, the port and the firewall",
                self.p.settings.connect_timeout_s
            )),
            Err(RecvTimeoutError::Disconnected) => Err("the MQTT client stopped".to_string()),
        }
    }

    fn handle(&mut self, s: &mut Session, event: Event) -> Result<(), String> {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                s.connected_at = Some(Instant::now());
                // What was handed over while the connection was being made waited for it: into the spool, to be
                // delivered first and late, like everything else made while the broker was not there.
                self.outbox.absorb();
                self.outbox.rewind();
                self.outbox.note_connected(true);
                let waiting = self.outbox.spooled();
                match &mut self.outage {
                    Some(o) if !o.recovered => {
                        o.recovered = true;
                        info!(
                            "MQTT broker {}: connected again after {:.1} s; delivering {waiting} spooled alerts first",
                            self.p.name,
                            o.since.elapsed().as_secs_f64()
                        );
                    }
                    Some(_) => debug!("MQTT broker {}: connected again", self.p.name),
                    None => info!("MQTT broker {}: connected as {}", self.p.name, self.p.client_id),
                }
                self.publish_availability(s, AVAILABLE_ONLINE)?;
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(f) = s.unassigned.pop_front() {
                    s.awaiting.insert(pkid, f);
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(InFlight { what: Sent::Alert(d), .. }) = s.awaiting.remove(&ack.pkid) {
                    self.outbox.delivered(&d);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn publish(&mut self, s: &mut Session, d: Delivery) -> Result<(), String> {
        let prefix = &self.p.prefix;
        let (topic, retain) = match d.kind {
            AlertKind::Event => (events_topic(prefix, &d.source), false),
            AlertKind::Snapshot => (snapshot_topic(prefix, &d.source), self.p.settings.retain_snapshots),
        };
        // Fixed header (5) + topic length (2) + topic + packet id (2): what rumqttc checks against the limit.
        if d.payload.len() + topic.len() + 9 > self.p.settings.max_packet_bytes {
            let why = format!(
                "{} bytes is more than max_packet_bytes ({}); raise it (and the broker's message_size_limit)",
                d.payload.len(),
                self.p.settings.max_packet_bytes
            );
            self.outbox.reject(&d, &why);
            return Ok(());
        }
        match s.client.try_publish(topic, QoS::AtLeastOnce, retain, d.payload.to_vec()) {
            Ok(()) => {
                s.unassigned.push_back(InFlight { what: Sent::Alert(d), since: Instant::now() });
                Ok(())
            }
            Err(e) => {
                self.outbox.spill(d);
                Err(format!("cannot hand a publish to the MQTT client: {e}"))
            }
        }
    }

    fn publish_availability(&mut self, s: &mut Session, payload: &str) -> Result<(), String> {
        s.client
            .try_publish(availability_topic(&self.p.prefix), QoS::AtLeastOnce, true, payload)
            .map_err(|e| format!("cannot hand a publish to the MQTT client: {e}"))?;
        s.unassigned.push_back(InFlight { what: Sent::Availability, since: Instant::now() });
        Ok(())
    }

    /// The session ended: what it had not confirmed goes back to the spool, to be sent first next time.
    fn lost(&mut self, s: Session, why: &str) {
        let connected_at = s.connected_at;
        for d in s.into_unconfirmed() {
            self.outbox.spill(d);
        }
        self.outbox.spill_memory();
        self.outbox.absorb();
        self.outbox.rewind();
        self.outbox.note_failure(false);
        let spooled = self.outbox.spooled();
        let now = Instant::now();
        if connected_at.is_some_and(|t| now.duration_since(t) >= STABLE_AFTER) {
            self.outage = None;
            self.backoff.reset();
        }
        match &mut self.outage {
            None => {
                warn!(
                    "MQTT broker {}: {why}. Alerts wait in the spool ({spooled} now) and are delivered when it is back",
                    self.p.name
                );
                self.outage = Some(Outage { since: now, attempts: 1, last_warned: now, recovered: false });
            }
            Some(o) => {
                o.attempts += 1;
                let flapping = if connected_at.is_some() {
                    format!(
                        " (the connection drops soon after it is made: is another client using client id {}?)",
                        self.p.client_id
                    )
                } else {
                    String::new()
                };
                if now.duration_since(o.last_warned) >= REWARN_INTERVAL {
                    o.last_warned = now;
                    warn!(
                        "MQTT broker {}: still failing after {} attempts over {:.0} s: {why}{flapping}; {spooled} \
                         alerts spooled",
                        self.p.name,
                        o.attempts,
                        now.duration_since(o.since).as_secs_f64()
                    );
                } else {
                    debug!("MQTT broker {}: attempt {} failed: {why}{flapping}", self.p.name, o.attempts);
                }
            }
        }
    }

    /// Shutdown: `offline`, DISCONNECT (so the broker does not also send the will), and whatever is not
    /// confirmed into the spool for the next start.
    fn finish(&mut self, session: Option<Session>) {
        if let Some(mut s) = session {
            if s.connected_at.is_some() && self.publish_availability(&mut s, AVAILABLE_OFFLINE).is_ok() {
                let grace = Instant::now() + FINISH_GRACE;
                while s.availability_pending() && !self.pump(&mut s, grace) {}
                let _ = s.client.try_disconnect();
                loop {
                    let left = grace.saturating_duration_since(Instant::now());
                    match s.connection.recv_timeout(left.max(Duration::from_millis(1))) {
                        Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
                        Ok(Ok(event)) => {
                            let _ = self.handle(&mut s, event);
                        }
                        _ => break,
                    }
                    if left.is_zero() {
                        break;
                    }
                }
            }
            for d in s.into_unconfirmed() {
                self.outbox.spill(d);
            }
        }
        self.outbox.spill_memory();
        self.outbox.absorb();
        self.outbox.note_connected(false);
    }

    /// Handles one event, waiting at most until `until`; true when the time is up or the connection failed.
    fn pump(&mut self, s: &mut Session, until: Instant) -> bool {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        match s.connection.recv_timeout(left) {
            Ok(Ok(event)) => self.handle(s, event).is_err(),
            _ => true,
        }
    }
}

/// A connection error in words, naming the broker's problem and what to do about it.
fn describe(e: &ConnectionError, p: &Prepared) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let hint = match code {
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => {
                    "check the MQTT username and password"
                }
                ConnectReturnCode::BadClientId => "the broker refused the client id; set another client_id",
                ConnectReturnCode::RefusedProtocolVersion => "the broker does not accept MQTT 3.1.1",
                ConnectReturnCode::ServiceUnavailable => "the broker is not accepting clients now",
                ConnectReturnCode::Success => "",
            };
            format!("the broker refused the connection ({code:?}); {hint}")
        }
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("connection refused ({io}); is the broker running and listening on port {}?", p.broker.port)
        }
        ConnectionError::Io(io) => format!("{io}; check the host name and the network"),
        ConnectionError::Tls(t) => {
            format!("TLS failed: {t}; check ca_file and that the broker's certificate is for {}", p.broker.host)
        }
        ConnectionError::NetworkTimeout => {
            format!("no answer within {} s; check the host, the port and the firewall", p.settings.connect_timeout_s)
        }
        ConnectionError::MqttState(state) => {
            format!("connection lost: {state} (the broker stopped, or the network between us failed)")
        }
        other => format!("connection lost: {other} (the broker stopped, or the network between us failed)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let b = parse_broker_url("mqtt://10.0.0.2").unwrap();
        assert_eq!((b.tls, b.host.as_str(), b.port, b.username.clone()), (false, "10.0.0.2", 1883, None));
        assert_eq!(b.display(), "mqtt://10.0.0.2:1883");
        let b = parse_broker_url("mqtts://ha:s%40cret:x@broker.lan:8884/").unwrap();
        assert_eq!((b.tls, b.host.as_str(), b.port), (true, "broker.lan", 8884));
        assert_eq!((b.username.as_deref(), b.password.as_deref()), (Some("ha"), Some("s@cret:x")));
        assert_eq!(b.display(), "mqtts://broker.lan:8884");
        let b = parse_broker_url("mqtts://[::1]").unwrap();
        assert_eq!((b.host.as_str(), b.port, b.display().as_str()), ("::1", 8883, "mqtts://[::1]:8883"));
        for bad in ["broker:1883", "http://broker", "mqtt://", "mqtt://broker:99999", "mqtt://broker/topic"] {
            assert!(parse_broker_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_password_stays_out_of_debug_output_and_errors() {
        let mut s = MqttSettings::new("mqtt://user:hunter2@broker:1883");
        s.password = Some("swordfish".into());
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("swordfish"), "{debug}");
        let p = Prepared::new(&s).unwrap();
        assert_eq!(p.name(), "mqtt://broker:1883");
        assert_eq!(p.broker.password.as_deref(), Some("swordfish"), "the setting overrides the URL");

        let err = Prepared::new(&MqttSettings::new("mqtt://user:hunter2@broker:http")).err().unwrap().to_string();
        assert!(!err.contains("hunter2") && err.contains("broker") && err.contains("mqtt://HOST:PORT"), "{err}");
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let mut s = MqttSettings::new("mqtt://broker");
        s.topic_prefix = "a/#".into();
        assert!(Prepared::new(&s).err().unwrap().to_string().contains("topic_prefix"));
        let mut s = MqttSettings::new("mqtts://broker");
        s.ca_file = Some("/nonexistent/ca.pem".into());
        let err = Prepared::new(&s).err().unwrap().to_string();
        assert!(err.contains("/nonexistent/ca.pem") && err.contains("mqtts://broker:8883"), "{err}");
    }

    #[test]
    fn topics() {
        assert_eq!(events_topic("lookout", "gate/1"), "lookout/gate_1/events");
        assert_eq!(snapshot_topic("site/a", "gate"), "site/a/gate/snapshot");
        assert_eq!(availability_topic("lookout"), "lookout/available");
        assert!(default_client_id().starts_with("lookout"));
    }
}
