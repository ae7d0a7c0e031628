//! `lookout locate` end to end: the binary, the tiny models, real photos.

mod common;

use std::process::Command;

use common::{fixture, tiny_model};

fn lookout() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lookout"));
    c.env("RUST_LOG", "warn").env("LOOKOUT_CACHE", std::env::temp_dir().join("lookout-test-cache-empty"));
    c
}

#[test]
fn json_report_per_image_with_crops_and_annotated_copy() {
    let out = tempfile::tempdir().unwrap();
    let o = lookout()
        .args(["locate", "--json", "--out"])
        .arg(out.path())
        .arg(fixture("coffee.png"))
        .arg(fixture("astronaut.png"))
        .args(["-m"])
        .arg(tiny_model("owlvit"))
        .args(["-q", "a cup of coffee", "-q", "an astronaut"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "one object per image");
    let coffee = &lines[0];
    assert_eq!(coffee["width"], 600);
    assert_eq!(coffee["height"], 400);
    assert_eq!(coffee["model"], "owlvit");
    let results = coffee["results"].as_array().unwrap();
    // Without --threshold: exactly the best box of each query.
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["query"], "a cup of coffee");
    assert_eq!(results[1]["query"], "an astronaut");
    for r in results {
        let b: Vec<f64> = r["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 600.0 && b[3] <= 400.0 && b[0] <= b[2] && b[1] <= b[3], "{b:?}");
        let score = r["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        let crop = r["crop"].as_str().unwrap();
        let img = image::open(crop).unwrap();
        // The crop is the box, rounded outwards.
        assert!((img.width() as f64 - (b[2].ceil() - b[0].floor())).abs() <= 1.0, "{crop}");
    }
    assert!(out.path().join("coffee-1.jpg").is_file() && out.path().join("coffee-2.jpg").is_file());
    let annotated = image::open(out.path().join("coffee-annotated.jpg")).unwrap();
    assert_eq!((annotated.width(), annotated.height()), (600, 400));
}

#[test]
fn threshold_and_top_k_report_more_boxes_after_nms() {
    let run = |extra: &[&str]| {
        let o = lookout()
            .args(["locate", "--json", "--no-images"])
            .arg(fixture("astronaut.png"))
            .arg("-m")
            .arg(tiny_model("owlv2"))
            .args(["-q", "a flag"])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["results"].as_array().unwrap().clone()
    };
    let best = run(&[]);
    let all = run(&["--threshold", "0.05"]);
    let top2 = run(&["--threshold", "0.05", "--top-k", "2"]);
    assert_eq!(best.len(), 1);
    assert!(all.len() > 2, "random weights give many boxes above 0.05: {}", all.len());
    assert_eq!(top2.len(), 2);
    assert_eq!(all[0]["box"], best[0]["box"], "the best box comes first");
    // Sorted by score, and no two boxes overlap above the NMS IoU.
    let scores: Vec<f64> = all.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
}

#[test]
fn bad_images_exit_2_and_the_others_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.png");
    let bytes = std::fs::read(fixture("coffee.png")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let text = dir.path().join("notes.png");
    std::fs::write(&text, "not an image").unwrap();
    let o = lookout()
        .args(["locate", "--json", "--no-images"])
        .arg(dir.path().join("missing.jpg"))
        .arg(&truncated)
        .arg(&text)
        .arg(fixture("coffee.png"))
        .arg("-m")
        .arg(tiny_model("owlvit"))
        .args(["-q", "a cup"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    for name in ["missing.jpg", "truncated.png", "notes.png"] {
        let line = stderr.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("no error for {name}: {stderr}"));
        assert!(line.starts_with("error: "), "{line}");
    }
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.lines().count(), 1, "coffee.png still reported");
    assert!(stdout.contains("coffee.png"));
}

#[test]
fn empty_query_exits_2() {
    let o = lookout()
        .args(["locate", "--no-images"])
        .arg(fixture("coffee.png"))
        .arg("-m")
        .arg(tiny_model("owlvit"))
        .args(["-q", "  "])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("empty query"));
}

#[test]
fn incomplete_model_directory_names_the_file_and_the_fetch_command() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(tiny_model("owlvit").join(f), dir.path().join(f)).unwrap();
    }
    let o = lookout()
        .args(["locate"])
        .arg(fixture("coffee.png"))
        .arg("-m")
        .arg(dir.path())
        .args(["-q", "a cup"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("tokenizer.json") && stderr.contains("lookout models fetch"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn unknown_model_name_lists_the_known_ones() {
    let o = lookout()
        .args(["locate"])
        .arg(fixture("coffee.png"))
        .args(["-m", "no-such-model", "-q", "x"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("no-such-model") && stderr.contains("owlvit-base-patch32"), "{stderr}");
}

#[test]
fn missing_onnx_runtime_says_how_to_get_it() {
    let o = lookout()
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .args(["locate", "--no-images"])
        .arg(fixture("coffee.png"))
        .arg("-m")
        .arg(tiny_model("owlvit"))
        .args(["-q", "a cup"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("ONNX Runtime") && stderr.contains("make deps"), "{stderr}");
}

/// A truncated JPEG is refused as Pillow refuses it ("image file is truncated"), on one line that names the file
/// and says why; a JPEG with stray bytes, which Pillow decodes, is decoded; the other images still run.
#[test]
fn a_truncated_jpeg_is_named_and_the_others_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("grace_hopper.jpg")).unwrap();
    let truncated = dir.path().join("truncated.jpg");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let o = lookout()
        .args(["locate", "--json", "--no-images", "-q", "a flag", "-m"])
        .arg(tiny_model("owlvit"))
        .arg(&truncated)
        .arg(fixture("grace_hopper.jpg"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("truncated.jpg")
            && errors[0].contains("Premature end of JPEG file")
            && errors[0].ends_with("is the file complete?"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.lines().count(), 1, "grace_hopper.jpg still reported: {stdout}");
}

/// The text report lines up its columns in a terminal whatever the script of the query: CJK characters and emoji
/// take two columns each.
#[test]
fn the_text_report_lines_up_for_wide_characters() {
    let o = lookout()
        .args(["locate", "--no-images", "-q", "咖啡杯", "-q", "un café ☕", "-q", "a cup", "-m"])
        .arg(tiny_model("owlvit"))
        .arg(fixture("coffee.png"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    for row in rows {
        let score_at = row.find(" 0.").unwrap_or_else(|| panic!("no score in {row:?}"));
        assert_eq!(unicode_width::UnicodeWidthStr::width(&row[..score_at]), 2 + 40, "{row:?}");
    }
}

/// A model fetched by a variant's name (`owlvit-base-patch32-quantized`) holds only `onnx/model_quantized.onnx`:
/// it runs as `hf:<variant>`, the same graph gives the same boxes, and two variants without a choice are named.
#[test]
fn an_hf_graph_variant_runs_by_its_name() {
    let variant = tempfile::tempdir().unwrap();
    let src = tiny_model("owlvit");
    std::fs::create_dir(variant.path().join("onnx")).unwrap();
    for f in ["config.json", "preprocessor_config.json", "tokenizer.json", "export_info.json"] {
        std::fs::copy(src.join(f), variant.path().join(f)).unwrap();
    }
    std::fs::copy(src.join("onnx/model.onnx"), variant.path().join("onnx/model_same.onnx")).unwrap();
    let run = |model: &std::path::Path, layout: Option<&str>| {
        let mut c = lookout();
        c.args(["locate", "--json", "--no-images", "--intra-threads", "1", "-m"]).arg(model);
        if let Some(l) = layout {
            c.args(["--layout", l]);
        }
        c.arg(fixture("coffee.png")).args(["-q", "a cup of coffee"]).output().unwrap()
    };
    let reference = run(&src, Some("hf"));
    let by_variant = run(variant.path(), None);
    assert!(by_variant.status.success(), "{}", String::from_utf8_lossy(&by_variant.stderr));
    let json = |o: &std::process::Output| -> serde_json::Value { serde_json::from_slice(&o.stdout).unwrap() };
    let (reference, by_variant) = (json(&reference), json(&by_variant));
    assert_eq!((reference["layout"].as_str(), by_variant["layout"].as_str()), (Some("hf"), Some("hf:same")));
    assert_eq!(reference["results"], by_variant["results"]);

    std::fs::copy(src.join("onnx/model.onnx"), variant.path().join("onnx/model_other.onnx")).unwrap();
    let ambiguous = run(variant.path(), None);
    let err = String::from_utf8_lossy(&ambiguous.stderr);
    assert_eq!(ambiguous.status.code(), Some(2), "{err}");
    assert!(err.contains("--layout hf:other, hf:same") && err.trim().lines().count() == 1, "{err}");
    let chosen = run(variant.path(), Some("hf:other"));
    assert!(chosen.status.success(), "{}", String::from_utf8_lossy(&chosen.stderr));
    assert_eq!(json(&chosen)["layout"], "hf:other");
}

fn locate_json(extra: &[&str]) -> (serde_json::Value, String) {
    let o = lookout()
        .args(["locate", "--json", "--no-images", "-m"])
        .arg(tiny_model("owlv2"))
        .arg(fixture("astronaut.png"))
        .args(["-q", "a flag", "-q", "a person"])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (serde_json::from_slice(&o.stdout).unwrap(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap()
}

/// `--rerank clip`: the detector's K best boxes of each query, scored again by CLIP (the crop against the
/// sentence, computed here independently through the library), reported best first by sqrt(detector x clip).
#[test]
fn rerank_with_clip_scores_the_top_k_boxes_and_orders_them_by_the_combined_score() {
    let clip_dir = tiny_model("clip");
    let (plain, _) = locate_json(&["--threshold", "0.05", "--top-k", "3"]);
    let (ranked, stderr) = locate_json(&[
        "--threshold",
        "0.05",
        "--rerank",
        "clip",
        "--rerank-model",
        clip_dir.to_str().unwrap(),
        "--rerank-k",
        "3",
    ]);
    // The test model is marked, as for the detector.
    assert!(stderr.contains("test model with random weights: CLIP scores are not meaningful"), "{stderr}");
    assert_eq!(ranked["rerank"]["model"], "clip");
    assert_eq!(ranked["rerank"]["k"], 3);
    assert_eq!(ranked["rerank"]["test_model"], true);
    assert_eq!(ranked["rerank"]["rule"], "score = sqrt(detector_score * clip_score)");

    let img = lookout::imageio::load_rgb(&fixture("astronaut.png")).unwrap();
    let mut clip = lookout::infer::ClipModel::open(&clip_dir, &Default::default()).unwrap();
    let mut reordered = false;
    for q in ["a flag", "a person"] {
        let of = |v: &serde_json::Value| -> Vec<serde_json::Value> {
            v["results"].as_array().unwrap().iter().filter(|r| r["query"] == q).cloned().collect()
        };
        let (before, after) = (of(&plain), of(&ranked));
        assert_eq!(after.len(), 3, "K boxes of {q}");
        // The same candidates as the detector's top 3, with the detector's scores.
        let mut want: Vec<(String, f64)> = before.iter().map(|r| (r["box"].to_string(), f(&r["score"]))).collect();
        let mut got: Vec<(String, f64)> =
            after.iter().map(|r| (r["box"].to_string(), f(&r["detector_score"]))).collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.0, g.0, "{q}");
            assert!((w.1 - g.1).abs() < 1e-6, "{q}: {w:?} {g:?}");
        }
        // CLIP's scores, recomputed: softmax over the candidates of logit_scale * cos(crop, sentence).
        let crops: Vec<image::RgbImage> = after
            .iter()
            .map(|r| {
                let b: Vec<f32> = r["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
                let b = lookout::geom::PixelBox { x0: b[0], y0: b[1], x1: b[2], y1: b[3] };
                lookout::infer::clip::crop_box(&img, &b)
            })
            .collect();
        let logits = clip.logits_per_image(&crops, &[q.to_string()]).unwrap();
        let probs = lookout::infer::verify::softmax(&logits.column(0).to_vec());
        let mut sum = 0.0;
        for (r, p) in after.iter().zip(&probs) {
            assert!((f(&r["clip_score"]) - f64::from(*p)).abs() < 1e-4, "{q}: {r} vs {p}");
            let combined = (f(&r["detector_score"]) * f(&r["clip_score"])).sqrt();
            assert!((f(&r["score"]) - combined).abs() < 1e-5, "{r}");
            assert!((-1.0..=1.0).contains(&f(&r["clip_similarity"])), "{r}");
            sum += f(&r["clip_score"]);
        }
        assert!((sum - 1.0).abs() < 1e-4, "CLIP's probabilities over a query's candidates sum to 1: {sum}");
        let scores: Vec<f64> = after.iter().map(|r| f(&r["score"])).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
        reordered |= after[0]["box"] != before[0]["box"];
    }
    assert!(reordered, "CLIP changed the order of at least one query (else this test shows nothing)");

    // --top-k cuts after the re-ranking: the best combined box of each query.
    let (one, _) = locate_json(&[
        "--threshold",
        "0.05",
        "--rerank",
        "clip",
        "--rerank-model",
        clip_dir.to_str().unwrap(),
        "--rerank-k",
        "3",
        "--top-k",
        "1",
    ]);
    let firsts: Vec<&serde_json::Value> = ranked["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["query"] == "a flag")
        .take(1)
        .chain(ranked["results"].as_array().unwrap().iter().filter(|r| r["query"] == "a person").take(1))
        .collect();
    let got: Vec<&serde_json::Value> = one["results"].as_array().unwrap().iter().collect();
    assert_eq!(got, firsts);
    // Without --rerank, none of the re-ranking fields.
    assert!(plain.get("rerank").is_none() && plain["results"][0].get("clip_score").is_none());
}

#[test]
fn rerank_text_report_shows_both_scores() {
    let o = lookout()
        .args(["locate", "--no-images", "-q", "a flag", "--rerank", "clip", "--rerank-model"])
        .arg(tiny_model("clip"))
        .arg("-m")
        .arg(tiny_model("owlv2"))
        .arg(fixture("astronaut.png"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("re-ranked by clip (test model): score = sqrt(detector_score * clip_score)"), "{stdout}");
    // The default K is 5.
    assert_eq!(lines.len(), 1 + 5, "{stdout}");
    for l in &lines[1..] {
        assert!(l.contains("(detector 0.") && l.contains(", clip 0."), "{l}");
    }
}

#[test]
fn bad_rerank_arguments_exit_2_on_one_line_before_the_detector_loads() {
    let run = |extra: &[&str]| {
        let o = lookout()
            .args(["locate", "--no-images", "-q", "a flag", "-m", "/nonexistent/detector"])
            .arg(fixture("astronaut.png"))
            .args(extra)
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (code, err) = run(&["--rerank-model", "x"]);
    assert_eq!(code, Some(2), "--rerank-model needs --rerank: {err}");
    let (code, err) = run(&["--rerank", "clip", "--rerank-k", "0"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["--rerank", "sift"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["--rerank", "clip", "--rerank-model", "/nonexistent/clip"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/clip") && !err.contains("/nonexistent/detector"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
