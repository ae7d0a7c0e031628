//! `[alerts]` in the TOML configuration, turned into [`AlertSettings`].
//!
//! ```toml
//! [alerts.mqtt]
//! url = "mqtts://broker.lan:8883"          # required; mqtt:// (port 1883) or mqtts:// (TLS, port 8883)
//! username = "lookout"                      # default: none (or the URL's user)
//! password_file = "/etc/lookout/mqtt-password"  # default: none; see below
//! client_id = "lookout-gatehouse"           # default "lookout-<hostname>"; unique on the broker
//! topic_prefix = "lookout"                  # default "lookout"
//! ca_file = "/etc/lookout/broker-ca.pem"    # default: the system's CAs (mqtts:// only)
//! client_cert_file = "/etc/lookout/client.pem"  # default: none (with client_key_file)
//! client_key_file = "/etc/lookout/client.key"
//! keep_alive_s = 30                         # default 30
//! connect_timeout_s = 5                     # default 5
//! reconnect_initial_ms = 500                # default 500; doubles after each failure
//! reconnect_max_ms = 30000                  # default 30000
//! snapshots = true                          # publish <prefix>/<source>/snapshot (default true)
//! retain_snapshots = true                   # the last snapshot of each source stays on the broker (default true)
//!
//! [[alerts.webhooks]]
//! url = "https://hooks.example.com/lookout" # required
//! headers = { Authorization = "Bearer ..." } # default: none; values are never logged
//! timeout_ms = 10000                        # one request, default 10000
//! retry_initial_ms = 1000                   # first wait before a retry, doubling (default 1000)
//! retry_max_ms = 60000                      # longest wait between retries (default 60000)
//!
//! [alerts]
//! shutdown_timeout_s = 5                    # how long a stop waits for deliveries (default 5); the rest stays
//!                                           # in the spool for the next start
//!
//! [alerts.spool]
//! dir = "/var/lib/lookout/alert-spool"      # default "<output dir>/alert-spool"
//! max_entries = 100000                      # per destination (default 100000)
//! max_bytes = 268435456                     # per destination (default 256 MiB)
//! ```
//!
//! Everything is published with QoS 1. Failed webhook requests are retried without a limit on their number:
//! the alert waits in the spool (bounded by `max_entries` and `max_bytes`) until the server takes it, so that
//! none is lost; `retry_max_ms` bounds the wait between two attempts.
//!
//! # The MQTT password
//!
//! Put it in a file of its own that only lookout's user can read (`chmod 600`), and name it in
//! `password_file` (one line; the trailing newline is ignored). The config file can then stay world-readable,
//! and systemd's `LoadCredential=` works too (`password_file = "${CREDENTIALS_DIRECTORY}/mqtt"` is not expanded:
//! give the full path). `password` inline, or `mqtt://user:pass@host` in the URL, also work, for tests. The
//! password never appears in logs, errors or events.
//!
//! The command line's `--mqtt URL` replaces `url` (keeping the rest of `[alerts.mqtt]`), and each `--webhook URL`
//! adds a webhook to those of the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::spool::DEFAULT_SPOOL_DIR_NAME;
use super::{AlertSettings, MqttSettings, WebhookSettings};

/// `[alerts]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// The MQTT broker. Default: none.
    pub mqtt: Option<MqttConfig>,
    /// Webhooks (`[[alerts.webhooks]]`). Default: none.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Where alerts wait while a destination is down.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// How long a stop (the first Ctrl-C, SIGTERM, the end of the files) waits for alerts to be delivered; what
    /// is left stays in the spool for the next start. Default 5.
    pub shutdown_timeout_s: Option<f64>,
}

/// `[alerts.mqtt]`. Every field but `url` defaults to [`MqttSettings::new`]'s value.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]`. Required (unless `--mqtt` gives it).
    #[serde(default)]
    pub url: String,
    /// User name. Default: the URL's, or none.
    pub username: Option<String>,
    /// Password inline. Prefer `password_file`. Default: none.
    pub password: Option<String>,
    /// A file holding the password (one line). Default: none.
    pub password_file: Option<PathBuf>,
    /// Default `lookout-<hostname>`.
    pub client_id: Option<String>,
    /// Default `lookout`.
    pub topic_prefix: Option<String>,
    /// PEM CA of the broker's certificate. Default: the system's CAs.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate. Default: none.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`. Default: none.
    pub client_key_file: Option<PathBuf>,
    /// Default 30.
    pub keep_alive_s: Option<u64>,
    /// Default 5.
    pub connect_timeout_s: Option<u64>,
    /// Default 500.
    pub reconnect_initial_ms: Option<u64>,
    /// Default 30000.
    pub reconnect_max_ms: Option<u64>,
    /// Default 30000.
    pub ack_timeout_ms: Option<u64>,
    /// Default true.
    pub snapshots: Option<bool>,
    /// Default true.
    pub retain_snapshots: Option<bool>,
}

impl std::fmt::Debug for MqttConfig {
    // By hand, so that the password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("url", &crate::redact::redact_url(&self.url))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("password_file", &self.password_file)
            .field("client_id", &self.client_id)
            .field("topic_prefix", &self.topic_prefix)
            .finish_non_exhaustive()
    }
}

/// `[[alerts.webhooks]]`. Every field but `url` defaults to [`WebhookSettings::new`]'s value.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL. Required.
    pub url: String,
    /// Extra request headers. Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Default 10000.
    pub timeout_ms: Option<u64>,
    /// Default 1000.
    pub retry_initial_ms: Option<u64>,
    /// Default 60000.
    pub retry_max_ms: Option<u64>,
}

impl std::fmt::Debug for WebhookConfig {
    // By hand, so that tokens in the URL or in header values never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &super::webhook::display_url(&self.url))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// `[alerts.spool]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Default `<output dir>/alert-spool`.
    pub dir: Option<PathBuf>,
    /// Most alerts kept for one destination. Default 100000.
    pub max_entries: Option<u64>,
    /// Most bytes kept for one destination. Default 256 MiB.
    pub max_bytes: Option<u64>,
    /// fsync each alert before counting it as stored. Default true.
    pub sync: Option<bool>,
}

/// Errors in `[alerts]` that only show when it is applied (a password file that cannot be read).
#[derive(Debug, thiserror::Error)]
pub enum AlertsConfigError {
    #[error("[alerts.mqtt] password_file {}: {error}; make it a file readable by lookout's user", path.display())]
    PasswordFile { path: PathBuf, error: std::io::Error },
    #[error("[alerts.mqtt] has both password and password_file; keep one (password_file keeps it out of the config)")]
    TwoPasswords,
    #[error("[alerts.mqtt] has no url; set url = \"mqtt://HOST:PORT\" or give --mqtt")]
    NoUrl,
    #[error("[alerts] shutdown_timeout_s = {0} is out of range; give seconds from 0 to 86400")]
    ShutdownTimeout(f64),
}

impl AlertsConfig {
    /// The alert settings of this section with the command line's `--mqtt` (replacing the broker URL) and
    /// `--webhook`s (added), or `None` when there is no destination at all. `out_dir` is where the spool goes
    /// by default.
    pub fn settings(
        &self,
        out_dir: &Path,
        cli_mqtt: Option<&str>,
        cli_webhooks: &[String],
    ) -> Result<Option<AlertSettings>, AlertsConfigError> {
        let mqtt = match (&self.mqtt, cli_mqtt) {
            (None, None) => None,
            (None, Some(url)) => Some(MqttSettings::new(url)),
            (Some(m), cli) => Some(m.settings(cli)?),
        };
        let mut webhooks: Vec<WebhookSettings> = self.webhooks.iter().map(WebhookConfig::settings).collect();
        webhooks.extend(cli_webhooks.iter().map(|u| WebhookSettings::new(u.as_str())));
        if mqtt.is_none() && webhooks.is_empty() {
            return Ok(None);
        }
        let dir = self.spool.dir.clone().unwrap_or_else(|| out_dir.join(DEFAULT_SPOOL_DIR_NAME));
        let mut a = AlertSettings::new(dir);
        a.mqtt = mqtt;
        a.webhooks = webhooks;
        let s = &self.spool;
        a.spool.max_entries = s.max_entries.unwrap_or(a.spool.max_entries);
        a.spool.max_bytes = s.max_bytes.unwrap_or(a.spool.max_bytes);
        a.spool.sync = s.sync.unwrap_or(a.spool.sync);
        if let Some(t) = self.shutdown_timeout_s {
            if !(t.is_finite() && (0.0..=86_400.0).contains(&t)) {
                return Err(AlertsConfigError::ShutdownTimeout(t));
            }
            a.shutdown_timeout_ms = (t * 1000.0).round() as u64;
        }
        Ok(Some(a))
    }
}

impl MqttConfig {
    fn settings(&self, cli_url: Option<&str>) -> Result<MqttSettings, AlertsConfigError> {
        let url = cli_url.unwrap_or(&self.url);
        if url.trim().is_empty() {
            return Err(AlertsConfigError::NoUrl);
        }
        let password = match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => return Err(AlertsConfigError::TwoPasswords),
            (Some(p), None) => Some(p.clone()),
            (None, Some(path)) => Some(read_password(path)?),
            (None, None) => None,
        };
        let mut m = MqttSettings::new(url);
        m.username = self.username.clone();
        m.password = password;
        m.client_id = self.client_id.clone();
        if let Some(p) = &self.topic_prefix {
            m.topic_prefix = p.clone();
        }
        m.ca_file = self.ca_file.clone();
        m.client_cert_file = self.client_cert_file.clone();
        m.client_key_file = self.client_key_file.clone();
        m.keep_alive_s = self.keep_alive_s.unwrap_or(m.keep_alive_s);
        m.connect_timeout_s = self.connect_timeout_s.unwrap_or(m.connect_timeout_s);
        m.reconnect_initial_ms = self.reconnect_initial_ms.unwrap_or(m.reconnect_initial_ms);
        m.reconnect_max_ms = self.reconnect_max_ms.unwrap_or(m.reconnect_max_ms);
        m.ack_timeout_ms = self.ack_timeout_ms.unwrap_or(m.ack_timeout_ms);
        m.snapshots = self.snapshots.unwrap_or(m.snapshots);
        m.retain_snapshots = self.retain_snapshots.unwrap_or(m.retain_snapshots);
        Ok(m)
    }
}

impl WebhookConfig {
    fn settings(&self) -> WebhookSettings {
        let mut w = WebhookSettings::new(self.url.as_str());
        w.headers = self.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        w.timeout_ms = self.timeout_ms.unwrap_or(w.timeout_ms);
        w.retry_initial_ms = self.retry_initial_ms.unwrap_or(w.retry_initial_ms);
        w.retry_max_ms = self.retry_max_ms.unwrap_or(w.retry_max_ms);
        w
    }
}

/// The first line of `path`, without its line ending.
fn read_password(path: &Path) -> Result<String, AlertsConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| AlertsConfigError::PasswordFile { path: path.to_path_buf(), error })?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AlertsConfig {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            alerts: AlertsConfig,
        }
        toml::from_str::<File>(text).unwrap().alerts
    }

    #[test]
    fn a_full_section_becomes_settings() {
        let tmp = tempfile::tempdir().unwrap();
        let pw = tmp.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let c = parse(&format!(
            r#"
            [alerts.mqtt]
            url = "mqtts://broker.lan"
            username = "lookout"
            password_file = "{}"
            topic_prefix = "site1"
            keep_alive_s = 10
            retain_snapshots = false
            [[alerts.webhooks]]
            url = "http://127.0.0.1:9/hook"
            headers = {{ Authorization = "Bearer t0ken" }}
            retry_max_ms = 5000
            [alerts.spool]
            max_entries = 10
            "#,
            pw.display()
        ));
        let a = c.settings(Path::new("out"), None, &["http://127.0.0.1:9/other".into()]).unwrap().unwrap();
        let m = a.mqtt.as_ref().unwrap();
        assert_eq!(
            (m.url.as_str(), m.username.as_deref(), m.password.as_deref()),
            ("mqtts://broker.lan", Some("lookout"), Some("s3cret"))
        );
        assert_eq!((m.topic_prefix.as_str(), m.keep_alive_s, m.retain_snapshots), ("site1", 10, false));
        assert_eq!(m.connect_timeout_s, super::super::mqtt::DEFAULT_CONNECT_TIMEOUT_S);
        assert_eq!(a.webhooks.len(), 2);
        assert_eq!(a.webhooks[0].headers, vec![("Authorization".to_string(), "Bearer t0ken".to_string())]);
        assert_eq!((a.webhooks[0].retry_max_ms, a.webhooks[1].url.as_str()), (5000, "http://127.0.0.1:9/other"));
        assert_eq!((a.spool.dir.as_path(), a.spool.max_entries), (Path::new("out/alert-spool"), 10));
        let debug = format!("{c:?} {a:?}");
        assert!(!debug.contains("s3cret") && !debug.contains("t0ken"), "{debug}");
    }

    #[test]
    fn the_command_line_replaces_the_url_and_adds_webhooks() {
        let c = parse("[alerts.mqtt]\nurl = \"mqtt://a:1\"\nclient_id = \"x\"\n");
        let a = c.settings(Path::new("o"), Some("mqtt://b:2"), &[]).unwrap().unwrap();
        let m = a.mqtt.unwrap();
        assert_eq!((m.url.as_str(), m.client_id.as_deref()), ("mqtt://b:2", Some("x")));
        let none = AlertsConfig::default().settings(Path::new("o"), None, &[]).unwrap();
        assert!(none.is_none());
        let cli = AlertsConfig::default().settings(Path::new("o"), Some("mqtt://h"), &[]).unwrap().unwrap();
        assert_eq!(cli.mqtt.unwrap().url, "mqtt://h");
    }

    #[test]
    fn the_shutdown_timeout_is_seconds_within_a_day() {
        let cli = |c: &AlertsConfig| c.settings(Path::new("o"), Some("mqtt://h"), &[]);
        assert_eq!(cli(&AlertsConfig::default()).unwrap().unwrap().shutdown_timeout_ms, 5_000);
        let c = parse("[alerts]\nshutdown_timeout_s = 0.25\n");
        assert_eq!(cli(&c).unwrap().unwrap().shutdown_timeout_ms, 250);
        for bad in ["-1", "1e9", "nan"] {
            let e = cli(&parse(&format!("[alerts]\nshutdown_timeout_s = {bad}\n"))).unwrap_err().to_string();
            assert!(e.contains("shutdown_timeout_s") && e.contains("0 to 86400"), "{e}");
        }
    }

    #[test]
    fn password_mistakes_are_named_without_the_password() {
        let two = parse("[alerts.mqtt]\nurl = \"mqtt://h\"\npassword = \"p4ss\"\npassword_file = \"/x\"\n");
        let e = two.settings(Path::new("o"), None, &[]).unwrap_err().to_string();
        assert!(e.contains("password_file") && !e.contains("p4ss"), "{e}");
        let missing = parse("[alerts.mqtt]\nurl = \"mqtt://h\"\npassword_file = \"/nonexistent/pw\"\n");
        let e = missing.settings(Path::new("o"), None, &[]).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/pw") && !e.contains('\n'), "{e}");
        let e = parse("[alerts.mqtt]\nusername = \"u\"\n").settings(Path::new("o"), None, &[]).unwrap_err();
        assert!(e.to_string().contains("no url"), "{e}");
        assert!(
            toml::from_str::<AlertsConfig>("[mqtt]\nurl = \"mqtt://h\"\npasword = \"x\"\n").is_err(),
            "unknown keys are errors"
        );
    }
}
