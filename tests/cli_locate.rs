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
