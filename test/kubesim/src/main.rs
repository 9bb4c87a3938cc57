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
        history,
    } = command;
    let config = kubesim::Config {
        history_limit: history,
        ..Default::default()
    };
    let sim = kubesim::KubeSim::start_with(config, addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind {addr}: {e}"))?;
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
