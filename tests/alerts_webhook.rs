//! Webhook alerts against a real HTTP server on 127.0.0.1.
//!
//! The server ([`Hook`]) speaks just enough HTTP/1.1: it reads one request per connection, records it, and
//! answers as its script says (a status, or no answer at all until the client gives up), then closes. Every
//! wait polls a condition against a deadline; nothing sleeps blindly.

use std::path::Path;
use std::time::{Duration, Instant};

use lookout::sink::alerts::{AlertSettings, Alerter, WebhookSettings};

mod common;
#[path = "common/hook.rs"]
mod hook;

use common::{free_port, wait_until};
use hook::{Hook, Reply, Request};

/// The `n` of each request that got a 2xx, in order.
fn delivered(hook: &Hook) -> Vec<u64> {
    hook.requests().iter().filter(|r| r.ok()).map(|r| r.body["n"].as_u64().unwrap()).collect()
}

fn settings(spool: &Path, port: u16) -> AlertSettings {
    let mut w = WebhookSettings::new(format!("http://127.0.0.1:{port}/hook?token=s3cret"));
    w.retry_initial_ms = 50;
    w.retry_max_ms = 200;
    w.timeout_ms = 500;
    w.headers.push(("Authorization".into(), "Bearer t0ken".into()));
    let mut s = AlertSettings::new(spool);
    s.webhooks.push(w);
    s.spool.sync = false;
    s
}

fn event(n: u64) -> Vec<u8> {
    format!("{{\"type\":\"start\",\"source\":\"gate\",\"n\":{n}}}\n").into_bytes()
}

fn is_late(r: &Request) -> bool {
    r.body.get("delivered_late") == Some(&serde_json::Value::Bool(true))
}

#[test]
fn alerts_wait_while_the_server_is_down_and_arrive_in_order_when_it_is_up() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there yet
    let alerter = Alerter::start(&settings(tmp.path(), port)).unwrap();
    for n in 1..=5 {
        alerter.send("gate", &event(n), Some(b"jpeg bytes are not for webhooks"));
    }
    wait_until("five alerts in the spool", || alerter.stats().destinations[0].spool_entries == 5);
    let down = alerter.stats().destinations[0].clone();
    assert!(down.failures >= 1 && !down.connected && down.offered == 5, "{down:?}");
    assert_eq!(down.destination, format!("http://127.0.0.1:{port}/hook?***"), "the token is not shown");

    let hook = Hook::start(port, &[]);
    wait_until("the five alerts", || delivered(&hook).len() == 5);
    alerter.send("gate", &event(6), None);
    wait_until("the sixth alert", || delivered(&hook).len() == 6);
    let stats = alerter.shutdown(Duration::from_secs(5));

    assert_eq!(delivered(&hook), [1, 2, 3, 4, 5, 6]);
    let reqs = hook.requests();
    for r in &reqs {
        let n = r.body["n"].as_u64().unwrap();
        assert_eq!(is_late(r), n <= 5, "request {n}: {:?}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("authorization"), Some("Bearer t0ken"));
    }
    // The body is the event as given, plus the flag for late ones.
    assert_eq!(reqs[0].body, serde_json::json!({"type": "start", "source": "gate", "n": 1, "delivered_late": true}));
    let d = &stats.destinations[0];
    assert_eq!((d.offered, d.delivered, d.delivered_late, d.spool_entries, d.dropped), (6, 6, 5, 0, 0), "{d:?}");
    eprintln!("server down then up: {:?}", t0.elapsed());
}

#[test]
fn server_errors_and_timeouts_are_retried_with_backoff() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let hook = Hook::start(0, &[Reply::Status(500), Reply::Hang, Reply::Status(503)]);
    let alerter = Alerter::start(&settings(tmp.path(), hook.port)).unwrap();
    for n in 1..=4 {
        alerter.send("gate", &event(n), None);
    }
    wait_until("four deliveries", || delivered(&hook).len() == 4);
    let stats = alerter.shutdown(Duration::from_secs(5));

    assert_eq!(delivered(&hook), [1, 2, 3, 4]);
    let attempts: Vec<(u64, Option<u16>, bool)> =
        hook.requests().iter().map(|r| (r.body["n"].as_u64().unwrap(), r.status, is_late(r))).collect();
    // The first alert is tried four times (500, no answer, 503, 200); the retries come from the spool.
    assert_eq!(
        attempts[..4],
        [(1, Some(500), false), (1, None, true), (1, Some(503), true), (1, Some(200), true)],
        "{attempts:?}"
    );
    let d = &stats.destinations[0];
    assert_eq!((d.failures, d.delivered, d.spool_entries), (3, 4, 0), "{d:?}");
    eprintln!("500, timeout, 503 then 200: {:?}", t0.elapsed());
}

#[test]
fn a_refused_alert_is_kept_aside_and_not_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let hook = Hook::start(0, &[Reply::Status(400)]);
    let alerter = Alerter::start(&settings(tmp.path(), hook.port)).unwrap();
    alerter.send("gate", &event(1), None);
    alerter.send("gate", &event(2), None);
    wait_until("the second alert", || delivered(&hook) == [2]);
    let stats = alerter.shutdown(Duration::from_secs(5));
    assert_eq!(hook.requests().len(), 2, "the refused one is not sent again");
    let d = &stats.destinations[0];
    assert_eq!((d.rejected, d.delivered, d.failures, d.spool_entries), (1, 1, 0, 0), "{d:?}");
    let spool_dir = std::fs::read_dir(tmp.path()).unwrap().next().unwrap().unwrap().path();
    let rejected: Vec<_> = std::fs::read_dir(spool_dir.join("rejected")).unwrap().collect();
    assert_eq!(rejected.len(), 1, "kept for a person to look at");
}

#[test]
fn alerts_left_at_shutdown_are_delivered_by_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let alerter = Alerter::start(&settings(tmp.path(), port)).unwrap();
    for n in 1..=3 {
        alerter.send("gate", &event(n), None);
    }
    let stats = alerter.shutdown(Duration::from_millis(200));
    assert_eq!(stats.destinations[0].spool_entries, 3, "{stats:?}");

    let hook = Hook::start(port, &[]);
    let alerter = Alerter::start(&settings(tmp.path(), port)).unwrap();
    alerter.send("gate", &event(4), None);
    wait_until("all four", || delivered(&hook).len() == 4);
    alerter.shutdown(Duration::from_secs(5));
    assert_eq!(delivered(&hook), [1, 2, 3, 4]);
    let late: Vec<bool> = hook.requests().iter().map(is_late).collect();
    assert_eq!(late, [true, true, true, false]);
}
