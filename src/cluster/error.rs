//! Errors from talking to the cluster, classified once: which are worth retrying (API
//! 409/429/5xx, network) and which end a request (missing or forbidden objects, invalid
//! input), each with a static category for metrics and events.

/// An error from a cluster operation, with the object it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The API server answered with an error status or could not be reached.
    #[error("{action} {object}: {}", describe(.source))]
    Api {
        /// What was being done, e.g. "suspending".
        action: &'static str,
        /// `Kind namespace/name`.
        object: String,
        /// kube's error.
        source: kube::Error,
    },
    /// An object Fluxgate needs does not exist.
    #[error("{object} does not exist{hint}")]
    NotFound {
        /// `Kind namespace/name`.
        object: String,
        /// What to do, starting with "; ".
        hint: String,
    },
    /// The cluster's objects are not as Fluxgate needs them (a parent cycle, a malformed
    /// Helm release, …).
    #[error("{0}")]
    Invalid(String),
}

impl ClusterError {
    /// Wraps a kube error with what was being done to which object; a 404 becomes
    /// [`ClusterError::NotFound`].
    pub fn api(
        action: &'static str,
        object: impl Into<String>,
        source: kube::Error,
    ) -> ClusterError {
        let object = object.into();
        match &source {
            kube::Error::Api(status) if status.code == 404 => ClusterError::NotFound {
                object,
                hint: String::new(),
            },
            _ => ClusterError::Api {
                action,
                object,
                source,
            },
        }
    }

    /// Whether trying again can succeed: conflicts, throttling, server errors, network.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClusterError::Api { source, .. } => is_retryable(source),
            ClusterError::NotFound { .. } | ClusterError::Invalid(_) => false,
        }
    }

    /// A static category for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            ClusterError::Api {
                source: kube::Error::Api(status),
                ..
            } => match status.code {
                409 => "api_conflict",
                429 => "api_throttled",
                403 => "api_forbidden",
                422 | 400 => "api_invalid",
                code if code >= 500 => "api_server_error",
                _ => "api_error",
            },
            ClusterError::Api { .. } => "api_unreachable",
            ClusterError::NotFound { .. } => "object_not_found",
            ClusterError::Invalid(_) => "cluster_state_invalid",
        }
    }

    /// A CamelCase reason for status and events.
    pub fn reason(&self) -> &'static str {
        match self.category() {
            "object_not_found" => "ObjectNotFound",
            "api_forbidden" => "Forbidden",
            "cluster_state_invalid" => "InvalidClusterState",
            _ => "ApiError",
        }
    }
}

/// An error from the Kubernetes API as people should read it: the API server's own message
/// with its reason and code. kube's `Display` of an API error appends a debug dump of the
/// whole `Status` object; that never reaches a person. Errors that did not come from the API
/// server keep their own text.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(kube::Error::Api(status)) = e.downcast_ref::<kube::Error>() {
            return match (status.message.is_empty(), status.reason.is_empty()) {
                (true, true) => format!("the API server answered HTTP {}", status.code),
                (true, false) => format!("{} (HTTP {})", status.reason, status.code),
                (false, true) => format!("{} (HTTP {})", status.message, status.code),
                (false, false) => {
                    format!(
                        "{} ({}, HTTP {})",
                        status.message, status.reason, status.code
                    )
                }
            };
        }
        current = e.source();
    }
    error.to_string()
}

/// Whether a create failed only because an object of that name exists (with deterministic
/// names: ours, from before a crash).
pub fn already_exists(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409 && status.reason == "AlreadyExists")
}

/// Whether a kube error is transient.
pub fn is_retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => matches!(status.code, 409 | 429) || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: "m".into(),
            ..Default::default()
        }))
    }

    #[test]
    fn api_errors_read_as_sentences_without_a_debug_dump() {
        let error = kube::Error::Api(Box::new(kube::core::Status {
            code: 403,
            message: "upgraderequests is forbidden: User \"bob\" cannot list".into(),
            reason: "Forbidden".into(),
            ..Default::default()
        }));
        assert_eq!(
            describe(&error),
            "upgraderequests is forbidden: User \"bob\" cannot list (Forbidden, HTTP 403)"
        );
        let wrapped = ClusterError::api("suspending", "HelmRelease apps/db", status(500));
        assert_eq!(
            wrapped.to_string(),
            "suspending HelmRelease apps/db: m (HTTP 500)"
        );
        assert!(!wrapped.to_string().contains("Status {"), "{wrapped}");
    }

    #[test]
    fn errors_are_classified_once() {
        for (code, retryable, category) in [
            (409, true, "api_conflict"),
            (429, true, "api_throttled"),
            (500, true, "api_server_error"),
            (503, true, "api_server_error"),
            (403, false, "api_forbidden"),
            (422, false, "api_invalid"),
            (404, false, "object_not_found"),
        ] {
            let error = ClusterError::api("patching", "HelmRelease apps/db", status(code));
            assert_eq!(
                (error.is_retryable(), error.category()),
                (retryable, category),
                "{code}"
            );
        }
        let missing = ClusterError::api("getting", "HelmRelease apps/db", status(404));
        assert_eq!(missing.to_string(), "HelmRelease apps/db does not exist");
    }
}
