//! The `fluxgate` binary: parses the command line and reports errors without a stack trace.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = fluxgate::cli::Cli::parse();
    match fluxgate::cli::dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
