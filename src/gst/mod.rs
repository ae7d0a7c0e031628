//! GStreamer pieces every part of lookout shares: the pipeline templates, the encoders they name, and how a
//! pipeline's output is finished.
//!
//! - [`template`]: the templates in `pipelines/` (`generic`, `jetson`, or a file), parsed and selected for this
//!   machine through the [`template::ElementRegistry`] seam;
//! - [`encoder`]: a template's H.264 encoder fragment as a bin, with the generic software fallback;
//! - [`element`]: elements found by their klass (the encoder of a bin, the decoders of a running pipeline);
//! - [`bus`]: waiting on a pipeline's bus for end-of-stream (or another message) with a deadline;
//! - [`part`]: a file written under a temporary `.part` name and renamed once whole.
//!
//! Nothing here knows a source: [`crate::source::launch`] fills a template in for one.

pub mod bus;
pub mod element;
pub mod encoder;
pub mod part;
pub mod template;

pub use encoder::{encoder_bin, generic_encoder, usable_encoder};
pub use template::{
    ElementRegistry, EncoderPurpose, GstRegistry, PipelineChoice, PipelineError, PipelineTemplate, builtin_names,
    select,
};
