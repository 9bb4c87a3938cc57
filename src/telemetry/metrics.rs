//! The Prometheus registry and Fluxgate's metrics (all prefixed `fluxgate_`): operations by
//! result, phase durations, active operations, errors by category, and what the last
//! Renovate input held.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The registry and the metric families; cheap to clone, shared by the controllers and the
/// `/metrics` endpoint.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    operations: Family<Labels, Counter>,
    phase_duration: Family<Labels, Histogram>,
    errors: Family<Labels, Counter>,
    active: Family<Labels, Gauge>,
    renovate_reads: Family<Labels, Counter>,
    renovate_input: Family<Labels, Gauge>,
}

impl Metrics {
    /// Creates the registry: `fluxgate_build_info`, `fluxgate_operations_total{kind,result}`,
    /// `fluxgate_phase_duration_seconds{kind,phase}`, `fluxgate_active_operations{kind}` and
    /// `fluxgate_errors_total{category}`, `fluxgate_renovate_reads_total{result}` and
    /// `fluxgate_renovate_input{count}`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fluxgate");
        let build_info = Family::<Labels, Gauge>::default();
        build_info
            .get_or_create(&labels(&[("version", env!("CARGO_PKG_VERSION"))]))
            .set(1);
        registry.register("build_info", "Fluxgate build information", build_info);
        let operations = Family::<Labels, Counter>::default();
        registry.register(
            "operations",
            "Finished operations by kind and final phase",
            operations.clone(),
        );
        let phase_duration = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.05, 2.0, 16))
        });
        registry.register(
            "phase_duration_seconds",
            "How long each phase took",
            phase_duration.clone(),
        );
        let errors = Family::<Labels, Counter>::default();
        registry.register(
            "errors",
            "Errors met by operations, by category",
            errors.clone(),
        );
        let active = Family::<Labels, Gauge>::default();
        registry.register(
            "active_operations",
            "Requests admitted and not finished (Frozen ones included: they wait for a person)",
            active.clone(),
        );
        for kind in ["UpgradeRequest", "RollbackRequest"] {
            active.get_or_create(&labels(&[("kind", kind)])).set(0);
        }
        let renovate_reads = Family::<Labels, Counter>::default();
        registry.register(
            "renovate_reads",
            "Renovate inputs read, by result: used, or unusable (the last usable one is kept)",
            renovate_reads.clone(),
        );
        let renovate_input = Family::<Labels, Gauge>::default();
        registry.register(
            "renovate_input",
            "What the last Renovate input read held: lines, used, malformed, superseded, \
             deps, skipped_deps, ignored_updates, problems, findings; usable is 1 or 0",
            renovate_input.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            operations,
            phase_duration,
            errors,
            active,
            renovate_reads,
            renovate_input,
        }
    }

    /// Counts a finished operation.
    pub fn operation_finished(&self, kind: &str, result: &str) {
        self.operations
            .get_or_create(&labels(&[("kind", kind), ("result", result)]))
            .inc();
    }

    /// Records how long a phase took.
    pub fn phase_took(&self, kind: &str, phase: &str, seconds: f64) {
        self.phase_duration
            .get_or_create(&labels(&[("kind", kind), ("phase", phase)]))
            .observe(seconds);
    }

    /// Counts an error of a category: a static, low-cardinality name such as `git_auth` or
    /// `api_conflict` (a `Problem`'s `category`), never a free-form reason.
    pub fn error(&self, category: &'static str) {
        self.errors
            .get_or_create(&labels(&[("category", category)]))
            .inc();
    }

    /// Sets how many requests of `kind` are active now.
    pub fn set_active(&self, kind: &str, count: usize) {
        self.active
            .get_or_create(&labels(&[("kind", kind)]))
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Records one read of Renovate's input: whether it was used, and its counts by name.
    pub fn renovate_read(&self, usable: bool, counts: &[(&str, usize)]) {
        let result = if usable { "used" } else { "unusable" };
        self.renovate_reads
            .get_or_create(&labels(&[("result", result)]))
            .inc();
        self.renovate_input
            .get_or_create(&labels(&[("count", "usable")]))
            .set(i64::from(usable));
        for (name, count) in counts {
            self.renovate_input
                .get_or_create(&labels(&[("count", name)]))
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
    }

    /// The metrics in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_are_exposed_with_their_labels() {
        let metrics = Metrics::new();
        metrics.operation_finished("UpgradeRequest", "Succeeded");
        metrics.phase_took("UpgradeRequest", "Snapshot", 1.5);
        metrics.error("git_auth");
        metrics.set_active("RollbackRequest", 2);
        metrics.renovate_read(false, &[("malformed", 3)]);
        let text = metrics.render();
        assert!(
            text.contains(r#"fluxgate_renovate_reads_total{result="unusable"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"fluxgate_renovate_input{count="malformed"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"fluxgate_renovate_input{count="usable"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"fluxgate_operations_total{kind="UpgradeRequest",result="Succeeded"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"fluxgate_phase_duration_seconds_count{kind="UpgradeRequest",phase="Snapshot"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"fluxgate_errors_total{category="git_auth"} 1"#),
            "{text}"
        );
        assert!(text.contains("fluxgate_build_info{version="), "{text}");
        assert!(
            text.contains(r#"fluxgate_active_operations{kind="RollbackRequest"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"fluxgate_active_operations{kind="UpgradeRequest"} 0"#),
            "an idle operator reports zero, not nothing: {text}"
        );
    }
}
