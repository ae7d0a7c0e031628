//! The OWL-ViT and OWLv2 family: ONNX Runtime sessions for one model, its queries, and its [`Detector`].
//!
//! The model (its directory, family, preprocessing) is kept apart from the sessions it runs on.
//! Queries are encoded once into [`OwlQueries`] and reused for every image until they change.
//!
//! As a [`Detector`], the family owns the whole path from a decoded image to boxes in pixels:
//! preprocessing ([`super::preprocess`]), the transform back to pixels ([`Transform::stretch`] for OWL-ViT,
//! [`Transform::pad_square`] for OWLv2), the graphs, the class head and the selection ([`select`]).
//! The raw steps stay public ([`OwlDetector::run`], [`RawOutput`]) for the parity tests.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ndarray::{Array2, Array4, ArrayView4, Axis, Ix2, Ix3};
use ort::session::Session;
use ort::value::TensorRef;

use super::detector::{DetectTimings, Detector, FrameScale, Image, QuerySet, TextEncoder};
use super::head::{class_logits, normalize_queries};
use super::model::{Layout, ModelDir};
use super::postprocess::{Selection, select};
use super::preprocess::{self, Family};
use super::runtime::{SessionOptions, build_session};
use super::text::QueryTokenizer;
use super::{InferError, Result};
use crate::geom::{Detection, Transform};

/// Queries, tokenized and (in the split layout) embedded.
#[derive(Debug, Clone)]
pub struct OwlQueries {
    pub texts: Vec<String>,
    pub ids: Array2<i64>,
    pub mask: Array2<i64>,
    /// `[Q, D]` normalised query embeddings; present in the split layout.
    pub embeds: Option<Array2<f32>>,
}

impl OwlQueries {
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

pub use super::postprocess::RawOutput;

enum Backend {
    Hf {
        session: Session,
    },
    /// The image side; the text encoder is in [`OwlText`].
    Split {
        image: Session,
    },
}

/// The text side of a loaded model: the tokenizer and, in the split layout, the text encoder's session. The
/// detector and every [`TextEncoder`] it gives share it: a query change encoded on another thread loads nothing
/// more.
#[derive(Clone)]
struct OwlText {
    text_graph: std::path::PathBuf,
    tokenizer: Arc<QueryTokenizer>,
    /// `None` in the hf layout, whose one graph takes the token ids with every image.
    session: Option<Arc<Mutex<Session>>>,
}

impl OwlText {
    fn encode_queries(&self, texts: &[String]) -> Result<OwlQueries> {
        let (ids, mask) = self.tokenizer.encode_all(texts)?;
        let embeds = match &self.session {
            None => None,
            Some(session) => {
                let path = &self.text_graph;
                // The lock is held by one encoding at a time: the infer thread's (at the start) or the query
                // encoder's, never for a frame.
                let mut text = session.lock().unwrap_or_else(|e| e.into_inner());
                let outputs = text
                    .run(ort::inputs![
                        "input_ids" => TensorRef::from_array_view(&ids).map_err(ort_err(path))?,
                        "attention_mask" => TensorRef::from_array_view(&mask).map_err(ort_err(path))?,
                    ])
                    .map_err(ort_err(path))?;
                let embeds: Array2<f32> = extract::<Ix2>(&outputs, path, "text_embeds")?;
                Some(normalize_queries(embeds.view()))
            }
        };
        Ok(OwlQueries { texts: texts.to_vec(), ids, mask, embeds })
    }
}

impl TextEncoder for OwlText {
    fn encode(&mut self, texts: &[String]) -> Result<QuerySet> {
        Ok(QuerySet::new(texts.to_vec(), self.encode_queries(texts)?))
    }
}

/// A loaded OWL-ViT or OWLv2 model, ready to run.
pub struct OwlDetector {
    pub model: ModelDir,
    text: OwlText,
    backend: Backend,
    /// The input batch of [`Detector::detect`], kept between calls so that a video does not allocate per frame.
    batch: Array4<f32>,
    timings: DetectTimings,
}

impl std::fmt::Debug for OwlDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwlDetector").field("model", &self.model.dir).field("layout", &self.model.layout).finish()
    }
}

fn graph_name(path: &Path) -> String {
    path.display().to_string()
}

fn check_io(session: &Session, path: &Path, inputs: &[&str], outputs: &[&str]) -> Result<()> {
    for name in inputs {
        if !session.inputs().iter().any(|o| o.name() == *name) {
            return Err(InferError::Model {
                dir: path.to_path_buf(),
                message: format!(
                    "graph has no input {name:?}; is this an OWL-ViT/OWLv2 export in the expected layout?"
                ),
            });
        }
    }
    for name in outputs {
        if !session.outputs().iter().any(|o| o.name() == *name) {
            return Err(InferError::Model {
                dir: path.to_path_buf(),
                message: format!(
                    "graph has no output {name:?}; is this an OWL-ViT/OWLv2 export in the expected layout?"
                ),
            });
        }
    }
    Ok(())
}

fn ort_err(graph: &Path) -> impl Fn(ort::Error) -> InferError + '_ {
    move |e| InferError::Ort { graph: graph_name(graph), message: e.to_string() }
}

fn extract<D: ndarray::Dimension>(
    outputs: &ort::session::SessionOutputs,
    graph: &Path,
    name: &str,
) -> Result<ndarray::Array<f32, D>> {
    let value = outputs.get(name).ok_or_else(|| InferError::Output {
        graph: graph_name(graph),
        name: name.into(),
        message: "missing".into(),
    })?;
    let view = value.try_extract_array::<f32>().map_err(|e| InferError::Output {
        graph: graph_name(graph),
        name: name.into(),
        message: e.to_string(),
    })?;
    view.to_owned().into_dimensionality::<D>().map_err(|e| InferError::Output {
        graph: graph_name(graph),
        name: name.into(),
        message: format!("unexpected shape: {e}"),
    })
}

impl OwlDetector {
    /// Loads the tokenizer and builds the sessions for the model's layout.
    pub fn load(model: ModelDir, opts: &SessionOptions) -> Result<Self> {
        let tokenizer = Arc::new(QueryTokenizer::from_file(&model.path("tokenizer.json"))?);
        let text_graph = model.path("onnx/text_encoder.onnx");
        let (backend, text_session) = match model.layout {
            Layout::Hf => {
                let path = model.hf_graph_path();
                let session = build_session(&path, opts)?;
                check_io(&session, &path, &["input_ids", "attention_mask", "pixel_values"], &["logits", "pred_boxes"])?;
                (Backend::Hf { session }, None)
            }
            Layout::Split => {
                let tpath = model.path("onnx/text_encoder.onnx");
                let ipath = model.split_image_graph_path();
                let text = build_session(&tpath, opts)?;
                check_io(&text, &tpath, &["input_ids", "attention_mask"], &["text_embeds"])?;
                let image = build_session(&ipath, opts)?;
                check_io(
                    &image,
                    &ipath,
                    &["pixel_values"],
                    &["class_embeds", "logit_shift", "logit_scale", "pred_boxes"],
                )?;
                (Backend::Split { image }, Some(Arc::new(Mutex::new(text))))
            }
        };
        Ok(OwlDetector {
            model,
            text: OwlText { text_graph, tokenizer, session: text_session },
            backend,
            batch: Array4::zeros((0, 3, 0, 0)),
            timings: DetectTimings::default(),
        })
    }

    pub fn tokenizer(&self) -> &QueryTokenizer {
        &self.text.tokenizer
    }

    /// Side of the square input tensor.
    pub fn input_size(&self) -> u32 {
        self.model.image_size
    }

    /// Tokenizes the queries and, in the split layout, runs the text encoder once for all of them.
    pub fn encode_queries(&mut self, texts: &[String]) -> Result<OwlQueries> {
        self.text.encode_queries(texts)
    }

    /// Runs a batch of preprocessed images `[B, 3, S, S]` against the queries.
    pub fn run(&mut self, pixels: ArrayView4<f32>, queries: &OwlQueries) -> Result<Vec<RawOutput>> {
        match &mut self.backend {
            Backend::Hf { session } => {
                let path = self.model.hf_graph_path();
                let mut out = Vec::with_capacity(pixels.len_of(Axis(0)));
                // The hf graph pairs each image with its own queries: run images one at a time.
                for b in 0..pixels.len_of(Axis(0)) {
                    let one = pixels.slice(ndarray::s![b..b + 1, .., .., ..]);
                    let outputs = session
                        .run(ort::inputs![
                            "input_ids" => TensorRef::from_array_view(&queries.ids).map_err(ort_err(&path))?,
                            "attention_mask" => TensorRef::from_array_view(&queries.mask).map_err(ort_err(&path))?,
                            "pixel_values" => TensorRef::from_array_view(one).map_err(ort_err(&path))?,
                        ])
                        .map_err(ort_err(&path))?;
                    let logits = extract::<Ix3>(&outputs, &path, "logits")?.index_axis_move(Axis(0), 0);
                    let boxes = extract::<Ix3>(&outputs, &path, "pred_boxes")?.index_axis_move(Axis(0), 0);
                    let objectness = match outputs.get("objectness_logits") {
                        Some(_) => {
                            Some(extract::<Ix2>(&outputs, &path, "objectness_logits")?.index_axis_move(Axis(0), 0))
                        }
                        None => None,
                    };
                    out.push(RawOutput { logits, boxes, objectness });
                }
                Ok(out)
            }
            Backend::Split { image, .. } => {
                let path = self.model.split_image_graph_path();
                let q = queries.embeds.as_ref().ok_or_else(|| InferError::Model {
                    dir: self.model.dir.clone(),
                    message: "queries were encoded for another model; encode them again".into(),
                })?;
                let outputs = image
                    .run(ort::inputs!["pixel_values" => TensorRef::from_array_view(pixels).map_err(ort_err(&path))?])
                    .map_err(ort_err(&path))?;
                let class_embeds = extract::<Ix3>(&outputs, &path, "class_embeds")?;
                let shift = extract::<Ix3>(&outputs, &path, "logit_shift")?;
                let scale = extract::<Ix3>(&outputs, &path, "logit_scale")?;
                let boxes = extract::<Ix3>(&outputs, &path, "pred_boxes")?;
                let objectness = match outputs.get("objectness_logits") {
                    Some(_) => Some(extract::<Ix2>(&outputs, &path, "objectness_logits")?),
                    None => None,
                };
                let batch = class_embeds.len_of(Axis(0));
                let mut out = Vec::with_capacity(batch);
                for b in 0..batch {
                    let logits = class_logits(
                        class_embeds.index_axis(Axis(0), b),
                        q.view(),
                        shift.index_axis(Axis(0), b).index_axis(Axis(1), 0),
                        scale.index_axis(Axis(0), b).index_axis(Axis(1), 0),
                    );
                    out.push(RawOutput {
                        logits,
                        boxes: boxes.index_axis(Axis(0), b).to_owned(),
                        objectness: objectness.as_ref().map(|o| o.index_axis(Axis(0), b).to_owned()),
                    });
                }
                Ok(out)
            }
        }
    }

    /// Runs once on a blank image so that the first real image does not pay for ONNX Runtime's lazy setup.
    pub fn warm_up(&mut self, queries: &OwlQueries) -> Result<()> {
        let s = self.input_size() as usize;
        let blank = ndarray::Array4::<f32>::zeros((1, 3, s, s));
        self.run(blank.view(), queries).map(|_| ())
    }
}

impl OwlDetector {
    /// How boxes of a picture of `width` x `height` map back to it: OWL-ViT stretches the picture to the input,
    /// OWLv2 pads it at the bottom and right to a square first (unless its config turns padding off).
    fn transform(&self, width: u32, height: u32) -> Transform {
        match self.model.family {
            Family::Owlv2 if self.model.preprocessor.do_pad => Transform::pad_square(width, height),
            _ => Transform::stretch(width, height),
        }
    }
}

impl Detector for OwlDetector {
    fn model(&self) -> &ModelDir {
        &self.model
    }

    fn frame_scale(&self) -> FrameScale {
        super::frame_scale_of(&self.model)
    }

    fn encode(&mut self, texts: &[String]) -> Result<QuerySet> {
        let owl = self.encode_queries(texts)?;
        Ok(QuerySet::new(texts.to_vec(), owl))
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
        let owl = queries.encoded_for::<OwlQueries>(&self.model.dir)?;
        let (oh, ow) = self.model.preprocessor.input_hw();
        let mut batch = std::mem::replace(&mut self.batch, Array4::zeros((0, 3, 0, 0)));
        if batch.shape() != [images.len(), 3, oh, ow] {
            batch = Array4::zeros((images.len(), 3, oh, ow));
        }
        // Per picture: its transform back to pixels, or why it could not be preprocessed.
        let mut prepared: Vec<Result<Transform>> = Vec::with_capacity(images.len());
        for (b, image) in images.iter().enumerate() {
            let slot = batch.index_axis_mut(Axis(0), b);
            let family = self.model.family;
            let cfg = &self.model.preprocessor;
            prepared.push(match image {
                Image::Rgb(img) => Ok(preprocess::preprocess_into(family, cfg, img, slot)),
                Image::Scaled(f) => {
                    preprocess::tensor_from_scaled_rgb(family, cfg, f.rgb, f.width, f.height, f.stride, slot)
                        .map(|()| self.transform(f.orig_width, f.orig_height))
                        .map_err(|e| InferError::Model { dir: self.model.dir.clone(), message: e.to_string() })
                }
            });
        }
        let t1 = Instant::now();
        let raws = self.run(batch.view(), owl);
        self.batch = batch;
        let raws = raws?;
        let t2 = Instant::now();
        let out = prepared
            .into_iter()
            .zip(raws)
            .map(|(transform, raw)| transform.map(|t| select(&raw, &t, selection)))
            .collect();
        self.timings = DetectTimings { preprocess: t1 - t0, run: t2 - t1, select: t2.elapsed() };
        Ok(out)
    }

    fn warm_up(&mut self, queries: &QuerySet) -> Result<()> {
        let owl = queries.encoded_for::<OwlQueries>(&self.model.dir)?;
        OwlDetector::warm_up(self, owl)
    }

    fn last_timings(&self) -> DetectTimings {
        self.timings
    }
}
