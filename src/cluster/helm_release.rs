//! Helm release secrets: which release a HelmRelease really deployed (its real release
//! name and storage namespace, the newest `deployed` revision) and its rendered manifest,
//! decoded exactly once and with bounded decompression.

use super::flux::HelmRelease;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::read::GzDecoder;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde::Deserialize;
use std::io::Read;

/// Secret type Helm uses for release storage.
pub const HELM_SECRET_TYPE: &str = "helm.sh/release.v1";
/// Largest decompressed release accepted: far above real releases, far below a gzip bomb.
pub const MAX_RELEASE_BYTES: u64 = 32 * 1024 * 1024;
/// Helm's limit on release names; helm-controller shortens longer ones.
const MAX_RELEASE_NAME: usize = 53;
/// Hex digits of the name's SHA-256 that helm-controller keeps in a shortened name.
const SHORT_HASH: usize = 12;

/// Where a HelmRelease's Helm release lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseLocation {
    /// Helm release name.
    pub name: String,
    /// Namespace holding the release secrets.
    pub storage_namespace: String,
}

/// Why a release could not be located or decoded; each message names the object.
#[derive(Debug, thiserror::Error)]
pub enum HelmReleaseError {
    /// The Secret is not a Helm release secret.
    #[error(
        "Secret {0} is not a Helm release secret (type {HELM_SECRET_TYPE} with a `release` key)"
    )]
    NotAHelmSecret(String),
    /// The `release` value is not base64.
    #[error("Secret {0}: the release is not base64 ({1}); was it decoded twice?")]
    Base64(String, base64::DecodeError),
    /// The gzip stream is broken.
    #[error("Secret {0}: the release is not valid gzip: {1}")]
    Gzip(String, std::io::Error),
    /// Decompressing would exceed [`MAX_RELEASE_BYTES`].
    #[error(
        "Secret {0}: the release decompresses to more than {MAX_RELEASE_BYTES} bytes; refusing it"
    )]
    TooLarge(String),
    /// The release is not the JSON Helm writes.
    #[error("Secret {0}: the release is not Helm's JSON: {1}")]
    Json(String, serde_json::Error),
}

impl HelmReleaseError {
    /// A static category for metrics and events.
    pub fn category(&self) -> &'static str {
        "helm_secret_invalid"
    }
}

/// The release name and storage namespace Flux uses for `release`: taken from its status
/// when it has deployed before, otherwise derived as helm-controller does
/// (`spec.releaseName`, else `[<targetNamespace>-]<name>`, shortened by
/// [`shorten_release_name`] when over 53 characters; storage in `spec.storageNamespace`,
/// else the HelmRelease's namespace).
pub fn release_location(release: &HelmRelease) -> ReleaseLocation {
    let namespace = release.namespace().unwrap_or_default();
    let status = release.status.as_ref();
    let storage_namespace = status
        .and_then(|s| s.storage_namespace.clone())
        .or_else(|| release.spec.storage_namespace.clone())
        .unwrap_or_else(|| namespace.clone());
    if let Some(latest) = status
        .and_then(|s| s.history.first())
        .filter(|h| !h.name.is_empty())
    {
        return ReleaseLocation {
            name: latest.name.clone(),
            storage_namespace,
        };
    }
    // helm-controller's GetReleaseName (api/v2/helmrelease_types.go): an empty releaseName
    // counts as unset.
    let name = match (
        release
            .spec
            .release_name
            .as_deref()
            .filter(|n| !n.is_empty()),
        release
            .spec
            .target_namespace
            .as_deref()
            .filter(|n| !n.is_empty()),
    ) {
        (Some(name), _) => name.to_owned(),
        (None, Some(target)) => format!("{target}-{}", release.name_any()),
        (None, None) => release.name_any(),
    };
    ReleaseLocation {
        name: shorten_release_name(&name),
        storage_namespace,
    }
}

/// The Helm release name helm-controller uses for a release name over 53 characters (Helm's
/// limit): its first 40 characters, `-`, and the first 12 hex digits of the SHA-256 of the
/// whole name. helm-controller applies it (`ShortenName` in internal/release/name.go) to
/// every install, upgrade and test, so the release secrets carry this name.
pub fn shorten_release_name(name: &str) -> String {
    if name.len() <= MAX_RELEASE_NAME {
        return name.to_owned();
    }
    let sum = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let hex: String = sum.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    // Go cuts bytes; a HelmRelease name and namespace are DNS names, so ASCII. A non-ASCII
    // name could never have been installed, so keeping it whole is as good as any cut.
    let keep = MAX_RELEASE_NAME - SHORT_HASH - 1;
    let cut = name.get(..keep).unwrap_or(name);
    format!("{cut}-{}", &hex[..SHORT_HASH])
}

/// The newest `deployed` revision among `secrets` for release `name` (by the `version`
/// label, as Helm does), ignoring other releases and other secret types.
pub fn newest_deployed<'a>(secrets: &'a [Secret], name: &str) -> Option<&'a Secret> {
    secrets
        .iter()
        .filter(|s| s.type_.as_deref() == Some(HELM_SECRET_TYPE))
        .filter(|s| {
            let labels = s.labels();
            labels.get("owner").map(String::as_str) == Some("helm")
                && labels.get("name").map(String::as_str) == Some(name)
                && labels.get("status").map(String::as_str) == Some("deployed")
        })
        .filter_map(|s| Some((s.labels().get("version")?.parse::<u64>().ok()?, s)))
        .max_by_key(|(revision, _)| *revision)
        .map(|(_, s)| s)
}

/// The parts of a decoded Helm release Fluxgate uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedRelease {
    /// Release name.
    pub name: String,
    /// Release namespace (where its objects went).
    pub namespace: String,
    /// Revision.
    pub revision: i64,
    /// Helm status (`deployed`, …).
    pub status: String,
    /// Chart version.
    pub chart_version: String,
    /// The rendered manifest, multi-document YAML.
    pub manifest: String,
}

#[derive(Deserialize)]
struct RawRelease {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    version: i64,
    #[serde(default)]
    info: RawInfo,
    #[serde(default)]
    chart: RawChart,
    #[serde(default)]
    manifest: String,
}

#[derive(Deserialize, Default)]
struct RawInfo {
    #[serde(default)]
    status: String,
}

#[derive(Deserialize, Default)]
struct RawChart {
    #[serde(default)]
    metadata: RawChartMetadata,
}

#[derive(Deserialize, Default)]
struct RawChartMetadata {
    #[serde(default)]
    version: String,
}

/// Decodes a Helm release secret. Through k8s-openapi the Secret's `data` is already
/// base64-decoded once; the `release` bytes are Helm's own base64 of gzip (magic `1f 8b`;
/// absent in old releases) of JSON.
pub fn decode(secret: &Secret) -> Result<DecodedRelease, HelmReleaseError> {
    let id = format!(
        "{}/{}",
        secret.namespace().unwrap_or_default(),
        secret.name_any()
    );
    let payload = secret
        .data
        .as_ref()
        .and_then(|d| d.get("release"))
        .filter(|_| secret.type_.as_deref() == Some(HELM_SECRET_TYPE))
        .ok_or_else(|| HelmReleaseError::NotAHelmSecret(id.clone()))?;
    let bytes = STANDARD
        .decode(&payload.0)
        .map_err(|e| HelmReleaseError::Base64(id.clone(), e))?;
    let json = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        // Read one byte past the limit to tell "exactly at the limit" from "over it".
        GzDecoder::new(bytes.as_slice())
            .take(MAX_RELEASE_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| HelmReleaseError::Gzip(id.clone(), e))?;
        if out.len() as u64 > MAX_RELEASE_BYTES {
            return Err(HelmReleaseError::TooLarge(id));
        }
        out
    } else {
        bytes
    };
    let raw: RawRelease =
        serde_json::from_slice(&json).map_err(|e| HelmReleaseError::Json(id, e))?;
    Ok(DecodedRelease {
        name: raw.name,
        namespace: raw.namespace,
        revision: raw.version,
        status: raw.info.status,
        chart_version: raw.chart.metadata.version,
        manifest: raw.manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;
    use sim::helm_secret::HelmReleaseSecret;

    fn release(revision: i64, status: &str) -> HelmReleaseSecret {
        HelmReleaseSecret {
            name: "db".into(),
            namespace: "apps".into(),
            revision,
            status: status.into(),
            chart: "postgres".into(),
            chart_version: format!("1.{revision}.0"),
            app_version: "16".into(),
            values: json!({"image": {"tag": "16.4"}}),
            manifest: "---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\n".into(),
        }
    }

    #[test]
    fn a_real_format_secret_decodes() {
        let decoded = decode(&release(3, "deployed").to_secret()).unwrap();
        assert_eq!(decoded.name, "db");
        assert_eq!(decoded.revision, 3);
        assert_eq!(decoded.status, "deployed");
        assert_eq!(decoded.chart_version, "1.3.0");
        assert!(decoded.manifest.contains("kind: StatefulSet"));
    }

    #[test]
    fn a_legacy_uncompressed_secret_decodes() {
        let decoded = decode(&release(1, "deployed").to_legacy_secret()).unwrap();
        assert_eq!(decoded.chart_version, "1.1.0");
    }

    #[test]
    fn a_double_decoded_secret_is_refused_with_a_hint() {
        // The prototype's bug: decoding the API's base64 by hand on top of k8s-openapi's.
        let mut secret = release(1, "deployed").to_secret();
        let data = secret.data.as_mut().unwrap();
        let once = STANDARD.decode(&data["release"].0).unwrap();
        data.insert("release".into(), ByteString(once));
        let err = decode(&secret).unwrap_err();
        assert!(matches!(err, HelmReleaseError::Base64(..)), "{err}");
        assert!(
            err.to_string().contains("apps/sh.helm.release.v1.db.v1"),
            "{err}"
        );
    }

    #[test]
    fn a_gzip_bomb_is_refused() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..(MAX_RELEASE_BYTES / zeros.len() as u64 + 1) {
            gz.write_all(&zeros).unwrap();
        }
        let mut secret = release(1, "deployed").to_secret();
        let bomb = STANDARD.encode(gz.finish().unwrap()).into_bytes();
        secret
            .data
            .as_mut()
            .unwrap()
            .insert("release".into(), ByteString(bomb));
        assert!(matches!(
            decode(&secret),
            Err(HelmReleaseError::TooLarge(_))
        ));
    }

    #[test]
    fn the_newest_deployed_revision_wins() {
        let secrets = vec![
            release(1, "superseded").to_secret(),
            release(2, "deployed").to_secret(),
            release(10, "deployed").to_secret(),
            release(11, "failed").to_secret(),
            HelmReleaseSecret {
                name: "other".into(),
                ..release(12, "deployed")
            }
            .to_secret(),
        ];
        let newest = newest_deployed(&secrets, "db").unwrap();
        assert_eq!(newest.name_any(), "sh.helm.release.v1.db.v10");
    }

    fn helm_release(spec: serde_json::Value, status: serde_json::Value) -> HelmRelease {
        serde_json::from_value(json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "db", "namespace": "flux-system"},
            "spec": spec, "status": status
        }))
        .unwrap()
    }

    #[test]
    fn release_location_follows_flux_naming() {
        let plain = helm_release(json!({}), json!({}));
        assert_eq!(
            release_location(&plain),
            ReleaseLocation {
                name: "db".into(),
                storage_namespace: "flux-system".into()
            }
        );
        let targeted = helm_release(
            json!({"targetNamespace": "apps", "storageNamespace": "apps"}),
            json!({}),
        );
        assert_eq!(
            release_location(&targeted),
            ReleaseLocation {
                name: "apps-db".into(),
                storage_namespace: "apps".into()
            }
        );
        let named = helm_release(
            json!({"releaseName": "postgres", "targetNamespace": "apps"}),
            json!({}),
        );
        assert_eq!(release_location(&named).name, "postgres");
        let from_status = helm_release(
            json!({"targetNamespace": "apps"}),
            json!({"storageNamespace": "apps", "history": [{"name": "apps-db-3f2a", "namespace": "apps", "version": 4, "chartVersion": "1.0.0", "status": "deployed"}]}),
        );
        assert_eq!(
            release_location(&from_status),
            ReleaseLocation {
                name: "apps-db-3f2a".into(),
                storage_namespace: "apps".into()
            }
        );
        // Over 53 characters: shortened as helm-controller shortens it.
        let long = helm_release(
            json!({"targetNamespace": "a-very-long-namespace-name-for-the-stateful-applications"}),
            json!({}),
        );
        let location = release_location(&long);
        assert_eq!(location.name.len(), 53);
        assert_eq!(
            location.name,
            shorten_release_name("a-very-long-namespace-name-for-the-stateful-applications-db")
        );
    }

    #[test]
    fn long_release_names_are_shortened_as_helm_controller_does() {
        // The cases of helm-controller's internal/release/name_test.go (v1.6.4).
        for (name, short) in [
            ("release-name", "release-name"),
            (
                "release-name-with-very-long-name-which-is-longer-than-53-characters",
                "release-name-with-very-long-name-which-i-788ca0d0d7b0",
            ),
            (
                "another-release-name-with-very-long-name-which-is-longer-than-53-characters",
                "another-release-name-with-very-long-name-7e72150d5a36",
            ),
            ("", ""),
        ] {
            assert_eq!(shorten_release_name(name), short, "{name}");
        }
        // Exactly 53 stays; 54 is cut.
        let at_limit = "a".repeat(53);
        assert_eq!(shorten_release_name(&at_limit), at_limit);
        assert_eq!(shorten_release_name(&"a".repeat(54)).len(), 53);
    }
}
