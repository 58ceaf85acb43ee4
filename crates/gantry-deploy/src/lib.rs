//! Deploy targets for Gantry: Amazon ECS, CloudFormation and a local container host (Docker
//! Engine API, so Docker or Podman).
//!
//! Every target follows the same shape: make a new revision, roll it out, wait for a result that
//! can be trusted, probe its health, and roll back to the last *known-good* revision on failure.
//! "Known good" comes from a [`history::HistoryStore`] (a JSON file by default, the server's
//! database later), so a rollback never depends on re-running an old pipeline job.
//!
//! The ECS rollout wait goes through the narrow [`ecs::rollout::RolloutObserver`] seam: the real
//! implementation asks ECS, tests feed scripted service states (moto never completes a rollout).
//!
//! The CLI (`gantry deploy`, `gantry rollback`, `gantry deployments`, `gantry registry`,
//! `gantry ecs run`) is a thin layer over this crate; [`runtime`] builds the async runtime for it.

pub mod aws;
pub mod cloudformation;
pub mod ecr;
pub mod ecs;
pub mod error;
pub mod health;
pub mod history;
pub mod http_history;
pub mod interrupt;
pub mod local;
pub mod log;
pub mod machine;
pub mod notify;
pub mod s3_history;

pub use error::DeployError;

/// The SDK and engine crates this library speaks, for callers that build their own clients.
pub mod sdk {
    pub use aws_config;
    pub use aws_sdk_cloudformation as cloudformation;
    pub use aws_sdk_ecr as ecr;
    pub use aws_sdk_ecs as ecs;
    pub use aws_sdk_s3 as s3;
    pub use bollard;
}
pub use history::{DeployResult, DeploymentRecord, FileHistoryStore, HistoryStore};

pub use log::Log;

/// A multi-threaded tokio runtime for the CLI entry points, which are synchronous.
pub fn runtime() -> Result<tokio::runtime::Runtime, DeployError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| DeployError::Usage(format!("cannot start the async runtime: {e}")))
}
