//! `GET /projects/:id/pipelines/:pipeline_id/bridges`: a pipeline's trigger
//! jobs, each with the downstream (child) pipeline it created, as GitLab
//! lists them.

use super::gitlab::{find_project, job_json, pipeline_json};
use crate::app::Shared;
use crate::auth::require_user;
use crate::error::ApiError;
use crate::store::Role;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::Value;

pub async fn pipeline_bridges(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, pid)): Path<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    require_user(&app, &headers, Role::Viewer).await?;
    let project = find_project(&app, &id).await?;
    let pipeline = app
        .store
        .pipeline(pid)
        .await?
        .filter(|p| p.project_id == project.id)
        .ok_or(ApiError::NotFound("Pipeline"))?;
    let links = app.store.child_links(pipeline.id).await?;
    let mut bridges = Vec::new();
    for job in app.store.pipeline_jobs(pipeline.id, false).await? {
        let is_trigger = crate::engine_bridge::spec(&job).is_some_and(|s| s.trigger.is_some());
        if !is_trigger {
            continue;
        }
        let mut bridge = job_json(&app, &project, Some(&pipeline), &job);
        let downstream = match links.iter().find(|l| l.trigger_job_id == job.id) {
            Some(link) => app
                .store
                .pipeline(link.child_pipeline_id)
                .await?
                .map(|child| pipeline_json(&app, &project, &child))
                .unwrap_or(Value::Null),
            None => Value::Null,
        };
        bridge["downstream_pipeline"] = downstream;
        bridges.push(bridge);
    }
    Ok(Json(Value::Array(bridges)))
}
