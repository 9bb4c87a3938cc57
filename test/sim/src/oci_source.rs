//! Flux source-controller for OCIRepository v1, charts only: it picks the artifact the way
//! source-controller does (`spec.ref.digest` over `semver` over `tag`, else `latest`) from a
//! simulated registry and writes `status.artifact` in source-controller's format —
//! `<tag>@sha256:<digest>` for a tag or semver ref, just `sha256:<digest>` for a digest ref.
//!
//! The registry ([`OciRegistry`]) contacts nothing: a manifest digest is derived from the
//! repository URL and tag ([`manifest_digest`]). A tag ref finds any tag (and the registry
//! then holds it); a digest or semver ref finds only tags the registry holds — published
//! with [`OciRegistry::publish`] or pulled by tag before — as a real registry answers only
//! for what was pushed.

use crate::conditions::{condition, conditions_of, now, requested_at, set_condition, suspended};
use crate::controller::{SimError, SimTask, run_controller};
use crate::kinds::{dyn_api, oci_repository, patch_status, to_value};
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

/// The OCI manifest annotation `helm push` writes with the chart's version (Helm's
/// registry client sets it from Chart.yaml); source-controller copies manifest annotations
/// into `status.artifact.metadata`.
pub const VERSION_ANNOTATION: &str = "org.opencontainers.image.version";

/// How long a pull of a new revision takes before its artifact is stored: source-controller
/// v1.9.3 took 0.15–0.35 s on loopback in e2e's real-Flux stories (from the OCIRepository's
/// new spec to `stored artifact with revision …` in its log).
pub const PULL_TIME: std::time::Duration = std::time::Duration::from_millis(250);

/// The running OCIRepository controller; stops when dropped.
#[derive(Debug)]
pub struct OciSourceController {
    _task: SimTask,
}

/// The simulated OCI registry: the tags each repository URL (`oci://…`) holds. Cloning
/// shares it.
#[derive(Clone, Debug, Default)]
pub struct OciRegistry {
    tags: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
}

impl OciRegistry {
    /// Pushes `tag` to the repository at `url` and returns its manifest digest
    /// (`sha256:…`), the value a digest ref (`spec.ref.digest`) pins.
    pub fn publish(&self, url: &str, tag: &str) -> String {
        self.hold(url, tag);
        manifest_digest(url, tag)
    }

    fn hold(&self, url: &str, tag: &str) {
        if let Ok(mut tags) = self.tags.lock() {
            tags.entry(url.to_owned())
                .or_default()
                .insert(tag.to_owned());
        }
    }

    fn tags(&self, url: &str) -> Vec<String> {
        self.tags
            .lock()
            .map(|tags| tags.get(url).into_iter().flatten().cloned().collect())
            .unwrap_or_default()
    }

    /// The tag whose manifest has `digest`, if the repository holds one.
    fn tag_of(&self, url: &str, digest: &str) -> Option<String> {
        self.tags(url)
            .into_iter()
            .find(|tag| manifest_digest(url, tag) == digest)
    }
}

struct Ctx {
    client: Client,
    registry: OciRegistry,
}

impl OciSourceController {
    /// Starts watching OCIRepositories in all namespaces, pulling from `registry`.
    pub fn start(client: Client, registry: OciRegistry) -> OciSourceController {
        let ar = oci_repository();
        let controller = Controller::new_with(
            Api::<DynamicObject>::all_with(client.clone(), &ar),
            watcher::Config::default(),
            ar,
        );
        OciSourceController {
            _task: run_controller(
                "oci-source-controller",
                controller,
                reconcile,
                Arc::new(Ctx { client, registry }),
            ),
        }
    }
}

/// The stable fake manifest digest (`sha256:` and 64 hex digits) of `tag` in the
/// repository at `url`.
pub fn manifest_digest(url: &str, tag: &str) -> String {
    let parts = [url, tag];
    let mut out = String::from("sha256:");
    for round in 0u8..4 {
        let mut h = DefaultHasher::new();
        (round, &parts[..]).hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// What a ref resolves to: the artifact's revision and the chart version it holds, or the
/// failure as (reason, message) the way source-controller reports it.
type Resolution = Result<(String, String), (&'static str, String)>;

/// Picks the artifact as `getArtifactRef` and `getRevision` do
/// (source-controller internal/controller/ocirepository_controller.go): a digest wins over
/// a semver range, which wins over a tag; no ref means the tag `latest`. A tag ref's
/// revision is `<tag>@<digest>`; a digest ref's is the digest alone (`getRevision` returns
/// `digest.String()` for a `name.Digest`).
fn resolve(registry: &OciRegistry, url: &str, reference: &Value) -> Resolution {
    let field = |name: &str| reference[name].as_str().filter(|v| !v.is_empty());
    if let Some(digest) = field("digest") {
        // getRevision takes a digest ref's revision without contacting the registry; the
        // pull (`remote.Image`) is what fails for a digest the registry lacks.
        return match registry.tag_of(url, digest) {
            Some(tag) => Ok((digest.to_owned(), tag)),
            None => Err((
                "OCIArtifactPullFailed",
                format!(
                    "failed to pull artifact from '{url}': MANIFEST_UNKNOWN: manifest unknown; \
                     unknown digest {digest}"
                ),
            )),
        };
    }
    if let Some(range) = field("semver") {
        // getTagBySemver: the highest tag that parses as a version and meets the range.
        let Some(wanted) = SemverRange::parse(range) else {
            return Err((
                "ReadOperationFailed",
                format!(
                    "failed to determine the artifact tag for '{url}': semver '{range}' parse error"
                ),
            ));
        };
        let best = registry
            .tags(url)
            .into_iter()
            .filter_map(|tag| Some((lenient_version(&tag)?, tag)))
            .filter(|(version, _)| wanted.matches(version))
            .max_by(|a, b| a.0.cmp(&b.0));
        return match best {
            Some((_, tag)) => Ok((format!("{tag}@{}", manifest_digest(url, &tag)), tag)),
            None => Err((
                "ReadOperationFailed",
                format!(
                    "failed to determine the artifact tag for '{url}': no match found for semver: {range}"
                ),
            )),
        };
    }
    let tag = field("tag").unwrap_or("latest");
    // A registry answers a HEAD for any tag in this simulation; remember it for digest and
    // semver refs.
    registry.hold(url, tag);
    Ok((
        format!("{tag}@{}", manifest_digest(url, tag)),
        tag.to_owned(),
    ))
}

/// A version as Masterminds/semver's `NewVersion` reads tags: an optional `v`, and missing
/// minor or patch numbers taken as 0.
fn lenient_version(tag: &str) -> Option<semver::Version> {
    let text = tag.strip_prefix('v').unwrap_or(tag);
    let (core, rest) = match text.find(['-', '+']) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let mut numbers: Vec<&str> = core.split('.').collect();
    if numbers.is_empty() || numbers.len() > 3 {
        return None;
    }
    while numbers.len() < 3 {
        numbers.push("0");
    }
    semver::Version::parse(&format!("{}{rest}", numbers.join("."))).ok()
}

/// A Masterminds/semver constraint (what `spec.ref.semver` holds): alternatives separated
/// by `||`, each a set of comparators separated by commas or spaces, a bare version meaning
/// exactly that version. Hyphen ranges and `x` wildcards are read as Masterminds does.
struct SemverRange(Vec<semver::VersionReq>);

impl SemverRange {
    fn parse(text: &str) -> Option<SemverRange> {
        let mut alternatives = Vec::new();
        for alternative in text.split("||") {
            let tokens: Vec<&str> = alternative
                .split([',', ' '])
                .filter(|t| !t.is_empty())
                .collect();
            let mut comparators = Vec::new();
            let mut index = 0;
            while index < tokens.len() {
                let token = tokens[index];
                if tokens.get(index + 1) == Some(&"-") {
                    // `1.2 - 1.4`: an inclusive range.
                    let upper = tokens.get(index + 2)?;
                    comparators.push(format!(">={token}"));
                    comparators.push(format!("<={upper}"));
                    index += 3;
                    continue;
                }
                let operator_only = token.chars().all(|c| "<>=!~^".contains(c));
                let comparator = if operator_only {
                    index += 1;
                    format!("{token}{}", tokens.get(index)?)
                } else {
                    token.to_owned()
                };
                let split = comparator
                    .find(|c: char| !"<>=!~^".contains(c))
                    .unwrap_or(comparator.len());
                let (operator, version) = comparator.split_at(split);
                let comparator =
                    format!("{operator}{}", version.strip_prefix('v').unwrap_or(version));
                let bare = comparator.starts_with(|c: char| c.is_ascii_digit());
                let exact = bare && !comparator.contains(['x', 'X', '*']);
                comparators.push(if exact {
                    format!("={comparator}")
                } else {
                    comparator
                });
                index += 1;
            }
            if comparators.is_empty() {
                comparators.push("*".to_owned());
            }
            alternatives.push(semver::VersionReq::parse(&comparators.join(", ")).ok()?);
        }
        Some(SemverRange(alternatives))
    }

    fn matches(&self, version: &semver::Version) -> bool {
        self.0.iter().any(|req| req.matches(version))
    }
}

async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, SimError> {
    let v = to_value(&*obj);
    if suspended(&v) {
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let generation = obj.metadata.generation;
    let url = v["spec"]["url"].as_str().unwrap_or_default();
    let old = v["status"].clone();
    let mut status = if old.is_object() {
        old.clone()
    } else {
        json!({})
    };
    let mut conditions = conditions_of(&v);
    match resolve(&ctx.registry, url, &v["spec"]["ref"]) {
        Ok((revision, tag)) => {
            if status["artifact"]["revision"] != revision.as_str() {
                // The pull takes a moment, so a Kustomization applying a new tag reports the
                // commit applied before the artifact is stored (as seen with the real
                // controllers in test/realstack: kustomize-controller's final status lands
                // between source-controller's first patch and its artifact), and nothing the
                // HelmRelease's controller writes marks the moment the chart is served.
                tokio::time::sleep(PULL_TIME).await;
                // reconcileArtifact names the stored file after the digest part of the
                // revision (`digestFromRevision`).
                let digest = revision.rsplit('@').next().unwrap_or(&revision).to_owned();
                let path = format!("ocirepository/{ns}/{name}/{}.tar.gz", &digest[7..]);
                status["artifact"] = json!({
                    "revision": revision, "digest": digest, "lastUpdateTime": now(), "path": path,
                    "url": format!("http://source-controller.flux-system.svc.cluster.local./{path}"),
                    "metadata": {"org.opencontainers.image.source": url, VERSION_ANNOTATION: tag},
                });
                status["url"] = json!(format!(
                    "http://source-controller.flux-system.svc.cluster.local./ocirepository/{ns}/{name}/latest.tar.gz"
                ));
            }
            let message = format!("stored artifact for digest '{revision}'");
            set_condition(
                &mut conditions,
                condition("Ready", "True", "Succeeded", &message, generation),
            );
            set_condition(
                &mut conditions,
                condition(
                    "ArtifactInStorage",
                    "True",
                    "Succeeded",
                    &message,
                    generation,
                ),
            );
            conditions.retain(|c| c["type"] != "FetchFailed");
        }
        Err((reason, message)) => {
            // The artifact stays as it was: source-controller keeps serving the last one.
            set_condition(
                &mut conditions,
                condition("FetchFailed", "True", reason, &message, generation),
            );
            set_condition(
                &mut conditions,
                condition("Ready", "False", reason, &message, generation),
            );
        }
    }
    status["conditions"] = json!(conditions);
    status["observedGeneration"] = json!(generation);
    if let Some(at) = requested_at(&v) {
        status["lastHandledReconcileAt"] = json!(at);
    }
    if status != old {
        patch_status(
            &dyn_api(&ctx.client, &oci_repository(), &ns),
            &name,
            status,
            "source-controller",
        )
        .await?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "oci://ghcr.io/example/charts/db";

    #[test]
    fn a_digest_wins_over_semver_and_tag_and_is_the_whole_revision() {
        let registry = OciRegistry::default();
        let old = registry.publish(URL, "1.4.0");
        registry.publish(URL, "1.5.0");
        let both = json!({"tag": "1.5.0", "digest": old, "semver": ">=1.0.0"});
        assert_eq!(
            resolve(&registry, URL, &both),
            Ok((old.clone(), "1.4.0".into()))
        );
        let unknown = json!({"digest": format!("sha256:{}", "0".repeat(64))});
        assert!(matches!(
            resolve(&registry, URL, &unknown),
            Err(("OCIArtifactPullFailed", _))
        ));
    }

    #[test]
    fn a_semver_range_picks_the_highest_matching_tag_over_the_tag() {
        let registry = OciRegistry::default();
        for tag in ["1.4.0", "v1.5.2", "1.10.0", "2.0.0", "1.6.0-rc.1", "latest"] {
            registry.publish(URL, tag);
        }
        let resolved = |range: &str| {
            resolve(&registry, URL, &json!({"tag": "1.4.0", "semver": range}))
                .map(|(revision, tag)| (revision.split('@').next().map(str::to_owned), tag))
        };
        assert_eq!(
            resolved(">=1.0.0 <2.0.0"),
            Ok((Some("1.10.0".into()), "1.10.0".into()))
        );
        assert_eq!(
            resolved("~1.5"),
            Ok((Some("v1.5.2".into()), "v1.5.2".into()))
        );
        assert_eq!(
            resolved("1.4.0"),
            Ok((Some("1.4.0".into()), "1.4.0".into()))
        );
        assert_eq!(resolved("1.4.0 - 1.6.0").map(|r| r.1), Ok("v1.5.2".into()));
        assert_eq!(resolved("^3 || 2.x").map(|r| r.1), Ok("2.0.0".into()));
        assert!(
            matches!(resolved(">=5"), Err(("ReadOperationFailed", m)) if m.contains("no match"))
        );
    }

    #[test]
    fn a_tag_ref_is_tag_at_digest_and_no_ref_is_latest() {
        let registry = OciRegistry::default();
        let tagged = resolve(&registry, URL, &json!({"tag": "v1.4.0"}));
        assert_eq!(
            tagged,
            Ok((
                format!("v1.4.0@{}", manifest_digest(URL, "v1.4.0")),
                "v1.4.0".into()
            ))
        );
        assert_eq!(
            resolve(&registry, URL, &Value::Null).map(|r| r.1),
            Ok("latest".into())
        );
        // Pulled by tag once, the registry answers for its digest too.
        let digest = json!({"digest": manifest_digest(URL, "v1.4.0")});
        assert_eq!(
            resolve(&registry, URL, &digest).map(|r| r.1),
            Ok("v1.4.0".into())
        );
    }
}
