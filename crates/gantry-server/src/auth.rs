//! Who is calling: a user's API token (`PRIVATE-TOKEN` or
//! `Authorization: Bearer`), a job token (`JOB-TOKEN`) or a runner token.
//! Each kind is accepted only where it belongs: a runner token is not a user
//! token, and a job token works only while its job runs.

use crate::app::Shared;
use crate::error::ApiError;
use crate::store::{Job, Project, Role, User};
use axum::http::HeaderMap;

/// The user token of a request, if any.
pub fn user_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("private-token").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_string())
}

/// The job token of a request, if any.
pub fn job_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get("job-token")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

/// The user behind the request, who must have at least `needed`.
pub async fn require_user(
    app: &Shared,
    headers: &HeaderMap,
    needed: Role,
) -> Result<User, ApiError> {
    let token = user_token(headers).ok_or(ApiError::Unauthorized)?;
    let user = app
        .store
        .user_by_token(&token)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if !user.role().allows(needed) {
        return Err(ApiError::Forbidden);
    }
    Ok(user)
}

/// The user behind the request as they act in project `id` (a number or
/// a path; see [`crate::members::in_project`]), who must have at least
/// `needed` there; and the project. 401 before 404 before 403.
pub async fn require_project_user(
    app: &Shared,
    headers: &HeaderMap,
    id: &str,
    needed: Role,
) -> Result<(User, Project), ApiError> {
    let user = require_user(app, headers, Role::Viewer).await?;
    let project = crate::api::gitlab::find_project(app, id).await?;
    let user = crate::members::in_project(&app.store, user, project.id).await?;
    if !user.role().allows(needed) {
        return Err(ApiError::Forbidden);
    }
    Ok((user, project))
}

/// The running job whose token the request carries.
pub async fn require_job(app: &Shared, headers: &HeaderMap, job_id: i64) -> Result<Job, ApiError> {
    let token = job_token(headers).ok_or(ApiError::Unauthorized)?;
    let job = app
        .store
        .job_by_token(&token)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if job.id != job_id {
        return Err(ApiError::Forbidden);
    }
    if job.status != "running" {
        return Err(ApiError::Forbidden);
    }
    Ok(job)
}

/// Either a user with `needed`, or a running job of the same project
/// (job tokens read artifacts of their pipeline's jobs).
pub async fn require_user_or_job(
    app: &Shared,
    headers: &HeaderMap,
    needed: Role,
    project_id: i64,
) -> Result<(), ApiError> {
    if let Some(token) = job_token(headers) {
        let job = app
            .store
            .job_by_token(&token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if job.status == "running" && job.project_id == project_id {
            return Ok(());
        }
        return Err(ApiError::Forbidden);
    }
    require_user(app, headers, needed).await.map(|_| ())
}
