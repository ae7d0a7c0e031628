//! The launch string of a source's pipeline: a [`PipelineTemplate`]'s source chain for the kind of source and its
//! branches, with the source's placeholders filled in, and the parsed pipeline with the elements the source drives.
//!
//! The built pipeline is always `<source chain> ! tee name=t  t. ! <model branch>  [t. ! <full branch>]
//! [t. ! <motion branch>]`: decode once, then scale for the model in one branch, convert at full size in another
//! only when full frames are wanted, and make a small grey copy in a third only when the motion gate is on. The templates themselves, and the encoders they name, are [`crate::gst`]'s.

use std::path::Path;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{FrameSettings, SourceKind, SourceSpec};
use crate::gst::template::{
    FULL_SINK, GstRegistry, MODEL_CAPS, MODEL_SINK, MOTION_CAPS, MOTION_SINK, PipelineChoice, PipelineError,
    PipelineTemplate, TEE, select,
};

/// Appsink behaviour for live sources (RTSP, V4L2): keep only the newest frame, hand it over at once.
pub const LIVE_SINK_PROPS: &str = "sync=false max-buffers=1 drop=true";
/// Appsink behaviour for HTTP: keep only the newest frame, but at the stream's own pace (`sync=true`): HLS and
/// progressive files over HTTP are not live sources to GStreamer and would otherwise be raced through and dropped.
pub const HTTP_SINK_PROPS: &str = "sync=true max-buffers=1 drop=true";
/// Appsink behaviour for files: as fast as the consumer goes, a few frames, then block (backpressure).
pub const FILE_SINK_PROPS: &str = "sync=false max-buffers=4 drop=false";

/// Why a template without a `csi` chain cannot open `csi://` sources.
const CSI_HINT: &str = "CSI cameras (csi://N) need an NVIDIA Jetson and the jetson template (`--pipeline jetson`; \
     auto picks it where nvv4l2decoder and nvvidconv are installed); elsewhere use a USB camera as /dev/videoN";

/// Whether rendering puts the real credentials in (to run it) or the redacted ones (to show it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// The real URI, to launch the pipeline. Never log the result.
    Include,
    /// The redacted display name, to show or log the pipeline.
    Redact,
}

/// The pipeline description for one source: the template's chain and branches with placeholders filled in.
pub fn render(
    template: &PipelineTemplate,
    spec: &SourceSpec,
    settings: &FrameSettings,
    credentials: Credentials,
) -> Result<String, PipelineError> {
    let uri = match credentials {
        Credentials::Include => spec.secret_uri().to_string(),
        Credentials::Redact => spec.display.clone(),
    };
    let path = spec.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let uri = match spec.kind {
        SourceKind::File => file_uri(spec.path().unwrap_or(Path::new(""))),
        SourceKind::V4l2 => format!("v4l2://{path}"),
        SourceKind::Rtsp | SourceKind::Http | SourceKind::Csi => uri,
    };
    let csi = spec.csi().unwrap_or_default();
    let (model_caps, model_caps_rgba) = match settings.keeps_aspect() {
        // The size depends on the decoded size: the source sets it on `model_caps` when the caps are known.
        true => ("video/x-raw,format=RGB".to_string(), "video/x-raw,format=RGBA".to_string()),
        false => {
            let (w, h) = settings.model_size;
            (
                format!("video/x-raw,format=RGB,width={w},height={h}"),
                format!("video/x-raw,format=RGBA,width={w},height={h}"),
            )
        }
    };
    let sink_props = match spec.kind {
        SourceKind::File => FILE_SINK_PROPS,
        SourceKind::Http => HTTP_SINK_PROPS,
        SourceKind::Rtsp | SourceKind::V4l2 | SourceKind::Csi => LIVE_SINK_PROPS,
    };
    let value = |key: &str| -> Option<String> {
        Some(match key {
            "location" => quote(&path),
            "uri" => quote(&uri),
            "device" => quote(&path),
            "model_caps" => quote(&model_caps),
            "model_caps_rgba" => quote(&model_caps_rgba),
            "full_caps" => quote("video/x-raw,format=I420"),
            "full_caps_rgba" => quote("video/x-raw,format=RGBA"),
            "sensor_id" => csi.sensor_id.to_string(),
            "width" => csi.width.to_string(),
            "height" => csi.height.to_string(),
            "framerate" => format!("{}/{}", csi.fps_n, csi.fps_d),
            "sink_props" => sink_props.to_string(),
            // The height follows the decoded size: the source sets it (and the width again) once it is known.
            "motion_caps" => quote(&format!("video/x-raw,format=GRAY8,width={}", settings.motion.grey_width)),
            "motion_caps_i420" => quote(&format!("video/x-raw,format=I420,width={}", settings.motion.grey_width)),
            _ => return None,
        })
    };
    let fill = |text: &str| fill_placeholders(text, &template.name, &value);
    let mut out = format!(
        "{} ! tee name={TEE}  {TEE}. ! {}",
        fill(source_chain(template, spec.kind)?)?,
        fill(&template.model_branch)?
    );
    if settings.full_frames {
        out.push_str(&format!("  {TEE}. ! {}", fill(&template.full_branch)?));
    }
    if settings.motion.enabled {
        out.push_str(&format!("  {TEE}. ! {}", fill(template.motion_branch())?));
    }
    Ok(out)
}

/// The pipeline that would run for `spec`, with credentials redacted: for `lookout pipelines show` and logs.
pub fn pipeline_description(
    spec: &SourceSpec,
    settings: &FrameSettings,
    choice: &PipelineChoice,
) -> Result<String, PipelineError> {
    let template = select(choice, &GstRegistry)?;
    render(&template, spec, settings, Credentials::Redact)
}

/// A parsed pipeline and the elements the source drives.
#[derive(Debug)]
pub struct BuiltPipeline {
    /// The whole pipeline, in the NULL state.
    pub pipeline: gst::Pipeline,
    /// The tee right after the decoder; its sink pad sees every decoded frame.
    pub tee: gst::Element,
    /// The capsfilter named `model_caps` (its width/height are set at run time when the aspect is kept).
    pub model_caps: gst::Element,
    /// RGB frames at the model size.
    pub model_sink: gst_app::AppSink,
    /// Present when the description has a full branch.
    pub full_sink: Option<gst_app::AppSink>,
    /// The motion branch's capsfilter and GRAY8 appsink, when the description has one (the motion gate is on).
    pub motion: Option<(gst::Element, gst_app::AppSink)>,
}

/// Parses a rendered description and finds the named elements. `template_name` is for errors.
/// The pipeline is left in the NULL state.
pub fn build(description: &str, template_name: &str, full_frames: bool) -> Result<BuiltPipeline, PipelineError> {
    gst::init().map_err(|e| PipelineError::Init(e.to_string()))?;
    let name = || template_name.to_string();
    let element =
        gst::parse::launch(description).map_err(|e| PipelineError::Parse { name: name(), message: e.to_string() })?;
    let pipeline = element.downcast::<gst::Pipeline>().map_err(|_| PipelineError::Parse {
        name: name(),
        message: "the description is a single element, not a pipeline".into(),
    })?;
    let find = |element: &str, what: &'static str| {
        pipeline.by_name(element).ok_or_else(|| PipelineError::MissingNamed {
            name: name(),
            element: element.into(),
            what,
        })
    };
    let sink = |element: &str| -> Result<gst_app::AppSink, PipelineError> {
        find(element, "appsink")?.downcast::<gst_app::AppSink>().map_err(|_| PipelineError::MissingNamed {
            name: name(),
            element: element.into(),
            what: "appsink",
        })
    };
    let tee = find(TEE, "tee")?;
    let model_caps = find(MODEL_CAPS, "capsfilter")?;
    let model_sink = sink(MODEL_SINK)?;
    let full_sink = if full_frames { Some(sink(FULL_SINK)?) } else { None };
    // Looked for by name: a description has the motion branch exactly when the gate is on.
    let motion = match pipeline.by_name(MOTION_SINK) {
        Some(_) => Some((find(MOTION_CAPS, "capsfilter")?, sink(MOTION_SINK)?)),
        None => None,
    };
    Ok(BuiltPipeline { pipeline, tee, model_caps, model_sink, full_sink, motion })
}

/// Replaces `{key}` placeholders; `{` not followed by `key}` is left alone.
fn fill_placeholders(
    text: &str,
    template: &str,
    value: &dyn Fn(&str) -> Option<String>,
) -> Result<String, PipelineError> {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let key_len =
            after.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(after.len());
        if key_len > 0 && after[key_len..].starts_with('}') {
            let key = &after[..key_len];
            let v = value(key).ok_or_else(|| PipelineError::UnknownPlaceholder {
                name: template.to_string(),
                placeholder: key.to_string(),
            })?;
            out.push_str(&v);
            rest = &after[key_len + 1..];
        } else {
            out.push('{');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A gst-launch quoted string: `"..."` with `"` and `\` escaped.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn file_uri(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    gst::glib::filename_to_uri(&abs, None)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| format!("file://{}", abs.display()))
}

/// The template's source chain for a kind of source; an error for a CSI source when the template has no `csi`
/// chain.
pub fn source_chain(template: &PipelineTemplate, kind: SourceKind) -> Result<&str, PipelineError> {
    Ok(match kind {
        SourceKind::File => &template.file,
        SourceKind::Rtsp => &template.rtsp,
        SourceKind::Http => &template.http,
        SourceKind::V4l2 => &template.v4l2,
        SourceKind::Csi => template.csi.as_deref().ok_or_else(|| PipelineError::NoChain {
            name: template.name.clone(),
            key: "csi",
            hint: CSI_HINT,
        })?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_fill_and_reject_typos() {
        let v = |k: &str| (k == "uri").then(|| "\"x\"".to_string());
        assert_eq!(fill_placeholders("a uri={uri} {b c}", "t", &v).unwrap(), "a uri=\"x\" {b c}");
        let err = fill_placeholders("a {urii}", "t", &v).unwrap_err().to_string();
        assert!(err.contains("urii") && err.contains("known:"), "{err}");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(r#"a "b"\c"#), r#""a \"b\"\\c""#);
    }

    #[test]
    fn the_motion_branch_is_there_only_when_the_gate_is_on() {
        let spec = SourceSpec::parse_unchecked("rtsp://cam/live", 0).unwrap();
        for name in ["generic", "jetson"] {
            let t = PipelineTemplate::builtin(name).unwrap();
            let off = render(&t, &spec, &FrameSettings::default(), Credentials::Redact).unwrap();
            assert!(!off.contains(MOTION_SINK), "{off}");
            let settings = FrameSettings { motion: crate::source::MotionSettings::on(), ..Default::default() };
            let on = render(&t, &spec, &settings, Credentials::Redact).unwrap();
            let branch = on.split("  t. ! ").last().unwrap();
            assert!(branch.contains("name=motion_caps") && branch.contains("width=160"), "{name}: {branch}");
            assert!(branch.ends_with(&format!("appsink name=motion_sink enable-last-sample=false {LIVE_SINK_PROPS}")));
        }
        // A template without a motion branch gets the default one.
        let mut t = PipelineTemplate::builtin("generic").unwrap();
        t.motion_branch = None;
        assert_eq!(t.motion_branch(), crate::gst::template::DEFAULT_MOTION_BRANCH);
    }

    #[test]
    fn render_redacts_and_keeps_secret_for_launch() {
        let spec = SourceSpec::parse_unchecked("rtsp://u:hunter2@cam/live", 0).unwrap();
        let t = PipelineTemplate::builtin("generic").unwrap();
        let settings = FrameSettings { model_size: (640, 480), full_frames: true, ..Default::default() };
        let shown = render(&t, &spec, &settings, Credentials::Redact).unwrap();
        assert!(!shown.contains("hunter2") && shown.contains("rtsp://***@cam/live"), "{shown}");
        assert!(shown.contains("width=640,height=480") && shown.contains(LIVE_SINK_PROPS) && shown.contains(FULL_SINK));
        let run = render(&t, &spec, &settings, Credentials::Include).unwrap();
        assert!(run.contains("hunter2"));
    }
}
