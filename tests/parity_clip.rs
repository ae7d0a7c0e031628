//! CLIP against transformers' `CLIPProcessor` and `CLIPModel` on real frames of bikes.mp4, the golden photos and
//! a crop (goldens made by `models/export_verifier.py --clip --golden tests/golden/clip` with the tiny model), and
//! the CLIP verifier's rule (image embeddings averaged over the frames) against the same goldens.

mod common;

use common::{decode, fixture, golden, max_abs_diff, read_npy, tiny_model};
use lookout::infer::clip::{ClipModel, crop_box, normalized};
use lookout::infer::verify::{softmax, spread};
use lookout::infer::{Precision, SessionOptions, Verifier};
use sha2::{Digest, Sha256};

/// The pixels are the same 8-bit images through the same Pillow arithmetic: the tensor is exact (to f32).
const PIXEL_TOLERANCE: f64 = 1e-6;
/// Embeddings and logits, ONNX Runtime against PyTorch with lookout's inputs (the export measured 2e-6).
const TOLERANCE: f64 = 1e-4;

fn golden_json() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(golden("clip/golden.json")).unwrap()).unwrap()
}

fn load() -> ClipModel {
    ClipModel::open(&tiny_model("clip"), &SessionOptions::default()).expect("load the tiny CLIP")
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// The golden images: the 8 frames, the photos, then the crop of the first frame.
fn images(g: &serde_json::Value) -> Vec<image::RgbImage> {
    let frames: Vec<u64> = g["frames"].as_array().unwrap().iter().map(|f| f.as_u64().unwrap()).collect();
    let want: Vec<u64> = spread(50, 8).into_iter().map(|i| 100 + i as u64).collect();
    assert_eq!(frames, want, "the golden frames are lookout's spread");
    let decoded = decode(&fixture("bikes.mp4"), |i| frames.contains(&i));
    let mut out: Vec<image::RgbImage> = frames.iter().map(|&i| decoded[i as usize].image.clone().unwrap()).collect();
    for (k, img) in out.iter().enumerate() {
        let sha = format!("{:x}", Sha256::digest(img.as_raw()));
        assert_eq!(sha, g["frame_sha256"][k].as_str().unwrap(), "frame {} decodes as for the goldens", frames[k]);
    }
    for p in strings(&g["photos"]) {
        out.push(lookout::imageio::load_rgb(&fixture(&p)).unwrap());
    }
    let c = &g["crop"];
    let v = |k: &str| c[k].as_f64().unwrap() as f32;
    let b = lookout::geom::PixelBox { x0: v("x"), y0: v("y"), x1: v("x") + v("width"), y1: v("y") + v("height") };
    let crop = crop_box(&out[0], &b);
    assert_eq!((crop.width(), crop.height()), (90, 30));
    out.push(crop);
    out
}

fn diff(got: impl IntoIterator<Item = f32>, want: &common::Npy) -> (f64, usize) {
    max_abs_diff(got.into_iter().map(f64::from), want.data.iter().copied())
}

#[test]
fn clip_matches_transformers_on_frames_photos_and_a_crop() {
    let g = golden_json();
    let imgs = images(&g);
    let mut m = load();
    assert!(m.is_test_model());

    let pixels = m.pixel_values(&imgs);
    let want = read_npy(&golden("clip/pixel_values.npy"));
    assert_eq!(pixels.shape(), want.shape.as_slice());
    let (d, at) = diff(pixels.iter().copied(), &want);
    println!("pixel_values: max |diff| {d:.3e} at {at}");
    assert!(d <= PIXEL_TOLERANCE, "pixel_values differ by {d} at {at}");

    let prompts = strings(&g["prompts"]);
    let (ids, mask) = m.tokens(&prompts).unwrap();
    let (want_ids, want_mask) = (read_npy(&golden("clip/input_ids.npy")), read_npy(&golden("clip/attention_mask.npy")));
    assert_eq!(ids.shape(), want_ids.shape.as_slice());
    assert_eq!(ids.iter().map(|&i| i as f64).collect::<Vec<_>>(), want_ids.data, "input_ids");
    assert_eq!(mask.iter().map(|&i| i as f64).collect::<Vec<_>>(), want_mask.data, "attention_mask");

    let text = m.text_embeds(&prompts).unwrap();
    let (d, at) = diff(text.iter().copied(), &read_npy(&golden("clip/text_embeds.npy")));
    println!("text_embeds: max |diff| {d:.3e}");
    assert!(d <= TOLERANCE, "text_embeds differ by {d} at {at}");

    let f = m.image_features(&pixels).unwrap();
    let (d, at) = diff(f.embeds.iter().copied(), &read_npy(&golden("clip/image_embeds.npy")));
    println!("image_embeds: max |diff| {d:.3e}");
    assert!(d <= TOLERANCE, "image_embeds differ by {d} at {at}");
    assert!((f64::from(f.logit_scale) - g["logit_scale"].as_f64().unwrap()).abs() < 1e-5);

    let logits = m.logits_per_image(&imgs, &prompts).unwrap();
    let want = read_npy(&golden("clip/logits_per_image.npy"));
    assert_eq!(logits.shape(), want.shape.as_slice());
    let (d, at) = diff(logits.iter().copied(), &want);
    println!("logits_per_image: max |diff| {d:.3e}");
    assert!(d <= TOLERANCE, "logits_per_image differ by {d} at {at}");
}

/// The verifier: the 8 frames' embeddings averaged, against the prompts; the same logits, probabilities and
/// winner as the golden computed from transformers' embeddings.
#[test]
fn the_clip_verifier_averages_the_frames_as_documented() {
    let g = golden_json();
    let imgs = images(&g);
    let mut m = load();
    let prompts = strings(&g["prompts"]);
    let set = m.encode(&prompts).unwrap();
    let logits = m.logits(&imgs[..8], &set).unwrap();
    let want: Vec<f64> = g["verify_logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let (d, at) = max_abs_diff(logits.iter().map(|&x| f64::from(x)), want.iter().copied());
    println!("verify logits {logits:?}, golden {want:?}, max |diff| {d:.3e}");
    assert!(d <= TOLERANCE, "verify logits differ by {d} at {at}");
    let probs = softmax(&logits);
    let want: Vec<f64> = g["verify_probs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let (d, _) = max_abs_diff(probs.iter().map(|&x| f64::from(x)), want.iter().copied());
    assert!(d <= TOLERANCE, "verify probabilities differ by {d}");
    // One frame alone is that frame's own logits_per_image row: averaging one normalised embedding changes nothing.
    let one = m.logits(&imgs[..1], &set).unwrap();
    let row = m.logits_per_image(&imgs[..1], &prompts).unwrap();
    let (d, _) = max_abs_diff(one.iter().map(|&x| f64::from(x)), row.iter().map(|&x| f64::from(x)));
    assert!(d <= 1e-5, "{d}");
    // Another family's prompt set is refused by name, not run.
    let other = lookout::infer::PromptSet::texts_only(vec!["a".into()]);
    let err = m.logits(&imgs[..2], &other).unwrap_err().to_string();
    assert!(err.contains("encode them again"), "{err}");
    assert!(normalized(&ndarray::array![[1.0f32, 0.0]])[[0, 0]] == 1.0);
}

/// A copy of the tiny CLIP with one file changed by `edit`; the error loading it.
fn load_error(edit: impl Fn(&std::path::Path)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("clip");
    std::fs::create_dir_all(dir.join("onnx")).unwrap();
    let src = tiny_model("clip");
    for f in [
        "config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "onnx/text_encoder.onnx",
        "onnx/image_encoder.onnx",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    assert!(lookout::infer::load_verifier(&dir, &SessionOptions::default(), Precision::Fp32).is_ok(), "the copy loads");
    edit(&dir);
    match ClipModel::open(&dir, &SessionOptions::default()) {
        Ok(_) => panic!("loaded after the edit"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_broken_clip_directory_is_refused_by_name() {
    let err = load_error(|d| std::fs::remove_file(d.join("onnx/image_encoder.onnx")).unwrap());
    assert!(err.contains("onnx/image_encoder.onnx") && err.contains("export_verifier.py --clip"), "{err}");
    let err = load_error(|d| {
        let p = d.join("preprocessor_config.json");
        let t = std::fs::read_to_string(&p).unwrap().replace("\"height\": 32", "\"height\": 16");
        std::fs::write(p, t).unwrap();
    });
    assert!(err.contains("crop_size must be 32x32"), "{err}");
    let err = load_error(|d| {
        let p = d.join("config.json");
        let t = std::fs::read_to_string(&p).unwrap().replace("\"model_type\": \"clip\"", "\"model_type\": \"owlvit\"");
        std::fs::write(p, t).unwrap();
    });
    assert!(err.contains("is not CLIP"), "{err}");
}

/// `watch` with the CLIP verifier, chosen by family (`--verifier clip`, `[verify] verifier = "clip"`): one
/// verification line per event, naming the model, with a softmax probability over the query's prompts (random
/// weights: the verdict itself means nothing).
#[test]
fn watch_verifies_each_event_with_clip() {
    let clip = tiny_model("clip");
    let query = "[[query]]\ntext = \"a person riding a bicycle\"\nthreshold = 0.6\nverify = \"a person riding a \
                 bicycle\"\ncontrast = [\"a person standing still\", \"an empty street\"]\nverify_threshold = 0.3\n";
    let by_cli = format!("[verify]\nmodel = \"{}\"\nqueue = 1000\n{query}", clip.display());
    let by_config = format!("[verify]\nverifier = \"clip\"\nmodel = \"{}\"\nqueue = 1000\n{query}", clip.display());
    let mut scores = Vec::new();
    for (config, extra) in [(by_cli, &["--verifier", "clip"][..]), (by_config, &[][..])] {
        let out = tempfile::tempdir().unwrap();
        let o = common::watch_bikes(&config, extra, out.path(), &tiny_model("owlvit"));
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
            assert_eq!(v["model"], "clip", "{v}");
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
            scores.push(score);
        }
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(summary["verification"]["verified"], starts.len() as u64);
        assert_eq!(summary["verification"]["confirmed"], confirmed);
        assert_eq!(summary["verification"]["errors"], 0);
    }
    // The same run either way: the family chosen on the command line or in the config.
    let half = scores.len() / 2;
    assert_eq!(scores[..half], scores[half..]);
}

/// The Hub's layout (Xenova/clip-vit-base-patch32: `text_model.onnx` without `attention_mask`,
/// `vision_model.onnx` without the logit scale), here the tiny model's weights in it: the same embeddings as the
/// golden, and the logit scale of OpenAI's checkpoints, 100.
#[test]
fn the_hub_layout_gives_the_same_embeddings_and_a_logit_scale_of_100() {
    let g = golden_json();
    let imgs = images(&g);
    let mut hub = ClipModel::open(&tiny_model("clip-hub"), &SessionOptions::default()).expect("the hub layout loads");
    assert!(hub.is_test_model());
    let prompts = strings(&g["prompts"]);
    let text = hub.text_embeds(&prompts).unwrap();
    let (d, _) = diff(text.iter().copied(), &read_npy(&golden("clip/text_embeds.npy")));
    assert!(d <= TOLERANCE, "text_embeds differ by {d}");
    let f = hub.image_features(&hub.pixel_values(&imgs)).unwrap();
    let (d, _) = diff(f.embeds.iter().copied(), &read_npy(&golden("clip/image_embeds.npy")));
    assert!(d <= TOLERANCE, "image_embeds differ by {d}");
    assert_eq!(f.logit_scale, lookout::infer::clip::HUB_LOGIT_SCALE);
    let logits = hub.logits_per_image(&imgs, &prompts).unwrap();
    let want = read_npy(&golden("clip/logits_per_image.npy"));
    let scale = 100.0 / g["logit_scale"].as_f64().unwrap();
    let (d, at) = max_abs_diff(logits.iter().map(|&x| f64::from(x)), want.data.iter().map(|x| x * scale));
    assert!(d <= 1e-3, "logits at scale 100 differ by {d} at {at}");
}
