//! Failures a test declares up front: chart versions and images whose pods never become
//! ready, and VolumeSnapshots that fail — shared by the sims through one cheap handle.

use futures::Stream;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// On a HelmRelease: comma-separated chart versions that fail for this release only.
pub const FAIL_VERSIONS_ANNOTATION: &str = "sim.fluxgate.dev/fail-versions";
/// On a pod (template): the pod's containers never become ready.
pub const NEVER_READY_ANNOTATION: &str = "sim.fluxgate.dev/never-ready";
/// On a VolumeSnapshot: the snapshot fails with this message.
pub const SNAPSHOT_ERROR_ANNOTATION: &str = "sim.fluxgate.dev/snapshot-error";

#[derive(Debug, Default)]
struct State {
    chart_versions: BTreeSet<String>,
    images: BTreeSet<String>,
    snapshots: Vec<(String, String)>,
}

/// The declared failures. Clones share state; every change wakes the sims that care.
#[derive(Clone, Debug)]
pub struct Failures {
    state: Arc<Mutex<State>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for Failures {
    fn default() -> Self {
        Failures {
            state: Arc::default(),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl Failures {
    fn update(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Option<T> {
        self.state.lock().ok().map(|s| f(&s))
    }

    /// Installing or upgrading to this chart version fails in every HelmRelease
    /// (its pods never become ready). `v2.0.0` and `2.0.0` are the same version, with or
    /// without helm-controller's build metadata (`2.0.0+abc`), so one call covers the OCI
    /// tag and the chart version it becomes.
    pub fn fail_chart_version(&self, version: &str) {
        self.update(|s| {
            s.chart_versions.insert(version.to_owned());
        });
    }

    /// Pods running this image never become ready. `image` is a full reference
    /// (`ghcr.io/x/app:2.0.0`) or just a tag (`2.0.0`, matching any repository).
    pub fn fail_image(&self, image: &str) {
        self.update(|s| {
            s.images.insert(image.to_owned());
        });
    }

    /// VolumeSnapshots whose name contains `pattern` fail: the CSI driver refuses to cut
    /// them with `message` until [`Failures::clear_snapshot_failures`]. Their
    /// `status.error.message` carries it as the sidecar reports a driver error (see
    /// [`crate::csi::snapshotter`]).
    pub fn fail_snapshots(&self, pattern: &str, message: &str) {
        self.update(|s| s.snapshots.push((pattern.to_owned(), message.to_owned())));
    }

    /// Forgets every declared chart and image failure.
    pub fn clear_versions(&self) {
        self.update(|s| {
            s.chart_versions.clear();
            s.images.clear();
        });
    }

    /// Forgets every snapshot failure; failed snapshots then complete.
    pub fn clear_snapshot_failures(&self) {
        self.update(|s| s.snapshots.clear());
    }

    /// Whether chart `version` is declared failing (globally).
    pub fn chart_fails(&self, version: &str) -> bool {
        let bare = version.trim_start_matches('v');
        self.read(|s| {
            s.chart_versions
                .iter()
                .any(|v| v.trim_start_matches('v') == bare)
        })
        .unwrap_or(false)
    }

    /// Whether a container image is declared failing.
    pub fn image_fails(&self, image: &str) -> bool {
        let tag = crate::kustomize_build::split_image(image).1;
        self.read(|s| {
            s.images
                .iter()
                .any(|f| f == image || Some(f.as_str()) == tag)
        })
        .unwrap_or(false)
    }

    /// The error a VolumeSnapshot of this name must report, if any.
    pub fn snapshot_error(&self, name: &str) -> Option<String> {
        self.read(|s| {
            s.snapshots
                .iter()
                .find(|(p, _)| name.contains(p.as_str()))
                .map(|(_, m)| m.clone())
        })
        .flatten()
    }

    /// A stream that yields once per change (for `Controller::reconcile_all_on`).
    pub fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        let rx = self.changed.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_match_by_reference_or_tag() {
        let f = Failures::default();
        f.fail_image("2.0.0");
        f.fail_image("ghcr.io/x/db:9");
        assert!(f.image_fails("ghcr.io/x/app:2.0.0"));
        assert!(f.image_fails("ghcr.io/x/db:9"));
        assert!(!f.image_fails("ghcr.io/x/db:10"));
        f.fail_chart_version("v2.0.0");
        assert!(f.chart_fails("2.0.0"));
        f.fail_snapshots("data-", "quota exceeded");
        assert_eq!(
            f.snapshot_error("x-data-0").as_deref(),
            Some("quota exceeded")
        );
        f.clear_snapshot_failures();
        assert_eq!(f.snapshot_error("x-data-0"), None);
    }
}
