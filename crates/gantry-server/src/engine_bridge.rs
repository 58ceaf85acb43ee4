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
        ..Selection::default()
    };
    Schedule::restore(planned, &selection, &progress).map_err(|e| e.to_string())
}

/// What the queue should do with a job row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Hand it to a runner (`pending`).
    Enqueue(i64),
    /// `when: delayed`: runs after this many seconds.
    Delay(i64, u64),
    /// Done without an attempt: skipped, manual (waits to be played), canceled.
    Finish(i64, &'static str, Option<String>),
}

fn row_id(schedule: &Schedule, jobs: &[Job], i: usize) -> Option<i64> {
    let name = &schedule.job(i).name;
    jobs.iter().find(|j| &j.name == name).map(|j| j.id)
}

/// Decides every job of one pipeline that can be decided now.
pub fn next_steps(planned: &Planned, jobs: &[Job]) -> Result<Vec<Step>, String> {
    let mut schedule = restore(planned, jobs)?;
    let mut steps = Vec::new();
    for d in schedule.step() {
        match d {
            Decision::Start { job, .. } => {
                if let Some(id) = row_id(&schedule, jobs, job) {
                    steps.push(Step::Enqueue(id));
                }
            }
            Decision::Delay { job, seconds } => {
                if let Some(id) = row_id(&schedule, jobs, job) {
                    steps.push(Step::Delay(id, seconds));
                }
            }
            Decision::Finished {
                job,
                status,
                reason,
            } => {
                if let Some(id) = row_id(&schedule, jobs, job) {
                    steps.push(Step::Finish(id, row_status(status), reason));
                }
            }
            Decision::Retry { .. } => {}
        }
    }
    Ok(steps)
}

/// The pipeline's status in GitLab's words.
pub fn pipeline_status(planned: &Planned, jobs: &[Job]) -> &'static str {
    let Ok(schedule) = restore(planned, jobs) else {
        return "failed";
    };
    match schedule.status().as_str() {
        "running" => {
            let started = jobs.iter().any(|j| {
                !matches!(
                    j.status.as_str(),
                    "created" | "pending" | "waiting_for_resource"
                )
            });
            if started {
                "running"
            } else if jobs.iter().any(|j| j.status == "pending") {
                "pending"
            } else {
                "created"
            }
        }
        "blocked" => "manual",
        "success" => {
            if !jobs.is_empty() && jobs.iter().all(|j| j.status == "skipped") {
                "skipped"
            } else {
                "success"
            }
        }
        // A stored schedule has no "canceled" flag: canceled jobs and no
        // failed one is GitLab's canceled pipeline.
        "failed"
            if !jobs
                .iter()
                .any(|j| j.status == "failed" && j.allow_failure == 0) =>
        {
            "canceled"
        }
        "failed" => "failed",
        _ => "canceled",
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

/// Asks the state machine what a finished attempt means (`retry:`,
/// `allow_failure`). `failure` is GitLab's reason when it failed.
pub fn attempt_finished(
    planned: &Planned,
    jobs: &[Job],
    job: &Job,
    state: &str,
    failure: Option<&str>,
    exit_code: Option<i64>,
) -> AfterAttempt {
    let status = match state {
        "success" => AttemptStatus::Success,
        "canceled" => AttemptStatus::Canceled,
        _ => AttemptStatus::Failed(match failure {
            Some("script_failure") | None => Failure::Script,
            Some("stuck_or_timeout_failure") | Some("job_execution_timeout") => Failure::Timeout,
            Some(other) => Failure::System(other.to_string()),
        }),
    };
    // The row as it was while running.
    let mut rows = jobs.to_vec();
    if let Some(r) = rows.iter_mut().find(|r| r.id == job.id) {
        r.status = "running".into();
    }
    let Ok(mut schedule) = restore(planned, &rows) else {
        return AfterAttempt::Done(if state == "success" {
            "success"
        } else {
            "failed"
        });
    };
    let Some(i) = schedule.jobs().iter().position(|j| j.name == job.name) else {
        return AfterAttempt::Done(if state == "success" {
            "success"
        } else {
            "failed"
        });
    };
    match schedule.attempt_finished(i, &status, exit_code.map(|c| c as i32)) {
        Decision::Retry { .. } => AfterAttempt::Retry,
        Decision::Finished { status, .. } => AfterAttempt::Done(row_status(status)),
        _ => AfterAttempt::Done(if state == "success" {
            "success"
        } else {
            "failed"
        }),
    }
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
/// dependencies' archives downloaded there; caches on the runner's disk.
struct RunnerBlobs {
    dir: PathBuf,
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
        let path = gantry_engine::cache::cache_path(&self.dir.join("cache"), key);
        path.is_file().then_some(path)
    }
    fn cache_staging(&self, key: &str) -> PathBuf {
        gantry_engine::cache::cache_path(&self.dir.join("cache"), key)
    }
    fn commit_cache(
        &self,
        _key: &str,
        _staged: &Path,
    ) -> Result<(), gantry_engine::error::StoreError> {
        Ok(())
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
    // The build directory is not kept: a runner has no `gantry shell`.
    if let Some(dir) = &outcome.build_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = std::fs::remove_dir_all(builds_dir.join(format!("{slug}.tmp")));
    Ok(JobResult {
        state,
        failure_reason,
        exit_code: outcome.exit_code.map(i64::from),
        dotenv: outcome.dotenv,
        artifact: outcome
            .artifact
            .map(|a| PathBuf::from(a.key))
            .filter(|p| p.is_file()),
    })
}
