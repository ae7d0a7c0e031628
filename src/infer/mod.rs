//! The model layer: model directories, preprocessing, ONNX Runtime sessions, the class head and postprocessing.
//!
//! Callers see one interface, [`Detector`]:
//! 1. [`ModelDir::open`] reads a directory in the Hugging Face layout, its family and its graph layout.
//! 2. [`load`] builds the family's detector on ONNX Runtime sessions.
//! 3. [`Detector::encode`] encodes the queries once into a [`QuerySet`], reused for every image and every
//!    frame until the queries change.
//! 4. [`Detector::detect`] takes decoded pictures and gives [`Detection`]s in their pixels.
//!
//! Grounding DINO and MM-Grounding-DINO (LLMDet too) are the second family ([`gdino`]).
//!
//! Inside the OWL family ([`owl`]): [`preprocess`] turns the image into the model's input tensor and records the
//! [`Transform`]; [`OwlDetector::run`] runs the image graph and the class head ([`head`]), giving a [`RawOutput`]
//! per image; [`postprocess`] turns raw outputs into detections in pixels.
//!
//! This module never imports `source/`: a video frame reaches it as plain pixels ([`ScaledFrame`]).
//!
//! [`Transform`]: crate::geom::Transform
//! [`Detection`]: crate::geom::Detection

pub mod clip;
pub mod detector;
pub mod device;
pub mod gdino;
pub mod head;
pub mod model;
pub mod owl;
pub mod postprocess;
pub mod preprocess;
pub mod runtime;
pub mod text;
pub mod verify;
pub mod xclip;

pub use clip::ClipModel;
pub use detector::{
    DetectTimings, Detector, FrameScale, Image, ModelThresholds, QuerySet, ScaledFrame, TextEncoder, TextsOnly,
};
pub use device::Device;
pub use gdino::GdinoDetector;
pub use model::{Family, Layout, LayoutChoice, ModelDir, Precision};
pub use owl::{OwlDetector, OwlQueries, RawOutput};
pub use runtime::SessionOptions;
pub use verify::{PromptSet, Verdict, Verifier};

use std::path::{Path, PathBuf};

/// Errors of the model layer. Each names the file, model or query involved and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(
        "ONNX Runtime library not found (looked in {looked}). Run `make deps` (or deploy/install-deps.sh --no-apt) \
         to put it in .deps/, or set ORT_DYLIB_PATH to your libonnxruntime.so"
    )]
    RuntimeMissing { looked: String },
    #[error(
        "could not load ONNX Runtime from {path}: {message}. Set ORT_DYLIB_PATH to libonnxruntime.so {}.{} or newer",
        runtime::MIN_VERSION.major,
        runtime::MIN_VERSION.minor
    )]
    RuntimeLoad { path: PathBuf, message: String },
    #[error(
        "ONNX Runtime at {path} is version {loaded}, but lookout needs {}.{} or newer; set ORT_DYLIB_PATH to a newer \
         libonnxruntime.so (`make deps` installs one; on a Jetson see docs/jetson.md)",
        required.major,
        required.minor
    )]
    RuntimeTooOld { path: PathBuf, loaded: String, required: runtime::OrtVersion },
    #[error("model directory {dir} is missing {file}. {hint}")]
    MissingFile { dir: PathBuf, file: String, hint: String },
    #[error("model directory {dir}: cannot read {file}: {message}")]
    BadFile { dir: PathBuf, file: String, message: String },
    #[error("model {dir}: {message}")]
    Model { dir: PathBuf, message: String },
    #[error("empty query: give a sentence that describes what to find, e.g. -q \"a person on a bicycle\"")]
    EmptyQuery,
    #[error("no queries: give at least one with -q \"...\"")]
    NoQueries,
    #[error("query \"{}\" {message}", short(query))]
    Query { query: String, message: String },
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("ONNX Runtime failed in {graph}: {message}")]
    Ort { graph: String, message: String },
    #[error("{graph}: unexpected output {name}: {message}")]
    Output { graph: String, name: String, message: String },
    #[error(transparent)]
    Device(#[from] device::DeviceError),
}

/// A query for an error line: whole when short, else its start and an ellipsis.
fn short(query: &str) -> String {
    const MAX_CHARS: usize = 60;
    match query.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &query[..cut]),
        None => query.to_string(),
    }
}

/// Loads the detector of the model's family on ONNX Runtime sessions built with `opts`.
pub fn load(model: ModelDir, opts: &SessionOptions) -> Result<Box<dyn Detector>> {
    match model.family {
        Family::OwlVit | Family::Owlv2 => Ok(Box::new(OwlDetector::load(model, opts)?)),
        Family::GroundingDino | Family::MmGroundingDino => Ok(Box::new(GdinoDetector::load(model, opts)?)),
    }
}

/// Loads the verifier in `dir` (its `config.json` names the family), on sessions built with `opts`.
pub fn load_verifier(dir: &Path, opts: &SessionOptions, precision: Precision) -> Result<Box<dyn Verifier>> {
    let config = verify::read_config(dir)?;
    let event_graph = verifier_event_graph_in(dir, &config, precision)?;
    match config.get("model_type").and_then(|v| v.as_str()) {
        Some("brightness") => Ok(Box::new(verify::BrightnessVerifier::load(dir, &config, opts, &event_graph)?)),
        Some("xclip") => Ok(Box::new(xclip::XclipVerifier::load(dir, &config, opts, &event_graph)?)),
        Some("clip") => Ok(Box::new(clip::ClipModel::load(dir, &config, opts, &event_graph)?)),
        Some(other) => Err(InferError::Model {
            dir: dir.to_path_buf(),
            message: format!(
                "model_type {other:?} is not a verifier lookout knows; use \"xclip\" or \"clip\" (or the test \"brightness\")"
            ),
        }),
        None => Err(InferError::BadFile {
            dir: dir.to_path_buf(),
            file: "config.json".into(),
            message: "no model_type".into(),
        }),
    }
}

/// The graph a verifier runs once per event, in `precision`, relative to its directory `dir`: X-CLIP's
/// `onnx/video.onnx` (vision tower, frame mixing, prompt generator), CLIP's image encoder (lookout's
/// `onnx/image_encoder.onnx` or the Hub's `onnx/vision_model.onnx`). Its int8 variant is the same name with `_int8`
/// (what models/quantize_int8.py writes), or `_quantized` for the Hub's CLIP. The prompts' text graph stays fp32:
/// it runs once per set of prompts, off the frame path.
///
/// An int8 graph that is not there is an error naming the file and how to make it, given before any graph loads.
pub fn verifier_event_graph(dir: &Path, precision: Precision) -> Result<String> {
    verifier_event_graph_in(dir, &verify::read_config(dir)?, precision)
}

fn verifier_event_graph_in(dir: &Path, config: &serde_json::Value, precision: Precision) -> Result<String> {
    let (fp32, int8) = match config.get("model_type").and_then(|v| v.as_str()) {
        Some("clip") if clip::is_hub_layout(dir) => ("onnx/vision_model.onnx", "onnx/vision_model_quantized.onnx"),
        Some("clip") => ("onnx/image_encoder.onnx", "onnx/image_encoder_int8.onnx"),
        _ => ("onnx/video.onnx", "onnx/video_int8.onnx"),
    };
    match precision {
        Precision::Fp32 => Ok(fp32.to_owned()),
        Precision::Int8 if dir.join(int8).is_file() => Ok(int8.to_owned()),
        Precision::Int8 => Err(InferError::MissingFile {
            dir: dir.to_path_buf(),
            file: int8.into(),
            hint: format!(
                "It is the verifier's int8 graph ([verify] precision = \"int8\"): make it with \
                 models/quantize_int8.py {}, or set [verify] precision = \"fp32\"",
                dir.display()
            ),
        }),
    }
}

/// How frames should be scaled for a model, known from its directory alone (what [`Detector::frame_scale`] of
/// its loaded detector gives; `lookout pipelines show` uses it without loading the graphs).
pub fn frame_scale_of(model: &ModelDir) -> FrameScale {
    let cfg = &model.preprocessor;
    let (height, width) = cfg.size;
    match model.family {
        Family::Owlv2 if cfg.do_pad && width == height => FrameScale::FitLonger { side: width },
        Family::OwlVit | Family::Owlv2 => FrameScale::Stretch { width, height },
        Family::GroundingDino | Family::MmGroundingDino => gdino::frame_scale_for(cfg, model.graph_input_size),
    }
}

/// Shorthand for results of this module.
pub type Result<T, E = InferError> = std::result::Result<T, E>;
