//! The automatic-upgrade decision: whether an app's `updatePolicy` lets Fluxgate create an
//! UpgradeRequest now, for which target, under which deterministic name and labels.

use super::choice::is_failed;
use super::schedule::{Window, WindowState};
use crate::api::{AutoUpdate, AvailableUpdate, FailedVersion, UpdatePolicy, UpdateType};
use crate::manifest::{normalize, versions_equal};
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;

/// Label on every UpgradeRequest Fluxgate creates on its own.
pub const AUTOMATIC_LABEL: &str = "fluxgate.dev/automatic";
/// Label naming the ManagedApp a request belongs to.
pub const APP_LABEL: &str = "fluxgate.dev/app";
/// Longest generated name: a DNS-1123 label (63), stricter than the 253 an object name may
/// have, so the name can also be a label value and a prefix of derived names.
pub const MAX_NAME_LEN: usize = 63;

/// Whether `auto` lets an update of this type be applied automatically.
///
/// `patch` ≤ `minor` ≤ `major`. A digest-only update (same tag, new digest: a rebuild)
/// counts as a patch. `other` — versions that are not semver and whose size Renovate could
/// not tell either — is allowed only by `major`, which means "every update".
pub fn auto_allows(auto: AutoUpdate, update_type: UpdateType, digest_only: bool) -> bool {
    let needed = match update_type {
        _ if digest_only => AutoUpdate::Patch,
        UpdateType::Patch | UpdateType::Digest => AutoUpdate::Patch,
        UpdateType::Minor => AutoUpdate::Minor,
        // A pin may land anywhere in the range it replaces.
        UpdateType::Major | UpdateType::Pin | UpdateType::Other => AutoUpdate::Major,
    };
    auto != AutoUpdate::None && auto >= needed
}

/// Whether an offered update changes only the digest (same tag under normalisation).
fn is_digest_only(update: &AvailableUpdate) -> bool {
    versions_equal(&update.current, &update.version) && update.current != update.version
}

/// What the controller should do about automatic upgrades for one app, now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoDecision {
    /// Create this UpgradeRequest (if one of that name exists, it already was).
    Create {
        name: String,
        /// Version name → version to write.
        target: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    },
    /// Not now; decide again at `until` (when known) or when something changes.
    Wait {
        reason: String,
        until: Option<Timestamp>,
    },
    /// Not for the current data, whatever the time; decide again when it changes.
    Never { reason: String },
}

/// The facts the decision rests on, besides the app's policy and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    /// No operation holds the app's lock and none is queued.
    pub app_idle: bool,
    /// Automatic upgrades running now, over all apps.
    pub running_auto_upgrades: usize,
    /// The operator's limit on concurrent automatic upgrades (default 1; 0 turns automatic
    /// upgrades off everywhere).
    pub global_limit: usize,
    pub now: Timestamp,
}

/// Decides for app `app`.
///
/// Order: reasons that no amount of waiting fixes (`Never`: auto is `none`, nothing
/// allowed, a failed version, an unknown release time under `minReleaseAge`, a broken
/// window) come before reasons that pass (`Wait`: release too young, window closed, the app
/// busy, the global limit). Fields the policy does not allow are left out of the target and
/// upgraded only by a person; fields whose release is too young wait for their own request
/// rather than holding back the others.
///
/// The window gates only the creation of a request: a running upgrade always finishes,
/// even when the window closes meanwhile.
///
/// A release without a known time never satisfies `minReleaseAge`: the point of the rule is
/// letting a release prove itself, and an unknown age proves nothing.
pub fn auto_upgrade(
    app: &str,
    policy: &UpdatePolicy,
    available: &BTreeMap<String, AvailableUpdate>,
    failed: &[FailedVersion],
    situation: Situation,
) -> AutoDecision {
    let now = situation.now;
    if policy.auto == AutoUpdate::None {
        return never("updatePolicy.auto is none: updates are only shown");
    }
    if available.is_empty() {
        return never("no update available");
    }
    let min_age = match &policy.min_release_age {
        None => None,
        Some(age) => match age.to_std().map(SignedDuration::try_from) {
            Ok(Ok(age)) => Some(age),
            _ => {
                return never(format!(
                    "updatePolicy.minReleaseAge `{age}` is not a duration"
                ));
            }
        },
    };
    let mut target = BTreeMap::new();
    let mut refused = Vec::new();
    let mut matures: Option<Timestamp> = None;
    for (field, update) in available {
        if is_failed(field, &update.version, failed) {
            refused.push(format!("{field} {} failed before", update.version));
            continue;
        }
        if !auto_allows(policy.auto, update.update_type, is_digest_only(update)) {
            refused.push(format!(
                "{field} {} is a {} update, beyond auto: {}",
                update.version,
                update.update_type.as_str(),
                auto_name(policy.auto)
            ));
            continue;
        }
        if let Some(age) = min_age {
            let Some(released) = update.released_at.as_ref().map(|t| t.0) else {
                refused.push(format!(
                    "{field} {} has no known release time, so minReleaseAge {} cannot be met",
                    update.version,
                    policy.min_release_age.as_ref().map_or("", |a| a.as_str())
                ));
                continue;
            };
            let old_enough = released.checked_add(age).unwrap_or(Timestamp::MAX);
            if old_enough > now {
                matures = Some(matures.map_or(old_enough, |m| m.min(old_enough)));
                continue;
            }
        }
        target.insert(field.clone(), update.version.clone());
    }
    if target.is_empty() && matures.is_none() {
        return never(refused.join("; "));
    }
    let window = match &policy.window {
        None => None,
        Some(spec) => match Window::from_spec(spec) {
            Ok(window) => Some(window),
            Err(err) => return never(format!("updatePolicy.window: {err}")),
        },
    };
    if target.is_empty() {
        // Only young releases: wait until the first is old enough and the window is open.
        let ready = matures.unwrap_or(now);
        let until = match &window {
            Some(window) => match window.next_open(ready) {
                Some(opens) => Some(opens),
                None => {
                    return never(format!(
                        "the maintenance window `{}` never opens again",
                        window.schedule
                    ));
                }
            },
            None => Some(ready),
        };
        return AutoDecision::Wait {
            reason: format!(
                "waiting for minReleaseAge {}",
                policy.min_release_age.as_ref().map_or("", |a| a.as_str())
            ),
            until,
        };
    }
    if let Some(window) = &window
        && let WindowState::Closed { opens } = window.state(now)
    {
        let reason = match opens {
            Some(_) => format!("outside the maintenance window `{}`", window.schedule),
            None => format!(
                "the maintenance window `{}` never opens again",
                window.schedule
            ),
        };
        if opens.is_none() {
            return never(reason);
        }
        return AutoDecision::Wait {
            reason,
            until: opens,
        };
    }
    if !situation.app_idle {
        return AutoDecision::Wait {
            reason: "another operation holds the app".into(),
            until: None,
        };
    }
    if situation.running_auto_upgrades >= situation.global_limit {
        return AutoDecision::Wait {
            reason: format!(
                "{} automatic upgrade(s) running, the limit is {}",
                situation.running_auto_upgrades, situation.global_limit
            ),
            until: None,
        };
    }
    AutoDecision::Create {
        name: request_name(app, &target),
        labels: automatic_labels(app),
        target,
    }
}

fn never(reason: impl Into<String>) -> AutoDecision {
    AutoDecision::Never {
        reason: reason.into(),
    }
}

fn auto_name(auto: AutoUpdate) -> &'static str {
    match auto {
        AutoUpdate::None => "none",
        AutoUpdate::Patch => "patch",
        AutoUpdate::Minor => "minor",
        AutoUpdate::Major => "major",
    }
}

/// The UpgradeRequest name for `target`: `<app>-<versions>-<hash>`. The same app and target
/// give the same name after any restart (so a second create finds the first); any other
/// target gives another hash. The hash covers the full versions, digests included.
pub fn request_name(app: &str, target: &BTreeMap<String, String>) -> String {
    let mut hashed = String::from(app);
    for (field, version) in target {
        hashed.push('\0');
        hashed.push_str(field);
        hashed.push('=');
        hashed.push_str(version);
    }
    let hash = format!(
        "{:010x}",
        crate::api::common::fnv1a(hashed.as_bytes()) & 0xff_ffff_ffff
    );
    let versions: Vec<String> = target.values().map(|v| normalize(v)).collect();
    let readable = crate::api::common::dns_piece(&format!("{app}-{}", versions.join("-")));
    let room = MAX_NAME_LEN - hash.len() - 1;
    let mut prefix: String = readable.chars().take(room).collect();
    while prefix.ends_with(['-', '.']) {
        prefix.pop();
    }
    if prefix.is_empty() {
        format!("auto-{hash}")
    } else {
        format!("{prefix}-{hash}")
    }
}

/// A label value naming `app`: the name itself when it fits (63 characters), else a
/// shortened name with a hash so that it stays unique (see [`crate::cluster::labels`]).
pub fn app_label_value(app: &str) -> String {
    crate::cluster::labels::label_value(app)
}

/// The labels an automatic UpgradeRequest carries.
pub fn automatic_labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (AUTOMATIC_LABEL.to_owned(), "true".to_owned()),
        (APP_LABEL.to_owned(), app_label_value(app)),
    ])
}
