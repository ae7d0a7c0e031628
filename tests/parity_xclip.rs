//! The X-CLIP verifier against transformers' `XCLIPProcessor` and `XCLIPModel` on real frames of bikes.mp4
//! (goldens made by `models/export_verifier.py --xclip --golden tests/golden/xclip` with the tiny model), and a
//! `watch` run that verifies each event with it.

mod common;

use std::path::Path;

use common::{decode, fixture, golden, max_abs_diff, read_npy, tiny_model};
use lookout::infer::verify::{judge, softmax, spread};
use lookout::infer::xclip::XclipVerifier;
use lookout::infer::{Precision, SessionOptions, Verifier};
use sha2::{Digest, Sha256};

/// The pixels are the same 8-bit frames through the same Pillow arithmetic: the tensor is exact.
const PIXEL_TOLERANCE: f64 = 1e-6;
/// The bound for `logits_per_video`, ONNX Runtime against PyTorch with lookout's inputs.
const LOGIT_TOLERANCE: f64 = 1e-4;

fn golden_json() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(golden("xclip/golden.json")).unwrap()).unwrap()
}

fn load() -> XclipVerifier {
    let dir = tiny_model("xclip");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    XclipVerifier::load(&dir, &config, &SessionOptions::default(), "onnx/video.onnx").expect("load the tiny X-CLIP")
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn xclip_matches_transformers_on_bikes() {
    let g = golden_json();
    let frames: Vec<u64> = g["frames"].as_array().unwrap().iter().map(|f| f.as_u64().unwrap()).collect();
    // Frame sampling: the documented rule, N frames spread over the event's first 2 s (50 frames) from frame 100.
    let want: Vec<u64> = spread(50, 8).into_iter().map(|i| 100 + i as u64).collect();
    assert_eq!(frames, want, "the golden frames are lookout's spread");

    let decoded = decode(&fixture("bikes.mp4"), |i| frames.contains(&i));
    let images: Vec<image::RgbImage> = frames.iter().map(|&i| decoded[i as usize].image.clone().unwrap()).collect();
    for (k, img) in images.iter().enumerate() {
        let sha = format!("{:x}", Sha256::digest(img.as_raw()));
        assert_eq!(
            sha,
            g["frame_sha256"][k].as_str().unwrap(),
            "frame {} decodes as it did for the goldens",
            frames[k]
        );
    }

    let mut v = load();
    assert_eq!(v.num_frames(), Some(8));
    let pixels = v.pixel_values(&images);
    let want = read_npy(&golden("xclip/pixel_values.npy"));
    assert_eq!(pixels.shape(), want.shape.as_slice());
    let (d, at) = max_abs_diff(pixels.iter().map(|&x| f64::from(x)), want.data.iter().copied());
    println!("pixel_values: max |diff| {d:.3e} at {at}");
    assert!(d <= PIXEL_TOLERANCE, "pixel_values differ by {d} at {at}");

    let prompts = strings(&g["prompts"]);
    let (ids, mask) = v.tokens(&prompts).unwrap();
    let (want_ids, want_mask) =
        (read_npy(&golden("xclip/input_ids.npy")), read_npy(&golden("xclip/attention_mask.npy")));
    assert_eq!(ids.shape(), want_ids.shape.as_slice());
    assert_eq!(ids.iter().map(|&i| i as f64).collect::<Vec<_>>(), want_ids.data, "input_ids");
    assert_eq!(mask.iter().map(|&i| i as f64).collect::<Vec<_>>(), want_mask.data, "attention_mask");

    let set = v.encode(&prompts).unwrap();
    let logits = v.logits(&images, &set).unwrap();
    let want = read_npy(&golden("xclip/logits_per_video.npy"));
    assert_eq!(want.shape, vec![1, prompts.len()]);
    let (d, at) = max_abs_diff(logits.iter().map(|&x| f64::from(x)), want.data.iter().copied());
    println!("logits_per_video: {logits:?}, golden {:?}, max |diff| {d:.3e}", want.data);
    assert!(d <= LOGIT_TOLERANCE, "logits_per_video differ by {d} at prompt {at}");

    // The verdict: the same winner, the same probabilities, the same side of any threshold we use.
    let probs = softmax(&logits);
    let want_probs = read_npy(&golden("xclip/probs.npy"));
    let (d, _) = max_abs_diff(probs.iter().map(|&x| f64::from(x)), want_probs.data.iter().copied());
    assert!(d <= LOGIT_TOLERANCE, "softmax differs by {d}");
    let argmax = probs.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    assert_eq!(argmax as u64, g["argmax"].as_u64().unwrap());
    for threshold in [0.01f32, 0.1, 0.5] {
        let golden_verdict = want_probs.data[0] >= f64::from(threshold);
        assert_eq!(judge(&logits, threshold).1.as_str() == "confirmed", golden_verdict, "threshold {threshold}");
    }
}

#[test]
fn xclip_refuses_a_frame_count_other_than_its_configs() {
    let mut v = load();
    let set = v.encode(&["a person".to_string(), "a car".to_string()]).unwrap();
    let frames = vec![image::RgbImage::new(40, 30); 3];
    let err = v.logits(&frames, &set).unwrap_err().to_string();
    assert!(err.contains("takes 8 frames, got 3"), "{err}");
    // Another family's prompt set is refused by name, not run.
    let other = lookout::infer::PromptSet::texts_only(vec!["a".into()]);
    let err = v.logits(&vec![image::RgbImage::new(40, 30); 8], &other).unwrap_err().to_string();
    assert!(err.contains("encode them again"), "{err}");
}

fn watch(config: &str, out: &Path) -> std::process::Output {
    common::watch_bikes(config, &[], out, &tiny_model("owlvit"))
}

/// `watch` with `[verify] model = models/tiny/xclip`: one verification line per event, naming the model, with
/// a softmax probability over the query's prompts (random weights: the verdict itself means nothing).
#[test]
fn watch_verifies_each_event_with_xclip() {
    let out = tempfile::tempdir().unwrap();
    let config = format!(
        "[verify]\nmodel = \"{}\"\nframes = 8\nqueue = 1000\n[[query]]\ntext = \"a person riding a bicycle\"\n\
         threshold = 0.6\nverify = \"a person riding a bicycle\"\ncontrast = [\"a person standing still\", \
         \"an empty street\"]\nverify_threshold = 0.3\n",
        tiny_model("xclip").display()
    );
    let o = watch(&config, out.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all: Vec<serde_json::Value> = std::fs::read_to_string(out.path().join("run/events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let starts: Vec<_> = all.iter().filter(|l| l["type"] == "start").collect();
    let verifications: Vec<_> = all.iter().filter(|l| l["type"] == "verification").collect();
    assert!(!starts.is_empty(), "the tiny detector finds events on bikes.mp4");
    assert_eq!(verifications.len(), starts.len(), "one verification line per event");
    let mut confirmed = 0;
    for v in &verifications {
        assert_eq!(v["model"], "xclip", "{v}");
        assert!(starts.iter().any(|s| s["event_id"] == v["event_id"]), "{v}");
        assert_eq!(v["frames"].as_array().unwrap().len(), 8, "{v}");
        assert_eq!(
            v["prompts"],
            serde_json::json!(["a person riding a bicycle", "a person standing still", "an empty street"])
        );
        let score = v["score"].as_f64().unwrap();
        assert!(score > 0.0 && score < 1.0, "a probability among three prompts: {v}");
        let verdict = v["verdict"].as_str().unwrap();
        assert_eq!(verdict, if score >= 0.3 { "confirmed" } else { "rejected" }, "{v}");
        confirmed += u64::from(verdict == "confirmed");
    }
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["verification"]["verified"], starts.len() as u64);
    assert_eq!(summary["verification"]["confirmed"], confirmed);
    assert_eq!(summary["verification"]["errors"], 0);
}

/// A copy of the tiny X-CLIP with one file changed by `edit`; the error loading it.
fn load_error(edit: impl Fn(&Path)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("xclip");
    std::fs::create_dir_all(dir.join("onnx")).unwrap();
    let src = tiny_model("xclip");
    for f in ["config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    for f in ["onnx/text_encoder.onnx", "onnx/video.onnx"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    assert!(lookout::infer::load_verifier(&dir, &SessionOptions::default(), Precision::Fp32).is_ok(), "the copy loads");
    edit(&dir);
    match lookout::infer::load_verifier(&dir, &SessionOptions::default(), Precision::Fp32) {
        Ok(_) => panic!("loaded after the edit"),
        Err(e) => e.to_string(),
    }
}

fn rewrite(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{}: {from}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[test]
fn a_broken_xclip_directory_is_refused_by_name() {
    let err = load_error(|d| std::fs::remove_file(d.join("onnx/video.onnx")).unwrap());
    assert!(err.contains("onnx/video.onnx") && err.contains("export_verifier.py --xclip"), "{err}");
    let err = load_error(|d| rewrite(&d.join("preprocessor_config.json"), "\"height\": 32", "\"height\": 16"));
    assert!(err.contains("preprocessor_config.json") && err.contains("crop_size must be 32x32"), "{err}");
    let err = load_error(|d| rewrite(&d.join("preprocessor_config.json"), "\"resample\": 3", "\"resample\": 5"));
    assert!(err.contains("resample 5 is not supported"), "{err}");
    let err = load_error(|d| {
        rewrite(&d.join("tokenizer_config.json"), "\"pad_token\": \"<|endoftext|>\"", "\"pad_token\": \"<pad>\"")
    });
    assert!(err.contains("pad_token \"<pad>\""), "{err}");
    let err =
        load_error(|d| rewrite(&d.join("config.json"), "\"model_type\": \"xclip\"", "\"model_type\": \"xclip2\""));
    assert!(err.contains("use \"xclip\""), "{err}");
}
