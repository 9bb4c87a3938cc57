//! Commit signatures: an SSH private key from a Secret signs Fluxgate's commits the way
//! `git commit -S` with `gpg.format=ssh` does — an SSHSIG over the commit object, namespace
//! `git`, SHA-512, armored, in the commit's `gpgsig` header — which source-controller
//! (v1.9: `verifyGitObject` in internal/controller/gitrepository_controller.go, through
//! fluxcd/pkg/git `signature.VerifySSHSignature`) checks against the `.sshpub` keys of a
//! GitRepository's `spec.verify` Secret.

use std::collections::BTreeMap;

use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey};

/// The SSHSIG namespace git signs commits in (`gpg.ssh` signing; Flux's
/// `SSHSignatureNamespace`).
pub const SIGNATURE_NAMESPACE: &str = "git";

/// Secret key holding the SSH private key (as image-automation-controller's SSH signing
/// key and Flux's git secrets name it).
pub const IDENTITY_KEY: &str = "identity";
/// Secret key holding the private key's passphrase, if it has one.
pub const PASSPHRASE_KEY: &str = "password";
/// Secret key image-automation-controller reads an OpenPGP signing key from.
pub const OPENPGP_KEY: &str = "git.asc";

/// Why a Secret's data is not a usable signing key; never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SigningKeyError(pub String);

/// A private key that signs commits. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct SigningKey {
    key: PrivateKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads the key from a Secret's decoded data: `identity` (an OpenSSH private key,
    /// Ed25519 or ECDSA) with an optional `password` (its passphrase).
    pub fn from_secret_data(
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<SigningKey, SigningKeyError> {
        let Some(identity) = data.get(IDENTITY_KEY) else {
            if data.contains_key(OPENPGP_KEY) {
                return Err(SigningKeyError(format!(
                    "it holds an OpenPGP key (`{OPENPGP_KEY}`), which Fluxgate cannot sign with \
                     yet; put an SSH private key (ssh-keygen -t ed25519) in `{IDENTITY_KEY}` and \
                     its public key in the GitRepository's verify Secret under a key ending in \
                     `.sshpub`"
                )));
            }
            return Err(SigningKeyError(format!(
                "it has no `{IDENTITY_KEY}` key; put an SSH private key (ssh-keygen -t ed25519) \
                 there"
            )));
        };
        let key = PrivateKey::from_openssh(identity).map_err(|_| {
            SigningKeyError(format!(
                "`{IDENTITY_KEY}` is not an OpenSSH private key (expected `-----BEGIN OPENSSH \
                 PRIVATE KEY-----`, as ssh-keygen writes it)"
            ))
        })?;
        let key = if key.is_encrypted() {
            let passphrase = data.get(PASSPHRASE_KEY).ok_or_else(|| {
                SigningKeyError(format!(
                    "the key in `{IDENTITY_KEY}` is encrypted but there is no `{PASSPHRASE_KEY}` \
                     key with its passphrase"
                ))
            })?;
            key.decrypt(passphrase).map_err(|_| {
                SigningKeyError(format!(
                    "the passphrase in `{PASSPHRASE_KEY}` does not decrypt the key in \
                     `{IDENTITY_KEY}`"
                ))
            })?
        } else {
            key
        };
        // Sign once now, so a key type we cannot sign with is refused when the key is read
        // (at Admit) rather than when the commit is made.
        let signer = SigningKey { key };
        signer.sign(b"fluxgate signing key check").map_err(|_| {
            SigningKeyError(format!(
                "the {} key in `{IDENTITY_KEY}` cannot sign; use an Ed25519 (ssh-keygen -t \
                 ed25519) or ECDSA key",
                signer.key.algorithm()
            ))
        })?;
        Ok(signer)
    }

    /// Wraps a key (tests and fixtures).
    pub fn from_private_key(key: PrivateKey) -> SigningKey {
        SigningKey { key }
    }

    /// The public key in `authorized_keys` form (`ssh-ed25519 AAAA… comment`): the line to
    /// add to the GitRepository's verify Secret.
    pub fn public_key_line(&self) -> String {
        let mut public = self.key.public_key().clone();
        if public.comment().is_empty() {
            public.set_comment("fluxgate");
        }
        public.to_openssh().unwrap_or_else(|_| self.fingerprint())
    }

    /// `SHA256:…`, as `ssh-keygen -l` and source-controller's verified message show it.
    pub fn fingerprint(&self) -> String {
        self.key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }

    /// Whether `authorized_keys` (one key per line, `#` comments, as a verify Secret's
    /// `.sshpub` entry holds them) lists this key.
    pub fn listed_in(&self, authorized_keys: &str) -> bool {
        let ours = self.key.public_key().key_data();
        authorized_keys
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| PublicKey::from_openssh(line).ok())
            .any(|key| key.key_data() == ours)
    }

    /// The armored signature of `payload` (the commit object without its `gpgsig` header),
    /// without the final newline (libgit2 writes the header's line breaks itself).
    pub fn sign(&self, payload: &[u8]) -> Result<String, SigningKeyError> {
        let signature = self
            .key
            .sign(SIGNATURE_NAMESPACE, HashAlg::Sha512, payload)
            .map_err(|e| SigningKeyError(format!("signing the commit failed: {e}")))?;
        let armored = signature
            .to_pem(LineEnding::LF)
            .map_err(|e| SigningKeyError(format!("encoding the signature failed: {e}")))?;
        Ok(armored.trim_end().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::private::Ed25519Keypair;

    fn key(seed: u8) -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
    }

    fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect()
    }

    #[test]
    fn signs_what_the_public_key_verifies() {
        let pem = key(1).to_openssh(LineEnding::LF).expect("pem");
        let signer =
            SigningKey::from_secret_data(&data(&[(IDENTITY_KEY, pem.as_bytes())])).expect("key");
        let armored = signer.sign(b"tree 123\n\nmessage\n").expect("sign");
        assert!(
            armored.starts_with("-----BEGIN SSH SIGNATURE-----\n"),
            "{armored}"
        );
        assert!(
            armored.ends_with("-----END SSH SIGNATURE-----"),
            "{armored}"
        );
        let parsed = ssh_key::SshSig::from_pem(&armored).expect("parses");
        let public = PublicKey::from_openssh(&signer.public_key_line()).expect("public");
        public
            .verify(SIGNATURE_NAMESPACE, b"tree 123\n\nmessage\n", &parsed)
            .expect("verifies");
        assert!(
            public
                .verify(SIGNATURE_NAMESPACE, b"other", &parsed)
                .is_err()
        );
        assert!(signer.fingerprint().starts_with("SHA256:"));
        assert!(!format!("{signer:?}").contains("PRIVATE"));
    }

    #[test]
    fn finds_itself_in_authorized_keys() {
        let signer = SigningKey::from_private_key(key(2));
        let other = SigningKey::from_private_key(key(3));
        let listed = format!("# team keys\n{}\n\n", other.public_key_line());
        assert!(!signer.listed_in(&listed));
        let listed = format!("{listed}{}\n", signer.public_key_line());
        assert!(signer.listed_in(&listed));
        assert!(!signer.listed_in("not a key"));
    }

    #[test]
    fn encrypted_keys_need_their_passphrase() {
        let encrypted = key(4)
            .encrypt(&mut ssh_key::rand_core::OsRng, "s3cret")
            .expect("encrypt")
            .to_openssh(LineEnding::LF)
            .expect("pem");
        let err = SigningKey::from_secret_data(&data(&[(IDENTITY_KEY, encrypted.as_bytes())]))
            .expect_err("no passphrase");
        assert!(err.0.contains("`password`"), "{err}");
        let err = SigningKey::from_secret_data(&data(&[
            (IDENTITY_KEY, encrypted.as_bytes()),
            (PASSPHRASE_KEY, b"wrong"),
        ]))
        .expect_err("wrong passphrase");
        assert!(err.0.contains("does not decrypt"), "{err}");
        SigningKey::from_secret_data(&data(&[
            (IDENTITY_KEY, encrypted.as_bytes()),
            (PASSPHRASE_KEY, b"s3cret"),
        ]))
        .expect("decrypts");
    }

    #[test]
    fn unusable_secrets_say_what_to_put_there() {
        let err = SigningKey::from_secret_data(&data(&[(OPENPGP_KEY, b"-----BEGIN PGP")]))
            .expect_err("openpgp");
        assert!(
            err.0.contains("OpenPGP") && err.0.contains(".sshpub"),
            "{err}"
        );
        let err = SigningKey::from_secret_data(&data(&[])).expect_err("empty");
        assert!(err.0.contains("no `identity`"), "{err}");
        let err = SigningKey::from_secret_data(&data(&[(IDENTITY_KEY, b"garbage")]))
            .expect_err("garbage");
        assert!(err.0.contains("not an OpenSSH private key"), "{err}");
    }
}
