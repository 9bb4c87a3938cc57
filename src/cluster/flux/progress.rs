//! Has Flux applied our commit? Pure rules over Flux objects' status that never trust a
//! `Ready=True` left over from before our change: progress is judged by revisions and
//! generations, and helm-controller remediation counts as failure.

use super::{GitRepository, HelmRelease, Kustomization};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

/// Where one Flux object stands with respect to our change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The object has applied our change.
    Done,
    /// Not yet; the text says what is still missing, for status messages.
    Waiting(String),
    /// It will not get there: e.g. helm-controller rolled the release back.
    Failed { reason: String, message: String },
}

impl Progress {
    /// Whether the object has applied our change.
    pub fn is_done(&self) -> bool {
        matches!(self, Progress::Done)
    }
}

/// Whether a Flux revision names the commit `sha`: `main@sha1:<sha>`, `sha1:<sha>`, or the
/// legacy `main/<sha>`. Abbreviated SHAs are not accepted.
pub fn revision_is_commit(revision: &str, sha: &str) -> bool {
    if sha.len() < 40 {
        return false;
    }
    revision_commit(revision).eq_ignore_ascii_case(sha)
}

/// The commit a Flux revision names: the digest of `main@sha1:<sha>` or `sha1:<sha>`, or the
/// last part of the legacy `main/<sha>`.
pub fn revision_commit(revision: &str) -> &str {
    match revision.rsplit_once("sha1:") {
        Some((_, digest)) => digest,
        None => revision.rsplit_once('/').map_or(revision, |(_, d)| d),
    }
}

/// Whether the GitRepository's artifact is our commit.
pub fn git_repository_progress(repo: &GitRepository, sha: &str) -> Progress {
    match repo.status.as_ref().and_then(|s| s.artifact.as_ref()) {
        Some(artifact) if revision_is_commit(&artifact.revision, sha) => Progress::Done,
        Some(artifact) => Progress::Waiting(format!(
            "GitRepository {} has revision {}, waiting for {}",
            repo.name_any(),
            artifact.revision,
            short(sha)
        )),
        None => Progress::Waiting(format!(
            "GitRepository {} has no artifact yet",
            repo.name_any()
        )),
    }
}

/// Whether the Kustomization has applied our commit at its current generation.
pub fn kustomization_progress(kustomization: &Kustomization, sha: &str) -> Progress {
    let name = kustomization.name_any();
    let Some(status) = kustomization.status.as_ref() else {
        return Progress::Waiting(format!("Kustomization {name} has no status yet"));
    };
    if !generation_observed(
        kustomization.metadata.generation,
        status.observed_generation,
    ) {
        return Progress::Waiting(format!(
            "Kustomization {name} has not observed its latest spec yet"
        ));
    }
    match status.last_applied_revision.as_deref() {
        Some(revision) if revision_is_commit(revision, sha) => Progress::Done,
        applied => {
            let failing = status
                .last_attempted_revision
                .as_deref()
                .is_some_and(|attempted| revision_is_commit(attempted, sha))
                .then(|| condition(&status.conditions, "Ready"))
                .flatten()
                .filter(|ready| ready.status == "False");
            match failing {
                Some(ready) => Progress::Waiting(format!(
                    "Kustomization {name} failed to apply {}: {}: {}",
                    short(sha),
                    ready.reason,
                    ready.message
                )),
                None => Progress::Waiting(format!(
                    "Kustomization {name} last applied {}, waiting for {}",
                    applied.unwrap_or("nothing"),
                    short(sha)
                )),
            }
        }
    }
}

/// Whether the HelmRelease has acted on its current generation — and, when the upgrade
/// changes the chart, attempted `chart_version` — or has been remediated (a failure).
pub fn helm_release_progress(release: &HelmRelease, chart_version: Option<&str>) -> Progress {
    let name = release.name_any();
    let Some(status) = release.status.as_ref() else {
        return Progress::Waiting(format!("HelmRelease {name} has no status yet"));
    };
    // A remediation of our attempt is a failure even before observedGeneration catches up:
    // with remediation retries left, helm-controller requeues after each rollback
    // (`ErrMustRequeue` in internal/reconcile/atomic_release.go) and its deferred patch
    // then leaves observedGeneration behind until the retries are exhausted — minutes of
    // Helm timeouts. lastAttemptedGeneration and lastAttemptedRevision are written before
    // the action runs, so they say the remediation is about this generation and chart.
    let attempted_ours = generation_observed(
        release.metadata.generation,
        status.last_attempted_generation,
    ) && chart_version.is_none_or(|target| {
        status
            .last_attempted_revision
            .as_deref()
            .is_some_and(|a| same_chart_version(a, target))
    });
    if attempted_ours && let Some((reason, message)) = remediation(release) {
        return Progress::Failed { reason, message };
    }
    // Not while helm-controller is still running the action (`Reconciling=True/Progressing
    // "Running 'upgrade' action with timeout of <t>"`, patched with lastAttempted* before
    // the action; observedGeneration only when it returns: AtomicRelease.Reconcile in
    // helm-controller v1.6.4 internal/reconcile/atomic_release.go). Helm applies the chart
    // a moment after that patch, then waits up to the timeout: replicas restored before the
    // apply start pods of the old template, and a StatefulSet (OrderedReady) never replaces
    // such a pod while it is unready — with the failed version's template, never.
    if !generation_observed(release.metadata.generation, status.observed_generation)
        || !generation_observed(
            release.metadata.generation,
            status.last_attempted_generation,
        )
    {
        return Progress::Waiting(format!(
            "HelmRelease {name} has not acted on its latest spec yet"
        ));
    }
    if let Some(target) = chart_version {
        let attempted = status.last_attempted_revision.as_deref();
        if !attempted.is_some_and(|a| same_chart_version(a, target)) {
            // A remediation now is about an older attempt: the chart can change through
            // an OCIRepository without the HelmRelease's generation moving.
            return Progress::Waiting(format!(
                "HelmRelease {name} last attempted chart {}, waiting for {target}",
                attempted.unwrap_or("nothing")
            ));
        }
    }
    match remediation(release) {
        Some((reason, message)) => Progress::Failed { reason, message },
        None => Progress::Done,
    }
}

/// helm-controller's remediation that concerns `chart_version` (any chart when None):
/// one reported while the release last attempted another chart is about that attempt.
pub fn remediation_for(
    release: &HelmRelease,
    chart_version: Option<&str>,
) -> Option<(String, String)> {
    let attempted = release.status.as_ref()?.last_attempted_revision.as_deref();
    match chart_version {
        Some(target) if !attempted.is_some_and(|a| same_chart_version(a, target)) => None,
        _ => remediation(release),
    }
}

/// helm-controller's remediation of the current generation — a rollback or uninstall after
/// a failed install/upgrade, or retries exhausted — as (reason, message). Conditions left
/// from an older generation are ignored.
pub fn remediation(release: &HelmRelease) -> Option<(String, String)> {
    let status = release.status.as_ref()?;
    let generation = release.metadata.generation;
    let current = |c: &&Condition| match (c.observed_generation, generation) {
        (Some(observed), Some(generation)) => observed >= generation,
        _ => status.last_attempted_generation == generation,
    };
    if let Some(c) = condition(&status.conditions, "Remediated")
        .filter(current)
        .filter(|c| c.status == "True")
    {
        return Some((
            "HelmRemediated".into(),
            format!(
                "helm-controller remediated the release ({}): {}",
                c.reason, c.message
            ),
        ));
    }
    if let Some(c) = condition(&status.conditions, "Stalled")
        .filter(current)
        .filter(|c| c.status == "True")
    {
        return Some((
            "HelmRetriesExhausted".into(),
            format!(
                "helm-controller gave up on the release ({}): {}",
                c.reason, c.message
            ),
        ));
    }
    None
}

/// helm-controller's failed attempt at our chart that it will retry rather than remediate
/// (`spec.install.strategy` / `spec.upgrade.strategy` `RetryOnFailure`), as (reason,
/// message), or None. With that strategy a failed action leaves no `Remediated` and no
/// `Stalled`: `Released=False` with `InstallFailed`/`UpgradeFailed` (kept while the retry
/// runs, when `Ready` turns Unknown), and helm-controller retries after `retryInterval`
/// (`ErrRetryAfterInterval` in internal/reconcile/atomic_release.go). It is not a failure
/// yet — a retry may succeed — but it is why the release is not healthy.
pub fn retried_failure(
    release: &HelmRelease,
    chart_version: Option<&str>,
) -> Option<(String, String)> {
    let status = release.status.as_ref()?;
    let attempted = status.last_attempted_revision.as_deref();
    if chart_version.is_some_and(|target| !attempted.is_some_and(|a| same_chart_version(a, target)))
    {
        return None;
    }
    let generation = release.metadata.generation;
    let released = condition(&status.conditions, "Released").filter(|c| {
        c.status == "False"
            && matches!(c.reason.as_str(), "InstallFailed" | "UpgradeFailed")
            && match (c.observed_generation, generation) {
                (Some(observed), Some(generation)) => observed >= generation,
                _ => status.last_attempted_generation == generation,
            }
    })?;
    let action = if released.reason == "InstallFailed" {
        "install"
    } else {
        "upgrade"
    };
    Some((
        format!("Helm{}", released.reason),
        format!(
            "helm-controller failed to {action} HelmRelease {}/{} ({}) and retries it: {}",
            release.namespace().unwrap_or_default(),
            release.name_any(),
            released.reason,
            released.message
        ),
    ))
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn generation_observed(generation: Option<i64>, observed: Option<i64>) -> bool {
    match (generation, observed) {
        (Some(generation), Some(observed)) => observed >= generation,
        (None, _) => true,
        (Some(_), None) => false,
    }
}

/// Whether two chart versions name the same release of the chart, as SemVer 2 says (build
/// metadata does not make a different version):
/// - without a leading `v` (Chart.yaml versions have none, OCI tags often do);
/// - without a pinned digest (`v1.2.3@sha256:…` is `1.2.3`);
/// - without build metadata: helm-controller records an OCIRepository chart as
///   `<version>+<first 12 hex of the artifact digest>` (`mutateChartWithSourceRevision` in
///   helm-controller v1.6.4 internal/controller/helmrelease_controller.go), in
///   `status.lastAttemptedRevision`, `status.history[].chartVersion` and the Helm release;
///   source-controller's HelmChart builds append `+<generation>` (values files) or
///   `+<12 hex of the commit>` (Git/Bucket sources with the Revision strategy), see
///   `reconcileSource`/`buildFromTarballArtifact` in source-controller v1.9.6
///   internal/controller/helmchart_controller.go. An OCI tag spells `+` as `_` (Helm's
///   registry convention, which helm-controller's `parseSemverFromTag` undoes).
///
/// What is left compares by SemVer precedence when both parse as SemVer, else as text.
pub fn same_chart_version(a: &str, b: &str) -> bool {
    fn bare(v: &str) -> String {
        let v = v.trim();
        let v = v.split_once('@').map_or(v, |(tag, _)| tag);
        let v = v.strip_prefix('v').unwrap_or(v).replace('_', "+");
        match v.split_once('+') {
            Some((version, _build)) => version.to_owned(),
            None => v,
        }
    }
    let (a, b) = (bare(a), bare(b));
    match (semver::Version::parse(&a), semver::Version::parse(&b)) {
        (Ok(a), Ok(b)) => a.cmp_precedence(&b).is_eq(),
        _ => a == b,
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Whether an OCIRepository whose `status.artifact.revision` is `revision` serves chart
/// `target`. source-controller's `getRevision` writes `<tag>@sha256:<digest>` for a tag
/// ref but only `sha256:<digest>` for a digest ref (`spec.ref.digest`, which wins over the
/// tag), so a target pinning a digest (`1.2.3@sha256:…`) is served when the revision ends in
/// that digest, and a bare version when the revision's tag is that version.
pub fn oci_serves(revision: &str, target: &str) -> bool {
    match target.split_once('@') {
        Some((_, digest)) => revision.rsplit('@').next() == Some(digest),
        None => revision.contains('@') && same_chart_version(revision, target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
    const OLD: &str = "fedcba9876543210fedcba9876543210fedcba98";

    fn ready(status: &str, generation: i64) -> serde_json::Value {
        json!({"type": "Ready", "status": status, "reason": "ReconciliationSucceeded", "message": "Applied",
               "lastTransitionTime": "2026-11-23T10:00:00Z", "observedGeneration": generation})
    }

    fn kustomization(generation: i64, observed: i64, applied: &str) -> Kustomization {
        serde_json::from_value(json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "flux-system", "generation": generation},
            "spec": {"sourceRef": {"kind": "GitRepository", "name": "fleet"}, "path": "./apps", "interval": "10m", "prune": true},
            "status": {"observedGeneration": observed, "lastAppliedRevision": format!("main@sha1:{applied}"),
                       "conditions": [ready("True", observed)]}
        }))
        .unwrap()
    }

    #[test]
    fn revisions_match_full_shas_in_every_flux_format() {
        assert!(revision_is_commit(&format!("main@sha1:{SHA}"), SHA));
        assert!(revision_is_commit(&format!("sha1:{SHA}"), SHA));
        assert!(revision_is_commit(&format!("main/{SHA}"), SHA));
        assert!(!revision_is_commit(&format!("main@sha1:{OLD}"), SHA));
        assert!(!revision_is_commit(&format!("main@sha1:{SHA}"), &SHA[..7]));
        assert_eq!(revision_commit(&format!("main@sha1:{SHA}")), SHA);
        assert_eq!(revision_commit(&format!("main/{SHA}")), SHA);
    }

    #[test]
    fn a_stale_ready_kustomization_is_not_applied() {
        // Right after resume: Ready=True from the previous revision must not count.
        let stale = kustomization(3, 3, OLD);
        assert!(
            matches!(kustomization_progress(&stale, SHA), Progress::Waiting(m) if m.contains("last applied main@sha1:fedcba"))
        );
        let not_observed = kustomization(4, 3, SHA);
        assert!(!kustomization_progress(&not_observed, SHA).is_done());
        assert_eq!(
            kustomization_progress(&kustomization(4, 4, SHA), SHA),
            Progress::Done
        );
    }

    fn helm_release(conditions: serde_json::Value, attempted: &str) -> HelmRelease {
        serde_json::from_value(json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "db", "namespace": "apps", "generation": 5},
            "spec": {"chartRef": {"kind": "OCIRepository", "name": "db"}, "interval": "10m"},
            "status": {"observedGeneration": 5, "lastAttemptedGeneration": 5, "lastAttemptedRevision": attempted,
                       "conditions": conditions}
        }))
        .unwrap()
    }

    #[test]
    fn a_helm_release_is_done_when_it_attempted_the_target_chart() {
        let release = helm_release(json!([ready("True", 5)]), "1.5.0");
        assert_eq!(
            helm_release_progress(&release, Some("v1.5.0")),
            Progress::Done
        );
        assert_eq!(helm_release_progress(&release, None), Progress::Done);
        assert_eq!(
            helm_release_progress(&release, Some("1.5.0@sha256:abc")),
            Progress::Done
        );
        assert!(!helm_release_progress(&release, Some("1.6.0")).is_done());
    }

    #[test]
    fn a_helm_release_is_not_done_while_helm_runs_our_upgrade() {
        // As helm-controller v1.6.4 leaves it from just before Helm applies the chart to the
        // end of Helm's wait (e2e rollback.rs on real Flux): attempted generation 5 and our
        // chart, observedGeneration still 4. Calling that done restored the StatefulSet's
        // replicas 0.3 s before Helm applied the reverted template, so its first pod was one
        // of the failed version, never ready, and the StatefulSet stayed stuck on it.
        let message = "Running 'upgrade' action with timeout of 5m0s";
        let mut release = helm_release(
            json!([
                {"type": "Reconciling", "status": "True", "reason": "Progressing",
                 "message": message, "lastTransitionTime": "2026-11-23T10:00:00Z",
                 "observedGeneration": 5},
                {"type": "Ready", "status": "Unknown", "reason": "Progressing",
                 "message": message, "lastTransitionTime": "2026-11-23T10:00:00Z",
                 "observedGeneration": 5}]),
            "1.4.0+0fc5bc26124a",
        );
        release.status.as_mut().unwrap().observed_generation = Some(4);
        assert!(matches!(helm_release_progress(&release, Some("v1.4.0")),
                     Progress::Waiting(m) if m.contains("has not acted on its latest spec")));
    }

    #[test]
    fn chart_versions_compare_without_build_metadata() {
        // As helm-controller records an OCIRepository chart (digest prefix) …
        assert!(same_chart_version("1.6.0+f020b3f2f52d", "v1.6.0"));
        assert!(same_chart_version("v1.6.0", "1.6.0+f020b3f2f52d"));
        // … and as source-controller builds a HelmChart (generation, commit).
        assert!(same_chart_version("1.6.0+3", "1.6.0"));
        assert!(same_chart_version("1.6.0+a1b2c3d4e5f6.3", "1.6.0"));
        // An OCI tag with `_` for `+`, with and without a pinned digest.
        assert!(same_chart_version("1.6.0+f020b3f2f52d", "1.6.0_build.1"));
        assert!(same_chart_version(
            "1.6.0+f020b3f2f52d",
            "v1.6.0@sha256:f020b3f2f52d0123456789"
        ));
        // A different version or pre-release is different.
        assert!(!same_chart_version("1.6.0+f020b3f2f52d", "1.6.1"));
        assert!(!same_chart_version("1.6.0-rc.1+f020b3f2f52d", "1.6.0"));
        assert!(same_chart_version("1.6.0-rc.1+f020b3f2f52d", "v1.6.0-rc.1"));
        // Not SemVer: compared as text, still without the build part.
        assert!(same_chart_version("2024.01+abc", "2024.01"));
        assert!(!same_chart_version("2024.01", "2024.1"));
    }

    #[test]
    fn a_release_recorded_with_the_oci_digest_is_the_target_chart() {
        let release = helm_release(json!([ready("True", 5)]), "1.6.0+f020b3f2f52d");
        assert_eq!(
            helm_release_progress(&release, Some("v1.6.0")),
            Progress::Done
        );
        let remediated = json!({"type": "Remediated", "status": "True", "reason": "RollbackSucceeded",
            "message": "Helm rollback to previous release apps/db.v2 with chart db@1.5.0+a77d7d823073 succeeded",
            "lastTransitionTime": "2026-11-23T10:00:00Z", "observedGeneration": 5});
        let release = helm_release(json!([ready("False", 5), remediated]), "1.6.0+f020b3f2f52d");
        assert!(remediation_for(&release, Some("v1.6.0")).is_some());
    }

    #[test]
    fn a_remediated_helm_release_is_a_failure() {
        let remediated = json!({"type": "Remediated", "status": "True", "reason": "RollbackSucceeded",
            "message": "Helm rollback to previous release succeeded", "lastTransitionTime": "2026-11-23T10:00:00Z",
            "observedGeneration": 5});
        let release = helm_release(json!([ready("False", 5), remediated]), "1.5.0");
        match helm_release_progress(&release, Some("1.5.0")) {
            Progress::Failed { reason, message } => {
                assert_eq!(reason, "HelmRemediated");
                assert!(message.contains("RollbackSucceeded"), "{message}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        let stalled = json!([{"type": "Stalled", "status": "True", "reason": "RetriesExceeded",
            "message": "Failed to upgrade after 3 attempts", "lastTransitionTime": "2026-11-23T10:00:00Z", "observedGeneration": 5}]);
        assert!(
            matches!(helm_release_progress(&helm_release(stalled, "1.5.0"), Some("1.5.0")), Progress::Failed { reason, .. } if reason == "HelmRetriesExhausted")
        );
    }

    #[test]
    fn remediation_of_an_older_chart_is_ignored_while_waiting_for_ours() {
        // Rolling back through an OCIRepository tag: the HelmRelease generation stays, its
        // Stalled condition is about the failed chart 2.0.0.
        let stalled = json!([{"type": "Stalled", "status": "True", "reason": "RetriesExceeded",
            "message": "Failed to upgrade after 1 attempt", "lastTransitionTime": "2026-11-23T10:00:00Z", "observedGeneration": 5}]);
        let release = helm_release(stalled, "2.0.0");
        assert!(
            matches!(helm_release_progress(&release, Some("1.4.0")), Progress::Waiting(m) if m.contains("waiting for 1.4.0"))
        );
        assert_eq!(remediation_for(&release, Some("1.4.0")), None);
        assert!(remediation_for(&release, Some("2.0.0")).is_some());
    }

    #[test]
    fn a_remediation_of_our_attempt_fails_while_helm_controller_still_retries() {
        // Retries left: helm-controller rolled back and requeued without writing
        // observedGeneration (4 < 5), but it attempted generation 5 with our chart.
        let remediated = json!({"type": "Remediated", "status": "True", "reason": "RollbackSucceeded",
            "message": "Helm rollback to previous release apps/db.v2 with chart db@1.4.0+a77d7d823073 succeeded",
            "lastTransitionTime": "2026-11-23T10:00:00Z", "observedGeneration": 5});
        let mut release =
            helm_release(json!([ready("False", 5), remediated]), "2.0.0+f020b3f2f52d");
        release.status.as_mut().unwrap().observed_generation = Some(4);
        assert!(
            matches!(helm_release_progress(&release, Some("v2.0.0")), Progress::Failed { reason, .. } if reason == "HelmRemediated")
        );
        // Not yet attempted at this generation: still waiting.
        release.status.as_mut().unwrap().last_attempted_generation = Some(4);
        assert!(matches!(
            helm_release_progress(&release, Some("v2.0.0")),
            Progress::Waiting(_)
        ));
    }

    #[test]
    fn a_retried_failure_is_reported_but_is_no_remediation() {
        let released = json!({"type": "Released", "status": "False", "reason": "UpgradeFailed",
            "message": "Helm upgrade failed for release apps/db with chart db@2.0.0+f020b3f2f52d: context deadline exceeded",
            "lastTransitionTime": "2026-11-23T10:00:00Z", "observedGeneration": 5});
        let retrying = json!({"type": "Reconciling", "status": "True", "reason": "ProgressingWithRetry",
            "message": "retrying after 5m0s", "lastTransitionTime": "2026-11-23T10:00:00Z", "observedGeneration": 5});
        let failed = json!({"type": "Ready", "status": "False", "reason": "UpgradeFailed",
            "message": "Helm upgrade failed", "lastTransitionTime": "2026-11-23T10:00:00Z", "observedGeneration": 5});
        let release = helm_release(json!([failed, released, retrying]), "2.0.0+f020b3f2f52d");
        assert_eq!(remediation(&release), None);
        let (reason, message) = retried_failure(&release, Some("v2.0.0")).unwrap();
        assert_eq!(reason, "HelmUpgradeFailed");
        assert!(message.contains("context deadline exceeded"), "{message}");
        assert_eq!(retried_failure(&release, Some("v1.4.0")), None);
    }

    #[test]
    fn remediation_of_an_older_generation_is_ignored() {
        let old = json!({"type": "Remediated", "status": "True", "reason": "RollbackSucceeded", "message": "old",
            "lastTransitionTime": "2026-11-20T10:00:00Z", "observedGeneration": 4});
        let release = helm_release(json!([ready("True", 5), old]), "1.5.0");
        assert_eq!(
            helm_release_progress(&release, Some("1.5.0")),
            Progress::Done
        );
    }

    #[test]
    fn an_oci_repository_serves_a_digest_pinned_chart_by_its_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let other = format!("sha256:{}", "b".repeat(64));
        // A digest ref: the revision is the digest alone.
        assert!(oci_serves(&digest, &format!("1.5.0@{digest}")));
        assert!(!oci_serves(&other, &format!("1.5.0@{digest}")));
        assert!(!oci_serves(&digest, "1.5.0"), "no tag in a digest revision");
        // A tag ref: `<tag>@<digest>`.
        assert!(oci_serves(&format!("v1.5.0@{other}"), "1.5.0"));
        assert!(oci_serves(
            &format!("1.5.0@{digest}"),
            &format!("1.5.0@{digest}")
        ));
        assert!(!oci_serves(&format!("1.4.0@{other}"), "1.5.0"));
    }
}
