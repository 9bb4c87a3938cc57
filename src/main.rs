//! The `fluxgate` binary: parses the command line and reports errors without a stack trace.

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let cli = fluxgate::cli::parse_from(std::env::args_os());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(fluxgate::cli::dispatch(cli));
    // A blocking task still running (a git transfer past its deadline) must not keep the
    // process alive after the work is done.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `fluxgate … | head`: stop quietly, as a process killed by SIGPIPE would.
        Err(err) if err.is::<fluxgate::cli::people::ClosedOutput>() => {
            ExitCode::from(fluxgate::cli::people::EXIT_CLOSED_OUTPUT)
        }
        Err(err) => {
            eprintln!("error: {}", fluxgate::cli::error_message(&err));
            // A followed operation that ended without succeeding has its own exit code.
            let code = err
                .downcast_ref::<fluxgate::cli::people::Outcome>()
                .map_or(1, |outcome| outcome.code);
            ExitCode::from(code)
        }
    }
}
