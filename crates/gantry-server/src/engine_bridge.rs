//! Every call the server makes into the pipeline engine goes through this
//! module, so the engine's scheduling state machine and its job entry point
//! can replace what is here without touching the queue or the runner.
//!
//! INTERIM (until gantry-engine exposes its serializable state machine):
//! [`next_steps`] and [`pipeline_status`] apply the engine's gate rules
//! (`gantry_engine::run`'s `decide`: stages or `needs`, `when`,
//! `allow_failure`) to stored job rows, and [`retry_allowed`] its `retry`
//! rule. The server keeps no other scheduling logic.

use crate::store::Job;
use gantry_config::model::{Job as JobSpec, When};
use std::time::Duration;

/// What the queue should do with a `created` job whose gate is decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Ready to run: `pending` (or `waiting_for_resource`).
    Enqueue(i64),
    /// `when: manual`: waits for someone to play it.
    Manual(i64),
    /// `when: delayed`: runs after `start_in`.
    Delay(i64, Duration),
    /// Will not run, and why.
    Skip(i64, String),
}

/// The planned job stored with a row.
pub fn spec(job: &Job) -> Option<JobSpec> {
    serde_json::from_str(&job.spec).ok()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum View {
    Success,
    Failed,
    Skipped,
}

/// How a finished (or non-blocking) prerequisite looks to a gate; `None`
/// while it can still change.
fn view(job: &Job) -> Option<View> {
    match job.status.as_str() {
        "success" => Some(View::Success),
        "failed" if job.allow_failure != 0 => Some(View::Success),
        "failed" | "canceled" => Some(View::Failed),
        "skipped" => Some(View::Skipped),
        // A manual job that may fail does not block what follows it.
        "manual" if job.allow_failure != 0 => Some(View::Skipped),
        _ => None,
    }
}

/// The jobs a `need` names: the exact name, else a parallel job's instances.
fn resolve<'a>(jobs: &'a [Job], name: &str) -> Vec<&'a Job> {
    let exact: Vec<&Job> = jobs.iter().filter(|j| j.name == name).collect();
    if !exact.is_empty() {
        return exact;
    }
    jobs.iter()
        .filter(|j| spec(j).is_some_and(|s| s.definition == name))
        .collect()
}

/// Decides every `created` job of one pipeline whose prerequisites are
/// done. `jobs` are the pipeline's current (not retried) jobs.
pub fn next_steps(jobs: &[Job]) -> Vec<Step> {
    let mut steps = Vec::new();
    for job in jobs.iter().filter(|j| j.status == "created") {
        let Some(spec) = spec(job) else {
            steps.push(Step::Skip(job.id, "the stored job cannot be read".into()));
            continue;
        };
        let (prereqs, dag): (Vec<&Job>, bool) = match &spec.needs {
            Some(needs) => (
                needs.iter().flat_map(|n| resolve(jobs, &n.job)).collect(),
                true,
            ),
            None => (
                jobs.iter()
                    .filter(|j| j.stage_idx < job.stage_idx)
                    .collect(),
                false,
            ),
        };
        let mut views = Vec::with_capacity(prereqs.len());
        let mut waiting = false;
        for p in &prereqs {
            match view(p) {
                Some(v) => views.push((p.name.as_str(), v)),
                None => waiting = true,
            }
        }
        if waiting {
            continue;
        }
        let failed = views.iter().any(|(_, v)| *v == View::Failed);
        let not_run = views.iter().find(|(_, v)| *v == View::Skipped);
        let go = |steps: &mut Vec<Step>| match spec.when {
            When::Manual => steps.push(Step::Manual(job.id)),
            When::Delayed => {
                let delay = spec
                    .start_in
                    .as_deref()
                    .and_then(gantry_engine::run::parse_duration)
                    .unwrap_or_default();
                steps.push(Step::Delay(job.id, delay));
            }
            _ => steps.push(Step::Enqueue(job.id)),
        };
        match spec.when {
            When::Always => go(&mut steps),
            When::Never => steps.push(Step::Skip(job.id, "when: never".into())),
            When::OnFailure => {
                if failed {
                    go(&mut steps)
                } else {
                    steps.push(Step::Skip(
                        job.id,
                        "when: on_failure, and nothing failed".into(),
                    ))
                }
            }
            When::OnSuccess | When::Manual | When::Delayed => {
                if failed {
                    steps.push(Step::Skip(
                        job.id,
                        if dag {
                            "a needed job failed".into()
                        } else {
                            "an earlier stage failed".into()
                        },
                    ))
                } else if let (true, Some((name, _))) = (dag, not_run) {
                    steps.push(Step::Skip(
                        job.id,
                        format!("needed job `{name}` did not run"),
                    ))
                } else {
                    go(&mut steps)
                }
            }
        }
    }
    steps
}

/// A pipeline's status from its current jobs (GitLab's composite status).
pub fn pipeline_status(jobs: &[Job]) -> &'static str {
    if jobs.is_empty() {
        return "skipped";
    }
    let any = |s: &str| jobs.iter().any(|j| j.status == s);
    if any("running") {
        return "running";
    }
    let started = jobs.iter().any(|j| {
        j.status != "created" && j.status != "pending" && j.status != "waiting_for_resource"
    });
    if any("pending") {
        return if started { "running" } else { "pending" };
    }
    if any("waiting_for_resource") {
        return "waiting_for_resource";
    }
    let blocking_manual = jobs
        .iter()
        .any(|j| j.status == "manual" && j.allow_failure == 0);
    if any("created") {
        // Jobs still wait for a gate: behind a blocking manual job, or
        // about to be decided.
        return if blocking_manual { "manual" } else { "running" };
    }
    if blocking_manual {
        return "manual";
    }
    if any("scheduled") {
        return "scheduled";
    }
    if jobs
        .iter()
        .any(|j| j.status == "failed" && j.allow_failure == 0)
    {
        return "failed";
    }
    if any("canceled") {
        return "canceled";
    }
    if jobs
        .iter()
        .all(|j| j.status == "skipped" || j.status == "manual")
        && any("skipped")
    {
        return "skipped";
    }
    "success"
}

/// Whether a failed attempt is retried (`retry:max`, `retry:when`,
/// `retry:exit_codes`); `kind` is GitLab's failure reason.
pub fn retry_allowed(spec: &JobSpec, attempt: i64, kind: &str, exit_code: Option<i64>) -> bool {
    let retry = &spec.retry;
    if attempt > retry.max as i64 {
        return false;
    }
    let when_ok = retry.when.is_empty()
        || retry
            .when
            .iter()
            .any(|w| w == "always" || w == kind || (w == "unknown_failure" && kind.is_empty()));
    let code_ok = retry.exit_codes.is_empty()
        || exit_code.is_some_and(|c| retry.exit_codes.iter().any(|e| *e as i64 == c));
    when_ok && code_ok
}

// ---- running one job attempt on a runner ----

use crate::protocol::JobPayload;
use gantry_engine::executor::Executor;
use gantry_engine::job::{AttemptStatus, Failure, JobSpec as AttemptSpec, RunShared};
use gantry_engine::sources::Snapshot;
use gantry_engine::state::{StateDir, slugify};
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
/// snapshots of commits, run directories (logs, builds, artifacts), caches.
pub struct Workspace {
    pub root: PathBuf,
}

impl Workspace {
    pub fn project_dir(&self, project_id: i64) -> PathBuf {
        self.root.join("projects").join(project_id.to_string())
    }
}

/// Runs one attempt of `payload`'s job through the engine's job lifecycle
/// (`gantry_engine::job::run_attempt`). Masked lines go to `lines`.
#[allow(clippy::too_many_arguments)]
pub async fn run_job(
    payload: &JobPayload,
    mirror: &Path,
    workspace: &Workspace,
    executor: Arc<dyn Executor>,
    docker: bool,
    dependencies: Vec<(String, PathBuf)>,
    lines: tokio::sync::mpsc::UnboundedSender<(usize, String)>,
    cancel: CancellationToken,
    snapshot_lock: &tokio::sync::Mutex<()>,
) -> Result<JobResult, std::io::Error> {
    let project_dir = workspace.project_dir(payload.project_id);
    std::fs::create_dir_all(&project_dir)?;
    let state = StateDir::for_repo(&project_dir);
    let run = state.new_run()?;
    let snapshot = {
        let _one_at_a_time = snapshot_lock.lock().await;
        let mirror = mirror.to_path_buf();
        let sha = payload.sha.clone();
        let cache = state.root.join("snapshots");
        tokio::task::spawn_blocking(move || Snapshot::cached(&mirror, &sha, &cache, 3))
            .await
            .map_err(std::io::Error::other)??
    };
    let shared = Arc::new(RunShared {
        run: run.clone(),
        snapshot,
        cache_dir: state.cache_dir(),
    });
    let job = &payload.spec;
    let slug = slugify(&job.name);
    let (ci_project_dir, ci_builds_dir) = if docker {
        (
            format!("/builds/{}", payload.project_path),
            "/builds".to_string(),
        )
    } else {
        (
            run.build_dir(&slug).display().to_string(),
            run.dir.join("builds").display().to_string(),
        )
    };
    let timeout = job
        .timeout
        .unwrap_or(gantry_engine::job::DEFAULT_TIMEOUT.as_secs());
    let mut vars = VarSet::new();
    vars.set("CI", "true");
    vars.set("GITLAB_CI", "true");
    if job.when == When::Manual {
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
    let spec = AttemptSpec {
        index: 0,
        job: job.clone(),
        slug,
        attempt: payload.attempt as u32,
        executor,
        vars,
        ci_project_dir,
        dependencies,
    };
    let outcome = gantry_engine::job::run_attempt(shared, spec, lines, cancel).await;
    let (state, failure_reason) = match &outcome.status {
        AttemptStatus::Success => ("success", None),
        AttemptStatus::Canceled => ("canceled", None),
        AttemptStatus::Failed(f) => (
            "failed",
            Some(match f {
                Failure::Script => "script_failure".to_string(),
                Failure::Timeout => "stuck_or_timeout_failure".to_string(),
                Failure::System(_) => "runner_system_failure".to_string(),
            }),
        ),
    };
    // The build directory is not kept: a runner has no `gantry shell`.
    let _ = std::fs::remove_dir_all(&outcome.build_dir);
    Ok(JobResult {
        state,
        failure_reason,
        exit_code: outcome.exit_code.map(i64::from),
        dotenv: outcome.dotenv,
        artifact: outcome.artifact.filter(|p| p.is_file()),
    })
}
