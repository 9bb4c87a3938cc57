//! The `fluxgate` command line: argument parsing and dispatch to each subcommand.

pub mod manifest;
pub mod people;
pub mod run;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;

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
    Demo(DemoArgs),
    /// Print the version of this binary.
    Version,
    /// Read or change a version field in a YAML file, exactly as Fluxgate would.
    Manifest(manifest::ManifestArgs),
    /// Upgrade an app: create an UpgradeRequest (refused up front for a version that was
    /// rolled back before, unless --force) and, with --wait, follow it phase by phase.
    Upgrade(people::upgrade::UpgradeArgs),
    /// Undo an upgrade: create a RollbackRequest (volumes restored, Git reverted) and, with
    /// --wait, follow it phase by phase.
    Rollback(people::rollback::RollbackArgs),
    /// Show the apps: versions, available updates, failed versions, readiness, the
    /// operation holding each, and Flux objects left suspended; one app in detail.
    Status(people::status::StatusArgs),
    /// Show an app's past upgrades and rollbacks with outcome, versions, snapshots, commit
    /// and duration.
    History(people::history::HistoryArgs),
}

/// The file name under which the binary runs as a kubectl plugin (`kubectl fluxgate …`).
pub const KUBECTL_PLUGIN_NAME: &str = "kubectl-fluxgate";

/// Whether the program was invoked as the kubectl plugin (its argv\[0\] file name is
/// `kubectl-fluxgate`).
pub fn invoked_as_kubectl_plugin(argv0: &std::ffi::OsStr) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|name| name == KUBECTL_PLUGIN_NAME)
}

/// Parses the command line (exits with usage on errors, like clap). As `kubectl-fluxgate`
/// the subcommands are the same; only help and usage say `kubectl fluxgate`.
pub fn parse_from<I, T>(args: I) -> Cli
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = Cli::command();
    if args
        .first()
        .is_some_and(|argv0| invoked_as_kubectl_plugin(argv0))
    {
        command = command
            .name("kubectl fluxgate")
            .bin_name("kubectl fluxgate");
    }
    let matches = command.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Arguments of `fluxgate crd`.
#[derive(Debug, clap::Args)]
pub struct CrdArgs {
    /// Write one file per kind into this directory (as checked in under `crds/`) instead of
    /// printing them.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

/// Arguments of `fluxgate demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the simulated cluster running afterwards and print a kubeconfig to explore it
    /// with kubectl (stop with Ctrl-C).
    #[arg(long)]
    pub keep: bool,
}

#[cfg(feature = "demo")]
async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    crate::demo::run(args).await
}

/// The operator's image is built without the simulated world; say where the demo is.
#[cfg(not(feature = "demo"))]
async fn demo(_: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "this fluxgate was built without the simulated cluster (cargo feature `demo`, left out \
         of the container image): run the demo from a checkout with `cargo run -- demo`, or \
         install it with `cargo install` (the feature is on by default)"
    )
}

/// Runs the parsed command line; the returned error is printed by `main`.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crd(args) => crd(&args),
        Command::Run(args) => run::run(args).await,
        Command::Demo(args) => demo(args).await,
        Command::Version => {
            println!("fluxgate {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Manifest(args) => manifest::run(&args),
        Command::Upgrade(args) => people::upgrade::run(args).await,
        Command::Rollback(args) => people::rollback::run(args).await,
        Command::Status(args) => people::status::run(args).await,
        Command::History(args) => people::history::run(args).await,
    }
}

/// An error as the CLI prints it: each cause's sentence, outermost first, joined by ": ".
/// An API server's answer is shown as its message, reason and code
/// ([`crate::cluster::error::describe`]), never as kube's debug dump of it.
pub fn error_message(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = if let Some(kube::Error::Api(_)) = cause.downcast_ref::<kube::Error>() {
            crate::cluster::error::describe(cause)
        } else {
            cause.to_string()
        };
        // A cause whose sentence its wrapper already quotes adds nothing.
        if !parts.last().is_some_and(|outer| outer.ends_with(&text)) {
            parts.push(text);
        }
        if matches!(
            cause.downcast_ref::<kube::Error>(),
            Some(kube::Error::Api(_))
        ) {
            break;
        }
    }
    parts.join(": ")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_print_as_sentences_without_debug_dumps() {
        let api = kube::Error::Api(Box::new(kube::core::Status {
            code: 404,
            message: "upgraderequests.fluxgate.dev \"db-1\" not found".into(),
            reason: "NotFound".into(),
            ..Default::default()
        }));
        let error = anyhow::Error::new(api).context("reading UpgradeRequest apps/db-1");
        assert_eq!(
            error_message(&error),
            "reading UpgradeRequest apps/db-1: upgraderequests.fluxgate.dev \"db-1\" not found (NotFound, HTTP 404)"
        );
        let io = anyhow::Error::new(std::io::Error::other("disk full")).context("cannot write x");
        assert_eq!(error_message(&io), "cannot write x: disk full");
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn as_kubectl_fluxgate_the_subcommands_are_the_same() {
        let cli = parse_from(["/home/me/.local/bin/kubectl-fluxgate", "status", "-A"]);
        assert!(matches!(cli.command, Command::Status(ref a) if a.all_namespaces));
        assert!(invoked_as_kubectl_plugin("kubectl-fluxgate".as_ref()));
        assert!(!invoked_as_kubectl_plugin("/usr/bin/fluxgate".as_ref()));
        let help = {
            let mut command = Cli::command()
                .name("kubectl fluxgate")
                .bin_name("kubectl fluxgate");
            command.render_usage().to_string()
        };
        assert!(help.contains("kubectl fluxgate"), "{help}");
    }

    #[test]
    fn connection_flags_follow_the_subcommand_like_kubectl_plugins_need() {
        let cli = parse_from([
            "fluxgate",
            "upgrade",
            "db",
            "--to",
            "v1.5.0",
            "--wait",
            "-n",
            "apps",
            "--kubeconfig",
            "/tmp/kc",
            "--context",
            "prod",
            "--force",
        ]);
        let Command::Upgrade(args) = cli.command else {
            panic!("not an upgrade: {:?}", cli.command);
        };
        assert_eq!(args.to, vec!["v1.5.0".to_owned()]);
        assert!(args.follow.wait && args.force && !args.dry_run);
        assert_eq!(args.namespace.as_deref(), Some("apps"));
        assert_eq!(
            args.cluster.kubeconfig.as_deref(),
            Some(std::path::Path::new("/tmp/kc"))
        );
        assert_eq!(args.cluster.context.as_deref(), Some("prod"));
    }
}
