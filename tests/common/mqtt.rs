//! A real MQTT broker (mosquitto) and a subscriber for the alert tests, both on 127.0.0.1.
//!
//! Included by the tests that need it with `#[macro_use] #[path = "common/mqtt.rs"] mod mqtt;`, next to
//! `mod common;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use crate::common::{WAIT, wait_until};

/// The mosquitto binary, where apt puts it (`/usr/sbin` is not on every PATH).
pub fn mosquitto() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// The mosquitto binary, or returns from the test saying it was skipped and why.
macro_rules! require_mosquitto {
    () => {
        match mqtt::mosquitto() {
            Some(bin) => bin,
            None => {
                eprintln!(
                    "SKIPPED: mosquitto is not installed (apt install mosquitto, or deploy/install-deps.sh); \
                     the MQTT alert tests need a real broker"
                );
                return;
            }
        }
    };
}

/// How a test broker is configured.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Forgets everything when it stops.
    Ephemeral,
    /// Keeps sessions and retained messages in its directory (saved on SIGUSR1), so that a subscriber's
    /// subscription survives a restart.
    Persistent,
    /// Refuses every client.
    NoLogin,
    /// Also listens with TLS on this port, with `ca.pem`, `server.pem` and `server.key` from its directory.
    Tls(u16),
}

/// A mosquitto process; killed when dropped.
pub struct Broker {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Broker {
    /// Starts mosquitto on 127.0.0.1:`port`, with its config, log and (when persistent) database in `dir`,
    /// and waits until the port takes connections.
    pub fn start(bin: &Path, dir: &Path, port: u16, mode: Mode) -> Broker {
        std::fs::create_dir_all(dir).unwrap();
        // mosquitto started as root drops to the `mosquitto` user, which must be able to write the database.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut conf = format!("listener {port} 127.0.0.1\n");
        conf += match mode {
            Mode::Ephemeral => "allow_anonymous true\npersistence false\n".to_string(),
            Mode::Persistent => format!(
                "allow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 0\n",
                dir.display()
            ),
            // No password file either: every login is refused.
            Mode::NoLogin => "allow_anonymous false\npersistence false\n".to_string(),
            Mode::Tls(tls_port) => format!(
                "allow_anonymous true\npersistence false\nlistener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\n\
                 certfile {d}/server.pem\nkeyfile {d}/server.key\n",
                d = dir.display()
            ),
        }
        .as_str();
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("mosquitto.log")).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut broker = Broker { child, port, dir: dir.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
            {
                return broker;
            }
            if let Some(status) = broker.child.try_wait().unwrap() {
                panic!("mosquitto exited ({status}) before listening on {port}:\n{}", broker.log());
            }
            assert!(Instant::now() < deadline, "mosquitto is not listening on {port} after 10 s:\n{}", broker.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    /// Has mosquitto write its database (SIGUSR1) and waits until the file is there.
    pub fn save_db(&self) {
        let db = self.dir.join("mosquitto.db");
        let _ = std::fs::remove_file(&db);
        let ok = Command::new("kill").arg("-USR1").arg(self.child.id().to_string()).status().unwrap().success();
        assert!(ok, "kill -USR1 mosquitto failed");
        wait_until("mosquitto to save its database", || db.is_file());
    }

    /// Kills mosquitto (SIGKILL: no goodbye to its clients, and what it queued in memory is lost) and waits for
    /// it to be gone.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Stops mosquitto (SIGTERM) and waits for it to be gone. It drops its clients' connections without a word,
    /// as a crash does, but first saves what it has queued for a persistent session: a message it has
    /// acknowledged must reach the subscriber after the restart, or a test would blame lookout for the broker's
    /// loss.
    pub fn stop(mut self) {
        let ok = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap().success();
        assert!(ok, "kill -TERM mosquitto failed");
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "mosquitto did not stop on SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A message the subscriber received.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// A rumqttc client subscribed to `lookout/#` at QoS 1, on its own thread, reconnecting by itself.
pub struct Subscriber {
    rx: Receiver<Option<Msg>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Everything received so far, in order.
    pub seen: Vec<Msg>,
    /// Subscriptions acknowledged so far (one per connection).
    pub subacks: usize,
}

impl Subscriber {
    /// `persistent`: a session the broker keeps (clean session off), so it queues messages while we are away;
    /// otherwise one it forgets (it still sends the retained messages on subscribing).
    pub fn start(port: u16, client_id: &str, persistent: bool) -> Subscriber {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        // Snapshots are JPEGs of tens of kB: rumqttc refuses incoming packets over 10 kB by default.
        o.set_keep_alive(Duration::from_secs(5)).set_clean_session(!persistent).set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut connection) = Client::new(o, 16);
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("test-subscriber".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match connection.recv_timeout(Duration::from_millis(100)) {
                        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                            client.try_subscribe("lookout/#", QoS::AtLeastOnce).unwrap();
                        }
                        Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                            let _ = tx.send(None);
                        }
                        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                            let m = Msg { topic: p.topic.clone(), payload: p.payload.to_vec(), retain: p.retain };
                            let _ = tx.send(Some(m));
                        }
                        Ok(Ok(_)) | Err(_) => {}
                        // The broker is down: try again a little later (the next recv reconnects).
                        Ok(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
            .unwrap();
        Subscriber { rx, stop, thread: Some(thread), seen: Vec::new(), subacks: 0 }
    }

    /// Collects messages until `cond` holds, or fails at the deadline showing what came.
    pub fn wait_for(&mut self, what: &str, cond: impl Fn(&Subscriber) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond(self) {
            match self.rx.recv_deadline(deadline) {
                Ok(Some(m)) => self.seen.push(m),
                Ok(None) => self.subacks += 1,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "timed out after {WAIT:?} waiting for {what}; received {} messages: {:?}",
                    self.seen.len(),
                    self.seen.iter().rev().take(20).map(describe).collect::<Vec<_>>()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!("the subscriber thread died waiting for {what}"),
            }
        }
    }

    /// The payloads seen on the availability topic, in order.
    pub fn availability(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter(|m| m.topic == "lookout/available")
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect()
    }

    /// The events seen on any `.../events` topic, in order of arrival (duplicates included).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.seen
            .iter()
            .filter(|m| m.topic.ends_with("/events"))
            .map(|m| serde_json::from_slice(&m.payload).expect("an event is JSON"))
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// A message in one line: its topic, whether retained, and its payload (snapshots by their size).
pub fn describe(m: &Msg) -> String {
    let body = if m.topic.ends_with("/snapshot") {
        format!("<{} bytes>", m.payload.len())
    } else {
        String::from_utf8_lossy(&m.payload).into_owned()
    };
    format!("{}{} {body}", m.topic, if m.retain { " (retained)" } else { "" })
}
