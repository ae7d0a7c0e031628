//! The Grounding DINO family (Grounding DINO, MM-Grounding-DINO, and LLMDet through the MM class): its sessions,
//! its queries and its [`Detector`].
//!
//! ```text
//! queries ─► text::BertTokenizer::passes ─► TextPass per ≤256 tokens ─┬─ hf:    ids go with every image
//!                                                                     └─ split: text_encoder.onnx once ─► text_features
//! pictures ─► preprocess::gdino (resize, normalise, pad, pixel_mask) ─► model.onnx | detector.onnx, once per pass
//!          ─► post::select per pass (the query whose tokens score highest labels each box) ─► detections in pixels
//! ```
//!
//! The graphs lookout exports take one pixel size only (`export_info.json` `graph_input_size`, and the graph's own
//! static input shape): every picture of a batch is letterboxed into it. A graph with dynamic height and width
//! (a Hub export) gets the batch padded to its largest picture, as transformers pads it.

pub mod post;
pub mod text;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ndarray::{Array2, Array3, Array4, Axis, Ix3};
use ort::session::Session;
use ort::value::TensorRef;

use self::text::{BertTokenizer, TextPass};
use super::detector::{DetectTimings, Detector, FrameScale, Image, ModelThresholds, QuerySet, TextEncoder};
use super::model::{Layout, ModelDir};
use super::postprocess::Selection;
use super::preprocess::{PreprocessorConfig, ResizeRule, gdino as prep};
use super::runtime::{SessionOptions, build_session};
use super::{InferError, Result};
use crate::geom::{Detection, Transform};

/// Default box threshold: the model cards' (`IDEA-Research/grounding-dino-tiny`, and transformers' documented
/// example for both `GroundingDinoForObjectDetection` and `MMGroundingDinoForObjectDetection`:
/// `post_process_grounded_object_detection(outputs, threshold=0.4, text_threshold=0.3, ...)`).
pub const DEFAULT_BOX_THRESHOLD: f32 = 0.4;
/// Default text threshold, from the same cards (0.3).
pub const DEFAULT_TEXT_THRESHOLD: f32 = 0.3;

/// One text pass, encoded for the graphs.
#[derive(Debug, Clone)]
pub struct EncodedPass {
    pub pass: TextPass,
    /// `[1, T, D]`: the split layout's text encoder output; `None` in the hf layout.
    pub text_features: Option<Array3<f32>>,
}

/// Queries encoded for Grounding DINO: one or more passes, in query order.
#[derive(Debug, Clone)]
pub struct GdinoQueries {
    pub texts: Vec<String>,
    pub passes: Vec<EncodedPass>,
}

/// What the model says about one picture and one pass, before any thresholding.
#[derive(Debug, Clone)]
pub struct RawGdino {
    /// `[Q, 256]`: one logit per object query and token position (`-inf` past the text).
    pub logits: Array2<f32>,
    /// `[Q, 4]`: `(cx, cy, w, h)` relative to the picture inside the padding.
    pub boxes: Array2<f32>,
}

enum Backend {
    Hf {
        session: Session,
    },
    /// The image side; the text encoder is in [`GdinoText`].
    Split {
        detector: Session,
    },
}

/// A loaded Grounding DINO model, ready to run.
pub struct GdinoDetector {
    pub model: ModelDir,
    text: GdinoText,
    backend: Backend,
    /// `(height, width)` every batch must have, when the graph takes one size only.
    fixed_hw: Option<(u32, u32)>,
    /// The input batch and pixel mask of [`Detector::detect`], kept between calls.
    batch: Array4<f32>,
    mask: Array3<i64>,
    timings: DetectTimings,
}

impl std::fmt::Debug for GdinoDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GdinoDetector").field("model", &self.model.dir).field("layout", &self.model.layout).finish()
    }
}

fn ort_err(graph: &Path) -> impl Fn(ort::Error) -> InferError + '_ {
    move |e| InferError::Ort { graph: graph.display().to_string(), message: e.to_string() }
}

fn check_io(session: &Session, path: &Path, inputs: &[&str], outputs: &[&str]) -> Result<()> {
    let missing_in = inputs.iter().find(|n| !session.inputs().iter().any(|o| o.name() == **n));
    let missing_out = outputs.iter().find(|n| !session.outputs().iter().any(|o| o.name() == **n));
    if let Some((what, name)) = missing_in.map(|n| ("input", n)).or(missing_out.map(|n| ("output", n))) {
        return Err(InferError::Model {
            dir: path.to_path_buf(),
            message: format!(
                "graph has no {what} {name:?}; is this a Grounding DINO export in the expected layout (see \
                 models/GROUNDING_DINO.md)?"
            ),
        });
    }
    Ok(())
}

/// The static `(height, width)` of a graph's `pixel_values` input, if both are fixed.
fn static_hw(session: &Session) -> Option<(u32, u32)> {
    let input = session.inputs().iter().find(|i| i.name() == "pixel_values")?;
    let shape = input.dtype().tensor_shape()?;
    match shape.len() {
        4 if shape[2] > 0 && shape[3] > 0 => Some((shape[2] as u32, shape[3] as u32)),
        _ => None,
    }
}

fn extract3(outputs: &ort::session::SessionOutputs, graph: &Path, name: &str) -> Result<Array3<f32>> {
    let out_err =
        |message: String| InferError::Output { graph: graph.display().to_string(), name: name.into(), message };
    let value = outputs.get(name).ok_or_else(|| out_err("missing".into()))?;
    let view = value.try_extract_array::<f32>().map_err(|e| out_err(e.to_string()))?;
    view.to_owned().into_dimensionality::<Ix3>().map_err(|e| out_err(format!("unexpected shape: {e}")))
}

/// `[B, ...]` copies of one row, for inputs that are the same for every picture of a batch.
fn tile<T: Clone, D: ndarray::Dimension>(one: &ndarray::Array<T, D>, batch: usize) -> ndarray::ArrayD<T> {
    let mut shape = vec![batch];
    shape.extend_from_slice(one.shape());
    let view = one.view().into_dyn().insert_axis(Axis(0));
    view.broadcast(shape).expect("broadcast along a new axis").to_owned()
}

/// The text side of a loaded model: the tokenizer, how queries go into passes, and in the split layout the text
/// encoder's session. The detector and every [`TextEncoder`] it gives share it: a query change encoded on another
/// thread loads nothing more.
#[derive(Clone)]
struct GdinoText {
    text_graph: std::path::PathBuf,
    tokenizer: Arc<BertTokenizer>,
    max_text_len: usize,
    /// At most this many queries per text pass: 1 for an hf graph lookout did not export (see
    /// [`GdinoDetector::load`]).
    queries_per_pass: Option<usize>,
    /// `None` in the hf layout, whose one graph takes the token ids with every image.
    session: Option<Arc<Mutex<Session>>>,
}

impl GdinoText {
    /// Tokenizes the queries into passes and, in the split layout, runs the text encoder once per pass.
    fn encode_queries(&self, texts: &[String]) -> Result<GdinoQueries> {
        let passes = self.tokenizer.passes(texts, self.max_text_len, self.queries_per_pass)?;
        let mut encoded = Vec::with_capacity(passes.len());
        for pass in passes {
            let text_features = match &self.session {
                None => None,
                Some(session) => {
                    let path = &self.text_graph;
                    let ids = pass.input_ids.view().insert_axis(Axis(0));
                    let types = pass.token_type_ids().insert_axis(Axis(0));
                    let mask = pass.attention_mask().insert_axis(Axis(0));
                    // Held by one encoding at a time (the infer thread's at the start, or the query encoder's),
                    // never for a frame.
                    let mut text = session.lock().unwrap_or_else(|e| e.into_inner());
                    let mut inputs = ort::inputs![
                        "input_ids" => TensorRef::from_array_view(ids).map_err(ort_err(path))?,
                        "token_type_ids" => TensorRef::from_array_view(&types).map_err(ort_err(path))?,
                    ];
                    if text.inputs().iter().any(|i| i.name() == "attention_mask") {
                        inputs.push((
                            "attention_mask".into(),
                            TensorRef::from_array_view(&mask).map_err(ort_err(path))?.into(),
                        ));
                    }
                    let outputs = text.run(inputs).map_err(ort_err(path))?;
                    Some(extract3(&outputs, path, "text_features")?)
                }
            };
            encoded.push(EncodedPass { pass, text_features });
        }
        Ok(GdinoQueries { texts: texts.to_vec(), passes: encoded })
    }
}

impl TextEncoder for GdinoText {
    fn encode(&mut self, texts: &[String]) -> Result<QuerySet> {
        Ok(QuerySet::new(texts.to_vec(), self.encode_queries(texts)?))
    }
}

impl GdinoDetector {
    /// Loads the tokenizer and builds the sessions for the model's layout.
    pub fn load(model: ModelDir, opts: &SessionOptions) -> Result<Self> {
        let tokenizer = Arc::new(BertTokenizer::from_file(&model.path("tokenizer.json"))?);
        let text_graph = model.path("onnx/text_encoder.onnx");
        let (backend, graph_hw, text_session) = match model.layout {
            Layout::Hf => {
                let path = model.hf_graph_path();
                let session = build_session(&path, opts)?;
                check_io(&session, &path, &["pixel_values", "input_ids", "attention_mask"], &["logits", "pred_boxes"])?;
                let hw = static_hw(&session);
                (Backend::Hf { session }, hw, None)
            }
            Layout::Split => {
                let tpath = model.path("onnx/text_encoder.onnx");
                let dpath = model.split_image_graph_path();
                let text = build_session(&tpath, opts)?;
                // No `attention_mask`: the text encoder attends by the phrase masks it computes from the ids.
                check_io(&text, &tpath, &["input_ids", "token_type_ids"], &["text_features"])?;
                let detector = build_session(&dpath, opts)?;
                check_io(
                    &detector,
                    &dpath,
                    &[
                        "pixel_values",
                        "pixel_mask",
                        "text_features",
                        "attention_mask",
                        "text_self_attention_masks",
                        "position_ids",
                    ],
                    &["logits", "pred_boxes"],
                )?;
                let hw = static_hw(&detector);
                (Backend::Split { detector }, hw, Some(Arc::new(Mutex::new(text))))
            }
        };
        // The graph's own shape wins; export_info.json and pad_size say the same for lookout's exports.
        let fixed_hw = graph_hw.or(model.graph_input_size);
        if let (Some(hw), Some(pad)) = (fixed_hw, model.preprocessor.pad_size)
            && hw != pad
        {
            return Err(InferError::Model {
                dir: model.dir.clone(),
                message: format!(
                    "the graph takes {}x{} pixels but preprocessor_config.json pads to {}x{}; use the \
                     preprocessor_config.json that came with the graph",
                    hw.1, hw.0, pad.1, pad.0
                ),
            });
        }
        // Trap 1: tracing `generate_masks_with_special_tokens_and_transfer_map` freezes its loop over the phrase
        // boundaries. The Hub's export (onnx-community/grounding-dino-tiny-ONNX) was traced with one query, three
        // boundaries ([CLS], ".", [SEP]); a prompt with more queries gets wrong logits with no error. lookout's
        // export computes the masks loop-free (export_info.json says it made the graph); any other single graph
        // gets one query per pass, which is right for such a trace.
        let queries_per_pass = (model.layout == Layout::Hf && !model.exported_by_lookout).then_some(1);
        if queries_per_pass.is_some() {
            tracing::info!(
                graph = %model.hf_graph_path().display(),
                "not exported by lookout (no export_info.json): its phrase masks may be frozen to the one-query \
                 prompt it was traced with, so each query runs in a pass of its own"
            );
        }
        let text = GdinoText {
            text_graph,
            tokenizer,
            max_text_len: model.max_text_len,
            queries_per_pass,
            session: text_session,
        };
        Ok(GdinoDetector {
            model,
            text,
            backend,
            fixed_hw,
            batch: Array4::zeros((0, 3, 0, 0)),
            mask: Array3::zeros((0, 0, 0)),
            timings: DetectTimings::default(),
        })
    }

    pub fn tokenizer(&self) -> &BertTokenizer {
        &self.text.tokenizer
    }

    /// `(height, width)` every batch is padded to when the graph takes one size only.
    pub fn fixed_input_hw(&self) -> Option<(u32, u32)> {
        self.fixed_hw
    }

    /// Tokenizes the queries into passes and, in the split layout, runs the text encoder once per pass.
    pub fn encode_queries(&mut self, texts: &[String]) -> Result<GdinoQueries> {
        self.text.encode_queries(texts)
    }

    /// Runs a batch of preprocessed pictures (`pixels` `[B, 3, H, W]`, `mask` `[B, H, W]`) with one text pass.
    pub fn run_pass(
        &mut self,
        pixels: ndarray::ArrayView4<f32>,
        mask: ndarray::ArrayView3<i64>,
        pass: &EncodedPass,
    ) -> Result<Vec<RawGdino>> {
        let b = pixels.len_of(Axis(0));
        let ids = tile(&pass.pass.input_ids, b);
        let attention = tile(&pass.pass.attention_mask(), b);
        let (path, outputs) = match &mut self.backend {
            Backend::Hf { session } => {
                let path = self.model.hf_graph_path();
                let types = tile(&pass.pass.token_type_ids(), b);
                let mut inputs = ort::inputs![
                    "pixel_values" => TensorRef::from_array_view(pixels).map_err(ort_err(&path))?,
                    "input_ids" => TensorRef::from_array_view(&ids).map_err(ort_err(&path))?,
                    "attention_mask" => TensorRef::from_array_view(&attention).map_err(ort_err(&path))?,
                ];
                // The Hub's graphs may leave these out; lookout's export has both.
                if session.inputs().iter().any(|i| i.name() == "token_type_ids") {
                    inputs.push((
                        "token_type_ids".into(),
                        TensorRef::from_array_view(&types).map_err(ort_err(&path))?.into(),
                    ));
                }
                if session.inputs().iter().any(|i| i.name() == "pixel_mask") {
                    inputs
                        .push(("pixel_mask".into(), TensorRef::from_array_view(mask).map_err(ort_err(&path))?.into()));
                }
                let outputs = session.run(inputs).map_err(ort_err(&path))?;
                (path, outputs)
            }
            Backend::Split { detector, .. } => {
                let path = self.model.split_image_graph_path();
                let features = pass.text_features.as_ref().ok_or_else(|| InferError::Model {
                    dir: self.model.dir.clone(),
                    message: "queries were encoded for another layout; encode them again".into(),
                })?;
                let features = features.index_axis(Axis(0), 0).to_owned();
                let features = tile(&features, b);
                let masks = tile(&pass.pass.text_self_attention_masks, b);
                let positions = tile(&pass.pass.position_ids, b);
                let outputs = detector
                    .run(ort::inputs![
                        "pixel_values" => TensorRef::from_array_view(pixels).map_err(ort_err(&path))?,
                        "pixel_mask" => TensorRef::from_array_view(mask).map_err(ort_err(&path))?,
                        "text_features" => TensorRef::from_array_view(&features).map_err(ort_err(&path))?,
                        "attention_mask" => TensorRef::from_array_view(&attention).map_err(ort_err(&path))?,
                        "text_self_attention_masks" => TensorRef::from_array_view(&masks).map_err(ort_err(&path))?,
                        "position_ids" => TensorRef::from_array_view(&positions).map_err(ort_err(&path))?,
                    ])
                    .map_err(ort_err(&path))?;
                (path, outputs)
            }
        };
        let logits = extract3(&outputs, &path, "logits")?;
        let boxes = extract3(&outputs, &path, "pred_boxes")?;
        if logits.len_of(Axis(0)) != b || boxes.len_of(Axis(0)) != b || boxes.len_of(Axis(2)) != 4 {
            return Err(InferError::Output {
                graph: path.display().to_string(),
                name: "logits/pred_boxes".into(),
                message: format!("shapes {:?} and {:?} for a batch of {b}", logits.shape(), boxes.shape()),
            });
        }
        Ok((0..b)
            .map(|i| RawGdino {
                logits: logits.index_axis(Axis(0), i).to_owned(),
                boxes: boxes.index_axis(Axis(0), i).to_owned(),
            })
            .collect())
    }

    /// `(height, width)` of the batch for pictures of the given `(width, height)` after resizing.
    fn batch_hw(&self, resized: &[(u32, u32)]) -> (u32, u32) {
        self.fixed_hw
            .or(self.model.preprocessor.pad_size)
            .unwrap_or_else(|| resized.iter().fold((1, 1), |(mh, mw), &(w, h)| (mh.max(h), mw.max(w))))
    }

    /// Preprocesses the pictures into a batch: pixels, pixel mask, and per picture its transform back to its
    /// own pixels, or why it could not be preprocessed.
    pub fn preprocess(&self, images: &[Image<'_>]) -> (Array4<f32>, Array3<i64>, Vec<Result<Transform>>) {
        let mut pixels = Array4::zeros((0, 3, 0, 0));
        let mut mask = Array3::zeros((0, 0, 0));
        let prepared = self.preprocess_into(images, &mut pixels, &mut mask);
        (pixels, mask, prepared)
    }

    /// [`Self::preprocess`] into buffers kept from an earlier batch when they have the right shape (a video
    /// does not allocate per frame; every element is written either way).
    fn preprocess_into(
        &self,
        images: &[Image<'_>],
        pixels: &mut Array4<f32>,
        mask: &mut Array3<i64>,
    ) -> Vec<Result<Transform>> {
        let cfg = &self.model.preprocessor;
        let resized: Vec<(u32, u32)> = images
            .iter()
            .map(|image| match image {
                Image::Rgb(img) => {
                    let (h, w) = prep::resized_hw(cfg, img.width(), img.height());
                    (w, h)
                }
                Image::Scaled(f) => (f.width, f.height),
            })
            .collect();
        let (bh, bw) = self.batch_hw(&resized);
        let (bh, bw) = (bh as usize, bw as usize);
        if pixels.shape() != [images.len(), 3, bh, bw] {
            *pixels = Array4::zeros((images.len(), 3, bh, bw));
            *mask = Array3::zeros((images.len(), bh, bw));
        }
        let mut prepared = Vec::with_capacity(images.len());
        for (b, image) in images.iter().enumerate() {
            let slot = pixels.index_axis_mut(Axis(0), b);
            prepared.push(match image {
                Image::Rgb(img) => {
                    let (vw, vh) = prep::letterbox_into(cfg, img, slot);
                    prep::pixel_mask_into(vw, vh, mask.index_axis_mut(Axis(0), b));
                    Ok(Transform::stretch(img.width(), img.height()))
                }
                Image::Scaled(f) => match prep::letterbox_scaled_into(cfg, f.rgb, f.width, f.height, f.stride, slot) {
                    Ok(()) => {
                        prep::pixel_mask_into(f.width, f.height, mask.index_axis_mut(Axis(0), b));
                        Ok(Transform::stretch(f.orig_width, f.orig_height))
                    }
                    Err(e) => {
                        mask.index_axis_mut(Axis(0), b).fill(0);
                        Err(InferError::Model { dir: self.model.dir.clone(), message: e.to_string() })
                    }
                },
            });
        }
        prepared
    }
}

/// How video frames are scaled for a Grounding DINO model whose graph takes `fixed_hw` only (when known): by the
/// preprocessor's size rule, into the graph's size when the rule alone would not fit it.
pub fn frame_scale_for(cfg: &PreprocessorConfig, fixed_hw: Option<(u32, u32)>) -> FrameScale {
    match (cfg.resize, fixed_hw) {
        (ResizeRule::Exact, _) => FrameScale::Stretch { width: cfg.size.1, height: cfg.size.0 },
        (ResizeRule::MaxHeightWidth { max_height, max_width }, _) => FrameScale::FitWithin { max_width, max_height },
        // A Hub-style rule into a fixed graph: fit the frame into the graph's size.
        (ResizeRule::ShortestEdge { .. }, Some((h, w))) => FrameScale::FitWithin { max_width: w, max_height: h },
        (ResizeRule::ShortestEdge { shortest_edge, longest_edge }, None) => {
            FrameScale::ShortestEdge { shortest_edge, longest_edge }
        }
    }
}

impl Detector for GdinoDetector {
    fn model(&self) -> &ModelDir {
        &self.model
    }

    fn frame_scale(&self) -> FrameScale {
        frame_scale_for(&self.model.preprocessor, self.fixed_hw)
    }

    fn encode(&mut self, texts: &[String]) -> Result<QuerySet> {
        let q = self.encode_queries(texts)?;
        Ok(QuerySet::new(texts.to_vec(), q))
    }

    fn text_encoder(&self) -> Box<dyn TextEncoder> {
        Box::new(self.text.clone())
    }

    fn detect(
        &mut self,
        images: &[Image<'_>],
        queries: &QuerySet,
        selection: &Selection,
    ) -> Result<Vec<Result<Vec<Detection>>>> {
        let t0 = Instant::now();
        let q = queries.encoded_for::<GdinoQueries>(&self.model.dir)?;
        let mut pixels = std::mem::replace(&mut self.batch, Array4::zeros((0, 3, 0, 0)));
        let mut mask = std::mem::replace(&mut self.mask, Array3::zeros((0, 0, 0)));
        let prepared = self.preprocess_into(images, &mut pixels, &mut mask);
        let t1 = Instant::now();
        let mut raws: Vec<Vec<RawGdino>> = Vec::with_capacity(q.passes.len());
        let mut failed = None;
        for pass in &q.passes {
            match self.run_pass(pixels.view(), mask.view(), pass) {
                Ok(r) => raws.push(r),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        (self.batch, self.mask) = (pixels, mask);
        if let Some(e) = failed {
            return Err(e);
        }
        let t2 = Instant::now();
        let out = prepared
            .into_iter()
            .enumerate()
            .map(|(b, transform)| {
                transform.map(|t| {
                    // Passes hold queries in order, and each pass's detections are in query order.
                    q.passes
                        .iter()
                        .zip(&raws)
                        .flat_map(|(pass, raw)| {
                            post::select(raw[b].logits.view(), raw[b].boxes.view(), &pass.pass.spans, &t, selection)
                        })
                        .collect()
                })
            })
            .collect();
        self.timings = DetectTimings { preprocess: t1 - t0, run: t2 - t1, select: t2.elapsed() };
        Ok(out)
    }

    fn warm_up(&mut self, queries: &QuerySet) -> Result<()> {
        let q = queries.encoded_for::<GdinoQueries>(&self.model.dir)?;
        let (h, w) = self.fixed_hw.unwrap_or(self.model.preprocessor.size);
        let pixels = Array4::<f32>::zeros((1, 3, h as usize, w as usize));
        let mask = Array3::<i64>::ones((1, h as usize, w as usize));
        for pass in &q.passes {
            self.run_pass(pixels.view(), mask.view(), pass)?;
        }
        Ok(())
    }

    fn last_timings(&self) -> DetectTimings {
        self.timings
    }

    fn default_thresholds(&self) -> Option<ModelThresholds> {
        Some(ModelThresholds { box_threshold: DEFAULT_BOX_THRESHOLD, text_threshold: Some(DEFAULT_TEXT_THRESHOLD) })
    }
}
