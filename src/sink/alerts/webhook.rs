//! The webhook destination: each event POSTed as JSON to one URL, by one worker thread (`alert-webhook-<n>`).
//!
//! # States of the worker
//!
//! | state | what it does | leaves for |
//! |---|---|---|
//! | up | POSTs the oldest alert; new alerts wait in memory | retrying, on a retryable failure |
//! | retrying | spools arriving alerts; waits out the backoff, then POSTs the oldest | up, on a 2xx |
//!
//! One request at a time, so the receiver sees alerts in order. The outcome of a request:
//! - 2xx: delivered (and removed from the spool if it came from there);
//! - connection error, timeout, 408, 425, 429, 5xx: retried after a backoff (or the `Retry-After` the server
//!   asked for, up to `retry_max_ms`); the alert and everything in memory go to the spool meanwhile;
//! - anything else (a 4xx, a 3xx: redirects are not followed): refused for good, kept in `rejected/`.

use std::fmt;
use std::io::Read;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::AlertError;
use super::queue::{Backoff, Delivery, Outbox};

/// Default [`WebhookSettings::timeout_ms`].
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 10_000;
/// Default [`WebhookSettings::retry_initial_ms`].
pub const DEFAULT_WEBHOOK_RETRY_INITIAL_MS: u64 = 1_000;
/// Default [`WebhookSettings::retry_max_ms`].
pub const DEFAULT_WEBHOOK_RETRY_MAX_MS: u64 = 60_000;

/// Warn again about a webhook that stays down at most this often.
const REWARN_INTERVAL: Duration = Duration::from_secs(60);
/// How much of an error response's body goes into the log.
const BODY_EXCERPT_BYTES: u64 = 300;

/// What the user sets for one webhook.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// `http://` or `https://` URL that receives a POST per event. Required.
    pub url: String,
    /// Extra request headers, such as `("Authorization", "Bearer ...")`. Their values are never logged.
    /// Default: none.
    pub headers: Vec<(String, String)>,
    /// Time allowed for one request, from connecting to reading the response, in ms.
    /// Default [`DEFAULT_WEBHOOK_TIMEOUT_MS`].
    pub timeout_ms: u64,
    /// First wait before retrying, in ms; it doubles at each failure. Default [`DEFAULT_WEBHOOK_RETRY_INITIAL_MS`].
    pub retry_initial_ms: u64,
    /// Longest wait between retries, in ms. Default [`DEFAULT_WEBHOOK_RETRY_MAX_MS`].
    pub retry_max_ms: u64,
}

impl WebhookSettings {
    /// The webhook at `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        WebhookSettings {
            url: url.into(),
            headers: Vec::new(),
            timeout_ms: DEFAULT_WEBHOOK_TIMEOUT_MS,
            retry_initial_ms: DEFAULT_WEBHOOK_RETRY_INITIAL_MS,
            retry_max_ms: DEFAULT_WEBHOOK_RETRY_MAX_MS,
        }
    }
}

impl fmt::Debug for WebhookSettings {
    // By hand, so that credentials in the URL or in header values never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(k, _)| (k.as_str(), "***")).collect();
        f.debug_struct("WebhookSettings")
            .field("url", &display_url(&self.url))
            .field("headers", &headers)
            .field("timeout_ms", &self.timeout_ms)
            .field("retry_initial_ms", &self.retry_initial_ms)
            .field("retry_max_ms", &self.retry_max_ms)
            .finish()
    }
}

/// The URL as logs show it: user info removed, and the query (which often holds a token) hidden.
pub fn display_url(url: &str) -> String {
    let s = crate::redact::redact_url(url);
    match s.split_once('?') {
        Some((base, _)) => format!("{base}?***"),
        None => s,
    }
}

/// The settings, checked, with the HTTP agent built: what the worker needs.
pub(crate) struct Prepared {
    url: String,
    name: String,
    host: String,
    agent: ureq::Agent,
    settings: WebhookSettings,
}

impl Prepared {
    pub fn new(s: &WebhookSettings) -> Result<Prepared, AlertError> {
        let name = display_url(&s.url);
        let bad = |message: String| AlertError::WebhookUrl { url: name.clone(), message };
        let uri: ureq::http::Uri = s.url.parse().map_err(|e| bad(format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            Some(other) => return Err(bad(format!("scheme {other}:// is not supported"))),
            None => return Err(bad("it has no scheme".into())),
        }
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| bad("it has no host".into()))?.to_string();
        for (k, _) in &s.headers {
            if ureq::http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(AlertError::Settings {
                    destination: name.clone(),
                    message: format!("{k:?} is not a valid HTTP header name"),
                });
            }
        }
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(s.timeout_ms.max(1))))
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("lookout/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Prepared {
            url: s.url.clone(),
            name,
            host,
            agent: ureq::Agent::new_with_config(config),
            settings: s.clone(),
        })
    }

    /// The URL as logs name it.
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// `webhook-<host>-<hash of the URL>`: stable for a URL, different for two URLs on one host.
    pub fn spool_subdir(&self) -> String {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let hash =
            self.url.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let host: String =
            self.host.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' }).collect();
        format!("webhook-{host}-{hash:016x}")
    }

    fn post(&self, d: &Delivery, deadline: Option<Instant>) -> Outcome {
        let mut req = self.agent.post(&self.url);
        if let Some(deadline) = deadline {
            // Shutting down: the request may not outlive the deadline by much.
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
            let t = left.min(Duration::from_millis(self.settings.timeout_ms.max(1)));
            req = req.config().timeout_global(Some(t)).build();
        }
        req = req.header("content-type", "application/json");
        for (k, v) in &self.settings.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.send(&d.payload[..]) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                if (200..300).contains(&status) {
                    return Outcome::Delivered;
                }
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let mut excerpt = String::new();
                let _ = resp.body_mut().as_reader().take(BODY_EXCERPT_BYTES).read_to_string(&mut excerpt);
                let excerpt = excerpt.split_whitespace().collect::<Vec<_>>().join(" ");
                let why =
                    if excerpt.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {excerpt}") };
                match status {
                    408 | 425 | 429 | 500..=599 => Outcome::Retry { why, after: retry_after },
                    300..=399 => Outcome::Reject(format!("{why} (a redirect; configure the URL it points to)")),
                    _ => Outcome::Reject(why),
                }
            }
            Err(e) => Outcome::Retry { why: describe(&e, self.settings.timeout_ms), after: None },
        }
    }
}

enum Outcome {
    Delivered,
    Retry { why: String, after: Option<Duration> },
    Reject(String),
}

fn describe(e: &ureq::Error, timeout_ms: u64) -> String {
    match e {
        ureq::Error::Timeout(_) => format!("no answer within {timeout_ms} ms (timeout_ms)"),
        ureq::Error::HostNotFound => "host not found; check the URL's host name and DNS".to_string(),
        ureq::Error::ConnectionFailed => "cannot connect; is the server running and reachable?".to_string(),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused; is the server running and listening on that port?".to_string()
        }
        other => other.to_string(),
    }
}

/// The worker thread's body: runs until the alerter shuts down and its deadline passes or all is delivered.
pub(crate) fn run(p: Prepared, mut outbox: Outbox) {
    let s = &p.settings;
    let max_wait = Duration::from_millis(s.retry_max_ms);
    let mut backoff = Backoff::new(Duration::from_millis(s.retry_initial_ms), max_wait);
    // `Some` while retrying: when the next attempt is due, since when it is down, attempts, last warning.
    let mut retry_at: Option<Instant> = None;
    let mut outage: Option<(Instant, u64, Instant)> = None;
    outbox.note_connected(true);
    loop {
        let deadline = outbox.deadline();
        if let Some(d) = deadline
            && (Instant::now() >= d || outbox.is_drained())
        {
            break;
        }
        if let Some(at) = retry_at {
            if Instant::now() < at {
                outbox.wait(Some(deadline.map_or(at, |d| d.min(at))), false);
                continue;
            }
            retry_at = None;
        }
        let Some(d) = outbox.next() else {
            // Nothing to send: wait for an alert. Once closed this returns at once, and the deadline (set before
            // the channel closes) ends the loop above.
            outbox.wait(deadline, true);
            continue;
        };
        match p.post(&d, deadline) {
            Outcome::Delivered => {
                outbox.delivered(&d);
                backoff.reset();
                if let Some((since, attempts, _)) = outage.take() {
                    outbox.note_connected(true);
                    info!(
                        "webhook {}: delivering again after {attempts} failed attempts over {:.0} s",
                        p.name,
                        since.elapsed().as_secs_f64()
                    );
                }
            }
            Outcome::Retry { why, after } => {
                outbox.spill(d);
                outbox.spill_memory();
                outbox.rewind();
                outbox.note_failure(false);
                let wait = after.map_or_else(|| backoff.next_delay(), |a| a.min(max_wait));
                retry_at = Some(Instant::now() + wait);
                let now = Instant::now();
                let spooled = outbox.spooled();
                match &mut outage {
                    None => {
                        warn!(
                            "webhook {}: {why}; retrying in {:.1} s. Alerts wait in the spool ({spooled} now)",
                            p.name,
                            wait.as_secs_f64()
                        );
                        outage = Some((now, 1, now));
                    }
                    Some((since, attempts, last_warned)) => {
                        *attempts += 1;
                        if now.duration_since(*last_warned) >= REWARN_INTERVAL {
                            *last_warned = now;
                            warn!(
                                "webhook {}: still failing after {attempts} attempts over {:.0} s: {why}; \
                                 {spooled} alerts spooled",
                                p.name,
                                now.duration_since(*since).as_secs_f64()
                            );
                        } else {
                            debug!("webhook {}: attempt {attempts} failed: {why}", p.name);
                        }
                    }
                }
            }
            Outcome::Reject(why) => outbox.reject(&d, &why),
        }
    }
    outbox.spill_memory();
    outbox.absorb();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_secrets() {
        let p = Prepared::new(&WebhookSettings::new("https://bot:tok@hooks.example.com/a?key=s3cret")).unwrap();
        assert_eq!(p.name(), "https://***@hooks.example.com/a?***");
        assert!(p.spool_subdir().starts_with("webhook-hooks.example.com-"));
        let other = Prepared::new(&WebhookSettings::new("https://hooks.example.com/b")).unwrap();
        assert_ne!(p.spool_subdir(), other.spool_subdir());
        for bad in ["ftp://x/y", "hooks.example.com/a", "http:///a"] {
            assert!(Prepared::new(&WebhookSettings::new(bad)).is_err(), "{bad}");
        }
        let mut s = WebhookSettings::new("http://127.0.0.1:9/x");
        s.headers.push(("Authorization".into(), "Bearer secret-token".into()));
        assert!(!format!("{s:?}").contains("secret-token"));
        s.headers.push(("bad header".into(), "v".into()));
        assert!(Prepared::new(&s).err().unwrap().to_string().contains("header name"));
    }
}
