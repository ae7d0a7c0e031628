//! Pipeline templates: platform selection through the `ElementRegistry` seam, and every template parsed by
//! GStreamer for every kind of source, so a typo in `pipelines/*.toml` fails here and not on a camera.

use std::collections::HashSet;

use gstreamer as gst;
use lookout::gst::{ElementRegistry, GstRegistry, PipelineChoice, PipelineError, PipelineTemplate, template};
use lookout::source::launch::{self, Credentials};
use lookout::source::{FrameSettings, SourceSpec};

/// A registry that has exactly the listed elements.
struct FakeRegistry(HashSet<&'static str>);

impl ElementRegistry for FakeRegistry {
    fn has(&self, element: &str) -> bool {
        self.0.contains(element)
    }
}

/// NVIDIA elements and memory, and the stand-in each gets so that a template can be parsed on any machine
/// (`identity` passes caps through, so NVMM caps would then not link to the system-memory caps after nvvidconv).
const NVIDIA_STAND_INS: &[(&str, &str)] =
    &[("nvv4l2decoder", "identity"), ("nvvidconv", "identity"), ("video/x-raw(memory:NVMM)", "video/x-raw")];

fn sources() -> Vec<SourceSpec> {
    [
        "clip with spaces \"q\".mp4",
        "rtsp://user:hunter2@10.0.0.5:554/cam1",
        "https://example.com/live.m3u8",
        "/dev/video0",
    ]
    .iter()
    .enumerate()
    .map(|(i, a)| SourceSpec::parse_unchecked(a, i).unwrap())
    .collect()
}

#[test]
fn jetson_is_chosen_when_the_registry_has_the_nvidia_elements() {
    let jetson = FakeRegistry(["nvv4l2decoder", "nvvidconv", "videoconvert"].into());
    assert_eq!(template::select(&PipelineChoice::Auto, &jetson).unwrap().name, "jetson");
    let half = FakeRegistry(["nvv4l2decoder"].into());
    assert_eq!(template::select(&PipelineChoice::Auto, &half).unwrap().name, "generic");
    // This machine has no NVIDIA elements.
    assert_eq!(template::select(&PipelineChoice::Auto, &GstRegistry).unwrap().name, "generic");
    let err = template::select(&PipelineChoice::from_arg(Some("jetson")), &GstRegistry).unwrap_err();
    assert!(matches!(err, PipelineError::MissingElements { .. }), "{err}");
    assert!(err.to_string().contains("nvv4l2decoder"), "{err}");
}

#[test]
fn every_template_parses_for_every_kind() {
    gst::init().unwrap();
    let settings_variants = [
        FrameSettings { model_size: (768, 768), full_frames: false, ..Default::default() },
        FrameSettings { keep_aspect_longest: Some(960), full_frames: true, ..Default::default() },
    ];
    for name in template::builtin_names() {
        let template = PipelineTemplate::builtin(name).unwrap();
        for spec in sources() {
            for settings in &settings_variants {
                let mut description = launch::render(&template, &spec, settings, Credentials::Include).unwrap();
                for (nvidia, stand_in) in NVIDIA_STAND_INS {
                    description = description.replace(nvidia, stand_in);
                }
                let built = launch::build(&description, name, settings.full_frames)
                    .unwrap_or_else(|e| panic!("{name} / {} does not parse: {e}\n{description}", spec.kind));
                assert_eq!(built.full_sink.is_some(), settings.full_frames);
            }
        }
    }
}

#[test]
fn template_files_and_names() {
    assert_eq!(PipelineChoice::from_arg(None), PipelineChoice::Auto);
    assert_eq!(PipelineChoice::from_arg(Some("generic")), PipelineChoice::Builtin("generic".into()));
    let dir = tempfile::tempdir().unwrap();

    let custom = dir.path().join("mine.toml");
    std::fs::write(&custom, template::GENERIC_TEMPLATE.replace("latency=200", "latency=50")).unwrap();
    let choice = PipelineChoice::from_arg(Some(custom.to_str().unwrap()));
    let t = template::select(&choice, &GstRegistry).unwrap();
    assert!(t.rtsp.contains("latency=50"));

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, template::GENERIC_TEMPLATE.replace("{location}", "{locaton}")).unwrap();
    let t = template::select(&PipelineChoice::File(typo), &GstRegistry).unwrap();
    let spec = SourceSpec::parse_unchecked("a.mp4", 0).unwrap();
    let err = launch::render(&t, &spec, &FrameSettings::default(), Credentials::Include).unwrap_err().to_string();
    assert!(err.contains("locaton") && err.contains("typo.toml"), "{err}");

    let err = template::select(&PipelineChoice::from_arg(Some("jetsn")), &GstRegistry).unwrap_err().to_string();
    assert!(err.contains("jetsn") && err.contains("generic"), "{err}");
    let err = template::select(&PipelineChoice::from_arg(Some("/no/such.toml")), &GstRegistry).unwrap_err().to_string();
    assert!(err.contains("/no/such.toml"), "{err}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "file = 'x'\nextra = 1\n").unwrap();
    let err = template::select(&PipelineChoice::File(bad), &GstRegistry).unwrap_err().to_string();
    assert!(err.contains("bad.toml"), "{err}");
}

#[test]
fn description_for_show_is_redacted() {
    let spec = SourceSpec::parse_unchecked("rtsp://user:hunter2@10.0.0.5:554/cam1", 0).unwrap();
    let settings = FrameSettings { model_size: (960, 960), ..Default::default() };
    let shown = launch::pipeline_description(&spec, &settings, &PipelineChoice::Auto).unwrap();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("rtsp://***@10.0.0.5:554/cam1") && shown.contains("width=960,height=960"), "{shown}");
    assert!(shown.contains("rtspsrc") && shown.contains("max-buffers=1 drop=true"), "{shown}");
}
