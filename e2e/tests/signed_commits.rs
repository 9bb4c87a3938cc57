//! Story: the fleet's GitRepository verifies the signature of the commit it serves
//! (`spec.verify.mode: HEAD`, trusted SSH keys in Secret `flux-system/commit-keys`), as
//! source-controller v1.9 does: an unsigned or wrongly signed HEAD leaves it
//! `Ready=False` with reason `InvalidCommitSignature` and serves no new artifact — for every
//! app of the repository.
//!
//! Before the fix Fluxgate committed unsigned: Flux refused the commit, Reconcile timed out,
//! and the rollback's revert commit was unsigned too. Now an app with `spec.git.signing`
//! signs its commits and Flux serves them; an app without it is refused at Admit, nothing
//! touched.

use e2e::checks::{snapshots_of, suspended, upgrade_problems};
use e2e::given::{app, create};
use fluxgate::api::{FluxObjectKind, Phase, UpgradeRequest};
use fluxgate::cluster::flux::ops::get;
use fluxgate::demo::world::{APP_FILE, DemoWorld, Fleet, wait_until};
use fluxgate::git::{
    Author, CommitRequest, EditResult, FileEdit, Git2Repo, GitAuth, GitConfig, GitRepo, RemoteSpec,
    SigningKey,
};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use ssh_key::private::Ed25519Keypair;
use ssh_key::{LineEnding, PrivateKey};
use std::time::Duration;

e2e::on_all_stacks!(
    a_signed_upgrade_on_a_verifying_repository_is_served,
    an_app_without_a_signing_key_is_refused_at_admit
);

/// The team member who signed the repository's HEAD before verification was turned on.
fn alice() -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[0xa1; 32]))
}

/// Fluxgate's signing key.
fn fluxgate_key() -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[0xf9; 32]))
}

fn public_line(key: &PrivateKey) -> String {
    key.public_key().to_openssh().unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn create_secret(story: &DemoWorld, namespace: &str, name: &str, data: Value) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace}, "data": data,
    }))
    .unwrap();
    create(&story.client, &secret).await.unwrap();
}

/// The GitRepository `flux-system` now.
async fn repository(story: &DemoWorld) -> Value {
    get(
        &story.cluster(),
        FluxObjectKind::GitRepository,
        "flux-system",
        "flux-system",
    )
    .await
    .unwrap()
    .unwrap()
    .data
}

fn condition<'a>(repository: &'a Value, type_: &str) -> Option<&'a Value> {
    repository["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// A fleet whose HEAD Alice signed, then verification turned on for her key and Fluxgate's;
/// the app signs with Fluxgate's key when `signing` is set.
async fn verifying_fleet(signing: bool) -> DemoWorld {
    // A short Reconcile timeout: without the fix the refused commit fails there.
    let mut settings = app().reconcile_timeout("20s");
    if signing {
        settings = settings.signed_with("fluxgate-signing");
    }
    let story = e2e::given::world(Fleet::new().helm_app("db", "v1.4.0", 2, settings.into()))
        .await
        .unwrap();

    // Alice signs a commit, as the team does before turning verification on.
    let cache = tempfile::tempdir().unwrap();
    let repo = Git2Repo::open(
        GitConfig::new(cache.path()),
        RemoteSpec {
            url: story.git.file_url(),
            branch: "main".into(),
            auth: GitAuth::Anonymous,
        },
    )
    .unwrap();
    repo.commit_and_push(CommitRequest {
        message: "Sign the fleet's head".into(),
        author: Author::new("Alice", "alice@example.com"),
        trailers: vec![],
        edits: vec![FileEdit::new("README.md", |_| {
            Ok(EditResult::Replace(b"Signed commits only.\n".to_vec()))
        })],
        idempotency: None,
        signing: Some(SigningKey::from_private_key(alice())),
    })
    .await
    .unwrap();
    let signed_head = story.git.head().unwrap();

    create_secret(
        &story,
        "flux-system",
        "commit-keys",
        json!({
            "alice.sshpub": b64(public_line(&alice()).as_bytes()),
            "fluxgate.sshpub": b64(public_line(&fluxgate_key()).as_bytes()),
        }),
    )
    .await;
    if signing {
        let pem = fluxgate_key().to_openssh(LineEnding::LF).unwrap();
        create_secret(
            &story,
            "apps",
            "fluxgate-signing",
            json!({"identity": b64(pem.as_bytes())}),
        )
        .await;
    }
    sim::kinds::dyn_api(&story.client, &sim::kinds::git_repository(), "flux-system")
        .patch(
            "flux-system",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"verify": {
                "mode": "HEAD", "secretRef": {"name": "commit-keys"}}}})),
        )
        .await
        .unwrap();
    wait_until(
        "the GitRepository to serve Alice's verified commit",
        Duration::from_secs(30),
        async || {
            let repository = repository(&story).await;
            let served = repository["status"]["artifact"]["revision"]
                .as_str()?
                .ends_with(&signed_head);
            let verified = condition(&repository, "SourceVerified")?["status"] == "True";
            (served && verified).then_some(())
        },
    )
    .await
    .unwrap();
    story
}

async fn a_signed_upgrade_on_a_verifying_repository_is_served() {
    let story = verifying_fleet(true).await;
    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    let done: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(120))
        .await
        .unwrap();
    let problems = upgrade_problems(&story, &done, "v1.5.0").await;
    assert!(problems.is_empty(), "{problems:?}");

    // Flux verified our commit with our key and serves it.
    let ours = done.status.unwrap().commit.unwrap().sha;
    let repository = repository(&story).await;
    assert!(
        repository["status"]["artifact"]["revision"]
            .as_str()
            .unwrap()
            .ends_with(&ours),
        "{repository:#}"
    );
    let verified = condition(&repository, "SourceVerified").unwrap();
    let fingerprint = SigningKey::from_private_key(fluxgate_key()).fingerprint();
    assert_eq!(verified["status"], "True", "{verified:#}");
    assert!(
        verified["message"]
            .as_str()
            .unwrap()
            .contains(&format!("commit '{ours}' with key '{fingerprint}'")),
        "{verified:#}"
    );
    assert_eq!(condition(&repository, "Ready").unwrap()["status"], "True");
    story.stop().await;
}

async fn an_app_without_a_signing_key_is_refused_at_admit() {
    let story = verifying_fleet(false).await;
    story.upgrade("db-1-5-0", "v1.5.0").await.unwrap();
    let done: UpgradeRequest = story
        .finished("db-1-5-0", Duration::from_secs(180))
        .await
        .unwrap();
    let status = done.status.clone().unwrap();
    let failure = status
        .failure
        .clone()
        .unwrap_or_else(|| panic!("no failure: {status:#?}"));
    assert_eq!(
        (failure.phase, failure.reason.as_str()),
        (Phase::Admit, "CommitSigningRequired"),
        "{}",
        failure.message
    );
    for words in [
        "GitRepository flux-system/flux-system",
        "InvalidCommitSignature",
        "spec.git.signing.secretRef",
        "flux-system/commit-keys",
        ".sshpub",
    ] {
        assert!(
            failure.message.contains(words),
            "{words:?} in {}",
            failure.message
        );
    }
    // Nothing touched: no suspend, no snapshot, no commit; Flux still serves Alice's commit.
    assert_eq!(suspended(&story).await, Some((false, false)));
    assert_eq!(snapshots_of(&story, &done.uid().unwrap()).await, 0);
    assert_eq!(story.git.log().unwrap().len(), 2, "Git unchanged");
    assert_eq!(
        story.git.read_file(APP_FILE).unwrap(),
        Some(story.app_manifest("v1.4.0"))
    );
    let repository = repository(&story).await;
    assert_eq!(condition(&repository, "Ready").unwrap()["status"], "True");
    story.stop().await;
}
