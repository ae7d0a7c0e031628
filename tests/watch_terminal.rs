//! What an operator sees and does at the terminal, with the real binary, real GStreamer, real ONNX Runtime and the
//! tiny model:
//! - the progress bar of a file run (frames out of the total, frames per second, ETA, events), drawn only when
//!   stderr is a terminal (here a pseudo-terminal from util-linux's `script`), with the log lines of the run
//!   written above it, as a terminal emulator (the `vt100` crate) shows them;
//! - Ctrl-C: the first drains, a second exits at once, keeping what was already written (events.jsonl whole,
//!   every alert in the spool for the next start, those that were still in memory or in flight included).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{WAIT, fixture, free_port, spool_entries, tiny_model, wait_until};

fn lookout() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lookout"));
    c.env("RUST_LOG", "lookout=info,warn");
    c
}

/// An H.264 MP4 of `frames` test-pattern frames (320x240, 25 fps).
fn make_clip(path: &Path, frames: u32) {
    let desc = format!(
        "videotestsrc num-buffers={frames} pattern=smpte ! video/x-raw,width=320,height=240,framerate=25/1 ! \
         x264enc speed-preset=ultrafast key-int-max=25 ! mp4mux ! filesink location={}",
        path.display()
    );
    let ok = Command::new("gst-launch-1.0").arg("-q").args(desc.split(' ')).status().unwrap().success();
    assert!(ok, "could not make {}", path.display());
}

/// Sends `signal` (e.g. "-INT") to `child`.
fn signal(child: &Child, signal: &str) {
    let ok = Command::new("kill").arg(signal).arg(child.id().to_string()).status().unwrap().success();
    assert!(ok, "kill {signal} failed");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The event lines written so far (each must be a whole JSON object).
fn event_lines(out: &Path) -> Vec<serde_json::Value> {
    read(&out.join("events.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a broken line in events.jsonl ({e}): {l}")))
        .collect()
}

/// Runs `command` (a shell command line) on a pseudo-terminal with util-linux's `script`, and returns its exit
/// status and every byte it drew.
fn on_a_terminal(command: &str, rust_log: &str) -> (std::process::ExitStatus, Vec<u8>) {
    let Some(script) = ["/usr/bin/script", "/bin/script"].into_iter().map(PathBuf::from).find(|p| p.is_file()) else {
        panic!("util-linux's `script` is missing (apt install bsdutils; deploy/install-deps.sh installs it)");
    };
    let o = Command::new(&script)
        .args(["--quiet", "--return", "--command"])
        .arg(command)
        .arg("/dev/null")
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (o.status, o.stdout)
}

#[test]
fn a_file_run_shows_a_progress_bar_on_a_terminal_and_none_in_a_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let bikes = fixture("bikes.mp4");
    let frames = lookout::sink::probe_video(&bikes).unwrap().frames;
    let cmd = |out: &str| {
        format!(
            "{} watch {} --out {} -m {} -q 'a person riding a bicycle' --no-clips --intra-threads 1",
            env!("CARGO_BIN_EXE_lookout"),
            bikes.display(),
            tmp.path().join(out).display(),
            tiny_model("owlvit").display()
        )
    };

    // On a terminal: `script` runs the command on a pseudo-terminal and copies what it draws to stdout.
    let (status, drawn) = on_a_terminal(&cmd("tty"), "warn");
    let screen = String::from_utf8_lossy(&drawn);
    assert!(status.success(), "{status}: {screen}");
    let total = format!("/{frames} frames");
    assert!(screen.contains(&total), "the bar counts frames out of the file's {frames}: {screen:?}");
    assert!(screen.contains(" fps  ETA "), "the bar shows the rate and the ETA: {screen:?}");
    assert!(screen.contains("events "), "the bar counts events: {screen:?}");
    // It moves: the counts it showed go up, within the file's frames.
    let shown: Vec<u64> =
        screen.split(&total).filter_map(|before| before.rsplit(' ').next().and_then(|n| n.parse().ok())).collect();
    assert!(shown.windows(2).all(|w| w[0] <= w[1]) && shown.iter().all(|n| *n <= frames), "{shown:?}");
    assert!(shown.iter().any(|n| *n > 0 && *n < frames), "the bar moved with the run: {shown:?}");
    assert!(screen.contains("summary ("), "the summary follows the bar: {screen:?}");

    // In a pipe (a log file, systemd): no bar, the summary only.
    let o = Command::new("sh").arg("-c").arg(cmd("pipe")).env("RUST_LOG", "warn").output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(!stderr.contains(&total) && !stderr.contains("ETA"), "no bar outside a terminal: {stderr}");
    assert!(stderr.contains("summary ("), "{stderr}");
}

#[test]
fn log_lines_during_a_run_are_written_above_the_progress_bar() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("long.mp4");
    make_clip(&clip, 3000);
    // Info lines come while the bar is drawn: the sources starting, then `--max-seconds` stopping the run.
    let command = format!(
        "{} watch {} --out {} -m {} -q 'a test pattern' --no-clips --intra-threads 1 --max-seconds 2",
        env!("CARGO_BIN_EXE_lookout"),
        clip.display(),
        tmp.path().join("run").display(),
        tiny_model("owlvit").display()
    );
    let (status, drawn) = on_a_terminal(&command, "lookout=info,warn");
    let raw = String::from_utf8_lossy(&drawn);
    assert!(status.success(), "{status}: {raw}");
    assert!(raw.contains("/3000 frames"), "the bar was drawn: {raw:?}");

    // What a person sees at the end: the bytes played on a terminal emulator tall enough that nothing scrolls.
    let mut terminal = vt100::Parser::new(500, 1000, 0);
    terminal.process(&drawn);
    let screen = terminal.screen().contents();
    let logged: Vec<&str> = screen.lines().filter(|l| l.contains(" INFO ")).collect();
    assert!(
        logged.iter().any(|l| l.contains("--max-seconds reached; draining")),
        "the line logged while the bar was drawn is on the screen:\n{screen}"
    );
    for line in &logged {
        assert!(!line.contains("/3000 frames"), "a log line is glued to the progress bar: {line:?}\n{screen}");
        assert!(line.trim_start().starts_with("20"), "a log line starts with its time: {line:?}\n{screen}");
    }
    assert!(!screen.contains("/3000 frames"), "the bar is cleared before the summary:\n{screen}");
    assert!(screen.contains("summary ("), "{screen}");
}

/// A broker that takes lookout's connection (CONNACK) and then never confirms a publish: every alert stays in
/// lookout's memory or in flight. Serves up to 8 connections, each until lookout closes it.
fn stalled_broker() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(8) {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 4096];
                // The CONNECT, then an MQTT 3.1.1 CONNACK (session not present, accepted); the rest is read and
                // dropped (no PUBACK, no PINGRESP) until lookout hangs up.
                if conn.read(&mut buf).unwrap_or(0) > 0 && conn.write_all(&[0x20, 0x02, 0x00, 0x00]).is_ok() {
                    while conn.read(&mut buf).unwrap_or(0) > 0 {}
                }
            });
        }
    });
    port
}

/// Runs a long clip with alerts to the MQTT broker on `port` (a stop waits up to two minutes for them), interrupts
/// it once, waits for the drain to reach the alerts, checks the spool with `before_second` (given the event lines
/// and the alerts in the spool), then interrupts it again. It must exit at once with 130, keeping every line of
/// events.jsonl and, in the spool, every line's alert for the next start.
fn interrupted_twice(port: u16, mqtt_keys: &str, before_second: impl Fn(&[serde_json::Value], &Path)) {
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("long.mp4");
    make_clip(&clip, 3000);
    let config = tmp.path().join("lookout.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\nshutdown_timeout_s = 120\n[alerts.mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n\
             reconnect_initial_ms = 50\nreconnect_max_ms = 200\n{mqtt_keys}"
        ),
    )
    .unwrap();
    let out = tmp.path().join("run");
    let spool = out.join("alert-spool/mqtt");
    let stderr_path = tmp.path().join("stderr");
    let mut child = lookout()
        .arg("watch")
        .arg(&clip)
        .arg("--out")
        .arg(&out)
        .arg("--config")
        .arg(&config)
        .arg("-m")
        .arg(tiny_model("owlvit"))
        .args(["-q", "a test pattern", "--threshold", "0.0", "--no-clips", "--intra-threads", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let stderr = || read(&stderr_path);
    wait_until("the first event line", || {
        assert!(child.try_wait().unwrap().is_none(), "lookout ended before any event:\n{}", stderr());
        !event_lines(&out).is_empty()
    });

    // First interrupt: sources stop, the tracks end, and the run waits for the alerts.
    signal(&child, "-INT");
    wait_until("the drain to reach the alerts", || stderr().contains("stopping: delivering the alerts"));
    let lines = event_lines(&out);
    assert!(lines.iter().any(|l| l["type"] == "end" && l["reason"] == "shutdown"), "the tracks were ended");
    before_second(&lines, &spool);
    assert!(child.try_wait().unwrap().is_none(), "still draining: the alerts have up to 120 s");

    // Second interrupt: out at once.
    let t = Instant::now();
    signal(&child, "-INT");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < WAIT, "still running {WAIT:?} after the second interrupt:\n{}", stderr());
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = t.elapsed();
    let stderr = stderr();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("second interrupt: exiting now"), "{stderr}");
    assert!(took < Duration::from_secs(10), "exited {took:?} after the second interrupt, not at once");
    // Nothing already written is lost: events.jsonl is whole, and every line's alert waits for the next start.
    let after = event_lines(&out);
    assert_eq!(after.len(), lines.len(), "no line written after the drain had finished the tracks");
    assert_eq!(spool_entries(&spool), after.len(), "every alert kept in the spool:\n{stderr}");
    eprintln!("{} lines, all spooled; exited {took:?} after the second interrupt", after.len());
}

#[test]
fn a_second_interrupt_exits_at_once_and_keeps_what_was_written() {
    // No broker: every alert goes to the spool while the run waits for one.
    interrupted_twice(free_port(), "", |lines, spool| {
        wait_until("every line's alert in the spool", || spool_entries(spool) >= lines.len());
    });
}

#[test]
fn a_second_interrupt_keeps_the_alerts_that_were_in_memory_or_in_flight() {
    // A broker that never confirms: the alerts are in lookout's queue or in flight, not in the spool, when the
    // second interrupt comes; they are written there before it exits. Missing confirmations and pings are given
    // ten minutes before lookout would call the connection dead (and spool everything itself), however slow the
    // machine.
    interrupted_twice(stalled_broker(), "ack_timeout_ms = 600000\nkeep_alive_s = 600\n", |lines, spool| {
        let spooled = spool_entries(spool);
        assert!(spooled < lines.len(), "{spooled} of {} alerts already in the spool: nothing to keep", lines.len());
    });
}
