//! GStreamer pipeline templates: which elements decode, scale and convert a source's frames, and which encode.
//!
//! The templates are TOML text files in `pipelines/`, embedded in the binary: `generic` (software decode, any
//! machine) and `jetson` (nvv4l2decoder + nvvidconv). `pipelines/generic.toml` documents the contract and the
//! placeholders. The platform is detected through the [`ElementRegistry`] seam; `--pipeline NAME|FILE` overrides it.
//! [`crate::source::launch`] fills a template in for one source.
//!
//! A template also names the H.264 encoders that turn annotated or cropped frames back into video
//! ([`PipelineTemplate::encoder`]): software x264 in `generic`, NVENC in `jetson`.
//! [`super::encoder::usable_encoder`] falls back to the generic one, with a warning, where a template's encoder
//! cannot be instantiated.

use std::fmt;
use std::path::{Path, PathBuf};

use gstreamer as gst;
use serde::Deserialize;

/// The generic software template.
pub const GENERIC_TEMPLATE: &str = include_str!("../../pipelines/generic.toml");
/// The NVIDIA Jetson template.
pub const JETSON_TEMPLATE: &str = include_str!("../../pipelines/jetson.toml");

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
    "motion_caps",
    "motion_caps_i420",
];

/// The tee after the decoder (the built pipeline must contain these names).
pub const TEE: &str = "t";
/// The appsink of the model branch.
pub const MODEL_SINK: &str = "model_sink";
/// The capsfilter that sets the model size.
pub const MODEL_CAPS: &str = "model_caps";
/// The appsink of the full-size branch.
pub const FULL_SINK: &str = "full_sink";
/// The appsink of the motion branch (GRAY8, small).
pub const MOTION_SINK: &str = "motion_sink";
/// The capsfilter that sets the motion branch's size.
pub const MOTION_CAPS: &str = "motion_caps";
/// The motion branch of a template that has none: software scaling and conversion, from frames in system memory.
pub const DEFAULT_MOTION_BRANCH: &str = "queue max-size-buffers=3 max-size-bytes=0 max-size-time=0 ! videoscale ! \
     videoconvert ! capsfilter name=motion_caps caps={motion_caps} ! appsink name=motion_sink \
     enable-last-sample=false {sink_props}";

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("unknown pipeline template `{name}`: use one of {builtins} or the path of a template file (see pipelines/generic.toml)", builtins = builtin_names().join(", "))]
    UnknownTemplate { name: String },
    #[error("could not read pipeline template `{}`: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "pipeline template `{name}` is not valid (TOML with keys file, rtsp, http, v4l2, csi, model_branch, full_branch, motion_branch, encoder, encoder_live, requires): {message}"
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
    /// Tee branch to a small GRAY8 copy for the motion gate: capsfilter `motion_caps`, appsink `motion_sink`.
    /// Default: [`DEFAULT_MOTION_BRANCH`]. Read it with [`PipelineTemplate::motion_branch`].
    #[serde(default)]
    pub motion_branch: Option<String>,
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

    /// The encoder fragment for `purpose`, as written in the template: raw video in (system memory, any format
    /// its first element accepts; lookout feeds I420 or RGB), parsed H.264 out. See [`super::encoder::usable_encoder`]
    /// for the fallback.
    pub fn encoder(&self, purpose: EncoderPurpose) -> &str {
        match purpose {
            EncoderPurpose::Record => &self.encoder,
            EncoderPurpose::Live => self.encoder_live.as_deref().unwrap_or(&self.encoder),
        }
    }

    /// The motion branch: the template's, or [`DEFAULT_MOTION_BRANCH`].
    pub fn motion_branch(&self) -> &str {
        self.motion_branch.as_deref().unwrap_or(DEFAULT_MOTION_BRANCH)
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
}
