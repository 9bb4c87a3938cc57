//! The `fluxgate` command line: argument parsing and dispatch to each subcommand.

pub mod manifest;
pub mod run;

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
    Crd(CrdArgs),
    /// Run the operator: connect to the cluster, check the APIs it needs and serve
    /// /healthz, /readyz and /metrics until SIGTERM or SIGINT.
    Run(run::RunArgs),
    /// Run the whole system on an embedded simulated cluster: an upgrade, then a failing
    /// upgrade that rolls back on its own, every phase printed as it happens.
    Demo(crate::demo::DemoArgs),
    /// Print the version of this binary.
    Version,
    /// Read or change a version field in a YAML file, exactly as Fluxgate would.
    Manifest(manifest::ManifestArgs),
}

/// Arguments of `fluxgate crd`.
#[derive(Debug, clap::Args)]
pub struct CrdArgs {
    /// Write one file per kind into this directory (as checked in under `crds/`) instead of
    /// printing them.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

/// Runs the parsed command line; the returned error is printed by `main`.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crd(args) => crd(&args),
        Command::Run(args) => run::run(args).await,
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Version => {
            println!("fluxgate {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Manifest(args) => manifest::run(&args),
    }
}

fn crd(args: &CrdArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    match &args.dir {
        None => print!("{}", crate::api::crds_yaml()?),
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
            for (file, crd) in crate::api::crds() {
                let path = dir.join(file);
                std::fs::write(&path, crate::api::crd_yaml(&crd)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
    }
    Ok(())
}
