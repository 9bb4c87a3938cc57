//! e2e: end-to-end stories for Fluxgate, run through the real controller loop (`tests/`),
//! told in one vocabulary: what a story starts from and asks for (`given`), what happens to
//! the world meanwhile (`when`), what it reads back to check (`then`), and the end-state
//! checks the invariant, crash and fault tests share (`checks`). A story runs on kubesim and
//! the simulated world, and — declared with [`on_both_stacks!`] — also on a real control
//! plane of its own (`stack`), with the chart installed by real Helm and Fluxgate running
//! as its ServiceAccount (`real_operator`); declared with [`on_all_stacks!`] the real control
//! plane runs the real Flux controllers too (`real_flux`). Also the benchmarks (`src/bin/`)
//! and the Helm chart rendered with real Helm (`chart`). Story (a) also runs against a cluster of yours
//! when `FLUXGATE_E2E_KUBECONFIG` is set (`tests/real_cluster.rs`, set up as the README
//! says); without it that test reports itself skipped.

pub mod chart;
pub mod checks;
pub mod given;
pub mod real_flux;
pub mod real_operator;
pub mod stack;
pub mod then;
pub mod when;

use fluxgate::demo::world::DemoWorld;
use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use kube::api::Api;

/// A namespaced kind a story reads whole.
pub trait StoryKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> StoryKind for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// The story's objects of kind `K` in namespace `apps`, for a one-off read or write that no
/// `given`, `when` or `then` helper names.
pub fn api<K>(story: &DemoWorld) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    Api::namespaced(story.client.clone(), given::NAMESPACE)
}
