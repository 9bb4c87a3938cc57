//! e2e: end-to-end stories for Fluxgate, run through the real controller loop against
//! kubesim and the simulated world (`tests/`), the benchmarks that measure it
//! (`src/bin/`), and the Helm chart rendered with real Helm (`chart`). Running the stories
//! against a real cluster is not built yet.

pub mod chart;
