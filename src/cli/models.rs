//! `lookout models`: list, fetch and inspect models.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::Common;

#[derive(Debug, Args)]
pub struct ModelsArgs {}

pub fn run(_common: &Common, _args: ModelsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}

pub fn resolve_name(name: &str) -> anyhow::Result<PathBuf> {
    anyhow::bail!("{name}: not yet")
}
