//! The verifiers' int8 graphs (`[verify] precision = "int8"`, `watch --verifier-precision int8`): the committed
//! tiny X-CLIP's and CLIP's int8 per-event graphs (models/quantize_int8.py: dynamic quantization of MatMul and Gemm,
//! int8 weights per output channel) give logits and probabilities within stated bounds of fp32 on the golden frames
//! of bikes.mp4, and `watch` runs them end to end.
//!
//! Each bound is about twice the largest drift measured when it was set (the figure is beside it): it holds on
//! another CPU's rounding but catches a stale or wrong int8 graph. Each case also checks that the int8 graph ran
//! (its logits are not bit for bit fp32's), so a precision that silently loaded fp32 fails here. The tiny models
//! are random-weight and 32 wide, a worse case for int8 than a trained model; the full-size figures are in
//! BENCHMARKS.md ("make bench-verify").

mod common;

use common::{decode, fixture, golden, tiny_model};
use lookout::infer::verify::softmax;
use lookout::infer::{Precision, SessionOptions, load_verifier};

/// |int8 - fp32| of `logits_per_video`. Measured 0.234 (models/quantize_int8.py reports the same).
const XCLIP_LOGIT_TOL: f64 = 0.5;
/// |int8 - fp32| of any prompt's softmax probability. Measured 0.046 (the tiny model's logits lie close together).
const XCLIP_PROB_TOL: f64 = 0.1;
/// CLIP's verifier logits (averaged image embeddings against the prompts, times the logit scale). Measured 0.027.
const CLIP_LOGIT_TOL: f64 = 0.06;
/// Measured 0.0016.
const CLIP_PROB_TOL: f64 = 0.005;

/// The golden event's frames of bikes.mp4 and its prompts (tests/golden/xclip/golden.json).
fn event() -> (Vec<image::RgbImage>, Vec<String>) {
    let g: serde_json::Value = serde_json::from_slice(&std::fs::read(golden("xclip/golden.json")).unwrap()).unwrap();
    let frames: Vec<u64> = g["frames"].as_array().unwrap().iter().map(|f| f.as_u64().unwrap()).collect();
    let decoded = decode(&fixture("bikes.mp4"), |i| frames.contains(&i));
    let images = frames.iter().map(|&i| decoded[i as usize].image.clone().unwrap()).collect();
    let prompts = g["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    (images, prompts)
}

/// Logits of one event in each precision, and the largest differences of the logits and of the probabilities.
fn drift(family: &str) -> (f64, f64) {
    let (frames, prompts) = event();
    let opts = SessionOptions { intra_threads: 1, ..SessionOptions::default() };
    let run = |precision| {
        let mut v = load_verifier(&tiny_model(family), &opts, precision).expect("load the tiny verifier");
        let set = v.encode(&prompts).unwrap();
        v.logits(&frames, &set).unwrap()
    };
    let (fp32, int8) = (run(Precision::Fp32), run(Precision::Int8));
    assert_eq!(fp32.len(), prompts.len());
    assert_ne!(fp32, int8, "{family}: the int8 graph ran (its logits are not fp32's bit for bit)");
    let max = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max);
    let logits = max(&fp32, &int8);
    let probs = max(&softmax(&fp32), &softmax(&int8));
    println!("{family}: fp32 {fp32:?}, int8 {int8:?}: max |logit diff| {logits:.4}, max |prob diff| {probs:.4}");
    (logits, probs)
}

#[test]
fn xclip_int8_stays_near_fp32_on_an_event_of_bikes() {
    let (logits, probs) = drift("xclip");
    assert!(logits <= XCLIP_LOGIT_TOL, "logits drift {logits}");
    assert!(probs <= XCLIP_PROB_TOL, "probabilities drift {probs}");
}

#[test]
fn clip_int8_stays_near_fp32_on_an_event_of_bikes() {
    let (logits, probs) = drift("clip");
    assert!(logits <= CLIP_LOGIT_TOL, "logits drift {logits}");
    assert!(probs <= CLIP_PROB_TOL, "probabilities drift {probs}");
}

#[test]
fn the_int8_graph_is_the_one_named() {
    use lookout::infer::verifier_event_graph;
    let graph = |family: &str, p| verifier_event_graph(&tiny_model(family), p).unwrap();
    assert_eq!(graph("xclip", Precision::Fp32), "onnx/video.onnx");
    assert_eq!(graph("xclip", Precision::Int8), "onnx/video_int8.onnx");
    assert_eq!(graph("clip", Precision::Fp32), "onnx/image_encoder.onnx");
    assert_eq!(graph("clip", Precision::Int8), "onnx/image_encoder_int8.onnx");
    // The Hub's CLIP: its own name for the 8-bit graph, which the test copy does not have.
    assert_eq!(graph("clip-hub", Precision::Fp32), "onnx/vision_model.onnx");
    let err = verifier_event_graph(&tiny_model("clip-hub"), Precision::Int8).unwrap_err().to_string();
    assert!(err.contains("onnx/vision_model_quantized.onnx") && err.contains("quantize_int8.py"), "{err}");
}

fn watch(extra: &[&str], out: &std::path::Path) -> std::process::Output {
    let config = "[[query]]\ntext = \"a person riding a bicycle\"\nthreshold = 0.6\n\
                  verify = \"a person riding a bicycle\"\ncontrast = [\"an empty street\"]\n";
    common::watch_bikes(config, extra, out, &tiny_model("owlvit"))
}

/// `watch --verifier-precision int8` with the tiny X-CLIP: every event gets a verdict from the int8 graph, and the
/// summary says which precision verified.
#[test]
fn watch_verifies_with_the_int8_graph() {
    let out = tempfile::tempdir().unwrap();
    let verifier = tiny_model("xclip").display().to_string();
    let o = watch(&["--verifier", &verifier, "--verifier-precision", "int8"], out.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = std::fs::read_to_string(out.path().join("run/events.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let starts = lines.iter().filter(|l| l["type"] == "start").count();
    let verdicts: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "verification").collect();
    assert!(starts > 0, "the query fires on bikes.mp4");
    assert_eq!(verdicts.len(), starts, "one verification line per event");
    for v in &verdicts {
        assert!(v["verdict"] == "confirmed" || v["verdict"] == "rejected", "a verdict, not an error: {v}");
    }
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["verification"]["precision"], "int8", "{summary}");
    assert_eq!(summary["verification"]["verified"], starts as u64);
    // What verifying cost inference: its waits for the verifier's turns (watch/turn.rs), never more than the
    // verifier's turns themselves (one per event), but for the moment each hand-over takes to wake the thread (on
    // a loaded machine, up to a scheduler's time slice or more).
    let v = &summary["verification"];
    let (waited, verifier) = (v["inference_waited_ms"].as_u64().unwrap(), v["verifier_ms"].as_u64().unwrap());
    assert!(waited <= verifier + 250 * starts as u64 + 1000, "{v}");
}

/// A verifier without an int8 graph: one line at start that names the file and the command that makes it, before
/// any model loads.
#[test]
fn a_missing_int8_verifier_graph_is_a_one_line_error_before_the_model_loads() {
    let out = tempfile::tempdir().unwrap();
    let verifier = tiny_model("verifier-brightness").display().to_string();
    let o = common::watch_bikes(
        "[[query]]\ntext = \"a person\"\nverify = \"0.5\"\ncontrast = [\"5\"]\n",
        &["--verifier", &verifier, "--verifier-precision", "int8"],
        out.path(),
        std::path::Path::new("/nonexistent/model"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("onnx/video_int8.onnx") && err.contains("models/quantize_int8.py"), "{err}");
    assert!(!err.contains("/nonexistent/model"), "before the detector loads: {err}");
    // The same from the config file.
    let o = common::watch_bikes(
        &format!(
            "[verify]\nmodel = \"{verifier}\"\nprecision = \"int8\"\n[[query]]\ntext = \"a person\"\nverify = \"0.5\"\n"
        ),
        &[],
        out.path(),
        std::path::Path::new("/nonexistent/model"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("onnx/video_int8.onnx"), "{err}");
}
