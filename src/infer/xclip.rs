//! X-CLIP (`XCLIPModel`), the video-text verifier, behind [`Verifier`].
//!
//! ```text
//! prompts ──CLIP BPE (text.rs)──► text_encoder.onnx (get_text_features) ──► [P, D]   once per prompt set
//! N crops ──XclipPreprocess──► [1, N, 3, S, S] ─┐
//!                                    [P, D] ────┴─► video.onnx ──► logits_per_video [1, P]   once per event
//! ```
//!
//! `video.onnx` holds the vision tower, the frame-mixing transformer, the prompt generator (it reads the video
//! features, so it cannot be cached with the text) and the scaled cosine similarity. The frame count and the
//! image size are fixed by the config (`vision_config.num_frames`, `vision_config.image_size`).
//!
//! Preprocessing is `XCLIPProcessor`'s image processor, `VideoMAEImageProcessor` (transformers 4.57, the slow
//! one), frame by frame: Pillow resize of the 8-bit frame so its shortest edge is `size.shortest_edge` (the long
//! edge `int(short * long / short_in)`), a centre crop to `crop_size` (top `(h - crop_h) // 2`, zeros where the
//! frame is smaller), then `u8 as f64 * rescale_factor` stored as f32 and `(x - mean) / std` in f32. The
//! tokenizer is lookout's CLIP tokenizer ([`super::text`]), padding to the text model's context (77 for the Hub
//! models, 16 for the tiny one) with `tokenizer_config.json`'s `pad_token`, as `padding="max_length"` does.

use std::path::{Path, PathBuf};

use image::RgbImage;
use ndarray::{Array2, Array5, ArrayViewMut3, Ix2};
use ort::value::TensorRef;

use super::preprocess::{PilFilter, resize_pil};
use super::runtime::{SessionOptions, build_session};
use super::text::QueryTokenizer;
use super::verify::{PromptSet, Verifier};
use super::{InferError, Result};

/// `VideoMAEImageProcessor`'s settings, read from `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct XclipPreprocess {
    /// How the frame is resized before the crop.
    pub resize: Option<ResizeTo>,
    /// The crop `(height, width)`, when `do_center_crop`.
    pub crop: Option<(u32, u32)>,
    pub filter: PilFilter,
    /// `rescale_factor`, when `do_rescale`.
    pub rescale: Option<f64>,
    /// `(image_mean, image_std)`, when `do_normalize`.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

/// `size` of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// `{"shortest_edge": n}` (or a bare number): the aspect ratio is kept.
    ShortestEdge(u32),
    /// `{"height": h, "width": w}`: a stretch.
    Exact { height: u32, width: u32 },
}

/// transformers' `IMAGENET_STANDARD_MEAN` and `_STD`, VideoMAE's defaults when the config has none.
const STANDARD_MEAN_STD: [f32; 3] = [0.5, 0.5, 0.5];

/// What an image processor does when its `preprocessor_config.json` leaves a key out: the class's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessorDefaults {
    /// `resample` when absent.
    pub filter: PilFilter,
    /// `image_mean` when absent.
    pub mean: [f32; 3],
    /// `image_std` when absent.
    pub std: [f32; 3],
}

/// `VideoMAEImageProcessor`'s defaults (X-CLIP): bilinear, `IMAGENET_STANDARD_MEAN` and `_STD`.
pub const VIDEOMAE_DEFAULTS: ProcessorDefaults =
    ProcessorDefaults { filter: PilFilter::Bilinear, mean: STANDARD_MEAN_STD, std: STANDARD_MEAN_STD };

impl XclipPreprocess {
    /// Parses `preprocessor_config.json` of a `VideoMAEImageProcessor`; `Err` is a one-line reason.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        Self::from_json_with(text, VIDEOMAE_DEFAULTS)
    }

    /// Parses `preprocessor_config.json` of an image processor that resizes the shortest edge, centre crops,
    /// rescales and normalises as VideoMAE's does (CLIP's `CLIPImageProcessor` does the same steps with the same
    /// arithmetic), with that class's `defaults` for the keys the file leaves out.
    pub fn from_json_with(text: &str, defaults: ProcessorDefaults) -> std::result::Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let flag = |k: &str| v.get(k).and_then(|b| b.as_bool()).unwrap_or(true);
        let int = |x: &serde_json::Value| x.as_u64().filter(|&n| (1..=8192).contains(&n)).map(|n| n as u32);
        let hw = |k: &str| -> std::result::Result<Option<(u32, u32)>, String> {
            match v.get(k) {
                None => Ok(None),
                Some(x) if x.is_number() => int(x).map(|n| Some((n, n))).ok_or_else(|| format!("bad {k}")),
                Some(x) => match (x.get("height").and_then(int), x.get("width").and_then(int)) {
                    (Some(h), Some(w)) => Ok(Some((h, w))),
                    _ => Ok(None),
                },
            }
        };
        let resize = if flag("do_resize") {
            let size = v.get("size").ok_or("no size")?;
            Some(if let Some(n) = size.get("shortest_edge").and_then(int).or_else(|| int(size)) {
                ResizeTo::ShortestEdge(n)
            } else if let Some((height, width)) = hw("size")? {
                ResizeTo::Exact { height, width }
            } else {
                return Err(format!("size {size} is neither shortest_edge nor height and width"));
            })
        } else {
            None
        };
        let crop = if flag("do_center_crop") {
            Some(hw("crop_size")?.ok_or("do_center_crop without crop_size height and width")?)
        } else {
            None
        };
        let filter = match v.get("resample").and_then(|r| r.as_u64()) {
            None => defaults.filter,
            Some(2) => PilFilter::Bilinear,
            Some(3) => PilFilter::Bicubic,
            Some(other) => {
                return Err(format!("resample {other} is not supported; lookout has bilinear (2) and bicubic (3)"));
            }
        };
        let rescale =
            flag("do_rescale").then(|| v.get("rescale_factor").and_then(|r| r.as_f64()).unwrap_or(1.0 / 255.0));
        let triple = |k: &str, default: [f32; 3]| -> std::result::Result<[f32; 3], String> {
            match v.get(k) {
                None => Ok(default),
                Some(x) => {
                    let xs: Vec<f32> = x
                        .as_array()
                        .map(|a| a.iter().filter_map(|n| n.as_f64()).map(|n| n as f32).collect())
                        .or_else(|| x.as_f64().map(|n| vec![n as f32; 3]))
                        .unwrap_or_default();
                    xs.try_into().map_err(|_| format!("{k} must be three numbers"))
                }
            }
        };
        let normalize = if flag("do_normalize") {
            Some((triple("image_mean", defaults.mean)?, triple("image_std", defaults.std)?))
        } else {
            None
        };
        Ok(XclipPreprocess { resize, crop, filter, rescale, normalize })
    }

    /// The `(height, width)` of the tensor a frame of `(width, height)` gives.
    pub fn output_hw(&self, width: u32, height: u32) -> (u32, u32) {
        match (self.crop, self.resize) {
            (Some(hw), _) => hw,
            (None, Some(r)) => resized_size(r, width, height).map_or((height, width), |(w, h)| (h, w)),
            (None, None) => (height, width),
        }
    }

    /// The float value of 8-bit level `v` in channel `c`: rescaled in f64 and stored as f32, normalised in f32.
    fn value(&self, c: usize, v: u8) -> f32 {
        let x = match self.rescale {
            Some(f) => (f64::from(v) * f) as f32,
            None => f32::from(v),
        };
        match self.normalize {
            Some((mean, std)) => (x - mean[c]) / std[c],
            None => x,
        }
    }

    /// Preprocesses one frame into `out`, `[3, height, width]` of [`XclipPreprocess::output_hw`].
    ///
    /// # Panics
    /// When `out` has another shape.
    pub fn frame_into(&self, img: &RgbImage, mut out: ArrayViewMut3<f32>) {
        let (w, h) = img.dimensions();
        let (oh, ow) = self.output_hw(w, h);
        assert_eq!(out.shape(), &[3, oh as usize, ow as usize], "the output slot must be [3, height, width]");
        let resized;
        let src = match self.resize.and_then(|r| resized_size(r, w, h)) {
            Some((rw, rh)) if (rw, rh) != (w, h) => {
                resized = resize_pil(img, rw, rh, self.filter);
                &resized
            }
            _ => img,
        };
        let (sw, sh) = (i64::from(src.width()), i64::from(src.height()));
        // centre_crop: top = (h - crop_h) // 2 (floor), and zeros (level 0) outside a smaller frame.
        let top = (sh - i64::from(oh)).div_euclid(2);
        let left = (sw - i64::from(ow)).div_euclid(2);
        let lut: [[f32; 256]; 3] = std::array::from_fn(|c| std::array::from_fn(|v| self.value(c, v as u8)));
        for y in 0..oh as usize {
            let sy = top + y as i64;
            for x in 0..ow as usize {
                let sx = left + x as i64;
                let inside = (0..sh).contains(&sy) && (0..sw).contains(&sx);
                for (c, lut) in lut.iter().enumerate() {
                    let level = if inside { src.get_pixel(sx as u32, sy as u32).0[c] } else { 0 };
                    out[[c, y, x]] = lut[level as usize];
                }
            }
        }
    }
}

/// The `(width, height)` of the resize, `None` for an empty frame (nothing to resize).
fn resized_size(r: ResizeTo, w: u32, h: u32) -> Option<(u32, u32)> {
    if w == 0 || h == 0 {
        return None;
    }
    Some(match r {
        ResizeTo::Exact { height, width } => (width, height),
        ResizeTo::ShortestEdge(s) => {
            let (short, long) = if w <= h { (w, h) } else { (h, w) };
            // Python's `int(s * long / short)`: an exact product, one correctly rounded division, truncation.
            let new_long = (f64::from(s) * f64::from(long) / f64::from(short)) as u32;
            if w <= h { (s, new_long) } else { (new_long, s) }
        }
    })
}

/// X-CLIP loaded from a model directory (`config.json` with `model_type: "xclip"`, `preprocessor_config.json`,
/// `tokenizer.json`, `onnx/text_encoder.onnx`, `onnx/video.onnx`).
pub struct XclipVerifier {
    dir: PathBuf,
    name: String,
    num_frames: usize,
    image_size: u32,
    preprocess: XclipPreprocess,
    tokenizer: QueryTokenizer,
    /// Tokens per prompt (the text model's `max_position_embeddings`) and the padding id.
    context: usize,
    pad_id: i64,
    text: ort::session::Session,
    video: ort::session::Session,
    /// The per-event graph's path (`onnx/video.onnx`, or its int8 variant).
    video_graph: PathBuf,
}

impl XclipVerifier {
    /// Loads the model in `dir` whose parsed `config.json` is `config`, with `video_graph` (relative to `dir`:
    /// `onnx/video.onnx` or its int8 variant, see [`crate::infer::verifier_event_graph`]) as the per-event graph.
    pub fn load(dir: &Path, config: &serde_json::Value, opts: &SessionOptions, video_graph: &str) -> Result<Self> {
        let vision = config.get("vision_config");
        let get = |v: Option<&serde_json::Value>, k: &str| v.and_then(|v| v.get(k)).and_then(|x| x.as_u64());
        let num_frames = get(vision, "num_frames").unwrap_or(8).clamp(1, 1024) as usize;
        let image_size = get(vision, "image_size").unwrap_or(224).clamp(1, 8192) as u32;
        // The tokenizer pads to the text model's context, as XCLIPProcessor(padding="max_length") does.
        let context = get(config.get("text_config"), "max_position_embeddings").unwrap_or(77).clamp(2, 4096) as usize;
        let file = |name: &str, hint: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(InferError::MissingFile { dir: dir.to_path_buf(), file: name.into(), hint: hint.into() })
            }
        };
        let export = "make it with models/export_verifier.py --xclip";
        let pre_path = file("preprocessor_config.json", export)?;
        let bad =
            |file: &str, message: String| InferError::BadFile { dir: dir.to_path_buf(), file: file.into(), message };
        let text = std::fs::read_to_string(&pre_path).map_err(|e| bad("preprocessor_config.json", e.to_string()))?;
        let preprocess = XclipPreprocess::from_json(&text).map_err(|m| bad("preprocessor_config.json", m))?;
        if preprocess.crop != Some((image_size, image_size)) {
            return Err(bad(
                "preprocessor_config.json",
                format!("crop_size must be {image_size}x{image_size}, the vision model's image_size"),
            ));
        }
        let tokenizer = QueryTokenizer::from_file(&file("tokenizer.json", export)?)?;
        let pad_id = pad_id(dir, &tokenizer)?;
        let text = build_session(&file("onnx/text_encoder.onnx", export)?, opts)?;
        let video_path = file(video_graph, export)?;
        let video = build_session(&video_path, opts)?;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "xclip".into());
        Ok(XclipVerifier {
            dir: dir.to_path_buf(),
            name,
            num_frames,
            image_size,
            preprocess,
            tokenizer,
            context,
            pad_id,
            text,
            video,
            video_graph: video_path,
        })
    }

    /// The `[1, N, 3, S, S]` pixel tensor of `frames`, as `XCLIPProcessor` makes it.
    pub fn pixel_values(&self, frames: &[RgbImage]) -> Array5<f32> {
        let s = self.image_size as usize;
        let mut pixels = Array5::<f32>::zeros((1, frames.len(), 3, s, s));
        for (t, frame) in frames.iter().enumerate() {
            self.preprocess.frame_into(frame, pixels.slice_mut(ndarray::s![0, t, .., .., ..]));
        }
        pixels
    }

    /// The prompts' token ids and attention mask, `[P, context]` each.
    pub fn tokens(&self, prompts: &[String]) -> Result<(Array2<i64>, Array2<i64>)> {
        self.tokenizer.encode_all_to(prompts, self.context, self.pad_id)
    }

    /// `logits_per_video` for a pixel tensor made by [`XclipVerifier::pixel_values`].
    pub fn logits_for_pixels(&mut self, pixels: &Array5<f32>, prompts: &PromptSet) -> Result<Vec<f32>> {
        let embeds = prompts.embeddings().ok_or_else(|| InferError::Model {
            dir: self.dir.clone(),
            message: "prompts were encoded for another verifier; encode them again".into(),
        })?;
        let graph = self.video_graph.display().to_string();
        let err = |e: ort::Error| InferError::Ort { graph: graph.clone(), message: e.to_string() };
        let outputs = self
            .video
            .run(ort::inputs![
                "pixel_values" => TensorRef::from_array_view(pixels).map_err(err)?,
                "text_embeds" => TensorRef::from_array_view(embeds).map_err(err)?,
            ])
            .map_err(err)?;
        let logits = extract2(&outputs, "logits_per_video", &self.video_graph)?;
        if logits.dim() != (1, prompts.texts().len()) {
            return Err(InferError::Output {
                graph,
                name: "logits_per_video".into(),
                message: format!("shape {:?}, expected [1, {}]", logits.dim(), prompts.texts().len()),
            });
        }
        Ok(logits.row(0).to_vec())
    }
}

/// The padding id: `pad_token` of `tokenizer_config.json` (a string, or an object with `content`), else
/// end-of-text, CLIPTokenizer's default.
pub(crate) fn pad_id(dir: &Path, tokenizer: &QueryTokenizer) -> Result<i64> {
    let path = dir.join("tokenizer_config.json");
    let pad = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("pad_token").cloned())
        .and_then(|p| p.as_str().or_else(|| p.get("content").and_then(|c| c.as_str())).map(str::to_string));
    match pad {
        None => Ok(i64::from(tokenizer.eos)),
        Some(token) => tokenizer.token_id(&token).map(i64::from).ok_or_else(|| InferError::BadFile {
            dir: dir.to_path_buf(),
            file: "tokenizer_config.json".into(),
            message: format!("pad_token {token:?} is not in tokenizer.json's vocabulary"),
        }),
    }
}

pub(crate) fn extract2(outputs: &ort::session::SessionOutputs, name: &str, graph: &Path) -> Result<Array2<f32>> {
    let out_err =
        |message: String| InferError::Output { graph: graph.display().to_string(), name: name.into(), message };
    let value = outputs.get(name).ok_or_else(|| out_err("missing".into()))?;
    let view = value.try_extract_array::<f32>().map_err(|e| out_err(e.to_string()))?;
    let arr = view.into_dimensionality::<Ix2>().map_err(|e| out_err(format!("unexpected shape: {e}")))?;
    Ok(arr.to_owned())
}

impl Verifier for XclipVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn num_frames(&self) -> Option<usize> {
        Some(self.num_frames)
    }

    fn encode(&mut self, prompts: &[String]) -> Result<PromptSet> {
        let (ids, mask) = self.tokens(prompts)?;
        let err = |e: ort::Error| InferError::Ort { graph: "text_encoder.onnx".into(), message: e.to_string() };
        let outputs = self
            .text
            .run(ort::inputs![
                "input_ids" => TensorRef::from_array_view(&ids).map_err(err)?,
                "attention_mask" => TensorRef::from_array_view(&mask).map_err(err)?,
            ])
            .map_err(err)?;
        let embeds = extract2(&outputs, "text_embeds", &self.dir.join("onnx/text_encoder.onnx"))?;
        Ok(PromptSet::with_embeddings(prompts.to_vec(), embeds))
    }

    fn logits(&mut self, frames: &[RgbImage], prompts: &PromptSet) -> Result<Vec<f32>> {
        if frames.len() != self.num_frames {
            return Err(InferError::Model {
                dir: self.dir.clone(),
                message: format!("takes {} frames, got {}; set [verify] frames = {0}", self.num_frames, frames.len()),
            });
        }
        let pixels = self.pixel_values(frames);
        self.logits_for_pixels(&pixels, prompts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> XclipPreprocess {
        XclipPreprocess::from_json(
            r#"{"size": {"shortest_edge": 4}, "crop_size": {"height": 4, "width": 4}, "resample": 3,
                "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}"#,
        )
        .unwrap()
    }

    #[test]
    fn config_defaults_follow_videomae() {
        let p = XclipPreprocess::from_json(r#"{"size": 224, "crop_size": 224}"#).unwrap();
        assert_eq!(p.resize, Some(ResizeTo::ShortestEdge(224)));
        assert_eq!(p.crop, Some((224, 224)));
        assert_eq!(p.filter, PilFilter::Bilinear, "VideoMAE's default resample");
        assert_eq!(p.normalize, Some(([0.5; 3], [0.5; 3])), "IMAGENET_STANDARD when absent");
        assert!(XclipPreprocess::from_json(r#"{"size": 8, "crop_size": 8, "resample": 1}"#).is_err());
        assert!(XclipPreprocess::from_json(r#"{"crop_size": 8}"#).is_err(), "do_resize without size");
    }

    #[test]
    fn shortest_edge_keeps_the_aspect_ratio_and_truncates() {
        assert_eq!(resized_size(ResizeTo::ShortestEdge(32), 640, 272), Some((75, 32)));
        assert_eq!(resized_size(ResizeTo::ShortestEdge(32), 272, 640), Some((32, 75)));
        assert_eq!(resized_size(ResizeTo::ShortestEdge(4), 5, 5), Some((4, 4)));
        assert_eq!(resized_size(ResizeTo::ShortestEdge(4), 0, 5), None);
    }

    #[test]
    fn the_centre_crop_takes_the_middle_and_pads_a_small_frame_with_zeros() {
        let mut p = tiny();
        p.resize = None;
        // A 6x4 frame whose columns are their index: the crop keeps columns 1..5.
        let img = RgbImage::from_fn(6, 4, |x, _| image::Rgb([x as u8; 3]));
        let mut out = ndarray::Array3::zeros((3, 4, 4));
        p.frame_into(&img, out.view_mut());
        assert_eq!(out[[0, 0, 0]], p.value(0, 1));
        assert_eq!(out[[0, 3, 3]], p.value(0, 4));
        // A 2x2 frame in a 4x4 crop: top = (2 - 4) // 2 = -1, so the frame sits at rows and columns 1..3.
        let img = RgbImage::from_pixel(2, 2, image::Rgb([255; 3]));
        p.frame_into(&img, out.view_mut());
        assert_eq!(out[[1, 0, 0]], p.value(1, 0));
        assert_eq!(out[[1, 1, 1]], p.value(1, 255));
        assert_eq!(out[[1, 2, 2]], p.value(1, 255));
        assert_eq!(out[[1, 3, 3]], p.value(1, 0));
    }
}
