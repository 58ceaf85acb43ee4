//! Multi-project pipelines (`trigger: project`): GitLab's
//! `Ci::CreateDownstreamPipelineService` preconditions, in its order, then
//! the downstream project's pipeline on its branch, as the trigger job's
//! user, with the variables [`super::variables`] lets through.

use super::variables::{BridgeVariablesError, bridge_variables, downstream_variables};
use super::{
    DOWNSTREAM_CREATION_FAILED, DOWNSTREAM_PROJECT_NOT_FOUND, INSUFFICIENT_BRIDGE_PERMISSIONS,
    INVALID_BRIDGE_TRIGGER, MAX_HIERARCHY, PIPELINE_LOOP_DETECTED, ProjectTrigger, append_log,
    created, end, hierarchy_too_large, loop_detected,
};
use crate::app::Shared;
use crate::error::StoreError;
use crate::pipelines::{CreateError, Request};
use crate::store::{Job, Pipeline, Project, Role};

/// Creates the multi-project pipeline of trigger job `job` (GitLab's
/// `Ci::CreateDownstreamPipelineService` for `trigger: project`).
pub(super) async fn start_multi_project(
    app: &Shared,
    job: &Job,
    upstream: &Pipeline,
    project: &Project,
    spec: &gantry_config::model::Job,
    target: &ProjectTrigger,
) -> Result<(), StoreError> {
    let fail = |reason: &'static str, why: String| async move {
        end(app, job, "failed", Some(reason), &why).await
    };
    let bridge = match bridge_variables(app, project, upstream, job, spec).await {
        Ok(v) => v,
        Err(BridgeVariablesError::Store(e)) => return Err(e),
        Err(e) => return fail(DOWNSTREAM_CREATION_FAILED, e.to_string()).await,
    };
    let lookup = |name: &str| bridge.values.get(name).cloned();
    let path = gantry_config::expand::expand(&target.project, &lookup);
    let Some(downstream) = app.store.project_by_path(path.trim()).await? else {
        let known: Vec<String> = app
            .store
            .projects()
            .await?
            .into_iter()
            .map(|p| p.path)
            .collect();
        return fail(
            DOWNSTREAM_PROJECT_NOT_FOUND,
            format!(
                "the downstream project `{path}` (trigger:project) is not a project of this server; \
                 projects are named by their path with namespace: {}",
                if known.is_empty() { "there are none".into() } else { known.join(", ") }
            ),
        )
        .await;
    };
    if downstream.id == project.id {
        return fail(
            INVALID_BRIDGE_TRIGGER,
            format!(
                "trigger:project names this job's own project ({}): use trigger:include for a \
                 child pipeline",
                project.path
            ),
        )
        .await;
    }
    if let Some(why) = hierarchy_too_large(app, upstream.id).await? {
        return fail(MAX_HIERARCHY, why).await;
    }
    // The user the downstream pipeline runs as: who played or retried the
    // trigger job, else who started the upstream pipeline, else (a webhook
    // or poll pipeline, which has no user) the upstream project's creator.
    let user_id = job.user_id.or(upstream.user_id).or(project.creator_id);
    let user = match user_id {
        Some(id) => app.store.user(id).await?,
        None => None,
    };
    // Their role in the downstream project decides.
    let user = match user {
        Some(u) => Some(crate::members::in_project(&app.store, u, downstream.id).await?),
        None => None,
    };
    match &user {
        Some(u) if u.role().allows(Role::Developer) => {}
        Some(u) => {
            return fail(
                INSUFFICIENT_BRIDGE_PERMISSIONS,
                format!(
                    "{} ({}) may not create pipelines in {}: triggering a downstream project \
                     needs developer access or above",
                    u.username, u.role, downstream.path
                ),
            )
            .await;
        }
        None => {
            return fail(
                INSUFFICIENT_BRIDGE_PERMISSIONS,
                format!(
                    "the upstream pipeline has no user with access to {} (no user started it \
                     and its project has no creator)",
                    downstream.path
                ),
            )
            .await;
        }
    }
    if loop_detected(app, upstream).await? {
        return fail(
            PIPELINE_LOOP_DETECTED,
            format!(
                "the projects trigger each other in a loop: pipeline #{} and its upstream \
                 pipelines hold one project, ref and source three times (GitLab allows twice)",
                upstream.id
            ),
        )
        .await;
    }
    let branch = target
        .branch
        .as_deref()
        .map(|b| gantry_config::expand::expand(b, &lookup))
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| downstream.default_branch.clone());
    // Protected upstream variables reach the downstream pipeline only on a
    // ref the downstream project protects too.
    let (downstream_protected, _) = crate::pipelines::predefined(app, &downstream, &branch, false);
    let forwarded = downstream_variables(&bridge, spec, upstream, downstream_protected);
    for line in &forwarded.withheld {
        append_log(app, job.id, &format!("{line}\n")).await;
    }
    let inputs = spec
        .trigger
        .as_ref()
        .and_then(|t| t.get("inputs"))
        .and_then(serde_json::Value::as_object)
        .cloned();
    let req = Request {
        git_ref: branch.clone(),
        source: "pipeline".into(),
        variables: forwarded.variables,
        user_id,
        inputs,
        fetch: true,
        parent: Some((upstream.id, job.id)),
        ..Default::default()
    };
    match crate::pipelines::create(app, &downstream, req).await {
        Ok(created_pipeline) => {
            let line = format!(
                "Created downstream pipeline #{} in {} on {} ({}/{}/-/pipelines/{}), status {}\n",
                created_pipeline.id,
                downstream.path,
                branch,
                app.url,
                downstream.path,
                created_pipeline.id,
                created_pipeline.status
            );
            created(app, job, spec, &created_pipeline, line).await
        }
        Err(CreateError::Store(e)) => Err(e),
        Err(e) => {
            fail(
                DOWNSTREAM_CREATION_FAILED,
                format!(
                    "the downstream pipeline of {} on {branch} could not be created: {e}",
                    downstream.path
                ),
            )
            .await
        }
    }
}
