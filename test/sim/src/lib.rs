//! sim: the simulated world around Fluxgate, driven by kubesim's watches.
//!
//! Flux source/kustomize/helm controllers that read a real Git repository, a CSI snapshot
//! controller, Deployment/StatefulSet/pod controllers, a PVC binder and git servers
//! (`file://` and smart HTTP) for tests and `fluxgate demo`.

pub mod git_server;
pub mod helm_secret;
