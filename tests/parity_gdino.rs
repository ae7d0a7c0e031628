//! Parity of the Grounding DINO family with Hugging Face transformers 4.57.6 (tests/golden/grounding_dino/VERSIONS.txt).
//!
//! The golden files were written by models/export_gdino.py from transformers' own processor and PyTorch models,
//! for the committed tiny random-weight Grounding DINO and MM-Grounding-DINO (graphs of one size, 320x320) and
//! three real photos (square, landscape, portrait), with the queries `["a cat", "a remote control"]`, which are
//! not the prompt the graphs were traced with. For each model, each graph layout and each photo this checks, in
//! order:
//! 1. the pixel tensor and pixel mask of our preprocessing against the processor's (equal to the bit);
//! 2. the token ids, the phrase masks and position ids of our text side (equal), and in the split layout the
//!    text encoder's features;
//! 3. the raw logits and boxes of the whole Rust path (our pixels, our tokens and masks, ONNX Runtime);
//! 4. the post-processed boxes, scores and labels against `post_process_grounded_object_detection`.
//!
//! Separately: the token ids of a set of sentences, the phrase masks of random rows, and Pillow's bilinear resize.

mod common;

use common::{Npy, fixture, golden, max_abs_diff, read_npy, tiny_model};
use lookout::geom::Transform;
use lookout::infer::gdino::post::transformers_style;
use lookout::infer::gdino::text::{BertTokenizer, phrase_masks};
use lookout::infer::preprocess::{PilFilter, resize_pil};
use lookout::infer::{GdinoDetector, Image, Layout, ModelDir, SessionOptions};
use serde::Deserialize;

const MODELS: [&str; 2] = ["grounding-dino", "mm-grounding-dino"];
const IMAGES: [&str; 3] = ["astronaut", "coffee", "grace_hopper"];
/// The queries of the golden files (the graphs were traced with "a photo of an astronaut. a flag.").
const QUERIES: [&str; 2] = ["a cat", "a remote control"];
/// Raw logits, boxes and text features: ONNX Runtime against PyTorch, float32 reductions in another order. The
/// issue asks for 1e-4; the deformable attention (grid_sample) needs no more (measured below 2e-5).
const RAW_TOL: f64 = 1e-4;
/// Post-processed boxes (pixels) and scores, relative.
const POST_REL_TOL: f64 = 1e-3;

#[derive(Debug, Deserialize)]
struct Post {
    width: u32,
    height: u32,
    queries: Vec<String>,
    text: String,
    box_threshold: f32,
    text_threshold: f32,
    results: Vec<PostBox>,
}

#[derive(Debug, Deserialize)]
struct PostBox {
    index: usize,
    label: usize,
    text: String,
    score: f64,
    #[serde(rename = "box")]
    bbox: [f64; 4],
}

fn as_f64<T: Copy + Into<f64>>(a: impl IntoIterator<Item = T>) -> Vec<f64> {
    a.into_iter().map(Into::into).collect()
}

/// `-inf` (logits past the text) must match exactly; finite values within `tol`.
fn assert_close(what: &str, got: &[f64], want: &Npy, tol: f64) -> f64 {
    assert_eq!(got.len(), want.data.len(), "{what}: size");
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(&want.data).enumerate() {
        if w.is_infinite() || g.is_infinite() {
            assert_eq!(g, w, "{what}[{i}]");
            continue;
        }
        worst = worst.max((g - w).abs());
    }
    assert!(worst <= tol, "{what}: max difference {worst:.3e} > {tol:.0e}");
    worst
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1.0)
}

fn check(model_name: &str, layout: Layout) {
    let model = ModelDir::open_with(&tiny_model(model_name), Some(layout)).expect("open tiny model");
    let mut detector = GdinoDetector::load(model, &SessionOptions::default()).expect("load detector");
    assert_eq!(detector.fixed_input_hw(), Some((320, 320)));
    let queries: Vec<String> = QUERIES.iter().map(|q| q.to_string()).collect();
    let encoded = detector.encode_queries(&queries).unwrap();
    assert_eq!(encoded.passes.len(), 1);
    let pass = &encoded.passes[0];
    let mut worst_raw = 0.0f64;
    for image in IMAGES {
        let dir = golden(&format!("grounding_dino/{model_name}/{image}"));
        let what = format!("{model_name}/{layout}/{image}");
        let post: Post = serde_json::from_str(&std::fs::read_to_string(dir.join("post.json")).unwrap()).unwrap();
        assert_eq!(post.queries, QUERIES);
        assert_eq!(pass.pass.text, post.text);
        let img = lookout::imageio::load_rgb(&fixture(&format!("{image}.png"))).unwrap();
        assert_eq!((img.width(), img.height()), (post.width, post.height));

        // 1. Pixels and mask: equal to the bit.
        let (pixels, mask, prepared) = detector.preprocess(&[Image::Rgb(&img)]);
        let transform = prepared.into_iter().next().unwrap().unwrap();
        assert_eq!(transform, Transform::stretch(img.width(), img.height()));
        let want = read_npy(&dir.join("pixel_values.npy"));
        assert_eq!(pixels.shape(), want.shape.as_slice(), "{what}: pixel shape");
        let (d, at) = max_abs_diff(as_f64(pixels.iter().copied()), want.data.iter().copied());
        assert_eq!(d, 0.0, "{what}: pixel_values differ by {d} at {at}");
        let want = read_npy(&dir.join("pixel_mask.npy"));
        assert_eq!(mask.shape(), want.shape.as_slice(), "{what}: mask shape");
        assert!(mask.iter().zip(&want.data).all(|(&m, &w)| m as f64 == w), "{what}: pixel_mask differs");

        // 2. Text: ids, masks, position ids equal; the split text encoder's features close.
        let ids = read_npy(&dir.join("input_ids.npy"));
        assert_eq!(as_f64(pass.pass.input_ids.iter().map(|&v| v as f64)), ids.data, "{what}: input_ids");
        let types = read_npy(&dir.join("token_type_ids.npy"));
        assert_eq!(as_f64(pass.pass.token_type_ids().iter().map(|&v| v as f64)), types.data, "{what}");
        let attention = read_npy(&dir.join("attention_mask.npy"));
        assert_eq!(as_f64(pass.pass.attention_mask().iter().map(|&v| v as f64)), attention.data, "{what}");
        let masks = read_npy(&dir.join("text_self_attention_masks.npy"));
        assert_eq!(
            as_f64(pass.pass.text_self_attention_masks.iter().map(|&v| f64::from(u8::from(v)))),
            masks.data,
            "{what}: text_self_attention_masks"
        );
        let positions = read_npy(&dir.join("position_ids.npy"));
        assert_eq!(as_f64(pass.pass.position_ids.iter().map(|&v| v as f64)), positions.data, "{what}: position_ids");
        if let Some(features) = &pass.text_features {
            let want = read_npy(&dir.join("text_features.npy"));
            assert_eq!(features.shape(), want.shape.as_slice());
            let d = assert_close(&format!("{what}: text_features"), &as_f64(features.iter().copied()), &want, RAW_TOL);
            worst_raw = worst_raw.max(d);
        }

        // 3. Raw outputs of the whole Rust path.
        let raw = detector.run_pass(pixels.view(), mask.view(), pass).unwrap().remove(0);
        let want_logits = read_npy(&dir.join("logits.npy"));
        assert_eq!(&want_logits.shape[1..], raw.logits.shape(), "{what}: logits shape");
        worst_raw = worst_raw.max(assert_close(
            &format!("{what}: logits"),
            &as_f64(raw.logits.iter().copied()),
            &want_logits,
            RAW_TOL,
        ));
        let want_boxes = read_npy(&dir.join("pred_boxes.npy"));
        worst_raw = worst_raw.max(assert_close(
            &format!("{what}: pred_boxes"),
            &as_f64(raw.boxes.iter().copied()),
            &want_boxes,
            RAW_TOL,
        ));

        // 4. Post-processing: the same boxes, in the same order, with the same labels and label texts.
        let got = transformers_style(
            raw.logits.view(),
            raw.boxes.view(),
            pass.pass.input_ids.as_slice().unwrap(),
            &pass.pass.spans,
            detector.tokenizer(),
            &transform,
            post.box_threshold,
            post.text_threshold,
        );
        assert!(!post.results.is_empty(), "{what}: the golden keeps no box");
        let summary: Vec<(usize, usize)> = got.iter().map(|b| (b.index, b.label)).collect();
        let want: Vec<(usize, usize)> = post.results.iter().map(|b| (b.index, b.label)).collect();
        assert_eq!(summary, want, "{what}: kept boxes (index, label)");
        for (g, w) in got.iter().zip(&post.results) {
            assert_eq!(g.text, w.text, "{what}: label text of box {}", w.index);
            assert!(rel(g.score as f64, w.score) <= POST_REL_TOL, "{what}: score {} vs {}", g.score, w.score);
            let gb = [g.bbox.x0, g.bbox.y0, g.bbox.x1, g.bbox.y1];
            for (a, b) in gb.iter().zip(w.bbox) {
                assert!(rel(*a as f64, b) <= POST_REL_TOL, "{what}: box {gb:?} vs {:?}", w.bbox);
            }
        }
    }
    eprintln!("{model_name}/{layout}: largest raw difference {worst_raw:.2e}");
}

#[test]
fn grounding_dino_hf_matches_transformers() {
    check("grounding-dino", Layout::Hf);
}

#[test]
fn grounding_dino_split_matches_transformers() {
    check("grounding-dino", Layout::Split);
}

#[test]
fn mm_grounding_dino_hf_matches_transformers() {
    check("mm-grounding-dino", Layout::Hf);
}

#[test]
fn mm_grounding_dino_split_matches_transformers() {
    check("mm-grounding-dino", Layout::Split);
}

#[derive(Debug, Deserialize)]
struct TokenCase {
    text: String,
    input_ids: Vec<i64>,
}

/// `BertTokenizerFast(text)` of the Python side, for sentences with case, spacing, punctuation, accents and CJK.
#[test]
fn tokens_match_the_python_tokenizer() {
    let cases: Vec<TokenCase> =
        serde_json::from_str(&std::fs::read_to_string(golden("grounding_dino/tokens.json")).unwrap()).unwrap();
    assert!(cases.len() >= 10);
    for model in MODELS {
        let tok = BertTokenizer::from_file(&tiny_model(model).join("tokenizer.json")).unwrap();
        for case in &cases {
            assert_eq!(tok.encode(&case.text).unwrap(), case.input_ids, "{model}: {:?}", case.text);
        }
    }
}

#[derive(Debug, Deserialize)]
struct MaskRows {
    rows: Vec<MaskRow>,
}

#[derive(Debug, Deserialize)]
struct MaskRow {
    input_ids: Vec<i64>,
    position_ids: Vec<i64>,
    text_self_attention_mask: Vec<Vec<u8>>,
}

/// `generate_masks_with_special_tokens_and_transfer_map` on random rows of ids.
#[test]
fn phrase_masks_match_transformers_on_random_rows() {
    let rows: MaskRows =
        serde_json::from_str(&std::fs::read_to_string(golden("grounding_dino/masks.json")).unwrap()).unwrap();
    assert!(rows.rows.len() >= 10);
    for (i, row) in rows.rows.iter().enumerate() {
        let (mask, positions) = phrase_masks(&row.input_ids);
        assert_eq!(positions.to_vec(), row.position_ids, "row {i}: position ids");
        let got: Vec<Vec<u8>> = mask.rows().into_iter().map(|r| r.iter().map(|&v| u8::from(v)).collect()).collect();
        assert_eq!(got, row.text_self_attention_mask, "row {i}: mask");
    }
}

/// Pillow's bilinear resize of the synthetic image, at the sizes the export side chose (some letterbox sizes).
#[test]
fn pillow_bilinear_resize_is_bit_exact() {
    let dir = golden("grounding_dino/resize");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let Some((from, to)) = name.split_once("_to_") else { continue };
        let parse = |s: &str| {
            let (w, h) = s.split_once('x').unwrap();
            (w.parse::<u32>().unwrap(), h.parse::<u32>().unwrap())
        };
        let ((w, h), (ow, oh)) = (parse(from), parse(to));
        let want = read_npy(&path);
        assert_eq!(want.shape, [oh as usize, ow as usize, 3], "{name}");
        let got = resize_pil(&synth(w, h), ow, oh, PilFilter::Bilinear);
        let (d, at) = max_abs_diff(got.as_raw().iter().map(|&v| f64::from(v)), want.data.iter().copied());
        assert_eq!(d, 0.0, "{name}: Pillow differs by {d} at {at}");
        n += 1;
    }
    assert!(n >= 5, "only {n} resize goldens in {}", dir.display());
}

/// The synthetic image of tests/golden/preprocess/gen_golden.py.
fn synth(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let (xi, yi) = (x as i64, y as i64);
        if x < w / 3 && y >= h / 2 {
            return image::Rgb([((xi / 3 + yi / 2) % 2 * 255) as u8; 3]);
        }
        image::Rgb(std::array::from_fn(|c| {
            let c = c as i64;
            ((xi * 37 + yi * (91 + 2 * c) + c * 53 + ((xi * yi) % 17) * 13) % 256) as u8
        }))
    })
}

/// Scales `img` to `width` x `height` as `watch`'s model branch does (`videoscale add-borders=false`, here on RGB
/// so that only the scaler differs from Pillow), within a deadline.
fn gstreamer_scale(img: &image::RgbImage, width: u32, height: u32) -> image::RgbImage {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    use gstreamer_app as gst_app;
    gst::init().unwrap();
    let desc = format!(
        "appsrc name=src format=time ! videoscale add-borders=false ! video/x-raw,format=RGB,width={width},height={height} \
         ! appsink name=sink sync=false"
    );
    let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let src = pipeline.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    let sink = pipeline.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    let info = gstreamer_video::VideoInfo::builder(gstreamer_video::VideoFormat::Rgb, img.width(), img.height())
        .fps(gst::Fraction::new(1, 1))
        .build()
        .unwrap();
    src.set_caps(Some(&info.to_caps().unwrap()));
    pipeline.set_state(gst::State::Playing).unwrap();
    // GStreamer rows are 4-byte aligned.
    let stride = info.stride()[0] as usize;
    let mut data = vec![0u8; info.size()];
    for (y, row) in img.as_raw().chunks_exact(img.width() as usize * 3).enumerate() {
        data[y * stride..y * stride + row.len()].copy_from_slice(row);
    }
    let mut buffer = gst::Buffer::from_mut_slice(data);
    buffer.get_mut().unwrap().set_pts(gst::ClockTime::ZERO);
    src.push_buffer(buffer).unwrap();
    src.end_of_stream().unwrap();
    let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(30)).expect("a scaled frame within 30 s");
    let out = common::rgb_image(&sample);
    pipeline.set_state(gst::State::Null).unwrap();
    out
}

/// What `watch` pays for letting GStreamer scale frames instead of Pillow: the same photo through both paths,
/// with the detector's own frame size. The pixels are held to "close, not equal" (a level or two on average);
/// the best boxes and scores of the random-weight model are printed as figures (a trained model is much less
/// sensitive to its input, so they bound nothing).
#[test]
fn gstreamer_scaling_costs_little_against_pillow() {
    let model = ModelDir::open_with(&tiny_model("grounding-dino"), Some(Layout::Split)).unwrap();
    let mut detector = GdinoDetector::load(model, &SessionOptions::default()).unwrap();
    let queries: Vec<String> = QUERIES.iter().map(|q| q.to_string()).collect();
    let encoded = detector.encode_queries(&queries).unwrap();
    let pass = &encoded.passes[0];
    let scale = lookout::infer::Detector::frame_scale(&detector);
    for image in IMAGES {
        let img = lookout::imageio::load_rgb(&fixture(&format!("{image}.png"))).unwrap();
        let (w, h) = scale.size_for(img.width(), img.height());
        let scaled = gstreamer_scale(&img, w, h);
        let frame = lookout::infer::ScaledFrame {
            rgb: scaled.as_raw(),
            width: w,
            height: h,
            stride: w as usize * 3,
            orig_width: img.width(),
            orig_height: img.height(),
        };
        let (pil_pixels, pil_mask, _) = detector.preprocess(&[Image::Rgb(&img)]);
        let (gst_pixels, gst_mask, prepared) = detector.preprocess(&[Image::Scaled(frame)]);
        prepared.into_iter().next().unwrap().unwrap();
        assert_eq!(pil_mask, gst_mask, "{image}: the frame has the processor's size, so the same mask");
        let diffs: Vec<f32> = pil_pixels.iter().zip(&gst_pixels).map(|(a, b)| (a - b).abs()).collect();
        let mean_pixel = diffs.iter().sum::<f32>() / diffs.len() as f32;
        // The object queries come out in another order when the input moves a little (DETR's top-k proposal
        // selection), so compare what a user sees: each query's best box.
        let sel = lookout::infer::postprocess::Selection::default();
        let t = lookout::geom::Transform::stretch(img.width(), img.height());
        let pil = detector.run_pass(pil_pixels.view(), pil_mask.view(), pass).unwrap().remove(0);
        let gst = detector.run_pass(gst_pixels.view(), gst_mask.view(), pass).unwrap().remove(0);
        let pil = lookout::infer::gdino::post::select(pil.logits.view(), pil.boxes.view(), &pass.pass.spans, &t, &sel);
        let gst = lookout::infer::gdino::post::select(gst.logits.view(), gst.boxes.view(), &pass.pass.spans, &t, &sel);
        assert_eq!(pil.len(), gst.len());
        for (a, b) in pil.iter().zip(&gst) {
            let (score, iou) = ((a.score - b.score).abs(), a.bbox.iou(&b.bbox));
            eprintln!(
                "{image} {}x{} -> {w}x{h}: mean |pixel| {mean_pixel:.4} (normalised); query {}: best score {:.4} vs \
                 {:.4}, IoU of the best boxes {iou:.3}",
                img.width(),
                img.height(),
                a.query,
                a.score,
                b.score
            );
            // Figures only: a random-weight model is far more sensitive to its input than a trained one.
            assert!(score.is_finite() && iou.is_finite());
        }
        // The scalers themselves, in u8 levels: Pillow's bilinear (anti-aliased when it shrinks) and videoscale's.
        let pillow = resize_pil(&img, w, h, PilFilter::Bilinear);
        let levels: Vec<u8> = pillow.as_raw().iter().zip(scaled.as_raw()).map(|(a, b)| a.abs_diff(*b)).collect();
        let mean_levels = levels.iter().map(|&d| f64::from(d)).sum::<f64>() / levels.len() as f64;
        let max_levels = levels.iter().copied().max().unwrap();
        eprintln!("{image}: GStreamer against Pillow: mean {mean_levels:.2} levels, max {max_levels}");
        assert!(mean_levels < 3.0, "{image}: GStreamer's scale is {mean_levels} levels from Pillow's on average");
        // One u8 level is about 0.017 after normalisation.
        assert!(mean_pixel < 0.05, "{image}: mean pixel difference {mean_pixel}");
    }
}

/// A batch of pictures (as `watch` makes from several sources) gives each picture what it gets alone.
#[test]
fn a_batch_gives_each_picture_what_it_gets_alone() {
    use lookout::infer::Detector;
    for layout in [Layout::Hf, Layout::Split] {
        let model = ModelDir::open_with(&tiny_model("mm-grounding-dino"), Some(layout)).unwrap();
        let mut detector = GdinoDetector::load(model, &SessionOptions::default()).unwrap();
        let queries: Vec<String> = ["a cup", "a woman", "a rocket"].iter().map(|q| q.to_string()).collect();
        let set = detector.encode(&queries).unwrap();
        let sel = lookout::infer::postprocess::Selection { threshold: Some(0.05), ..Default::default() };
        let imgs: Vec<image::RgbImage> =
            IMAGES.iter().map(|i| lookout::imageio::load_rgb(&fixture(&format!("{i}.png"))).unwrap()).collect();
        let batch: Vec<Image<'_>> = imgs.iter().map(Image::Rgb).collect();
        let together = detector.detect(&batch, &set, &sel).unwrap();
        for (k, img) in imgs.iter().enumerate() {
            let alone = detector.detect(&[Image::Rgb(img)], &set, &sel).unwrap().remove(0).unwrap();
            let got = together[k].as_ref().unwrap();
            assert_eq!(got.len(), alone.len(), "{layout}: picture {k}");
            for (a, b) in got.iter().zip(&alone) {
                assert_eq!(a.query, b.query);
                assert!((a.score - b.score).abs() < 1e-5 && a.bbox.iou(&b.bbox) > 0.999, "{layout}: {a:?} vs {b:?}");
            }
        }
    }
}
