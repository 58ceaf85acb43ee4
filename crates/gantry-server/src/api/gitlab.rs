//! The GitLab v4 endpoints, answering in GitLab's JSON shapes so that
//! python-gitlab and the `gitlab` command work unchanged.

use crate::app::Shared;
use crate::auth::{require_project_user, require_user, require_user_or_job};
use crate::error::ApiError;
use crate::pipelines::{self, CreateError};
use crate::store::{Job, Pipeline, Project, Role, Variable};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// ISO 8601 in UTC with milliseconds, as GitLab writes times.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

fn iso_opt(ms: Option<i64>) -> Value {
    ms.map(|m| Value::String(iso(m))).unwrap_or(Value::Null)
}

#[derive(Debug, Deserialize, Default)]
pub struct Page {
    page: Option<i64>,
    per_page: Option<i64>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    status: Option<String>,
    #[serde(rename = "scope[]")]
    scope: Option<String>,
    scope_: Option<String>,
}

impl Page {
    fn limits(&self) -> (i64, i64, i64) {
        let per = self.per_page.unwrap_or(20).clamp(1, 100);
        let page = self.page.unwrap_or(1).max(1);
        (page, per, (page - 1) * per)
    }
}

/// A JSON list with GitLab's pagination headers (`Link: rel="next"` when
/// the page is full, so clients that iterate ask for the next one).
fn paged(app: &Shared, path: &str, page: i64, per: i64, items: Vec<Value>) -> Response {
    let full = items.len() as i64 == per;
    let mut resp = Json(Value::Array(items)).into_response();
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    set(h, "x-page", page.to_string());
    set(h, "x-per-page", per.to_string());
    set(
        h,
        "x-prev-page",
        if page > 1 {
            (page - 1).to_string()
        } else {
            String::new()
        },
    );
    set(
        h,
        "x-next-page",
        if full {
            (page + 1).to_string()
        } else {
            String::new()
        },
    );
    if full {
        set(
            h,
            "link",
            format!(
                "<{}{path}?page={}&per_page={per}>; rel=\"next\"",
                app.url,
                page + 1
            ),
        );
    }
    resp
}

/// A project by numeric id or URL-encoded path (`group%2Fname`).
pub async fn find_project(app: &Shared, id: &str) -> Result<Project, ApiError> {
    let found = match id.parse::<i64>() {
        Ok(n) => app.store.project(n).await?,
        Err(_) => app.store.project_by_path(id).await?,
    };
    found.ok_or(ApiError::NotFound("Project"))
}

pub fn project_json(app: &Shared, p: &Project) -> Value {
    let (ns, name) = p.path.rsplit_once('/').unwrap_or(("root", &p.path));
    json!({
        "id": p.id,
        "name": p.name,
        "path": name,
        "path_with_namespace": p.path,
        "name_with_namespace": p.path.replace('/', " / "),
        "default_branch": p.default_branch,
        "web_url": format!("{}/{}", app.url, p.path),
        "http_url_to_repo": p.source_url,
        "import_url": p.source_url,
        "import_status": "finished",
        "ci_config_path": p.ci_config_path,
        "created_at": iso(p.created_at),
        "visibility": "private",
        "namespace": {"id": 1, "name": ns, "path": ns, "kind": "group", "full_path": ns},
        "jobs_enabled": true,
    })
}

fn user_json(app: &Shared, u: &crate::store::User) -> Value {
    json!({
        "id": u.id, "username": u.username, "name": u.name, "email": u.email,
        "state": "active", "is_admin": u.role == "admin", "gantry_role": u.role,
        "bot": u.is_bot(),
        "web_url": format!("{}/{}", app.url, u.username), "created_at": iso(u.created_at),
    })
}

pub fn pipeline_json(app: &Shared, project: &Project, p: &Pipeline) -> Value {
    let duration = match (p.started_at, p.finished_at) {
        (Some(s), Some(f)) => json!((f - s) / 1000),
        _ => Value::Null,
    };
    json!({
        "id": p.id, "iid": p.iid, "project_id": p.project_id, "sha": p.sha, "ref": p.git_ref,
        "status": p.status, "source": p.source, "tag": p.tag != 0, "name": p.name,
        "before_sha": p.before_sha, "yaml_errors": p.error,
        "created_at": iso(p.created_at), "updated_at": iso(p.updated_at),
        "started_at": iso_opt(p.started_at), "finished_at": iso_opt(p.finished_at),
        "duration": duration, "protected": p.protected != 0,
        "web_url": format!("{}/{}/-/pipelines/{}", app.url, project.path, p.id),
        "user": p.user_id.map(|id| json!({"id": id})),
        "detailed_status": {"group": p.status, "text": p.status, "label": p.status},
    })
}

pub fn job_json(app: &Shared, project: &Project, pipeline: Option<&Pipeline>, j: &Job) -> Value {
    let duration = match (j.started_at, j.finished_at) {
        (Some(s), Some(f)) => json!((f - s) as f64 / 1000.0),
        _ => Value::Null,
    };
    let artifacts = match j.artifact_size {
        Some(size) => json!({"filename": "artifacts.zip", "size": size}),
        None => Value::Null,
    };
    json!({
        "id": j.id, "name": j.name, "stage": j.stage, "status": j.status,
        "ref": pipeline.map(|p| p.git_ref.clone()), "tag": pipeline.map(|p| p.tag != 0),
        "allow_failure": j.allow_failure != 0, "when": j.when_,
        "created_at": iso(j.created_at), "queued_at": iso_opt(j.queued_at),
        "started_at": iso_opt(j.started_at), "finished_at": iso_opt(j.finished_at),
        "duration": duration, "failure_reason": j.failure_reason, "retried": j.retried != 0,
        "attempt": j.attempt, "tag_list": j.tag_list(), "exit_code": j.exit_code,
        "environment": j.environment.as_ref().map(|e| json!({"name": e})),
        "interruptible": j.interruptible != 0, "resource_group": j.resource_group,
        "scheduled_at": iso_opt(j.scheduled_at),
        "pipeline": pipeline.map(|p| json!({"id": p.id, "project_id": p.project_id, "ref": p.git_ref, "sha": p.sha, "status": p.status})),
        "commit": pipeline.map(|p| json!({"id": p.sha, "short_id": &p.sha[..p.sha.len().min(8)]})),
        "runner": j.runner_id.map(|id| json!({"id": id})),
        "artifacts_file": artifacts,
        "web_url": format!("{}/{}/-/jobs/{}", app.url, project.path, j.id),
        "project": {"id": project.id},
        "user": j.user_id.map(|id| json!({"id": id})),
    })
}

fn variable_json(v: &Variable) -> Value {
    json!({
        "key": v.key, "value": v.value, "variable_type": v.variable_type,
        "protected": v.protected, "masked": v.masked, "raw": v.raw,
        "environment_scope": v.environment_scope,
    })
}

// ---- users ----

pub async fn version() -> Json<Value> {
    Json(json!({"version": format!("gantry-{}", env!("CARGO_PKG_VERSION")), "revision": "gantry"}))
}

pub async fn current_user(
    State(app): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let user = require_user(&app, &headers, Role::Viewer).await?;
    Ok(Json(user_json(&app, &user)))
}

/// `GET /users/:id` (GitLab's; `bot` is true for the system bot, which
/// cannot log in).
pub async fn get_user(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    require_user(&app, &headers, Role::Viewer).await?;
    let user = app
        .store
        .user(id)
        .await?
        .ok_or(ApiError::NotFound("User"))?;
    Ok(Json(user_json(&app, &user)))
}

#[derive(Deserialize)]
pub struct NewUser {
    username: String,
    name: Option<String>,
    email: Option<String>,
    /// Gantry's role: admin, maintainer, developer or viewer.
    #[serde(default)]
    role: Option<String>,
}

/// Creates a user (admin only) and answers with an API token for them.
pub async fn create_user(
    State(app): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<NewUser>,
) -> Result<Response, ApiError> {
    require_user(&app, &headers, Role::Admin).await?;
    let role_text = body.role.unwrap_or_else(|| "developer".into());
    let role = Role::parse(&role_text).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "role `{role_text}` is not one of admin, maintainer, developer, viewer"
        ))
    })?;
    if body.username.is_empty()
        || !body
            .username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ApiError::BadRequest(
            "username must be letters, digits, - _ .".into(),
        ));
    }
    let (user, token) = app
        .store
        .create_user(
            &body.username,
            body.name.as_deref().unwrap_or(&body.username),
            body.email.as_deref().unwrap_or(""),
            role,
        )
        .await
        .map_err(|_| ApiError::Conflict(format!("username `{}` is taken", body.username)))?;
    let mut v = user_json(&app, &user);
    v["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

// ---- projects ----

pub async fn list_projects(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    require_user(&app, &headers, Role::Viewer).await?;
    let (p, per, offset) = page.limits();
    let items = app
        .store
        .projects()
        .await?
        .iter()
        .skip(offset as usize)
        .take(per as usize)
        .map(|pr| project_json(&app, pr))
        .collect();
    Ok(paged(&app, "/api/v4/projects", p, per, items))
}

pub async fn get_project(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    Ok(Json(project_json(&app, &project)))
}

#[derive(Deserialize)]
pub struct NewProject {
    name: Option<String>,
    path: Option<String>,
    namespace: Option<String>,
    import_url: Option<String>,
    default_branch: Option<String>,
    ci_config_path: Option<String>,
}

/// `POST /projects` with `import_url`: a local path or a git URL the
/// server clones.
pub async fn create_project(
    State(app): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<NewProject>,
) -> Result<Response, ApiError> {
    let user = require_user(&app, &headers, Role::Maintainer).await?;
    let import_url = body
        .import_url
        .clone()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            ApiError::BadRequest(
                "import_url is missing: a git URL or a local path of the repository".into(),
            )
        })?;
    let name = body
        .name
        .clone()
        .or(body.path.clone())
        .ok_or_else(|| ApiError::BadRequest("name is missing".into()))?;
    let slug: String = body
        .path
        .clone()
        .unwrap_or_else(|| name.clone())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let namespace = body
        .namespace
        .clone()
        .unwrap_or_else(|| user.username.clone());
    let path = format!("{namespace}/{slug}");
    if app.store.project_by_path(&path).await?.is_some() {
        return Err(ApiError::BadRequest(format!(
            "project `{path}` has already been taken"
        )));
    }
    let project = app
        .store
        .create_project(
            &path,
            &name,
            &import_url,
            body.default_branch.as_deref().unwrap_or("main"),
            Some(user.id),
        )
        .await?;
    // Clone now: a bad URL is reported to the caller, not at the first push.
    match app.repos.sync(project.id, &import_url).await {
        Ok(_) => {
            if body.default_branch.is_none()
                && let Some(branch) = app.repos.default_branch(project.id)
            {
                app.store
                    .set_project_default_branch(project.id, &branch)
                    .await?;
            }
        }
        Err(e) => {
            return Err(ApiError::Unprocessable(format!(
                "project {path} was created but its repository could not be imported: {e}"
            )));
        }
    }
    if let Some(cfg) = &body.ci_config_path {
        sqlx::query("UPDATE projects SET ci_config_path = $1 WHERE id = $2")
            .bind(cfg)
            .bind(project.id)
            .execute(&app.store.db.pool)
            .await?;
    }
    let project = app
        .store
        .project(project.id)
        .await?
        .ok_or(ApiError::NotFound("Project"))?;
    Ok((StatusCode::CREATED, Json(project_json(&app, &project))).into_response())
}

/// The webhook secret and URLs of a project (maintainers).
pub async fn webhook_settings(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Maintainer).await?;
    let base = format!("{}/api/v4/projects/{}/webhooks", app.url, project.id);
    Ok(Json(json!({
        "secret": project.webhook_secret,
        "gitlab_url": format!("{base}/gitlab"),
        "github_url": format!("{base}/github"),
        "gitea_url": format!("{base}/gitea"),
    })))
}

// ---- pipelines ----

#[derive(Deserialize)]
pub struct NewPipelineBody {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    variables: Vec<KeyValue>,
    /// Pipeline inputs for the configuration's `spec:inputs` (GitLab 17.x).
    #[serde(default)]
    inputs: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
pub struct KeyValue {
    key: String,
    value: String,
}

pub fn create_error(e: CreateError) -> ApiError {
    match e {
        CreateError::Store(s) => ApiError::Store(s),
        CreateError::Filtered(why) => ApiError::BadRequest(format!(
            "Pipeline will not run for the selected trigger: {why}"
        )),
        other => ApiError::BadRequest(other.to_string()),
    }
}

pub async fn create_pipeline(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<NewPipelineBody>,
) -> Result<Response, ApiError> {
    let (user, project) = require_project_user(&app, &headers, &id, Role::Developer).await?;
    for v in &body.variables {
        if !gantry_engine::vars::valid_name(&v.key) {
            return Err(ApiError::BadRequest(format!(
                "variable name `{}` is invalid",
                v.key
            )));
        }
    }
    let req = pipelines::Request {
        git_ref: body.git_ref,
        source: "api".into(),
        variables: body
            .variables
            .into_iter()
            .map(|v| (v.key, v.value))
            .collect(),
        user_id: Some(user.id),
        inputs: body.inputs,
        fetch: true,
        ..Default::default()
    };
    let pipeline = pipelines::create(&app, &project, req)
        .await
        .map_err(create_error)?;
    Ok((
        StatusCode::CREATED,
        Json(pipeline_json(&app, &project, &pipeline)),
    )
        .into_response())
}

pub async fn list_pipelines(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    let (p, per, offset) = page.limits();
    let items = app
        .store
        .pipelines(
            project.id,
            page.git_ref.as_deref(),
            page.status.as_deref(),
            per,
            offset,
        )
        .await?
        .iter()
        .map(|pl| pipeline_json(&app, &project, pl))
        .collect();
    Ok(paged(
        &app,
        &format!("/api/v4/projects/{}/pipelines", project.id),
        p,
        per,
        items,
    ))
}

/// Pipeline `pid` of `project`, or 404 (also for another project's pipeline).
pub(crate) async fn find_pipeline(
    app: &Shared,
    project: &Project,
    pid: i64,
) -> Result<Pipeline, ApiError> {
    app.store
        .pipeline(pid)
        .await?
        .filter(|p| p.project_id == project.id)
        .ok_or(ApiError::NotFound("Pipeline"))
}

pub async fn get_pipeline(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, pid)): Path<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    let pipeline = find_pipeline(&app, &project, pid).await?;
    Ok(Json(pipeline_json(&app, &project, &pipeline)))
}

fn scopes(page: &Page) -> Vec<String> {
    page.scope
        .iter()
        .chain(page.scope_.iter())
        .flat_map(|s| s.split(','))
        .map(str::to_string)
        .collect()
}

pub async fn pipeline_jobs(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, pid)): Path<(String, i64)>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    let pipeline = find_pipeline(&app, &project, pid).await?;
    let (p, per, offset) = page.limits();
    let wanted = scopes(&page);
    let items = app
        .store
        .pipeline_jobs(pid, false)
        .await?
        .iter()
        // Trigger jobs are GitLab's bridges: listed under `/bridges` only.
        .filter(|j| !crate::children::is_bridge(j))
        .filter(|j| wanted.is_empty() || wanted.contains(&j.status))
        .skip(offset as usize)
        .take(per as usize)
        .map(|j| job_json(&app, &project, Some(&pipeline), j))
        .collect();
    Ok(paged(
        &app,
        &format!("/api/v4/projects/{}/pipelines/{pid}/jobs", project.id),
        p,
        per,
        items,
    ))
}

pub async fn pipeline_variables(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, pid)): Path<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Developer).await?;
    let pipeline = find_pipeline(&app, &project, pid).await?;
    let vars: Vec<(String, String)> = serde_json::from_str(&pipeline.variables).unwrap_or_default();
    Ok(Json(Value::Array(
        vars.into_iter()
            .map(|(k, v)| json!({"key": k, "value": v, "variable_type": "env_var"}))
            .collect(),
    )))
}

pub async fn retry_pipeline(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, pid)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let (user, project) = require_project_user(&app, &headers, &id, Role::Developer).await?;
    find_pipeline(&app, &project, pid).await?;
    crate::queue::retry_pipeline(&app, pid, Some(user.id)).await?;
    let pipeline = find_pipeline(&app, &project, pid).await?;
    Ok((
        StatusCode::CREATED,
        Json(pipeline_json(&app, &project, &pipeline)),
    )
        .into_response())
}

pub async fn cancel_pipeline(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, pid)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let (user, project) = require_project_user(&app, &headers, &id, Role::Developer).await?;
    find_pipeline(&app, &project, pid).await?;
    crate::queue::cancel_pipeline(&app, pid, &format!("canceled by {}", user.username)).await?;
    let pipeline = find_pipeline(&app, &project, pid).await?;
    Ok((
        StatusCode::CREATED,
        Json(pipeline_json(&app, &project, &pipeline)),
    )
        .into_response())
}

// ---- jobs ----

async fn find_job(
    app: &Shared,
    project: &Project,
    jid: i64,
) -> Result<(Job, Option<Pipeline>), ApiError> {
    let job = app
        .store
        .job(jid)
        .await?
        .filter(|j| j.project_id == project.id)
        .ok_or(ApiError::NotFound("Job"))?;
    let pipeline = app.store.pipeline(job.pipeline_id).await?;
    Ok((job, pipeline))
}

pub async fn project_jobs(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    let (p, per, offset) = page.limits();
    // Trigger jobs are GitLab's bridges, not listed here: filtered before
    // the page is cut.
    let jobs: Vec<Job> = app
        .store
        .project_jobs(project.id, &scopes(&page), i64::MAX, 0)
        .await?
        .into_iter()
        .filter(|j| !crate::children::is_bridge(j))
        .skip(offset as usize)
        .take(per as usize)
        .collect();
    let mut items = Vec::with_capacity(jobs.len());
    for j in &jobs {
        let pipeline = app.store.pipeline(j.pipeline_id).await?;
        items.push(job_json(&app, &project, pipeline.as_ref(), j));
    }
    Ok(paged(
        &app,
        &format!("/api/v4/projects/{}/jobs", project.id),
        p,
        per,
        items,
    ))
}

pub async fn get_job(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, jid)): Path<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    let (job, pipeline) = find_job(&app, &project, jid).await?;
    Ok(Json(job_json(&app, &project, pipeline.as_ref(), &job)))
}

pub async fn job_trace(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, jid)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    find_job(&app, &project, jid).await?;
    let text = app.logs.read(jid, 0).await?;
    let mut resp = Response::new(Body::from(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

#[derive(Deserialize)]
pub struct StreamQuery {
    offset: Option<u64>,
}

/// The log live over Server-Sent Events. Each event's id is the byte
/// offset after it: a client that reconnects with `Last-Event-ID` (or
/// `?offset=`) resumes there. The stream ends with an `end` event.
pub async fn job_trace_stream(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, jid)): Path<(String, i64)>,
    Query(q): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    find_job(&app, &project, jid).await?;
    let start = crate::log_follow::start_offset(&headers, q.offset);
    Ok(crate::log_follow::follow(app, jid, start).into_response())
}

pub async fn play_job(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, jid)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let (user, project) = require_project_user(&app, &headers, &id, Role::Developer).await?;
    let (job, _) = find_job(&app, &project, jid).await?;
    let runs = crate::actions::play(&app, &job, &user)
        .await
        .map_err(|e| action_error(e, "Unplayable Job"))?;
    job_answer(&app, &project, runs.id, StatusCode::OK).await
}

/// An action's error as GitLab answers it (`wrong_state`: the message for a
/// job in the wrong state).
fn action_error(e: crate::actions::ActionError, wrong_state: &str) -> ApiError {
    use crate::actions::ActionError;
    match e {
        ActionError::Forbidden(_) => ApiError::Forbidden,
        ActionError::WrongState(_) if wrong_state.is_empty() => ApiError::Forbidden,
        ActionError::WrongState(_) => ApiError::BadRequest(wrong_state.into()),
        ActionError::Store(e) => ApiError::Store(e),
    }
}

/// A job (looked up again, after an action) as GitLab's JSON.
async fn job_answer(
    app: &Shared,
    project: &Project,
    jid: i64,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let (job, pipeline) = find_job(app, project, jid).await?;
    Ok((
        status,
        Json(job_json(app, project, pipeline.as_ref(), &job)),
    )
        .into_response())
}

pub async fn retry_job(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, jid)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let (user, project) = require_project_user(&app, &headers, &id, Role::Developer).await?;
    let (job, _) = find_job(&app, &project, jid).await?;
    let new = crate::actions::retry(&app, &job, &user)
        .await
        .map_err(|e| action_error(e, ""))?;
    job_answer(&app, &project, new.id, StatusCode::CREATED).await
}

pub async fn cancel_job(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, jid)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let (user, project) = require_project_user(&app, &headers, &id, Role::Developer).await?;
    let (job, _) = find_job(&app, &project, jid).await?;
    crate::actions::cancel(&app, &job, &user)
        .await
        .map_err(|e| action_error(e, ""))?;
    job_answer(&app, &project, jid, StatusCode::CREATED).await
}

pub async fn job_artifacts(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, jid)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let project = find_project(&app, &id).await?;
    require_user_or_job(&app, &headers, Role::Viewer, project.id).await?;
    find_job(&app, &project, jid).await?;
    let zip = app
        .objects
        .get(&format!("artifacts/{jid}.zip"))
        .await?
        .ok_or(ApiError::NotFound("Artifacts"))?;
    let mut resp = Response::new(Body::from(zip));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"artifacts.zip\""),
    );
    Ok(resp)
}

// ---- variables ----

#[derive(Deserialize)]
pub struct VariableBody {
    key: Option<String>,
    value: Option<String>,
    variable_type: Option<String>,
    protected: Option<bool>,
    masked: Option<bool>,
    raw: Option<bool>,
    environment_scope: Option<String>,
}

fn build_variable(
    key: String,
    body: VariableBody,
    old: Option<&Variable>,
) -> Result<Variable, ApiError> {
    if !gantry_engine::vars::valid_name(&key) {
        return Err(ApiError::BadRequest(format!(
            "key `{key}` can contain only letters, digits and '_'"
        )));
    }
    let value = body
        .value
        .or(old.map(|o| o.value.clone()))
        .ok_or_else(|| ApiError::BadRequest("value is missing".into()))?;
    let masked = body.masked.or(old.map(|o| o.masked)).unwrap_or(false);
    // GitLab's rule: a masked value is one line of at least 8 characters,
    // or it could not be found reliably in logs.
    if masked && (value.len() < 8 || value.contains('\n')) {
        return Err(ApiError::BadRequest(
            "value is invalid: a masked variable must be a single line of at least 8 characters"
                .into(),
        ));
    }
    Ok(Variable {
        key,
        value,
        variable_type: body
            .variable_type
            .or(old.map(|o| o.variable_type.clone()))
            .unwrap_or_else(|| "env_var".into()),
        masked,
        protected: body.protected.or(old.map(|o| o.protected)).unwrap_or(false),
        raw: body.raw.or(old.map(|o| o.raw)).unwrap_or(false),
        environment_scope: body
            .environment_scope
            .or(old.map(|o| o.environment_scope.clone()))
            .unwrap_or_else(|| "*".into()),
    })
}

pub async fn list_variables(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Maintainer).await?;
    let vars = app.store.variables(project.id).await?;
    Ok(Json(Value::Array(vars.iter().map(variable_json).collect())))
}

pub async fn create_variable(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<VariableBody>,
) -> Result<Response, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Maintainer).await?;
    let key = body
        .key
        .clone()
        .ok_or_else(|| ApiError::BadRequest("key is missing".into()))?;
    let existing = app.store.variables(project.id).await?;
    if existing.iter().any(|v| v.key == key) {
        return Err(ApiError::BadRequest(format!(
            "(key) has already been taken: {key}"
        )));
    }
    let var = build_variable(key, body, None)?;
    app.store.put_variable(project.id, &var).await?;
    Ok((StatusCode::CREATED, Json(variable_json(&var))).into_response())
}

pub async fn get_variable(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Maintainer).await?;
    let vars = app.store.variables(project.id).await?;
    let v = vars
        .iter()
        .find(|v| v.key == key)
        .ok_or(ApiError::NotFound("Variable"))?;
    Ok(Json(variable_json(v)))
}

pub async fn update_variable(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, key)): Path<(String, String)>,
    Json(body): Json<VariableBody>,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Maintainer).await?;
    let vars = app.store.variables(project.id).await?;
    let old = vars
        .iter()
        .find(|v| v.key == key)
        .ok_or(ApiError::NotFound("Variable"))?;
    let var = build_variable(key.clone(), body, Some(old))?;
    app.store.put_variable(project.id, &var).await?;
    Ok(Json(variable_json(&var)))
}

pub async fn delete_variable(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Maintainer).await?;
    if !app.store.delete_variable(project.id, &key).await? {
        return Err(ApiError::NotFound("Variable"));
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_instance_variables(
    State(app): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_user(&app, &headers, Role::Admin).await?;
    let vars = app.store.variables(0).await?;
    Ok(Json(Value::Array(vars.iter().map(variable_json).collect())))
}

pub async fn create_instance_variable(
    State(app): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<VariableBody>,
) -> Result<Response, ApiError> {
    require_user(&app, &headers, Role::Admin).await?;
    let key = body
        .key
        .clone()
        .ok_or_else(|| ApiError::BadRequest("key is missing".into()))?;
    let var = build_variable(key, body, None)?;
    app.store.put_variable(0, &var).await?;
    Ok((StatusCode::CREATED, Json(variable_json(&var))).into_response())
}

// ---- schedules, environments, deployments, runners ----

fn schedule_json(s: &crate::store::Schedule) -> Value {
    json!({
        "id": s.id, "description": s.description, "ref": s.git_ref, "cron": s.cron,
        "cron_timezone": s.cron_timezone, "active": s.active != 0,
        "next_run_at": iso(s.next_run_at), "created_at": iso(s.created_at), "updated_at": iso(s.updated_at),
        "last_pipeline": s.last_pipeline_id.map(|id| json!({"id": id})),
        "owner": s.owner_id.map(|id| json!({"id": id})),
    })
}

pub async fn list_schedules(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    let list = app.store.schedules(Some(project.id)).await?;
    Ok(Json(Value::Array(list.iter().map(schedule_json).collect())))
}

#[derive(Deserialize)]
pub struct ScheduleBody {
    description: String,
    #[serde(rename = "ref")]
    git_ref: String,
    cron: String,
    cron_timezone: Option<String>,
    active: Option<bool>,
}

pub async fn create_schedule(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<ScheduleBody>,
) -> Result<Response, ApiError> {
    let (user, project) = require_project_user(&app, &headers, &id, Role::Developer).await?;
    let tz = body.cron_timezone.unwrap_or_else(|| "UTC".into());
    let next = crate::schedules::next_run(&body.cron, &tz, crate::now_ms())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let s = app
        .store
        .create_schedule(
            project.id,
            &body.description,
            &body.git_ref,
            &body.cron,
            &tz,
            body.active.unwrap_or(true),
            next,
            Some(user.id),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(schedule_json(&s))).into_response())
}

pub async fn list_environments(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    let envs = app.store.environments(project.id).await?;
    Ok(Json(Value::Array(
        envs.iter().map(environment_json).collect(),
    )))
}

/// An environment as GitLab's JSON (`state`: available, stopping, stopped).
fn environment_json(e: &crate::store::Environment) -> Value {
    json!({
        "id": e.id, "name": e.name, "slug": e.name, "external_url": e.url, "tier": e.tier,
        "state": e.state, "created_at": iso(e.created_at), "auto_stop_at": iso_opt(e.auto_stop_at),
    })
}

/// The project's environment `eid`, or 404.
async fn find_environment(
    app: &Shared,
    project: &Project,
    eid: i64,
) -> Result<crate::store::Environment, ApiError> {
    crate::environments::EnvironmentStore(&app.store)
        .environment(eid)
        .await?
        .filter(|e| e.project_id == project.id)
        .ok_or(ApiError::NotFound("Environment"))
}

pub async fn get_environment(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, eid)): Path<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    Ok(Json(environment_json(
        &find_environment(&app, &project, eid).await?,
    )))
}

/// A boolean parameter as GitLab's API reads one (`true`, `True`, `1`, …).
fn flag(name: &str, value: Option<&Value>) -> Result<bool, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok(true),
        Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(false),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" | "" => Ok(false),
            _ => Err(ApiError::BadRequest(format!("{name} is invalid"))),
        },
        Some(_) => Err(ApiError::BadRequest(format!("{name} is invalid"))),
    }
}

/// The request's parameters: the query string, then a JSON or form body
/// (GitLab reads either).
pub(crate) fn params(
    query: &std::collections::HashMap<String, String>,
    body: &[u8],
) -> serde_json::Map<String, Value> {
    let mut out: serde_json::Map<String, Value> = query
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    if let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) {
        out.extend(fields);
    } else {
        for (k, v) in url::form_urlencoded::parse(body) {
            out.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    out
}

/// `POST /projects/:id/environments/:environment_id/stop`: plays the
/// environment's `on_stop` job (or stops it at once without one); with
/// `force`, stops it at once without running `on_stop`.
pub async fn stop_environment(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, eid)): Path<(String, i64)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let (user, project) = require_project_user(&app, &headers, &id, Role::Developer).await?;
    let force = flag("force", params(&query, &body).get("force"))?;
    let env = find_environment(&app, &project, eid).await?;
    let mode = if force {
        crate::environments::StopMode::Force
    } else {
        crate::environments::StopMode::RunOnStop
    };
    let env = crate::environments::stop(&app, &env, &user, mode)
        .await
        .map_err(|e| action_error(e, "Environment is already stopped"))?;
    Ok(Json(environment_json(&env)))
}

/// A date or time parameter in ISO 8601 (`2024-05-01`,
/// `2024-05-01T10:00:00Z`), as ms.
fn iso_param(name: &str, text: &str) -> Result<i64, ApiError> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S") {
        return Ok(t.and_utc().timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .map_or(0, |t| t.and_utc().timestamp_millis()));
    }
    Err(ApiError::BadRequest(format!(
        "{name} is invalid: `{text}` is not an ISO 8601 date or time (e.g. 2024-05-01 or 2024-05-01T10:00:00Z)"
    )))
}

/// `POST /projects/:id/environments/stop_stale`: stops the available
/// environments neither created nor deployed to since `before` (between 10
/// years and 1 week ago, as GitLab requires), up to `limit` (100, at most
/// 1000), protected ones excepted. Each stops as its deployer, or the
/// system bot, as auto-stop does.
pub async fn stop_stale_environments(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Developer).await?;
    let given = params(&query, &body);
    let before = match given.get("before") {
        Some(Value::String(s)) if !s.trim().is_empty() => iso_param("before", s)?,
        Some(_) => return Err(ApiError::BadRequest("before is invalid".into())),
        None => return Err(ApiError::BadRequest("before is missing".into())),
    };
    const DAY: i64 = 24 * 3600 * 1000;
    let now = crate::now_ms();
    if before > now - 7 * DAY || before < now - 3653 * DAY {
        return Err(ApiError::BadRequest(
            "before must be between 10 years ago and 1 week ago".into(),
        ));
    }
    let limit = match given.get("limit") {
        None => 100,
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest("limit does not have a valid value (1 to 1000)".into())
            })?,
    };
    let (stopped, refused) =
        crate::environments::stop_stale(&app, project.id, before, limit as usize).await?;
    for (env, why) in &refused {
        eprintln!(
            "gantry serve: stop_stale: environment {} ({}) not stopped: {why}",
            env.id, env.name
        );
    }
    Ok(Json(json!({
        "message": "Successfully requested stop for all stale environments",
        "gantry_stopped": stopped.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
        "gantry_not_stopped": refused
            .iter()
            .map(|(e, why)| json!({"name": e.name, "reason": why}))
            .collect::<Vec<_>>(),
    })))
}

pub async fn list_deployments(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, project) = require_project_user(&app, &headers, &id, Role::Viewer).await?;
    let envs = app.store.environments(project.id).await?;
    let deps = app.store.deployments(project.id).await?;
    Ok(Json(Value::Array(
        deps.iter()
            .map(|d| {
                let env = envs.iter().find(|e| e.id == d.environment_id);
                json!({
                    "id": d.id, "ref": d.git_ref, "sha": d.sha, "status": d.status,
                    "created_at": iso(d.created_at), "finished_at": iso_opt(d.finished_at),
                    "deployable": d.job_id.map(|id| json!({"id": id})),
                    "environment": env.map(|e| json!({"id": e.id, "name": e.name, "external_url": e.url})),
                    "user": d.user_id.map(|id| json!({"id": id})), "revision": d.revision,
                })
            })
            .collect(),
    )))
}

pub async fn list_runners(
    State(app): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_user(&app, &headers, Role::Admin).await?;
    let cutoff = crate::now_ms() - app.config.runner_timeout.as_millis() as i64;
    let runners = app.store.runners().await?;
    Ok(Json(Value::Array(
        runners
            .iter()
            .map(|r| {
                json!({
                    "id": r.id, "description": r.description, "tag_list": r.tag_list(),
                    "run_untagged": r.run_untagged != 0, "executor": r.executor,
                    "concurrency": r.concurrency, "active": r.active != 0,
                    "online": r.active != 0 && r.contacted_at >= cutoff,
                    "status": if r.active == 0 { "paused" } else if r.contacted_at >= cutoff { "online" } else { "offline" },
                    "contacted_at": iso(r.contacted_at),
                })
            })
            .collect(),
    )))
}
