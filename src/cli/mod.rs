//! The `fluxgate` command line: argument parsing and dispatch to each subcommand.

pub mod manifest;

use clap::{Parser, Subcommand};

/// Fluxgate upgrades Flux-managed applications safely: snapshots, a Git commit and health
/// checks as one unit, with rollbacks that restore data and revert Git together.
#[derive(Debug, Parser)]
#[command(name = "fluxgate", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand of `fluxgate`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the Fluxgate CustomResourceDefinitions as YAML (pipe to `kubectl apply -f -`).
    Crd,
    /// Print the version of this binary.
    Version,
    /// Read or change a version field in a YAML file, exactly as Fluxgate would.
    Manifest(manifest::ManifestArgs),
}

/// Runs the parsed command line; the returned error is printed by `main`.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crd => {
            print!("{}", crate::api::crds_yaml()?);
            Ok(())
        }
        Command::Version => {
            println!("fluxgate {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Manifest(args) => manifest::run(&args),
    }
}
