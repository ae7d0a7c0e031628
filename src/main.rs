//! The `lookout` command. Thin: each subcommand owns its arguments and its `run()` in `cli/`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    lookout::memory::limit_malloc_arenas(lookout::memory::MALLOC_ARENAS);
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => return cli::usage_error(e),
    };
    cli::init_logging(args.log.verbose, args.log.quiet);
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            // One line, the whole chain: "what failed: why".
            eprintln!("error: {}", cli::error_chain(&e));
            ExitCode::from(cli::exit_code_for(&e))
        }
    }
}
