//! Commit signature verification as source-controller applies it to a GitRepository
//! (`spec.verify`): whether it checks the commit at HEAD, and where it reads the keys it
//! trusts — so that Fluxgate knows before committing whether its commit must be signed, and
//! whether Flux will accept the key it is signed with.

use serde_json::Value;
use std::collections::BTreeMap;

/// Suffix of the verify Secret's keys that hold SSH public keys (`authorized_keys` format).
pub const SSH_KEYS_SUFFIX: &str = ".sshpub";

/// A GitRepository's `spec.verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    /// `spec.verify.mode` as written.
    pub mode: String,
    /// Whether the commit at HEAD is verified (modes `HEAD`, `head`, `TagAndHEAD`).
    pub verifies_head: bool,
    /// `spec.verify.secretRef.name`: the Secret (in the GitRepository's namespace) with the
    /// trusted public keys.
    pub secret: String,
}

/// The verification a GitRepository's `spec` asks for, if any.
///
/// source-controller v1.9.6 `verifySignature` (internal/controller/gitrepository_controller.go)
/// verifies nothing when `spec.verify` is absent or its `mode` is empty (the CRD defaults
/// `mode` to `HEAD`, so an applied object has one); `GitRepositoryVerification.GetMode`
/// (api/v1/gitrepository_types.go) reads any mode other than `HEAD`, `Tag` and `TagAndHEAD`
/// — the legacy `head` among them — as `HEAD`, and `VerifyHEAD` holds for `HEAD` and
/// `TagAndHEAD`.
pub fn verification(spec: &Value) -> Option<Verification> {
    let verify = spec.get("verify")?;
    let mode = verify
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if mode.is_empty() {
        return None;
    }
    Some(Verification {
        mode: mode.to_owned(),
        verifies_head: mode != "Tag",
        secret: verify
            .pointer("/secretRef/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    })
}

/// The verify Secret's SSH public keys, by Secret key: source-controller reads every key
/// ending in `.sshpub` as `authorized_keys` text; every other key is an OpenPGP key ring.
pub fn ssh_keys(secret_data: &BTreeMap<String, Vec<u8>>) -> Vec<(String, String)> {
    secret_data
        .iter()
        .filter(|(key, _)| key.ends_with(SSH_KEYS_SUFFIX))
        .map(|(key, value)| (key.clone(), String::from_utf8_lossy(value).into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn modes_read_as_source_controller_reads_them() {
        let spec = |verify: Value| json!({"url": "https://x", "verify": verify});
        assert_eq!(verification(&json!({"url": "https://x"})), None);
        assert_eq!(
            verification(&spec(json!({"secretRef": {"name": "k"}}))),
            None
        );
        for (mode, head) in [
            ("HEAD", true),
            ("head", true),
            ("TagAndHEAD", true),
            ("Tag", false),
            ("bogus", true),
        ] {
            let found = verification(&spec(json!({"mode": mode, "secretRef": {"name": "keys"}})))
                .expect("verifies");
            assert_eq!(found.verifies_head, head, "{mode}");
            assert_eq!(found.secret, "keys");
        }
    }

    #[test]
    fn only_sshpub_entries_are_ssh_keys() {
        let data = BTreeMap::from([
            (
                "alice.sshpub".to_owned(),
                b"ssh-ed25519 AAAA alice".to_vec(),
            ),
            ("bob.asc".to_owned(), b"-----BEGIN PGP".to_vec()),
            ("legacy".to_owned(), b"-----BEGIN PGP".to_vec()),
        ]);
        assert_eq!(
            ssh_keys(&data),
            vec![(
                "alice.sshpub".to_owned(),
                "ssh-ed25519 AAAA alice".to_owned()
            )]
        );
    }
}
