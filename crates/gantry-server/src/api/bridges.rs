//! `GET /projects/:id/pipelines/:pipeline_id/bridges`: a pipeline's trigger
//! jobs, each with the downstream pipeline it created (a child pipeline of
//! the same project, or a multi-project pipeline with its own
//! `project_id`), as GitLab lists them.

use super::gitlab::{find_pipeline, job_json, pipeline_json};
use crate::app::Shared;
use crate::auth::require_project_user;
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
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    let pipeline = find_pipeline(&app, &project, pid).await?;
    let links = app.store.child_links(pipeline.id).await?;
    let mut bridges = Vec::new();
    for job in app.store.pipeline_jobs(pipeline.id, false).await? {
        if !crate::children::is_bridge(&job) {
            continue;
        }
        let mut bridge = job_json(&app, &project, Some(&pipeline), &job);
        let downstream = match links.iter().find(|l| l.trigger_job_id == job.id) {
            Some(link) => match app.store.pipeline(link.child_pipeline_id).await? {
                Some(child) if child.project_id == project.id => {
                    pipeline_json(&app, &project, &child)
                }
                Some(child) => match app.store.project(child.project_id).await? {
                    Some(other) => pipeline_json(&app, &other, &child),
                    None => Value::Null,
                },
                None => Value::Null,
            },
            None => Value::Null,
        };
        bridge["downstream_pipeline"] = downstream;
        bridges.push(bridge);
    }
    Ok(Json(Value::Array(bridges)))
}
