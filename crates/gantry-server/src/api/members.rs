//! GitLab's project members API (`/projects/:id/members`): who has which
//! role in one project (see [`crate::members`]). `…/members` lists the
//! project's own members; `…/members/all` every user with the access they
//! have there (a non-member's is their server-wide role). Maintainers of
//! the project manage members.

use super::gitlab::{iso, params};
use crate::app::Shared;
use crate::auth::require_project_user;
use crate::error::ApiError;
use crate::members::{MemberStore, access_level_of, in_project, role_of_access_level};
use crate::store::{Role, User};
use crate::store_dashboard::DashboardStore;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;

fn member_json(app: &Shared, user: &User, role: Role, created_at: i64) -> Value {
    json!({
        "id": user.id, "username": user.username, "name": user.name,
        "state": "active", "membership_state": "active", "avatar_url": null,
        "web_url": format!("{}/{}", app.url, user.username),
        "access_level": access_level_of(role), "gantry_role": role.as_str(),
        "created_at": iso(created_at), "expires_at": null,
    })
}

/// `access_level` of a request: one GitLab has (10, 20, 30, 40, 50).
fn access_level(fields: &serde_json::Map<String, Value>) -> Result<Role, ApiError> {
    let level = match fields.get("access_level") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        None | Some(Value::Null) => {
            return Err(ApiError::BadRequest("access_level is missing".into()));
        }
        Some(_) => None,
    };
    level.and_then(role_of_access_level).ok_or_else(|| {
        ApiError::BadRequest(
            "access_level does not have a valid value (10, 20, 30, 40 or 50)".into(),
        )
    })
}

/// The user a request names by `user_id` (or `username`).
async fn named_user(
    app: &Shared,
    fields: &serde_json::Map<String, Value>,
) -> Result<User, ApiError> {
    let users = DashboardStore(&app.store).users().await?;
    let by_id = match fields.get("user_id") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => Some(
            s.trim()
                .parse()
                .map_err(|_| ApiError::BadRequest(format!("user_id `{s}` is not a user id")))?,
        ),
        _ => None,
    };
    let found = match (by_id, fields.get("username").and_then(Value::as_str)) {
        (Some(id), _) => users.into_iter().find(|u| u.id == id),
        (None, Some(name)) => users.into_iter().find(|u| u.username == name),
        (None, None) => {
            return Err(ApiError::BadRequest(
                "user_id or username is missing".into(),
            ));
        }
    };
    found
        .filter(|u| !u.is_bot())
        .ok_or(ApiError::NotFound("User"))
}

pub async fn list(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    let members = MemberStore(&app.store).list(project.id).await?;
    Ok(Json(Value::Array(
        members
            .iter()
            .map(|m| member_json(&app, &m.user, m.role, m.created_at))
            .collect(),
    )))
}

pub async fn list_all(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    let mut out = Vec::new();
    for user in DashboardStore(&app.store).users().await? {
        if user.is_bot() {
            continue;
        }
        let created = user.created_at;
        let user = in_project(&app.store, user, project.id).await?;
        out.push(member_json(&app, &user, user.role(), created));
    }
    Ok(Json(Value::Array(out)))
}

pub async fn get(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, uid)): Path<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    let member = MemberStore(&app.store)
        .get(project.id, uid)
        .await?
        .ok_or(ApiError::NotFound("Member"))?;
    Ok(Json(member_json(
        &app,
        &member.user,
        member.role,
        member.created_at,
    )))
}

pub async fn get_all(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, uid)): Path<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    let user = app
        .store
        .user(uid)
        .await?
        .filter(|u| !u.is_bot())
        .ok_or(ApiError::NotFound("Member"))?;
    let created = user.created_at;
    let user = in_project(&app.store, user, project.id).await?;
    Ok(Json(member_json(&app, &user, user.role(), created)))
}

pub async fn add(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Maintainer).await?;
    let fields = params(&query, &body);
    let role = access_level(&fields)?;
    let user = named_user(&app, &fields).await?;
    if !MemberStore(&app.store)
        .add(project.id, user.id, role)
        .await?
    {
        return Err(ApiError::Conflict("Member already exists".into()));
    }
    let created = crate::now_ms();
    Ok((
        StatusCode::CREATED,
        Json(member_json(&app, &user, role, created)),
    )
        .into_response())
}

pub async fn update(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, uid)): Path<(String, i64)>,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Maintainer).await?;
    let role = access_level(&params(&query, &body))?;
    let members = MemberStore(&app.store);
    if !members.update(project.id, uid, role).await? {
        return Err(ApiError::NotFound("Member"));
    }
    let member = members
        .get(project.id, uid)
        .await?
        .ok_or(ApiError::NotFound("Member"))?;
    Ok(Json(member_json(
        &app,
        &member.user,
        member.role,
        member.created_at,
    )))
}

pub async fn remove(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, uid)): Path<(String, i64)>,
) -> Result<StatusCode, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Maintainer).await?;
    if !MemberStore(&app.store).remove(project.id, uid).await? {
        return Err(ApiError::NotFound("Member"));
    }
    Ok(StatusCode::NO_CONTENT)
}
