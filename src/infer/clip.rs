//! CLIP (`CLIPModel`, openai/clip-vit-base-patch32): it scores crops against sentences. `locate --rerank clip`
//! uses it to choose among a detector's candidate boxes, and `watch` can use it as the cheap verifier
//! (`model_type: "clip"`, behind [`Verifier`]).
//!
//! ```text
//! sentences ──CLIP BPE (text.rs)──► text graph ──► text_embeds [P, D]        once per prompt set
//! crops ──ClipModel::pixel_values──► [N, 3, S, S] ──► image graph ──► image_embeds [N, D]   once per crop
//! logits_per_image[n, p] = logit_scale · cos(image_embeds[n], text_embeds[p])   (CLIPModel.forward)
//! ```
//!
//! Two graph layouts:
//! - lookout's export (`models/export_verifier.py --clip`): `onnx/text_encoder.onnx` (`input_ids`,
//!   `attention_mask` → `text_embeds`) and `onnx/image_encoder.onnx` (`pixel_values` → `image_embeds` and
//!   `logit_scale`, the model's `logit_scale.exp()`).
//! - the Hub's (Xenova/clip-vit-base-patch32): `onnx/text_model.onnx` (`input_ids` → `text_embeds`) and
//!   `onnx/vision_model.onnx` (`pixel_values` → `image_embeds`). These do not give the logit scale; it is
//!   [`HUB_LOGIT_SCALE`].
//!
//! Preprocessing is `CLIPImageProcessor`'s (transformers 4.57, the slow one), the same steps as X-CLIP's
//! ([`XclipPreprocess`]): Pillow resize of the 8-bit image so its shortest edge is `size.shortest_edge`
//! (bicubic), a centre crop to `crop_size`, `u8 as f64 * rescale_factor` stored as f32, `(x - mean) / std` with
//! CLIP's mean and std. Text is padded to the text model's context (77) with `tokenizer_config.json`'s
//! `pad_token`, as `padding="max_length"` does; the text model pools at the argmax id, so end-of-text must be the
//! largest id ([`QueryTokenizer::from_file`] checks it).
//!
//! As a verifier: each crop's image embedding is L2-normalised, the N are averaged and the mean normalised again
//! (one embedding for the event), and prompt `p`'s logit is `logit_scale · cos(mean, text_embeds[p])`; the
//! softmax over the prompts is then X-CLIP's.

use std::path::{Path, PathBuf};

use image::RgbImage;
use ndarray::{Array2, Array4, Axis};
use ort::value::TensorRef;

use super::preprocess::PilFilter;
use super::runtime::{SessionOptions, build_session};
use super::text::QueryTokenizer;
use super::verify::{PromptSet, Verifier};
use super::xclip::{ProcessorDefaults, XclipPreprocess, extract2, pad_id};
use super::{InferError, Result};
use crate::geom::{Detection, PixelBox};

/// transformers' `OPENAI_CLIP_MEAN`, `CLIPImageProcessor`'s default.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// transformers' `OPENAI_CLIP_STD` (its decimals as written there; numpy rounds them to f32 as this does).
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// `CLIPImageProcessor`'s defaults for keys a `preprocessor_config.json` leaves out.
pub const CLIP_DEFAULTS: ProcessorDefaults =
    ProcessorDefaults { filter: PilFilter::Bicubic, mean: CLIP_MEAN, std: CLIP_STD };

/// The logit scale of the Hub's CLIP graphs, which do not output it: OpenAI's trained CLIP checkpoints (B/32,
/// B/16, L/14) all end at the clamp of `logit_scale`, ln 100, so `logit_scale.exp()` is 100.
pub const HUB_LOGIT_SCALE: f32 = 100.0;

/// Which graphs the directory has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClipLayout {
    /// `text_encoder.onnx` + `image_encoder.onnx` (lookout's export).
    Lookout,
    /// `text_model.onnx` + `vision_model.onnx` (the Hub's ONNX export).
    Hub,
}

/// The layout of the graphs in `dir`: lookout's when its text graph is there or the Hub's is not.
fn layout_of(dir: &Path) -> ClipLayout {
    if dir.join(ClipLayout::Lookout.graphs().0).is_file() || !dir.join("onnx/text_model.onnx").is_file() {
        ClipLayout::Lookout
    } else {
        ClipLayout::Hub
    }
}

/// True when `dir` holds the Hub's graphs (`text_model.onnx`, `vision_model.onnx`) rather than lookout's export.
pub(crate) fn is_hub_layout(dir: &Path) -> bool {
    layout_of(dir) == ClipLayout::Hub
}

impl ClipLayout {
    fn graphs(self) -> (&'static str, &'static str) {
        match self {
            ClipLayout::Lookout => ("onnx/text_encoder.onnx", "onnx/image_encoder.onnx"),
            ClipLayout::Hub => ("onnx/text_model.onnx", "onnx/vision_model.onnx"),
        }
    }
}

/// CLIP loaded from a model directory (`config.json` with `model_type: "clip"`, `preprocessor_config.json`,
/// `tokenizer.json`, and one of the two graph layouts of the module documentation).
pub struct ClipModel {
    dir: PathBuf,
    name: String,
    is_test_model: bool,
    layout: ClipLayout,
    /// The image graph that runs, relative to `dir` (the layout's, or its int8 variant).
    image_graph: String,
    image_size: u32,
    preprocess: XclipPreprocess,
    tokenizer: QueryTokenizer,
    /// Tokens per prompt (the text model's `max_position_embeddings`) and the padding id.
    context: usize,
    pad_id: i64,
    /// Whether the text graph takes `attention_mask` (the Hub's takes `input_ids` only).
    text_takes_mask: bool,
    text: ort::session::Session,
    image: ort::session::Session,
}

/// An image graph's outputs for a batch of crops.
#[derive(Debug, Clone)]
pub struct ImageFeatures {
    /// `get_image_features`, one row per crop (projected, not normalised).
    pub embeds: Array2<f32>,
    /// `logit_scale.exp()`.
    pub logit_scale: f32,
}

impl ClipModel {
    /// Loads the CLIP model in `dir`.
    pub fn open(dir: &Path, opts: &SessionOptions) -> Result<Self> {
        let config = read_json(dir, "config.json", "a CLIP model is a directory with config.json and onnx/")?;
        match config.get("model_type").and_then(|v| v.as_str()) {
            Some("clip") => Self::load(dir, &config, opts, layout_of(dir).graphs().1),
            other => Err(InferError::Model {
                dir: dir.to_path_buf(),
                message: format!(
                    "model_type {} is not CLIP; give a CLIP model directory (models/tiny/clip is the test one, \
                     `lookout models fetch clip-vit-base-patch32` the real one)",
                    other.map_or("missing".to_string(), |t| format!("{t:?}"))
                ),
            }),
        }
    }

    /// Loads the model in `dir` whose parsed `config.json` is `config`, with `image_graph` (relative to `dir`: the
    /// layout's image graph or its int8 variant, see [`crate::infer::verifier_event_graph`]) as the image side.
    pub fn load(dir: &Path, config: &serde_json::Value, opts: &SessionOptions, image_graph: &str) -> Result<Self> {
        let get = |v: Option<&serde_json::Value>, k: &str| v.and_then(|v| v.get(k)).and_then(|x| x.as_u64());
        let image_size = get(config.get("vision_config"), "image_size").unwrap_or(224).clamp(1, 8192) as u32;
        let context = get(config.get("text_config"), "max_position_embeddings").unwrap_or(77).clamp(2, 4096) as usize;
        let export = "make it with models/export_verifier.py --clip, or `lookout models fetch clip-vit-base-patch32`";
        let file = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(InferError::MissingFile { dir: dir.to_path_buf(), file: name.into(), hint: export.into() })
            }
        };
        let bad =
            |file: &str, message: String| InferError::BadFile { dir: dir.to_path_buf(), file: file.into(), message };
        let pre_path = file("preprocessor_config.json")?;
        let text = std::fs::read_to_string(&pre_path).map_err(|e| bad("preprocessor_config.json", e.to_string()))?;
        let preprocess =
            XclipPreprocess::from_json_with(&text, CLIP_DEFAULTS).map_err(|m| bad("preprocessor_config.json", m))?;
        if preprocess.crop != Some((image_size, image_size)) {
            return Err(bad(
                "preprocessor_config.json",
                format!("crop_size must be {image_size}x{image_size}, the vision model's image_size"),
            ));
        }
        let tokenizer = QueryTokenizer::from_file(&file("tokenizer.json")?)?;
        let pad_id = pad_id(dir, &tokenizer)?;
        let layout = layout_of(dir);
        let text_graph = layout.graphs().0;
        let text = build_session(&file(text_graph)?, opts)?;
        let image = build_session(&file(image_graph)?, opts)?;
        let text_takes_mask = text.inputs().iter().any(|i| i.name() == "attention_mask");
        for (session, graph, name) in [(&text, text_graph, "text_embeds"), (&image, image_graph, "image_embeds")] {
            if !session.outputs().iter().any(|o| o.name() == name) {
                return Err(bad(graph, format!("has no output {name}; is it a CLIP graph with the projection?")));
            }
        }
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "clip".into());
        let info = read_json(dir, "export_info.json", "").ok();
        let is_test_model = info.as_ref().is_some_and(|i| i.get("test_model").and_then(|t| t.as_bool()) == Some(true));
        Ok(ClipModel {
            dir: dir.to_path_buf(),
            name,
            is_test_model,
            layout,
            image_graph: image_graph.to_owned(),
            image_size,
            preprocess,
            tokenizer,
            context,
            pad_id,
            text_takes_mask,
            text,
            image,
        })
    }

    /// The directory's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True for a random-weight test model (`export_info.json` says `test_model`): its scores mean nothing.
    pub fn is_test_model(&self) -> bool {
        self.is_test_model
    }

    /// The `[N, 3, S, S]` pixel tensor of `images`, as `CLIPImageProcessor` makes it.
    pub fn pixel_values(&self, images: &[RgbImage]) -> Array4<f32> {
        let s = self.image_size as usize;
        let mut pixels = Array4::<f32>::zeros((images.len(), 3, s, s));
        for (n, img) in images.iter().enumerate() {
            self.preprocess.frame_into(img, pixels.index_axis_mut(Axis(0), n));
        }
        pixels
    }

    /// The prompts' token ids and attention mask, `[P, context]` each.
    pub fn tokens(&self, prompts: &[String]) -> Result<(Array2<i64>, Array2<i64>)> {
        self.tokenizer.encode_all_to(prompts, self.context, self.pad_id)
    }

    /// `get_text_features` of each prompt, `[P, D]` (projected, not normalised).
    pub fn text_embeds(&mut self, prompts: &[String]) -> Result<Array2<f32>> {
        let (ids, mask) = self.tokens(prompts)?;
        let graph = self.layout.graphs().0;
        let err = |e: ort::Error| InferError::Ort { graph: graph.into(), message: e.to_string() };
        let mut inputs = ort::inputs!["input_ids" => TensorRef::from_array_view(&ids).map_err(err)?];
        if self.text_takes_mask {
            inputs.push(("attention_mask".into(), TensorRef::from_array_view(&mask).map_err(err)?.into()));
        }
        let outputs = self.text.run(inputs).map_err(err)?;
        let embeds = extract2(&outputs, "text_embeds", &self.dir.join(graph))?;
        check_rows(&embeds, prompts.len(), graph, "text_embeds")?;
        Ok(embeds)
    }

    /// The image graph on a pixel tensor made by [`ClipModel::pixel_values`].
    pub fn image_features(&mut self, pixels: &Array4<f32>) -> Result<ImageFeatures> {
        let graph = self.image_graph.as_str();
        let path = self.dir.join(graph);
        let err = |e: ort::Error| InferError::Ort { graph: graph.into(), message: e.to_string() };
        let outputs = self
            .image
            .run(ort::inputs!["pixel_values" => TensorRef::from_array_view(pixels).map_err(err)?])
            .map_err(err)?;
        let embeds = extract2(&outputs, "image_embeds", &path)?;
        check_rows(&embeds, pixels.len_of(Axis(0)), graph, "image_embeds")?;
        let logit_scale = match outputs.get("logit_scale") {
            None => HUB_LOGIT_SCALE,
            Some(v) => {
                let out_err = |message: String| InferError::Output {
                    graph: path.display().to_string(),
                    name: "logit_scale".into(),
                    message,
                };
                let view = v.try_extract_array::<f32>().map_err(|e| out_err(e.to_string()))?;
                view.iter().next().copied().filter(|s| s.is_finite()).ok_or_else(|| out_err("empty".into()))?
            }
        };
        Ok(ImageFeatures { embeds, logit_scale })
    }

    /// `logits_per_image` `[N, P]` of `images` against `prompts`, as `CLIPModel.forward` gives them.
    pub fn logits_per_image(&mut self, images: &[RgbImage], prompts: &[String]) -> Result<Array2<f32>> {
        let text = normalized(&self.text_embeds(prompts)?);
        let pixels = self.pixel_values(images);
        let f = self.image_features(&pixels)?;
        Ok(normalized(&f.embeds).dot(&text.t()) * f.logit_scale)
    }
}

/// One of a detector's boxes scored again by CLIP ([`ClipModel::rerank`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reranked {
    /// The detector's box, with its own score.
    pub detection: Detection,
    /// Cosine similarity of the crop's image embedding and the query's text embedding, -1 to 1.
    pub clip_similarity: f32,
    /// CLIP's probability that this crop is the one the sentence describes, among the query's candidates: the
    /// softmax over the candidates of `logit_scale · clip_similarity` (`logits_per_text`, as CLIP's zero-shot
    /// retrieval of an image for a text).
    pub clip_score: f32,
    /// The combined score, [`combine`]`(detector score, clip_score)`: what the boxes are ordered by.
    pub score: f32,
}

/// The rule that combines a detector's score and CLIP's: their geometric mean, `sqrt(detector × clip)`. Both are
/// in 0..1, so the result is too; a box must do well in both to rank first, and neither score alone decides (CLIP
/// alone localises poorly, the detector alone misses the action or attribute the sentence names).
pub fn combine(detector: f32, clip: f32) -> f32 {
    (detector.clamp(0.0, 1.0) * clip.clamp(0.0, 1.0)).sqrt()
}

impl ClipModel {
    /// Scores each detection's crop of `img` against its query, whose normalised text embedding is row
    /// `detection.query` of `queries` (from [`ClipModel::text_embeds`] and [`normalized`]). The crops of one image
    /// run as one batch. The result is ordered by query (as the detections are), then by combined score (best
    /// first; ties by the detector's score).
    pub fn rerank(&mut self, img: &RgbImage, detections: &[Detection], queries: &Array2<f32>) -> Result<Vec<Reranked>> {
        if detections.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(d) = detections.iter().find(|d| d.query >= queries.nrows()) {
            return Err(InferError::Model {
                dir: self.dir.clone(),
                message: format!("detection of query {} but {} queries were encoded", d.query, queries.nrows()),
            });
        }
        let crops: Vec<RgbImage> = detections.iter().map(|d| crop_box(img, &d.bbox)).collect();
        let f = self.image_features(&self.pixel_values(&crops))?;
        let images = normalized(&f.embeds);
        if images.ncols() != queries.ncols() {
            return Err(InferError::Model {
                dir: self.dir.clone(),
                message: format!(
                    "text embeddings have {} values, image embeddings {}",
                    queries.ncols(),
                    images.ncols()
                ),
            });
        }
        let sims: Vec<f32> =
            detections.iter().enumerate().map(|(i, d)| images.row(i).dot(&queries.row(d.query))).collect();
        let mut out = Vec::with_capacity(detections.len());
        let mut queries_seen: Vec<usize> = detections.iter().map(|d| d.query).collect();
        queries_seen.dedup();
        for q in queries_seen {
            let idx: Vec<usize> = (0..detections.len()).filter(|&i| detections[i].query == q).collect();
            let logits: Vec<f32> = idx.iter().map(|&i| f.logit_scale * sims[i]).collect();
            let probs = super::verify::softmax(&logits);
            let mut group: Vec<Reranked> = idx
                .iter()
                .zip(probs)
                .map(|(&i, p)| Reranked {
                    detection: detections[i],
                    clip_similarity: sims[i],
                    clip_score: p,
                    score: combine(detections[i].score, p),
                })
                .collect();
            group.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.detection.score.total_cmp(&a.detection.score)));
            out.extend(group);
        }
        Ok(out)
    }
}

fn check_rows(a: &Array2<f32>, rows: usize, graph: &str, name: &str) -> Result<()> {
    if a.nrows() != rows || a.ncols() == 0 {
        return Err(InferError::Output {
            graph: graph.into(),
            name: name.into(),
            message: format!("shape {:?}, expected [{rows}, D]", a.dim()),
        });
    }
    Ok(())
}

/// Each row divided by its L2 norm (as `CLIPModel.forward` does, without an epsilon).
pub fn normalized(a: &Array2<f32>) -> Array2<f32> {
    let mut out = a.clone();
    for mut row in out.rows_mut() {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.mapv_inplace(|x| x / norm);
    }
    out
}

fn read_json(dir: &Path, file: &str, hint: &str) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join(file)).map_err(|_| InferError::MissingFile {
        dir: dir.to_path_buf(),
        file: file.into(),
        hint: hint.into(),
    })?;
    serde_json::from_str(&text).map_err(|e| InferError::BadFile {
        dir: dir.to_path_buf(),
        file: file.into(),
        message: e.to_string(),
    })
}

/// The pixels of `b` in `img`, the box rounded outwards to whole pixels and at least one pixel on each side: the
/// crop `locate` writes and `--rerank` scores.
pub fn crop_box(img: &RgbImage, b: &PixelBox) -> RgbImage {
    let (w, h) = (img.width().max(1), img.height().max(1));
    let x0 = (b.x0.floor().max(0.0) as u32).min(w - 1);
    let y0 = (b.y0.floor().max(0.0) as u32).min(h - 1);
    let x1 = (b.x1.ceil() as u32).clamp(x0 + 1, w);
    let y1 = (b.y1.ceil() as u32).clamp(y0 + 1, h);
    image::imageops::crop_imm(img, x0, y0, x1 - x0, y1 - y0).to_image()
}

impl Verifier for ClipModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn num_frames(&self) -> Option<usize> {
        None
    }

    fn encode(&mut self, prompts: &[String]) -> Result<PromptSet> {
        let embeds = normalized(&self.text_embeds(prompts)?);
        Ok(PromptSet::with_embeddings(prompts.to_vec(), embeds))
    }

    fn logits(&mut self, frames: &[RgbImage], prompts: &PromptSet) -> Result<Vec<f32>> {
        let text = prompts.embeddings().ok_or_else(|| InferError::Model {
            dir: self.dir.clone(),
            message: "prompts were encoded for another verifier; encode them again".into(),
        })?;
        if frames.is_empty() {
            return Err(InferError::Model { dir: self.dir.clone(), message: "no frames to verify".into() });
        }
        let pixels = self.pixel_values(frames);
        let f = self.image_features(&pixels)?;
        let per_frame = normalized(&f.embeds);
        let mean = per_frame.mean_axis(Axis(0)).expect("at least one frame").insert_axis(Axis(0));
        let video = normalized(&mean);
        if text.ncols() != video.ncols() {
            return Err(InferError::Model {
                dir: self.dir.clone(),
                message: format!("text embeddings have {} values, image embeddings {}", text.ncols(), video.ncols()),
            });
        }
        Ok((video.dot(&text.t()) * f.logit_scale).row(0).to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_defaults_are_bicubic_and_the_openai_mean() {
        let p = XclipPreprocess::from_json_with(r#"{"size": 224, "crop_size": 224}"#, CLIP_DEFAULTS).unwrap();
        assert_eq!(p.filter, PilFilter::Bicubic);
        assert_eq!(p.normalize, Some((CLIP_MEAN, CLIP_STD)));
    }

    #[test]
    fn the_crop_is_the_box_rounded_outwards_and_never_empty() {
        let img = RgbImage::from_fn(10, 8, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let c = crop_box(&img, &PixelBox { x0: 1.5, y0: 2.2, x1: 4.1, y1: 5.0 });
        assert_eq!((c.width(), c.height(), c.get_pixel(0, 0).0), (4, 3, [1, 2, 0]));
        let c = crop_box(&img, &PixelBox { x0: 9.9, y0: 7.9, x1: 9.9, y1: 7.9 });
        assert_eq!((c.width(), c.height()), (1, 1));
    }

    #[test]
    fn the_combined_score_is_the_geometric_mean_in_0_1() {
        assert_eq!(combine(0.25, 1.0), 0.5);
        assert_eq!(combine(0.0, 0.9), 0.0);
        assert_eq!(combine(1.5, 1.0), 1.0, "clamped to 0..1");
        assert!(combine(0.4, 0.9) > combine(0.9, 0.3), "both must do well");
    }

    #[test]
    fn rows_are_normalised() {
        let a = ndarray::array![[3.0f32, 4.0], [0.0, 2.0]];
        assert_eq!(normalized(&a), ndarray::array![[0.6f32, 0.8], [0.0, 1.0]]);
    }
}
