//! The people's commands — `upgrade`, `rollback`, `status`, `history` — that talk to a
//! cluster running the Fluxgate operator; also what `kubectl fluxgate …` runs. Rendering
//! lives in `view` (pure); the modules here read and write the cluster.

pub mod cluster;
pub mod follow;
pub mod history;
pub mod rollback;
pub mod status;
pub mod upgrade;
pub mod view;

use std::fmt;
use std::io::Write;

/// How a followed operation ended without succeeding; `main` exits with [`Outcome::code`]
/// after printing the message.
#[derive(Debug)]
pub struct Outcome {
    /// The process exit code.
    pub code: u8,
    /// What happened and what to do.
    pub message: String,
}

/// Exit code when the operation ended `Failed`.
pub const EXIT_FAILED: u8 = 3;
/// Exit code when the upgrade failed and was rolled back.
pub const EXIT_ROLLED_BACK: u8 = 4;
/// Exit code when the upgrade failed and was frozen for a person.
pub const EXIT_FROZEN: u8 = 5;

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Outcome {}

/// Standard output was closed (`fluxgate history db | head -3`): the command stops quietly,
/// with the exit code a shell gives a process ended by SIGPIPE.
#[derive(Debug)]
pub struct ClosedOutput;

/// Exit code after [`ClosedOutput`] (128 + SIGPIPE).
pub const EXIT_CLOSED_OUTPUT: u8 = 141;

impl fmt::Display for ClosedOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for ClosedOutput {}

/// Writes `text` as is to standard output, flushed (progress is live even through a pipe).
pub fn say_text(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => anyhow::Error::new(ClosedOutput),
            _ => anyhow::Error::new(e).context("writing to standard output"),
        })
}

/// Writes one line to standard output.
pub fn say(line: &str) -> anyhow::Result<()> {
    say_text(&format!("{line}\n"))
}
