//! e2e: end-to-end stories for Fluxgate, run through the real controller loop against
//! kubesim and the simulated world (`tests/`), the checks the invariant, crash and fault
//! tests share (`checks`), the benchmarks that measure it (`src/bin/`), and the Helm chart
//! rendered with real Helm (`chart`). Story (a) also runs against a real cluster when
//! `FLUXGATE_E2E_KUBECONFIG` is set (`tests/real_cluster.rs`, set up as the README says);
//! without it that test reports itself skipped.

pub mod chart;
pub mod checks;
