//! Downstream pipelines on the server: child pipelines (`trigger:include`)
//! and multi-project pipelines (`trigger: project`). When the engine's
//! state machine starts a trigger job, the queue marks it running and
//! [`spawn_start`] creates its downstream pipeline, linked to the trigger
//! job. Without `strategy: depend` the trigger job succeeds once the
//! downstream pipeline exists; with it, it ends as that pipeline ends
//! ([`spawn_pipeline_finished`]); canceling the upstream pipeline cancels it.
//!
//! - A child is planned with the engine's [`ChildPlanner`] (the one `gantry
//!   run` uses) from the parent's commit and context, or from YAML an
//!   earlier job left in its artifacts (dynamic children), and stored in
//!   the same project and commit with `CI_PIPELINE_SOURCE=parent_pipeline`.
//! - A multi-project pipeline is created as GitLab's
//!   `Ci::CreateDownstreamPipelineService` does: in the server's project
//!   whose path is `trigger:project`, on `trigger:branch` (else its default
//!   branch), from that project's own configuration, with
//!   `CI_PIPELINE_SOURCE=pipeline`. The trigger job's YAML variables
//!   (expanded upstream) and, with `forward:pipeline_variables`, the
//!   upstream pipeline variables become its pipeline variables. The user
//!   of the trigger job (or of its pipeline, or the upstream project's
//!   creator for webhook pipelines) needs developer access.
//!   ([`multi_project`], with the variables of [`variables`].)

use crate::app::Shared;
use crate::error::StoreError;
use crate::pipelines::{CreateError, Request};
use crate::planning::Trigger;
use crate::store::{Job, Pipeline, Project};
use gantry_config::child::ChildSource;
use gantry_engine::child_planner::FileChildPlanner;
use gantry_engine::error::ChildPipelineError;
use gantry_engine::ports::ChildPlanner;
use std::future::Future;
use std::pin::Pin;
use variables::BridgeVariablesError;

mod multi_project;
mod variables;

/// GitLab's limit: a child pipeline may trigger one more level, no deeper.
const MAX_DEPTH: usize = 2;

/// GitLab's `MAX_HIERARCHY_SIZE`: pipelines in one upstream/downstream tree
/// (it also ends a loop of projects triggering each other).
const MAX_HIERARCHY_SIZE: usize = 1000;

/// GitLab's failure reasons of a trigger (bridge) job.
pub const DOWNSTREAM_PROJECT_NOT_FOUND: &str = "downstream_bridge_project_not_found";
pub const INSUFFICIENT_BRIDGE_PERMISSIONS: &str = "insufficient_bridge_permissions";
pub const DOWNSTREAM_CREATION_FAILED: &str = "downstream_pipeline_creation_failed";
pub const MAX_DESCENDANTS_DEPTH: &str = "reached_max_descendant_pipelines_depth";
pub const MAX_HIERARCHY: &str = "reached_max_pipeline_hierarchy_size";
pub const INVALID_BRIDGE_TRIGGER: &str = "invalid_bridge_trigger";
pub const PIPELINE_LOOP_DETECTED: &str = "pipeline_loop_detected";

/// `trigger: group/project` or `trigger: {project, branch}`: a
/// multi-project trigger, as written (variables not yet expanded).
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectTrigger {
    pub project: String,
    pub branch: Option<String>,
}

/// The multi-project target of a trigger job; `None` for a child pipeline
/// (`trigger:include`) or a job that triggers nothing.
pub fn project_trigger(spec: &gantry_config::model::Job) -> Option<ProjectTrigger> {
    match spec.trigger.as_ref()? {
        serde_json::Value::String(project) => Some(ProjectTrigger {
            project: project.clone(),
            branch: None,
        }),
        serde_json::Value::Object(map) => Some(ProjectTrigger {
            project: map.get("project")?.as_str()?.to_string(),
            branch: map
                .get("branch")
                .and_then(serde_json::Value::as_str)
                .map(String::from),
        }),
        _ => None,
    }
}

/// Whether a job row is a trigger (bridge) job: GitLab lists those under
/// `/bridges`, never among a pipeline's or project's jobs.
pub fn is_bridge(job: &Job) -> bool {
    // Cheap first: a job without a trigger stores `"trigger":null`, and a
    // key written once is the top-level one (listing every job of a project
    // must not parse every spec).
    let keys = job.spec.matches("\"trigger\":").count();
    if keys == 0 || (keys == 1 && job.spec.contains("\"trigger\":null")) {
        return false;
    }
    crate::engine_bridge::spec(job).is_some_and(|s| s.trigger.is_some())
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The status a job starts in when played or retried: `running` for a
/// trigger job (the server creates its downstream pipeline:
/// [`spawn_start`]), else `pending` (a runner claims it).
pub fn start_status(job: &Job) -> &'static str {
    if is_bridge(job) { "running" } else { "pending" }
}

/// Creates the downstream pipeline of trigger job `job_id` (already
/// running) in the background.
pub fn spawn_start(app: Shared, job_id: i64) {
    let task: Task = Box::pin(async move {
        if let Err(e) = start(&app, job_id).await {
            eprintln!("gantry serve: trigger job {job_id}: {e}");
        }
    });
    tokio::spawn(task);
}

/// A pipeline reached a final status: a trigger job with `strategy:
/// depend` waiting on it ends the same way.
pub fn spawn_pipeline_finished(app: Shared, pipeline_id: i64, status: &'static str) {
    let task: Task = Box::pin(async move {
        if let Err(e) = pipeline_finished(&app, pipeline_id, status).await {
            eprintln!("gantry serve: child pipeline {pipeline_id}: {e}");
        }
    });
    tokio::spawn(task);
}

/// After a restart: trigger jobs left running by a server that stopped
/// between marking them and finishing them carry on (their child is
/// created, or the trigger job ends as its child did).
pub async fn resume(app: &Shared) -> Result<(), StoreError> {
    for job in app.store.jobs_with_status("running").await? {
        let Some(spec) = crate::engine_bridge::spec(&job).filter(|s| s.trigger.is_some()) else {
            continue;
        };
        let child = app
            .store
            .child_links(job.pipeline_id)
            .await?
            .into_iter()
            .find(|l| l.trigger_job_id == job.id);
        match child {
            None => spawn_start(app.clone(), job.id),
            Some(link) => {
                let Some(child) = app.store.pipeline(link.child_pipeline_id).await? else {
                    continue;
                };
                if !gantry_engine::run::trigger_depends(&spec) {
                    let line = format!("Created downstream pipeline #{}\n", child.id);
                    end(app, &job, "success", None, &line).await?;
                } else if crate::store::is_finished(&child.status) {
                    pipeline_finished(app, child.id, &child.status).await?;
                }
            }
        }
    }
    Ok(())
}

async fn start(app: &Shared, job_id: i64) -> Result<(), StoreError> {
    let Some(job) = app.store.job(job_id).await? else {
        return Ok(());
    };
    let (Some(pipeline), Some(spec)) = (
        app.store.pipeline(job.pipeline_id).await?,
        crate::engine_bridge::spec(&job),
    ) else {
        return Ok(());
    };
    let Some(project) = app.store.project(pipeline.project_id).await? else {
        return Ok(());
    };
    if let Some(target) = project_trigger(&spec) {
        return multi_project::start_multi_project(app, &job, &pipeline, &project, &spec, &target)
            .await;
    }
    // GitLab's preconditions, in its order.
    if child_depth(app, &pipeline).await? >= MAX_DEPTH {
        let why = format!("child pipelines nest at most {MAX_DEPTH} levels deep (GitLab's limit)");
        return end(app, &job, "failed", Some(MAX_DESCENDANTS_DEPTH), &why).await;
    }
    if let Some(why) = hierarchy_too_large(app, pipeline.id).await? {
        return end(app, &job, "failed", Some(MAX_HIERARCHY), &why).await;
    }
    let spec = match variables::child_spec(app, &project, &pipeline, &job, &spec).await {
        Ok(s) => s,
        Err(BridgeVariablesError::Store(e)) => return Err(e),
        Err(e) => {
            let why = e.to_string();
            return end(app, &job, "failed", Some(DOWNSTREAM_CREATION_FAILED), &why).await;
        }
    };
    let planned = match plan(app, &project, &pipeline, &spec).await {
        Ok(p) => p,
        Err(e) => {
            let why = e.to_string();
            return end(app, &job, "failed", Some(DOWNSTREAM_CREATION_FAILED), &why).await;
        }
    };
    let req = Request {
        git_ref: pipeline.git_ref.clone(),
        source: "parent_pipeline".into(),
        variables: planned.variables,
        user_id: job.user_id,
        ..Default::default()
    };
    let child = crate::pipelines::store_and_start(
        app,
        &project,
        &req,
        pipeline.sha.clone(),
        pipeline.tag != 0,
        pipeline.protected != 0,
        &planned.pipeline,
        Some((pipeline.id, job.id)),
    )
    .await;
    match child {
        Ok(child) => {
            let line = format!(
                "Created child pipeline #{} ({}/{}/-/pipelines/{}), status {}\n",
                child.id, app.url, project.path, child.id, child.status
            );
            created(app, &job, &spec, &child, line).await
        }
        Err(CreateError::Store(e)) => Err(e),
        Err(e) => {
            let why = e.to_string();
            end(app, &job, "failed", Some(DOWNSTREAM_CREATION_FAILED), &why).await
        }
    }
}

/// The downstream pipeline of trigger job `job` exists: without `strategy:
/// depend` the job succeeds; with it, it waits for the pipeline's end.
async fn created(
    app: &Shared,
    job: &Job,
    spec: &gantry_config::model::Job,
    downstream: &Pipeline,
    line: String,
) -> Result<(), StoreError> {
    if gantry_engine::run::trigger_depends(spec) {
        append_log(app, job.id, &line).await;
        // A pipeline that finished at once (every job skipped) ends it now.
        if crate::store::is_finished(&downstream.status) {
            pipeline_finished(app, downstream.id, &downstream.status).await?;
        }
        Ok(())
    } else {
        end(app, job, "success", None, &line).await
    }
}

/// How many child pipelines (`parent_pipeline`) up the chain `pipeline`
/// is; a multi-project downstream pipeline starts a new count, as GitLab's.
async fn child_depth(app: &Shared, pipeline: &Pipeline) -> Result<usize, StoreError> {
    let mut depth = 0;
    let mut current = pipeline.clone();
    while current.source == "parent_pipeline" && depth <= MAX_DEPTH {
        let Some(link) = app.store.parent_link(current.id).await? else {
            break;
        };
        depth += 1;
        let Some(parent) = app.store.pipeline(link.parent_pipeline_id).await? else {
            break;
        };
        current = parent;
    }
    Ok(depth)
}

/// Why a new downstream pipeline would make the upstream/downstream tree
/// of `pipeline_id` too large, if it would.
async fn hierarchy_too_large(app: &Shared, pipeline_id: i64) -> Result<Option<String>, StoreError> {
    Ok(
        (hierarchy_size(app, pipeline_id).await? >= MAX_HIERARCHY_SIZE).then(|| {
            format!(
                "the pipeline hierarchy holds {MAX_HIERARCHY_SIZE} pipelines, GitLab's limit \
             (do projects trigger each other in a loop?)"
            )
        }),
    )
}

/// GitLab's loop check for multi-project pipelines: among `pipeline` and
/// its upstreams (child pipelines aside), one (project, ref, source) may
/// occur at most twice (A → B → A is allowed, A → B → A → B → A is not).
async fn loop_detected(app: &Shared, pipeline: &Pipeline) -> Result<bool, StoreError> {
    let mut seen: std::collections::HashMap<(i64, String, String), usize> = Default::default();
    let mut current = Some(pipeline.clone());
    let mut steps = 0;
    while let Some(p) = current.take() {
        if p.source != "parent_pipeline" {
            let n = seen
                .entry((p.project_id, p.git_ref.clone(), p.source.clone()))
                .or_default();
            *n += 1;
            if *n > 2 {
                return Ok(true);
            }
        }
        steps += 1;
        if steps >= MAX_HIERARCHY_SIZE {
            break;
        }
        if let Some(link) = app.store.parent_link(p.id).await? {
            current = app.store.pipeline(link.parent_pipeline_id).await?;
        }
    }
    Ok(false)
}

/// How many pipelines the upstream/downstream tree of `pipeline_id` holds
/// (counted up to [`MAX_HIERARCHY_SIZE`]).
async fn hierarchy_size(app: &Shared, pipeline_id: i64) -> Result<usize, StoreError> {
    let mut root = pipeline_id;
    for _ in 0..MAX_HIERARCHY_SIZE {
        match app.store.parent_link(root).await? {
            Some(link) => root = link.parent_pipeline_id,
            None => break,
        }
    }
    let mut count = 0;
    let mut queue = vec![root];
    while let Some(id) = queue.pop() {
        count += 1;
        if count >= MAX_HIERARCHY_SIZE {
            break;
        }
        for link in app.store.child_links(id).await? {
            queue.push(link.child_pipeline_id);
        }
    }
    Ok(count)
}

/// The upstream pipeline's trigger, to rebuild its planning context.
async fn trigger_of(
    app: &Shared,
    project: &Project,
    pipeline: &Pipeline,
) -> Result<Trigger, StoreError> {
    let is_tag = pipeline.tag != 0;
    let (_, mut predefined) = crate::pipelines::predefined(app, project, &pipeline.git_ref, is_tag);
    // A child keeps its parent's merge request (GitLab's `Ci::Bridge`
    // passes `merge_request: parent_pipeline.merge_request`), hence its
    // `CI_MERGE_REQUEST_*` variables.
    let parent = app.planned(pipeline.id).await?;
    predefined.extend(
        parent
            .context_variables
            .iter()
            .filter(|v| v.name.starts_with("CI_MERGE_REQUEST_"))
            .map(|v| (v.name.clone(), v.value.clone())),
    );
    Ok(Trigger {
        sha: pipeline.sha.clone(),
        git_ref: pipeline.git_ref.clone(),
        is_tag,
        before_sha: Some(pipeline.before_sha.clone()),
        source: pipeline.source.clone(),
        variables: serde_json::from_str(&pipeline.variables).unwrap_or_default(),
        predefined,
        inputs: None,
    })
}

/// A planned child and its pipeline variables (what `trigger:forward`
/// passes down).
struct PlannedChild {
    pipeline: gantry_config::model::Pipeline,
    variables: Vec<(String, String)>,
}

/// Plans the child of `spec` (a trigger job of `pipeline`) in the
/// parent's context, from the parent's commit in the mirror.
async fn plan(
    app: &Shared,
    project: &Project,
    pipeline: &Pipeline,
    spec: &gantry_config::model::Job,
) -> Result<PlannedChild, ChildPipelineError> {
    let generated = match gantry_config::child::static_child(spec) {
        ChildSource::Artifact { job, artifact } => {
            let text = artifact_text(app, pipeline.id, &job, &artifact).await?;
            Some((format!("{artifact} (artifact of `{job}`)"), text))
        }
        _ => None,
    };
    let mirror = app
        .repos
        .ensure(project.id, &project.source_url, Some(&pipeline.sha))
        .await
        .map_err(|e| ChildPipelineError::Invalid(e.to_string()))?;
    // A child's inputs come from its trigger's `include:inputs`.
    let trigger = trigger_of(app, project, pipeline)
        .await
        .map_err(|e| ChildPipelineError::Invalid(e.to_string()))?;
    let gitlab = app.config.gitlab_url.clone();
    let plan = || {
        let (mirror, trigger, spec, gitlab, generated) = (
            mirror.clone(),
            trigger.clone(),
            spec.clone(),
            gitlab.clone(),
            generated.clone(),
        );
        async move {
            tokio::task::spawn_blocking(move || {
                let files = crate::planning::files(&mirror, &trigger.sha, gitlab.as_deref());
                let read = files.projects_read();
                let planned = plan_child(&mirror, &trigger, &spec, files, generated);
                (planned, read.list())
            })
            .await
            .map_err(|e| ChildPipelineError::Invalid(format!("the planning task failed: {e}")))
        }
    };
    let (first, projects_read) = plan().await?;
    // A child's `include:project` reads other mirrors as the parent's does.
    let refetched = crate::pipelines::refresh_included::<crate::pipelines::CreateError>(
        app,
        project.id,
        &projects_read,
    )
    .await
    .map_err(|e| ChildPipelineError::Invalid(e.to_string()))?;
    match refetched {
        true => plan().await?.0,
        false => first,
    }
}

/// [`plan`]'s planning, off the async threads.
fn plan_child(
    mirror: &std::path::Path,
    trigger: &crate::planning::Trigger,
    spec: &gantry_config::model::Job,
    files: crate::planning::MirrorFiles,
    generated: Option<(String, String)>,
) -> Result<PlannedChild, ChildPipelineError> {
    let context = crate::planning::context(mirror, trigger)
        .map_err(|e| ChildPipelineError::Invalid(e.to_string()))?;
    let variables = gantry_config::child::child_context(&context, spec)
        .overrides
        .into_iter()
        .collect();
    let planner = FileChildPlanner {
        files: Box::new(files),
        context,
    };
    let pipeline = planner.plan_child(
        spec,
        generated.as_ref().map(|(n, t)| (n.as_str(), t.as_str())),
    )?;
    if pipeline.jobs.is_empty() || pipeline.status == gantry_config::model::PipelineStatus::Filtered
    {
        return Err(ChildPipelineError::Empty);
    }
    Ok(PlannedChild {
        pipeline,
        variables,
    })
}

/// The text of `path` in the artifacts of job `from` of the pipeline (its
/// latest attempt).
async fn artifact_text(
    app: &Shared,
    pipeline_id: i64,
    from: &str,
    path: &str,
) -> Result<String, ChildPipelineError> {
    let (from_owned, path_owned) = (from.to_string(), path.to_string());
    let missing = move |reason: String| ChildPipelineError::MissingArtifact {
        job: from_owned.clone(),
        path: path_owned.clone(),
        reason,
    };
    let jobs = app
        .store
        .pipeline_jobs(pipeline_id, false)
        .await
        .map_err(|e| missing(e.to_string()))?;
    let job = jobs
        .iter()
        .rev()
        .find(|j| j.name == from)
        .ok_or_else(|| missing("no such job in this pipeline".into()))?;
    let zip = app
        .objects
        .get(&format!("artifacts/{}.zip", job.id))
        .await
        .map_err(|e| missing(e.to_string()))?
        .ok_or_else(|| missing("that job made no artifacts in this pipeline".into()))?;
    let path = path.trim_start_matches("./").to_string();
    let missing = missing.clone();
    tokio::task::spawn_blocking(move || {
        let mut archive =
            zip::ZipArchive::new(std::io::Cursor::new(zip)).map_err(|e| missing(e.to_string()))?;
        let mut entry = archive.by_name(&path).map_err(|e| missing(e.to_string()))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).map_err(|e| missing(e.to_string()))?;
        Ok(text)
    })
    .await
    .map_err(|e| ChildPipelineError::Invalid(format!("reading the artifact failed: {e}")))?
}

/// The trigger job's status for its downstream pipeline's final status
/// (GitLab's `inherit_status_from_downstream`): with `strategy: depend` a
/// skipped pipeline fails it; `mirror` would mirror `skipped`, which a
/// finished attempt cannot be here, so it counts as success.
fn status_str(status: &str, mirrored: bool) -> &'static str {
    match status {
        "success" => "success",
        "skipped" if mirrored => "success",
        "canceled" => "canceled",
        _ => "failed",
    }
}

/// `trigger: {strategy: mirror}`.
fn mirrored(job: &Job) -> bool {
    crate::engine_bridge::spec(job).is_some_and(|s| {
        s.trigger
            .as_ref()
            .and_then(|t| t.get("strategy"))
            .and_then(serde_json::Value::as_str)
            == Some("mirror")
    })
}

async fn pipeline_finished(app: &Shared, pipeline_id: i64, status: &str) -> Result<(), StoreError> {
    let Some(link) = app.store.parent_link(pipeline_id).await? else {
        return Ok(());
    };
    let Some(job) = app.store.job(link.trigger_job_id).await? else {
        return Ok(());
    };
    if job.status != "running" {
        return Ok(());
    }
    let line = format!("Downstream pipeline #{pipeline_id} ended: {status}\n");
    end(app, &job, status_str(status, mirrored(&job)), None, &line).await
}

/// Ends a running trigger job: a line in its log, then the engine's
/// rules for a finished attempt (as for a runner's job). `failure`:
/// GitLab's failure reason.
async fn end(
    app: &Shared,
    job: &Job,
    state: &str,
    failure: Option<&str>,
    message: &str,
) -> Result<(), StoreError> {
    let mut line = message.trim_end().to_string();
    line.push('\n');
    append_log(app, job.id, &line).await;
    if state == "failed" {
        eprintln!(
            "gantry serve: trigger job {} ({}) failed: {}",
            job.id,
            job.name,
            message.trim_end()
        );
    }
    crate::queue::attempt_ended(app, job, state, failure, None, None).await?;
    Ok(())
}

/// Appends `text` to a job's log (after what it holds).
async fn append_log(app: &Shared, job_id: i64, text: &str) {
    let offset = app
        .logs
        .read(job_id, 0)
        .await
        .map(|b| b.len() as u64)
        .unwrap_or(0);
    if let Err(e) = app.logs.append(job_id, offset, text.as_bytes(), &[]).await {
        eprintln!("gantry serve: the log of trigger job {job_id}: {e}");
    }
}
