//! Helm release secrets in Helm's exact storage format, for the simulated helm-controller
//! and for tests: `data.release` = base64(gzip(JSON release)), plus the labels, type and
//! name Helm gives them. A legacy variant without gzip is available too.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::{Compression, write::GzEncoder};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;

/// One Helm release, as Helm stores it.
#[derive(Clone, Debug)]
pub struct HelmReleaseSecret {
    /// Release name.
    pub name: String,
    /// Namespace of the release (and of its secret).
    pub namespace: String,
    /// Release revision, 1 for the first install.
    pub revision: i64,
    /// Helm status: `deployed`, `superseded`, `failed`, `pending-upgrade`, …
    pub status: String,
    /// Chart name.
    pub chart: String,
    /// Chart version.
    pub chart_version: String,
    /// The chart's appVersion.
    pub app_version: String,
    /// The user-supplied values.
    pub values: Value,
    /// The rendered manifest (multi-document YAML).
    pub manifest: String,
}

impl HelmReleaseSecret {
    /// The release as Helm serialises it to JSON.
    pub fn release_json(&self) -> Value {
        json!({
            "name": self.name,
            "namespace": self.namespace,
            "version": self.revision,
            "info": {
                "first_deployed": "2026-11-01T10:00:00Z",
                "last_deployed": "2026-11-01T10:00:00Z",
                "deleted": "",
                "description": "Upgrade complete",
                "status": self.status,
            },
            "chart": {
                "metadata": {
                    "name": self.chart,
                    "version": self.chart_version,
                    "appVersion": self.app_version,
                    "apiVersion": "v2",
                },
                "templates": [],
                "values": {},
            },
            "config": self.values,
            "manifest": self.manifest,
        })
    }

    /// The Secret exactly as Helm 3/4 writes it (gzip-compressed release).
    pub fn to_secret(&self) -> Secret {
        let json = serde_json::to_vec(&self.release_json()).expect("a release serialises");
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&json).expect("writing to memory cannot fail");
        self.secret_with_payload(&gz.finish().expect("writing to memory cannot fail"))
    }

    /// The Secret as very old Helm 3 releases stored it: base64 JSON without gzip.
    pub fn to_legacy_secret(&self) -> Secret {
        let json = serde_json::to_vec(&self.release_json()).expect("a release serialises");
        self.secret_with_payload(&json)
    }

    fn secret_with_payload(&self, payload: &[u8]) -> Secret {
        // Helm base64-encodes the payload itself; the API's own base64 of `data` comes on
        // top of that on the wire, which is why readers decode twice in total.
        let release = STANDARD.encode(payload).into_bytes();
        let labels = BTreeMap::from([
            ("name".to_owned(), self.name.clone()),
            ("owner".to_owned(), "helm".to_owned()),
            ("status".to_owned(), self.status.clone()),
            ("version".to_owned(), self.revision.to_string()),
        ]);
        Secret {
            metadata: ObjectMeta {
                name: Some(format!(
                    "sh.helm.release.v1.{}.v{}",
                    self.name, self.revision
                )),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            type_: Some("helm.sh/release.v1".to_owned()),
            data: Some(BTreeMap::from([(
                "release".to_owned(),
                ByteString(release),
            )])),
            ..Default::default()
        }
    }
}
