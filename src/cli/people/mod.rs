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
