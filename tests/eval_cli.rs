//! `lookout eval` end to end: the binary, the tiny models, the fixture photos, sets whose answers are known.
//!
//! The known answers come from the model itself: `lookout locate --json` gives each sentence's top-1 box, and the
//! test writes true boxes equal to it, or a part of it whose IoU with it is exactly the part's share of its width.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{fixture, root, tiny_model};
use serde_json::Value;

fn lookout() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lookout"));
    c.env("RUST_LOG", "warn").env("LOOKOUT_CACHE", std::env::temp_dir().join("lookout-test-cache-empty"));
    c
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// The top-1 box and score of `sentence` in `image`, from `locate --json`, one sentence per run as eval does.
fn top1(model: &Path, image: &Path, sentence: &str) -> ([f64; 4], f64) {
    let o = run(lookout().args(["locate", "--json", "--no-images", "-m"]).arg(model).arg(image).args(["-q", sentence]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = &v["results"][0];
    let b: Vec<f64> = r["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    ([b[0], b[1], b[2], b[3]], r["score"].as_f64().unwrap())
}

/// The left `share` of box `b`'s width: inside `b`, so its IoU with `b` is `share`.
fn left_part(b: [f64; 4], share: f64) -> [f64; 4] {
    [b[0], b[1], b[0] + share * (b[2] - b[0]), b[3]]
}

fn jsonl_line(image: &Path, sentence: &str, bbox: Option<[f64; 4]>) -> String {
    serde_json::json!({"image": image, "sentence": sentence, "box": bbox}).to_string()
}

fn results(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

fn close(v: &Value, expected: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - expected).abs() < 1e-4)
}

/// Five sentences on two photos with known IoU (1, 0.8, 0.6 and 0.25) and one with no target.
fn exact_figures(family: &str) {
    let model = tiny_model(family);
    let dir = tempfile::tempdir().unwrap();
    let (coffee, astronaut) = (fixture("coffee.png"), fixture("astronaut.png"));
    let cases: [(&Path, &str, Option<f64>); 5] = [
        (&coffee, "a cup of coffee", Some(1.0)),
        (&coffee, "the white plate under the cup", Some(0.8)),
        (&astronaut, "an astronaut", Some(0.6)),
        (&astronaut, "a flag", Some(0.25)),
        (&coffee, "a red bicycle", None),
    ];
    let mut lines = Vec::new();
    let mut unicorn_score = 0.0;
    for (image, sentence, share) in cases {
        let (b, score) = top1(&model, image, sentence);
        match share {
            Some(s) => lines.push(jsonl_line(image, sentence, Some(left_part(b, s)))),
            None => {
                unicorn_score = score;
                lines.push(jsonl_line(image, sentence, None));
            }
        }
    }
    let set = dir.path().join("set.jsonl");
    std::fs::write(&set, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("report");
    let o = run(lookout().args(["eval", "refexp"]).arg(&set).arg("-m").arg(&model).arg("--out").arg(&out));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("(test model: random weights)"), "{stdout}");

    let r = results(&out);
    assert_eq!(r["dataset"]["items"], 5);
    assert_eq!(r["dataset"]["no_target"], 1);
    let m = &r["models"][0];
    assert_eq!(m["test_model"], true);
    assert_eq!((m["items"].as_u64(), m["with_target"].as_u64()), (Some(5), Some(4)));
    assert_eq!(m["acc_50"], 0.75, "IoU 1, 0.8 and 0.6 of 4");
    assert_eq!(m["acc_75"], 0.5, "IoU 1 and 0.8 of 4");
    assert!(close(&m["mean_iou"], (1.0 + 0.8 + 0.6 + 0.25) / 4.0), "{}", m["mean_iou"]);
    // The test model's no-target threshold is 0.65: the unicorn is "no target" exactly when its score is below.
    let nt = &m["no_target"];
    assert_eq!(nt["threshold"].as_f64().unwrap() as f32, 0.65);
    assert_eq!(nt["rate"], if unicorn_score < 0.65 { 1.0 } else { 0.0 });
    // By length ("a red bicycle" has no target): 1-4 words: coffee (1), astronaut (0.6), flag (0.25); 5-8
    // words: the plate (0.8).
    assert_eq!(m["by_length"][0]["words"], "1-4");
    assert_eq!(m["by_length"][0]["sentences"], 3);
    assert!(close(&m["by_length"][0]["acc_50"], 2.0 / 3.0));
    assert_eq!((m["by_length"][1]["sentences"].as_u64(), m["by_length"][1]["acc_50"].as_f64()), (Some(1), Some(1.0)));
    assert!(m["ms_per_image"].as_f64().unwrap() > 0.0);

    // The worst cases: all five, worst first, each drawn beside index.html.
    let worst = m["worst"].as_array().unwrap();
    assert_eq!(worst.len(), 5);
    assert_eq!(worst[0]["sentence"], if unicorn_score >= 0.65 { "a red bicycle" } else { "a flag" });
    for w in worst {
        let pic = out.join(w["picture"].as_str().unwrap());
        let img = image::open(&pic).unwrap();
        assert!(img.width() <= 640 && img.height() <= 640, "{}", pic.display());
    }
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Acc@0.5"), "a chart");
    assert!(html.contains("Test model with random weights"), "marked as a test model");
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"), "self-contained");
    assert!(html.contains(worst[0]["picture"].as_str().unwrap()));
}

#[test]
fn exact_figures_owlvit() {
    exact_figures("owlvit");
}

#[test]
fn exact_figures_grounding_dino() {
    exact_figures("grounding-dino");
}

#[test]
fn refcoco_layout_from_the_pickle() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let data = root().join("tests/fixtures/refcoco");
    run(lookout()
        .args(["eval", "refexp"])
        .arg(&data)
        .args(["--images"])
        .arg(root().join("tests/fixtures"))
        .args(["--split", "val", "-m"])
        .arg(tiny_model("owlvit"))
        .arg("--out")
        .arg(&out));
    let r = results(&out);
    assert_eq!(r["dataset"]["layout"], "refcoco");
    assert_eq!(r["dataset"]["split"], "val");
    assert_eq!(r["dataset"]["items"], 3, "two sentences of ref 0, one of ref 1; ref 2 is in train");
    // The items in order, with the COCO boxes [x, y, w, h] as [x1, y1, x2, y2].
    let log = std::fs::read_to_string(out.join("items/owlvit.jsonl")).unwrap();
    let items: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got: Vec<(String, Value)> =
        items.iter().map(|i| (i["sentence"].as_str().unwrap().to_string(), i["truth"].clone())).collect();
    assert_eq!(
        got,
        vec![
            ("a cup of coffee".to_string(), serde_json::json!([100.0, 50.0, 300.0, 200.0])),
            ("the white cup on a saucer next to the spoon".to_string(), serde_json::json!([100.0, 50.0, 300.0, 200.0])),
            ("an astronaut".to_string(), serde_json::json!([20.5, 40.0, 320.5, 440.0])),
        ]
    );
    assert!(items[2]["image"].as_str().unwrap().ends_with("astronaut.png"));
    // The figures are those of the logged boxes.
    let hits = items
        .iter()
        .filter(|i| {
            let b = |v: &Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
            let (t, p) = (b(&i["truth"]), b(&i["pred"]));
            let inter = (t[2].min(p[2]) - t[0].max(p[0])).max(0.0) * (t[3].min(p[3]) - t[1].max(p[1])).max(0.0);
            let union = (t[2] - t[0]) * (t[3] - t[1]) + (p[2] - p[0]) * (p[3] - p[1]) - inter;
            inter / union >= 0.5
        })
        .count();
    assert_eq!(r["models"][0]["acc_50"].as_f64().unwrap(), hits as f64 / 3.0);

    // A split that is not there: one line naming the file and the splits it has.
    let o = lookout()
        .args(["eval", "refexp"])
        .arg(&data)
        .arg("--images")
        .arg(root().join("tests/fixtures"))
        .args(["--split", "testB", "-m"])
        .arg(tiny_model("owlvit"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refs(umd).p: no refs in split \"testB\"; its splits are: train, val"), "{err}");
}

/// `--limit`, then a resumed run: the items already in the log are not run again.
#[test]
fn limit_then_resume_skips_what_is_done() {
    let dir = tempfile::tempdir().unwrap();
    // Relative image paths: from the JSONL file's directory.
    std::fs::create_dir(dir.path().join("cams")).unwrap();
    std::fs::copy(fixture("coffee.png"), dir.path().join("cams/coffee.png")).unwrap();
    let set = dir.path().join("set.jsonl");
    let lines = [
        r#"{"image": "cams/coffee.png", "sentence": "a cup", "box": [100, 50, 300, 250]}"#,
        r#"# a comment, skipped"#,
        r#"{"image": "cams/coffee.png", "sentence": "a spoon", "box": [0, 0, 600, 400]}"#,
        r#"{"image": "cams/coffee.png", "sentence": "a table", "box": [10, 10, 20, 20]}"#,
        r#"{"image": "cams/coffee.png", "sentence": "a dog", "box": null}"#,
    ];
    std::fs::write(&set, lines.join("\n")).unwrap();
    let out = dir.path().join("report");
    let eval = |extra: &[&str]| {
        run(lookout()
            .args(["eval", "refexp"])
            .arg(&set)
            .arg("-m")
            .arg(tiny_model("owlvit"))
            .arg("--out")
            .arg(&out)
            .args(extra))
    };
    eval(&["--limit", "2"]);
    let r = results(&out);
    assert_eq!((r["dataset"]["items"].as_u64(), r["dataset"]["limit"].as_u64()), (Some(2), Some(2)));
    let log_path = out.join("items/owlvit.jsonl");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(log.lines().count(), 2);
    assert!(log.contains(&dir.path().join("cams/coffee.png").display().to_string()));

    // Mark the first result (a time no run takes) and tear a line, as a crash would.
    let first: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    let mut first = first.as_object().unwrap().clone();
    first.insert("detect_ms".into(), serde_json::json!(1000000.0));
    let second = log.lines().nth(1).unwrap();
    std::fs::write(&log_path, format!("{}\n{second}\n{{\"index\":2,\"ima", Value::Object(first))).unwrap();

    eval(&[]);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let indices: Vec<u64> =
        log.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, vec![0, 1, 2, 3], "the torn line is gone, items 0 and 1 are not run again");
    let r = results(&out);
    assert_eq!(r["dataset"]["items"], 4);
    // Item 0's marked time is in the mean: it was read back, not measured again.
    assert!(r["models"][0]["ms_per_image"].as_f64().unwrap() >= 1000000.0 / 4.0);
    assert_eq!(r["models"][0]["no_target"]["sentences"], 1);
}

/// A bad annotation: one line naming the file and the entry, exit code 2, before any model loads.
#[test]
fn bad_annotations_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set.jsonl");
    let coffee = fixture("coffee.png");
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![
                jsonl_line(&coffee, "a cup", Some([0.0, 0.0, 10.0, 10.0])),
                jsonl_line(&coffee, "a cup", Some([500.0, 300.0, 650.0, 390.0])),
            ],
            "set.jsonl: line 2: box [500.0, 300.0, 650.0, 390.0] is outside the image (600x400)".into(),
        ),
        (
            vec![jsonl_line(&dir.path().join("nope.png"), "a cup", None)],
            format!("set.jsonl: line 1: image {} does not exist", dir.path().join("nope.png").display()),
        ),
        (
            vec![jsonl_line(&coffee, "a cup", None), "{\"image\": \"coffee.png\", \"sentence\": ".into()],
            "set.jsonl: line 2: not an object".into(),
        ),
        (
            vec![jsonl_line(&coffee, "a cup", Some([5.0, 5.0, 5.0, 9.0]))],
            "set.jsonl: line 1: box [5.0, 5.0, 5.0, 9.0] is empty".into(),
        ),
    ];
    for (lines, expected) in cases {
        std::fs::write(&set, lines.join("\n")).unwrap();
        let o = lookout()
            .args(["eval", "refexp"])
            .arg(&set)
            .args(["-m", "/nonexistent-model-never-loaded-first"])
            .arg("--out")
            .arg(dir.path().join("report"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(&expected), "expected {expected:?} in {err:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

fn event_lines(source: &str, id: &str, query: &str, start_s: f64, end_s: Option<f64>) -> Vec<String> {
    let base = |kind: &str, pts: f64| {
        serde_json::json!({"type": kind, "event_id": id, "source": source, "query": query, "label": query,
            "track_id": 1, "frame": (pts * 25.0) as u64, "pts_s": pts, "box": [0.0, 0.0, 10.0, 10.0], "score": 0.5,
            "start": {"frame": (start_s * 25.0) as u64, "pts_s": start_s}})
    };
    let mut lines = vec![base("start", start_s).to_string(), base("update", start_s + 0.5).to_string()];
    if let Some(end) = end_s {
        let mut e = base("end", end + 1.0);
        e["end"] = serde_json::json!({"frame": (end * 25.0) as u64, "pts_s": end});
        e["reason"] = "lost".into();
        lines.push(e.to_string());
    }
    lines
}

#[test]
fn events_against_annotated_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    let src = "/footage/gate.mp4";
    let mut lines = Vec::new();
    lines.extend(event_lines(src, "gate-0-1-25", "a person", 1.0, Some(4.0))); // tIoU 3/4 with [1, 5]: matched
    lines.extend(event_lines(src, "gate-0-2-500", "a person", 20.0, Some(22.0))); // nothing there: false
    lines.extend(event_lines(src, "gate-0-3-750", "a person", 31.0, None)); // never ended; [31, 31.5] in [30, 40]
    lines.push(r#"{"type":"clips","event_id":"gate-0-1-25","source":"/footage/gate.mp4","query":"a person","label":"a person","track_id":1,"clips":{"status":"none"}}"#.into());
    lines.extend(event_lines("/footage/yard.mp4", "yard-0-1-25", "a person", 1.0, Some(2.0)));
    std::fs::write(run_dir.join("events.jsonl"), lines.join("\n") + "\n").unwrap();
    let truth = dir.path().join("truth.json");
    std::fs::write(
        &truth,
        serde_json::json!({
            "footage": [{"source": "gate.mp4", "duration_s": 360.0}],
            "intervals": [
                {"source": "gate.mp4", "query": "a person", "start_s": 1.0, "end_s": 5.0},
                {"source": "gate.mp4", "query": "a person", "start_s": 30.0, "end_s": 40.0},
            ]
        })
        .to_string(),
    )
    .unwrap();
    let o = run(lookout().args(["eval", "events"]).arg(&run_dir).arg("--truth").arg(&truth));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("precision 0.333 (1 of 3)   recall 0.500 (1 of 2)"), "{stdout}");
    assert!(stdout.contains("3 events (1 never ended)"), "{stdout}");
    assert!(stdout.contains("false alerts: 2 (20.00 per hour over 0.100 h of footage)"), "{stdout}");
    assert!(stdout.contains("not annotated, not counted: /footage/yard.mp4 \"a person\" (1 events)"), "{stdout}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("eval-events.json")).unwrap()).unwrap();
    let fa = &r["overall"]["first_alert"];
    // [1, 5] alerted at 1 s (0 late), [30, 40] at 31 s (1 s late).
    assert_eq!(
        (fa["intervals_alerted"].as_u64(), fa["mean_s"].as_f64(), fa["max_s"].as_f64()),
        (Some(2), Some(0.5), Some(1.0))
    );
    assert_eq!(r["pairs"][0]["first_alert_s"], serde_json::json!([0.0, 1.0]));

    // --limit: the first 3 lines are the first event only.
    let out = dir.path().join("limited.json");
    let o = run(lookout()
        .args(["eval", "events"])
        .arg(&run_dir)
        .arg("--truth")
        .arg(&truth)
        .args(["--limit", "3", "--out"])
        .arg(&out));
    assert!(String::from_utf8_lossy(&o.stdout).contains("precision 1.000 (1 of 1)"));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(r["overall"]["events"], 1);

    // A bad interval: one line naming the file and the entry.
    std::fs::write(&truth, r#"[{"source": "gate.mp4", "query": "a person", "start_s": 8, "end_s": 3}]"#).unwrap();
    let o = lookout().args(["eval", "events"]).arg(&run_dir).arg("--truth").arg(&truth).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("truth.json: interval 0 (gate.mp4 \"a person\"): start_s 8 and end_s 3"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1);
}

/// A sentence the model refuses (Grounding DINO: a `.` inside splits a query) is named with its entry.
#[test]
fn a_sentence_the_model_refuses_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set.jsonl");
    std::fs::write(&set, jsonl_line(&fixture("coffee.png"), "a cup. a saucer", None)).unwrap();
    let o = lookout()
        .args(["eval", "refexp"])
        .arg(&set)
        .arg("-m")
        .arg(tiny_model("grounding-dino"))
        .arg("--out")
        .arg(dir.path().join("report"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let last = err.trim_end().lines().last().unwrap();
    assert!(last.starts_with(&format!("error: {}: line 1: query \"a cup. a saucer\"", set.display())), "{err}");
}

/// `eval events` on `lines` of events (two lines each: start and end), as a run directory's log.
fn many_events(n: usize, from: usize) -> Vec<String> {
    (from..from + n)
        .flat_map(|i| {
            let s = i as f64 * 10.0;
            event_lines("/footage/gate.mp4", &format!("gate-0-{i}-{}", i * 250), "a person", s, Some(s + 3.0))
        })
        .collect()
}

fn eval_events(run_dir: &Path, truth: &Path, extra: &[&str]) -> (String, Value) {
    let o = run(lookout().args(["eval", "events"]).arg(run_dir).arg("--truth").arg(truth).args(extra));
    let report = std::fs::read_to_string(run_dir.join("eval-events.json")).unwrap();
    (String::from_utf8_lossy(&o.stderr).into_owned(), serde_json::from_str(&report).unwrap())
}

/// `eval events` goes on from where the last run stopped (kept in eval-events.progress.json), on a log that has
/// grown since, and starts over on a log that is not the one it read; every way, the report is a fresh run's.
#[test]
fn eval_events_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    let log = run_dir.join("events.jsonl");
    let truth = dir.path().join("truth.json");
    let intervals: Vec<Value> = (0..300)
        .step_by(3)
        .map(|i| serde_json::json!({"source": "gate.mp4", "query": "a person", "start_s": i as f64 * 10.0, "end_s": i as f64 * 10.0 + 4.0}))
        .collect();
    std::fs::write(&truth, Value::Array(intervals).to_string()).unwrap();
    std::fs::write(&log, many_events(200, 0).join("\n") + "\n").unwrap();

    // Stopped at line 150 (by --limit, as an interrupted run would be), then run to the end.
    let (_, limited) = eval_events(&run_dir, &truth, &["--limit", "150"]);
    assert!(limited["overall"]["events"].as_u64().unwrap() < 200, "{limited}");
    assert!(run_dir.join("eval-events.progress.json").is_file());
    let (err, resumed) = eval_events(&run_dir, &truth, &[]);
    assert!(err.contains("at line 151 ("), "{err}");
    let (err, fresh) = eval_events(&run_dir, &truth, &["--fresh"]);
    assert!(!err.contains("resuming"), "{err}");
    assert_eq!(resumed, fresh);
    assert_eq!(fresh["overall"]["events"], 200);

    // The log grows (a `watch` still running): only the new lines are read.
    let mut text = std::fs::read_to_string(&log).unwrap();
    let before = text.lines().count();
    text += &(many_events(100, 200).join("\n") + "\n");
    std::fs::write(&log, &text).unwrap();
    let (err, grown) = eval_events(&run_dir, &truth, &[]);
    assert!(err.contains(&format!("at line {} (200 events so far)", before + 1)), "{err}");
    let (_, fresh) = eval_events(&run_dir, &truth, &["--fresh"]);
    assert_eq!(grown, fresh);
    assert_eq!(fresh["overall"]["events"], 300);

    // Another log of the same length: its reading starts over, with one line saying why.
    let other = text.replace("\"a person\"", "\"a horse!\"");
    assert_eq!(other.len(), text.len());
    std::fs::write(&log, &other).unwrap();
    let (err, replaced) = eval_events(&run_dir, &truth, &[]);
    assert!(err.contains("is not the log it was made from") && err.contains("reading from the start"), "{err}");
    assert!(!err.contains("resuming"), "{err}");
    assert_eq!(replaced["overall"]["events"], 0, "no event of an annotated query: {replaced}");

    // A checkpoint that is not one (a crash cannot make it: it is renamed whole) is read from the start too.
    std::fs::write(run_dir.join("eval-events.progress.json"), "{").unwrap();
    let (err, _) = eval_events(&run_dir, &truth, &[]);
    assert!(err.contains("not a checkpoint") && err.contains("reading from the start"), "{err}");
}

/// A run killed while it reads a long log leaves a checkpoint the next run reads on from, to the same report.
#[test]
fn eval_events_killed_resumes_to_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    let log = run_dir.join("events.jsonl");
    let truth = dir.path().join("truth.json");
    std::fs::write(&truth, r#"[{"source": "gate.mp4", "query": "a person", "start_s": 0, "end_s": 4}]"#).unwrap();
    // About 200,000 lines: some seconds of reading, more than one checkpoint's interval (2 s).
    let mut text = String::new();
    for chunk in 0..100 {
        text += &(many_events(1000, chunk * 1000).join("\n") + "\n");
    }
    std::fs::write(&log, &text).unwrap();
    let progress = run_dir.join("eval-events.progress.json");
    let mut child = lookout()
        .args(["eval", "events"])
        .arg(&run_dir)
        .arg("--truth")
        .arg(&truth)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let mut killed = false;
    while t0.elapsed() < std::time::Duration::from_secs(120) {
        if progress.is_file() {
            killed = child.try_wait().unwrap().is_none();
            let _ = child.kill();
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().unwrap();
    assert!(progress.is_file(), "no checkpoint within 120 s");
    eprintln!("killed while reading: {killed}");
    let (err, resumed) = eval_events(&run_dir, &truth, &[]);
    if killed {
        assert!(err.contains("resuming"), "{err}");
    }
    let (_, fresh) = eval_events(&run_dir, &truth, &["--fresh"]);
    assert_eq!(resumed, fresh);
    assert_eq!(fresh["overall"]["events"], 100_000);
}
