//! `lookout export`: a span of a source's recording as one MP4 (see `lookout::sink::recording::export`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use lookout::sink::recording::export::{self, TimeArg};

use super::UsageError;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The output directory of `lookout watch`
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub out: PathBuf,
    /// The source's name (its directory in DIR)
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// Start: seconds of stream time as in events.jsonl (12.5), or a UTC time (2026-12-06T10:52:16Z)
    #[arg(long, value_name = "T")]
    pub from: String,
    /// End: as --from
    #[arg(long, value_name = "T")]
    pub to: String,
    /// The lookout run the seconds are in [default: the newest recorded]
    #[arg(long, value_name = "N")]
    pub run: Option<u64>,
    /// The MP4 to write; never overwritten [default: DIR/NAME/export-r<run>-<from>-<to>.mp4]
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    gstreamer::init().map_err(|e| anyhow::anyhow!("cannot initialise GStreamer: {e}"))?;
    let from = TimeArg::parse(&args.from).map_err(|e| UsageError(format!("--from: {e}")))?;
    let to = TimeArg::parse(&args.to).map_err(|e| UsageError(format!("--to: {e}")))?;
    let encoder = lookout::gst::generic_encoder(lookout::gst::EncoderPurpose::Record);
    let done = export::export(&args.out, &args.source, from, to, args.run, args.output.clone(), &encoder)
        .map_err(|e| UsageError(e.to_string()))?;
    println!("{}", done.path.display());
    eprintln!(
        "exported run {} from {:.3} s to {:.3} s (stream time){}",
        done.run,
        done.first_s,
        done.end_s,
        if done.gaps > 0 { format!(", with {} gaps (not recorded)", done.gaps) } else { String::new() }
    );
    Ok(ExitCode::SUCCESS)
}
