//! source-controller's commit signature verification (`spec.verify` of a GitRepository), as
//! v1.9.6 does it: `verifySignature` and `verifyGitObject` in
//! internal/controller/gitrepository_controller.go, with fluxcd/pkg/git v0.52.0
//! `Commit.VerifySSH` and `signature.VerifySSHSignature` — keys ending in `.sshpub` are SSH
//! `authorized_keys`, every other key of the Secret an OpenPGP key ring, and the commit's
//! `gpgsig` header is checked against the commit object without it.
//!
//! Not modelled: OpenPGP signatures are recognised but not verified (Fluxgate signs with SSH
//! keys; an OpenPGP-signed HEAD fails here with a message saying so), and `Tag` modes (the
//! sims follow branches only).

use std::collections::BTreeMap;

/// The SSHSIG namespace git signs commits in (Flux's `SSHSignatureNamespace`).
const NAMESPACE: &str = "git";

/// The outcome for one HEAD commit: the `SourceVerified` message on success, or the reason
/// and message source-controller writes to `SourceVerified` and `Ready` on failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Verified: "verified signature of\n\t- commit '<sha>' with key '<fingerprint>'".
    Verified(String),
    /// Refused, with (reason, message).
    Refused(String, String),
}

/// Verifies commit `sha`'s signature (`None` when unsigned) over `payload` (the commit object
/// without its `gpgsig` header) against the verify Secret's `data`.
pub fn verify_head(
    sha: &str,
    signature: Option<&str>,
    payload: &[u8],
    data: &BTreeMap<String, Vec<u8>>,
) -> Verdict {
    // verifySignature: `.sshpub` → authorized keys, anything else → OpenPGP key rings
    // (including the undocumented fallback for keys without a suffix).
    let mut key_rings = Vec::new();
    let mut authorized_keys = Vec::new();
    for (key, value) in data {
        let value = String::from_utf8_lossy(value).into_owned();
        if key.ends_with(".sshpub") {
            authorized_keys.push(value);
        } else {
            key_rings.push(value);
        }
    }
    let signature = signature.unwrap_or_default();
    let result = match signature_type(signature) {
        "openpgp" if key_rings.is_empty() => Err(
            "PGP signature detected but no PGP public keys found in secret (keys with .asc suffix)"
                .to_owned(),
        ),
        "openpgp" => Err(
            "unable to verify Git commit: the simulated source-controller does not verify \
             OpenPGP signatures"
                .to_owned(),
        ),
        "ssh" if authorized_keys.is_empty() => Err(
            "SSH signature detected but no SSH public keys found in secret (keys with .sshpub \
             suffix)"
                .to_owned(),
        ),
        "ssh" => verify_ssh(signature, payload, &authorized_keys)
            .map_err(|e| format!("unable to verify Git commit SSH signature: {e}")),
        other => Err(format!("unsupported signature type: {other}")),
    };
    match result {
        Ok(fingerprint) => Verdict::Verified(format!(
            "verified signature of\n\t- commit '{sha}' with key '{fingerprint}'"
        )),
        Err(e) => Verdict::Refused(
            "InvalidCommitSignature".to_owned(),
            format!("signature verification of commit '{sha}' failed: {e}"),
        ),
    }
}

/// `signature.GetSignatureType`: by the armor's first line.
fn signature_type(signature: &str) -> &'static str {
    let trimmed = signature.trim();
    if trimmed.starts_with("-----BEGIN PGP SIGNATURE-----") {
        "openpgp"
    } else if trimmed.starts_with("-----BEGIN SSH SIGNATURE-----") {
        "ssh"
    } else if trimmed.starts_with("-----BEGIN SIGNED MESSAGE-----") {
        "x509"
    } else if signature.is_empty() {
        "empty"
    } else {
        "unknown"
    }
}

/// `signature.VerifySSHSignature`: the fingerprint (`SHA256:…`) of the first listed key the
/// signature verifies with. An entry with an unparseable line is skipped as a whole; that
/// error is reported only when no entry parsed.
fn verify_ssh(
    signature: &str,
    payload: &[u8],
    authorized_keys: &[String],
) -> Result<String, String> {
    if payload.is_empty() {
        return Err("unable to verify payload: payload is empty".to_owned());
    }
    let signature = ssh_key::SshSig::from_pem(signature.trim())
        .map_err(|e| format!("unable to unarmor SSH signature: {e}"))?;
    let mut parse_error = None;
    let mut attempted = false;
    for entry in authorized_keys {
        let keys: Result<Vec<ssh_key::PublicKey>, String> = entry
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                ssh_key::PublicKey::from_openssh(line)
                    .map_err(|e| format!("unable to parse authorized key: {e}"))
            })
            .collect();
        let keys = match keys {
            Ok(keys) => keys,
            Err(e) => {
                parse_error.get_or_insert(format!("unable to parse authorized keys: {e}"));
                continue;
            }
        };
        attempted = true;
        for key in keys {
            if key.verify(NAMESPACE, payload, &signature).is_ok() {
                return Ok(key.fingerprint(ssh_key::HashAlg::Sha256).to_string());
            }
        }
    }
    match parse_error {
        Some(e) if !attempted => Err(e),
        _ => Err(
            "unable to verify payload with any of the given authorized keys: no matching key"
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::private::Ed25519Keypair;
    use ssh_key::{HashAlg, LineEnding, PrivateKey};

    fn key(seed: u8) -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
    }

    fn sign(key: &PrivateKey, payload: &[u8]) -> String {
        key.sign(NAMESPACE, HashAlg::Sha512, payload)
            .expect("sign")
            .to_pem(LineEnding::LF)
            .expect("pem")
    }

    fn secret(entries: &[(&str, String)]) -> BTreeMap<String, Vec<u8>> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone().into_bytes()))
            .collect()
    }

    #[test]
    fn a_listed_key_verifies_and_anything_else_is_refused() {
        let (ours, theirs) = (key(1), key(2));
        let line = |k: &PrivateKey| k.public_key().to_openssh().expect("public");
        let keys = secret(&[("team.sshpub", format!("# ops\n{}\n", line(&ours)))]);
        let payload = b"tree abc\n\nUpgrade\n";
        let sha = "0123456789abcdef0123456789abcdef01234567";
        match verify_head(sha, Some(&sign(&ours, payload)), payload, &keys) {
            Verdict::Verified(message) => {
                assert!(
                    message.starts_with(&format!(
                        "verified signature of\n\t- commit '{sha}' with key 'SHA256:"
                    )),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        let refused = |signature: Option<&str>, keys: &BTreeMap<String, Vec<u8>>| match verify_head(
            sha, signature, payload, keys,
        ) {
            Verdict::Refused(reason, message) => {
                assert_eq!(reason, "InvalidCommitSignature");
                assert!(
                    message.starts_with(&format!(
                        "signature verification of commit '{sha}' failed: "
                    )),
                    "{message}"
                );
                message
            }
            other => panic!("{other:?}"),
        };
        assert!(refused(None, &keys).ends_with("unsupported signature type: empty"));
        assert!(refused(Some(&sign(&theirs, payload)), &keys).contains("no matching key"));
        let tampered = sign(&ours, b"tree abc\n\nSomething else\n");
        assert!(refused(Some(&tampered), &keys).contains("no matching key"));
        let pgp_only = secret(&[("alice.asc", "-----BEGIN PGP PUBLIC KEY BLOCK-----".into())]);
        assert!(
            refused(Some(&sign(&ours, payload)), &pgp_only)
                .contains("SSH signature detected but no SSH public keys found")
        );
        let broken = secret(&[("x.sshpub", "not a key".into())]);
        assert!(
            refused(Some(&sign(&ours, payload)), &broken)
                .contains("unable to parse authorized keys")
        );
    }
}
