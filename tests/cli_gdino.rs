//! `lookout locate` and `lookout watch` with the Grounding DINO family end to end: the binary, the committed tiny
//! models (`models/tiny/grounding-dino`, `models/tiny/mm-grounding-dino`), real photos and a real clip. Every
//! output has the shape it has with OWL; bad input is one line and exit code 2.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{fixture, golden, tiny_model};

fn lookout() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lookout"));
    c.env("RUST_LOG", "warn").env("LOOKOUT_CACHE", std::env::temp_dir().join("lookout-test-cache-empty"));
    c
}

fn locate(model: &str, args: &[&str]) -> Output {
    lookout()
        .args(["locate", "--json", "--no-images", "--intra-threads", "1", "-m"])
        .arg(tiny_model(model))
        .args(args)
        .output()
        .unwrap()
}

fn results(o: &Output) -> Vec<serde_json::Value> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["results"].as_array().unwrap().clone()
}

#[test]
fn locate_reports_as_for_owl_with_crops_and_the_annotated_copy() {
    for model in ["grounding-dino", "mm-grounding-dino"] {
        let out = tempfile::tempdir().unwrap();
        let o = lookout()
            .args(["locate", "--json", "--out"])
            .arg(out.path())
            .arg(fixture("coffee.png"))
            .arg(fixture("grace_hopper.jpg"))
            .arg("-m")
            .arg(tiny_model(model))
            .args(["-q", "a cup of coffee", "-q", "A woman in uniform."])
            .output()
            .unwrap();
        assert!(o.status.success(), "{model}: {}", String::from_utf8_lossy(&o.stderr));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains("test model with random weights"), "{model}: the test-model banner: {stderr}");
        let stdout = String::from_utf8(o.stdout).unwrap();
        let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{model}: one object per image");
        let coffee = &lines[0];
        assert_eq!((coffee["width"].as_u64(), coffee["height"].as_u64()), (Some(600), Some(400)));
        assert_eq!(coffee["model"], model);
        let r = coffee["results"].as_array().unwrap();
        // Without --threshold: exactly the best box of each query, in query order, named as the user wrote it.
        assert_eq!(r.len(), 2, "{model}: {r:?}");
        assert_eq!(
            (r[0]["query"].as_str(), r[1]["query"].as_str()),
            (Some("a cup of coffee"), Some("A woman in uniform."))
        );
        for r in r {
            let b: Vec<f64> = r["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 600.0 && b[3] <= 400.0, "{model}: clipped: {b:?}");
            assert!(b[2] - b[0] >= 1.0 && b[3] - b[1] >= 1.0, "{model}: reportable: {b:?}");
            assert!((0.0..=1.0).contains(&r["score"].as_f64().unwrap()));
            let crop = image::open(r["crop"].as_str().unwrap()).unwrap();
            assert!((crop.width() as f64 - (b[2].ceil() - b[0].floor())).abs() <= 1.0);
        }
        assert!(
            out.path().join("coffee-annotated.jpg").is_file()
                && out.path().join("grace_hopper-annotated.jpg").is_file()
        );
    }
}

/// The two layouts run the same model: the same boxes and scores, up to float noise.
#[test]
fn hf_and_split_layouts_agree() {
    let run = |layout: &str| {
        results(&locate(
            "grounding-dino",
            &[
                fixture("astronaut.png").to_str().unwrap(),
                "--layout",
                layout,
                "-q",
                "a flag",
                "-q",
                "a person",
                "--threshold",
                "0.2",
            ],
        ))
    };
    let (hf, split) = (run("hf"), run("split"));
    assert!(hf.len() >= 2, "{hf:?}");
    assert_eq!(hf.len(), split.len());
    for (a, b) in hf.iter().zip(&split) {
        assert_eq!(a["query"], b["query"]);
        assert!((a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs() < 1e-4, "{a} vs {b}");
        for k in 0..4 {
            assert!((a["box"][k].as_f64().unwrap() - b["box"][k].as_f64().unwrap()).abs() < 0.05, "{a} vs {b}");
        }
    }
}

/// Queries that do not fit the 256-token text together run in several passes, with one log line saying so;
/// each pass is the prompt its queries alone would make, so their results are those of that prompt alone.
#[test]
fn queries_beyond_the_token_limit_run_in_several_passes() {
    let tokenizer =
        lookout::infer::gdino::text::BertTokenizer::from_file(&tiny_model("grounding-dino").join("tokenizer.json"))
            .unwrap();
    let queries: Vec<String> = (0..30)
        .map(|i| format!("a person number {} riding a red bicycle next to a car", ["one", "two", "three"][i % 3]))
        .collect();
    // Greedy packing, as documented: [CLS], each query's pieces and its ".", [SEP], at most 256.
    let pieces: Vec<usize> = queries.iter().map(|q| tokenizer.encode(q).unwrap().len() - 2).collect();
    let (mut passes, mut len, mut first_pass) = (1, 2, None);
    for (i, p) in pieces.iter().enumerate() {
        if len + p + 1 > 256 {
            passes += 1;
            len = 2;
            first_pass.get_or_insert(i);
        }
        len += p + 1;
    }
    let first_pass = first_pass.expect("the queries need more than one pass");
    let photo = fixture("coffee.png");
    let mut args: Vec<&str> = vec![photo.to_str().unwrap()];
    for q in &queries {
        args.extend(["-q", q.as_str()]);
    }
    let o = lookout()
        .env("RUST_LOG", "info")
        .args(["locate", "--json", "--no-images", "--intra-threads", "1", "-m"])
        .arg(tiny_model("grounding-dino"))
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let all = results(&o);
    assert_eq!(all.len(), 30, "the best box of every query");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("passes")).collect();
    assert_eq!(lines.len(), 1, "one log line: {stderr}");
    assert!(lines[0].contains(&format!("{passes} passes")), "{}", lines[0]);
    // The first pass alone (its queries) gives the same answers.
    let mut first: Vec<&str> = vec![photo.to_str().unwrap()];
    for q in &queries[..first_pass] {
        first.extend(["-q", q.as_str()]);
    }
    let alone = results(&locate("grounding-dino", &first));
    assert_eq!(alone.len(), first_pass);
    for (a, b) in alone.iter().zip(&all) {
        assert_eq!(a, b);
    }
    // And the next pass is a prompt of its own: the same words score otherwise there.
    let score = |r: &serde_json::Value| r["score"].as_f64().unwrap();
    let same_words = (0..first_pass).find(|&i| queries[i] == queries[first_pass]).unwrap();
    assert_ne!(score(&all[first_pass]), score(&all[same_words]));
}

fn assert_bad_input(o: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    for n in needles {
        assert!(errors[0].contains(n), "{n:?} in {}", errors[0]);
    }
}

#[test]
fn bad_queries_are_one_line_and_exit_2() {
    let photo = fixture("coffee.png");
    let photo = photo.to_str().unwrap();
    assert_bad_input(&locate("grounding-dino", &[photo, "-q", " . "]), &["empty query"]);
    assert_bad_input(&locate("grounding-dino", &[photo, "-q", "a cat. a dog"]), &["\"a cat. a dog\"", "'.'"]);
    let long = vec!["cat"; 300].join(" ");
    assert_bad_input(
        &locate("mm-grounding-dino", &[photo, "-q", "a dog", "-q", &long]),
        &["\"cat cat", "…\" is 303 tokens", "256", "shorten"],
    );
}

#[test]
fn a_clip_tokenizer_or_an_unknown_family_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let copy = |to: &Path| {
        std::fs::create_dir_all(to.join("onnx")).unwrap();
        for f in ["config.json", "preprocessor_config.json", "tokenizer.json", "onnx/model.onnx"] {
            std::fs::copy(tiny_model("grounding-dino").join(f), to.join(f)).unwrap();
        }
    };
    let clip = dir.path().join("clip");
    copy(&clip);
    std::fs::copy(common::root().join("models/clip-tokenizer/tokenizer.json"), clip.join("tokenizer.json")).unwrap();
    let run = |m: &Path| {
        lookout().arg("locate").arg(fixture("coffee.png")).arg("-m").arg(m).args(["-q", "a cup"]).output().unwrap()
    };
    assert_bad_input(&run(&clip), &["tokenizer.json", "BPE", "WordPiece"]);
    let other = dir.path().join("other");
    copy(&other);
    let config =
        std::fs::read_to_string(other.join("config.json")).unwrap().replace("\"grounding-dino\"", "\"florence2\"");
    std::fs::write(other.join("config.json"), config).unwrap();
    assert_bad_input(&run(&other), &["\"florence2\"", "grounding-dino", "owlv2"]);
}

#[test]
fn models_info_describes_grounding_dino() {
    let o = lookout().args(["models", "info"]).arg(tiny_model("mm-grounding-dino")).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.ends_with('\n'), "the report ends its last line");
    for needle in [
        "mm-grounding-dino",
        "320x320",
        "max 256 tokens",
        "split (onnx/text_encoder.onnx + onnx/detector.onnx)",
        "hf (onnx/model.onnx)",
        "missing:         nothing",
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
}

/// `watch` on a clip: every frame inferred (scaled by GStreamer into the 320x320 graph keeping the aspect
/// ratio), events as for OWL, held to a golden file; no box starts an event below the test model's threshold,
/// which wins over the card's 0.4.
#[test]
fn watch_bikes_events_match_the_golden_file() {
    let out = tempfile::tempdir().unwrap();
    let o = lookout()
        .arg("watch")
        .arg(fixture("bikes.mp4"))
        .arg("--out")
        .arg(out.path())
        .arg("-m")
        .arg(tiny_model("grounding-dino"))
        .args(["--intra-threads", "1", "--no-wall-time", "--json", "--no-clips", "--annotate"])
        .args(["-q", "a person riding a bicycle", "-q", "a car"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let src = &s["sources"][0];
    assert_eq!((src["frames_decoded"].as_u64(), src["frames_inferred"].as_u64()), (Some(250), Some(250)));
    assert_eq!(src["frames_dropped"], 0);
    let video = lookout::sink::probe_video(&out.path().join("bikes/annotated.mp4")).unwrap();
    assert_eq!((video.frames, video.width, video.height), (250, 640, 272));
    let got = std::fs::read_to_string(out.path().join("events.jsonl")).unwrap();
    for line in got.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        if e["type"] == "start" {
            let peak = e["peak"]["score"].as_f64().unwrap();
            assert!(
                peak >= f64::from(lookout::config::TEST_MODEL_THRESHOLD),
                "a start below the test model's threshold: {e}"
            );
        }
    }
    let golden_path = golden("watch/bikes-grounding-dino.events.jsonl");
    if std::env::var_os("LOOKOUT_BLESS").is_some() {
        std::fs::write(&golden_path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden_path).unwrap();
    compare_events(&got, &want);
}

/// As tests/watch_files.rs compares events: kinds, ids, tracks, frames and queries exactly; boxes within 0.5 px
/// and scores within 1e-3.
fn compare_events(got: &str, want: &str) {
    let parse = |s: &str| -> Vec<serde_json::Value> { s.lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    let (g, w) = (parse(got), parse(want));
    assert!(!w.is_empty(), "the golden file has events");
    assert_eq!(g.len(), w.len(), "number of events");
    let close = |a: &serde_json::Value, b: &serde_json::Value, tol: f64| {
        (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= tol
    };
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        for key in ["type", "event_id", "query", "label", "track_id", "frame", "pts_s", "start", "end", "reason"] {
            assert_eq!(a.get(key), b.get(key), "event {i}: {key}");
        }
        for k in 0..4 {
            assert!(close(&a["box"][k], &b["box"][k], 0.5), "event {i}: box {} vs {}", a["box"], b["box"]);
        }
        assert!(close(&a["score"], &b["score"], 1e-3), "event {i}: score");
    }
}

/// A single graph lookout did not export (a Hub download has no export_info.json) may have its phrase masks
/// frozen to a one-query trace: each query then runs in a pass of its own, and gets what it gets alone.
#[test]
fn a_hub_graph_runs_one_query_per_pass() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    std::fs::create_dir_all(hub.join("onnx")).unwrap();
    for f in ["config.json", "preprocessor_config.json", "tokenizer.json", "onnx/model.onnx"] {
        std::fs::copy(tiny_model("grounding-dino").join(f), hub.join(f)).unwrap();
    }
    let photo = fixture("astronaut.png");
    let run = |model: &Path, queries: &[&str]| {
        let mut c = lookout();
        c.env("RUST_LOG", "info").args(["locate", "--json", "--no-images", "-m"]).arg(model).arg(&photo);
        for q in queries {
            c.args(["-q", q]);
        }
        c.output().unwrap()
    };
    let o = run(&hub, &["a flag", "a person"]);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(stderr.contains("each query runs in a pass of its own"), "{stderr}");
    assert!(!stderr.contains("random weights"), "no export_info.json, no test-model banner");
    let both = results(&o);
    for (k, q) in ["a flag", "a person"].iter().enumerate() {
        let alone = results(&run(&tiny_model("grounding-dino"), &[q]));
        assert_eq!(alone[0]["box"], both[k]["box"], "{q}");
        assert_eq!(alone[0]["score"], both[k]["score"], "{q}");
    }
}

/// A Grounding DINO model that is not the test model takes its card's box threshold (0.4) in `watch` for a query
/// that sets none; `text_threshold` is refused for OWL, naming the query.
#[test]
fn watch_takes_the_cards_threshold_and_refuses_a_text_threshold_for_owl() {
    let dir = tempfile::tempdir().unwrap();
    // The tiny model without export_info.json: lookout does not know it for a test model.
    let model = dir.path().join("gd");
    std::fs::create_dir_all(model.join("onnx")).unwrap();
    for f in ["config.json", "preprocessor_config.json", "tokenizer.json", "onnx/model.onnx"] {
        std::fs::copy(tiny_model("grounding-dino").join(f), model.join(f)).unwrap();
    }
    let out = dir.path().join("out");
    let o = lookout()
        .arg("watch")
        .arg(fixture("bikes.mp4"))
        .arg("--out")
        .arg(&out)
        .arg("-m")
        .arg(&model)
        .args(["--intra-threads", "1", "--no-wall-time", "--json", "--no-clips", "--every", "5"])
        .args(["-q", "a person riding a bicycle"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let peaks: Vec<f64> = std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] == "start")
        .map(|e| e["peak"]["score"].as_f64().unwrap())
        .collect();
    assert!(!peaks.is_empty());
    assert!(peaks.iter().all(|&p| p >= 0.4), "{peaks:?}");
    assert!(peaks.iter().any(|&p| p < 0.65), "the test model's 0.65 was not used: {peaks:?}");

    let config = dir.path().join("lookout.toml");
    std::fs::write(&config, "[[query]]\ntext = \"a car\"\ntext_threshold = 0.3\n").unwrap();
    let o = lookout()
        .arg("watch")
        .arg(fixture("bikes.mp4"))
        .arg("--out")
        .arg(dir.path().join("owl"))
        .arg("--config")
        .arg(&config)
        .arg("-m")
        .arg(tiny_model("owlvit"))
        .output()
        .unwrap();
    assert_bad_input(&o, &["\"a car\"", "text_threshold", "Grounding DINO"]);
}

/// `-m mm-grounding-dino-tiny` (and `llmdet-tiny`): the Hub has no ONNX of it, so lookout says how to export it and
/// where to put it; once the export is in the cache, the name runs like any model.
#[test]
fn an_exported_model_runs_by_its_manifest_name() {
    let cache = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_lookout"))
            .env("RUST_LOG", "warn")
            .env("LOOKOUT_CACHE", cache.path())
            .args(["locate", "--json", "--no-images", "--intra-threads", "1", "-m", "mm-grounding-dino-tiny"])
            .arg(fixture("coffee.png"))
            .args(["-q", "a cup of coffee"])
            .output()
            .unwrap()
    };
    let o = run();
    assert_bad_input(&o, &["has no ONNX export on the Hub", "--from-pretrained", "mm-grounding-dino-tiny"]);
    // What the export writes (here the tiny random-weight export stands in for it).
    let dir = cache.path().join("mm-grounding-dino-tiny");
    std::fs::create_dir_all(dir.join("onnx")).unwrap();
    let src = tiny_model("mm-grounding-dino");
    for entry in std::fs::read_dir(&src).unwrap().chain(std::fs::read_dir(src.join("onnx")).unwrap()) {
        let path = entry.unwrap().path();
        if path.is_file() {
            let rel = path.strip_prefix(&src).unwrap();
            std::fs::copy(&path, dir.join(rel)).unwrap();
        }
    }
    let o = run();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!((v["model"].as_str(), v["layout"].as_str()), (Some("mm-grounding-dino-tiny"), Some("split")));
    assert_eq!(results(&o).len(), 1);
}
