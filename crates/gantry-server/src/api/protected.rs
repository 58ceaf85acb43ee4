//! GitLab's protected environments API (`/projects/:id/protected_environments`):
//! the same rules the dashboard's Environments page sets (see
//! [`crate::actions::deploy_rule`]). A rule holds one role and a list of
//! users, so `deploy_access_levels` map to the most permissive
//! `access_level` given (30 developer, 40 maintainer, 60 admin) and the
//! `user_id`s; `required_approval_count` makes a manual deploy wait for
//! that many distinct approvers (each plays it once). Group entries and
//! GitLab's `approval_rules` are not supported.

use crate::app::Shared;
use crate::auth::require_project_user;
use crate::error::ApiError;
use crate::store::Role;
use crate::store_dashboard::{DashboardStore, ProtectedEnvironment};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

fn access_level(role: &str) -> Option<i64> {
    match role {
        "developer" => Some(30),
        "maintainer" => Some(40),
        "admin" => Some(60),
        _ => None,
    }
}

async fn rule_json(app: &Shared, rule: &ProtectedEnvironment) -> Result<Value, ApiError> {
    let mut levels = Vec::new();
    if let Some(level) = access_level(&rule.required_role) {
        levels.push(json!({"access_level": level, "access_level_description": rule.required_role, "user_id": null, "group_id": null}));
    }
    let users = DashboardStore(&app.store).users().await?;
    for name in rule.approver_names() {
        if let Some(u) = users.iter().find(|u| u.username == name) {
            levels.push(json!({"access_level": null, "access_level_description": u.username, "user_id": u.id, "group_id": null}));
        }
    }
    Ok(
        json!({"name": rule.name, "deploy_access_levels": levels, "required_approval_count": rule.required_approval_count}),
    )
}

pub async fn list(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    let mut out = Vec::new();
    for rule in DashboardStore(&app.store).protected_environments().await? {
        if rule.project_id == project.id {
            out.push(rule_json(&app, &rule).await?);
        }
    }
    Ok(Json(out).into_response())
}

#[derive(Deserialize)]
pub struct AccessLevel {
    access_level: Option<i64>,
    user_id: Option<i64>,
    group_id: Option<i64>,
}

#[derive(Deserialize)]
pub struct NewRule {
    name: String,
    deploy_access_levels: Vec<AccessLevel>,
    /// Distinct approvals a manual deploy needs (GitLab: 0 to 5).
    #[serde(default)]
    required_approval_count: i64,
}

pub async fn create(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<NewRule>,
) -> Result<Response, ApiError> {
    let (user, project) = require_project_user(&app, &headers, &id, Role::Maintainer).await?;
    let dash = DashboardStore(&app.store);
    if dash
        .protected_environment(project.id, body.name.trim())
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict(format!(
            "`{}` is already protected; DELETE it first",
            body.name
        )));
    }
    let mut role: Option<Role> = None;
    let mut approvers = Vec::new();
    for level in &body.deploy_access_levels {
        match (level.access_level, level.user_id, level.group_id) {
            (Some(n), None, None) => {
                let r = match n {
                    30 => Role::Developer,
                    40 => Role::Maintainer,
                    60 => Role::Admin,
                    other => {
                        return Err(ApiError::BadRequest(format!(
                            "deploy_access_levels: access_level {other} is not supported (30 developer, 40 maintainer, 60 admin)"
                        )));
                    }
                };
                // Any entry allows, so the most permissive role counts.
                role = Some(role.map_or(r, |old: Role| if r > old { r } else { old }));
            }
            (None, Some(uid), None) => match app.store.user(uid).await? {
                Some(u) => approvers.push(u.username),
                None => {
                    return Err(ApiError::BadRequest(format!(
                        "deploy_access_levels: no user with id {uid}"
                    )));
                }
            },
            _ => {
                return Err(ApiError::BadRequest(
                    "deploy_access_levels: each entry needs exactly one of access_level or user_id (groups are not supported)".into(),
                ));
            }
        }
    }
    let rule = crate::actions::new_rule(
        &app,
        project.id,
        &body.name,
        role.map(Role::as_str),
        &approvers,
        body.required_approval_count,
        &user,
    )
    .await?
    .map_err(|problems| ApiError::BadRequest(problems.join("; ")))?;
    dash.protect_environment(&rule).await?;
    Ok((StatusCode::CREATED, Json(rule_json(&app, &rule).await?)).into_response())
}

pub async fn delete(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Maintainer).await?;
    if !DashboardStore(&app.store)
        .unprotect_environment(project.id, &name)
        .await?
    {
        return Err(ApiError::NotFound("Protected environment"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
