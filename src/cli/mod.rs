//! Subcommands. `anyhow` is used here and nowhere in the library.

pub mod eval;
pub mod export;
pub mod locate;
pub mod models;
pub mod pipelines;
pub mod prepare;
pub mod retention;
pub mod session;
pub mod values;
pub mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Find what a sentence describes in an image or a live video.
#[derive(Debug, Parser)]
#[command(name = "lookout", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Log verbosity: the only flags every subcommand takes.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(long, global = true)]
    pub quiet: bool,
}

/// `-q`: the queries of `locate` and `watch`.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Queries")]
pub struct QueryArgs {
    /// What to find, as a sentence. Repeat for several queries: -q "a red car" -q "a dog".
    #[arg(short = 'q', long = "query", value_name = "TEXT")]
    pub queries: Vec<String>,
}

/// Which model runs, and where: the subcommands that load a model (`locate`, `watch`, `models prepare`).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Model")]
pub struct ModelArgs {
    /// A model directory (Hugging Face layout) or a model name from `lookout models list`.
    #[arg(short = 'm', long = "model", value_name = "DIR|NAME", default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Graph layout to use when the model directory has both: "split" (queries encoded once) or "hf"; "hf:VARIANT"
    /// runs onnx/model_VARIANT.onnx, e.g. hf:quantized or hf:fp16 (`lookout models info` lists them)
    /// [default: split when the directory has it]
    #[arg(long, value_name = "hf|split|hf:VARIANT")]
    pub layout: Option<lookout::infer::LayoutChoice>,
    /// Arithmetic of the image side: "fp32", or "int8" (about 2x faster on a CPU with VNNI; the int8 graph of the
    /// layout: onnx/image_embedder_int8.onnx, onnx/detector_int8.onnx or onnx/model_quantized.onnx; make it with
    /// models/quantize_int8.py) [default: fp32]
    #[arg(long, value_name = "fp32|int8")]
    pub precision: Option<lookout::infer::Precision>,
    /// Threads ONNX Runtime uses inside one operator (0: one per core).
    #[arg(long, value_name = "N", default_value_t = lookout::infer::runtime::DEFAULT_INTRA_THREADS)]
    pub intra_threads: usize,
    /// --device, --text-device, --graph-opt-level and the TensorRT flags.
    #[command(flatten)]
    pub session: session::SessionArgs,
}

/// The model used when `-m` is not given.
pub const DEFAULT_MODEL: &str = "owlvit-base-patch32";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Find each query in still images: boxes, scores, crops and an annotated copy.
    Locate(locate::LocateArgs),
    /// Search every frame of files, streams and cameras for standing queries: events, annotated video.
    Watch(Box<watch::WatchArgs>),
    /// List, download, inspect and prepare models.
    Models(models::ModelsArgs),
    /// Show the GStreamer pipeline a source would run with, and the templates this machine can run.
    Pipelines(pipelines::PipelinesArgs),
    /// Measure models: on a referring-expression set (RefCOCOg or your own JSONL), or a run's events against
    /// annotated footage.
    Eval(eval::EvalArgs),
    /// Delete the oldest clips and snapshots of an output directory to keep it within [retention] limits.
    Retention(retention::RetentionArgs),
    /// Write a span of a source's recording as one MP4.
    Export(export::ExportArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Locate(args) => locate::run(args),
        Command::Watch(args) => watch::run(*args),
        Command::Models(args) => models::run(args),
        Command::Pipelines(args) => pipelines::run(args),
        Command::Retention(args) => retention::run(args),
        Command::Export(args) => export::run(args),
        Command::Eval(args) => eval::run(args),
    }
}

pub fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},ort=warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        .with_target(false)
        .with_ansi(colour_on_stderr())
        .try_init();
}

/// Colour codes only on a terminal: files, pipes and the journal get plain text. `NO_COLOR` (no-color.org) and
/// `TERM=dumb` turn it off on a terminal too.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    std::io::stderr().is_terminal() && !no_color && !dumb
}

/// The progress bar drawn on stderr, if any.
static BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Sets (or, with `None`, forgets) the progress bar that log lines and notices are written above.
pub fn draw_above(bar: Option<indicatif::ProgressBar>) {
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = bar;
}

/// Standard error, written above the progress bar while one is drawn: the bar is cleared, the text written and
/// the bar drawn again below it, so a log line never ends up glued to (or erased by) the bar.
pub struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Each log line comes here whole (tracing formats it first), so it is written in one go.
        let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A line on stderr after Ctrl-C, which the terminal echoed as `^C` where the cursor was: above the progress bar
/// if one is drawn (clearing the bar clears the `^C`), or else on a new line.
pub fn interrupt_notice(line: &str) {
    use std::io::Write;
    let drawn = BAR.lock().unwrap_or_else(|e| e.into_inner()).is_some();
    let _ = writeln!(Stderr, "{}{line}", if drawn { "" } else { "\n" });
}

/// "outer: inner: innermost", without repeating a message that the outer one already contains.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

/// Reports a command line that clap refused, on one line ("error: invalid value '1.5' for '--threshold <T>': must
/// be between 0 and 1"), with exit code 2, as every other bad input is reported. Help and version requests are
/// printed as clap prints them.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind as K;
    if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand) {
        e.exit();
    }
    eprintln!("{}", one_line(&e.to_string()));
    ExitCode::from(2)
}

/// clap's message on one line: the lines of its text joined, tips and usage in brackets, without the closing
/// "For more information, try '--help'".
fn one_line(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("For more information")) {
        if let Some(usage) = line.strip_prefix("Usage: ") {
            out.push_str(&format!(" (usage: {usage})"));
        } else if line.starts_with("tip: ") {
            out.push_str(&format!(" ({line})"));
        } else {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(line);
        }
    }
    if !out.starts_with("error:") {
        out.insert_str(0, "error: ");
    }
    out
}

/// Makes sure `--out` is a directory lookout can write in, creating it if needed, before any model loads: a
/// mistake shows at once, as a usage error (exit code 2), and nothing is printed as if it had been saved.
pub fn writable_out_dir(dir: &Path) -> Result<(), UsageError> {
    let refuse = |what: &str, e: std::io::Error| {
        UsageError(format!("--out {}: {what} ({e}); give a directory you can write in", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| refuse("cannot create this directory", e))?;
    // Creating a file is the only sure test (permissions, read-only mounts, ACLs, a directory in /proc).
    let probe = dir.join(format!(".lookout-write-test-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| refuse("cannot write in this directory", e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// A usage error: bad input the user can fix (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Exit code 2 for bad input (a file, a query, a model directory), 1 for everything else.
pub fn exit_code_for(e: &anyhow::Error) -> u8 {
    use lookout::infer::InferError;
    for cause in e.chain() {
        if cause.is::<UsageError>() {
            return 2;
        }
        if let Some(we) = cause.downcast_ref::<lookout::watch::WatchError>() {
            use lookout::watch::WatchError as W;
            if matches!(we, W::NoSources | W::NoQueries | W::QueryWithoutSource { .. } | W::AllSourcesFailed(_)) {
                return 2;
            }
        }
        // The output directory cannot be made or written in: the user gave a path that does not work.
        if let Some(se) = cause.downcast_ref::<lookout::sink::SinkError>() {
            use lookout::sink::SinkError as S;
            if matches!(se, S::CreateDir { .. } | S::Open { .. } | S::Write { .. } | S::Rename { .. }) {
                return 2;
            }
        }
        if let Some(me) = cause.downcast_ref::<lookout::models::ModelsError>() {
            use lookout::models::ModelsError as M;
            return match me {
                M::UnknownModel { .. } | M::NotADirectory { .. } | M::NotFetched { .. } | M::NeedsExport { .. } => 2,
                _ => 1,
            };
        }
        if let Some(ie) = cause.downcast_ref::<InferError>() {
            return match ie {
                InferError::EmptyQuery
                | InferError::NoQueries
                | InferError::Query { .. }
                | InferError::Tokenizer { .. }
                | InferError::MissingFile { .. }
                | InferError::BadFile { .. }
                | InferError::Model { .. } => 2,
                _ => 1,
            };
        }
    }
    1
}

/// Resolves `-m`: an existing directory is used as it is, a manifest name is fetched on first use.
pub fn resolve_model(spec: &str) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(spec);
    if path.is_dir() {
        return Ok(path);
    }
    models::resolve_name(spec)
}
