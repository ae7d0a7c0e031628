//! A template's encoder fragment as GStreamer elements: instantiated, checked, and replaced by the generic software
//! encoder where it cannot be made here.

use gstreamer as gst;
use gstreamer::prelude::*;

use super::template::{EncoderPurpose, PipelineError, PipelineTemplate};

/// Instantiates an encoder fragment as a bin with a ghost `sink` pad (raw video in) and a ghost `src` pad (H.264
/// out), in the NULL state. `template_name` and `purpose` are for errors.
pub fn encoder_bin(fragment: &str, template_name: &str, purpose: EncoderPurpose) -> Result<gst::Bin, PipelineError> {
    let fail = |message: String| PipelineError::Encoder { name: template_name.to_string(), purpose, message };
    gst::init().map_err(|e| PipelineError::Init(e.to_string()))?;
    let bin = gst::parse::bin_from_description(fragment, true).map_err(|e| fail(e.to_string()))?;
    let one_chain = "it must be one chain from raw video to h264parse";
    for pad in ["sink", "src"] {
        if bin.static_pad(pad).is_none() {
            return Err(fail(format!("it has no unlinked {pad} pad: {one_chain}")));
        }
    }
    // Only one unlinked pad of each direction becomes a ghost pad: any other would be left dangling.
    for element in bin.iterate_recurse().into_iter().flatten() {
        if let Some(pad) = element.pads().into_iter().find(|p| !p.is_linked()) {
            return Err(fail(format!("{}:{} is not linked: {one_chain}", element.name(), pad.name())));
        }
    }
    Ok(bin)
}

/// The encoder fragment of `template` for `purpose` when it instantiates here (every element exists and takes
/// its properties), else the generic template's, with a warning that says which is used and why.
///
/// This catches missing elements; an encoder that exists but fails when it starts (no encoder device in a
/// container, say) is caught by the sinks, which fall back in the same way.
pub fn usable_encoder(template: &PipelineTemplate, purpose: EncoderPurpose) -> String {
    let fragment = template.encoder(purpose);
    match encoder_bin(fragment, &template.name, purpose) {
        Ok(_) => fragment.to_string(),
        Err(e) => {
            let generic = generic_encoder(purpose);
            tracing::warn!(error = %e, fallback = %generic, "using the generic software encoder");
            generic
        }
    }
}

/// The generic template's encoder for `purpose`: the software fallback.
pub fn generic_encoder(purpose: EncoderPurpose) -> String {
    PipelineTemplate::builtin("generic").expect("built-in templates are valid (tested)").encoder(purpose).to_string()
}
