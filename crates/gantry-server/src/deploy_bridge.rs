//! The dashboard's door into `gantry-deploy`: a rollback from the
//! Environments page runs the same code as `gantry rollback` (the deploy
//! state machine, `machine::rollback`, through the target's deployer), with
//! the server's own database as the history store ([`ServerHistory`]). It
//! never re-runs an old job.
//!
//! Targets: the local container host (`docker:ENGINE/NAME`) on the server's
//! container engine. ECS and CloudFormation targets need the team's cloud
//! credentials on the server, which it does not hold: for those the error
//! names the `gantry rollback` command to run where they are.

use crate::app::Shared;
use crate::deploy_history::{HistoryRows, Writer};
use gantry_deploy::DeployError;
use gantry_deploy::history::{DeploymentRecord, HistoryStore, LeaseAttempt, LeaseHolder};
use gantry_deploy::local::{LocalDeployOptions, LocalDeployer};
use std::time::Duration;

/// Why a rollback did not happen or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error(
        "{target}: rolling back {kind} targets from the dashboard is not available (the server holds no cloud credentials); run `{command}` where they are"
    )]
    Unsupported {
        target: String,
        kind: String,
        command: String,
    },
    #[error("{0}")]
    Deploy(#[from] DeployError),
    #[error("the rollback of {target} failed: {message}")]
    Failed { target: String, message: String },
}

/// The server's deploy history as a [`HistoryStore`], writing as `by`.
pub struct ServerHistory {
    app: Shared,
    by: Writer,
}

impl ServerHistory {
    pub fn new(app: Shared, by: Writer) -> ServerHistory {
        ServerHistory { app, by }
    }
}

fn history_error(e: crate::error::StoreError) -> DeployError {
    DeployError::History(e.to_string())
}

#[async_trait::async_trait]
impl HistoryStore for ServerHistory {
    fn location(&self) -> String {
        self.app.url.clone()
    }

    async fn save(&self, record: &DeploymentRecord) -> Result<(), DeployError> {
        HistoryRows(&self.app.store)
            .save(record, &self.by)
            .await
            .map_err(history_error)
    }

    async fn records(&self, target: &str) -> Result<Vec<DeploymentRecord>, DeployError> {
        Ok(HistoryRows(&self.app.store)
            .of_target(target)
            .await
            .map_err(history_error)?
            .into_iter()
            .map(|r| r.record)
            .collect())
    }

    async fn list(&self, filter: Option<&str>) -> Result<Vec<DeploymentRecord>, DeployError> {
        Ok(HistoryRows(&self.app.store)
            .matching(filter)
            .await
            .map_err(history_error)?
            .into_iter()
            .map(|r| r.record)
            .collect())
    }

    async fn acquire_lease(
        &self,
        target: &str,
        holder: &LeaseHolder,
    ) -> Result<LeaseAttempt, DeployError> {
        HistoryRows(&self.app.store)
            .acquire_lease(target, holder)
            .await
            .map_err(history_error)
    }

    async fn release_lease(&self, target: &str, holder_id: &str) -> Result<(), DeployError> {
        HistoryRows(&self.app.store)
            .release_lease(target, holder_id)
            .await
            .map_err(history_error)
    }
}

/// Whether the dashboard can roll `target` back itself.
pub fn can_roll_back(target: &str) -> bool {
    target.starts_with("docker:")
}

/// Rolls `target` back to its newest known-good revision other than the
/// live one (what `gantry rollback` does without `--to`), recording the
/// rollback as `by`. Answers the state machine's summary.
pub async fn rollback(app: &Shared, target: &str, by: Writer) -> Result<String, RollbackError> {
    let history = ServerHistory::new(app.clone(), by);
    let (kind, _) = target.split_once(':').unwrap_or((target, ""));
    if kind != "docker" {
        let name = target.rsplit(['/', ':']).next().unwrap_or(target);
        return Err(RollbackError::Unsupported {
            target: target.to_string(),
            kind: kind.to_string(),
            command: format!(
                "gantry rollback {} {name} --history {}",
                if kind == "cloudformation" {
                    "cloudformation"
                } else {
                    kind
                },
                app.url
            ),
        });
    }
    let name = target.rsplit('/').next().unwrap_or_default().to_string();
    let docker = gantry_deploy::local::connect()?;
    let deployer = LocalDeployer::new(docker, &history, gantry_deploy::Log::silent());
    let here = deployer.target_key(&name).await;
    if here != target {
        return Err(RollbackError::Failed {
            target: target.to_string(),
            message: format!(
                "it runs on another container engine than the server's ({here}); run `gantry rollback docker {name} --history {}` on its host",
                app.url
            ),
        });
    }
    let mut opts = LocalDeployOptions::new(&name, "");
    opts.machine.wait_lock = Duration::from_secs(5);
    let report = deployer.rollback_report(&name, None, &opts).await?;
    if report.ok() {
        Ok(report.message())
    } else {
        Err(RollbackError::Failed {
            target: target.to_string(),
            message: report.message(),
        })
    }
}
