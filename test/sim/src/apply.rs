//! Server-side apply of arbitrary objects and deletion by Flux inventory entry, with kinds
//! resolved (and cached) through API discovery — the write path of the Flux sims.

use anyhow::{Context, Result, anyhow, bail};
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;

/// One Flux inventory entry: `id` = `<namespace>_<name>_<group>_<kind>`, `v` = version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub id: String,
    pub v: String,
}

impl Entry {
    /// The entry for an object.
    pub fn of(namespace: &str, name: &str, api_version: &str, kind: &str) -> Entry {
        let (group, version) = split_api_version(api_version);
        Entry {
            id: format!("{namespace}_{name}_{group}_{kind}"),
            v: version.to_owned(),
        }
    }

    /// (namespace, name, group, kind); `None` for a malformed id.
    pub fn parts(&self) -> Option<(&str, &str, &str, &str)> {
        let mut it = self.id.split('_');
        let parts = (it.next()?, it.next()?, it.next()?, it.next()?);
        it.next().is_none().then_some(parts)
    }

    /// As Flux writes it in `status.inventory.entries`.
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "v": self.v})
    }

    /// Entries from a status `inventory` value (malformed entries skipped).
    pub fn list_from(inventory: &Value) -> Vec<Entry> {
        inventory["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some(Entry {
                    id: e["id"].as_str()?.to_owned(),
                    v: e["v"].as_str()?.to_owned(),
                })
            })
            .collect()
    }
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// Applies objects for one field manager.
pub struct Applier {
    client: Client,
    manager: &'static str,
    kinds: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
}

impl Applier {
    pub fn new(client: Client, manager: &'static str) -> Applier {
        Applier {
            client,
            manager,
            kinds: Mutex::default(),
        }
    }

    /// The API resource of `apiVersion`/`kind` and whether it is namespaced.
    pub async fn resolve(&self, api_version: &str, kind: &str) -> Result<(ApiResource, bool)> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(hit) = self.kinds.lock().ok().and_then(|k| k.get(&key).cloned()) {
            return Ok(hit);
        }
        let (group, version) = split_api_version(api_version);
        let (ar, caps) = pinned_kind(&self.client, &GroupVersionKind::gvk(group, version, kind))
            .await
            .map_err(|e| anyhow!("no API serves {kind} in {api_version}: {e}"))?;
        let found = (ar, caps.scope == Scope::Namespaced);
        if let Ok(mut kinds) = self.kinds.lock() {
            kinds.insert(key, found.clone());
        }
        Ok(found)
    }

    /// Server-side applies `obj` (which must carry its namespace when namespaced) and
    /// returns its inventory entry.
    pub async fn apply(&self, obj: &Value) -> Result<Entry> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let (ar, namespaced) = self.resolve(api_version, kind).await?;
        let api: Api<DynamicObject> = if namespaced {
            let Some(ns) = obj["metadata"]["namespace"].as_str() else {
                // Flux's own wording for this mistake.
                bail!("{kind}/{name} namespace not specified");
            };
            Api::namespaced_with(self.client.clone(), ns, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        };
        let mut body = obj.clone();
        if !namespaced && let Some(m) = body["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        api.patch(
            name,
            &PatchParams::apply(self.manager).force(),
            &Patch::Apply(&body),
        )
        .await
        .with_context(|| format!("applying {kind}/{name}"))?;
        let ns = if namespaced {
            obj["metadata"]["namespace"].as_str().unwrap_or_default()
        } else {
            ""
        };
        Ok(Entry::of(ns, name, api_version, kind))
    }

    /// Deletes the object an inventory entry names; already gone is fine.
    pub async fn delete(&self, entry: &Entry) -> Result<()> {
        let (api, name, kind) = self.api_of(entry).await?;
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting {kind}/{name}")),
        }
    }

    /// Prunes the object an inventory entry names as kustomize-controller does
    /// (`deleteObjects` in v1.9.4, fluxcd/pkg/ssa v0.76.1 `ResourceManager.Delete`): only
    /// while its labels still name `owner` (another Kustomization may have taken it over),
    /// and never when a label or annotation opts it out ([`PRUNE_EXCLUSIONS`]). Already gone
    /// and skipped are both settled.
    pub async fn prune(&self, entry: &Entry, owner: &[(&str, &str)]) -> Result<()> {
        let (api, name, kind) = self.api_of(entry).await?;
        let Some(existing) = api
            .get_opt(name)
            .await
            .with_context(|| format!("reading {kind}/{name} to prune it"))?
        else {
            return Ok(());
        };
        let meta = &existing.metadata;
        let value_of = |map: &Option<std::collections::BTreeMap<String, String>>, key: &str| {
            map.as_ref().and_then(|m| m.get(key)).cloned()
        };
        let owned = owner
            .iter()
            .all(|(k, v)| value_of(&meta.labels, k).as_deref() == Some(*v));
        let opted_out = PRUNE_EXCLUSIONS.iter().any(|(k, v)| {
            [&meta.labels, &meta.annotations]
                .into_iter()
                .any(|m| value_of(m, k).is_some_and(|found| found.eq_ignore_ascii_case(v)))
        });
        if !owned || opted_out {
            return Ok(());
        }
        self.delete(entry).await
    }

    /// The API, name and kind of what an inventory entry names.
    async fn api_of<'e>(&self, entry: &'e Entry) -> Result<(Api<DynamicObject>, &'e str, &'e str)> {
        let (ns, name, group, kind) = entry
            .parts()
            .ok_or_else(|| anyhow!("malformed inventory id {}", entry.id))?;
        let api_version = if group.is_empty() {
            entry.v.clone()
        } else {
            format!("{group}/{}", entry.v)
        };
        let (ar, namespaced) = self.resolve(&api_version, kind).await?;
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(self.client.clone(), ns, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        };
        Ok((api, name, kind))
    }
}

/// Labels and annotations that keep an object from being pruned, as kustomize-controller's
/// `deleteObjects` (v1.9.4) passes them to fluxcd/pkg/ssa: matched in labels or annotations,
/// the value case-insensitively (`utils.AnyInMetadata`).
pub const PRUNE_EXCLUSIONS: [(&str, &str); 3] = [
    ("kustomize.toolkit.fluxcd.io/prune", "disabled"),
    ("kustomize.toolkit.fluxcd.io/reconcile", "disabled"),
    ("kustomize.toolkit.fluxcd.io/ssa", "ignore"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_ids_as_flux_writes_them() {
        let e = Entry::of("apps", "web", "apps/v1", "Deployment");
        assert_eq!(e.id, "apps_web_apps_Deployment");
        assert_eq!(e.v, "v1");
        assert_eq!(e.parts(), Some(("apps", "web", "apps", "Deployment")));
        let ns = Entry::of("", "apps", "v1", "Namespace");
        assert_eq!(ns.id, "_apps__Namespace");
        assert_eq!(ns.parts(), Some(("", "apps", "", "Namespace")));
    }
}
