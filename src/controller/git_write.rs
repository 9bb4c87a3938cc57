//! Whether Fluxgate may write the app's repository, checked before anything is touched: the
//! Git server grants the credentials a push (`flux bootstrap` makes read-only deploy keys),
//! and the commit will carry the signature the GitRepository behind the app requires
//! (source-controller refuses an unsigned HEAD, which stalls the whole repository) — plus
//! the words a push refused at Commit needs.

use super::Context;
use super::git_access::{GitLocation, secret_data};
use crate::api::{FluxObjectKind, ManagedApp, PlannedFluxObject, PushAccessCheck};
use crate::cluster::error::describe;
use crate::cluster::flux::ops::{GitSource, get, git_source};
use crate::cluster::flux::verification::{SSH_KEYS_SUFFIX, ssh_keys, verification};
use crate::git::{GitError, GitRepo, PushAccess, SigningKey};
use crate::workflow::Problem;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

/// What to do about credentials that may read but not push.
const WRITE_ACCESS_FIX: &str = "set spec.git.secretRef to a Secret whose token or deploy key may \
     push (`flux bootstrap` creates read-only deploy keys; see docs/git-credentials.md)";

/// Asks the Git server for a push connection with the app's credentials (after a successful
/// read). A refusal ends the request before anything is touched.
pub async fn check_push_access(
    repo: &dyn GitRepo,
    location: &GitLocation,
) -> Result<PushAccessCheck, Problem> {
    match repo.push_access().await.map_err(Problem::from)? {
        PushAccess::Offered => Ok(PushAccessCheck::Offered),
        PushAccess::NotChecked => Ok(PushAccessCheck::NotCheckable),
        PushAccess::Refused { detail } => Err(Problem::terminal(
            "GitReadOnly",
            format!(
                "{} may read {} but the server refuses it a push ({detail}); {WRITE_ACCESS_FIX}. \
                 Nothing was changed",
                capitalized(&location.credentials()),
                location.shown_url()
            ),
        )),
    }
}

/// A failed commit-and-push as a problem: a push the server refused (credentials, branch
/// protection, a hook) names the credentials it used and the fix; other errors as they are.
/// `admitted` is what Admit's push-connection check found.
pub fn push_problem(
    error: GitError,
    location: &GitLocation,
    admitted: Option<PushAccessCheck>,
) -> Problem {
    if !matches!(error, GitError::Rejected { .. } | GitError::Auth { .. }) {
        return Problem::from(error);
    }
    let checked = match admitted {
        Some(PushAccessCheck::Offered) => {
            " Admit found the server offering these credentials a push connection, so it \
             refuses only the push itself: a permission the server checks at push (Gitea does \
             so for a user with read access), branch protection or a hook."
        }
        _ => "",
    };
    Problem::terminal(
        "GitPushRefused",
        format!(
            "{error}. The push used {}.{checked} If the credentials are read-only, {WRITE_ACCESS_FIX}",
            location.credentials()
        ),
    )
}

/// The key the app's commits are signed with (`spec.git.signing`), read from its Secret.
pub async fn signing_key(ctx: &Context, app: &ManagedApp) -> Result<Option<SigningKey>, Problem> {
    let Some(signing) = &app.spec.git.signing else {
        return Ok(None);
    };
    let namespace = app.namespace().unwrap_or_default();
    let name = &signing.secret_ref.name;
    let data = secret_data(
        ctx,
        &namespace,
        name,
        "commit signing (spec.git.signing.secretRef)",
        "SigningSecretNotFound",
    )
    .await?;
    SigningKey::from_secret_data(&data).map(Some).map_err(|e| {
        Problem::terminal(
            "SigningKeyInvalid",
            format!(
                "the commit signing Secret {namespace}/{name} (spec.git.signing.secretRef): {e}"
            ),
        )
    })
}

/// The GitRepository Flux deploys the app from, `None` when none does; API trouble is a
/// retryable problem.
pub async fn deploying_source(
    ctx: &Context,
    chain: &[PlannedFluxObject],
) -> Result<Option<GitSource>, Problem> {
    match git_source(&ctx.cluster, chain).await {
        Ok(source) => Ok(Some(source)),
        Err(e) if !e.is_retryable() => Ok(None),
        Err(e) => Err(Problem::retryable("ApiError", e.to_string())),
    }
}

/// Refuses an app whose commits the GitRepository behind it would refuse: it verifies HEAD
/// (`spec.verify`) and the app signs nothing, or signs with a key its verify Secret does not
/// list. A repository that verifies nothing, or an app without a GitRepository (`deploying`
/// is `None`: its Git location is explicit), passes.
pub async fn check_signing(
    ctx: &Context,
    app: &ManagedApp,
    deploying: Option<&GitSource>,
) -> Result<(), Problem> {
    let key = signing_key(ctx, app).await?;
    let Some(source) = deploying else {
        return Ok(());
    };
    let (namespace, name) = &source.repository;
    let Some(repository) = get(&ctx.cluster, FluxObjectKind::GitRepository, namespace, name)
        .await
        .map_err(|e| Problem::retryable("ApiError", e.to_string()))?
    else {
        return Ok(());
    };
    let Some(verify) = verification(&repository.data["spec"]) else {
        return Ok(());
    };
    if !verify.verifies_head {
        return Ok(());
    }
    let Some(key) = key else {
        return Err(Problem::terminal(
            "CommitSigningRequired",
            format!(
                "GitRepository {namespace}/{name} verifies the signature of the commit it serves \
                 (spec.verify.mode {}): an unsigned commit would be refused \
                 (InvalidCommitSignature) and stall the repository for every app it deploys. Set \
                 spec.git.signing.secretRef to a Secret with an SSH private key in `identity` \
                 (ssh-keygen -t ed25519) and add its public key to the Secret {namespace}/{} \
                 under a key ending in `{SSH_KEYS_SUFFIX}` (source-controller v1.9 or later \
                 verifies SSH signatures). Nothing was changed",
                verify.mode, verify.secret
            ),
        ));
    };
    let trusted = match Api::<Secret>::namespaced(ctx.cluster.client().clone(), namespace)
        .get_opt(&verify.secret)
        .await
    {
        Ok(Some(secret)) => secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
        Ok(None) => {
            return Err(Problem::terminal(
                "VerificationSecretNotFound",
                format!(
                    "GitRepository {namespace}/{name} verifies commits against the Secret \
                     {namespace}/{}, which does not exist: source-controller accepts no commit \
                     until it does. Create it with the public key of spec.git.signing under a key \
                     ending in `{SSH_KEYS_SUFFIX}`",
                    verify.secret
                ),
            ));
        }
        // Fluxgate may not read Secrets there: Flux has the last word; nothing to check.
        Err(kube::Error::Api(status)) if status.code == 403 => {
            tracing::info!(gitrepository = %format!("{namespace}/{name}"),
                "cannot read the verify Secret; not checking that it lists the signing key");
            return Ok(());
        }
        Err(e) => {
            return Err(Problem::retryable(
                "ApiError",
                format!(
                    "reading Secret {namespace}/{}: {}",
                    verify.secret,
                    describe(&e)
                ),
            ));
        }
    };
    if ssh_keys(&trusted)
        .iter()
        .any(|(_, keys)| key.listed_in(keys))
    {
        return Ok(());
    }
    Err(Problem::terminal(
        "SigningKeyNotTrusted",
        format!(
            "GitRepository {namespace}/{name} verifies commits against the Secret {namespace}/{}, \
             which does not list the signing key {} of spec.git.signing: Flux would refuse the \
             commit (InvalidCommitSignature). Add `fluxgate{SSH_KEYS_SUFFIX}: {}` to that Secret. \
             Nothing was changed",
            verify.secret,
            key.fingerprint(),
            key.public_key_line()
        ),
    ))
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn borrowed() -> GitLocation {
        GitLocation {
            url: "https://u:tok@git.example/fleet.git".into(),
            branch: "main".into(),
            secret: Some(("flux-system".into(), "flux-system".into())),
            secret_of_repository: Some(("flux-system".into(), "flux-system".into())),
        }
    }

    #[test]
    fn a_refused_push_names_the_credentials_and_the_fix() {
        let rejected = GitError::Rejected {
            remote: "https://***@git.example/fleet.git".into(),
            branch: "main".into(),
            reason: "pre-receive hook declined; the server said: Gitea: User permission denied \
                     for writing."
                .into(),
        };
        let problem = push_problem(rejected, &borrowed(), Some(PushAccessCheck::Offered));
        assert_eq!(problem.reason, "GitPushRefused");
        assert!(!problem.retryable);
        for words in [
            "User permission denied for writing",
            "the Secret flux-system/flux-system of GitRepository flux-system/flux-system",
            "spec.git.secretRef",
            "offering these credentials a push connection",
        ] {
            assert!(
                problem.message.contains(words),
                "{words}: {}",
                problem.message
            );
        }
        assert!(!problem.message.contains("u:tok@"), "{}", problem.message);

        let network = GitError::Network {
            remote: "r".into(),
            branch: "main".into(),
            detail: "refused".into(),
        };
        let problem = push_problem(network, &borrowed(), None);
        assert_eq!(problem.reason, "GitError");
        assert!(problem.retryable);
    }

    #[test]
    fn credentials_are_described_by_where_they_come_from() {
        let mut location = borrowed();
        assert!(location.credentials().contains("of GitRepository"));
        location.secret_of_repository = None;
        location.secret = Some(("apps".into(), "push".into()));
        assert_eq!(
            location.credentials(),
            "the Secret apps/push (spec.git.secretRef)"
        );
        location.secret = None;
        assert!(location.credentials().starts_with("no credentials"));
        assert_eq!(capitalized("the x"), "The x");
    }
}
