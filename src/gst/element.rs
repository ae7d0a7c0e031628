//! Finding elements by what they do (their klass): the encoder of an encoder bin, the decoders of a running
//! pipeline, the decoder decodebin would plug for some caps.

use gstreamer as gst;
use gstreamer::prelude::*;

/// The factory name of the first element in `bin` (searched recursively) whose klass contains `klass_part`:
/// `Encoder` finds the encoder of an encoder bin, `Decoder` the decoder of a running source pipeline.
/// Bins and audio and subtitle elements are skipped.
pub fn find_element_by_klass(bin: &gst::Bin, klass_part: &str) -> Option<String> {
    elements_by_klass(bin, klass_part).into_iter().next()
}

/// The factory names, without repeats, of every element in `bin` (recursively) whose klass contains
/// `klass_part`, leaving out bins and audio and subtitle elements. For the video decoders of a running pipeline:
/// decodebin adds them once the stream's caps are known, so ask after the first frame.
pub fn elements_by_klass(bin: &gst::Bin, klass_part: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for element in bin.iterate_recurse().into_iter().flatten() {
        let Some(factory) = element.factory() else { continue };
        let klass = factory.klass();
        // decodebin and uridecodebin are "Generic/Bin/Decoder": the bins, not the decoders they plug.
        let skip = ["Audio", "Subtitle", "Bin"].iter().any(|k| klass.contains(k));
        if klass.contains(klass_part) && !skip {
            let name = factory.name().to_string();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// The decoder decodebin would plug here for a stream of these caps: the highest-ranked decoder whose sink pad takes
/// them (decodebin skips elements ranked below marginal, and so does this). `None` if no installed decoder takes
/// them. On a Jetson with JetPack's plugins it should be nvv4l2decoder for H.264 and H.265 (unverified here).
pub fn decoder_for_caps(caps: &gst::CapsRef) -> Option<String> {
    gst::init().ok()?;
    // Sorted by decreasing rank, as decodebin tries them.
    gst::ElementFactory::factories_with_type(gst::ElementFactoryType::DECODER, gst::Rank::MARGINAL)
        .iter()
        .find(|f| f.can_sink_any_caps(caps))
        .map(|f| f.name().to_string())
}
