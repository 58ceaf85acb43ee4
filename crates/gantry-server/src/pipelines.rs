//! Creating pipelines: from the API, webhooks and schedules alike. The
//! commit is fetched into the project's mirror, planned (see
//! [`crate::planning`]), stored with its jobs, and older pipelines of the
//! ref are auto-canceled as `workflow:auto_cancel` (conservative) says.

use crate::app::{Metrics, Shared};
use crate::error::StoreError;
use crate::planning::{PlanError, Trigger};
use crate::repos::RepoError;
use crate::store::{NewJob, NewPipeline, Pipeline, Project};

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// `workflow:rules` (or every job's rules) created no pipeline.
    #[error("no pipeline for this ref: {0}")]
    Filtered(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to create a pipeline for.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub git_ref: String,
    /// The exact commit (webhooks); the ref's head when `None`.
    pub sha: Option<String>,
    pub is_tag: Option<bool>,
    pub before_sha: Option<String>,
    pub source: String,
    pub variables: Vec<(String, String)>,
    pub predefined: Vec<(String, String)>,
    pub user_id: Option<i64>,
    /// Pipeline inputs (`spec:inputs`); `None`: the defaults.
    pub inputs: Option<serde_json::Map<String, serde_json::Value>>,
    /// Fetch the remote first (webhooks and the API: new commits).
    pub fetch: bool,
    /// A downstream pipeline: its upstream pipeline and trigger job.
    pub parent: Option<(i64, i64)>,
}

/// GitLab's SHA for "no commit" (a new ref's `before`).
pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

impl Request {
    /// A push of `sha` to a branch or tag (`before`: its previous head),
    /// from a webhook or a poll of the remote: `CI_PIPELINE_SOURCE=push`,
    /// and it auto-cancels older pipelines of the ref.
    pub fn push(git_ref: String, is_tag: bool, sha: String, before: String) -> Request {
        Request {
            git_ref,
            sha: Some(sha),
            is_tag: Some(is_tag),
            before_sha: Some(before),
            source: "push".into(),
            fetch: true,
            ..Default::default()
        }
    }
}

/// Creates, stores and starts a pipeline.
pub async fn create(
    app: &Shared,
    project: &Project,
    req: Request,
) -> Result<Pipeline, CreateError> {
    let mirror = if req.fetch {
        sync_shared::<CreateError>(app, project).await?
    } else {
        // Another server may have fetched the commit: fetch when it is missing here.
        app.repos
            .ensure(project.id, &project.source_url, req.sha.as_deref())
            .await?
    };
    // `include:project` finds the server's other projects by their paths.
    let others = app.store.projects().await?;
    for other in &others {
        app.repos.alias(other.id, &other.path);
    }
    let (sha, is_tag) = match &req.sha {
        Some(sha) => {
            if !app.repos.has_commit(project.id, sha) {
                return Err(RepoError::UnknownCommit(sha.clone()).into());
            }
            let is_tag = req.is_tag.unwrap_or_else(|| {
                app.repos
                    .resolve_ref(project.id, &req.git_ref)
                    .is_ok_and(|(_, t)| t)
            });
            (sha.clone(), is_tag)
        }
        None => app.repos.resolve_ref(project.id, &req.git_ref)?,
    };
    let (protected, mut predefined) = predefined(app, project, &req.git_ref, is_tag);
    predefined.extend(req.predefined.iter().cloned());
    let trigger = Trigger {
        sha: sha.clone(),
        git_ref: req.git_ref.clone(),
        is_tag,
        before_sha: req.before_sha.clone(),
        source: req.source.clone(),
        variables: req.variables.clone(),
        predefined,
        inputs: req.inputs.clone(),
    };
    let entry = project.ci_config_path.clone();
    let gitlab = app.config.gitlab_url.clone();
    let plan = || {
        let (mirror, entry, trigger, gitlab) = (
            mirror.clone(),
            entry.clone(),
            trigger.clone(),
            gitlab.clone(),
        );
        async move {
            tokio::task::spawn_blocking(move || {
                crate::planning::plan(&mirror, &entry, &trigger, gitlab.as_deref())
            })
            .await
            .map_err(|e| StoreError::Config(format!("planning task failed: {e}")))
        }
    };
    let first = plan().await?;
    let planned = if refresh_included::<CreateError>(app, project.id, &first.projects_read).await? {
        plan().await?.pipeline?
    } else {
        first.pipeline?
    };
    if planned.status == gantry_config::model::PipelineStatus::Filtered {
        return Err(CreateError::Filtered(
            planned
                .filtered_reason
                .clone()
                .unwrap_or_else(|| "workflow:rules".into()),
        ));
    }
    let pipeline = store_and_start(
        app, project, &req, sha, is_tag, protected, &planned, req.parent,
    )
    .await?;
    // Kept for a re-run's form (not in GitLab's pipeline JSON).
    if let Some(inputs) = req.inputs.as_ref().filter(|i| !i.is_empty()) {
        crate::store_dashboard::DashboardStore(&app.store)
            .set_pipeline_inputs(pipeline.id, inputs)
            .await?;
    }
    Ok(pipeline)
}

/// Fetches the project's remote into this server's mirror and tells the
/// other servers (their mirrors of it are behind now).
pub async fn sync_shared<E: From<RepoError> + From<StoreError>>(
    app: &Shared,
    project: &Project,
) -> Result<std::path::PathBuf, E> {
    let dir = app.repos.sync(project.id, &project.source_url).await?;
    let version = app.store.bump_mirror_version(project.id).await?;
    app.repos.mark_synced(project.id, version);
    Ok(dir)
}

/// After a plan: fetches the mirrors of the projects it read with
/// `include:project` that are missing here or behind a fetch another
/// server made (see [`crate::repos::Repos::is_behind`]). True when it
/// fetched any, so that the caller plans again.
pub async fn refresh_included<E: From<RepoError> + From<StoreError>>(
    app: &Shared,
    planning: i64,
    projects_read: &[String],
) -> Result<bool, E> {
    if projects_read.is_empty() {
        return Ok(false);
    }
    let mut fetched = false;
    for other in app.store.projects().await? {
        let read = projects_read.iter().any(|p| same_path(p, &other.path));
        if other.id == planning || !read {
            continue;
        }
        if app.repos.mirror_dir(other.id).join("HEAD").exists()
            && !app.repos.is_behind(other.id, other.mirror_version)
        {
            continue;
        }
        app.repos.sync(other.id, &other.source_url).await?;
        // At least as new as the version read before this fetch.
        app.repos.mark_synced(other.id, other.mirror_version);
        app.repos.alias(other.id, &other.path);
        fetched = true;
    }
    Ok(fetched)
}

/// `include:project` paths as GitLab matches them: case-insensitively,
/// without surrounding slashes.
fn same_path(named: &str, path: &str) -> bool {
    named.trim_matches('/').eq_ignore_ascii_case(path)
}

/// Whether `git_ref` is protected, and the server's predefined variables
/// of a pipeline on it.
pub fn predefined(
    app: &Shared,
    project: &Project,
    git_ref: &str,
    is_tag: bool,
) -> (bool, Vec<(String, String)>) {
    let protected = !is_tag && git_ref == project.default_branch;
    let predefined = vec![
        ("CI_SERVER_URL".to_string(), app.url.clone()),
        ("CI_API_V4_URL".to_string(), format!("{}/api/v4", app.url)),
        // `gantry deploy` in a job records into this server's history, so
        // every runner sees the same known-good revision.
        ("GANTRY_HISTORY".to_string(), app.url.clone()),
        ("CI_PROJECT_ID".to_string(), project.id.to_string()),
        ("CI_PROJECT_PATH".to_string(), project.path.clone()),
        ("CI_PROJECT_NAME".to_string(), project.name.clone()),
        (
            "CI_PROJECT_URL".to_string(),
            format!("{}/{}", app.url, project.path),
        ),
        ("CI_COMMIT_REF_PROTECTED".to_string(), protected.to_string()),
        (
            "CI_DEFAULT_BRANCH".to_string(),
            project.default_branch.clone(),
        ),
    ];
    (protected, predefined)
}

/// Stores a planned pipeline with its jobs (a child pipeline: linked to
/// `parent`, its parent pipeline and trigger job) and starts it.
#[allow(clippy::too_many_arguments)]
pub async fn store_and_start(
    app: &Shared,
    project: &Project,
    req: &Request,
    sha: String,
    is_tag: bool,
    protected: bool,
    planned: &gantry_config::model::Pipeline,
    parent: Option<(i64, i64)>,
) -> Result<Pipeline, CreateError> {
    let jobs = planned
        .jobs
        .iter()
        .map(|j| NewJob {
            name: j.name.clone(),
            stage: j.stage.clone(),
            stage_idx: planned
                .stages
                .iter()
                .position(|s| *s == j.stage)
                .unwrap_or(0) as i64,
            when: j.when.as_str().to_string(),
            allow_failure: j.allow_failure,
            tags: j.tags.clone(),
            resource_group: j.resource_group.clone(),
            interruptible: j.interruptible,
            environment: j.environment.as_ref().map(|e| e.name.clone()),
            spec: serde_json::to_string(j).unwrap_or_default(),
        })
        .collect::<Vec<_>>();
    let new = NewPipeline {
        project_id: project.id,
        git_ref: req.git_ref.clone(),
        sha,
        before_sha: req.before_sha.clone().unwrap_or_else(|| ZERO_SHA.into()),
        tag: is_tag,
        source: req.source.clone(),
        protected,
        user_id: req.user_id,
        variables: serde_json::to_string(&req.variables).unwrap_or_else(|_| "[]".into()),
        spec: serde_json::to_string(&planned).unwrap_or_default(),
        name: planned.name.clone(),
        jobs,
        parent,
    };
    let pipeline = app.store.create_pipeline(&new).await?;
    Metrics::inc(&app.metrics.pipelines_created, 1);
    if matches!(req.source.as_str(), "push" | "merge_request_event") {
        auto_cancel(app, &pipeline).await?;
    }
    crate::queue::advance_pipeline(app, pipeline.id).await?;
    Ok(app.store.pipeline(pipeline.id).await?.unwrap_or(pipeline))
}

/// `workflow:auto_cancel:on_new_commit: conservative`: older pipelines of
/// the ref are canceled unless one of their non-interruptible jobs started.
async fn auto_cancel(app: &Shared, newer: &Pipeline) -> Result<(), StoreError> {
    let older = app
        .store
        .pipelines(newer.project_id, Some(&newer.git_ref), None, 50, 0)
        .await?;
    for p in older.iter().filter(|p| p.id < newer.id) {
        if crate::store::is_finished(&p.status) {
            continue;
        }
        let jobs = app.store.pipeline_jobs(p.id, false).await?;
        let protected_started = jobs.iter().any(|j| {
            j.interruptible == 0
                && !matches!(
                    j.status.as_str(),
                    "created"
                        | "pending"
                        | "manual"
                        | "scheduled"
                        | "skipped"
                        | "waiting_for_resource"
                )
        });
        if protected_started {
            continue;
        }
        for j in jobs.iter().filter(|j| !j.is_finished()) {
            app.store
                .cancel_job(j.id, &format!("auto-canceled by pipeline {}", newer.id))
                .await?;
        }
        crate::queue::advance_pipeline(app, p.id).await?;
    }
    Ok(())
}
