//! Child pipelines (`trigger:include`) on the server. When the engine's
//! state machine starts a trigger job, the queue marks it running and
//! [`spawn_start`] plans its child with the engine's [`ChildPlanner`] (the
//! one `gantry run` uses) from the parent's commit and context, or from
//! YAML an earlier job of the pipeline left in its artifacts (dynamic
//! children). The child is stored as a pipeline of the same project and
//! commit with `CI_PIPELINE_SOURCE=parent_pipeline`, linked to its trigger
//! job. Without `strategy: depend` the trigger job succeeds once the child
//! exists; with it, it ends as the child ends ([`spawn_pipeline_finished`]).

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

/// GitLab's limit: a child pipeline may trigger one more level, no deeper.
const MAX_DEPTH: usize = 2;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The status a job starts in when played or retried: `running` for a
/// trigger job (the server creates its child: [`spawn_start`]), else
/// `pending` (a runner claims it).
pub fn start_status(job: &Job) -> &'static str {
    if crate::engine_bridge::spec(job).is_some_and(|s| s.trigger.is_some()) {
        "running"
    } else {
        "pending"
    }
}

/// Creates the child pipeline of trigger job `job_id` (already running)
/// in the background.
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
                    let line = format!("Created child pipeline #{}\n", child.id);
                    end(app, &job, "success", &line).await?;
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
    if depth(app, pipeline.id).await? >= MAX_DEPTH {
        return end(
            app,
            &job,
            "failed",
            &format!("child pipelines nest at most {MAX_DEPTH} levels deep (GitLab's limit)"),
        )
        .await;
    }
    let planned = match plan(app, &project, &pipeline, &spec).await {
        Ok(p) => p,
        Err(e) => return end(app, &job, "failed", &e.to_string()).await,
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
            if gantry_engine::run::trigger_depends(&spec) {
                append_log(app, job.id, &line).await;
                // A child that finished at once (every job skipped) ends it now.
                if crate::store::is_finished(&child.status) {
                    pipeline_finished(app, child.id, status_str(&child.status)).await?;
                }
                Ok(())
            } else {
                end(app, &job, "success", &line).await
            }
        }
        Err(CreateError::Store(e)) => Err(e),
        Err(e) => end(app, &job, "failed", &e.to_string()).await,
    }
}

/// How many pipelines up the chain of parents `pipeline_id` is.
async fn depth(app: &Shared, mut pipeline_id: i64) -> Result<usize, StoreError> {
    let mut depth = 0;
    while let Some(link) = app.store.parent_link(pipeline_id).await? {
        depth += 1;
        pipeline_id = link.parent_pipeline_id;
        if depth > MAX_DEPTH {
            break;
        }
    }
    Ok(depth)
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
    let is_tag = pipeline.tag != 0;
    let (_, predefined) = crate::pipelines::predefined(app, project, &pipeline.git_ref, is_tag);
    let trigger = Trigger {
        sha: pipeline.sha.clone(),
        git_ref: pipeline.git_ref.clone(),
        is_tag,
        before_sha: Some(pipeline.before_sha.clone()),
        source: pipeline.source.clone(),
        variables: serde_json::from_str(&pipeline.variables).unwrap_or_default(),
        predefined,
        // A child's inputs come from its trigger's `include:inputs`.
        inputs: None,
    };
    let spec = spec.clone();
    let gitlab = app.config.gitlab_url.clone();
    tokio::task::spawn_blocking(move || {
        let context = crate::planning::context(&mirror, &trigger)
            .map_err(|e| ChildPipelineError::Invalid(e.to_string()))?;
        let variables = gantry_config::child::child_context(&context, &spec)
            .overrides
            .into_iter()
            .collect();
        let planner = FileChildPlanner {
            files: Box::new(crate::planning::files(
                &mirror,
                &trigger.sha,
                gitlab.as_deref(),
            )),
            context,
        };
        let pipeline = planner.plan_child(
            &spec,
            generated.as_ref().map(|(n, t)| (n.as_str(), t.as_str())),
        )?;
        if pipeline.jobs.is_empty()
            || pipeline.status == gantry_config::model::PipelineStatus::Filtered
        {
            return Err(ChildPipelineError::Empty);
        }
        Ok(PlannedChild {
            pipeline,
            variables,
        })
    })
    .await
    .map_err(|e| ChildPipelineError::Invalid(format!("the planning task failed: {e}")))?
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

/// The trigger job's stored status for a child pipeline's final status.
fn status_str(status: &str) -> &'static str {
    match status {
        "success" | "skipped" => "success",
        "canceled" => "canceled",
        _ => "failed",
    }
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
    let line = format!("Child pipeline #{pipeline_id} ended: {status}\n");
    end(app, &job, status_str(status), &line).await
}

/// Ends a running trigger job: a line in its log, then the engine's
/// rules for a finished attempt (as for a runner's job).
async fn end(app: &Shared, job: &Job, state: &str, message: &str) -> Result<(), StoreError> {
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
    crate::queue::attempt_ended(app, job, state, None, None, None).await?;
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
