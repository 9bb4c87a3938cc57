//! Logs, metrics and the HTTP endpoints (`/healthz`, `/readyz`, `/metrics`) that tell
//! people and machines what Fluxgate is doing.

pub mod http;
pub mod logging;
pub mod metrics;
