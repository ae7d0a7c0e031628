//! `lookout models`: list, fetch and inspect models.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use lookout::models::{self, CacheStatus, FetchOptions, Manifest, OnMissing, Progress};

use super::Common;

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// The models of the manifest, and whether each is already downloaded.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Download a model of the manifest into the cache, checking every file's size and SHA-256.
    Fetch {
        /// A name from `lookout models list`.
        name: String,
        /// Download from this server instead of the Hub (also: LOOKOUT_HF_ENDPOINT).
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
    },
    /// What a model directory holds: architecture, graphs, layouts, missing files.
    Info {
        /// A model directory, or a name of the manifest that is already downloaded.
        dir: String,
        #[arg(long)]
        json: bool,
    },
    /// Build a model's sessions ahead of time (TensorRT engines: `--device tensorrt`), so the first frame does
    /// not wait for them.
    Prepare(super::prepare::PrepareArgs),
}

pub fn run(common: &Common, args: ModelsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ModelsCommand::Prepare(args) => super::prepare::run(common, args),
        ModelsCommand::List { json } => {
            let listed = models::list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else {
                println!("{:<34} {:<17} {:<11} description", "name", "family", "status");
                for m in &listed {
                    let status = match m.status {
                        CacheStatus::Complete => "downloaded",
                        CacheStatus::Partial => "partial",
                        CacheStatus::Absent => "-",
                    };
                    println!("{:<34} {:<17} {:<11} {}", m.entry.name, m.entry.family, status, m.entry.description);
                }
                if let Some(first) = listed.first() {
                    println!("\ncache: {}", first.dir.parent().map(|p| p.display().to_string()).unwrap_or_default());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Fetch { name, endpoint } => {
            let manifest = Manifest::embedded()?;
            let entry = manifest.entry(&name)?;
            let dir = models::fetch(entry, endpoint.as_deref(), Progress::Auto)
                .with_context(|| format!("fetching {name}"))?;
            println!("{}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Info { dir, json } => {
            let path = models::resolve(&dir, &OnMissing::Fail)?;
            let info = models::info(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!("{info}");
            }
            Ok(if info.is_usable() { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
    }
}

/// Resolves a manifest name to its directory in the cache, fetching it on first use.
pub fn resolve_name(name: &str) -> anyhow::Result<PathBuf> {
    let options = FetchOptions { progress: Progress::Auto, ..FetchOptions::default() };
    Ok(models::resolve(name, &OnMissing::Fetch(options))?)
}
