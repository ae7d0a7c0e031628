//! The second stage: [`Verifier`], which confirms an event on its own frames.
//!
//! A detector sees one frame; an action ("a person snatching a chain") happens over a second or two. A verifier
//! takes N crops of the event's region spread over its first seconds and scores a sentence against contrast
//! sentences, as X-CLIP's zero-shot classification does: one logit per prompt, a softmax over the prompts, and
//! the sentence's probability is the event's score.
//!
//! ```text
//! prompts ──encode──► PromptSet (once per query's set of prompts, off the frame path)
//! crops (RGB, N)  ──logits(crops, prompts)──► one logit per prompt ──softmax──► score of prompt 0 ──► verdict
//! ```
//!
//! Families (by `model_type` in the directory's `config.json`):
//! - `brightness`: a deterministic test verifier (made by `models/export_verifier.py --brightness`). Its prompts
//!   are numbers, target brightnesses from 0 (black) to 1 (white); the logit of a prompt is
//!   `-logit_scale * |mean brightness of the crops - target|`. It lets a test decide the verdict on real footage.
//! - `xclip`: X-CLIP ([`super::xclip`]), text encoded once per prompt set, the video graph once per event.
//! - `clip`: CLIP ([`super::clip`]), the cheap verifier: text encoded once per prompt set, each crop's image
//!   embedding once per event, averaged over the frames.
//!
//! This module never imports `source/`: crops reach it as [`RgbImage`]s.

use std::path::{Path, PathBuf};

use image::RgbImage;
use image::imageops::{FilterType, resize};
use ndarray::{Array1, Array2, Array5, Ix2};
use ort::value::TensorRef;

use super::runtime::{SessionOptions, build_session};
use super::{InferError, Result};

/// The contrast prompts of a query that verifies without giving its own (`-q "..." --verify`, or a `[[query]]`
/// with `verify` but no `contrast`). Everyday scenes that a camera sees when nothing is happening.
pub const DEFAULT_CONTRAST: [&str; 3] =
    ["people walking past each other", "a person standing still", "an empty street with nothing happening"];

/// Default verdict threshold: the sentence's softmax probability at or above which an event is confirmed.
pub const DEFAULT_VERIFY_THRESHOLD: f32 = 0.5;

/// Prompts encoded for one verifier: made by [`Verifier::encode`], reused for every event of the query. Prompt 0
/// is the sentence; the others are its contrast prompts.
#[derive(Debug, Clone)]
pub struct PromptSet {
    texts: Vec<String>,
    encoding: PromptEncoding,
}

/// What a family keeps of its encoded prompts.
#[derive(Debug, Clone)]
enum PromptEncoding {
    /// The brightness verifier's targets.
    Targets(Array1<f32>),
    /// A video-text model's text features, one row per prompt (X-CLIP's `get_text_features`).
    Embeddings(Array2<f32>),
    /// Nothing beyond the texts: a test's scripted verifier ([`PromptSet::texts_only`]).
    TextsOnly,
}

impl PromptSet {
    /// A prompt set that carries only its texts: the test seam for a scripted [`Verifier`]. A real family refuses
    /// it.
    pub fn texts_only(texts: Vec<String>) -> Self {
        PromptSet { texts, encoding: PromptEncoding::TextsOnly }
    }

    /// The prompts, the sentence first.
    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    /// A prompt set of text features, one row per prompt.
    pub(crate) fn with_embeddings(texts: Vec<String>, embeddings: Array2<f32>) -> Self {
        PromptSet { texts, encoding: PromptEncoding::Embeddings(embeddings) }
    }

    /// The text features, when the prompts were encoded by a video-text model.
    pub(crate) fn embeddings(&self) -> Option<&Array2<f32>> {
        match &self.encoding {
            PromptEncoding::Embeddings(e) => Some(e),
            _ => None,
        }
    }
}

/// A loaded verifier of any family.
pub trait Verifier: Send {
    /// The model's name as the `verification` line gives it (its directory's name).
    fn name(&self) -> &str;

    /// The number of frames the model takes, when its graph fixes it (X-CLIP); `None` when any number will do.
    fn num_frames(&self) -> Option<usize>;

    /// Encodes a set of prompts (the sentence first) once, for every later [`Verifier::logits`].
    fn encode(&mut self, prompts: &[String]) -> Result<PromptSet>;

    /// One logit per prompt for the event's crops (in time order, at least one).
    fn logits(&mut self, frames: &[RgbImage], prompts: &PromptSet) -> Result<Vec<f32>>;
}

/// The verdict on one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The sentence's probability is at or above the query's threshold.
    Confirmed,
    /// It is below.
    Rejected,
}

impl Verdict {
    /// `"confirmed"` or `"rejected"`, as in the event log.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Confirmed => "confirmed",
            Verdict::Rejected => "rejected",
        }
    }
}

/// Softmax over the prompts' logits (numerically stable: the largest is subtracted first).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// The score (the sentence's probability, prompt 0) and the verdict for `threshold`.
pub fn judge(logits: &[f32], threshold: f32) -> (f32, Verdict) {
    let score = softmax(logits).first().copied().unwrap_or(0.0);
    let verdict = if score >= threshold { Verdict::Confirmed } else { Verdict::Rejected };
    (score, verdict)
}

/// The indices, into `available` frames, of `n` frames spread evenly over them: frame `i` is at
/// `floor(i * available / n)`, repeating frames when fewer than `n` are available (an event that ended early).
pub fn spread(available: usize, n: usize) -> Vec<usize> {
    if available == 0 {
        return Vec::new();
    }
    (0..n).map(|i| i * available / n).collect()
}

pub(crate) fn read_config(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|_| InferError::MissingFile {
        dir: dir.to_path_buf(),
        file: "config.json".into(),
        hint: "a verifier is a model directory with config.json and onnx/; see models/export_verifier.py".into(),
    })?;
    serde_json::from_str(&text).map_err(|e| InferError::BadFile {
        dir: dir.to_path_buf(),
        file: "config.json".into(),
        message: e.to_string(),
    })
}

/// The deterministic test verifier (see the module documentation).
pub struct BrightnessVerifier {
    dir: PathBuf,
    name: String,
    image_size: u32,
    /// The graph that runs (`onnx/video.onnx`, or its int8 variant).
    graph: PathBuf,
    session: ort::session::Session,
}

impl BrightnessVerifier {
    pub(crate) fn load(dir: &Path, config: &serde_json::Value, opts: &SessionOptions, graph: &str) -> Result<Self> {
        let image_size = config.get("image_size").and_then(|v| v.as_u64()).unwrap_or(32).clamp(1, 4096) as u32;
        let path = dir.join(graph);
        if !path.is_file() {
            return Err(InferError::MissingFile {
                dir: dir.to_path_buf(),
                file: graph.into(),
                hint: "make it with models/export_verifier.py --brightness".into(),
            });
        }
        let session = build_session(&path, opts)?;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "verifier".into());
        Ok(BrightnessVerifier { dir: dir.to_path_buf(), name, image_size, graph: path, session })
    }
}

impl Verifier for BrightnessVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn num_frames(&self) -> Option<usize> {
        None
    }

    fn encode(&mut self, prompts: &[String]) -> Result<PromptSet> {
        let targets = prompts
            .iter()
            .map(|p| {
                p.trim().parse::<f32>().ok().filter(|t| t.is_finite()).ok_or_else(|| InferError::Model {
                    dir: self.dir.clone(),
                    message: format!(
                        "prompt {p:?}: this test verifier takes numbers (target brightnesses, 0 to 1) as prompts"
                    ),
                })
            })
            .collect::<Result<Vec<f32>>>()?;
        Ok(PromptSet { texts: prompts.to_vec(), encoding: PromptEncoding::Targets(Array1::from(targets)) })
    }

    fn logits(&mut self, frames: &[RgbImage], prompts: &PromptSet) -> Result<Vec<f32>> {
        let PromptEncoding::Targets(targets) = &prompts.encoding else {
            return Err(InferError::Model {
                dir: self.dir.clone(),
                message: "prompts were encoded for another verifier; encode them again".into(),
            });
        };
        let s = self.image_size;
        let mut pixels = Array5::<f32>::zeros((1, frames.len(), 3, s as usize, s as usize));
        for (t, frame) in frames.iter().enumerate() {
            let scaled = resize(frame, s, s, FilterType::Triangle);
            for (x, y, p) in scaled.enumerate_pixels() {
                for c in 0..3 {
                    pixels[[0, t, c, y as usize, x as usize]] = f32::from(p.0[c]) / 255.0;
                }
            }
        }
        let graph = &self.graph;
        let err = |e: ort::Error| InferError::Ort { graph: graph.display().to_string(), message: e.to_string() };
        let outputs = self
            .session
            .run(ort::inputs![
                "pixel_values" => TensorRef::from_array_view(&pixels).map_err(err)?,
                "text_embeds" => TensorRef::from_array_view(targets).map_err(err)?,
            ])
            .map_err(err)?;
        let value = outputs.get("logits_per_video").ok_or_else(|| InferError::Output {
            graph: graph.display().to_string(),
            name: "logits_per_video".into(),
            message: "missing".into(),
        })?;
        let out_err = |message: String| InferError::Output {
            graph: graph.display().to_string(),
            name: "logits_per_video".into(),
            message,
        };
        let view = value.try_extract_array::<f32>().map_err(|e| out_err(e.to_string()))?;
        let logits = view.into_dimensionality::<Ix2>().map_err(|e| out_err(format!("unexpected shape: {e}")))?;
        Ok(logits.row(0).to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_verdict() {
        let p = softmax(&[0.0, 0.0]);
        assert!((p[0] - 0.5).abs() < 1e-6);
        assert_eq!(judge(&[0.0, 0.0], 0.5).1, Verdict::Confirmed, "at the threshold is confirmed");
        assert_eq!(judge(&[0.0, 0.0], 0.51).1, Verdict::Rejected);
        let (score, v) = judge(&[1000.0, 0.0, -3.0], 0.5);
        assert!((score - 1.0).abs() < 1e-6 && v == Verdict::Confirmed, "large logits stay finite");
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6 && p[2] > p[1] && p[1] > p[0]);
    }

    #[test]
    fn frames_are_spread_evenly_and_repeated_when_few() {
        assert_eq!(spread(16, 8), vec![0, 2, 4, 6, 8, 10, 12, 14]);
        assert_eq!(spread(8, 8), (0..8).collect::<Vec<_>>());
        assert_eq!(spread(3, 6), vec![0, 0, 1, 1, 2, 2]);
        assert!(spread(0, 8).is_empty());
    }
}
