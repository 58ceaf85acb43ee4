//! Every call the server makes into the pipeline engine goes through this
//! module: the engine's state machine ([`gantry_engine::schedule::Schedule`])
//! decides from stored job rows which jobs start, are skipped, wait as
//! manual or delayed, are retried, and the pipeline's status; runners run
//! each attempt with the engine's entry point ([`gantry_engine::job::run_job`])
//! and ports that fit a runner. The server has no scheduling rules of its own.

use crate::store::Job;
use gantry_config::model::{Job as JobSpec, Pipeline as Planned};
use gantry_engine::payload::{AttemptStatus, Failure};
use gantry_engine::schedule::{Decision, JobProgress, JobState, JobStatus, Schedule, Selection};

/// The planned job stored with a row.
pub fn spec(job: &Job) -> Option<JobSpec> {
    serde_json::from_str(&job.spec).ok()
}

/// A job row as the state machine sees it.
fn state_of(job: &Job) -> JobState {
    match job.status.as_str() {
        "created" => JobState::Waiting,
        "scheduled" => JobState::Delayed,
        "waiting_for_resource" => JobState::Ready,
        "pending" | "running" => JobState::Running,
        "success" => JobState::Done(JobStatus::Success),
        "failed" if job.allow_failure != 0 => JobState::Done(JobStatus::Warning),
        "failed" => JobState::Done(JobStatus::Failed),
        "canceled" => JobState::Done(JobStatus::Canceled),
        "manual" => JobState::Done(JobStatus::Manual),
        _ => JobState::Done(JobStatus::Skipped),
    }
}

/// The stored status of a job the state machine finished.
pub fn row_status(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Success => "success",
        JobStatus::Warning | JobStatus::Failed => "failed",
        JobStatus::Skipped => "skipped",
        JobStatus::Manual => "manual",
        JobStatus::Canceled => "canceled",
    }
}

/// The pipeline's state machine rebuilt from its current job rows.
pub fn restore(planned: &Planned, jobs: &[Job]) -> Result<Schedule, String> {
    let progress: Vec<JobProgress> = jobs
        .iter()
        .map(|j| JobProgress {
            name: j.name.clone(),
            state: state_of(j),
            // A job still waiting has had no attempt in this row yet.
            attempt: match state_of(j) {
                JobState::Waiting | JobState::Ready | JobState::Delayed => {
                    (j.attempt - 1).max(0) as u32
                }
                _ => j.attempt as u32,
            },
            exit_code: j.exit_code.map(|c| c as i32),
            reason: j.failure_reason.clone(),
        })
        .collect();
    let selection = Selection {
        concurrency: usize::MAX,
        // The server runs `trigger:include` children ([`crate::children`]).
        child_pipelines: true,
        // … and `trigger: project` downstream pipelines of other projects.
        multi_project_pipelines: true,
        ..Selection::default()
    };
    Schedule::restore(planned, &selection, &progress).map_err(|e| e.to_string())
}

/// What the queue should do with a job row; `from` is the row's status
/// the write is conditional on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Hand it to a runner (`pending`).
    Enqueue { id: i64, from: String },
    /// A trigger job: the server creates its downstream pipeline, a child
    /// (`trigger:include`) or another project's (`trigger: project`);
    /// `running` until then, or until it ends with `strategy: depend`.
    Trigger { id: i64, from: String },
    /// `when: delayed`: runs after this many seconds.
    Delay { id: i64, seconds: u64 },
    /// Done without an attempt: skipped, manual (waits to be played), canceled.
    Finish {
        id: i64,
        from: String,
        status: &'static str,
        reason: Option<String>,
    },
}

/// A live pipeline's state machine, kept in memory between events so that
/// an event costs what the engine's `step` costs, not a rebuild from every
/// row. It mirrors the rows it was restored from and the writes the queue
/// made since; the queue restores it again whenever anyone else may have
/// changed a row (see [`crate::queue`]).
pub struct LiveSchedule {
    schedule: Schedule,
    /// Row id and status per schedule index (as last written by the queue).
    rows: Vec<Option<(i64, String)>>,
    by_row: std::collections::HashMap<i64, usize>,
    by_name: std::collections::HashMap<String, usize>,
    /// Schedule indices of `trigger:` jobs.
    triggers: std::collections::HashSet<usize>,
}

impl LiveSchedule {
    /// The state machine rebuilt from a pipeline's current job rows.
    pub fn restore(planned: &Planned, jobs: &[Job]) -> Result<LiveSchedule, String> {
        let schedule = restore(planned, jobs)?;
        let row_of: std::collections::HashMap<&str, &Job> =
            jobs.iter().map(|j| (j.name.as_str(), j)).collect();
        let mut rows = Vec::with_capacity(schedule.jobs().len());
        let mut by_row = std::collections::HashMap::new();
        let mut by_name = std::collections::HashMap::new();
        let mut triggers = std::collections::HashSet::new();
        for (i, sj) in schedule.jobs().iter().enumerate() {
            by_name.insert(sj.name.clone(), i);
            if planned
                .jobs
                .get(sj.pipeline_index)
                .is_some_and(|j| j.trigger.is_some())
            {
                triggers.insert(i);
            }
            match row_of.get(sj.name.as_str()) {
                Some(j) => {
                    by_row.insert(j.id, i);
                    rows.push(Some((j.id, j.status.clone())));
                }
                None => rows.push(None),
            }
        }
        Ok(LiveSchedule {
            schedule,
            rows,
            by_row,
            by_name,
            triggers,
        })
    }

    /// Decides every job that can be decided now.
    pub fn step(&mut self) -> Vec<Step> {
        let mut steps = Vec::new();
        for d in self.schedule.step() {
            let (job, step) = match d {
                Decision::Start { job, .. } => (job, 0),
                Decision::Delay { job, .. } => (job, 1),
                Decision::Finished { job, .. } => (job, 2),
                Decision::Retry { .. } => continue,
            };
            let Some((id, from)) = self.rows[job].clone() else {
                continue;
            };
            steps.push(match (step, d) {
                (1, Decision::Delay { seconds, .. }) => Step::Delay { id, seconds },
                (2, Decision::Finished { status, reason, .. }) => Step::Finish {
                    id,
                    from,
                    status: row_status(status),
                    reason,
                },
                _ if self.triggers.contains(&job) => Step::Trigger { id, from },
                _ => Step::Enqueue { id, from },
            });
        }
        steps
    }

    /// Whether row `id`'s job has a `resource_group`.
    pub fn has_resource_group(&self, id: i64) -> bool {
        self.by_row
            .get(&id)
            .is_some_and(|&i| self.schedule.job(i).resource_group.is_some())
    }

    /// The queue wrote `status` to row `id`.
    pub fn row_written(&mut self, id: i64, status: &str) {
        if let Some(&i) = self.by_row.get(&id)
            && let Some(row) = self.rows[i].as_mut()
        {
            row.1 = status.to_string();
        }
    }

    /// Asks the state machine what a finished attempt of `job` means
    /// (`retry:`, `allow_failure`). `failure` is GitLab's reason when it
    /// failed. The schedule moves on as the answer says.
    pub fn attempt_finished(
        &mut self,
        job: &Job,
        state: &str,
        failure: Option<&str>,
        exit_code: Option<i64>,
    ) -> AfterAttempt {
        let fallback = AfterAttempt::Done(if state == "success" {
            "success"
        } else {
            "failed"
        });
        let Some(&i) = self.by_name.get(&job.name) else {
            return fallback;
        };
        match self.schedule.attempt_finished(
            i,
            &attempt_status(state, failure),
            exit_code.map(|c| c as i32),
        ) {
            Decision::Retry { .. } => AfterAttempt::Retry,
            Decision::Finished { status, .. } => AfterAttempt::Done(row_status(status)),
            _ => fallback,
        }
    }

    /// Whether a row the queue wrote shows that a job has started (or the
    /// pipeline is past starting).
    pub fn mirror_started(&self) -> bool {
        self.rows
            .iter()
            .flatten()
            .any(|(_, s)| !matches!(s.as_str(), "created" | "pending" | "waiting_for_resource"))
    }

    /// The pipeline's status in GitLab's words. `started`: a job has been
    /// claimed by a runner (or has ended); `pending`: one waits for a runner.
    pub fn pipeline_status(&self, started: bool, pending: bool) -> &'static str {
        let jobs = self.schedule.jobs();
        match self.schedule.status().as_str() {
            "running" => {
                if started {
                    "running"
                } else if pending {
                    "pending"
                } else {
                    "created"
                }
            }
            "blocked" => "manual",
            "success" => {
                if !jobs.is_empty() && jobs.iter().all(|j| j.status() == Some(JobStatus::Skipped)) {
                    "skipped"
                } else {
                    "success"
                }
            }
            // A stored schedule has no "canceled" flag: canceled jobs and no
            // failed one is GitLab's canceled pipeline.
            "failed" if !jobs.iter().any(|j| j.status() == Some(JobStatus::Failed)) => "canceled",
            "failed" => "failed",
            _ => "canceled",
        }
    }

    /// Whether a job waits for a runner, as far as the queue's writes show.
    pub fn mirror_pending(&self) -> bool {
        self.rows.iter().flatten().any(|(_, s)| s == "pending")
    }
}

fn attempt_status(state: &str, failure: Option<&str>) -> AttemptStatus {
    match state {
        "success" => AttemptStatus::Success,
        "canceled" => AttemptStatus::Canceled,
        _ => AttemptStatus::Failed(match failure {
            Some("script_failure") | None => Failure::Script,
            Some("stuck_or_timeout_failure") | Some("job_execution_timeout") => Failure::Timeout,
            Some(other) => Failure::System(other.to_string()),
        }),
    }
}

/// How a finished attempt ends the job: retried, or done with a status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterAttempt {
    /// A new attempt goes to the queue.
    Retry,
    /// The job's final stored status.
    Done(&'static str),
}

// ---- running one job attempt on a runner ----

use crate::protocol::JobPayload;
use gantry_engine::executor::Executor;
use gantry_engine::job::JobPorts;
use gantry_engine::payload::{ArtifactRef, JobPayload as EnginePayload};
use gantry_engine::ports::{BlobStore, LogWriter};
use gantry_engine::state::slugify;
use gantry_engine::vars::VarSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How one attempt ended, in the protocol's terms.
#[derive(Debug)]
pub struct JobResult {
    /// `success`, `failed` or `canceled`.
    pub state: &'static str,
    /// GitLab's failure reason (`script_failure`, …) when failed.
    pub failure_reason: Option<String>,
    pub exit_code: Option<i64>,
    pub dotenv: Vec<(String, String)>,
    /// Failed test cases of the job's `artifacts:reports:junit` files.
    pub junit_failures: Vec<String>,
    /// The artifacts zip to upload.
    pub artifact: Option<PathBuf>,
}

/// Where a runner keeps a project's files: a mirror of the repository,
/// snapshots of commits, builds, artifacts being made, caches.
pub struct Workspace {
    pub root: PathBuf,
}

impl Workspace {
    pub fn project_dir(&self, project_id: i64) -> PathBuf {
        self.root.join("projects").join(project_id.to_string())
    }
}

/// The job's log as the engine writes it: every masked line goes to the
/// runner's log streamer.
struct ChannelLog(tokio::sync::mpsc::UnboundedSender<String>);

impl LogWriter for ChannelLog {
    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        self.0
            .send(line.to_string())
            .map_err(|_| std::io::Error::other("the log streamer stopped"))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Artifacts made in the runner's directory (uploaded after the job) and
/// dependencies' archives downloaded there; caches through the server.
struct RunnerBlobs {
    dir: PathBuf,
    caches: crate::shared_cache::ServerCaches,
}

impl BlobStore for RunnerBlobs {
    fn artifact_staging(&self, _run_id: &str, slug: &str) -> PathBuf {
        self.dir.join("artifacts").join(format!("{slug}.zip"))
    }
    fn commit_artifact(
        &self,
        _run_id: &str,
        job: &str,
        staged: &Path,
    ) -> Result<ArtifactRef, gantry_engine::error::StoreError> {
        Ok(ArtifactRef {
            job: job.to_string(),
            key: staged.display().to_string(),
        })
    }
    fn artifact_path(
        &self,
        artifact: &ArtifactRef,
    ) -> Result<PathBuf, gantry_engine::error::StoreError> {
        let path = PathBuf::from(&artifact.key);
        if path.is_file() {
            Ok(path)
        } else {
            Err(gantry_engine::error::StoreError::new(
                "the dependency's artifacts were not downloaded",
                &path,
                std::io::ErrorKind::NotFound.into(),
            ))
        }
    }
    fn cache_path(&self, key: &str) -> Option<PathBuf> {
        self.caches.path(key)
    }
    fn cache_staging(&self, key: &str) -> PathBuf {
        self.caches.staging(key)
    }
    fn commit_cache(
        &self,
        key: &str,
        staged: &Path,
    ) -> Result<(), gantry_engine::error::StoreError> {
        self.caches.commit(key, staged)
    }
}

/// Runs one attempt of `payload`'s job with the engine's entry point
/// ([`gantry_engine::job::run_job`]). Masked lines go to `lines`.
#[allow(clippy::too_many_arguments)]
pub async fn run_job(
    payload: &JobPayload,
    mirror: &Path,
    workspace: &Workspace,
    executor: Arc<dyn Executor>,
    docker: bool,
    dependencies: Vec<(String, PathBuf)>,
    caches: crate::shared_cache::ServerCaches,
    lines: tokio::sync::mpsc::UnboundedSender<String>,
    cancel: CancellationToken,
    snapshot_lock: &tokio::sync::Mutex<()>,
) -> Result<JobResult, String> {
    let project_dir = workspace.project_dir(payload.project_id);
    let builds_dir = project_dir.join("builds");
    std::fs::create_dir_all(&builds_dir).map_err(|e| e.to_string())?;
    let sources = {
        let _one_at_a_time = snapshot_lock.lock().await;
        let mirror = mirror.to_path_buf();
        let sha = payload.sha.clone();
        tokio::task::spawn_blocking(move || gantry_engine::local::LocalSources::open(&mirror, &sha))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let job = &payload.spec;
    // Unique per attempt: concurrent jobs of one project share `builds`.
    let slug = format!("{}-{}", slugify(&job.name), payload.id);
    let (ci_project_dir, ci_builds_dir) = if docker {
        (
            format!("/builds/{}", payload.project_path),
            "/builds".to_string(),
        )
    } else {
        (
            builds_dir.join(&slug).display().to_string(),
            builds_dir.display().to_string(),
        )
    };
    let timeout = job
        .timeout
        .unwrap_or(gantry_engine::job::DEFAULT_TIMEOUT.as_secs());
    let mut vars = VarSet::new();
    vars.set("CI", "true");
    vars.set("GITLAB_CI", "true");
    if job.when == gantry_config::model::When::Manual {
        vars.set("CI_JOB_MANUAL", "true");
    }
    if let Some(env) = &job.environment {
        vars.set("CI_ENVIRONMENT_NAME", env.name.clone());
        let mut env_slug = slugify(&env.name);
        env_slug.truncate(24);
        vars.set(
            "CI_ENVIRONMENT_SLUG",
            env_slug.trim_end_matches('-').to_string(),
        );
        if let Some(url) = &env.url {
            vars.set("CI_ENVIRONMENT_URL", url.clone());
        }
        vars.set(
            "CI_ENVIRONMENT_ACTION",
            env.action.clone().unwrap_or_else(|| "start".into()),
        );
    }
    vars.extend(payload.variables.iter());
    vars.set("CI_BUILDS_DIR", ci_builds_dir);
    vars.set("CI_PROJECT_DIR", ci_project_dir.clone());
    vars.set("CI_JOB_STATUS", "running");
    vars.set("CI_SERVER", "yes");
    vars.set("CI_JOB_TIMEOUT", timeout.to_string());
    vars.set(
        if docker {
            "CI_DISPOSABLE_ENVIRONMENT"
        } else {
            "CI_SHARED_ENVIRONMENT"
        },
        "true",
    );
    vars.extend(job.variables.iter());
    for (k, v) in &payload.dotenv {
        vars.set(k, v.clone());
    }
    vars.extend(payload.overrides.iter());
    let engine_payload = EnginePayload {
        run_id: format!("server-{}-{}", payload.pipeline_id, payload.id),
        pipeline_id: payload.pipeline_id as u64,
        job_id: payload.id as u64,
        job: job.clone(),
        slug: slug.clone(),
        attempt: payload.attempt as u32,
        executor: if docker { "docker" } else { "shell" }.into(),
        vars,
        ci_project_dir,
        dependencies: dependencies
            .into_iter()
            .map(|(job, path)| ArtifactRef {
                job,
                key: path.display().to_string(),
            })
            .collect(),
    };
    let ports = JobPorts {
        log: Box::new(ChannelLog(lines)),
        signals: None,
        blobs: Arc::new(RunnerBlobs {
            dir: project_dir.clone(),
            caches,
        }),
        sources: Arc::new(sources),
        executor,
        builds_dir: builds_dir.clone(),
        state_dir: None,
    };
    let outcome = gantry_engine::job::run_job(engine_payload, ports, cancel).await;
    let (state, failure_reason) = match &outcome.status {
        AttemptStatus::Success => ("success", None),
        AttemptStatus::Canceled => ("canceled", None),
        AttemptStatus::Failed(f) => ("failed", Some(f.retry_kind().to_string())),
    };
    // The build directory is not kept: a runner has no `gantry shell`. Nor
    // is its environment record, which holds the job token and secrets.
    if let Some(dir) = &outcome.build_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = std::fs::remove_file(gantry_engine::job::env_record_path(&builds_dir.join(&slug)));
    let _ = std::fs::remove_dir_all(builds_dir.join(format!("{slug}.tmp")));
    Ok(JobResult {
        state,
        failure_reason,
        exit_code: outcome.exit_code.map(i64::from),
        dotenv: outcome.dotenv,
        junit_failures: outcome.junit_failures,
        artifact: outcome
            .artifact
            .map(|a| PathBuf::from(a.key))
            .filter(|p| p.is_file()),
    })
}
