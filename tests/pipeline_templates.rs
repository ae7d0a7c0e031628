//! Every pipeline template parses with GStreamer, and automatic selection follows the registry.
//!
//! NVIDIA's elements do not exist here, so each is replaced by `identity` (ANY caps in and out) before parsing,
//! and the `(memory:NVMM)` caps feature, which only they produce, is dropped: the structure, the placeholders, the
//! named elements and the names of every other element are still checked, so a typo in a template fails here
//! rather than on a Jetson.

use lookout::pipeline::{self, Credentials, ElementRegistry, GstRegistry, PipelineChoice, PipelineTemplate};
use lookout::source::{FrameSettings, SourceSpec};

/// NVIDIA's GStreamer elements that templates may use (JetPack's gstreamer1.0 plugins).
const NVIDIA_ELEMENTS: &[&str] =
    &["nvv4l2decoder", "nvvidconv", "nvv4l2h264enc", "nvv4l2h265enc", "nvarguscamerasrc", "nvv4l2camerasrc"];

/// The description with NVIDIA elements replaced by `identity` (matched as whole words) and NVMM memory caps by
/// system memory ones (`identity` passes caps through, so NVMM caps would not link to system-memory caps).
fn with_stand_ins(description: &str) -> String {
    description
        .split(' ')
        .map(|token| if NVIDIA_ELEMENTS.contains(&token) { "identity" } else { token })
        .collect::<Vec<_>>()
        .join(" ")
        .replace("(memory:NVMM)", "")
}

struct Fake(&'static [&'static str]);

impl ElementRegistry for Fake {
    fn has(&self, element: &str) -> bool {
        self.0.contains(&element)
    }
}

#[test]
fn every_template_parses_for_every_source_kind() {
    let sources = ["/videos/a.mp4", "rtsp://u:p@cam/live", "https://cam/stream.m3u8", "/dev/video0"];
    for name in pipeline::builtin_names() {
        let template = PipelineTemplate::builtin(name).unwrap();
        for source in sources {
            let spec = SourceSpec::parse_unchecked(source, 0).unwrap();
            for (full_frames, keep_aspect) in [(false, None), (true, None), (true, Some(960))] {
                let settings =
                    FrameSettings { full_frames, keep_aspect_longest: keep_aspect, ..FrameSettings::default() };
                let description = pipeline::render(&template, &spec, &settings, Credentials::Include).unwrap();
                let parsed = with_stand_ins(&description);
                let built = pipeline::build(&parsed, name, full_frames)
                    .unwrap_or_else(|e| panic!("template {name}, source {source}: {e}\n{parsed}"));
                assert_eq!(built.full_sink.is_some(), full_frames);
            }
        }
    }
}

#[test]
fn the_real_registry_here_gets_the_generic_template() {
    if GstRegistry.has("nvv4l2decoder") {
        eprintln!("this machine has nvv4l2decoder: checking that auto picks jetson instead");
        assert_eq!(pipeline::select(&PipelineChoice::Auto, &GstRegistry).unwrap().name, "jetson");
        return;
    }
    assert_eq!(pipeline::select(&PipelineChoice::Auto, &GstRegistry).unwrap().name, "generic");
    let err = pipeline::select(&PipelineChoice::Builtin("jetson".into()), &GstRegistry).unwrap_err().to_string();
    assert!(err.contains("nvv4l2decoder") && err.contains("--pipeline generic"), "{err}");
}

#[test]
fn a_registry_with_nvidia_elements_gets_the_jetson_template() {
    let jetson = Fake(&["nvv4l2decoder", "nvvidconv", "decodebin", "videoconvert"]);
    assert_eq!(pipeline::select(&PipelineChoice::Auto, &jetson).unwrap().name, "jetson");
    // Half of the Jetson elements is not enough.
    let half = Fake(&["nvv4l2decoder"]);
    assert_eq!(pipeline::select(&PipelineChoice::Auto, &half).unwrap().name, "generic");
}

#[test]
fn stand_ins_replace_whole_words_only() {
    assert_eq!(with_stand_ins("a ! nvvidconv ! nvvidconvx"), "a ! identity ! nvvidconvx");
}
