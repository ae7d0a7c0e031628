//! `lookout pipelines`: which GStreamer pipeline `watch` would run for a source, for debugging with
//! `gst-launch-1.0`, and which templates this machine can run.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use lookout::gst::{
    self, ElementRegistry, EncoderPurpose, GstRegistry, PipelineChoice, PipelineError, PipelineTemplate,
};
use lookout::infer::{FrameScale, ModelDir};
use lookout::models::{self, OnMissing};
use lookout::source::launch::{self, Credentials};
use lookout::source::{FrameSettings, SourceKind, SourceSpec};

use super::UsageError;

#[derive(Debug, Args)]
pub struct PipelinesArgs {
    #[command(subcommand)]
    pub command: PipelinesCommand,
}

#[derive(Debug, Subcommand)]
pub enum PipelinesCommand {
    /// Print the pipeline `watch` would run for SOURCE (password removed), its encoders, and a gst-launch-1.0 line
    /// to try it. A built-in template whose elements are missing here is still shown (for a Jetson, from a laptop).
    Show {
        /// A video file, rtsp:// or http(s):// URL, /dev/videoN or csi://N; it need not be reachable from here.
        #[arg(value_name = "SOURCE")]
        source: String,
        /// Pipeline template: auto, a built-in name (generic, jetson) or a template file [default: auto]
        #[arg(long, value_name = "NAME|FILE")]
        pipeline: Option<String>,
        /// Include the full-size branch, as `watch --annotate` does.
        #[arg(long)]
        annotate: bool,
        /// Only the pipeline description, nothing else (for scripts).
        #[arg(long)]
        bare: bool,
        /// The model whose input size the model branch scales to, if it is here (nothing is downloaded).
        #[arg(short = 'm', long = "model", value_name = "DIR|NAME", default_value = super::DEFAULT_MODEL)]
        model: String,
    },
    /// The built-in templates, whether this machine has the GStreamer elements each needs, and their encoders.
    List,
}

pub fn run(args: PipelinesArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PipelinesCommand::Show { source, pipeline, annotate, bare, model } => {
            show(&model, &source, pipeline.as_deref(), annotate, bare)
        }
        PipelinesCommand::List => {
            for name in gst::builtin_names() {
                let t = PipelineTemplate::builtin(name).expect("built-in templates parse (tested)");
                let missing = t.missing_elements(&GstRegistry);
                if missing.is_empty() {
                    println!("{name:<10} usable here (needs: {})", needs(&t));
                } else {
                    println!("{name:<10} not usable here: missing {}", missing.join(", "));
                }
                println!("{:<10} encoders: {}", "", encoders_here(&t));
            }
            let auto = gst::select(&PipelineChoice::Auto, &GstRegistry)?;
            println!("auto picks: {}", auto.name);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Which element encodes for each purpose, if the template's encoder can be made here.
fn encoders_here(t: &PipelineTemplate) -> String {
    [EncoderPurpose::Record, EncoderPurpose::Live]
        .iter()
        .map(|&purpose| match gst::encoder_bin(t.encoder(purpose), &t.name, purpose) {
            Ok(bin) => {
                let name = gst::element::find_element_by_klass(&bin, "Encoder").unwrap_or_else(|| "?".into());
                format!("{purpose} {name}")
            }
            Err(_) => format!("{purpose} not available here (watch would use the generic software encoder)"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn needs(t: &PipelineTemplate) -> String {
    if t.requires.is_empty() { "nothing special".into() } else { t.requires.join(", ") }
}

fn show(model: &str, source: &str, choice: Option<&str>, annotate: bool, bare: bool) -> anyhow::Result<ExitCode> {
    let spec = SourceSpec::parse_unchecked(source, 0).map_err(|e| UsageError(e.to_string()))?;
    let choice = PipelineChoice::from_arg(choice);
    // A built-in template is shown even where its elements are missing: checking the Jetson pipeline from a laptop
    // is what this is for. `watch` refuses it here.
    let (template, missing) = match gst::select(&choice, &GstRegistry) {
        Ok(t) => (t, Vec::new()),
        Err(PipelineError::MissingElements { name, missing }) => match PipelineTemplate::builtin(&name) {
            Some(t) => (t, missing),
            None => return Err(UsageError(format!("unknown pipeline template `{name}`")).into()),
        },
        Err(e) => return Err(UsageError(e.to_string()).into()),
    };
    let (settings, model_note) = frame_settings(model, annotate);
    // With the motion gate's branch where `watch` runs it by default (live sources).
    let settings = FrameSettings { motion: lookout::source::MotionSettings::default_for(spec.is_live()), ..settings };
    let description = launch::render(&template, &spec, &settings, Credentials::Redact)
        .map_err(|e| UsageError(format!("source `{}`: {e}", spec.display)))?;
    if bare {
        println!("{description}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("source:   {} ({}, {})", spec.display, spec.kind, if spec.is_live() { "live" } else { "file" });
    let mut reason = why(&choice, &template, &GstRegistry);
    if !missing.is_empty() {
        reason.push_str(&format!(
            "; NOT usable here, missing {}: shown as it would run where they are",
            missing.join(", ")
        ));
    }
    println!("template: {} ({reason})", template.name);
    println!("model:    {model_note}");
    if let Some(decoder) = spec.path().filter(|_| spec.kind == SourceKind::File).and_then(decoder_for_file) {
        println!("decoder:  {decoder}");
    }
    for (label, purpose, what) in [
        ("encoder:  ", EncoderPurpose::Record, "--annotate video and clips"),
        ("live:     ", EncoderPurpose::Live, "--serve-rtsp"),
    ] {
        let fragment = template.encoder(purpose);
        let note = match gst::encoder_bin(fragment, &template.name, purpose) {
            Ok(_) => what.to_string(),
            Err(_) => format!("{what}; not available here, watch would use: {}", gst::generic_encoder(purpose)),
        };
        println!("{label}{fragment}  ({note})");
    }
    println!("\n{description}\n");
    println!("To run it alone (appsinks replaced by fakesink, which prints nothing; -v prints the negotiated caps):");
    println!("  gst-launch-1.0 -v {}", shell_quote(&launchable(&description)));
    if spec.display != spec.secret_uri() {
        println!("The URL's credentials were replaced by ***: put yours back in before running it.");
    }
    Ok(ExitCode::SUCCESS)
}

/// Why this template: for `auto`, which elements the templates before it lack.
fn why(choice: &PipelineChoice, chosen: &PipelineTemplate, registry: &dyn ElementRegistry) -> String {
    match choice {
        PipelineChoice::Auto => {
            let mut skipped = Vec::new();
            for name in gst::builtin_names() {
                if name == chosen.name {
                    break;
                }
                if let Some(t) = PipelineTemplate::builtin(name) {
                    skipped.push(format!("{name} needs {} (missing here)", t.missing_elements(registry).join(", ")));
                }
            }
            if skipped.is_empty() {
                format!("auto: its elements are installed: {}", needs(chosen))
            } else {
                format!("auto; {}", skipped.join("; "))
            }
        }
        PipelineChoice::Builtin(_) => "--pipeline".into(),
        PipelineChoice::File(path) => format!("--pipeline {}", path.display()),
    }
}

/// Which decoder decodebin would plug for a local file here: the highest-ranked video decoder that takes the
/// file's video caps, as the discoverer reports them. `None` when the file cannot be read.
fn decoder_for_file(path: &std::path::Path) -> Option<String> {
    let caps = lookout::source::probe_video_caps(path)?;
    // The full caps hold the codec data in hex: the media type says enough.
    let media = caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
    Some(match gst::element::decoder_for_caps(&caps) {
        Some(name) => format!("{name} (what decodebin picks here for {media}; `watch` reports the one that ran)"),
        None => format!("no decoder installed here takes {media}: install the GStreamer plugin for it"),
    })
}

/// The model-branch shape `watch` would use with `-m`, without downloading anything: the model's own size when
/// it is here, else OWL-ViT's 768x768.
fn frame_settings(model: &str, annotate: bool) -> (FrameSettings, String) {
    let base = FrameSettings { full_frames: annotate, ..FrameSettings::default() };
    let opened = models::resolve(model, &OnMissing::Fail).ok().and_then(|dir| ModelDir::open(&dir).ok());
    match opened {
        Some(m) => {
            let scale = lookout::infer::frame_scale_of(&m);
            let shape = match scale {
                FrameScale::Stretch { width, height } => format!("{width}x{height}"),
                FrameScale::FitLonger { side } => format!("longer side {side}, padded by the model"),
                FrameScale::FitWithin { max_width, max_height } => {
                    format!("within {max_width}x{max_height} keeping the aspect ratio, padded by the model")
                }
                FrameScale::ShortestEdge { shortest_edge, longest_edge } => {
                    format!("shorter side {shortest_edge}, longer at most {longest_edge}, padded by the model")
                }
            };
            (lookout::watch::frame_settings_for(scale, base), format!("{} ({shape})", m.name))
        }
        None => {
            let (w, h) = base.model_size;
            (base, format!("{model} is not downloaded here; showing the default {w}x{h} model branch"))
        }
    }
}

/// The description with each `appsink` turned into a `fakesink` (dropping the appsink-only properties), so that
/// gst-launch-1.0 can run it without lookout pulling frames.
fn launchable(description: &str) -> String {
    let mut out = Vec::new();
    let mut in_appsink = false;
    for token in description.split(' ') {
        if token == "appsink" {
            in_appsink = true;
            out.push("fakesink");
            continue;
        }
        if token == "!" || token.ends_with('.') {
            in_appsink = false;
        }
        if in_appsink && (token.starts_with("max-buffers=") || token.starts_with("drop=")) {
            continue;
        }
        out.push(token);
    }
    out.join(" ")
}

/// Single-quoted for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launchable_swaps_appsinks_for_fakesinks() {
        let d = "a ! tee name=t  t. ! queue ! appsink name=model_sink sync=false enable-last-sample=false \
                 max-buffers=1 drop=true  t. ! queue ! appsink name=full_sink sync=false max-buffers=4 drop=false";
        assert_eq!(
            launchable(d),
            "a ! tee name=t  t. ! queue ! fakesink name=model_sink sync=false enable-last-sample=false  t. ! queue ! \
             fakesink name=full_sink sync=false"
        );
        assert_eq!(shell_quote("a 'b'"), r"'a '\''b'\'''");
    }

    #[test]
    fn launchable_line_parses_with_gstreamer() {
        let spec = SourceSpec::parse_unchecked("rtsp://u:secret@cam.example/live", 0).unwrap();
        let t = PipelineTemplate::builtin("generic").unwrap();
        let settings = FrameSettings { full_frames: true, ..FrameSettings::default() };
        let d = launch::render(&t, &spec, &settings, Credentials::Redact).unwrap();
        assert!(!d.contains("secret"));
        gstreamer::init().unwrap();
        let launched = launchable(&d);
        assert!(!launched.contains("appsink"), "{launched}");
        gstreamer::parse::launch(&launched).expect("the gst-launch line parses");
    }

    struct Fake(&'static [&'static str]);
    impl ElementRegistry for Fake {
        fn has(&self, e: &str) -> bool {
            self.0.contains(&e)
        }
    }

    #[test]
    fn auto_explains_why_jetson_was_passed_over() {
        let generic = PipelineTemplate::builtin("generic").unwrap();
        let w = why(&PipelineChoice::Auto, &generic, &Fake(&["nvvidconv"]));
        assert_eq!(w, "auto; jetson needs nvv4l2decoder (missing here)");
        let jetson = PipelineTemplate::builtin("jetson").unwrap();
        let w = why(&PipelineChoice::Auto, &jetson, &Fake(&["nvv4l2decoder", "nvvidconv"]));
        assert!(w.contains("nvv4l2decoder, nvvidconv"), "{w}");
    }
}
