//! Failures of a [`Cluster`](super::Cluster) call, without Kubernetes types so the in-process
//! simulator can produce them too.

/// Why a request to the cluster failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The object does not exist (HTTP 404).
    #[error("not found: {0}")]
    NotFound(String),
    /// RBAC denied the request (HTTP 403): the deployment's Role is missing a rule.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A precondition or a concurrent write got in the way (HTTP 409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The apiserver refused the request for another reason (HTTP 4xx/5xx).
    #[error("apiserver answered {code} {reason}: {message}")]
    Rejected {
        code: u16,
        reason: String,
        message: String,
    },
    /// No answer: connection, TLS, timeout, or a response that could not be read.
    #[error("request to the apiserver failed: {0}")]
    Transport(String),
    /// We could not build the request (a bug or bad input, never retried).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ClusterError {
    /// Every value of [`ClusterError::metric_label`]: counters by it start at 0 for each.
    pub const METRIC_LABELS: [&'static str; 6] = [
        "not_found",
        "forbidden",
        "conflict",
        "rejected",
        "transport",
        "invalid",
    ];

    /// Short stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ClusterError::NotFound(_) => "not_found",
            ClusterError::Forbidden(_) => "forbidden",
            ClusterError::Conflict(_) => "conflict",
            ClusterError::Rejected { .. } => "rejected",
            ClusterError::Transport(_) => "transport",
            ClusterError::Invalid(_) => "invalid",
        }
    }

    /// Worth retrying later as is (the same request may succeed).
    pub fn is_transient(&self) -> bool {
        match self {
            ClusterError::Transport(_) | ClusterError::Conflict(_) => true,
            ClusterError::Rejected { code, .. } => *code == 429 || *code >= 500,
            _ => false,
        }
    }
}

impl From<kube::Error> for ClusterError {
    fn from(err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => {
                let message = status.message.clone();
                match status.code {
                    404 => ClusterError::NotFound(message),
                    403 => ClusterError::Forbidden(message),
                    409 => ClusterError::Conflict(message),
                    code => ClusterError::Rejected {
                        code,
                        reason: status.reason.clone(),
                        message,
                    },
                }
            }
            kube::Error::BuildRequest(e) => ClusterError::Invalid(e.to_string()),
            other => ClusterError::Transport(other.to_string()),
        }
    }
}

impl From<serde_json::Error> for ClusterError {
    fn from(err: serde_json::Error) -> Self {
        ClusterError::Invalid(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_label_is_listed() {
        let errors = [
            ClusterError::NotFound(String::new()),
            ClusterError::Forbidden(String::new()),
            ClusterError::Conflict(String::new()),
            ClusterError::Rejected {
                code: 422,
                reason: String::new(),
                message: String::new(),
            },
            ClusterError::Transport(String::new()),
            ClusterError::Invalid(String::new()),
        ];
        let labels: Vec<&str> = errors.iter().map(ClusterError::metric_label).collect();
        assert_eq!(labels, ClusterError::METRIC_LABELS);
    }

    #[test]
    fn labels_and_transience() {
        assert_eq!(
            ClusterError::NotFound("x".into()).metric_label(),
            "not_found"
        );
        assert!(ClusterError::Transport("t".into()).is_transient());
        assert!(
            ClusterError::Rejected {
                code: 503,
                reason: "ServiceUnavailable".into(),
                message: String::new()
            }
            .is_transient()
        );
        assert!(
            !ClusterError::Rejected {
                code: 422,
                reason: "Invalid".into(),
                message: String::new()
            }
            .is_transient()
        );
        assert!(!ClusterError::Forbidden("f".into()).is_transient());
    }

    #[test]
    fn kube_api_errors_map_by_code() {
        let api = |code: u16| {
            let status = kube::core::Status {
                code,
                message: "m".into(),
                reason: "R".into(),
                ..Default::default()
            };
            ClusterError::from(kube::Error::Api(Box::new(status)))
        };
        assert_eq!(api(404), ClusterError::NotFound("m".into()));
        assert_eq!(api(403), ClusterError::Forbidden("m".into()));
        assert_eq!(api(409), ClusterError::Conflict("m".into()));
        assert_eq!(
            api(422),
            ClusterError::Rejected {
                code: 422,
                reason: "R".into(),
                message: "m".into()
            }
        );
    }
}
