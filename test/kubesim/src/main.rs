//! `kubesim serve`: run the simulator as a process for kubectl, Helm or a demo.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "kubesim",
    about = "A Kubernetes API server simulator that kube-rs and kubectl use unchanged"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve until SIGINT/SIGTERM.
    Serve {
        /// Address to bind; port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
        /// Where to write a kubeconfig for this server.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// CRD (or any object) YAML files or directories to load at start; repeatable.
        #[arg(long)]
        crds: Vec<PathBuf>,
        /// Serve only the built-in Kubernetes kinds: without it, the Flux and VolumeSnapshot
        /// kinds are served too (from CRDs embedded in kubesim).
        #[arg(long)]
        bare: bool,
        /// Watch events kept per resource.
        #[arg(long, default_value_t = 1000)]
        history: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { command } = Cli::parse();
    let Command::Serve {
        addr,
        kubeconfig,
        crds,
        bare,
        history,
    } = command;
    let config = kubesim::Config {
        history_limit: history,
        ..Default::default()
    };
    let sim = kubesim::KubeSim::start_with(config, addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind {addr}: {e}"))?;
    if !bare {
        let loaded = sim.load_third_party_crds()?;
        eprintln!(
            "serving the Flux and VolumeSnapshot kinds ({} CRDs built in)",
            loaded.len()
        );
    }
    for path in &crds {
        let loaded = sim.load_yaml(path)?;
        eprintln!("loaded {} object(s) from {}", loaded.len(), path.display());
    }
    std::fs::write(&kubeconfig, kubesim::kubeconfig_yaml(&sim.base_url()))
        .map_err(|e| anyhow::anyhow!("cannot write kubeconfig {}: {e}", kubeconfig.display()))?;
    println!("kubesim listening on {}", sim.base_url());
    println!("kubeconfig written to {}", kubeconfig.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    sim.shutdown();
    Ok(())
}
