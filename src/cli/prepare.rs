//! `lookout models prepare MODEL --device tensorrt`: builds the model's sessions ahead of time, so that the first
//! camera frame does not wait minutes for TensorRT to build its engines.
//!
//! The engines land in the cache directory that `watch` and `locate` look in (see `infer/device.rs`). The key of
//! that directory includes the precision and the optimisation profile, so give `prepare` the same `--config` (or
//! the same `--trt-*` flags) as `watch`, or `watch` builds its own engines again.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use lookout::config::Config;
use lookout::infer::device::{Device, GraphRole, Provider};
use lookout::infer::{LayoutChoice, ModelDir, runtime};

use super::{ModelArgs, UsageError};

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// A model directory, or a name from `lookout models list` (downloaded first if needed) [default: -m]
    #[arg(value_name = "MODEL", id = "prepare_model")]
    pub model: Option<String>,
    /// The config `watch` will run with: its [model] and [tensorrt] keys decide the engine's precision and batch
    /// range, which are part of the engine cache key.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

/// How often the "still building" line is printed while sessions are built.
const PROGRESS_EVERY: Duration = Duration::from_secs(20);

pub fn run(args: PrepareArgs) -> anyhow::Result<ExitCode> {
    let common = &args.model_args;
    let config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| UsageError(e.to_string()))?,
        None => Config::default(),
    };
    let layout = match (&common.layout, config.model.layout.as_deref()) {
        (Some(l), _) => Some(l.clone()),
        (None, Some(l)) => Some(l.parse::<LayoutChoice>().map_err(UsageError)?),
        (None, None) => None,
    };
    let intra = config.model.intra_threads.unwrap_or(common.intra_threads);
    let opts = common.session.options(intra, &config)?;
    let name = match (&args.model, config.model.name.as_ref()) {
        (Some(m), _) if common.model != super::DEFAULT_MODEL && *m != common.model => {
            return Err(UsageError(format!("two models given: {m} and -m {}; give one", common.model)).into());
        }
        (Some(m), _) => m.clone(),
        // As in `watch`: the config's model unless -m was given.
        (None, Some(c)) if common.model == super::DEFAULT_MODEL => c.clone(),
        (None, _) => common.model.clone(),
    };
    let precision = common.precision.or(config.model.precision);
    let model = ModelDir::open_precision(&super::resolve_model(&name)?, layout.as_ref(), precision)?;
    let graphs: Vec<PathBuf> = model.graphs();
    eprintln!(
        "preparing {} ({} layout, {}, {} graph(s))",
        model.dir.display(),
        model.layout_choice(),
        model.precision_label(),
        graphs.len()
    );
    for g in &graphs {
        let device = opts.device_for(GraphRole::from_path(g));
        let size_mb = std::fs::metadata(g).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);
        eprintln!("  {} ({size_mb:.0} MB): --device {device}", g.display());
    }
    let trt = &opts.tensorrt;
    if graphs.iter().any(|g| matches!(opts.device_for(GraphRole::from_path(g)), Device::TensorRt(_) | Device::Auto)) {
        eprintln!(
            "  TensorRT (if used): fp16 {}, image batch {}..{} (tuned for {}), up to {} queries, workspace {} MiB, \
             cache under {}",
            trt.fp16,
            trt.min_batch,
            trt.max_batch,
            trt.opt_batch,
            trt.max_queries,
            trt.workspace_bytes >> 20,
            trt.cache_root.display()
        );
        eprintln!("  building a TensorRT engine takes minutes (longer on an Orin Nano); it is done once per cache key");
    }

    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let ticker = progress_thread(done.clone(), started);
    let loaded = (|| -> anyhow::Result<()> {
        let mut detector = lookout::infer::load(model.clone(), &opts)?;
        eprintln!("  sessions built in {:.0} s; running each graph once", started.elapsed().as_secs_f64());
        // The first run finishes whatever ONNX Runtime does lazily (and builds engines for graphs without an
        // explicit profile).
        let queries = detector.encode(&["a photo of a person".to_string()])?;
        detector.warm_up(&queries)?;
        Ok(())
    })();
    done.store(true, Ordering::Relaxed);
    if let Some(t) = ticker {
        let _ = t.join();
    }
    loaded.with_context(|| format!("preparing {}", model.dir.display()))?;

    eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());
    let used = runtime::providers_used();
    let mut any_trt = false;
    for g in &graphs {
        let provider = used.iter().rev().find(|(p, _)| p == g).map(|(_, p)| *p);
        match provider {
            Some(p @ Provider::TensorRt(_)) => {
                any_trt = true;
                let (dir, _) = runtime::tensorrt_cache_dir(g, GraphRole::from_path(g), trt).map_err(UsageError)?;
                let engines = engine_files(&dir);
                println!("{}: {p}, engine cache {} ({} file(s))", g.display(), dir.display(), engines.len());
                for (name, bytes) in engines {
                    println!("    {name} ({:.1} MB)", bytes as f64 / 1e6);
                }
            }
            Some(p) => println!("{}: {p} (no engine to build)", g.display()),
            None => println!("{}: not built", g.display()),
        }
    }
    if !any_trt {
        eprintln!("no graph runs on TensorRT, so there was no engine to build; the sessions load and run here");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints "still building" every [`PROGRESS_EVERY`] until `done`; a line, not a spinner, so that it reads well
/// in the journal and between ONNX Runtime's own log lines.
fn progress_thread(done: Arc<AtomicBool>, started: Instant) -> Option<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("prepare-progress".into())
        .spawn(move || {
            let mut next = PROGRESS_EVERY;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if started.elapsed() >= next {
                    eprintln!("  still building ({:.0} s)", started.elapsed().as_secs_f64());
                    next += PROGRESS_EVERY;
                }
            }
        })
        .ok()
}

/// The files in an engine cache directory other than `key.txt`, with their sizes, sorted by name.
fn engine_files(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let len = e.metadata().ok()?.len();
            (name != "key.txt").then_some((name, len))
        })
        .collect();
    out.sort();
    out
}
