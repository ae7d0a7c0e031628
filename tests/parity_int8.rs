//! int8 against fp32 (issue 17): the committed tiny models' int8 graphs (models/quantize_int8.py: dynamic
//! quantization of MatMul and Gemm, int8 weights per output channel) give boxes and scores within stated bounds of
//! their fp32 graphs on the golden photos, through the whole Rust path (`--precision int8`).
//!
//! The bounds are about twice the largest drift measured when they were set (the figures are beside each bound),
//! so they hold on another CPU's rounding but catch a graph that is not the same model: a wrong or stale int8
//! graph, weights quantized per tensor instead of per channel (which moves the tiny models' scores by more), or a
//! quantized layer that should not be. Each case also checks that the int8 graph really ran (its outputs are not
//! bit for bit those of fp32), so a `--precision` that silently loaded the fp32 graph fails here.
//!
//! The tiny models are random-weight, 2-layer, 32-48 wide: a worse case for int8 than a trained model (fewer,
//! larger per-channel ranges; no redundancy). The full-size drift is in BENCHMARKS.md ("int8").

mod common;

use common::{fixture, tiny_model};
use lookout::geom::Detection;
use lookout::infer::postprocess::{DEFAULT_NMS_IOU, Selection};
use lookout::infer::{Image, Layout, LayoutChoice, ModelDir, OwlDetector, Precision, SessionOptions, preprocess};

const PHOTOS: [&str; 3] = ["astronaut.png", "coffee.png", "grace_hopper.png"];
const OWL_QUERIES: [&str; 4] = ["a photo of an astronaut", "a cup of coffee", "a flag", "a woman in uniform"];
const GDINO_QUERIES: [&str; 3] = ["a person in a space suit", "a cup of coffee", "a flag"];

/// OWL raw outputs, per patch (the same patch in both graphs): largest |int8 - fp32| of the logits. Measured
/// 0.13-0.14 (OWL-ViT, split and hf) and 0.07 (OWLv2).
const OWL_LOGIT_TOL: f64 = 0.3;
/// OWL raw boxes (cx, cy, w, h in 0..1), per patch. Measured 0.0062 (OWL-ViT) and 0.0074 (OWLv2).
const OWL_BOX_TOL: f64 = 0.015;

/// Each query's best box, as `locate` reports it: |score int8 - score fp32|, and the largest corner difference as
/// a fraction of the image's longer side. OWL keeps the same best patch on every photo here (Grounding DINO: see
/// [`check_gdino_against_control`]).
struct Bounds {
    score: f64,
    box_frac: f64,
}
/// Measured: OWL-ViT score 0.0059 (split) and 0.0067 (hf), box 0.0022; OWLv2 score 0.0037, box 0.0019.
const OWL_BEST: Bounds = Bounds { score: 0.015, box_frac: 0.015 };

fn open(family: &str, layout: Option<&str>, precision: Precision) -> ModelDir {
    let choice: Option<LayoutChoice> = layout.map(|l| l.parse().unwrap());
    ModelDir::open_precision(&tiny_model(family), choice.as_ref(), Some(precision)).expect("open tiny model")
}

/// A change of at most one level in every pixel value: the controls for how much a model moves when its input
/// barely changes.
#[derive(Clone, Copy)]
enum OneLevel {
    None,
    /// The lowest bit flipped (+1 or -1).
    Flip,
    /// +1 (saturating).
    Up,
    /// -1 (saturating).
    Down,
}

/// Each photo's best box per query, the photo changed by `one_level`.
fn best_per_query(model: ModelDir, queries: &[&str], one_level: OneLevel) -> Vec<Vec<Detection>> {
    let opts = SessionOptions { intra_threads: 1, ..SessionOptions::default() };
    let mut detector = lookout::infer::load(model, &opts).expect("load detector");
    let texts: Vec<String> = queries.iter().map(|q| q.to_string()).collect();
    let set = detector.encode(&texts).unwrap();
    let best = Selection { threshold: None, nms_iou: DEFAULT_NMS_IOU, top_k: Some(1), always_best: true };
    PHOTOS
        .iter()
        .map(|p| {
            let mut img = lookout::imageio::load_rgb(&fixture(p)).unwrap();
            let change = |v: u8| match one_level {
                OneLevel::None => v,
                OneLevel::Flip => v ^ 1,
                OneLevel::Up => v.saturating_add(1),
                OneLevel::Down => v.saturating_sub(1),
            };
            img.pixels_mut().for_each(|px| px.0.iter_mut().for_each(|v| *v = change(*v)));
            let mut d = detector.detect(&[Image::Rgb(&img)], &set, &best).unwrap().remove(0).unwrap();
            d.sort_by_key(|x| x.query);
            assert_eq!(d.len(), queries.len(), "{p}: one best box per query");
            d
        })
        .collect()
}

/// Largest score and box drift (fraction of the longer side) between two runs' best boxes.
fn drift_between(a: &[Vec<Detection>], b: &[Vec<Detection>]) -> (f64, f64, bool) {
    let (mut score, mut frac, mut identical) = (0f64, 0f64, true);
    for (p, (a, b)) in PHOTOS.iter().zip(a.iter().zip(b)) {
        let img = lookout::imageio::load_rgb(&fixture(p)).unwrap();
        let side = img.width().max(img.height()) as f64;
        for (x, y) in a.iter().zip(b) {
            score = score.max((x.score as f64 - y.score as f64).abs());
            let (bx, by) = (x.bbox, y.bbox);
            for (u, v) in [(bx.x0, by.x0), (bx.y0, by.y0), (bx.x1, by.x1), (bx.y1, by.y1)] {
                frac = frac.max((u as f64 - v as f64).abs() / side);
            }
            identical &= x.score == y.score && x.bbox == y.bbox;
        }
    }
    (score, frac, identical)
}

/// Largest score and box drift of the best boxes, int8 against fp32.
fn best_drift(family: &str, layout: Option<&str>, queries: &[&str]) -> (f64, f64) {
    let fp32 = best_per_query(open(family, layout, Precision::Fp32), queries, OneLevel::None);
    let int8 = best_per_query(open(family, layout, Precision::Int8), queries, OneLevel::None);
    let (score, frac, identical) = drift_between(&fp32, &int8);
    eprintln!("{family} {layout:?}: best box drift {frac:.4} of the longer side, score drift {score:.4}");
    assert!(!identical, "{family} {layout:?}: int8 gave exactly fp32's results: did the int8 graph run?");
    (score, frac)
}

fn check_best(family: &str, layout: Option<&str>, queries: &[&str], bounds: &Bounds) {
    let (score, frac) = best_drift(family, layout, queries);
    assert!(score <= bounds.score, "{family} {layout:?}: score drift {score} > {}", bounds.score);
    assert!(frac <= bounds.box_frac, "{family} {layout:?}: box drift {frac} of the image > {}", bounds.box_frac);
}

/// OWL's raw outputs, patch by patch: logits (through lookout's class head in the split layout) and boxes.
fn check_owl_raw(family: &str, layout: &str) {
    let queries: Vec<String> = OWL_QUERIES.iter().map(|q| q.to_string()).collect();
    let run = |precision| {
        let opts = SessionOptions { intra_threads: 1, ..SessionOptions::default() };
        let mut d = OwlDetector::load(open(family, Some(layout), precision), &opts).unwrap();
        let q = d.encode_queries(&queries).unwrap();
        PHOTOS
            .iter()
            .map(|p| {
                let img = lookout::imageio::load_rgb(&fixture(p)).unwrap();
                let (px, _) = preprocess::preprocess(d.model.family, &d.model.preprocessor, &img);
                d.run(px.view(), &q).unwrap().remove(0)
            })
            .collect::<Vec<_>>()
    };
    let (fp32, int8) = (run(Precision::Fp32), run(Precision::Int8));
    let (mut dl, mut db) = (0f64, 0f64);
    for (a, b) in fp32.iter().zip(&int8) {
        for (x, y) in a.logits.iter().zip(&b.logits) {
            dl = dl.max((*x as f64 - *y as f64).abs());
        }
        for (x, y) in a.boxes.iter().zip(&b.boxes) {
            db = db.max((*x as f64 - *y as f64).abs());
        }
    }
    eprintln!("{family} {layout}: raw logit drift {dl:.4}, raw box drift {db:.4}");
    assert!(dl > 0.0, "{family} {layout}: int8 logits equal fp32's: did the int8 graph run?");
    assert!(dl <= OWL_LOGIT_TOL, "{family} {layout}: logit drift {dl} > {OWL_LOGIT_TOL}");
    assert!(db <= OWL_BOX_TOL, "{family} {layout}: box drift {db} > {OWL_BOX_TOL}");
}

#[test]
fn owlvit_int8_stays_near_fp32() {
    check_owl_raw("owlvit", "split");
    check_owl_raw("owlvit", "hf");
    check_best("owlvit", Some("split"), &OWL_QUERIES, &OWL_BEST);
    check_best("owlvit", Some("hf"), &OWL_QUERIES, &OWL_BEST);
}

#[test]
fn owlv2_int8_stays_near_fp32() {
    check_owl_raw("owlv2", "split");
    check_owl_raw("owlv2", "hf");
    check_best("owlv2", Some("split"), &OWL_QUERIES, &OWL_BEST);
}

/// The tiny Grounding DINO models are chaotic: 30 proposals picked by a top-k over random features, so a change of
/// one level in every pixel already moves a query's best box across the photo and its score by tenths (measured:
/// score 0.10-0.30, box 0.3-0.7 of the side). A fixed tight bound would only describe that chaos; the bound here is
/// relative to it, measured in the same run: int8's drift (the int8 graph on the photo) is at most
/// [`GDINO_CONTROL_FACTOR`] times the fp32 graph's own largest drift under three one-level changes (flip the lowest bit, +1, -1), plus a small margin. A
/// graph of another model, or one broken by quantization, moves the scores by more (up to 1) and fails. Measured
/// when set: int8 score drift 0.30 against a control of 0.30 (Grounding DINO), 0.40 against 0.43 (MM). The box
/// bound says little on these tiny models (the control already moves boxes by 0.5-0.8 of the side, so the bound is
/// near or above 1); the score bound is the one that bites here, and BENCHMARKS.md reports the full-size drift.
fn check_gdino_against_control(family: &str) {
    let run = |p, change| best_per_query(open(family, Some("split"), p), &GDINO_QUERIES, change);
    let fp32 = run(Precision::Fp32, OneLevel::None);
    let (mut c_score, mut c_frac) = (0f64, 0f64);
    for change in [OneLevel::Flip, OneLevel::Up, OneLevel::Down] {
        let (s, f, _) = drift_between(&fp32, &run(Precision::Fp32, change));
        (c_score, c_frac) = (c_score.max(s), c_frac.max(f));
    }
    let int8 = run(Precision::Int8, OneLevel::None);
    let (score, frac, identical) = drift_between(&fp32, &int8);
    eprintln!(
        "{family}: int8 drift score {score:.4}, box {frac:.4} of the side; fp32 under a one-level change: score \
         {c_score:.4}, box {c_frac:.4}"
    );
    assert!(!identical, "{family}: int8 gave exactly fp32's results: did the int8 graph run?");
    let bound = |c: f64| GDINO_CONTROL_FACTOR * c + GDINO_MARGIN;
    assert!(score <= bound(c_score), "{family}: int8 score drift {score} > {} (control {c_score})", bound(c_score));
    assert!(frac <= bound(c_frac), "{family}: int8 box drift {frac} > {} (control {c_frac})", bound(c_frac));
}

/// See [`check_gdino_against_control`].
const GDINO_CONTROL_FACTOR: f64 = 1.5;
/// See [`check_gdino_against_control`].
const GDINO_MARGIN: f64 = 0.02;

#[test]
fn grounding_dino_int8_drifts_no_more_than_a_one_level_change_of_the_photo() {
    check_gdino_against_control("grounding-dino");
    check_gdino_against_control("mm-grounding-dino");
}

/// `--precision int8` maps to each layout's int8 graph.
#[test]
fn int8_picks_each_layouts_graph() {
    let m = open("owlvit", None, Precision::Int8);
    assert_eq!((m.layout, m.precision_label().as_str()), (Layout::Split, "int8"));
    assert!(m.graphs()[1].ends_with("onnx/image_embedder_int8.onnx") && m.graphs()[0].ends_with("text_encoder.onnx"));
    let m = open("owlvit", Some("hf"), Precision::Int8);
    assert_eq!(m.graphs(), [tiny_model("owlvit").join("onnx/model_quantized.onnx")]);
    assert_eq!((m.layout_choice().to_string().as_str(), m.precision_label().as_str()), ("hf:quantized", "int8"));
    let m = open("grounding-dino", None, Precision::Int8);
    assert!(m.graphs()[1].ends_with("onnx/detector_int8.onnx"), "{:?}", m.graphs());
    let m = open("owlvit", None, Precision::Fp32);
    assert_eq!(m.precision_label(), "fp32");
    assert!(m.graphs()[1].ends_with("onnx/image_embedder.onnx"));
}

fn lookout() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
}

/// `locate --precision int8` reports the precision in its JSON and its text; fp32 is the default and says so.
#[test]
fn locate_reports_the_precision_that_ran() {
    let run = |extra: &[&str]| {
        let o = lookout()
            .args(["locate", "--json", "--no-images", "--intra-threads", "1", "-m"])
            .arg(tiny_model("owlvit"))
            .arg(fixture("coffee.png"))
            .args(["-q", "a cup of coffee"])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let fp32 = run(&[]);
    let int8 = run(&["--precision", "int8"]);
    assert_eq!((fp32["precision"].as_str(), fp32["layout"].as_str()), (Some("fp32"), Some("split")));
    assert_eq!((int8["precision"].as_str(), int8["layout"].as_str()), (Some("int8"), Some("split")));
    assert_ne!(fp32["results"], int8["results"], "the int8 graph ran");
    let hf = run(&["--precision", "int8", "--layout", "hf"]);
    assert_eq!((hf["precision"].as_str(), hf["layout"].as_str()), (Some("int8"), Some("hf:quantized")));
    let o = lookout()
        .args(["locate", "--no-images", "--precision", "int8", "-m"])
        .arg(tiny_model("owlvit"))
        .arg(fixture("coffee.png"))
        .args(["-q", "a cup of coffee"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.lines().next().unwrap_or("").ends_with("split, int8)"), "{text}");
}

/// A missing int8 graph: exit 2, one line naming the directory, the file, and the command that makes it.
#[test]
fn a_missing_int8_graph_is_named_with_the_command_that_makes_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = tiny_model("owlvit");
    std::fs::create_dir(dir.path().join("onnx")).unwrap();
    for f in [
        "config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "onnx/text_encoder.onnx",
        "onnx/image_embedder.onnx",
    ] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let run = |extra: &[&str]| {
        lookout()
            .args(["locate", "--no-images", "-m"])
            .arg(dir.path())
            .arg(fixture("coffee.png"))
            .args(["-q", "a cup of coffee"])
            .args(extra)
            .output()
            .unwrap()
    };
    for extra in [&["--precision", "int8"][..], &["--precision", "int8", "--layout", "split"]] {
        let o = run(extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        let line = err.lines().find(|l| l.contains("error")).unwrap_or_default();
        assert_eq!(err.lines().filter(|l| l.contains("error")).count(), 1, "{err}");
        assert!(line.contains(&dir.path().display().to_string()), "{line}");
        assert!(line.contains("onnx/image_embedder_int8.onnx") && line.contains("models/quantize_int8.py"), "{line}");
    }
    // An hf variant of another precision and --precision int8 contradict each other.
    let o = run(&["--precision", "int8", "--layout", "hf:fp16"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--layout hf:fp16 runs a fp16 graph and --precision asks for int8"), "{err}");
    assert!(run(&["--precision", "fp32"]).status.success());
}
