//! The command line as a user meets it: each option in the help of the subcommands it applies to, under a
//! heading, with its default; bad values refused on one line naming the flag, with exit code 2.

mod common;

use std::process::{Command, Output};

fn lookout(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("LOOKOUT_CACHE", std::env::temp_dir().join("lookout-test-cache-empty"))
        .output()
        .expect("run lookout")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The help text of `args --help`.
fn help(args: &[&str]) -> String {
    let mut a = args.to_vec();
    a.push("--help");
    let o = lookout(&a);
    assert!(o.status.success(), "{args:?} --help: {}", stderr(&o));
    stdout(&o)
}

/// The help line of `flag` (the line that starts with it, after the short form if any).
fn help_line<'a>(text: &'a str, flag: &str) -> &'a str {
    text.lines()
        .find(|l| {
            l.trim_start().starts_with('-')
                && l.trim_start().split([' ', ',']).any(|w| w.trim_end_matches("...") == flag)
        })
        .unwrap_or_else(|| panic!("no line for {flag} in:\n{text}"))
}

/// Whether `text` lists `flag` as an option (a line that starts with it, or with its short form).
fn has_flag(text: &str, flag: &str) -> bool {
    text.lines().any(|l| {
        l.trim_start().starts_with('-') && l.trim_start().split([' ', ',']).any(|w| w.trim_end_matches("...") == flag)
    })
}

#[test]
fn model_options_show_only_where_a_model_runs() {
    for args in [&["models"][..], &["models", "list"], &["models", "info"], &["pipelines"], &["retention"], &[]] {
        let h = help(args);
        for flag in ["--query", "--model", "--device", "--trt-fp16", "--trt-cache", "--layout", "--intra-threads"] {
            assert!(!has_flag(&h, flag), "`lookout {} --help` shows {flag}:\n{h}", args.join(" "));
        }
        assert!(has_flag(&h, "--verbose"), "logging flags are everywhere");
    }
    for args in [&["locate"][..], &["watch"], &["models", "prepare"]] {
        let h = help(args);
        for flag in ["--model", "--device", "--trt-fp16", "--layout", "--intra-threads"] {
            assert!(has_flag(&h, flag), "`lookout {} --help` lacks {flag}", args.join(" "));
        }
    }
    assert!(has_flag(&help(&["locate"]), "--query") && has_flag(&help(&["watch"]), "--query"));
    assert!(!has_flag(&help(&["models", "prepare"]), "--query"));
    // `pipelines show` needs the model only for its input size.
    let h = help(&["pipelines", "show"]);
    assert!(has_flag(&h, "--model") && !has_flag(&h, "--device") && !has_flag(&h, "--query"), "{h}");
}

#[test]
fn options_are_grouped_under_headings() {
    let h = help(&["watch"]);
    let headings: Vec<&str> = h.lines().filter(|l| !l.starts_with(' ') && l.ends_with(':')).collect();
    for want in
        ["Queries:", "Inference:", "Output:", "Alerts:", "Retention:", "Model:", "Device:", "TensorRT:", "Logging:"]
    {
        assert!(headings.contains(&want), "watch --help has no heading {want}: {headings:?}");
    }
    // Each flag sits under its heading.
    let under = |flag: &str| {
        let mut heading = "";
        for l in h.lines() {
            if !l.starts_with(' ') && l.ends_with(':') {
                heading = l;
            } else if l.trim_start().split([' ', ',']).any(|w| w == flag) {
                return heading;
            }
        }
        panic!("{flag} not in watch --help");
    };
    assert_eq!(under("--threshold"), "Queries:");
    assert_eq!(under("--every"), "Inference:");
    assert_eq!(under("--out"), "Output:");
    assert_eq!(under("--mqtt"), "Alerts:");
    assert_eq!(under("--max-disk-gb"), "Retention:");
    assert_eq!(under("--device"), "Device:");
    assert_eq!(under("--trt-max-batch"), "TensorRT:");
}

#[test]
fn every_default_is_shown() {
    let h = help(&["watch"]);
    for flag in ["--out", "--threshold", "--every", "--fps", "--max-seconds", "--model", "--intra-threads"] {
        assert!(help_line(&h, flag).contains("[default: "), "watch {flag}: {}", help_line(&h, flag));
    }
    assert!(help_line(&h, "--out").contains("else out]"));
    assert!(help_line(&h, "--threshold").contains("0.2; 0.65 with the test model"));
    let h = help(&["locate"]);
    for flag in ["--out", "--threshold", "--top-k", "--nms-iou"] {
        assert!(help_line(&h, flag).contains("[default: "), "locate {flag}: {}", help_line(&h, flag));
    }
    assert!(help_line(&h, "--out").contains("[default: out]"));
    let h = help(&["retention"]);
    for flag in ["--out", "--max-disk-gb", "--max-age-days"] {
        assert!(help_line(&h, flag).contains("[default: "), "retention {flag}: {}", help_line(&h, flag));
    }
}

/// Refused on one line that names the flag, with exit code 2, before any model loads.
fn refused<S: AsRef<str> + std::fmt::Debug>(args: &[S], names: &str) {
    let o = lookout(&args.iter().map(AsRef::as_ref).collect::<Vec<_>>());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line:\n{err}");
    assert!(err.starts_with("error: ") && err.contains(names), "{args:?}: {err}");
}

#[test]
fn bad_numbers_are_refused_with_exit_code_2() {
    let bikes = common::fixture("bikes.mp4").display().to_string();
    let coffee = common::fixture("coffee.png").display().to_string();
    let watch = |extra: &[&'static str]| {
        let mut a = vec!["watch".to_string(), bikes.clone(), "-q".into(), "a bike".into()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let locate = |extra: &[&'static str]| {
        let mut a = vec!["locate".to_string(), coffee.clone(), "-q".into(), "a cup".into()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    refused(&watch(&["--threshold", "1.5"]), "'--threshold <T>': must be between 0 and 1");
    // A negative number is a value, not a flag, and is refused as a value.
    refused(&watch(&["--threshold", "-0.1"]), "invalid value '-0.1' for '--threshold <T>'");
    refused(&locate(&["--threshold", "-0.1"]), "invalid value '-0.1' for '--threshold <T>'");
    refused(&locate(&["--threshold", "1.5"]), "'--threshold <T>'");
    refused(&watch(&["--every", "0"]), "'--every <N>': must be a whole number, 1 or more");
    refused(&watch(&["--every", "-3"]), "'--every <N>'");
    refused(&watch(&["--fps", "0"]), "'--fps <F>'");
    refused(&watch(&["--max-seconds", "0"]), "'--max-seconds <S>': must be a number more than 0");
    refused(&watch(&["--max-seconds", "-5"]), "'--max-seconds <S>'");
    refused(&locate(&["--top-k", "0"]), "'--top-k <K>': must be a whole number, 1 or more");
    refused(&locate(&["--nms-iou", "0"]), "'--nms-iou <IOU>': must be more than 0 and at most 1");
    refused(&locate(&["--nms-iou", "1.5"]), "'--nms-iou <IOU>'");
    refused(&locate(&["--nms-iou", "-0.2"]), "'--nms-iou <IOU>'");
    // Negative sizes and ages reach the retention checks as numbers.
    refused(&watch(&["--max-disk-gb", "-1"]), "max_disk_gb -1 must be a number above 0");
    refused(
        &["retention", "--out", "/nonexistent/out", "--max-age-days", "-2"],
        "max_age_days -2 must be a number above 0",
    );
    // A URL whose port is not a number, before any model loads.
    refused(
        &["watch", "rtsp://admin:secret@cam:55x4/live", "-q", "a car"],
        "invalid source URL `rtsp://***@cam:55x4/live`: its port `55x4` is not a number from 1 to 65535",
    );
    // clap's own refusals are one line too.
    refused(&["locate"], "<IMAGE>");
    refused(&watch(&["--no-such-flag"]), "'--no-such-flag'");
}

#[test]
fn watch_without_arguments_says_both_sources_and_queries_are_missing() {
    let o = lookout(&["watch"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: no sources and no queries:") && err.contains("-q"), "{err}");
    // One of the two missing: that one is named.
    let o = lookout(&["watch", "-q", "a bike"]);
    assert!(stderr(&o).starts_with("error: no sources:"), "{}", stderr(&o));
}

#[test]
fn models_list_columns_line_up_and_info_ends_its_last_line() {
    let o = lookout(&["models", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().take_while(|l| !l.is_empty()).collect();
    assert!(lines.len() > 3, "{text}");
    let header = lines[0];
    for column in ["family", "status", "description"] {
        let at = header.find(column).unwrap();
        for row in &lines[1..] {
            let chars: Vec<char> = row.chars().collect();
            assert!(chars[at - 1] == ' ' && chars[at] != ' ', "column {column} at {at} in:\n{header}\n{row}");
        }
    }
    let o = lookout(&["models", "info", &common::tiny_model("owlv2").display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).ends_with('\n'), "{:?}", stdout(&o));
}

/// Log lines in a pipe (as in a file or the journal) carry no colour codes.
#[test]
fn logs_have_no_colour_codes_outside_a_terminal() {
    let o = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["locate", "--no-images", "-q", "a cup", "-m"])
        .arg(common::tiny_model("owlvit"))
        .arg(common::fixture("coffee.png"))
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("INFO"), "info lines are logged: {err}");
    assert!(!err.contains('\x1b'), "colour codes in a pipe: {err:?}");
}

/// A watch run's log lines are fields and words, never a `Debug` dump of a struct (`SourceStatsSnapshot { … }`,
/// `Some("…")`).
#[test]
fn watch_logs_readable_fields() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["watch", "-q", "a bike", "--threshold", "1", "--no-clips", "--intra-threads", "1", "-m"])
        .arg(common::tiny_model("owlvit"))
        .arg(common::fixture("bikes.mp4"))
        .arg("--out")
        .arg(out.path())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let ended = err.lines().find(|l| l.contains("source ended")).unwrap_or_else(|| panic!("no end line: {err}"));
    assert!(ended.contains("decoded 250, delivered 250, inferred 250, dropped 0"), "{ended}");
    for l in err.lines() {
        assert!(!l.contains(" { ") && !l.contains("Some(") && !l.contains(": None"), "a Debug dump: {l}");
    }
}

/// `--out` that is a file, or a directory nobody can write in (`/proc`, even for root): exit code 2 on one line
/// naming `--out` and the path, before the model loads, and nothing on stdout as if results had been saved.
#[test]
fn an_out_that_cannot_be_written_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let file = file.display().to_string();
    let below_file = format!("{file}/sub");
    let model = common::tiny_model("owlvit").display().to_string();
    let coffee = common::fixture("coffee.png").display().to_string();
    let bikes = common::fixture("bikes.mp4").display().to_string();
    for out in [file.as_str(), below_file.as_str(), "/proc"] {
        for args in [
            vec!["locate", coffee.as_str(), "-q", "a cup", "-m", model.as_str(), "--out", out],
            vec!["locate", coffee.as_str(), "-q", "a cup", "-m", model.as_str(), "--json", "--out", out],
            vec!["watch", bikes.as_str(), "-q", "a bike", "-m", model.as_str(), "--no-clips", "--out", out],
        ] {
            let o = lookout(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line:\n{err}");
            assert!(err.starts_with(&format!("error: --out {out}: cannot ")), "{args:?}: {err}");
            assert!(o.stdout.is_empty(), "{args:?}: nothing on stdout: {}", stdout(&o));
        }
    }
}

/// Event start lines (`"type":"start"`) of `<out>/events.jsonl` as (label, score).
fn starts(out: &std::path::Path) -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(out.join("events.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "start")
        .map(|v| (v["label"].as_str().unwrap_or_default().to_string(), v["score"].as_f64().unwrap()))
        .collect()
}

/// With the test model, a query that sets no threshold gets 0.65, said once in the log; one that sets its own
/// keeps it.
#[test]
fn the_test_model_defaults_to_a_higher_threshold_and_says_so_once() {
    let run = |extra: &[&str]| {
        let out = tempfile::tempdir().unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_lookout"))
            .args(["watch", "--no-clips", "--no-wall-time", "--intra-threads", "1", "-m"])
            .arg(common::tiny_model("owlvit"))
            .arg(common::fixture("bikes.mp4"))
            .arg("--out")
            .arg(out.path())
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        (starts(out.path()), stderr(&o))
    };
    let (defaulted, log) = run(&["-q", "a person riding a bicycle"]);
    let (explicit, _) = run(&["-q", "a person riding a bicycle", "--threshold", "0.65"]);
    let (low, low_log) = run(&["-q", "a person riding a bicycle", "--threshold", "0.2"]);
    assert_eq!(defaulted, explicit, "no --threshold with the test model is --threshold 0.65");
    assert!(low.len() > defaulted.len(), "0.2 finds more: {} vs {}", low.len(), defaulted.len());
    let said: Vec<&str> = log.lines().filter(|l| l.contains("0.65")).collect();
    assert_eq!(said.len(), 1, "said once: {log}");
    assert!(said[0].contains("test model") && said[0].contains("--threshold"), "{}", said[0]);
    assert!(!low_log.contains("0.65"), "not said when a threshold is given: {low_log}");

    // A [[query]] with its own threshold keeps it; one without gets 0.65.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[[query]]\ntext = \"a person riding a bicycle\"\nlabel = \"own\"\nthreshold = 0.2\n\
         [[query]]\ntext = \"a person riding a bicycle\"\nlabel = \"default\"\n",
    )
    .unwrap();
    let (mixed, log) = run(&["--config", config.to_str().unwrap()]);
    assert!(mixed.iter().any(|(l, s)| l == "own" && *s < 0.65), "own threshold 0.2 kept: {mixed:?}");
    assert!(mixed.iter().all(|(l, s)| l != "default" || *s >= 0.65), "{mixed:?}");
    assert!(log.contains("1 of 2 queries"), "{log}");

    // locate says it too, once.
    let o = lookout(&[
        "locate",
        "--no-images",
        "-q",
        "a cup",
        "-m",
        &common::tiny_model("owlvit").display().to_string(),
        &common::fixture("coffee.png").display().to_string(),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(err.lines().filter(|l| l.contains("0.65")).count(), 1, "{err}");
}

/// Sources that never ran stay in the summary and `summary.json`, each with its error: refused arguments (a
/// missing file, an unsupported URL) as well as a file that is not video.
#[test]
fn sources_that_fail_to_start_stay_in_the_summary_with_their_error() {
    let out = tempfile::tempdir().unwrap();
    let not_video = out.path().join("notes.mp4");
    std::fs::write(&not_video, "not a video\n".repeat(100)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["watch", "--no-clips", "--threshold", "1", "--intra-threads", "1", "-q", "a bike", "-m"])
        .arg(common::tiny_model("owlvit"))
        .arg(common::fixture("bikes.mp4"))
        .args(["/nonexistent/footage.mp4", "ftp://user:secret@cam/x"])
        .arg(&not_video)
        .arg("--out")
        .arg(out.path().join("run"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "a source failed: {err}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("run/summary.json")).unwrap()).unwrap();
    let sources = json["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 4, "{json:#}");
    let by_name = |name: &str| {
        sources.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no source {name} in {json:#}"))
    };
    assert!(by_name("bikes")["error"].is_null() && by_name("bikes")["frames_processed"] == 250);
    for name in ["footage", "source2", "notes"] {
        let s = by_name(name);
        assert!(s["error"].as_str().is_some_and(|e| !e.is_empty()), "{name}: {s}");
        assert_eq!(s["frames_processed"], 0, "{name}: {s}");
    }
    assert!(by_name("footage")["error"].as_str().unwrap().contains("/nonexistent/footage.mp4"));
    assert!(!json.to_string().contains("secret"), "password in summary.json: {json}");
    // The printed summary lists them too.
    for name in ["/nonexistent/footage.mp4", "ftp://", "notes.mp4"] {
        assert!(err.lines().any(|l| l.starts_with("  ") && l.contains(name) && l.contains("(error: ")), "{err}");
    }
}

/// The summary counts events (their `start` lines), and their `update` lines apart, not every line of
/// `events.jsonl`.
#[test]
fn the_summary_counts_events_not_lines() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["watch", "--no-clips", "--json", "--threshold", "0.45", "--intra-threads", "1"])
        .args(["-q", "a person riding a bicycle", "-m"])
        .arg(common::tiny_model("owlvit"))
        .arg(common::fixture("bikes.mp4"))
        .arg("--out")
        .arg(out.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = std::fs::read_to_string(out.path().join("events.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let count = |t: &str| lines.iter().filter(|l| l["type"] == t).count();
    let (starts, updates) = (count("start"), count("update"));
    assert!(starts > 0 && lines.len() > starts, "bikes.mp4 gives events with several lines each: {}", lines.len());
    assert_eq!(summary["events"], starts, "{summary:#}");
    assert_eq!(summary["updates"], updates, "{summary:#}");
    assert_eq!(summary["sources"][0]["events"], starts, "{summary:#}");
    assert_eq!(summary["sources"][0]["updates"], updates, "{summary:#}");
    assert_eq!(count("end"), starts, "every event ends once");
}
