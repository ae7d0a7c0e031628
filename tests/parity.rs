//! Parity with Hugging Face transformers 4.57.6 (the versions are in tests/golden/VERSIONS.txt).
//!
//! The golden files were written by models/export_owl.py from transformers' own processors and PyTorch models,
//! for the committed tiny random-weight OWL-ViT and OWLv2 models and three real photos (square, landscape,
//! portrait). The portrait is also read from its JPEG, through lookout's JPEG decoder: its PNG is Pillow's decode
//! of that JPEG, and the exporter checks that transformers gets the same pixel values from both, so both are held
//! to the same goldens. For each family, each graph layout and each photo this checks, in order:
//! 1. the pixel tensor of our preprocessing against the processor's;
//! 2. the raw logits and boxes of the whole Rust path (our pixels, our tokens, ONNX Runtime, our class head);
//! 3. the post-processed boxes and scores in pixels against `post_process_grounded_object_detection`.
//!
//! Separately, it checks the token ids of a set of sentences against the Python tokenizers.

mod common;

use common::{Npy, fixture, golden, max_abs_diff, read_npy, tiny_model};
use lookout::infer::postprocess::transformers_style;
use lookout::infer::text::QueryTokenizer;
use lookout::infer::{Layout, ModelDir, OwlDetector, SessionOptions, preprocess};
use serde::Deserialize;

/// Each photo file and the golden directory it is held to.
const IMAGES: [(&str, &str); 4] = [
    ("astronaut.png", "astronaut"),
    ("coffee.png", "coffee"),
    ("grace_hopper.png", "grace_hopper"),
    ("grace_hopper.jpg", "grace_hopper"),
];

/// OWL-ViT goes through Pillow's 8-bit bicubic resize, which we reproduce bit for bit; allow one uint8 level
/// (1/255 divided by the smallest CLIP std 0.2613) so that a different rounding on another CPU would still pass.
const OWLVIT_PIXEL_TOL: f64 = 1.0 / 255.0 / 0.26130258 + 1e-6;
/// OWLv2 stays in float from rescale to normalise (scipy in float32); allow float32 noise after normalisation.
const OWLV2_PIXEL_TOL: f64 = 1e-4;
/// Raw logits and boxes: ONNX Runtime against PyTorch, float32 reductions in a different order.
const RAW_TOL: f64 = 1e-4;
/// Post-processed boxes (pixels) and scores, relative.
const POST_REL_TOL: f64 = 1e-3;

#[derive(Debug, Deserialize)]
struct Post {
    width: u32,
    height: u32,
    queries: Vec<String>,
    threshold: f32,
    results: Vec<PostBox>,
}

#[derive(Debug, Deserialize)]
struct PostBox {
    label: usize,
    score: f64,
    #[serde(rename = "box")]
    bbox: [f64; 4],
}

#[derive(Debug, Deserialize)]
struct TokenCase {
    text: String,
    input_ids: Vec<i64>,
    attention_mask: Vec<i64>,
}

fn check_family(family: &str, layout: Layout) {
    let model = ModelDir::open_with(&tiny_model(family), Some(layout)).expect("open tiny model");
    let pixel_tol = match model.family {
        preprocess::Family::OwlVit => OWLVIT_PIXEL_TOL,
        preprocess::Family::Owlv2 => OWLV2_PIXEL_TOL,
        other => panic!("{other:?} has its own parity test (tests/parity_gdino.rs)"),
    };
    let mut detector = OwlDetector::load(model, &SessionOptions::default()).expect("load detector");
    for (image, golden_dir) in IMAGES {
        let dir = golden(&format!("{family}/{golden_dir}"));
        let post: Post = serde_json::from_str(&std::fs::read_to_string(dir.join("post.json")).unwrap()).unwrap();
        let img = lookout::imageio::load_rgb(&fixture(image)).unwrap();
        assert_eq!((img.width(), img.height()), (post.width, post.height));

        // 1. Pixels.
        let (pixels, transform) = preprocess::preprocess(detector.model.family, &detector.model.preprocessor, &img);
        let want: Npy = read_npy(&dir.join("pixel_values.npy"));
        assert_eq!(pixels.shape(), want.shape.as_slice(), "{family}/{image}: pixel tensor shape");
        let (d, at) = max_abs_diff(pixels.iter().map(|&v| v as f64), want.data.iter().copied());
        assert!(d <= pixel_tol, "{family}/{image}: pixel diff {d} at {at} > {pixel_tol}");

        // Tokens of the golden queries.
        let queries = detector.encode_queries(&post.queries).unwrap();
        let ids = read_npy(&dir.join("input_ids.npy"));
        let mask = read_npy(&dir.join("attention_mask.npy"));
        assert_eq!(queries.ids.iter().map(|&v| v as f64).collect::<Vec<_>>(), ids.data, "{family}/{image}: ids");
        assert_eq!(queries.mask.iter().map(|&v| v as f64).collect::<Vec<_>>(), mask.data, "{family}/{image}: mask");

        // 2. Raw outputs of the whole Rust path.
        let raw = detector.run(pixels.view(), &queries).unwrap().remove(0);
        let logits = read_npy(&dir.join("logits.npy"));
        let boxes = read_npy(&dir.join("pred_boxes.npy"));
        assert_eq!(&logits.shape[1..], raw.logits.shape(), "{family}/{image}: logits shape");
        let (d, at) = max_abs_diff(raw.logits.iter().map(|&v| v as f64), logits.data.iter().copied());
        assert!(d <= RAW_TOL, "{family}/{image}/{layout}: logits diff {d} at {at}");
        let (d, at) = max_abs_diff(raw.boxes.iter().map(|&v| v as f64), boxes.data.iter().copied());
        assert!(d <= RAW_TOL, "{family}/{image}/{layout}: boxes diff {d} at {at}");

        // 3. Post-processed boxes, before our own clipping and NMS.
        let got = transformers_style(&raw, &transform, post.threshold);
        assert_eq!(got.len(), post.results.len(), "{family}/{image}/{layout}: number of boxes above threshold");
        for (g, w) in got.iter().zip(&post.results) {
            assert_eq!(g.label, w.label, "{family}/{image}: label");
            assert!(rel(g.score as f64, w.score) <= POST_REL_TOL, "{family}/{image}: score {} vs {}", g.score, w.score);
            let gb = [g.bbox.x0, g.bbox.y0, g.bbox.x1, g.bbox.y1];
            let scale = post.width.max(post.height) as f64;
            for k in 0..4 {
                // Relative to the image size, so a coordinate near 0 is not held to an impossible tolerance.
                let d = (gb[k] as f64 - w.bbox[k]).abs() / scale;
                assert!(d <= POST_REL_TOL, "{family}/{image}: box {gb:?} vs {:?}", w.bbox);
            }
        }
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn owlvit_split_matches_transformers() {
    check_family("owlvit", Layout::Split);
}

#[test]
fn owlvit_hf_matches_transformers() {
    check_family("owlvit", Layout::Hf);
}

#[test]
fn owlv2_split_matches_transformers() {
    check_family("owlv2", Layout::Split);
}

#[test]
fn owlv2_hf_matches_transformers() {
    check_family("owlv2", Layout::Hf);
}

fn check_tokens(tokenizer_json: &std::path::Path, cases_json: &std::path::Path) {
    let tok = QueryTokenizer::from_file(tokenizer_json).unwrap();
    let cases: Vec<TokenCase> = serde_json::from_str(&std::fs::read_to_string(cases_json).unwrap()).unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        if case.text.trim().is_empty() {
            // transformers encodes "" as BOS EOS; lookout refuses it, because an empty query finds nothing useful.
            assert!(matches!(tok.encode(&case.text), Err(lookout::infer::InferError::EmptyQuery)));
            continue;
        }
        let e = tok.encode(&case.text).unwrap();
        assert_eq!(e.ids.to_vec(), case.input_ids, "{:?}", case.text);
        assert_eq!(e.mask.to_vec(), case.attention_mask, "{:?}", case.text);
    }
}

#[test]
fn tiny_tokenizers_match_python() {
    for family in ["owlvit", "owlv2"] {
        check_tokens(&tiny_model(family).join("tokenizer.json"), &golden(&format!("{family}/tokens.json")));
    }
}

#[test]
fn clip_tokenizer_matches_python() {
    let path = common::root().join("models/clip-tokenizer/tokenizer.json");
    check_tokens(&path, &golden("clip_tokens.json"));
    let tok = QueryTokenizer::from_file(&path).unwrap();
    let e = tok.encode("a photo of a cat").unwrap();
    assert_eq!(&e.ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
}

#[test]
fn empty_query_is_an_error() {
    let tok = QueryTokenizer::from_file(&tiny_model("owlvit").join("tokenizer.json")).unwrap();
    assert!(matches!(tok.encode("   "), Err(lookout::infer::InferError::EmptyQuery)));
}
