//! The runner protocol's messages (JSON over HTTP under `/api/v4`), shared
//! by the server and `gantry runner`:
//!
//! - `POST /api/v4/runners` registers ([`RegisterRequest`] → [`Registered`]);
//! - `POST /api/v4/jobs/request` long-polls for a job (201 [`JobPayload`],
//!   204 none);
//! - `PATCH /api/v4/jobs/:id/trace` appends a log chunk (`Content-Range:
//!   START-END`; 202 with `Range: 0-NEXT`, 416 on a gap);
//! - `PUT /api/v4/jobs/:id` heartbeats (`state: running`) and finishes
//!   ([`JobUpdate`] → [`JobUpdateReply`]: a canceled job says so);
//! - `POST`/`GET /api/v4/jobs/:id/artifacts` upload and download the zip;
//! - `GET`/`PUT /api/v4/jobs/:id/cache/:key` read and write caches (the key
//!   percent-encoded; [`crate::shared_cache`]);
//! - `/api/v4/projects/:id/repository.git` serves the project's repository
//!   read-only over git's smart HTTP protocol, HTTP Basic
//!   `gitlab-ci-token:<job token>` ([`crate::git_http`]).
//!
//! Runner-authenticated calls carry the runner token; job calls carry the
//! job token (`JOB-TOKEN`), valid while the job runs.

use gantry_config::model::{Job as JobSpec, Variable};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The registration token (`gantry serve --print-runner-token`).
    pub token: String,
    pub description: String,
    #[serde(default)]
    pub tag_list: Vec<String>,
    #[serde(default = "yes")]
    pub run_untagged: bool,
    #[serde(default = "shell")]
    pub executor: String,
    #[serde(default = "one")]
    pub concurrency: u32,
}

fn yes() -> bool {
    true
}
fn shell() -> String {
    "shell".into()
}
fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Registered {
    pub id: i64,
    pub token: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRequest {
    pub token: String,
}

/// A dependency whose artifacts (and dotenv) the job receives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dependency {
    pub job_id: i64,
    pub name: String,
    pub has_artifacts: bool,
}

/// Everything a runner needs to run one attempt of one job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobPayload {
    pub id: i64,
    /// The job token: authenticates this job's calls while it runs.
    pub token: String,
    pub name: String,
    pub stage: String,
    pub attempt: i64,
    pub pipeline_id: i64,
    pub project_id: i64,
    pub project_path: String,
    /// Where the runner fetches the commit from (`git fetch`): the
    /// server's smart HTTP URL of the project's repository, reached with
    /// the job token. A runner rebases it on the URL it registered with
    /// ([`crate::runner::repository_url`]).
    pub repo_url: String,
    pub git_ref: String,
    pub sha: String,
    pub spec: JobSpec,
    /// Pipeline-level variables in precedence order (predefined, then
    /// pipeline/trigger, then project and instance variables); the job's
    /// YAML variables are in `spec`.
    pub variables: Vec<Variable>,
    /// Variables that outrank the job's YAML ones (pipeline, project, instance).
    pub overrides: Vec<Variable>,
    pub dependencies: Vec<Dependency>,
    /// dotenv reports of the dependencies, in order.
    pub dotenv: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobUpdate {
    /// `running` (a heartbeat), `success` or `failed`.
    pub state: String,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub dotenv: Vec<(String, String)>,
    /// Failed test cases of the job's JUnit reports (with the final state).
    #[serde(default)]
    pub junit_failures: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobUpdateReply {
    /// The job's status on the server; `canceled` tells the runner to stop.
    pub status: String,
}
