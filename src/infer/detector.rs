//! The detector: ONNX Runtime sessions for one model, and the queries encoded for it.
//!
//! The model (its directory, family, preprocessing) is kept apart from the sessions it runs on.
//! Queries are encoded once into a [`QuerySet`] and reused for every image until they change.

use std::path::Path;

use ndarray::{Array1, Array2, ArrayView4, Axis, Ix2, Ix3};
use ort::session::Session;
use ort::value::TensorRef;

use super::head::{class_logits, normalize_queries};
use super::model::{Layout, ModelDir};
use super::runtime::{SessionOptions, build_session};
use super::text::QueryTokenizer;
use super::{InferError, Result};
use crate::geom::ModelBox;

/// Queries, tokenized and (in the split layout) embedded.
#[derive(Debug, Clone)]
pub struct QuerySet {
    pub texts: Vec<String>,
    pub ids: Array2<i64>,
    pub mask: Array2<i64>,
    /// `[Q, D]` normalised query embeddings; present in the split layout.
    pub embeds: Option<Array2<f32>>,
}

impl QuerySet {
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

/// What the model says about one image, before any thresholding.
#[derive(Debug, Clone)]
pub struct RawOutput {
    /// `[P, Q]`: one logit per patch and query.
    pub logits: Array2<f32>,
    /// `[P, 4]`: `(cx, cy, w, h)` relative to the model's square input.
    pub boxes: Array2<f32>,
    /// `[P]`: OWLv2's objectness logits, when the graph gives them.
    pub objectness: Option<Array1<f32>>,
}

impl RawOutput {
    pub fn num_patches(&self) -> usize {
        self.logits.nrows()
    }

    pub fn model_box(&self, patch: usize) -> ModelBox {
        let b = self.boxes.row(patch);
        ModelBox { cx: b[0], cy: b[1], w: b[2], h: b[3] }
    }
}

enum Backend {
    Hf { session: Session },
    Split { text: Session, image: Session },
}

/// A loaded model, ready to run.
pub struct Detector {
    pub model: ModelDir,
    tokenizer: QueryTokenizer,
    backend: Backend,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").field("model", &self.model.dir).field("layout", &self.model.layout).finish()
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

impl Detector {
    /// Loads the tokenizer and builds the sessions for the model's layout.
    pub fn load(model: ModelDir, opts: &SessionOptions) -> Result<Self> {
        let tokenizer = QueryTokenizer::from_file(&model.path("tokenizer.json"))?;
        let backend = match model.layout {
            Layout::Hf => {
                let path = model.path("onnx/model.onnx");
                let session = build_session(&path, opts)?;
                check_io(&session, &path, &["input_ids", "attention_mask", "pixel_values"], &["logits", "pred_boxes"])?;
                Backend::Hf { session }
            }
            Layout::Split => {
                let tpath = model.path("onnx/text_encoder.onnx");
                let ipath = model.path("onnx/image_embedder.onnx");
                let text = build_session(&tpath, opts)?;
                check_io(&text, &tpath, &["input_ids", "attention_mask"], &["text_embeds"])?;
                let image = build_session(&ipath, opts)?;
                check_io(
                    &image,
                    &ipath,
                    &["pixel_values"],
                    &["class_embeds", "logit_shift", "logit_scale", "pred_boxes"],
                )?;
                Backend::Split { text, image }
            }
        };
        Ok(Detector { model, tokenizer, backend })
    }

    pub fn tokenizer(&self) -> &QueryTokenizer {
        &self.tokenizer
    }

    /// Side of the square input tensor.
    pub fn input_size(&self) -> u32 {
        self.model.image_size
    }

    /// Tokenizes the queries and, in the split layout, runs the text encoder once for all of them.
    pub fn encode_queries(&mut self, texts: &[String]) -> Result<QuerySet> {
        let (ids, mask) = self.tokenizer.encode_all(texts)?;
        let embeds = match &mut self.backend {
            Backend::Hf { .. } => None,
            Backend::Split { text, .. } => {
                let path = self.model.path("onnx/text_encoder.onnx");
                let outputs = text
                    .run(ort::inputs![
                        "input_ids" => TensorRef::from_array_view(&ids).map_err(ort_err(&path))?,
                        "attention_mask" => TensorRef::from_array_view(&mask).map_err(ort_err(&path))?,
                    ])
                    .map_err(ort_err(&path))?;
                let embeds: Array2<f32> = extract::<Ix2>(&outputs, &path, "text_embeds")?;
                Some(normalize_queries(embeds.view()))
            }
        };
        Ok(QuerySet { texts: texts.to_vec(), ids, mask, embeds })
    }

    /// Runs a batch of preprocessed images `[B, 3, S, S]` against the queries.
    pub fn run(&mut self, pixels: ArrayView4<f32>, queries: &QuerySet) -> Result<Vec<RawOutput>> {
        match &mut self.backend {
            Backend::Hf { session } => {
                let path = self.model.path("onnx/model.onnx");
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
                let path = self.model.path("onnx/image_embedder.onnx");
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
    pub fn warm_up(&mut self, queries: &QuerySet) -> Result<()> {
        let s = self.input_size() as usize;
        let blank = ndarray::Array4::<f32>::zeros((1, 3, s, s));
        self.run(blank.view(), queries).map(|_| ())
    }
}
