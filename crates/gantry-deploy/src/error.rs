//! The one error type of the deploy library. Messages are meant for a human reading a job log:
//! they name the operation and the resource, and never contain credentials.

use std::fmt::Write as _;

/// Why a deploy step failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Bad arguments or a missing resource the user named.
    #[error("{0}")]
    Usage(String),
    /// An AWS API call failed; the message names the operation.
    #[error("{0}")]
    Aws(String),
    /// The rollout did not reach a trustworthy success.
    #[error("{0}")]
    Rollout(String),
    /// The new revision did not pass its health check.
    #[error("{0}")]
    Health(String),
    /// The container engine refused or failed.
    #[error("{0}")]
    Engine(String),
    /// Another deploy holds the target's lease; nothing was changed.
    #[error("{0}")]
    Locked(String),
    /// The deploy was stopped by SIGINT/SIGTERM.
    #[error("{0}")]
    Interrupted(String),
    /// Reading or writing the deployment history failed.
    #[error("deployment history: {0}")]
    History(String),
}

impl DeployError {
    /// Wraps an AWS SDK error: the service's error code and message when it answered, else the
    /// transport error chain (connection refused, timeout), each cause once.
    pub fn aws<E>(operation: &str, err: E) -> Self
    where
        E: std::error::Error + aws_sdk_ecs::error::ProvideErrorMetadata,
    {
        if let Some(code) = err.code() {
            let msg = err.message().map(|m| format!(": {m}")).unwrap_or_default();
            return DeployError::Aws(format!("{operation} failed: {code}{msg}"));
        }
        let mut msg = format!("{operation} failed: {err}");
        let mut source = err.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !msg.contains(&text) {
                let _ = write!(msg, ": {text}");
            }
            source = s.source();
        }
        DeployError::Aws(msg)
    }

    /// Wraps a container engine error.
    pub fn engine(operation: &str, err: impl std::fmt::Display) -> Self {
        DeployError::Engine(format!("{operation} failed: {err}"))
    }
}
