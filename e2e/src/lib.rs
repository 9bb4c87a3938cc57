//! e2e: end-to-end stories for Fluxgate, run through the real controller loop against
//! kubesim and the simulated world (`tests/`), the checks the invariant, crash and fault
//! tests share (`checks`), and the benchmarks that measure it (`src/bin/`). Running the
//! stories against a real cluster is not built yet.

pub mod checks;
