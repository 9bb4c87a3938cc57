//! e2e: end-to-end stories for Fluxgate, run through the real controller loop against
//! kubesim and the simulated world (or a real cluster when `FLUXGATE_E2E_KUBECONFIG` is
//! set), and the benchmarks that measure it.
