//! `lookout models`: list, fetch and inspect models.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use lookout::models::{self, CacheStatus, FetchOptions, Manifest, OnMissing, Progress};

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

pub fn run(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ModelsCommand::Prepare(args) => super::prepare::run(args),
        ModelsCommand::List { json } => {
            let listed = models::list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else {
                let rows: Vec<[String; 4]> = listed
                    .iter()
                    .map(|m| {
                        let status = match m.status {
                            CacheStatus::Complete => "downloaded",
                            CacheStatus::Partial => "partial",
                            CacheStatus::Absent => "-",
                        };
                        [m.entry.name.clone(), m.entry.family.to_string(), status.into(), m.entry.description.clone()]
                    })
                    .collect();
                print!("{}", table(["name", "family", "status", "description"], &rows));
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
                // The report ends its last line or not depending on what it holds: a shell prompt never follows
                // it on the same line.
                let text = info.to_string();
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
            }
            Ok(if info.is_usable() { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
    }
}

/// Columns padded to their widest cell (counted in characters), the last one not padded.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(str::to_string);
    for row in std::iter::once(&header).chain(rows) {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<0$}  ", widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

/// Resolves a manifest name to its directory in the cache, fetching it on first use.
pub fn resolve_name(name: &str) -> anyhow::Result<PathBuf> {
    let options = FetchOptions { progress: Progress::Auto, ..FetchOptions::default() };
    Ok(models::resolve(name, &OnMissing::Fetch(options))?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_columns_line_up() {
        let rows = [["a-long-name".to_string(), "x".into()], ["b".into(), "yy".into()]];
        assert_eq!(super::table(["name", "what"], &rows), "name         what\na-long-name  x\nb            yy\n");
    }
}
