//! GStreamer pipeline templates: which elements decode, scale and convert a source's frames.
//!
//! The templates are TOML text files in `pipelines/`, embedded in the binary: `generic` (software decode, any
//! machine) and `jetson` (nvv4l2decoder + nvvidconv). `pipelines/generic.toml` documents the contract and the
//! placeholders. The platform is detected through the [`ElementRegistry`] seam; `--pipeline NAME|FILE` overrides it.
//!
//! The built pipeline is always `<source chain> ! tee name=t  t. ! <model branch>  [t. ! <full branch>]`: decode
//! once, then scale for the model in one branch and, only when full frames are wanted, convert at full size in the
//! other.
//!
//! A template also names the H.264 encoders that turn annotated or cropped frames back into video
//! ([`PipelineTemplate::encoder`]): software x264 in `generic`, NVENC in `jetson`. [`usable_encoder`] falls back to
//! the generic one, with a warning, where a template's encoder cannot be instantiated.

use std::fmt;
use std::path::{Path, PathBuf};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use serde::Deserialize;

use crate::source::{FrameSettings, SourceKind, SourceSpec};

/// The generic software template.
pub const GENERIC_TEMPLATE: &str = include_str!("../pipelines/generic.toml");
/// The NVIDIA Jetson template.
pub const JETSON_TEMPLATE: &str = include_str!("../pipelines/jetson.toml");

/// Built-in templates, in the order automatic selection tries them (most specific first).
const BUILTIN: &[(&str, &str)] = &[("jetson", JETSON_TEMPLATE), ("generic", GENERIC_TEMPLATE)];

/// Placeholders a template may use; see `pipelines/generic.toml`.
pub const PLACEHOLDERS: &[&str] = &[
    "location",
    "uri",
    "device",
    "model_caps",
    "model_caps_rgba",
    "full_caps",
    "full_caps_rgba",
    "sensor_id",
    "width",
    "height",
    "framerate",
    "sink_props",
];

/// The tee after the decoder (the built pipeline must contain these names).
pub const TEE: &str = "t";
/// The appsink of the model branch.
pub const MODEL_SINK: &str = "model_sink";
/// The capsfilter that sets the model size.
pub const MODEL_CAPS: &str = "model_caps";
/// The appsink of the full-size branch.
pub const FULL_SINK: &str = "full_sink";

/// Appsink behaviour for live sources (RTSP, V4L2): keep only the newest frame, hand it over at once.
pub const LIVE_SINK_PROPS: &str = "sync=false max-buffers=1 drop=true";
/// Appsink behaviour for HTTP: keep only the newest frame, but at the stream's own pace (`sync=true`): HLS and
/// progressive files over HTTP are not live sources to GStreamer and would otherwise be raced through and dropped.
pub const HTTP_SINK_PROPS: &str = "sync=true max-buffers=1 drop=true";
/// Appsink behaviour for files: as fast as the consumer goes, a few frames, then block (backpressure).
pub const FILE_SINK_PROPS: &str = "sync=false max-buffers=4 drop=false";

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("unknown pipeline template `{name}`: use one of {builtins} or the path of a template file (see pipelines/generic.toml)", builtins = builtin_names().join(", "))]
    UnknownTemplate { name: String },
    #[error("could not read pipeline template `{}`: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "pipeline template `{name}` is not valid (TOML with keys file, rtsp, http, v4l2, csi, model_branch, full_branch, encoder, encoder_live, requires): {message}"
    )]
    Invalid { name: String, message: String },
    #[error("pipeline template `{name}` needs GStreamer elements that are not installed here: {}; use `--pipeline generic`", missing.join(", "))]
    MissingElements { name: String, missing: Vec<String> },
    #[error("pipeline template `{name}` uses the unknown placeholder `{{{placeholder}}}`; known: {}", PLACEHOLDERS.join(", "))]
    UnknownPlaceholder { name: String, placeholder: String },
    #[error("pipeline template `{name}` does not parse: {message}")]
    Parse { name: String, message: String },
    #[error("pipeline template `{name}` has no {what} named `{element}` (see the contract in pipelines/generic.toml)")]
    MissingNamed { name: String, element: String, what: &'static str },
    #[error("could not initialise GStreamer: {0}; check that the GStreamer 1.x runtime is installed")]
    Init(String),
    #[error("pipeline template `{name}` has no `{key}` chain: {hint}")]
    NoChain { name: String, key: &'static str, hint: &'static str },
    #[error("the {purpose} encoder of pipeline template `{name}` cannot be made here: {message}")]
    Encoder { name: String, purpose: EncoderPurpose, message: String },
}

/// What a template's encoder is for: decides which key is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncoderPurpose {
    /// Files: the annotated video, cropped and transcoded clips (key `encoder`).
    Record,
    /// Live republishing over RTSP, low latency (key `encoder_live`, default `encoder`).
    Live,
}

impl fmt::Display for EncoderPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncoderPurpose::Record => "recording",
            EncoderPurpose::Live => "live",
        })
    }
}

/// Why a template without a `csi` chain cannot open `csi://` sources.
const CSI_HINT: &str = "CSI cameras (csi://N) need an NVIDIA Jetson and the jetson template (`--pipeline jetson`; \
     auto picks it where nvv4l2decoder and nvvidconv are installed); elsewhere use a USB camera as /dev/videoN";

/// The test seam for platform detection: which elements exist. [`GstRegistry`] asks GStreamer; tests use a fake.
pub trait ElementRegistry {
    /// True if an element factory of this name is registered.
    fn has(&self, element: &str) -> bool;
}

/// The real GStreamer registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct GstRegistry;

impl ElementRegistry for GstRegistry {
    fn has(&self, element: &str) -> bool {
        gst::init().is_ok() && gst::ElementFactory::find(element).is_some()
    }
}

/// Which template to use, from `--pipeline`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PipelineChoice {
    /// The first built-in template whose elements are all installed (`jetson`, then `generic`).
    #[default]
    Auto,
    /// A built-in template by name.
    Builtin(String),
    /// A template file.
    File(PathBuf),
}

impl PipelineChoice {
    /// `None` or `auto` → [`PipelineChoice::Auto`]; a built-in name → [`PipelineChoice::Builtin`];
    /// anything else is a file path.
    pub fn from_arg(arg: Option<&str>) -> PipelineChoice {
        match arg {
            None | Some("auto") => PipelineChoice::Auto,
            Some(name) if BUILTIN.iter().any(|(n, _)| *n == name) => PipelineChoice::Builtin(name.to_string()),
            Some(path) => PipelineChoice::File(PathBuf::from(path)),
        }
    }
}

/// The names of the built-in templates.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineTemplate {
    /// `generic`, `jetson`, or the file path.
    #[serde(skip)]
    pub name: String,
    /// Elements that must be registered for automatic selection (default: none).
    #[serde(default)]
    pub requires: Vec<String>,
    /// Source chain for files (`{location}`), ending in decoded video.
    pub file: String,
    /// Source chain for RTSP (`{uri}`).
    pub rtsp: String,
    /// Source chain for HTTP(S) and HLS (`{uri}`).
    pub http: String,
    /// Source chain for V4L2 cameras (`{device}`).
    pub v4l2: String,
    /// Source chain for Jetson CSI cameras (`{sensor_id}`, `{width}`, `{height}`, `{framerate}`). Default: none,
    /// and a CSI source is then an error that says what it needs.
    #[serde(default)]
    pub csi: Option<String>,
    /// Tee branch to RGB at the model size: capsfilter `model_caps`, appsink `model_sink`.
    pub model_branch: String,
    /// Tee branch to I420 (or RGB) at full size: appsink `full_sink`.
    pub full_branch: String,
    /// H.264 encoder for recordings: a gst-launch fragment from raw video (system memory) to `h264parse`.
    /// Read it with [`PipelineTemplate::encoder`].
    pub encoder: String,
    /// H.264 encoder for live republishing (low latency). Default: `encoder`.
    #[serde(default)]
    pub encoder_live: Option<String>,
}

impl PipelineTemplate {
    /// Parses template text; `name` is used in errors.
    pub fn parse(name: &str, text: &str) -> Result<PipelineTemplate, PipelineError> {
        let mut t: PipelineTemplate = toml::from_str(text)
            .map_err(|e| PipelineError::Invalid { name: name.to_string(), message: e.to_string() })?;
        t.name = name.to_string();
        Ok(t)
    }

    /// A built-in template.
    pub fn builtin(name: &str) -> Option<PipelineTemplate> {
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        Some(PipelineTemplate::parse(name, text).expect("built-in templates are valid (tested)"))
    }

    /// Reads a template file.
    pub fn from_file(path: &Path) -> Result<PipelineTemplate, PipelineError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| PipelineError::Read { path: path.to_path_buf(), source })?;
        PipelineTemplate::parse(&path.display().to_string(), &text)
    }

    /// The source chain for a kind of source; an error for a CSI source when the template has no `csi` chain.
    pub fn source_chain(&self, kind: SourceKind) -> Result<&str, PipelineError> {
        Ok(match kind {
            SourceKind::File => &self.file,
            SourceKind::Rtsp => &self.rtsp,
            SourceKind::Http => &self.http,
            SourceKind::V4l2 => &self.v4l2,
            SourceKind::Csi => self.csi.as_deref().ok_or_else(|| PipelineError::NoChain {
                name: self.name.clone(),
                key: "csi",
                hint: CSI_HINT,
            })?,
        })
    }

    /// The encoder fragment for `purpose`, as written in the template: raw video in (system memory, any format
    /// its first element accepts; lookout feeds I420 or RGB), parsed H.264 out. See [`usable_encoder`] for the fallback.
    pub fn encoder(&self, purpose: EncoderPurpose) -> &str {
        match purpose {
            EncoderPurpose::Record => &self.encoder,
            EncoderPurpose::Live => self.encoder_live.as_deref().unwrap_or(&self.encoder),
        }
    }

    /// The required elements the registry lacks.
    pub fn missing_elements(&self, registry: &dyn ElementRegistry) -> Vec<String> {
        self.requires.iter().filter(|e| !registry.has(e)).cloned().collect()
    }
}

/// Resolves a choice to a template. `Auto` picks `jetson` when the registry has nvv4l2decoder and nvvidconv,
/// else `generic`; a named built-in whose elements are missing is an error that says so.
pub fn select(choice: &PipelineChoice, registry: &dyn ElementRegistry) -> Result<PipelineTemplate, PipelineError> {
    match choice {
        PipelineChoice::Auto => {
            for (name, _) in BUILTIN {
                let t = PipelineTemplate::builtin(name).expect("listed");
                if t.missing_elements(registry).is_empty() {
                    return Ok(t);
                }
            }
            Ok(PipelineTemplate::builtin("generic").expect("listed"))
        }
        PipelineChoice::Builtin(name) => {
            let t =
                PipelineTemplate::builtin(name).ok_or_else(|| PipelineError::UnknownTemplate { name: name.clone() })?;
            let missing = t.missing_elements(registry);
            if missing.is_empty() { Ok(t) } else { Err(PipelineError::MissingElements { name: name.clone(), missing }) }
        }
        PipelineChoice::File(path) => {
            let s = path.to_string_lossy();
            if !path.exists() && !s.contains(['/', '.']) {
                // A bare word that is not a built-in name: most likely a typo of one.
                return Err(PipelineError::UnknownTemplate { name: s.into_owned() });
            }
            PipelineTemplate::from_file(path)
        }
    }
}

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
    let (model_caps, model_caps_rgba) = match settings.keep_aspect_longest {
        // The size depends on the decoded size: the source sets it on `model_caps` when the caps are known.
        Some(_) => ("video/x-raw,format=RGB".to_string(), "video/x-raw,format=RGBA".to_string()),
        None => {
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
            _ => return None,
        })
    };
    let fill = |text: &str| fill_placeholders(text, &template.name, &value);
    let mut out = format!(
        "{} ! tee name={TEE}  {TEE}. ! {}",
        fill(template.source_chain(spec.kind)?)?,
        fill(&template.model_branch)?
    );
    if settings.full_frames {
        out.push_str(&format!("  {TEE}. ! {}", fill(&template.full_branch)?));
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
    Ok(BuiltPipeline { pipeline, tee, model_caps, model_sink, full_sink })
}

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

impl fmt::Display for PipelineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipelineChoice::Auto => f.write_str("auto"),
            PipelineChoice::Builtin(name) => f.write_str(name),
            PipelineChoice::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_as_toml() {
        for name in builtin_names() {
            let t = PipelineTemplate::builtin(name).unwrap();
            assert_eq!(t.name, name);
        }
    }

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
