//! What passes between the dispatcher and whoever runs a job attempt (this
//! process, or a remote runner): a serializable payload in, a serializable
//! outcome out. Nothing here refers to the machine that decided.

use crate::vars::VarSet;
use gantry_config::model::Job;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A stored artifact archive: the job that made it, and the store's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// The producing job's name.
    pub job: String,
    /// The store's own key for the archive (a path for `.gantry/`, an
    /// object key for a server).
    pub key: String,
}

/// One attempt of one job, as decided by the dispatcher.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobPayload {
    /// The pipeline run's id (names engine objects, e.g. container labels).
    pub run_id: String,
    /// `CI_PIPELINE_ID` and `CI_JOB_ID`.
    pub pipeline_id: u64,
    pub job_id: u64,
    pub job: Job,
    /// Unique in the run; names the job's log, build directory, artifacts.
    pub slug: String,
    /// 1-based.
    pub attempt: u32,
    /// The executor's name in the registry (`shell`, `docker`).
    pub executor: String,
    /// Every variable in precedence order, before expansion.
    pub vars: VarSet,
    /// `CI_PROJECT_DIR` as the job sees it.
    pub ci_project_dir: String,
    /// Artifacts of the job's dependencies, in order.
    pub dependencies: Vec<ArtifactRef>,
}

/// Why an attempt failed, in GitLab's retry vocabulary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum Failure {
    /// The script exited non-zero.
    Script,
    /// The job ran longer than its timeout.
    Timeout,
    /// Gantry or the executor could not run the job.
    System(String),
}

impl Failure {
    /// The `retry:when` value this failure matches.
    pub fn retry_kind(&self) -> &'static str {
        match self {
            Failure::Script => "script_failure",
            Failure::Timeout => "stuck_or_timeout_failure",
            Failure::System(_) => "runner_system_failure",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    Success,
    Failed(Failure),
    Canceled,
}

/// What one attempt produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobOutcome {
    pub status: AttemptStatus,
    pub exit_code: Option<i32>,
    /// Why it failed, in words for the summary (`None` for a plain exit code).
    pub reason: Option<String>,
    pub dotenv: Vec<(String, String)>,
    pub junit_failures: Vec<String>,
    pub artifact: Option<ArtifactRef>,
    /// The host directory the job ran in (kept for `gantry shell`).
    pub build_dir: Option<std::path::PathBuf>,
    /// How to open a shell in a kept environment.
    pub shell_command: Option<Vec<String>>,
    #[serde(with = "millis")]
    pub duration: Duration,
}

impl JobOutcome {
    /// An attempt that failed before it could start.
    pub fn system_failure(message: impl Into<String>) -> JobOutcome {
        let message = message.into();
        JobOutcome {
            status: AttemptStatus::Failed(Failure::System(message.clone())),
            exit_code: None,
            reason: Some(message),
            dotenv: Vec::new(),
            junit_failures: Vec::new(),
            artifact: None,
            build_dir: None,
            shell_command: None,
            duration: Duration::ZERO,
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
