//! GStreamer pieces every part of lookout shares: the pipeline templates and the encoders they name.
//!
//! - [`template`]: the templates in `pipelines/` (`generic`, `jetson`, or a file), parsed and selected for this
//!   machine through the [`template::ElementRegistry`] seam;
//! - [`encoder`]: a template's H.264 encoder fragment as a bin, with the generic software fallback;
//! - [`element`]: elements found by their klass (the encoder of a bin, the decoders of a running pipeline).
//!
//! Nothing here knows a source: [`crate::source::launch`] fills a template in for one.

pub mod element;
pub mod encoder;
pub mod template;

pub use encoder::{encoder_bin, generic_encoder, usable_encoder};
pub use template::{
    ElementRegistry, EncoderPurpose, GstRegistry, PipelineChoice, PipelineError, PipelineTemplate, builtin_names,
    select,
};
