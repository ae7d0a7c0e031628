//! Alerts end to end, through the binary: `lookout watch FILE --config cfg.toml` with `[alerts.mqtt]` or
//! `[[alerts.webhooks]]`, the tiny model, and a broker (mosquitto) or an HTTP server started by the test on
//! 127.0.0.1 on a free port.
//!
//! What is checked, against `events.jsonl` (the source of truth): every line arrives, first arrivals in the
//! order of the file, none missing, each payload the line itself (plus `delivered_late` on those that waited in
//! the spool); duplicates, QoS 1's right, are allowed and counted. Events are told apart by
//! `event_id` + `type` + `frame`.
//!
//! Nothing sleeps blindly: every wait polls a condition against a deadline. Without mosquitto installed
//! (`apt install mosquitto`, or `deploy/install-deps.sh`) the MQTT tests say so and pass; the webhook test always
//! runs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[macro_use]
#[path = "common/mqtt.rs"]
mod mqtt;
#[path = "common/hook.rs"]
mod hook;

use common::{WAIT, fixture, free_port, spool_entries, tiny_model};
use hook::{Hook, Reply};
use mqtt::{Broker, Mode, Msg, Subscriber};

/// Longest a whole `lookout watch` run may take (the machine may be busy).
const RUN_DEADLINE: Duration = Duration::from_secs(300);
/// Lines written to events.jsonl while the broker is down.
const OUTAGE_LINES: usize = 60;
/// The MQTT password of the tests: it must never show up in what lookout prints.
const PASSWORD: &str = "pw-Zq8v3-never-printed";

// ---------------------------------------------------------------------------------------------------------------
// lookout.

/// `lookout watch` running in the background, its stdout (the JSON summary) and stderr going to files.
struct Run {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Run {
    /// `threshold`: of the two queries; 1.0 finds nothing.
    fn start(source: &Path, out: &Path, config: &Path, threshold: &str) -> Run {
        Self::start_with(source, out, config, threshold, false)
    }

    /// [`Run::start`], with clips (and their `clips` lines) when `clips`.
    fn start_with(source: &Path, out: &Path, config: &Path, threshold: &str, clips: bool) -> Run {
        let stdout = out.with_extension("stdout");
        let stderr = out.with_extension("stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_lookout"))
            .env("RUST_LOG", "lookout=debug,warn")
            .arg("watch")
            .arg(source)
            .arg("--out")
            .arg(out)
            .arg("--config")
            .arg(config)
            .arg("-m")
            .arg(tiny_model("owlvit"))
            // Clips are tested in watch_clips.rs; here the lines are the start/update/end of the events.
            .args(["--intra-threads", "1", "--no-wall-time", "--json"])
            .args(if clips { &[][..] } else { &["--no-clips"][..] })
            .args(["-q", "a person riding a bicycle", "-q", "a car", "--threshold", threshold])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Run { child, stdout, stderr }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for the end of the run; returns its status, its summary and its stderr.
    fn finish(mut self) -> (ExitStatus, serde_json::Value, String) {
        let deadline = Instant::now() + RUN_DEADLINE;
        let status = loop {
            if let Some(s) = self.exited() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("lookout watch did not finish in {RUN_DEADLINE:?}:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = std::fs::read(&self.stdout).unwrap();
        let stderr = self.stderr();
        let summary = serde_json::from_slice(&stdout)
            .unwrap_or_else(|e| panic!("no JSON summary ({e}) ({status}); stderr:\n{stderr}"));
        (status, summary, stderr)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of `events.jsonl`, parsed.
fn event_lines(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn line_count(out: &Path) -> usize {
    std::fs::read_to_string(out.join("events.jsonl")).map(|s| s.lines().count()).unwrap_or(0)
}

/// What tells events apart: `event_id`, `type` and `frame` (a line without a frame has `None`).
fn key(e: &serde_json::Value) -> (String, String, Option<u64>) {
    (e["event_id"].as_str().unwrap().to_string(), e["type"].as_str().unwrap().to_string(), e["frame"].as_u64())
}

fn is_late(e: &serde_json::Value) -> bool {
    e.get("delivered_late") == Some(&serde_json::Value::Bool(true))
}

/// Checks what arrived (in order of arrival, duplicates included) against `events.jsonl`: first arrivals in the
/// file's order, none missing, each the line itself (plus `delivered_late`); duplicates allowed.
/// Returns whether each line's first arrival was late.
fn check_arrivals(lines: &[serde_json::Value], arrived: &[serde_json::Value]) -> Vec<bool> {
    let index: BTreeMap<_, usize> = lines.iter().enumerate().map(|(i, l)| (key(l), i)).collect();
    assert_eq!(index.len(), lines.len(), "event_id + type + frame tells the lines of events.jsonl apart");
    let mut first: Vec<Option<bool>> = vec![None; lines.len()];
    let mut order = Vec::new();
    let mut duplicates = 0;
    for e in arrived {
        let i = *index.get(&key(e)).unwrap_or_else(|| panic!("an alert that is not in events.jsonl: {e}"));
        let mut expect = lines[i].clone();
        if is_late(e) {
            expect["delivered_late"] = true.into();
        }
        assert_eq!(e, &expect, "the alert is the line of events.jsonl");
        match first[i] {
            None => {
                first[i] = Some(is_late(e));
                order.push(i);
            }
            // QoS 1's right: sent again by lookout after a lost acknowledgement (then late), or by the broker
            // to the subscriber after the restart.
            Some(_) => duplicates += 1,
        }
    }
    let missing: Vec<usize> = (0..lines.len()).filter(|i| first[*i].is_none()).collect();
    assert!(missing.is_empty(), "lines of events.jsonl never delivered: {missing:?}");
    assert_eq!(order, (0..lines.len()).collect::<Vec<_>>(), "first arrivals in the order of events.jsonl");
    eprintln!("{} alerts for {} lines ({duplicates} duplicates)", arrived.len(), lines.len());
    first.into_iter().map(Option::unwrap).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// The broker and the subscriber.

/// What the tests here read from what the subscriber received.
trait Lines {
    /// The events received on `lookout/bikes/events`, in order of arrival (duplicates included).
    fn bikes_events(&self) -> Vec<serde_json::Value>;
    /// Distinct events received.
    fn distinct(&self) -> usize;
}

impl Lines for Subscriber {
    fn bikes_events(&self) -> Vec<serde_json::Value> {
        for m in self.seen.iter().filter(|m| m.topic.ends_with("/events")) {
            assert_eq!(m.topic, "lookout/bikes/events");
        }
        self.events()
    }

    fn distinct(&self) -> usize {
        let mut keys: Vec<_> = self.events().iter().map(key).collect();
        keys.sort();
        keys.dedup();
        keys.len()
    }
}

/// A config whose `[alerts.mqtt]` points at the broker on `port`, with the password in a file, and fast
/// reconnects.
fn mqtt_config(dir: &Path, port: u16) -> PathBuf {
    let pw = dir.join("mqtt-password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let path = dir.join("lookout.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[alerts.mqtt]
url = "mqtt://127.0.0.1:{port}"
username = "lookout"
password_file = "{}"
client_id = "lookout-e2e"
keep_alive_s = 5
connect_timeout_s = 2
reconnect_initial_ms = 50
reconnect_max_ms = 300
"#,
            pw.display()
        ),
    )
    .unwrap();
    path
}

/// The file watched: bikes.mp4, whose tiny-model events (at threshold 0.45) span the whole clip, played
/// `times` times over (re-encoded once by GStreamer), so that a run lasts long enough to hold an outage.
fn long_clip(dir: &Path, times: usize) -> PathBuf {
    let path = dir.join("bikes.mp4");
    let bikes = fixture("bikes.mp4");
    if times == 1 {
        std::fs::copy(&bikes, &path).unwrap();
        return path;
    }
    let mut desc = format!(
        "concat name=c ! videoconvert ! x264enc speed-preset=ultrafast key-int-max=25 ! mp4mux ! filesink location={}",
        path.display()
    );
    for _ in 0..times {
        desc += &format!(" filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! c.", bikes.display());
    }
    let status = Command::new("gst-launch-1.0").arg("-q").args(desc.split(' ')).status().unwrap();
    assert!(status.success(), "could not make {}", path.display());
    path
}

// ---------------------------------------------------------------------------------------------------------------

#[test]
fn every_event_line_arrives_in_order_across_a_broker_restart_during_the_run() {
    let bin = require_mosquitto!();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker_dir = tmp.path().join("broker");
    let broker = Broker::start(&bin, &broker_dir, port, Mode::Persistent);
    let mut sub = Subscriber::start(port, "test-subscriber", true);
    sub.wait_for("the subscription", |s| s.subacks >= 1);
    broker.save_db();

    let clip = long_clip(tmp.path(), 3);
    let config = mqtt_config(tmp.path(), port);
    let out = tmp.path().join("out");
    let t0 = Instant::now();
    let mut run = Run::start(&clip, &out, &config, "0.45");

    // Some events arrive live; then the broker dies while lookout goes on writing events.
    sub.wait_for("the first events, live", |s| s.distinct() >= 5);
    broker.stop();
    let at_kill = line_count(&out);
    let t_kill = t0.elapsed();
    // While it is down, more events are written (and spooled); then it comes back on the same port.
    let deadline = Instant::now() + WAIT;
    while line_count(&out) < at_kill + OUTAGE_LINES && run.exited().is_none() {
        assert!(Instant::now() < deadline, "no events written while the broker was down");
        std::thread::sleep(Duration::from_millis(10));
    }
    let at_restart = line_count(&out);
    let still_running = run.exited().is_none();
    let t_restart = t0.elapsed();
    let _broker = Broker::start(&bin, &broker_dir, port, Mode::Persistent);
    let (status, summary, stderr) = run.finish();
    assert!(status.success(), "{status}:\n{stderr}");
    assert!(
        still_running && at_restart >= at_kill + OUTAGE_LINES,
        "the outage must fall inside the run: {at_kill} lines at the kill, {at_restart} at the restart"
    );
    let src = &summary["sources"][0];
    assert_eq!(src["frames_processed"], src["frames_decoded"], "{summary}");

    let lines = event_lines(&out);
    sub.wait_for("every line of events.jsonl", |s| s.distinct() >= lines.len());
    let late = check_arrivals(&lines, &sub.bikes_events());
    let mqtt_log: Vec<&str> =
        stderr.lines().filter(|l| l.contains("MQTT broker") || l.contains("alerts for")).collect();
    // Every line written while the broker was down (handed over before the restarted broker could answer a
    // CONNECT) waited in the spool, and says so.
    for (i, l) in late.iter().enumerate().take(at_restart).skip(at_kill) {
        assert!(
            *l,
            "line {i}, written while the broker was down (lines {at_kill}..{at_restart}), is flagged \
             delivered_late: {}\nlookout said:\n{}",
            lines[i],
            mqtt_log.join("\n")
        );
    }
    let n_late = late.iter().filter(|l| **l).count();
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, _) in late.iter().enumerate().filter(|(_, l)| **l) {
        match runs.last_mut() {
            Some(r) if r.1 + 1 == i => r.1 = i,
            _ => runs.push((i, i)),
        }
    }
    eprintln!("lines delivered late: {runs:?} of {}", lines.len());
    for l in &mqtt_log {
        eprintln!("  lookout: {l}");
    }
    assert!(late[..3].iter().all(|l| !l), "the first lines went out live");
    // Whether the lines after the restart go out live depends on how soon lookout notices the broker went away
    // (at once, or at the next keep-alive) and how soon it has caught up: not checked.
    assert!(sub.availability().iter().filter(|a| *a == "online").count() >= 2, "online again after the restart");
    sub.wait_for("offline at the end", |s| s.availability().last().is_some_and(|a| a == "offline"));
    assert_eq!(spool_entries(&out.join("alert-spool/mqtt")), 0, "the spool is empty at the end");
    assert!(!stderr.contains(PASSWORD), "the password is never printed:\n{stderr}");
    eprintln!(
        "{} lines; broker killed at {t_kill:?} (line {at_kill}), back at {t_restart:?} (line {at_restart}); {n_late} \
         delivered late; run took {:?}",
        lines.len(),
        t0.elapsed()
    );
}

#[test]
fn a_broker_down_for_the_whole_run_gets_every_alert_from_the_next_run() {
    let bin = require_mosquitto!();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = mqtt_config(tmp.path(), port);
    let clip = long_clip(tmp.path(), 1);
    let out = tmp.path().join("out");

    // No broker at all: the run completes, events.jsonl is complete, and every line waits in the spool.
    let (status, summary, stderr) = Run::start(&clip, &out, &config, "0.45").finish();
    assert!(status.success(), "{status}:\n{stderr}");
    assert_eq!(summary["sources"][0]["frames_processed"], 250, "{summary}");
    let lines = event_lines(&out);
    assert!(lines.len() >= 20, "bikes.mp4 gives events: {}", lines.len());
    // The summary counts events (their starts), not lines.
    let starts = lines.iter().filter(|l| l["type"] == "start").count();
    assert_eq!(summary["events"], starts, "{summary}");
    let spool = out.join("alert-spool/mqtt");
    assert_eq!(spool_entries(&spool), lines.len(), "each line is in the spool");
    assert!(
        stderr.contains(&format!("mqtt://127.0.0.1:{port}")) && stderr.contains("left in"),
        "the log names the broker and says what waits:\n{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "the password is never printed:\n{stderr}");

    // The broker appears; the next run (which finds nothing new: threshold 1) delivers them all, late, in order.
    let broker = Broker::start(&bin, &tmp.path().join("broker"), port, Mode::Persistent);
    let mut sub = Subscriber::start(port, "test-subscriber", true);
    sub.wait_for("the subscription", |s| s.subacks >= 1);
    let (status, _, stderr) = Run::start(&clip, &out, &config, "1.0").finish();
    assert!(status.success(), "{status}:\n{stderr}");
    assert_eq!(event_lines(&out), lines, "the second run adds no event");
    sub.wait_for("every line of events.jsonl", |s| s.distinct() >= lines.len());
    let late = check_arrivals(&lines, &sub.bikes_events());
    assert!(late.iter().all(|l| *l), "every alert came from the spool, so is late");
    assert_eq!(spool_entries(&spool), 0, "the spool is empty");
    drop(sub);
    drop(broker);
}

// ---------------------------------------------------------------------------------------------------------------
// Webhooks.

#[test]
fn a_webhook_that_fails_at_first_gets_every_event_in_order_after_retries() {
    let tmp = tempfile::tempdir().unwrap();
    const FAILURES: usize = 5;
    let hook = Hook::start(0, &[Reply::Status(503); FAILURES]);
    let config = tmp.path().join("lookout.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[alerts.webhooks]]
url = "http://127.0.0.1:{}/hook"
headers = {{ Authorization = "Bearer tok-{PASSWORD}" }}
timeout_ms = 2000
retry_initial_ms = 100
retry_max_ms = 400
"#,
            hook.port
        ),
    )
    .unwrap();
    let clip = long_clip(tmp.path(), 1);
    let out = tmp.path().join("out");
    let (status, summary, stderr) = Run::start(&clip, &out, &config, "0.45").finish();
    assert!(status.success(), "{status}:\n{stderr}");
    assert_eq!(summary["sources"][0]["frames_processed"], 250, "{summary}");
    let lines = event_lines(&out);
    assert!(lines.len() >= 20, "bikes.mp4 gives events: {}", lines.len());
    // The run waits (up to 5 s) for deliveries at its end; what is left would be in the spool.
    assert_eq!(spool_entries(&out.join("alert-spool")), 0);
    let requests = hook.requests();
    let ok: Vec<serde_json::Value> = requests.iter().filter(|r| r.ok()).map(|r| r.body.clone()).collect();
    let late = check_arrivals(&lines, &ok);
    assert!(late[0], "the first event waited in the spool through the failures");
    let auth = format!("Bearer tok-{PASSWORD}");
    assert!(requests.iter().all(|r| r.header("authorization") == Some(&*auth)), "the header is sent");
    // Retries back off: 100 ms, 200 ms, 400 ms, 400 ms, each less up to a quarter of jitter.
    assert_eq!(requests.iter().take(FAILURES).filter(|r| r.status == Some(503)).count(), FAILURES);
    let gaps: Vec<Duration> = requests.windows(2).take(FAILURES).map(|w| w[1].at - w[0].at).collect();
    for (i, (gap, min)) in gaps.iter().zip([100, 200, 400, 400, 400]).enumerate() {
        assert!(*gap >= Duration::from_millis(min) * 3 / 4, "retry {i} came after {gap:?}, before the backoff");
    }
    assert!(!stderr.contains(PASSWORD), "header values are never printed:\n{stderr}");
    eprintln!("retry gaps {gaps:?}");
}

#[test]
fn alert_mistakes_in_the_config_are_reported_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        // A bad port: named, without the password.
        (format!("[alerts.mqtt]\nurl = \"mqtt://lookout:{PASSWORD}@broker:http\"\n"), "port \"http\" is not a port"),
        // A password file that is not there: named.
        (
            "[alerts.mqtt]\nurl = \"mqtt://broker\"\npassword_file = \"/nonexistent/mqtt-pw\"\n".into(),
            "/nonexistent/mqtt-pw",
        ),
        ("[[alerts.webhooks]]\nurl = \"ftp://example.com/x\"\n".into(), "scheme ftp:// is not supported"),
        ("[alerts.mqtt]\nurl = \"mqtt://broker\"\nkeep_alive = 3\n".into(), "unknown field `keep_alive`"),
    ];
    for (i, (text, expect)) in cases.iter().enumerate() {
        let config = tmp.path().join(format!("c{i}.toml"));
        std::fs::write(&config, text).unwrap();
        // The model does not exist: the alert settings are checked before it is looked for.
        let o = Command::new(env!("CARGO_BIN_EXE_lookout"))
            .arg("watch")
            .arg(fixture("bikes.mp4"))
            .args(["-q", "a person", "-m", "/nonexistent/model", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(tmp.path().join("out"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(expect) && !stderr.contains("/nonexistent/model"), "{text}: {stderr}");
        assert!(!stderr.contains(PASSWORD), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn clips_lines_and_snapshots_reach_the_broker_as_home_assistant_expects() {
    let bin = require_mosquitto!();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(&bin, &tmp.path().join("broker"), port, Mode::Persistent);
    let mut sub = Subscriber::start(port, "test-subscriber", true);
    sub.wait_for("the subscription", |s| s.subacks >= 1);
    let config = mqtt_config(tmp.path(), port);
    let clip = long_clip(tmp.path(), 1);
    let out = tmp.path().join("out");

    let (status, summary, stderr) = Run::start_with(&clip, &out, &config, "0.45", true).finish();
    assert!(status.success(), "{status}:\n{stderr}");
    let lines = event_lines(&out);
    let clips_lines = lines.iter().filter(|l| l["type"] == "clips").count();
    let c = &summary["clips"];
    let (written, failed) = (c["written"].as_u64().unwrap(), c["failed"].as_u64().unwrap());
    assert!(clips_lines >= 10 && clips_lines as u64 == written + failed, "one clips line per event: {summary}");
    for l in stderr.lines().filter(|l| l.contains("alerts for")) {
        eprintln!("  lookout: {l}");
    }
    // On a machine too busy for the alerts to keep up (evidence encoding at full tilt), what was not delivered
    // within the shutdown's 5 s waits in the spool: the next start delivers it (late), so none is lost.
    let spooled = spool_entries(&out.join("alert-spool/mqtt"));
    if spooled > 0 {
        eprintln!("{spooled} alerts left in the spool at the end of the run; a second run delivers them");
        let (status, _, stderr) = Run::start(&clip, &out, &config, "1.0").finish();
        assert!(status.success(), "{status}:\n{stderr}");
        assert_eq!(spool_entries(&out.join("alert-spool/mqtt")), 0, "{stderr}");
    }
    // Every line, the clips lines too, in the order of events.jsonl.
    sub.wait_for("every line of events.jsonl", |s| s.distinct() >= lines.len());
    let late = check_arrivals(&lines, &sub.bikes_events());
    if spooled == 0 {
        assert!(late.iter().all(|l| !l), "the broker was up all along");
    }

    // Snapshots: JPEG on <prefix>/<source>/snapshot, once the evidence writer makes them.
    // (A failed clip's line names the paths that were meant; a written one names what exists.)
    let with_snapshot = lines
        .iter()
        .filter(|l| l["type"] == "clips" && l["clips"]["status"] == "written" && l["clips"]["snapshot"].is_string())
        .count();
    // A snapshot follows its clips line.
    let count = |s: &Subscriber| s.seen.iter().filter(|m| m.topic.ends_with("/snapshot")).count();
    sub.wait_for("every snapshot", |s| count(s) >= with_snapshot);
    let snapshots: Vec<&Msg> = sub.seen.iter().filter(|m| m.topic.ends_with("/snapshot")).collect();
    assert_eq!(snapshots.len(), with_snapshot, "one snapshot per written clips line that names one");
    for m in &snapshots {
        assert_eq!(m.topic, "lookout/bikes/snapshot");
        assert!(m.payload.starts_with(&[0xff, 0xd8]), "a JPEG");
    }

    // A dashboard that connects later gets the retained state at once: offline (lookout has stopped) and the
    // last snapshot, but no event.
    let mut late_sub = Subscriber::start(port, "dashboard", false);
    late_sub.wait_for("the retained availability", |s| !s.availability().is_empty());
    if with_snapshot > 0 {
        late_sub.wait_for("the retained snapshot", |s| s.seen.iter().any(|m| m.topic.ends_with("/snapshot")));
    }
    assert_eq!(late_sub.availability(), ["offline"]);
    assert!(late_sub.seen.iter().all(|m| m.retain && !m.topic.ends_with("/events")), "only retained state");
    eprintln!("{} lines ({clips_lines} clips lines), {} snapshots", lines.len(), snapshots.len());
}
