//! `lookout retention`: one retention pass over an output directory (what `watch` does every `interval_s`), for
//! deploy/lookout-retention.timer and for cleaning up by hand.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;

use lookout::config::Config;
use lookout::sink::retention::{self, RetentionSettings};

use super::UsageError;

#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// The output directory [default: [output] dir of --config, else out]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A TOML config: its [retention] and [output] dir are used.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Keep the directory under this many GB (10^9 bytes). Overrides [retention] max_disk_gb [default: no limit]
    #[arg(long, value_name = "GB", allow_negative_numbers = true)]
    pub max_disk_gb: Option<f64>,
    /// Delete clips and snapshots older than this many days. Overrides [retention] max_age_days [default: keep]
    #[arg(long, value_name = "DAYS", allow_negative_numbers = true)]
    pub max_age_days: Option<f64>,
}

pub fn run(args: RetentionArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| UsageError(e.to_string()))?,
        None => Config::default(),
    };
    let out = args.out.clone().or(config.output.dir.clone()).unwrap_or_else(|| PathBuf::from("out"));
    let Some(mut settings) =
        RetentionSettings::from_config(&out, &config.retention, args.max_disk_gb, args.max_age_days)
            .map_err(|e| UsageError(e.to_string()))?
    else {
        return Err(UsageError(
            "no retention limit: give --max-disk-gb or --max-age-days, or [retention] in --config".into(),
        )
        .into());
    };
    if let Some(dir) = &config.alerts.spool.dir {
        settings.protect.push(dir.clone());
    }
    let stats = retention::enforce(&settings, SystemTime::now()).map_err(|e| UsageError(e.to_string()))?;
    eprintln!(
        "retention {}: deleted {} old files and {} for space, {} bytes freed, {} bytes now{}",
        out.display(),
        stats.deleted_old,
        stats.deleted_for_space,
        stats.bytes_freed,
        stats.bytes_now,
        if stats.errors > 0 { format!(", {} files could not be deleted", stats.errors) } else { String::new() }
    );
    Ok(if stats.errors > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
