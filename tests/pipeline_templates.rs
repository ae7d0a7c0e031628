//! Every pipeline template parses with GStreamer (source chains, branches and encoders), automatic selection
//! follows the registry, and the generic encoders really encode here.
//!
//! NVIDIA's elements do not exist here, so each is replaced by a software element that does the same job before
//! parsing: `identity` for the decoder (it follows parsebin, whose caps are only known at run time),
//! `videoconvertscale` for nvvidconv, `x264enc` for nvv4l2h264enc, `videotestsrc` for the camera sources. Their
//! properties are checked against the lists in [`NVIDIA_PROPERTIES`] (from JetPack's `gst-inspect-1.0`) and then
//! dropped, and the `(memory:NVMM)` caps feature, which only they produce, is dropped too: the structure, the
//! placeholders, the named elements, the caps between elements, the names of every other element and of every
//! NVIDIA property are still checked, so a typo in a template fails here rather than on a Jetson. The Jetson
//! encoders, with their stand-ins, even encode frames here.

use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use lookout::gst::{
    ElementRegistry, EncoderPurpose, GstRegistry, PipelineChoice, PipelineTemplate, element, encoder, template,
};
use lookout::source::launch::{self, Credentials};
use lookout::source::{self, FrameSettings, ReconnectSettings, SourceKind, SourceSpec, SpawnOptions};

/// NVIDIA's GStreamer elements that templates may use (JetPack 5/6), the stand-in of each, and the properties
/// each has (JetPack 6 `gst-inspect-1.0`; the ones a template is likely to set).
const NVIDIA_PROPERTIES: &[(&str, &str, &[&str])] = &[
    (
        "nvv4l2decoder",
        "identity",
        &["enable-max-performance", "disable-dpb", "skip-frames", "drop-frame-interval", "num-extra-surfaces", "mjpeg"],
    ),
    (
        "nvvidconv",
        "videoconvertscale",
        &["flip-method", "interpolation-method", "left", "right", "top", "bottom", "output-buffers", "compute-hw"],
    ),
    (
        "nvv4l2h264enc",
        "x264enc",
        &[
            "bitrate",
            "peak-bitrate",
            "control-rate",
            "profile",
            "preset-level",
            "maxperf-enable",
            "iframeinterval",
            "idrinterval",
            "insert-sps-pps",
            "insert-vui",
            "insert-aud",
            "num-B-Frames",
            "poc-type",
            "vbv-size",
            // Constant QP (NVIDIA's gst-v4l2 source, gstv4l2videoenc.c).
            "ratecontrol-enable",
            "quant-i-frames",
            "quant-p-frames",
            "quant-b-frames",
            "qp-range",
        ],
    ),
    (
        "nvv4l2h265enc",
        "x265enc",
        &["bitrate", "peak-bitrate", "control-rate", "preset-level", "maxperf-enable", "iframeinterval", "idrinterval"],
    ),
    (
        "nvarguscamerasrc",
        "videotestsrc",
        &["sensor-id", "sensor-mode", "wbmode", "saturation", "exposuretimerange", "gainrange", "tnr-mode", "ee-mode"],
    ),
    ("nvv4l2camerasrc", "videotestsrc", &["device", "cap-buffers"]),
];

/// The description with NVIDIA elements replaced by their stand-ins (matched as whole words), their properties
/// checked and dropped, and NVMM memory caps turned into system memory ones. An unknown property is an error.
fn with_stand_ins(description: &str) -> Result<String, String> {
    let mut out: Vec<&str> = Vec::new();
    let mut current: Option<(&str, &[&str])> = None;
    for token in description.split(' ') {
        if let Some((name, stand_in, properties)) = NVIDIA_PROPERTIES.iter().find(|(n, _, _)| *n == token) {
            current = Some((name, properties));
            out.push(stand_in);
            continue;
        }
        if let Some((element, properties)) = current
            && let Some((key, _)) = token.split_once('=')
        {
            if !properties.contains(&key) {
                return Err(format!("{element} has no property `{key}` (known: {})", properties.join(", ")));
            }
            continue;
        }
        if !token.is_empty() {
            current = None;
        }
        out.push(token);
    }
    Ok(out.join(" ").replace("(memory:NVMM)", ""))
}

struct Fake(&'static [&'static str]);

impl ElementRegistry for Fake {
    fn has(&self, element: &str) -> bool {
        self.0.contains(&element)
    }
}

#[test]
fn every_template_parses_for_every_source_kind() {
    let sources = [
        "/videos/a.mp4",
        "rtsp://u:p@cam/live",
        "https://cam/stream.m3u8",
        "/dev/video0",
        "csi://1?width=1280&height=720",
    ];
    for name in template::builtin_names() {
        let template = PipelineTemplate::builtin(name).unwrap();
        for source in sources {
            let spec = SourceSpec::parse_unchecked(source, 0).unwrap();
            for (full_frames, keep_aspect) in [(false, None), (true, None), (true, Some(960))] {
                let settings =
                    FrameSettings { full_frames, keep_aspect_longest: keep_aspect, ..FrameSettings::default() };
                let rendered = launch::render(&template, &spec, &settings, Credentials::Include);
                if spec.kind == SourceKind::Csi && template.csi.is_none() {
                    let err = rendered.unwrap_err().to_string();
                    assert!(err.contains("csi") && err.contains("--pipeline jetson"), "{name}: {err}");
                    continue;
                }
                let description = rendered.unwrap();
                let parsed = with_stand_ins(&description).unwrap_or_else(|e| panic!("template {name}: {e}"));
                let built = launch::build(&parsed, name, full_frames)
                    .unwrap_or_else(|e| panic!("template {name}, source {source}: {e}\n{parsed}"));
                assert_eq!(built.full_sink.is_some(), full_frames);
            }
        }
    }
}

#[test]
fn the_jetson_template_opens_csi_cameras_with_nvarguscamerasrc() {
    let jetson = PipelineTemplate::builtin("jetson").unwrap();
    let spec = SourceSpec::parse_unchecked("csi://1?width=1280&height=720&framerate=60", 0).unwrap();
    let d = launch::render(&jetson, &spec, &FrameSettings::default(), Credentials::Redact).unwrap();
    assert!(
        d.starts_with(
            "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=60/1,format=NV12 ! tee"
        ),
        "{d}"
    );
    assert!(d.contains(launch::LIVE_SINK_PROPS), "a camera is live: {d}");

    let generic = PipelineTemplate::builtin("generic").unwrap();
    let err = launch::render(&generic, &spec, &FrameSettings::default(), Credentials::Redact).unwrap_err();
    let err = err.to_string();
    assert!(err.contains("`generic`") && err.contains("NVIDIA Jetson") && !err.contains('\n'), "{err}");
}

#[test]
fn a_csi_source_on_the_generic_template_is_a_one_line_error_that_names_it() {
    let spec = SourceSpec::parse("csi://0?width=1280&height=720", 0).unwrap();
    let options = SpawnOptions { pipeline: PipelineChoice::Builtin("generic".into()), ..SpawnOptions::default() };
    let shutdown = lookout::shutdown::Shutdown::new();
    let err =
        source::spawn_with(spec, &FrameSettings::default(), &ReconnectSettings::default(), shutdown.token(), options)
            .unwrap_err()
            .to_string();
    assert!(err.starts_with("source `csi://0?width=1280&height=720`: pipeline template `generic` has no `csi` chain"));
    assert!(err.contains("NVIDIA Jetson") && err.contains("--pipeline jetson") && !err.contains('\n'), "{err}");
}

#[test]
fn every_template_encoder_parses_and_ends_in_h264parse() {
    for name in template::builtin_names() {
        let template = PipelineTemplate::builtin(name).unwrap();
        for purpose in [EncoderPurpose::Record, EncoderPurpose::Live] {
            let fragment = template.encoder(purpose);
            assert!(fragment.trim_end().ends_with("! h264parse"), "{name} {purpose}: {fragment}");
            let parsed = with_stand_ins(fragment).unwrap_or_else(|e| panic!("template {name} {purpose}: {e}"));
            let bin = encoder::encoder_bin(&parsed, name, purpose)
                .unwrap_or_else(|e| panic!("template {name} {purpose}: {e}\n{parsed}"));
            assert!(bin.static_pad("sink").is_some() && bin.static_pad("src").is_some());
            // The caps between the elements fit: with the stand-ins, it encodes RGB frames to H.264 here.
            let (count, first_key, media) = encode_test_frames(&parsed, 5);
            assert_eq!((count, first_key, media.as_str()), (5, true, "video/x-h264"), "{name} {purpose}: {parsed}");
        }
    }
    // The live encoder is its own key in the built-ins (low latency), not the recording one.
    let generic = PipelineTemplate::builtin("generic").unwrap();
    assert!(generic.encoder(EncoderPurpose::Live).contains("zerolatency"));
    assert!(!generic.encoder(EncoderPurpose::Record).contains("zerolatency"));
    let jetson = PipelineTemplate::builtin("jetson").unwrap();
    assert!(jetson.encoder(EncoderPurpose::Record).contains("nvv4l2h264enc"));
    assert!(jetson.encoder(EncoderPurpose::Live).contains("insert-sps-pps=true"));
}

/// Runs `videotestsrc ! RGB ! <fragment> ! appsink` for `frames` frames and returns the encoded buffers' count,
/// whether the first is a keyframe, and the output caps' media type.
fn encode_test_frames(fragment: &str, frames: u32) -> (u32, bool, String) {
    gst::init().unwrap();
    let description = format!(
        "videotestsrc num-buffers={frames} ! video/x-raw,format=RGB,width=320,height=240,framerate=25/1 ! {fragment} \
         ! appsink name=out sync=false"
    );
    let pipeline = gst::parse::launch(&description).unwrap().downcast::<gst::Pipeline>().unwrap();
    let sink = pipeline.by_name("out").unwrap().downcast::<gst_app::AppSink>().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut count, mut first_key, mut media) = (0, false, String::new());
    while Instant::now() < deadline && count <= frames {
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(500)) else {
            if sink.is_eos() {
                break;
            }
            continue;
        };
        if count == 0 {
            first_key = !sample.buffer().unwrap().flags().contains(gst::BufferFlags::DELTA_UNIT);
            media = sample.caps().and_then(|c| c.structure(0).map(|s| s.name().to_string())).unwrap_or_default();
        }
        count += 1;
    }
    let bus = pipeline.bus().unwrap();
    let error = bus.pop_filtered(&[gst::MessageType::Error]);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(error.is_none(), "{fragment}: {error:?}");
    (count, first_key, media)
}

#[test]
fn the_generic_encoders_really_encode_here() {
    let generic = PipelineTemplate::builtin("generic").unwrap();
    for purpose in [EncoderPurpose::Record, EncoderPurpose::Live] {
        let fragment = generic.encoder(purpose);
        let (count, first_key, media) = encode_test_frames(fragment, 12);
        assert_eq!((count, first_key, media.as_str()), (12, true, "video/x-h264"), "{purpose}: {fragment}");
    }
}

#[test]
fn an_encoder_that_cannot_be_made_here_falls_back_to_the_generic_one() {
    let jetson = PipelineTemplate::builtin("jetson").unwrap();
    for purpose in [EncoderPurpose::Record, EncoderPurpose::Live] {
        let used = encoder::usable_encoder(&jetson, purpose);
        if GstRegistry.has("nvv4l2h264enc") {
            assert_eq!(used, jetson.encoder(purpose), "NVENC is here");
        } else {
            assert_eq!(used, encoder::generic_encoder(purpose));
            let err = encoder::encoder_bin(jetson.encoder(purpose), "jetson", purpose).unwrap_err().to_string();
            assert!(err.contains("jetson") && (err.contains("nvvidconv") || err.contains("nvv4l2h264enc")), "{err}");
        }
    }
    let generic = PipelineTemplate::builtin("generic").unwrap();
    assert_eq!(encoder::usable_encoder(&generic, EncoderPurpose::Record), generic.encoder);
    // Not one chain from raw video to H.264: refused with the reason.
    let err = encoder::encoder_bin("x264enc ! h264parse  videotestsrc", "mine.toml", EncoderPurpose::Record)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mine.toml") && err.contains("one chain"), "{err}");
}

#[test]
fn the_real_registry_here_gets_the_generic_template() {
    if GstRegistry.has("nvv4l2decoder") {
        eprintln!("this machine has nvv4l2decoder: checking that auto picks jetson instead");
        assert_eq!(template::select(&PipelineChoice::Auto, &GstRegistry).unwrap().name, "jetson");
        return;
    }
    assert_eq!(template::select(&PipelineChoice::Auto, &GstRegistry).unwrap().name, "generic");
    let err = template::select(&PipelineChoice::Builtin("jetson".into()), &GstRegistry).unwrap_err().to_string();
    assert!(err.contains("nvv4l2decoder") && err.contains("--pipeline generic"), "{err}");
}

#[test]
fn a_registry_with_nvidia_elements_gets_the_jetson_template() {
    let jetson = Fake(&["nvv4l2decoder", "nvvidconv", "decodebin", "videoconvert"]);
    assert_eq!(template::select(&PipelineChoice::Auto, &jetson).unwrap().name, "jetson");
    // Half of the Jetson elements is not enough.
    let half = Fake(&["nvv4l2decoder"]);
    assert_eq!(template::select(&PipelineChoice::Auto, &half).unwrap().name, "generic");
}

#[test]
fn stand_ins_replace_whole_words_and_check_properties() {
    assert_eq!(with_stand_ins("a ! nvvidconv ! nvvidconvx").unwrap(), "a ! videoconvertscale ! nvvidconvx");
    assert_eq!(
        with_stand_ins(
            "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=8 ! nvv4l2h264enc bitrate=1 ! h264parse"
        )
        .unwrap(),
        "videotestsrc ! video/x-raw,width=8 ! x264enc ! h264parse"
    );
    let err = with_stand_ins("nvv4l2h264enc iframeintreval=30 ! h264parse").unwrap_err();
    assert!(err.contains("iframeintreval"), "{err}");
}

#[test]
fn the_decoder_decodebin_would_pick_for_h264_is_found() {
    gst::init().unwrap();
    let caps = gst::Caps::builder("video/x-h264").field("stream-format", "avc").field("alignment", "au").build();
    let decoder = element::decoder_for_caps(&caps).expect("an H.264 decoder is installed here");
    let factory = gst::ElementFactory::find(&decoder).unwrap();
    assert!(factory.klass().contains("Decoder"), "{decoder}");
    let caps = gst::Caps::builder("video/x-no-such-codec").build();
    assert_eq!(element::decoder_for_caps(&caps), None);
}
