//! The dashboard's pages and actions. Reads go through the server's store
//! and [`DashboardStore`]; actions (play, retry, cancel, run) go through the
//! same store transitions and queue calls as the API, never a second engine.

use super::DashError;
use super::session::{self, Form, LOGIN_CSRF_COOKIE, SESSION_COOKIE, Session};
use crate::app::Shared;
use crate::deploy_history::{HistoryRows, StoredRecord, Writer};
use crate::store::{Job, Pipeline, Project, Role};
use crate::store_dashboard::{Approval, DashboardStore, OverviewFilter, PipelineSummary};
use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use gantry_deploy::{DeployResult, DeploymentRecord};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

type Page = Result<Response, DashError>;

fn html<T: Template>(t: &T) -> Page {
    Ok(Html(t.render()?).into_response())
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// What every page's header needs.
pub struct Chrome {
    pub username: String,
    pub role: String,
    pub csrf: String,
    pub is_admin: bool,
    pub current: &'static str,
}

impl Chrome {
    fn of(s: &Session, current: &'static str) -> Chrome {
        Chrome {
            username: s.user.username.clone(),
            role: s.user.role.clone(),
            csrf: s.csrf.clone(),
            is_admin: s.user.role() == Role::Admin,
            current,
        }
    }
}

/// `2026-11-26 00:12:03` (UTC).
pub fn fmt_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// `1m 03s` between two times; empty when not started.
pub fn fmt_duration(start: Option<i64>, end: Option<i64>) -> String {
    let Some(start) = start else {
        return String::new();
    };
    let end = end.unwrap_or_else(crate::now_ms);
    let s = ((end - start).max(0) + 500) / 1000;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

pub use crate::actions::is_protected_environment;

// ---- login ----

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    error: String,
    username: String,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/dash".into(),
    }
}

pub async fn login_page(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Page {
    let csrf = crate::crypto::new_token("");
    let page = LoginPage {
        csrf: csrf.clone(),
        next: safe_next(q.next.as_deref()),
        error: String::new(),
        username: String::new(),
    };
    let mut resp = html(&page)?;
    let cookie = session::set_cookie(
        LOGIN_CSRF_COOKIE,
        &csrf,
        3600,
        session::is_https(&app, &headers),
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("cookie is ASCII"),
    );
    Ok(resp)
}

/// Password (argon2) or, for users without one such as the bootstrap
/// administrator, one of the user's API tokens in the password field.
pub async fn login(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Page {
    let form = Form::parse(&body);
    let expected = session::cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    let given = form.get("csrf").unwrap_or("");
    if expected.is_empty()
        || !crate::crypto::constant_time_eq(expected.as_bytes(), given.as_bytes())
    {
        return Err(DashError::Csrf);
    }
    let username = form.get("username").unwrap_or("").trim().to_string();
    let password = form.get("password").unwrap_or("");
    let next = safe_next(form.get("next"));
    let dash = DashboardStore(&app.store);
    let mut user = None;
    let found = dash.user_with_password(&username).await?;
    if found.as_ref().is_none_or(|(_, hash)| hash.is_none()) {
        // The same argon2 work whether or not the user exists, so the
        // answer's timing does not tell which usernames exist.
        session::verify_password(password, session::dummy_hash());
    }
    // The system bot has no password or token; refused whatever is given.
    if let Some((u, hash)) = found.filter(|(u, _)| !u.is_bot()) {
        let by_password = hash
            .as_deref()
            .is_some_and(|h| session::verify_password(password, h));
        let by_token = !by_password
            && password.starts_with(crate::crypto::USER_TOKEN_PREFIX)
            && app
                .store
                .user_by_token(password)
                .await?
                .is_some_and(|t| t.id == u.id);
        if by_password || by_token {
            user = Some(u);
        }
    }
    let Some(user) = user else {
        let page = LoginPage {
            csrf: expected,
            next,
            error: "Wrong username or password.".into(),
            username,
        };
        let mut resp = html(&page)?;
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(resp);
    };
    let (token, _csrf) = dash.create_session(user.id).await?;
    let secure = session::is_https(&app, &headers);
    let mut resp = see_other(&next);
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        HeaderValue::from_str(&session::session_cookie(&token, secure)).expect("cookie is ASCII"),
    );
    h.append(
        header::SET_COOKIE,
        HeaderValue::from_str(&session::set_cookie(LOGIN_CSRF_COOKIE, "", 0, secure))
            .expect("cookie is ASCII"),
    );
    Ok(resp)
}

pub async fn logout(
    State(app): State<Shared>,
    s: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Page {
    s.check_csrf(&Form::parse(&body))?;
    if let Some(token) = session::cookie(&headers, SESSION_COOKIE) {
        DashboardStore(&app.store).delete_session(&token).await?;
    }
    let mut resp = see_other("/login");
    let cookie = session::set_cookie(SESSION_COOKIE, "", 0, session::is_https(&app, &headers));
    resp.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("cookie is ASCII"),
    );
    Ok(resp)
}

// ---- overview ----

#[derive(Clone)]
pub struct JobDot {
    pub id: i64,
    pub name: String,
    pub stage: String,
    pub status: String,
}

pub struct PipelineRow {
    pub id: i64,
    pub project: String,
    pub project_id: i64,
    pub git_ref: String,
    pub status: String,
    pub source: String,
    pub user: String,
    pub created: String,
    pub duration: String,
    pub sha: String,
    pub jobs: Vec<JobDot>,
}

#[derive(Deserialize, Default, Clone)]
pub struct FilterQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    project: String,
    #[serde(default, rename = "ref")]
    git_ref: String,
    #[serde(default)]
    user: String,
}

impl FilterQuery {
    fn filter(&self) -> OverviewFilter {
        OverviewFilter {
            status: self.status.trim().to_string(),
            project_id: self.project.trim().parse().ok(),
            git_ref: self.git_ref.trim().to_string(),
            username: self.user.trim().to_string(),
        }
    }
    fn query_string(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("status", &self.status)
            .append_pair("project", &self.project)
            .append_pair("ref", &self.git_ref)
            .append_pair("user", &self.user)
            .finish()
    }
}

pub const STATUSES: &[&str] = &[
    "created",
    "pending",
    "running",
    "success",
    "failed",
    "canceled",
    "skipped",
    "manual",
    "scheduled",
];

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    q: FilterQuery,
    query: String,
    projects: Vec<Project>,
    statuses: &'static [&'static str],
    /// The rendered [`Board`].
    board: String,
}

#[derive(Template)]
#[template(path = "board.html")]
struct Board {
    latest: Vec<PipelineRow>,
    recent: Vec<PipelineRow>,
    projects_count: usize,
}

/// Rows for both lists of pipelines, with their jobs, users and project
/// paths: one query for the jobs and one for the users of both lists
/// (they mostly overlap).
async fn rows(
    app: &Shared,
    lists: [&[PipelineSummary]; 2],
    projects: &[Project],
) -> Result<[Vec<PipelineRow>; 2], DashError> {
    let dash = DashboardStore(&app.store);
    let mut ids: Vec<i64> = lists.iter().flat_map(|l| l.iter().map(|p| p.id)).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut jobs: HashMap<i64, Vec<JobDot>> = HashMap::new();
    for j in dash.jobs_of(&ids).await? {
        jobs.entry(j.pipeline_id).or_default().push(JobDot {
            id: j.id,
            name: j.name,
            stage: j.stage,
            status: j.status,
        });
    }
    let mut user_ids: Vec<i64> = lists
        .iter()
        .flat_map(|l| l.iter().filter_map(|p| p.user_id))
        .collect();
    user_ids.sort_unstable();
    user_ids.dedup();
    let users: HashMap<i64, String> = dash.usernames(&user_ids).await?.into_iter().collect();
    let paths: HashMap<i64, &str> = projects.iter().map(|x| (x.id, x.path.as_str())).collect();
    Ok(lists.map(|pipelines| {
        pipelines
            .iter()
            .map(|p| PipelineRow {
                id: p.id,
                project: paths
                    .get(&p.project_id)
                    .copied()
                    .unwrap_or_default()
                    .to_string(),
                project_id: p.project_id,
                git_ref: p.git_ref.clone(),
                status: p.status.clone(),
                source: p.source.clone(),
                user: p
                    .user_id
                    .and_then(|u| users.get(&u).cloned())
                    .unwrap_or_default(),
                created: fmt_time(p.created_at),
                duration: fmt_duration(p.started_at, p.finished_at),
                sha: p.sha.chars().take(8).collect(),
                jobs: jobs.get(&p.id).cloned().unwrap_or_default(),
            })
            .collect()
    }))
}

async fn load_board(
    app: &Shared,
    q: &FilterQuery,
    projects: &[Project],
) -> Result<Board, DashError> {
    let dash = DashboardStore(&app.store);
    let f = q.filter();
    let latest = dash.latest_per_ref(&f, 100).await?;
    let recent = dash.recent_pipelines(&f, 50).await?;
    let [latest, recent] = rows(app, [&latest, &recent], projects).await?;
    Ok(Board {
        latest,
        recent,
        projects_count: projects.len(),
    })
}

pub async fn overview(State(app): State<Shared>, s: Session, Query(q): Query<FilterQuery>) -> Page {
    let projects = app.store.projects().await?;
    let board = load_board(&app, &q, &projects).await?.render()?;
    html(&OverviewPage {
        chrome: Chrome::of(&s, "overview"),
        query: q.query_string(),
        q,
        projects,
        statuses: STATUSES,
        board,
    })
}

/// The overview's live part, fetched by htmx on every change event.
pub async fn board(State(app): State<Shared>, _s: Session, Query(q): Query<FilterQuery>) -> Page {
    let projects = app.store.projects().await?;
    html(&load_board(&app, &q, &projects).await?)
}

/// Server-Sent Events: `changed` whenever a job changes state or a
/// pipeline is created (pages reload their live parts on it).
pub async fn events(State(app): State<Shared>, _s: Session) -> Response {
    let stream =
        futures_util::stream::unfold((app, None::<(i64, i64)>), |(app, mut last)| async move {
            loop {
                if let Ok(mark) = DashboardStore(&app.store).change_mark().await {
                    if last.is_some_and(|l| l != mark) {
                        let ev = Event::default().event("changed").data("changed");
                        return Some((Ok::<_, std::convert::Infallible>(ev), (app, Some(mark))));
                    }
                    last = Some(mark);
                }
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

// ---- pipeline ----

pub struct Node {
    pub id: i64,
    pub name: String,
    pub status: String,
    pub duration: String,
    pub x: i64,
    pub y: i64,
    pub manual: bool,
}

pub struct Edge {
    pub path: String,
}

pub struct StageHead {
    pub name: String,
    pub x: i64,
}

#[derive(Template)]
#[template(path = "graph.html")]
struct Graph {
    pipeline_id: i64,
    status: String,
    duration: String,
    stages: Vec<StageHead>,
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    width: i64,
    height: i64,
    node_w: i64,
    node_h: i64,
    csrf: String,
    can_act: bool,
    finished: bool,
}

const NODE_W: i64 = 190;
const NODE_H: i64 = 40;
const COL_GAP: i64 = 70;
const ROW_GAP: i64 = 14;
const TOP: i64 = 34;

fn layout(p: &Pipeline, jobs: &[Job], s: &Session) -> Graph {
    let mut stage_idx: Vec<(i64, String)> = jobs
        .iter()
        .map(|j| (j.stage_idx, j.stage.clone()))
        .collect();
    stage_idx.sort();
    stage_idx.dedup();
    let mut rows_in: HashMap<i64, i64> = HashMap::new();
    let mut nodes = Vec::new();
    let mut pos: HashMap<&str, (i64, i64)> = HashMap::new();
    for j in jobs {
        let col = stage_idx
            .iter()
            .position(|(i, _)| *i == j.stage_idx)
            .unwrap_or(0) as i64;
        let row = rows_in.entry(col).or_insert(0);
        let (x, y) = (col * (NODE_W + COL_GAP), TOP + *row * (NODE_H + ROW_GAP));
        *row += 1;
        pos.insert(j.name.as_str(), (x, y));
        nodes.push(Node {
            id: j.id,
            name: j.name.clone(),
            status: j.status.clone(),
            duration: fmt_duration(j.started_at, j.finished_at),
            x,
            y,
            manual: j.status == "manual",
        });
    }
    let mut edges = Vec::new();
    for j in jobs {
        let spec: serde_json::Value = serde_json::from_str(&j.spec).unwrap_or_default();
        let Some(needs) = spec.get("needs").and_then(|n| n.as_array()) else {
            continue;
        };
        let Some(&(x2, y2)) = pos.get(j.name.as_str()) else {
            continue;
        };
        for need in needs {
            let Some(from) = need.get("job").and_then(|n| n.as_str()) else {
                continue;
            };
            let Some(&(x1, y1)) = pos.get(from) else {
                continue;
            };
            let (sx, sy, ex, ey) = (x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2);
            let mid = (sx + ex) / 2;
            edges.push(Edge {
                path: format!("M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}"),
            });
        }
    }
    let cols = stage_idx.len().max(1) as i64;
    let max_rows = rows_in.values().copied().max().unwrap_or(1);
    Graph {
        pipeline_id: p.id,
        status: p.status.clone(),
        duration: fmt_duration(p.started_at, p.finished_at),
        stages: stage_idx
            .iter()
            .enumerate()
            .map(|(i, (_, name))| StageHead {
                name: name.clone(),
                x: i as i64 * (NODE_W + COL_GAP),
            })
            .collect(),
        nodes,
        edges,
        width: cols * NODE_W + (cols - 1) * COL_GAP,
        height: TOP + max_rows * (NODE_H + ROW_GAP),
        node_w: NODE_W,
        node_h: NODE_H,
        csrf: s.csrf.clone(),
        can_act: s.user.role().allows(Role::Developer),
        finished: crate::store::is_finished(&p.status),
    }
}

#[derive(Template)]
#[template(path = "pipeline.html")]
struct PipelinePage {
    chrome: Chrome,
    p: Pipeline,
    project: Project,
    created: String,
    user: String,
    variables: Vec<(String, String)>,
    /// The rendered [`Graph`].
    graph: String,
}

async fn pipeline_and_project(app: &Shared, id: i64) -> Result<(Pipeline, Project), DashError> {
    let p = app
        .store
        .pipeline(id)
        .await?
        .ok_or(DashError::NotFound("pipeline"))?;
    let project = app
        .store
        .project(p.project_id)
        .await?
        .ok_or(DashError::NotFound("project"))?;
    Ok((p, project))
}

pub async fn pipeline_page(State(app): State<Shared>, s: Session, Path(id): Path<i64>) -> Page {
    let (p, project) = pipeline_and_project(&app, id).await?;
    let s = s.in_project(&app, project.id).await?;
    let jobs = app.store.pipeline_jobs(id, false).await?;
    let user = match p.user_id {
        Some(u) => app
            .store
            .user(u)
            .await?
            .map(|u| u.username)
            .unwrap_or_default(),
        None => String::new(),
    };
    let variables: Vec<(String, String)> = serde_json::from_str(&p.variables).unwrap_or_default();
    let graph = layout(&p, &jobs, &s).render()?;
    html(&PipelinePage {
        chrome: Chrome::of(&s, "overview"),
        created: fmt_time(p.created_at),
        user,
        variables,
        graph,
        p,
        project,
    })
}

pub async fn pipeline_graph(State(app): State<Shared>, s: Session, Path(id): Path<i64>) -> Page {
    let (p, project) = pipeline_and_project(&app, id).await?;
    let s = s.in_project(&app, project.id).await?;
    let jobs = app.store.pipeline_jobs(id, false).await?;
    html(&layout(&p, &jobs, &s))
}

pub async fn pipeline_retry(
    State(app): State<Shared>,
    s: Session,
    Path(id): Path<i64>,
    body: Bytes,
) -> Page {
    s.check_csrf(&Form::parse(&body))?;
    let (_, project) = pipeline_and_project(&app, id).await?;
    let s = s.in_project(&app, project.id).await?;
    s.require(Role::Developer)?;
    crate::queue::retry_pipeline(&app, id, Some(s.user.id)).await?;
    app.queue.notify_waiters();
    Ok(see_other(&format!("/dash/pipelines/{id}")))
}

pub async fn pipeline_cancel(
    State(app): State<Shared>,
    s: Session,
    Path(id): Path<i64>,
    body: Bytes,
) -> Page {
    s.check_csrf(&Form::parse(&body))?;
    let (_, project) = pipeline_and_project(&app, id).await?;
    let s = s.in_project(&app, project.id).await?;
    s.require(Role::Developer)?;
    crate::queue::cancel_pipeline(&app, id, &format!("canceled by {}", s.user.username)).await?;
    Ok(see_other(&format!("/dash/pipelines/{id}")))
}

// ---- job ----

pub struct ApprovalRow {
    pub username: String,
    pub environment: String,
    pub at: String,
}

fn approval_rows(a: Vec<Approval>) -> Vec<ApprovalRow> {
    a.into_iter()
        .map(|a| ApprovalRow {
            username: a.username,
            environment: a.environment,
            at: fmt_time(a.at),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    chrome: Chrome,
    job: Job,
    project: Project,
    p: Pipeline,
    duration: String,
    protected_env: bool,
    /// Who may approve, when `protected_env`.
    approver: String,
    can_play: bool,
    can_act: bool,
    approvals: Vec<ApprovalRow>,
    artifacts: Vec<(String, u64)>,
    transitions: Vec<(String, String, String, String)>,
    /// The job declares `artifacts:reports:junit`.
    has_junit: bool,
    junit_failures: Vec<String>,
    /// Who the job runs as: a username, marked when it is the system bot.
    user_label: String,
    /// Why a `protected_environment_failure` failed, in words.
    protection_note: String,
    /// Distinct approvals the deploy needs (more than 1: shown as k of N).
    required_approvals: i64,
    /// Who approved so far (distinct).
    approved_by: Vec<String>,
    /// The viewer approved already (may not approve again).
    approved_already: bool,
}

async fn job_and_project(app: &Shared, id: i64) -> Result<(Job, Pipeline, Project), DashError> {
    let job = app.store.job(id).await?.ok_or(DashError::NotFound("job"))?;
    let (p, project) = pipeline_and_project(app, job.pipeline_id).await?;
    Ok((job, p, project))
}

fn artifact_entries(zip: &[u8]) -> Vec<(String, u64)> {
    let Ok(mut archive) = zip::ZipArchive::new(std::io::Cursor::new(zip)) else {
        return Vec::new();
    };
    (0..archive.len())
        .filter_map(|i| {
            archive
                .by_index(i)
                .ok()
                .map(|f| (f.name().to_string(), f.size()))
        })
        .collect()
}

pub async fn job_page(State(app): State<Shared>, s: Session, Path(id): Path<i64>) -> Page {
    let (job, p, project) = job_and_project(&app, id).await?;
    let s = s.in_project(&app, project.id).await?;
    let rule = crate::actions::deploy_rule(&app, &job).await?;
    let protected_env = rule.is_some();
    let can_play = match &rule {
        Some(rule) => rule.allows(&s.user),
        None => s.user.role().allows(Role::Developer),
    };
    let required_approvals = rule.as_ref().map_or(0, |r| r.required_approvals);
    let approved_by = crate::actions::approvers_of(&app, job.id).await?;
    let approved_already = approved_by.contains(&s.user.username);
    let approver = rule.map(|r| r.who()).unwrap_or_default();
    let approvals = approval_rows(DashboardStore(&app.store).approvals(&[job.id]).await?);
    let artifacts = match app.objects.get(&format!("artifacts/{id}.zip")).await? {
        Some(zip) => artifact_entries(&zip),
        None => Vec::new(),
    };
    let transitions = app
        .store
        .job_transitions(id)
        .await?
        .into_iter()
        .map(|(from, to, reason, at)| (fmt_time(at), from, to, reason.unwrap_or_default()))
        .collect();
    let has_junit = crate::engine_bridge::spec(&job)
        .and_then(|spec| spec.artifacts)
        .is_some_and(|a| a.reports.contains_key("junit"));
    let junit_failures = app.store.junit_failures(id).await?;
    let job_user = match job.user_id {
        Some(uid) => app.store.user(uid).await?,
        None => None,
    };
    let user_label = match &job_user {
        Some(u) if u.is_bot() => format!("{} (system bot, cannot log in)", u.username),
        Some(u) => u.username.clone(),
        None => String::new(),
    };
    let protection_note = match (&job.failure_reason, &job.environment) {
        (Some(reason), Some(env))
            if reason == crate::environments::PROTECTED_ENVIRONMENT_FAILURE =>
        {
            let who = match &job_user {
                Some(u) => format!("its user {} may not", u.username),
                None => "its pipeline has no user (started by a push), so it may not".into(),
            };
            let rule = crate::actions::explicit_rule(&app, job.project_id, env)
                .await?
                .map(|r| format!(" ({} may)", r.who()))
                .unwrap_or_default();
            format!(
                "Not run: `{env}` is a protected environment and {who} deploy to it{rule}. Someone allowed can retry it."
            )
        }
        _ => String::new(),
    };
    html(&JobPage {
        user_label,
        protection_note,
        required_approvals,
        approved_by,
        approved_already,
        chrome: Chrome::of(&s, "overview"),
        duration: fmt_duration(job.started_at, job.finished_at),
        protected_env,
        approver,
        can_play,
        can_act: s.user.role().allows(Role::Developer),
        approvals,
        artifacts,
        transitions,
        has_junit,
        junit_failures,
        job,
        project,
        p,
    })
}

/// The whole log as text.
pub async fn job_raw(State(app): State<Shared>, _s: Session, Path(id): Path<i64>) -> Page {
    job_and_project(&app, id).await?;
    let text = app.logs.read(id, 0).await?;
    let mut resp = Response::new(Body::from(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

pub async fn job_artifacts_download(
    State(app): State<Shared>,
    _s: Session,
    Path(id): Path<i64>,
) -> Page {
    job_and_project(&app, id).await?;
    let zip = app
        .objects
        .get(&format!("artifacts/{id}.zip"))
        .await?
        .ok_or(DashError::NotFound("artifacts"))?;
    let mut resp = Response::new(Body::from(zip));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    let disposition = format!("attachment; filename=\"job-{id}-artifacts.zip\"");
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).expect("ASCII"),
    );
    Ok(resp)
}

#[derive(Deserialize)]
pub struct OffsetQuery {
    offset: Option<u64>,
}

/// The job's log live over Server-Sent Events: `log` events carry a JSON
/// string and the byte offset after it as id (resumable with
/// `Last-Event-ID`); `end` carries the final status.
pub async fn job_log_stream(
    State(app): State<Shared>,
    _s: Session,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<OffsetQuery>,
) -> Page {
    job_and_project(&app, id).await?;
    let start = crate::log_follow::start_offset(&headers, q.offset);
    Ok(crate::log_follow::follow(app, id, start).into_response())
}

/// Plays a manual job (or re-runs a finished one). A job deploying to a
/// protected environment needs a maintainer or admin, and the approval is
/// recorded ([`crate::actions`]).
pub async fn job_play(
    State(app): State<Shared>,
    s: Session,
    Path(id): Path<i64>,
    body: Bytes,
) -> Page {
    s.check_csrf(&Form::parse(&body))?;
    let (job, _, _) = job_and_project(&app, id).await?;
    let runs = crate::actions::play(&app, &job, &s.user).await?;
    Ok(see_other(&format!("/dash/jobs/{}", runs.id)))
}

pub async fn job_retry(
    State(app): State<Shared>,
    s: Session,
    Path(id): Path<i64>,
    body: Bytes,
) -> Page {
    s.check_csrf(&Form::parse(&body))?;
    let (job, _, _) = job_and_project(&app, id).await?;
    let new = crate::actions::retry(&app, &job, &s.user).await?;
    Ok(see_other(&format!("/dash/jobs/{}", new.id)))
}

pub async fn job_cancel(
    State(app): State<Shared>,
    s: Session,
    Path(id): Path<i64>,
    body: Bytes,
) -> Page {
    s.check_csrf(&Form::parse(&body))?;
    let (job, _, _) = job_and_project(&app, id).await?;
    crate::actions::cancel(&app, &job, &s.user).await?;
    Ok(see_other(&format!("/dash/jobs/{id}")))
}

// ---- run pipeline ----

/// A form field for a top-level `variables:` entry.
pub struct Field {
    pub name: String,
    pub value: String,
    pub description: String,
    pub options: Vec<String>,
    pub error: String,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    chrome: Chrome,
    project: Project,
    git_ref: String,
    inputs: Vec<super::inputs::InputField>,
    fields: Vec<Field>,
    extra: Vec<(String, String)>,
    error: String,
}

#[derive(Deserialize)]
pub struct RunQuery {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    /// Re-run: start from this pipeline's ref and variables.
    from: Option<i64>,
}

/// What the Run pipeline form needs from the configuration at a ref.
struct RunConfig {
    /// The entry file's `spec:inputs`.
    inputs: Vec<gantry_config::include::InputSpec>,
    /// Its top-level variables, read with the inputs given.
    variables: Vec<gantry_config::model::Variable>,
    /// Why the configuration does not load with those inputs: each
    /// diagnostic's message, and all of them rendered.
    problems: Vec<String>,
    rendered: String,
}

/// Reads the configuration at `git_ref`: its declared inputs, then the
/// whole configuration with `inputs` (the stand-ins of the declared ones
/// when `None`), as gantry-config checks them.
async fn run_config(
    app: &Shared,
    project: &Project,
    git_ref: &str,
    inputs: Option<&Form>,
    stored: Option<serde_json::Map<String, serde_json::Value>>,
) -> Result<RunConfig, DashError> {
    let mirror = app
        .repos
        .sync(project.id, &project.source_url)
        .await
        .map_err(|e| DashError::BadRequest(e.to_string()))?;
    let (sha, _) = app
        .repos
        .resolve_ref(project.id, git_ref)
        .map_err(|e| DashError::BadRequest(e.to_string()))?;
    let entry = project.ci_config_path.clone();
    let given = inputs.map(|f| {
        f.0.iter()
            .filter(|(k, _)| k.starts_with("input:"))
            .cloned()
            .collect::<Vec<_>>()
    });
    tokio::task::spawn_blocking(move || {
        let files = gantry_source::CommitTree::new(mirror, sha);
        let opts = gantry_config::load::LoadOptions {
            entry,
            ..Default::default()
        };
        let render = |diagnostics: &[gantry_config::diag::Diagnostic],
                      sources: &gantry_config::source::Sources| {
            diagnostics
                .iter()
                .map(|d| d.render(sources))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let mut sources = gantry_config::source::Sources::new();
        let specs =
            gantry_config::include::entry_inputs(&files, &opts, &mut sources).map_err(|d| {
                DashError::BadRequest(format!(
                    "the CI configuration at this ref is invalid:\n{}",
                    render(&d, &sources)
                ))
            })?;
        let values = match (&given, &stored) {
            (Some(fields), _) => super::inputs::from_form(&specs, &Form(fields.clone())),
            (None, Some(stored)) => {
                super::inputs::from_form(&specs, &super::inputs::form_of(&specs, stored))
            }
            (None, None) => super::inputs::stand_ins(&specs),
        };
        let chosen = given.is_some() || stored.is_some();
        let loaded = if specs.is_empty() && values.is_empty() {
            gantry_config::load::load(&files, &opts)
        } else {
            gantry_config::load::load_with_inputs(&files, &opts, &values)
        };
        Ok(match loaded {
            Ok(l) => RunConfig {
                inputs: specs,
                variables: l.config.variables,
                problems: Vec::new(),
                rendered: String::new(),
            },
            Err(e) => {
                // The variables' fields stay on the form: read them with
                // the stand-ins when the given inputs are refused.
                let variables = match chosen {
                    true => gantry_config::load::load_with_inputs(
                        &files,
                        &opts,
                        &super::inputs::stand_ins(&specs),
                    )
                    .map(|l| l.config.variables)
                    .unwrap_or_default(),
                    false => Vec::new(),
                };
                let errors: Vec<_> = e
                    .diagnostics
                    .iter()
                    .filter(|d| !d.is_warning())
                    .cloned()
                    .collect();
                RunConfig {
                    inputs: specs,
                    variables,
                    problems: errors.iter().map(|d| d.message.clone()).collect(),
                    rendered: render(&errors, &e.sources),
                }
            }
        })
    })
    .await
    .map_err(|e| DashError::Internal(format!("configuration task failed: {e}")))?
}

fn fields_of(
    declared: &[gantry_config::model::Variable],
    given: &[(String, String)],
) -> Vec<Field> {
    declared
        .iter()
        .map(|v| Field {
            name: v.name.clone(),
            value: given
                .iter()
                .find(|(k, _)| *k == v.name)
                .map(|(_, x)| x.clone())
                .unwrap_or_else(|| v.value.clone()),
            description: v.description.clone().unwrap_or_default(),
            options: v.options.clone(),
            error: String::new(),
        })
        .collect()
}

pub async fn run_form(
    State(app): State<Shared>,
    s: Session,
    Path(id): Path<i64>,
    Query(q): Query<RunQuery>,
) -> Page {
    let s = s.in_project(&app, id).await?;
    s.require(Role::Developer)?;
    let project = app
        .store
        .project(id)
        .await?
        .ok_or(DashError::NotFound("project"))?;
    let mut given: Vec<(String, String)> = Vec::new();
    let mut given_inputs = serde_json::Map::new();
    let mut git_ref = q
        .git_ref
        .clone()
        .unwrap_or_else(|| project.default_branch.clone());
    if let Some(from) = q.from {
        let p = app
            .store
            .pipeline(from)
            .await?
            .filter(|p| p.project_id == id)
            .ok_or(DashError::NotFound("pipeline"))?;
        given = serde_json::from_str(&p.variables).unwrap_or_default();
        given_inputs = DashboardStore(&app.store).pipeline_inputs(p.id).await?;
        if q.git_ref.is_none() {
            git_ref = p.git_ref;
        }
    }
    // A re-run reads the configuration with the inputs it ran with.
    let rerun_inputs = !given_inputs.is_empty();
    let config = run_config(
        &app,
        &project,
        &git_ref,
        None,
        rerun_inputs.then(|| given_inputs.clone()),
    )
    .await?;
    // Inputs it did not give show their defaults, as they ran.
    let input_values = given_inputs;
    let declared = &config.variables;
    let fields = fields_of(declared, &given);
    let extra = given
        .into_iter()
        .filter(|(k, _)| !declared.iter().any(|v| v.name == *k))
        .collect();
    html(&RunPage {
        chrome: Chrome::of(&s, "overview"),
        project,
        git_ref,
        inputs: super::inputs::fields(&config.inputs, &input_values),
        fields,
        extra,
        error: if config.problems.is_empty() {
            String::new()
        } else if rerun_inputs {
            format!(
                "The configuration at this ref does not load with the inputs of pipeline #{}:\n{}",
                q.from.unwrap_or_default(),
                config.rendered
            )
        } else {
            format!(
                "The configuration does not load with the inputs' defaults:\n{}",
                config.rendered
            )
        },
    })
}

pub async fn run_pipeline(
    State(app): State<Shared>,
    s: Session,
    Path(id): Path<i64>,
    body: Bytes,
) -> Page {
    let form = Form::parse(&body);
    s.check_csrf(&form)?;
    let s = s.in_project(&app, id).await?;
    s.require(Role::Developer)?;
    let project = app
        .store
        .project(id)
        .await?
        .ok_or(DashError::NotFound("project"))?;
    let git_ref = form.get("ref").unwrap_or("").trim().to_string();
    if git_ref.is_empty() {
        return Err(DashError::BadRequest(
            "choose a branch or tag to run".into(),
        ));
    }
    let config = run_config(&app, &project, &git_ref, Some(&form), None).await?;
    let input_values = super::inputs::from_form(&config.inputs, &form);
    let mut inputs = super::inputs::fields(&config.inputs, &input_values);
    // Input errors go on their fields; any other error of the
    // configuration is the page's.
    let config_errors = super::inputs::assign_errors(&mut inputs, config.problems.clone());
    let declared = &config.variables;
    let mut variables: Vec<(String, String)> = Vec::new();
    for v in declared {
        let value = form
            .get(&format!("var:{}", v.name))
            .unwrap_or(&v.value)
            .to_string();
        variables.push((v.name.clone(), value));
    }
    let keys = form.all("extra_key");
    let values = form.all("extra_value");
    let mut error = String::new();
    for (k, v) in keys.iter().zip(values.iter()) {
        let k = k.trim();
        if k.is_empty() {
            continue;
        }
        if !gantry_engine::vars::valid_name(k) {
            error = format!("variable name `{k}` can contain only letters, digits and '_'");
        }
        variables.retain(|(x, _)| x != k);
        variables.push((k.to_string(), v.to_string()));
    }
    let mut fields = fields_of(declared, &variables);
    for f in fields.iter_mut() {
        if !f.options.is_empty() && !f.options.contains(&f.value) {
            f.error = format!("must be one of: {}", f.options.join(", "));
        }
    }
    if error.is_empty() && !config_errors.is_empty() {
        error = format!(
            "The CI configuration does not load with these inputs:\n{}",
            config.rendered
        );
    }
    if !error.is_empty()
        || fields.iter().any(|f| !f.error.is_empty())
        || inputs.iter().any(|f| !f.error.is_empty())
    {
        let extra = variables
            .into_iter()
            .filter(|(k, _)| !declared.iter().any(|v| v.name == *k))
            .collect();
        let mut resp = html(&RunPage {
            chrome: Chrome::of(&s, "overview"),
            project,
            git_ref,
            inputs,
            fields,
            extra,
            error: if error.is_empty() {
                "Some values are not valid.".into()
            } else {
                error
            },
        })?;
        *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(resp);
    }
    let req = crate::pipelines::Request {
        git_ref,
        source: "web".into(),
        variables,
        inputs: (!config.inputs.is_empty()).then_some(input_values),
        user_id: Some(s.user.id),
        fetch: true,
        ..Default::default()
    };
    let pipeline = crate::pipelines::create(&app, &project, req)
        .await
        .map_err(|e| DashError::BadRequest(format!("no pipeline was created: {e}")))?;
    app.queue.notify_waiters();
    Ok(see_other(&format!("/dash/pipelines/{}", pipeline.id)))
}

// ---- environments ----

pub struct DeploymentRow {
    pub job_id: Option<i64>,
    pub pipeline_id: Option<i64>,
    pub git_ref: String,
    pub sha: String,
    pub status: String,
    pub user: String,
    pub at: String,
    pub revision: String,
}

pub struct EnvironmentRow {
    pub id: i64,
    pub project: String,
    pub name: String,
    pub url: String,
    pub tier: String,
    pub state: String,
    /// When the sweeper stops it (`auto_stop_in`), empty if never.
    pub auto_stop_at: String,
    pub protected: bool,
    /// Who may deploy, when protected.
    pub approver: String,
    pub deployments: Vec<DeploymentRow>,
    /// `gantry deploy` records written from this environment's jobs.
    pub revisions: Vec<RevisionRow>,
    pub offers: Vec<RollbackOffer>,
}

/// One `gantry deploy` record kept by the server's deploy history.
pub struct RevisionRow {
    pub target: String,
    pub kind: String,
    pub revision: String,
    pub result: String,
    pub known_good: bool,
    pub rolled_back_to: String,
    pub commit: String,
    pub job_id: String,
    pub at: String,
    pub message: String,
    /// The dashboard user who ran it (a rollback from this page).
    pub by: String,
}

/// A target the page offers to roll back: to its newest known-good
/// revision other than the live one.
pub struct RollbackOffer {
    pub target: String,
    pub live: String,
    pub to: String,
    /// Whether the server can do it itself (else the command to run).
    pub here: bool,
    pub command: String,
}

/// The rollback offers for records of some targets, newest first.
fn rollback_offers(app: &Shared, records: &[&StoredRecord]) -> Vec<RollbackOffer> {
    use gantry_deploy::history::short_revision;
    let mut targets: Vec<&str> = Vec::new();
    for r in records {
        if !targets.contains(&r.record.target.as_str()) {
            targets.push(&r.record.target);
        }
    }
    let mut offers = Vec::new();
    for t in targets {
        let of_target: Vec<&DeploymentRecord> = records
            .iter()
            .map(|r| &r.record)
            .filter(|r| r.target == t)
            .collect();
        let live = of_target
            .iter()
            .find(|r| matches!(r.result, DeployResult::Succeeded | DeployResult::Submitted))
            .map(|r| r.revision.clone())
            .unwrap_or_default();
        let Some(to) = of_target
            .iter()
            .find(|r| r.known_good && r.revision != live)
            .map(|r| r.revision.clone())
        else {
            continue;
        };
        let name = t.rsplit(['/', ':']).next().unwrap_or(t);
        let kind = t.split(':').next().unwrap_or(t);
        offers.push(RollbackOffer {
            target: t.to_string(),
            live: short_revision(&live),
            to: short_revision(&to),
            here: crate::deploy_bridge::can_roll_back(t),
            command: format!("gantry rollback {kind} {name} --history {}", app.url),
        });
    }
    offers
}

impl RevisionRow {
    fn of(r: &gantry_deploy::DeploymentRecord) -> RevisionRow {
        use gantry_deploy::history::{RecordKind, short_revision};
        RevisionRow {
            target: r.target.clone(),
            kind: match r.kind {
                RecordKind::Deploy => "deploy",
                RecordKind::Rollback => "rollback",
            }
            .into(),
            revision: short_revision(&r.revision),
            result: r.result.as_str().into(),
            known_good: r.known_good,
            rolled_back_to: r
                .rolled_back_to
                .as_deref()
                .map(short_revision)
                .unwrap_or_default(),
            commit: r
                .commit
                .as_deref()
                .map(|c| c.chars().take(8).collect())
                .unwrap_or_default(),
            job_id: r.job_id.clone().unwrap_or_default(),
            at: r.started_at.replace('T', " ").replace('Z', ""),
            message: r.message.clone().unwrap_or_default(),
            by: String::new(),
        }
    }
}

pub struct Waiting {
    pub job_id: i64,
    pub name: String,
    pub environment: String,
    pub pipeline_id: i64,
    pub project: String,
}

#[derive(Template)]
#[template(path = "environments.html")]
struct EnvironmentsPage {
    chrome: Chrome,
    environments: Vec<EnvironmentRow>,
    /// Deploy records not tied to a project's environment (written with a user token).
    unattached: Vec<RevisionRow>,
    unattached_offers: Vec<RollbackOffer>,
    waiting: Vec<Waiting>,
    approvals: Vec<ApprovalRow>,
    can_approve: bool,
    /// Developers and up stop environments (their `on_stop` job).
    can_stop: bool,
    /// Per-project rules, and the projects for the form that adds one.
    rules: Vec<RuleRow>,
    projects: Vec<Project>,
    error: String,
}

/// A protected environment as the page lists it.
pub struct RuleRow {
    pub project_id: i64,
    pub project: String,
    pub name: String,
    pub who: String,
    pub by: String,
    pub at: String,
}

/// The rule of `env` of `project` among `rules`, else the default.
fn rule_of(
    rules: &[crate::store_dashboard::ProtectedEnvironment],
    project: i64,
    env: &str,
) -> Option<crate::actions::DeployRule> {
    match rules
        .iter()
        .find(|r| r.project_id == project && r.name == env)
    {
        Some(r) => Some(crate::actions::DeployRule::of(env, r)),
        None => is_protected_environment(env).then(|| crate::actions::DeployRule::default_for(env)),
    }
}

pub async fn environments(State(app): State<Shared>, s: Session) -> Page {
    environments_page(&app, &s, String::new()).await
}

async fn environments_page(app: &Shared, s: &Session, error: String) -> Page {
    let app = app.clone();
    // The buttons show for a role any project gives; each action checks
    // the role in its own project.
    let best = crate::members::best_role(&app.store, &s.user).await?;
    let projects = app.store.projects().await?;
    let dash = DashboardStore(&app.store);
    let protected = dash.protected_environments().await?;
    let all_records = HistoryRows(&app.store).matching(None).await?;
    let mut record_users: Vec<i64> = all_records.iter().filter_map(|r| r.user_id).collect();
    record_users.sort_unstable();
    record_users.dedup();
    let record_users: HashMap<i64, String> =
        dash.usernames(&record_users).await?.into_iter().collect();
    let revision_row = |r: &StoredRecord| {
        let mut row = RevisionRow::of(&r.record);
        row.by = r
            .user_id
            .and_then(|u| record_users.get(&u).cloned())
            .unwrap_or_default();
        row
    };
    // Newest first.
    let newest_first: Vec<&StoredRecord> = all_records.iter().rev().collect();
    let mut rows = Vec::new();
    let mut job_ids = Vec::new();
    let mut attached = std::collections::HashSet::new();
    for project in &projects {
        let deployments = app.store.deployments(project.id).await?;
        let mut user_ids: Vec<i64> = deployments.iter().filter_map(|d| d.user_id).collect();
        user_ids.sort_unstable();
        user_ids.dedup();
        let users: HashMap<i64, String> = dash.usernames(&user_ids).await?.into_iter().collect();
        for env in app.store.environments(project.id).await? {
            let history: Vec<DeploymentRow> = deployments
                .iter()
                .filter(|d| d.environment_id == env.id)
                .map(|d| DeploymentRow {
                    job_id: d.job_id,
                    pipeline_id: d.pipeline_id,
                    git_ref: d.git_ref.clone(),
                    sha: d.sha.chars().take(8).collect(),
                    status: d.status.clone(),
                    user: d
                        .user_id
                        .and_then(|u| users.get(&u).cloned())
                        .unwrap_or_default(),
                    at: fmt_time(d.created_at),
                    revision: d.revision.clone().unwrap_or_default(),
                })
                .collect();
            job_ids.extend(history.iter().filter_map(|d| d.job_id));
            let records: Vec<&StoredRecord> = newest_first
                .iter()
                .copied()
                .filter(|r| {
                    r.project_id == Some(project.id)
                        && r.environment.as_deref() == Some(env.name.as_str())
                })
                .collect();
            attached.extend(records.iter().map(|r| r.record.id.clone()));
            rows.push(EnvironmentRow {
                id: env.id,
                auto_stop_at: env.auto_stop_at.map(fmt_time).unwrap_or_default(),
                project: project.path.clone(),
                protected: rule_of(&protected, project.id, &env.name).is_some(),
                approver: rule_of(&protected, project.id, &env.name)
                    .map(|r| r.who())
                    .unwrap_or_default(),
                // Only web links: a `javascript:` URL stays out of the page.
                url: env
                    .url
                    .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                    .unwrap_or_default(),
                tier: env.tier,
                revisions: records.iter().map(|r| revision_row(r)).collect(),
                offers: rollback_offers(&app, &records),
                name: env.name,
                state: env.state,
                deployments: history,
            });
        }
    }
    let unattached_records: Vec<&StoredRecord> = newest_first
        .iter()
        .copied()
        .filter(|r| !attached.contains(&r.record.id))
        .collect();
    let unattached_offers = rollback_offers(&app, &unattached_records);
    let unattached: Vec<RevisionRow> = unattached_records
        .iter()
        .take(200)
        .map(|r| revision_row(r))
        .collect();
    let waiting = app
        .store
        .jobs_with_status("manual")
        .await?
        .into_iter()
        .filter_map(|j| {
            let env = j.environment.clone()?;
            Some(Waiting {
                job_id: j.id,
                name: j.name,
                pipeline_id: j.pipeline_id,
                project: projects
                    .iter()
                    .find(|p| p.id == j.project_id)
                    .map(|p| p.path.clone())
                    .unwrap_or_default(),
                environment: env,
            })
        })
        .collect::<Vec<_>>();
    job_ids.extend(waiting.iter().map(|w| w.job_id));
    let approvals = approval_rows(dash.approvals(&job_ids).await?);
    let rules = protected
        .iter()
        .map(|r| RuleRow {
            project_id: r.project_id,
            project: projects
                .iter()
                .find(|p| p.id == r.project_id)
                .map(|p| p.path.clone())
                .unwrap_or_default(),
            name: r.name.clone(),
            who: rule_of(&protected, r.project_id, &r.name)
                .map(|x| x.who())
                .unwrap_or_default(),
            by: r.created_by.clone(),
            at: fmt_time(r.created_at),
        })
        .collect();
    let mut resp = html(&EnvironmentsPage {
        chrome: Chrome::of(s, "environments"),
        environments: rows,
        unattached,
        unattached_offers,
        waiting,
        approvals,
        can_approve: best.allows(Role::Maintainer),
        can_stop: best.allows(Role::Developer),
        rules,
        projects,
        error: error.clone(),
    })?;
    if !error.is_empty() {
        *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(resp)
}

/// Protects an environment of a project (or changes its rule), or with
/// `unprotect` removes the rule. Maintainers and admins.
pub async fn environment_protect(State(app): State<Shared>, s: Session, body: Bytes) -> Page {
    let form = Form::parse(&body);
    s.check_csrf(&form)?;
    let project_id: i64 = form
        .get("project")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| DashError::BadRequest("choose a project".into()))?;
    let s = s.in_project(&app, project_id).await?;
    s.require(Role::Maintainer)?;
    let project = app
        .store
        .project(project_id)
        .await?
        .ok_or(DashError::NotFound("project"))?;
    let name = form.get("name").unwrap_or("").trim().to_string();
    let dash = DashboardStore(&app.store);
    if form.get("unprotect").is_some() {
        if !dash.unprotect_environment(project.id, &name).await? {
            return Err(DashError::NotFound("protected environment"));
        }
        return Ok(see_other("/dash/environments"));
    }
    let approvers: Vec<String> = form
        .get("approvers")
        .unwrap_or("")
        .split(',')
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    let required_approvals = match form.get("required_approvals").map(str::trim) {
        None | Some("") => 0,
        Some(n) => n.parse::<i64>().map_err(|_| {
            DashError::BadRequest(format!("required approvals must be a number, not `{n}`"))
        })?,
    };
    match crate::actions::new_rule(
        &app,
        project.id,
        &name,
        form.get("role"),
        &approvers,
        required_approvals,
        &s.user,
    )
    .await?
    {
        Ok(rule) => dash.protect_environment(&rule).await?,
        Err(problems) => {
            return environments_page(
                &app,
                &s,
                format!(
                    "`{name}` of {} was not protected: {}",
                    project.path,
                    problems.join("; ")
                ),
            )
            .await;
        }
    }
    Ok(see_other("/dash/environments"))
}

/// Rolls a `gantry deploy` target back to its newest known-good revision
/// through the deploy state machine (never by re-running a job). Needs a
/// maintainer; the rollback record names who ran it, and when.
pub async fn environment_rollback(State(app): State<Shared>, s: Session, body: Bytes) -> Page {
    let form = Form::parse(&body);
    s.check_csrf(&form)?;
    let target = form
        .get("target")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| DashError::BadRequest("which target to roll back is missing".into()))?
        .to_string();
    let records = HistoryRows(&app.store).of_target(&target).await?;
    // The rollback is recorded under the environment the target's
    // deploys came from.
    let Some(origin) = records.last() else {
        return Err(DashError::NotFound("deploy target"));
    };
    let origin = records
        .iter()
        .rev()
        .find(|r| r.project_id.is_some())
        .unwrap_or(origin);
    // A maintainer of the project the target's deploys came from.
    let s = match origin.project_id {
        Some(project) => s.in_project(&app, project).await?,
        None => s,
    };
    s.require(Role::Maintainer)?;
    let by = Writer {
        project_id: origin.project_id,
        environment: origin.environment.clone(),
        job_id: None,
        user_id: Some(s.user.id),
    };
    match crate::deploy_bridge::rollback(&app, &target, by).await {
        Ok(summary) => {
            eprintln!(
                "gantry serve: {} rolled back {target} from the dashboard: {}",
                s.user.username,
                summary.lines().next().unwrap_or_default()
            );
            Ok(see_other("/dash/environments"))
        }
        Err(e) => Err(DashError::BadRequest(e.to_string())),
    }
}

/// Stops an environment: plays its `on_stop` job through
/// [`crate::actions::play`] (or stops it at once without one).
pub async fn environment_stop(
    State(app): State<Shared>,
    s: Session,
    Path(id): Path<i64>,
    body: Bytes,
) -> Page {
    let form = Form::parse(&body);
    s.check_csrf(&form)?;
    let env = crate::environments::EnvironmentStore(&app.store)
        .environment(id)
        .await?
        .ok_or(DashError::NotFound("environment"))?;
    // Force stop: `stopped` without (again) running the stop job.
    let mode = if form.get("force") == Some("true") {
        crate::environments::StopMode::Force
    } else {
        crate::environments::StopMode::RunOnStop
    };
    crate::environments::stop(&app, &env, &s.user, mode).await?;
    Ok(see_other("/dash/environments"))
}

// ---- runners, schedules ----

pub struct RunnerRow {
    pub id: i64,
    pub description: String,
    pub tags: String,
    pub executor: String,
    pub online: bool,
    pub contacted: String,
    pub running: Vec<(i64, String)>,
}

#[derive(Template)]
#[template(path = "runners.html")]
struct RunnersPage {
    chrome: Chrome,
    runners: Vec<RunnerRow>,
}

pub async fn runners(State(app): State<Shared>, s: Session) -> Page {
    let running = app.store.jobs_with_status("running").await?;
    let cutoff = crate::now_ms() - app.config.runner_timeout.as_millis() as i64;
    let runners = app
        .store
        .runners()
        .await?
        .into_iter()
        .map(|r| RunnerRow {
            id: r.id,
            tags: r.tag_list().join(", "),
            online: r.active != 0 && r.contacted_at >= cutoff,
            contacted: fmt_time(r.contacted_at),
            running: running
                .iter()
                .filter(|j| j.runner_id == Some(r.id))
                .map(|j| (j.id, j.name.clone()))
                .collect(),
            description: r.description,
            executor: r.executor,
        })
        .collect();
    html(&RunnersPage {
        chrome: Chrome::of(&s, "runners"),
        runners,
    })
}

pub struct ScheduleRow {
    pub project: String,
    pub description: String,
    pub git_ref: String,
    pub cron: String,
    pub timezone: String,
    pub active: bool,
    /// The next three runs (UTC).
    pub next_runs: Vec<String>,
    pub last_pipeline: Option<i64>,
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage {
    chrome: Chrome,
    schedules: Vec<ScheduleRow>,
    projects: Vec<Project>,
    can_create: bool,
    error: String,
}

async fn schedules_page(app: &Shared, s: &Session, error: String) -> Page {
    let projects = app.store.projects().await?;
    let schedules = app
        .store
        .schedules(None)
        .await?
        .into_iter()
        .map(|x| {
            let mut next_runs = vec![fmt_time(x.next_run_at)];
            let mut at = x.next_run_at;
            for _ in 0..2 {
                match crate::schedules::next_run(&x.cron, &x.cron_timezone, at) {
                    Ok(n) if n > at => {
                        next_runs.push(fmt_time(n));
                        at = n;
                    }
                    _ => break,
                }
            }
            ScheduleRow {
                project: projects
                    .iter()
                    .find(|p| p.id == x.project_id)
                    .map(|p| p.path.clone())
                    .unwrap_or_default(),
                description: x.description,
                git_ref: x.git_ref,
                cron: x.cron,
                timezone: x.cron_timezone,
                active: x.active != 0,
                next_runs,
                last_pipeline: x.last_pipeline_id,
            }
        })
        .collect();
    let failed = !error.is_empty();
    let mut resp = html(&SchedulesPage {
        chrome: Chrome::of(s, "schedules"),
        schedules,
        projects,
        can_create: crate::members::best_role(&app.store, &s.user)
            .await?
            .allows(Role::Developer),
        error,
    })?;
    if failed {
        *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(resp)
}

pub async fn schedules(State(app): State<Shared>, s: Session) -> Page {
    schedules_page(&app, &s, String::new()).await
}

/// A new schedule: cron with a time zone, for a ref of a project.
pub async fn create_schedule(State(app): State<Shared>, s: Session, body: Bytes) -> Page {
    let form = Form::parse(&body);
    s.check_csrf(&form)?;
    let project_id: i64 = form
        .get("project")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let s = s.in_project(&app, project_id).await?;
    s.require(Role::Developer)?;
    let project = app
        .store
        .project(project_id)
        .await?
        .ok_or(DashError::NotFound("project"))?;
    let cron = form.get("cron").unwrap_or("").trim();
    let tz = form
        .get("timezone")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("UTC");
    let git_ref = form
        .get("ref")
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or(&project.default_branch);
    let description = form.get("description").unwrap_or("").trim();
    let next = match crate::schedules::next_run(cron, tz, crate::now_ms()) {
        Ok(n) => n,
        Err(e) => return schedules_page(&app, &s, e.to_string()).await,
    };
    app.store
        .create_schedule(
            project.id,
            description,
            git_ref,
            cron,
            tz,
            true,
            next,
            Some(s.user.id),
        )
        .await?;
    Ok(see_other("/dash/schedules"))
}

// ---- users ----

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<crate::store::User>,
    new_token: String,
    message: String,
}

pub async fn users(State(app): State<Shared>, s: Session) -> Page {
    let users = if s.user.role() == Role::Admin {
        DashboardStore(&app.store).users().await?
    } else {
        Vec::new()
    };
    html(&UsersPage {
        chrome: Chrome::of(&s, "users"),
        users,
        new_token: String::new(),
        message: String::new(),
    })
}

/// An administrator creates a user with a password and a role; the new
/// user's API token is shown once.
pub async fn create_user(State(app): State<Shared>, s: Session, body: Bytes) -> Page {
    let form = Form::parse(&body);
    s.check_csrf(&form)?;
    s.require(Role::Admin)?;
    let username = form.get("username").unwrap_or("").trim();
    let password = form.get("password").unwrap_or("");
    let role = Role::parse(form.get("role").unwrap_or("")).ok_or_else(|| {
        DashError::BadRequest("role must be admin, maintainer, developer or viewer".into())
    })?;
    if username.is_empty()
        || !username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(DashError::BadRequest(
            "a username is letters, digits, '.', '_' and '-'".into(),
        ));
    }
    if password.chars().count() < 8 {
        return Err(DashError::BadRequest(
            "a password has at least 8 characters".into(),
        ));
    }
    let dash = DashboardStore(&app.store);
    if dash.user_with_password(username).await?.is_some() {
        return Err(DashError::BadRequest(format!(
            "the user `{username}` exists already"
        )));
    }
    let hash = session::hash_password(password)?;
    let name = form
        .get("name")
        .filter(|n| !n.trim().is_empty())
        .unwrap_or(username);
    let email = form.get("email").unwrap_or("");
    let (user, token) = app.store.create_user(username, name, email, role).await?;
    dash.set_password_hash(user.id, &hash).await?;
    html(&UsersPage {
        chrome: Chrome::of(&s, "users"),
        users: dash.users().await?,
        new_token: token,
        message: format!("Created {} ({}).", user.username, user.role),
    })
}

pub async fn change_password(State(app): State<Shared>, s: Session, body: Bytes) -> Page {
    let form = Form::parse(&body);
    s.check_csrf(&form)?;
    let password = form.get("password").unwrap_or("");
    if password.chars().count() < 8 {
        return Err(DashError::BadRequest(
            "a password has at least 8 characters".into(),
        ));
    }
    let hash = session::hash_password(password)?;
    DashboardStore(&app.store)
        .set_password_hash(s.user.id, &hash)
        .await?;
    let users = if s.user.role() == Role::Admin {
        DashboardStore(&app.store).users().await?
    } else {
        Vec::new()
    };
    html(&UsersPage {
        chrome: Chrome::of(&s, "users"),
        users,
        new_token: String::new(),
        message: "Your password is changed.".into(),
    })
}
