//! Read-only git over HTTP for runners on other machines: each project's
//! mirror is served with git's smart HTTP protocol at
//! `/api/v4/projects/:id/repository.git` by `git http-backend` run as CGI.
//! Callers authenticate as GitLab's runners do, with HTTP Basic
//! `gitlab-ci-token:<job token>`; the token opens only its own project's
//! repository and only while its job runs. Pushes (`git-receive-pack`) and
//! git's dumb protocol are refused.
//!
//! A server whose mirror is missing or lacks the job's commit (another
//! server behind the same load balancer planned the pipeline) fetches it
//! before answering.

use crate::app::Shared;
use crate::error::StoreError;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The user name GitLab's runners send with a job token.
pub const JOB_TOKEN_USER: &str = "gitlab-ci-token";

/// The URL path of project `id`'s repository (append to the server's URL).
pub fn repository_path(project_id: i64) -> String {
    format!("/api/v4/projects/{project_id}/repository.git")
}

/// Why a git request is refused. Sent as `text/plain`: git prints such a
/// body to the user as `remote: …` before its own error.
#[derive(Debug, thiserror::Error)]
pub enum GitHttpError {
    #[error(
        "authentication required: use HTTP Basic with the user gitlab-ci-token and the job's token (CI_JOB_TOKEN)"
    )]
    NoCredentials,
    #[error(
        "the job token was refused: it belongs to no running job (a job token opens the repository only while its job runs; authenticate as gitlab-ci-token)"
    )]
    BadToken,
    #[error("job {job} is {status}: a job token opens the repository only while its job runs")]
    JobNotRunning { job: i64, status: String },
    #[error(
        "job {job} belongs to another project: its token opens only its own project's repository"
    )]
    OtherProject { job: i64 },
    #[error("project {0} has no repository on this server")]
    NoRepository(i64),
    #[error("pushes are refused: the server serves repositories to jobs read-only")]
    PushRefused,
    #[error(
        "only git's smart HTTP protocol is served (GET info/refs?service=git-upload-pack, POST git-upload-pack)"
    )]
    DumbProtocol,
    #[error("cannot bring the project's mirror up to date: {0}")]
    Mirror(#[from] crate::repos::RepoError),
    #[error("git http-backend failed: {0}")]
    Backend(String),
    #[error("internal error: {0}")]
    Store(#[from] StoreError),
}

impl IntoResponse for GitHttpError {
    fn into_response(self) -> Response {
        let status = match &self {
            // 401 only asks for credentials: git then prompts or asks a
            // helper, and would hide this message behind "could not read
            // Username". Refused credentials are 403, which git shows.
            GitHttpError::NoCredentials => StatusCode::UNAUTHORIZED,
            GitHttpError::BadToken
            | GitHttpError::JobNotRunning { .. }
            | GitHttpError::OtherProject { .. }
            | GitHttpError::PushRefused
            | GitHttpError::DumbProtocol => StatusCode::FORBIDDEN,
            GitHttpError::NoRepository(_) => StatusCode::NOT_FOUND,
            GitHttpError::Backend(_) | GitHttpError::Store(_) | GitHttpError::Mirror(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            eprintln!("gantry serve: git over HTTP: {self}");
        }
        let mut resp = (status, format!("{self}\n")).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Gantry\""),
            );
        }
        resp
    }
}

/// The job token of `Authorization: Basic gitlab-ci-token:TOKEN`.
fn basic_job_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, token) = text.split_once(':')?;
    (user == JOB_TOKEN_USER && !token.is_empty()).then(|| token.to_string())
}

/// Checks that the request carries the token of a running job of
/// `project_id`; answers the job.
async fn authorize(
    app: &Shared,
    headers: &HeaderMap,
    project_id: i64,
) -> Result<crate::store::Job, GitHttpError> {
    if !headers.contains_key(header::AUTHORIZATION) {
        return Err(GitHttpError::NoCredentials);
    }
    let token = basic_job_token(headers).ok_or(GitHttpError::BadToken)?;
    let job = app
        .store
        .job_by_token(&token)
        .await?
        .ok_or(GitHttpError::BadToken)?;
    if job.project_id != project_id {
        return Err(GitHttpError::OtherProject { job: job.id });
    }
    if job.status != "running" {
        return Err(GitHttpError::JobNotRunning {
            job: job.id,
            status: job.status,
        });
    }
    Ok(job)
}

/// The job's project mirror, holding the job's commit.
async fn mirror_for(app: &Shared, job: &crate::store::Job) -> Result<(), GitHttpError> {
    let project = app
        .store
        .project(job.project_id)
        .await?
        .ok_or(GitHttpError::NoRepository(job.project_id))?;
    let sha = app.store.pipeline(job.pipeline_id).await?.map(|p| p.sha);
    app.repos
        .ensure(project.id, &project.source_url, sha.as_deref())
        .await?;
    Ok(())
}

/// `GET …/repository.git/info/refs?service=git-upload-pack`.
pub async fn info_refs(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(project_id): Path<i64>,
    RawQuery(query): RawQuery,
) -> Result<Response, GitHttpError> {
    let query = query.unwrap_or_default();
    let service = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.into_owned());
    match service.as_deref() {
        Some("git-upload-pack") => {}
        Some("git-receive-pack") => return Err(GitHttpError::PushRefused),
        _ => return Err(GitHttpError::DumbProtocol),
    }
    let job = authorize(&app, &headers, project_id).await?;
    mirror_for(&app, &job).await?;
    backend(&app, &headers, project_id, "GET", "info/refs", &query, None).await
}

/// `POST …/repository.git/git-upload-pack`: a fetch.
pub async fn upload_pack(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(project_id): Path<i64>,
    body: Bytes,
) -> Result<Response, GitHttpError> {
    let job = authorize(&app, &headers, project_id).await?;
    mirror_for(&app, &job).await?;
    backend(
        &app,
        &headers,
        project_id,
        "POST",
        "git-upload-pack",
        "",
        Some(body),
    )
    .await
}

/// `POST …/repository.git/git-receive-pack`: always refused.
pub async fn receive_pack() -> GitHttpError {
    GitHttpError::PushRefused
}

/// Mirrors being repacked now.
static REPACKING: std::sync::Mutex<std::collections::BTreeSet<std::path::PathBuf>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Packs a mirror may gather (one per fetch) before it is repacked.
const MAX_PACKS: usize = 16;

/// Starts a repack with a reachability bitmap when the mirror has none (or
/// many packs): without one, every clone makes git walk and pack every
/// object again (a 2,000-file repository: 2.6 s a clone, 0.3 s with one).
/// In the background: this request is served from the packs as they are.
fn ensure_bitmap(mirror: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(mirror.join("objects/pack")) else {
        return;
    };
    let (mut packs, mut bitmap) = (0, false);
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        packs += usize::from(name.ends_with(".pack"));
        bitmap |= name.ends_with(".bitmap");
    }
    if bitmap && packs <= MAX_PACKS {
        return;
    }
    let mirror = mirror.to_path_buf();
    if !REPACKING.lock().expect("repack set").insert(mirror.clone()) {
        return;
    }
    tokio::spawn(async move {
        let status = tokio::process::Command::new("git")
            .arg("-C")
            .arg(&mirror)
            .args(["repack", "-a", "-d", "-b", "-q"])
            // Safe to stop midway: git renames finished packs into place.
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if !status.is_ok_and(|s| s.success()) {
            eprintln!(
                "gantry serve: git repack of {} failed; clones stay slower",
                mirror.display()
            );
        }
        REPACKING.lock().expect("repack set").remove(&mirror);
    });
}

/// Runs `git http-backend` for one request and streams its answer.
async fn backend(
    app: &Shared,
    headers: &HeaderMap,
    project_id: i64,
    method: &str,
    service_path: &str,
    query: &str,
    body: Option<Bytes>,
) -> Result<Response, GitHttpError> {
    let mirror = app.repos.mirror_dir(project_id);
    let (Some(root), Some(name)) = (mirror.parent(), mirror.file_name()) else {
        return Err(GitHttpError::NoRepository(project_id));
    };
    if !mirror.join("HEAD").is_file() {
        return Err(GitHttpError::NoRepository(project_id));
    }
    if method == "GET" {
        ensure_bitmap(&mirror);
    }
    let header_text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut cmd = tokio::process::Command::new("git");
    // Receive-pack off whatever the mirror's configuration says.
    cmd.args(["-c", "http.receivepack=false", "http-backend"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env(
            "PATH_INFO",
            format!("/{}/{service_path}", name.to_string_lossy()),
        )
        .env("REQUEST_METHOD", method)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header_text(header::CONTENT_TYPE))
        .env(
            "HTTP_CONTENT_ENCODING",
            header_text(header::CONTENT_ENCODING),
        )
        .env(
            "HTTP_GIT_PROTOCOL",
            headers
                .get("git-protocol")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(b) = &body {
        cmd.env("CONTENT_LENGTH", b.len().to_string());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| GitHttpError::Backend(format!("cannot run git: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Written while the answer is read: a large request must not deadlock.
    tokio::spawn(async move {
        if let Some(b) = body {
            let _ = stdin.write_all(&b).await;
        }
        drop(stdin);
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    // Read to the end (a full pipe would block git), the start kept.
    let stderr_text = tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let room = (64 * 1024usize).saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        String::from_utf8_lossy(&kept).into_owned()
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    // CGI headers, up to the empty line.
    let mut status = StatusCode::OK;
    let mut out_headers = Vec::new();
    loop {
        let mut line = String::new();
        let n = stdout
            .read_line(&mut line)
            .await
            .map_err(|e| GitHttpError::Backend(e.to_string()))?;
        if n == 0 {
            let _ = child.wait().await;
            let err = stderr_text.await.unwrap_or_default();
            return Err(GitHttpError::Backend(format!("no answer ({})", err.trim())));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            if let Some(code) = v
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                status = code;
            }
        } else if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(k.trim().as_bytes()),
            HeaderValue::from_str(v),
        ) {
            out_headers.push((name, value));
        }
    }
    // The rest is the body; the child lives (and is reaped) with the stream.
    let stream =
        futures_util::stream::unfold((stdout, Some(child)), |(mut stdout, child)| async move {
            let mut buf = vec![0u8; 64 * 1024];
            match stdout.read(&mut buf).await {
                Ok(0) => {
                    if let Some(mut c) = child {
                        let _ = c.wait().await;
                    }
                    None
                }
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(Bytes::from(buf)), (stdout, child)))
                }
                Err(e) => Some((Err(e), (stdout, None))),
            }
        });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    for (k, v) in out_headers {
        resp.headers_mut().insert(k, v);
    }
    Ok(resp)
}
