//! The seam every model family plugs into: [`Detector`].
//!
//! A family owns the whole path from a decoded picture to boxes in pixels of that picture: its preprocessing,
//! the transform back to pixels, its graphs, the mapping from its outputs to queries, and the selection of boxes.
//! `locate` and `watch` only ever hold a `Box<dyn Detector>` (made by [`super::load`]); they never ask which
//! family runs.
//!
//! ```text
//! texts ──encode──► QuerySet (once per set of queries, off the frame path)
//! Image::Rgb (locate: a decoded photo)  ──┐
//! Image::Scaled (watch: a frame GStreamer ├─detect(images, queries, selection)─► per image: Vec<Detection> in pixels
//!   already scaled as frame_scale() asks) ┘
//! ```
//!
//! Every image of one `detect` call runs as one batch. A picture that cannot be preprocessed (a frame of the
//! wrong size) fails alone; a failure of the model run fails the batch.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;

use super::Result;
use super::model::ModelDir;
use super::postprocess::Selection;
use crate::geom::Detection;

/// One picture for [`Detector::detect`].
#[derive(Debug, Clone, Copy)]
pub enum Image<'a> {
    /// A decoded image at its own size (`locate`): preprocessed exactly as transformers does.
    Rgb(&'a RgbImage),
    /// A video frame that GStreamer has already scaled as [`Detector::frame_scale`] asks (`watch`).
    Scaled(ScaledFrame<'a>),
}

/// Packed RGB pixels of a frame scaled for the model, and the size it had before.
#[derive(Debug, Clone, Copy)]
pub struct ScaledFrame<'a> {
    pub rgb: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// Bytes from one row to the next.
    pub stride: usize,
    /// Width of the frame before scaling: boxes are given in its pixels.
    pub orig_width: u32,
    /// Height of the frame before scaling.
    pub orig_height: u32,
}

/// How a video pipeline should scale frames for this detector, before [`Image::Scaled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameScale {
    /// Exactly `width` x `height`; the aspect ratio is not kept (OWL-ViT stretches).
    Stretch { width: u32, height: u32 },
    /// The longer side to `side`, keeping the aspect ratio; the detector pads the rest (OWLv2 pads to a square).
    FitLonger { side: u32 },
    /// The largest size of the frame's aspect ratio within `max_width` x `max_height`, with transformers'
    /// arithmetic (`get_image_size_for_max_height_width`: each side `int(side * scale)`); the detector pads the
    /// rest and masks it (Grounding DINO's graphs of one fixed size).
    FitWithin { max_width: u32, max_height: u32 },
    /// The shorter side to `shortest_edge` unless the longer would pass `longest_edge` (transformers'
    /// `get_size_with_aspect_ratio`); the detector pads a batch to its largest frame (Grounding DINO with a graph
    /// of dynamic size).
    ShortestEdge { shortest_edge: u32, longest_edge: u32 },
}

impl FrameScale {
    /// The size of the model's input `(width, height)`, which bounds every scaled frame.
    pub fn input_size(&self) -> (u32, u32) {
        match *self {
            FrameScale::Stretch { width, height } => (width, height),
            FrameScale::FitLonger { side } => (side, side),
            FrameScale::FitWithin { max_width, max_height } => (max_width, max_height),
            FrameScale::ShortestEdge { longest_edge, .. } => (longest_edge, longest_edge),
        }
    }

    /// `(width, height)` a decoded frame of `width` x `height` is scaled to.
    pub fn size_for(&self, width: u32, height: u32) -> (u32, u32) {
        use super::preprocess::ResizeRule;
        let rule = match *self {
            FrameScale::Stretch { width, height } => return (width, height),
            FrameScale::FitLonger { side } => {
                let (w, h) = (width.max(1) as f64, height.max(1) as f64);
                let scale = side as f64 / w.max(h);
                let fit = |v: f64| ((v * scale).round() as u32).clamp(1, side);
                return if width >= height { (side, fit(h)) } else { (fit(w), side) };
            }
            FrameScale::FitWithin { max_width, max_height } => ResizeRule::MaxHeightWidth { max_height, max_width },
            FrameScale::ShortestEdge { shortest_edge, longest_edge } => {
                ResizeRule::ShortestEdge { shortest_edge, longest_edge }
            }
        };
        let (h, w) = rule.output_hw((height, width), height, width);
        (w, h)
    }
}

/// Queries encoded for one detector: made by [`Detector::encode`], reused for every picture until the queries
/// change. Query `i` of every [`Detection`] is `texts()[i]`.
///
/// What a family keeps of its encoding is its own type, opaque here: the seam names no family, and a family
/// finds its own with [`QuerySet::encoding`] (a set encoded by another model is refused, not misread).
#[derive(Clone)]
pub struct QuerySet {
    texts: Vec<String>,
    encoding: Option<Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for QuerySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuerySet").field("texts", &self.texts).field("encoded", &self.encoding.is_some()).finish()
    }
}

impl QuerySet {
    /// The texts and what the family made of them.
    pub fn new<T: Any + Send + Sync>(texts: Vec<String>, encoding: T) -> Self {
        QuerySet { texts, encoding: Some(Arc::new(encoding)) }
    }

    /// A query set that carries only its texts. This is a test seam: a scripted [`Detector`] (a test's stand-in
    /// for a model) returns it from [`Detector::encode`]. A real family refuses it in `detect`.
    pub fn texts_only(texts: Vec<String>) -> Self {
        QuerySet { texts, encoding: None }
    }

    /// The family's encoding, if this set was encoded by that family.
    pub fn encoding<T: Any>(&self) -> Option<&T> {
        self.encoding.as_deref()?.downcast_ref::<T>()
    }

    /// The family's encoding, or the error for a set encoded by another model (`dir`, the model asked to use it).
    pub(crate) fn encoded_for<T: Any>(&self, dir: &std::path::Path) -> super::Result<&T> {
        self.encoding::<T>().ok_or_else(|| super::InferError::Model {
            dir: dir.to_path_buf(),
            message: "queries were not encoded by this model; encode them with Detector::encode".into(),
        })
    }

    /// The queries, in the order of [`Detection::query`].
    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

/// A loaded model of any family, ready to find queries in pictures.
pub trait Detector: Send {
    /// The model's directory, name and family.
    fn model(&self) -> &ModelDir;

    /// How frames of a video should be scaled for [`Image::Scaled`].
    fn frame_scale(&self) -> FrameScale;

    /// Encodes the queries once for every later [`Detector::detect`]. An empty query, or one the model cannot
    /// take, is an error naming it.
    fn encode(&mut self, texts: &[String]) -> Result<QuerySet>;

    /// Finds every query in every picture, as one batch. Per picture: the detections kept by `selection`, in
    /// pixels of that picture (of the frame before scaling, for [`Image::Scaled`]), clipped to it, ordered by
    /// query and then by score. A box with less than [`super::postprocess::MIN_SIDE_PX`] of the picture on either
    /// side, or mostly outside it, is never reported (see [`super::postprocess`]).
    fn detect(
        &mut self,
        images: &[Image<'_>],
        queries: &QuerySet,
        selection: &Selection,
    ) -> Result<Vec<Result<Vec<Detection>>>>;

    /// An encoder of queries for this model that shares its text side (tokenizer and text graph): it encodes on
    /// another thread while this detector detects, with no second copy of the model. A text graph is locked
    /// while it runs, so an [`Detector::encode`] at the same time waits for it.
    fn text_encoder(&self) -> Box<dyn TextEncoder>;

    /// Runs once on a blank picture so that the first real one does not pay for ONNX Runtime's lazy setup.
    fn warm_up(&mut self, queries: &QuerySet) -> Result<()>;

    /// Where the time of the last [`Detector::detect`] went.
    fn last_timings(&self) -> DetectTimings;

    /// The thresholds the model's card recommends, for queries that set none. `None`: the card states none
    /// (OWL), and the application's defaults apply.
    fn default_thresholds(&self) -> Option<ModelThresholds> {
        None
    }
}

/// Encodes queries for one loaded model ([`Detector::text_encoder`]), on any thread.
pub trait TextEncoder: Send {
    /// As [`Detector::encode`] of the detector it came from: the same [`QuerySet`].
    fn encode(&mut self, texts: &[String]) -> Result<QuerySet>;
}

/// A [`TextEncoder`] whose query sets carry only their texts ([`QuerySet::texts_only`]): the test seam's encoder,
/// for a scripted [`Detector`] with nothing to encode.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextsOnly;

impl TextEncoder for TextsOnly {
    fn encode(&mut self, texts: &[String]) -> Result<QuerySet> {
        Ok(QuerySet::texts_only(texts.to_vec()))
    }
}

/// A model's recommended thresholds ([`Detector::default_thresholds`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelThresholds {
    /// A box counts as a match at or above this score.
    pub box_threshold: f32,
    /// Grounding DINO's text threshold (see `config::StandingQuery::text_threshold`).
    pub text_threshold: Option<f32>,
}

/// The parts of one [`Detector::detect`] call, for `locate --timings` and the benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DetectTimings {
    /// Pictures into the input tensor.
    pub preprocess: Duration,
    /// The graphs (and, for OWL's split layout, the class head).
    pub run: Duration,
    /// From raw outputs to the reported boxes.
    pub select: Duration,
}
