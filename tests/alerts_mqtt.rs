//! MQTT alerts against a real broker: `mosquitto`, started by each test on 127.0.0.1 on a free port.
//!
//! A subscriber in the test (rumqttc, QoS 1) receives what the [`Alerter`] publishes. The broker is killed in
//! the middle of a run and started again on the same port; every event must arrive, in order, the ones made
//! while it was down flagged `delivered_late`. Nothing sleeps blindly: every wait polls a condition against a
//! deadline. Without mosquitto installed (`apt install mosquitto`, or `deploy/install-deps.sh`) the tests say
//! so and pass.
//!
//! The restart test's broker keeps its sessions on disk, and the test has it save them (SIGUSR1) once the
//! subscriber is subscribed: otherwise the restarted broker would forget the subscriber, and whatever the
//! alerter delivers before the subscriber has subscribed again would go nowhere, which is the broker's
//! business, not the alerter's.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lookout::sink::alerts::{AlertSettings, Alerter, MqttSettings};

mod common;
#[macro_use]
#[path = "common/mqtt.rs"]
mod mqtt;

use common::{free_port, wait_until};
use mqtt::{Broker, Mode, Subscriber};

/// Everything the library logged in this test binary (all tests share it).
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends the library's logs to [`LOGS`] (once per test binary).
fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt().with_writer(|| Capture).with_ansi(false).with_env_filter("lookout=debug").init();
    });
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// With `LOOKOUT_TEST_LOGS` set, shows what the library logged (run one test at a time to read it).
fn show_logs() {
    if std::env::var_os("LOOKOUT_TEST_LOGS").is_some() {
        eprintln!("--- logs ---\n{}", logs());
    }
}

/// What the tests here read from what the subscriber received (their events carry a number `n`, their
/// snapshots the event's number in bytes 4..12).
trait Numbers {
    /// The event numbers of the snapshots seen, in order of arrival (duplicates included).
    fn snapshot_numbers(&self) -> Vec<u64>;
    /// The distinct event numbers seen.
    fn event_numbers(&self) -> Vec<u64>;
}

impl Numbers for Subscriber {
    fn snapshot_numbers(&self) -> Vec<u64> {
        self.seen
            .iter()
            .filter(|m| m.topic.ends_with("/snapshot"))
            .map(|m| u64::from_le_bytes(m.payload[4..12].try_into().unwrap()))
            .collect()
    }

    fn event_numbers(&self) -> Vec<u64> {
        let mut ns: Vec<u64> = self.events().iter().map(|e| e["n"].as_u64().unwrap()).collect();
        ns.sort_unstable();
        ns.dedup();
        ns
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The alerter.

fn event(n: u64) -> Vec<u8> {
    format!(r#"{{"type":"start","source":"gate","query":"a person","track_id":1,"n":{n}}}"#).into_bytes()
}

/// A stand-in for a JPEG: its bytes say which event it belongs to.
fn snapshot(n: u64) -> Vec<u8> {
    let mut v = vec![0xff, 0xd8, 0xff, 0xe0];
    v.extend_from_slice(&n.to_le_bytes());
    v.extend(std::iter::repeat_n(0u8, 2000));
    v
}

fn settings(spool: &Path, port: u16) -> AlertSettings {
    let mut m = MqttSettings::new(format!("mqtt://127.0.0.1:{port}"));
    m.client_id = Some("lookout-test".into());
    m.reconnect_initial_ms = 50;
    m.reconnect_max_ms = 300;
    m.keep_alive_s = 5;
    let mut s = AlertSettings::new(spool);
    s.mqtt = Some(m);
    s.spool.sync = false;
    s
}

fn send(alerter: &Alerter, n: u64) {
    let snap = n.is_multiple_of(5).then(|| snapshot(n));
    alerter.send("gate", &event(n), snap.as_deref());
}

/// Checks the events received: each of `1..=total` at least once, first arrivals in order, payloads as sent,
/// `delivered_late` on the first arrival as `late` says (`None`: either). A duplicate, QoS 1's right, is late.
fn check_events(sub: &Subscriber, total: u64, late: impl Fn(u64) -> Option<bool>) {
    let events = sub.events();
    let mut first: BTreeMap<u64, usize> = BTreeMap::new();
    let mut order = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let n = e["n"].as_u64().unwrap();
        let is_first = first.insert(n, i).is_none();
        if is_first {
            order.push(n);
        }
        let flagged = e.get("delivered_late") == Some(&serde_json::Value::Bool(true));
        if let Some(expect_late) = if is_first { late(n) } else { Some(true) } {
            assert_eq!(flagged, expect_late, "event {n}: delivered_late should be {expect_late}: {e}");
        }
        let mut expect: serde_json::Value = serde_json::from_slice(&event(n)).unwrap();
        if flagged {
            expect["delivered_late"] = true.into();
        }
        assert_eq!(e, &expect);
    }
    assert_eq!(order, (1..=total).collect::<Vec<_>>(), "first arrivals in order, none missing");
    eprintln!("{} events received for {total} sent ({} duplicates)", events.len(), events.len() as u64 - total);
}

fn check_snapshots(sub: &Subscriber, total: u64) {
    assert!(sub.seen.iter().filter(|m| m.topic.ends_with("/snapshot")).all(|m| m.topic == "lookout/gate/snapshot"));
    let got = sub.snapshot_numbers();
    let expect: Vec<u64> = (1..=total).filter(|n| n.is_multiple_of(5)).collect();
    // A retained snapshot comes again when the subscriber subscribes again; keep first arrivals.
    let mut firsts = Vec::new();
    for n in got {
        if !firsts.contains(&n) {
            firsts.push(n);
        }
    }
    assert_eq!(firsts, expect, "every snapshot, in order");
}

// ---------------------------------------------------------------------------------------------------------------

#[test]
fn every_event_arrives_in_order_across_a_broker_restart() {
    let bin = require_mosquitto!();
    capture_logs();
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker_dir = tmp.path().join("broker");
    let broker = Broker::start(&bin, &broker_dir, port, Mode::Persistent);
    let mut sub = Subscriber::start(port, "test-subscriber", true);
    sub.wait_for("the subscription", |s| s.subacks >= 1);
    broker.save_db();

    let alerter = Alerter::start(&settings(&tmp.path().join("spool"), port)).unwrap();
    sub.wait_for("online", |s| s.availability().last().is_some_and(|a| a == "online"));
    for n in 1..=20 {
        send(&alerter, n);
    }
    sub.wait_for("events 1..=20", |s| s.event_numbers().len() == 20);
    // And the alerter has their PUBACKs (20 events, 4 snapshots), so none is in flight when the broker dies.
    wait_until("the acknowledgements", || alerter.stats().destinations[0].delivered >= 24);
    let t_first = t0.elapsed();

    broker.kill();
    for n in 21..=40 {
        send(&alerter, n);
    }
    // 20 events and 4 snapshots wait in the spool.
    wait_until("the spool to hold what was sent while the broker is down", || {
        alerter.stats().destinations[0].spool_entries >= 24
    });
    let down = alerter.stats().destinations[0].clone();
    assert!(!down.connected && down.failures >= 1, "{down:?}");

    let t_restart = Instant::now();
    let _broker = Broker::start(&bin, &broker_dir, port, Mode::Persistent);
    for n in 41..=60 {
        send(&alerter, n);
    }
    sub.wait_for("events 1..=60 and the last snapshot", |s| {
        s.event_numbers().len() == 60 && s.snapshot_numbers().contains(&60)
    });
    let t_recovered = t_restart.elapsed();
    // 1..=20 went out at once, 21..=40 waited in the spool; 41..=60 were sent as the broker came back, and go
    // either way depending on whether the alerter had reconnected yet.
    check_events(&sub, 60, |n| (n <= 40).then_some(n > 20));
    check_snapshots(&sub, 60);

    let stats = alerter.shutdown(Duration::from_secs(5));
    sub.wait_for("offline after shutdown", |s| s.availability().last().is_some_and(|a| a == "offline"));
    let d = &stats.destinations[0];
    assert_eq!(d.destination, format!("mqtt://127.0.0.1:{port}"));
    assert_eq!((d.offered, d.dropped, d.rejected, d.spool_entries), (72, 0, 0, 0), "{d:?}");
    assert!(d.delivered >= 72 && d.delivered_late >= 24, "{d:?}");
    let availability = sub.availability();
    let onlines = availability.iter().filter(|a| *a == "online").count();
    assert!(onlines >= 2, "online before the kill and again after the restart: {availability:?}");
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("spool/mqtt"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".alert"))
        .collect();
    assert!(left.is_empty(), "the spool is empty: {left:?}");
    eprintln!(
        "first 20 delivered in {t_first:?}; after the restart all 60 were in within {t_recovered:?}; total {:?}",
        t0.elapsed()
    );
    show_logs();
}

/// A TCP relay between the alerter and the broker, so the test can cut the alerter's connection the way a
/// network failure does: the broker sees the connection drop without a DISCONNECT, and sends the last will.
struct Relay {
    #[allow(dead_code)]
    port: u16,
    stop: Arc<AtomicBool>,
    /// While false, accepted connections wait (for at most [`common::WAIT`]) before they reach the broker.
    open: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(upstream: u16) -> Relay {
        Self::start_with(upstream, true)
    }

    /// A relay that holds every connection it accepts, unanswered, until [`Relay::open`]: a broker slow to
    /// answer a CONNECT.
    fn held(upstream: u16) -> Relay {
        Self::start_with(upstream, false)
    }

    fn start_with(upstream: u16, open: bool) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicBool::new(open));
        let accepted = Arc::new(AtomicUsize::new(0));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (stop2, open2, accepted2, conns2, threads2) =
            (stop.clone(), open.clone(), accepted.clone(), conns.clone(), threads.clone());
        let acceptor = std::thread::spawn(move || {
            for down in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(down) = down else { continue };
                accepted2.fetch_add(1, Ordering::Relaxed);
                let deadline = Instant::now() + common::WAIT;
                while !open2.load(Ordering::Relaxed) && !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                conns2.lock().unwrap().extend([down.try_clone().unwrap(), up.try_clone().unwrap()]);
                for (mut from, mut to) in [(down.try_clone().unwrap(), up.try_clone().unwrap()), (up, down)] {
                    threads2.lock().unwrap().push(std::thread::spawn(move || {
                        let mut buf = [0u8; 8192];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    }));
                }
            }
        });
        Relay { port, stop, open, accepted, conns, threads, acceptor: Some(acceptor) }
    }

    /// Lets held connections through to the broker.
    fn open(&self) {
        self.open.store(true, Ordering::Relaxed);
    }

    /// Connections accepted so far.
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Cuts every connection through the relay; new ones are still accepted.
    fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the acceptor
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        self.cut();
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn the_last_will_says_offline_when_the_connection_drops() {
    let bin = require_mosquitto!();
    capture_logs();
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(&bin, &tmp.path().join("broker"), port, Mode::Ephemeral);
    let relay = Relay::start(port);
    let mut sub = Subscriber::start(port, "test-subscriber", false);
    sub.wait_for("the subscription", |s| s.subacks >= 1);

    let mut s = settings(&tmp.path().join("spool"), relay.port);
    // Leaves the broker time to see the old connection go before the new one comes.
    s.mqtt.as_mut().unwrap().reconnect_initial_ms = 300;
    let alerter = Alerter::start(&s).unwrap();
    sub.wait_for("online", |s| s.availability() == ["online"]);
    send(&alerter, 1);
    sub.wait_for("event 1", |s| s.event_numbers() == [1]);

    relay.cut();
    sub.wait_for("the last will", |s| s.availability() == ["online", "offline"]);
    sub.wait_for("online again", |s| s.availability() == ["online", "offline", "online"]);
    send(&alerter, 2);
    sub.wait_for("event 2", |s| s.event_numbers() == [1, 2]);

    alerter.shutdown(Duration::from_secs(5));
    sub.wait_for("offline", |s| s.availability() == ["online", "offline", "online", "offline"]);
    check_events(&sub, 2, |_| Some(false));

    // A client that comes later reads the retained state.
    let mut late = Subscriber::start(port, "late-subscriber", false);
    late.wait_for("the retained availability", |s| s.availability() == ["offline"]);
    assert!(late.seen.iter().any(|m| m.topic == "lookout/available" && m.retain));
    eprintln!("last will test took {:?}", t0.elapsed());
}

#[test]
fn alerts_made_while_the_connection_is_being_made_are_spooled_and_delivered_late() {
    let bin = require_mosquitto!();
    capture_logs();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(&bin, &tmp.path().join("broker"), port, Mode::Ephemeral);
    let mut sub = Subscriber::start(port, "test-subscriber", false);
    sub.wait_for("the subscription", |s| s.subacks >= 1);

    // The broker takes the TCP connection but answers the CONNECT only when the relay opens.
    let relay = Relay::held(port);
    let mut s = settings(&tmp.path().join("spool"), relay.port);
    s.mqtt.as_mut().unwrap().connect_timeout_s = 60;
    let alerter = Alerter::start(&s).unwrap();
    wait_until("the alerter to connect to the relay", || relay.accepted() >= 1);
    for n in 1..=3 {
        send(&alerter, n);
    }
    relay.open();
    sub.wait_for("events 1..=3", |s| s.event_numbers().len() >= 3);
    send(&alerter, 4);
    sub.wait_for("event 4", |s| s.event_numbers().contains(&4));
    // Made before the broker had answered: from the spool, late. Made once connected: live.
    check_events(&sub, 4, |n| Some(n <= 3));
    let stats = alerter.shutdown(Duration::from_secs(5));
    let d = &stats.destinations[0];
    assert_eq!((d.delivered, d.delivered_late, d.spool_entries), (4, 3, 0), "{d:?}");
    assert_eq!(relay.accepted(), 1, "one connection, held, then answered");
}

#[test]
fn alerts_left_at_shutdown_are_delivered_by_the_next_start() {
    let bin = require_mosquitto!();
    capture_logs();
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let spool = tmp.path().join("spool");

    // No broker yet: a warning, not an error; the alerts wait in the spool.
    let alerter = Alerter::start(&settings(&spool, port)).unwrap();
    for n in 1..=5 {
        send(&alerter, n);
    }
    let stats = alerter.shutdown(Duration::from_millis(300));
    let d = &stats.destinations[0];
    assert_eq!((d.offered, d.delivered, d.spool_entries, d.dropped), (6, 0, 6, 0), "{d:?}");
    assert!(d.failures >= 1 && !d.connected, "{d:?}");

    let _broker = Broker::start(&bin, &tmp.path().join("broker"), port, Mode::Ephemeral);
    let mut sub = Subscriber::start(port, "test-subscriber", false);
    sub.wait_for("the subscription", |s| s.subacks >= 1);
    let alerter = Alerter::start(&settings(&spool, port)).unwrap();
    sub.wait_for("online", |s| s.availability().last().is_some_and(|a| a == "online"));
    send(&alerter, 6);
    sub.wait_for("events 1..=6", |s| s.event_numbers().len() == 6);
    check_events(&sub, 6, |n| Some(n <= 5));
    let stats = alerter.shutdown(Duration::from_secs(5));
    let d = &stats.destinations[0];
    assert_eq!((d.delivered_late, d.spool_entries), (6, 0), "5 events and a snapshot came from the spool: {d:?}");
    eprintln!("spool across restarts took {:?}", t0.elapsed());
}

#[test]
fn a_refused_login_is_a_warning_that_names_the_broker_but_not_the_password() {
    let bin = require_mosquitto!();
    capture_logs();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(&bin, &tmp.path().join("broker"), port, Mode::NoLogin);
    let mut s = settings(&tmp.path().join("spool"), port);
    let password = format!("hunter2-{port}");
    s.mqtt.as_mut().unwrap().url = format!("mqtt://watcher:{password}@127.0.0.1:{port}");
    let alerter = Alerter::start(&s).unwrap();
    send(&alerter, 1);
    wait_until("two refused logins", || alerter.stats().destinations[0].failures >= 2);
    let stats = alerter.shutdown(Duration::from_millis(100));
    assert_eq!(stats.destinations[0].spool_entries, 1, "the event waits in the spool: {stats:?}");

    let logs = logs();
    let warning = logs
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&format!("mqtt://127.0.0.1:{port}")))
        .unwrap_or_else(|| panic!("no warning names the broker:\n{logs}"));
    assert!(warning.contains("check the MQTT username and password"), "{warning}");
    assert!(!logs.contains(&password), "the password is in the logs:\n{logs}");
    show_logs();
}

/// A private CA and a certificate for `localhost` and 127.0.0.1 signed by it, made with the `openssl` command
/// in `dir`; false when there is no `openssl`.
fn make_certificates(dir: &Path) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output();
        match out {
            Ok(o) if o.status.success() => Some(()),
            Ok(o) => panic!("openssl {args:?} failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(_) => None,
        }
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let made = (|| {
        run(&[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=lookout test CA"],
            &["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ]
        .concat())?;
        run(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]].concat())?;
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ])
    })();
    if made.is_none() {
        return false;
    }
    // mosquitto started as root reads them as the `mosquitto` user.
    use std::os::unix::fs::PermissionsExt;
    for f in ["ca.pem", "server.pem", "server.key"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    true
}

#[test]
fn mqtts_with_a_private_ca() {
    let bin = require_mosquitto!();
    capture_logs();
    let tmp = tempfile::tempdir().unwrap();
    let broker_dir = tmp.path().join("broker");
    if !make_certificates(&broker_dir) {
        eprintln!("SKIPPED: no openssl command to make test certificates");
        return;
    }
    let (port, tls_port) = (free_port(), free_port());
    let _broker = Broker::start(&bin, &broker_dir, port, Mode::Tls(tls_port));
    let mut sub = Subscriber::start(port, "test-subscriber", false);
    sub.wait_for("the subscription", |s| s.subacks >= 1);

    let mut s = settings(&tmp.path().join("spool"), tls_port);
    let m = s.mqtt.as_mut().unwrap();
    m.url = format!("mqtts://localhost:{tls_port}");
    m.ca_file = Some(broker_dir.join("ca.pem"));
    let alerter = Alerter::start(&s).unwrap();
    // Once connected, so that event 1 goes out live (made before the CONNACK, it would be spooled and late).
    sub.wait_for("online over TLS", |s| s.availability() == ["online"]);
    send(&alerter, 1);
    sub.wait_for("event 1 over TLS", |s| s.event_numbers() == [1] && s.availability() == ["online"]);
    alerter.shutdown(Duration::from_secs(5));
    check_events(&sub, 1, |_| Some(false));

    // Without the private CA the broker's certificate is not trusted: a warning, and the alert waits.
    let mut s = settings(&tmp.path().join("spool-untrusted"), tls_port);
    s.mqtt.as_mut().unwrap().url = format!("mqtts://localhost:{tls_port}");
    let alerter = Alerter::start(&s).unwrap();
    send(&alerter, 2);
    wait_until("a failed TLS handshake", || alerter.stats().destinations[0].failures >= 1);
    let stats = alerter.shutdown(Duration::from_millis(100));
    assert_eq!(stats.destinations[0].delivered, 0, "{stats:?}");
    let logs = logs();
    assert!(logs.contains(&format!("mqtts://localhost:{tls_port}: TLS failed")), "{logs}");
    show_logs();
}
