//! The server side of the runner protocol (see [`crate::protocol`]).

use crate::app::{Metrics, Shared};
use crate::auth::{job_token, require_job};
use crate::crypto;
use crate::error::ApiError;
use crate::logs::Appended;
use crate::protocol::{
    Dependency, JobPayload, JobRequest, JobUpdate, JobUpdateReply, RegisterRequest, Registered,
};
use crate::store::{Job, Runner};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gantry_config::model::Variable;
use std::time::{Duration, Instant};

/// How long a job request waits for a job before answering 204.
pub const LONG_POLL: Duration = Duration::from_secs(20);

pub async fn register(
    State(app): State<Shared>,
    Json(body): Json<RegisterRequest>,
) -> Result<Response, ApiError> {
    let expected = app.store.key.registration_token();
    if !crypto::constant_time_eq(body.token.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::Forbidden);
    }
    if !matches!(body.executor.as_str(), "shell" | "docker" | "auto") {
        return Err(ApiError::BadRequest(format!(
            "executor `{}` is not one of shell, docker, auto",
            body.executor
        )));
    }
    let (runner, token) = app
        .store
        .register_runner(
            &body.description,
            &body.tag_list,
            body.run_untagged,
            &body.executor,
            body.concurrency.max(1) as i64,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            id: runner.id,
            token,
        }),
    )
        .into_response())
}

async fn runner_from(app: &Shared, token: &str) -> Result<Runner, ApiError> {
    app.store
        .runner_by_token(token)
        .await?
        .ok_or(ApiError::Forbidden)
}

pub async fn unregister(
    State(app): State<Shared>,
    Json(body): Json<JobRequest>,
) -> Result<StatusCode, ApiError> {
    let runner = runner_from(&app, &body.token).await?;
    app.store.unregister_runner(runner.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Long-polls for a job the runner can run.
pub async fn request_job(
    State(app): State<Shared>,
    Json(body): Json<JobRequest>,
) -> Result<Response, ApiError> {
    let runner = runner_from(&app, &body.token).await?;
    // "Online" is judged in minutes: a write per claim would be waste.
    if crate::now_ms() - runner.contacted_at > 3_000 {
        app.store.touch_runner(runner.id).await?;
    }
    let deadline = Instant::now() + LONG_POLL;
    loop {
        // Register for wake-ups before looking, so none is missed.
        let notified = app.queue.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(claimed) = app.store.claim(&runner).await? {
            Metrics::inc(&app.metrics.jobs_claimed, 1);
            let payload = match payload(&app, &claimed.job, claimed.token).await {
                Ok(p) => p,
                Err(e) => {
                    // A job that cannot be described fails now, not silently later.
                    let reason = format!("the server could not prepare the job: {e}");
                    let _ = app
                        .logs
                        .append(claimed.job.id, 0, format!("{reason}\n").as_bytes(), &[])
                        .await;
                    crate::queue::attempt_ended(
                        &app,
                        &claimed.job,
                        "failed",
                        Some("runner_system_failure"),
                        None,
                        None,
                    )
                    .await?;
                    continue;
                }
            };
            return Ok((StatusCode::CREATED, Json(payload)).into_response());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        // Other servers enqueue too: look again at least every second.
        let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), notified).await;
    }
}

/// The masked values of a job's secret variables.
async fn secrets(app: &Shared, job: &Job) -> Result<Vec<String>, ApiError> {
    Ok(app
        .store
        .instance_and_project_variables(job.project_id)
        .await?
        .into_iter()
        .filter(|v| v.masked)
        .map(|v| v.value)
        .collect())
}

/// Everything the runner needs for one claimed job.
async fn payload(app: &Shared, job: &Job, token: String) -> Result<JobPayload, ApiError> {
    let facts = app.pipeline_facts(job.pipeline_id).await?;
    let (pipeline, planned) = (&facts.row, &facts.planned);
    let project_path = &facts.project_path;
    let spec = crate::engine_bridge::spec(job)
        .ok_or_else(|| ApiError::Unprocessable("the stored job cannot be read".into()))?;
    let mut variables = planned.context_variables.clone();
    let job_url = format!("{}/{}/-/jobs/{}", app.url, project_path, job.id);
    for (k, v) in [
        ("CI_JOB_ID", job.id.to_string()),
        ("CI_JOB_NAME", job.name.clone()),
        (
            "CI_JOB_NAME_SLUG",
            gantry_config::context::slugify(&job.name),
        ),
        ("CI_JOB_STAGE", job.stage.clone()),
        ("CI_JOB_URL", job_url),
        (
            "CI_JOB_STARTED_AT",
            crate::api::gitlab::iso(job.started_at.unwrap_or_else(crate::now_ms)),
        ),
        ("CI_PIPELINE_ID", pipeline.id.to_string()),
        ("CI_PIPELINE_IID", pipeline.iid.to_string()),
        (
            "CI_PIPELINE_URL",
            format!("{}/{}/-/pipelines/{}", app.url, project_path, pipeline.id),
        ),
        (
            "CI_PIPELINE_CREATED_AT",
            crate::api::gitlab::iso(pipeline.created_at),
        ),
        ("CI_RUNNER_ID", job.runner_id.unwrap_or(0).to_string()),
    ] {
        variables.push(Variable::new(k, v));
    }
    let mut job_token = Variable::new("CI_JOB_TOKEN", token.clone());
    job_token.masked = true;
    variables.push(job_token);
    let repo_url = format!(
        "{}{}",
        app.url,
        crate::git_http::repository_path(job.project_id)
    );
    // As GitLab sets it: the job token in the URL (masked as CI_JOB_TOKEN).
    if let Ok(mut with_token) = url::Url::parse(&repo_url)
        && with_token
            .set_username(crate::git_http::JOB_TOKEN_USER)
            .is_ok()
        && with_token.set_password(Some(&token)).is_ok()
    {
        variables.push(Variable::new("CI_REPOSITORY_URL", with_token.to_string()));
    }
    if let (Some(i), Some(n)) = (spec.node_index, spec.node_total) {
        variables.push(Variable::new("CI_NODE_INDEX", i.to_string()));
        variables.push(Variable::new("CI_NODE_TOTAL", n.to_string()));
    }
    // Instance, then project variables; protected ones only on protected refs.
    let mut overrides = Vec::new();
    for v in app
        .store
        .instance_and_project_variables(job.project_id)
        .await?
    {
        if v.protected && pipeline.protected == 0 {
            continue;
        }
        overrides.push(Variable {
            name: v.key,
            value: v.value,
            expand: !v.raw,
            description: None,
            options: Vec::new(),
            file: v.variable_type == "file",
            masked: v.masked,
        });
    }
    // Pipeline variables outrank project ones.
    let pipeline_vars: Vec<(String, String)> =
        serde_json::from_str(&pipeline.variables).unwrap_or_default();
    overrides.extend(pipeline_vars.iter().map(|(k, v)| Variable::new(k, v)));

    let current = if spec.dependencies.is_empty() {
        Vec::new()
    } else {
        app.store.pipeline_jobs(pipeline.id, false).await?
    };
    let mut dependencies = Vec::new();
    let mut dotenv = Vec::new();
    for name in &spec.dependencies {
        let producers: Vec<&Job> = {
            let exact: Vec<&Job> = current.iter().filter(|j| &j.name == name).collect();
            if exact.is_empty() {
                current
                    .iter()
                    .filter(|j| {
                        crate::engine_bridge::spec(j).is_some_and(|s| &s.definition == name)
                    })
                    .collect()
            } else {
                exact
            }
        };
        for p in producers {
            dependencies.push(Dependency {
                job_id: p.id,
                name: p.name.clone(),
                has_artifacts: p.artifact_size.is_some(),
            });
            if let Some(text) = &p.dotenv {
                let pairs: Vec<(String, String)> = serde_json::from_str(text).unwrap_or_default();
                dotenv.extend(pairs);
            }
        }
    }
    Ok(JobPayload {
        id: job.id,
        token,
        name: job.name.clone(),
        stage: job.stage.clone(),
        attempt: job.attempt,
        pipeline_id: pipeline.id,
        project_id: job.project_id,
        project_path: project_path.clone(),
        repo_url,
        git_ref: pipeline.git_ref.clone(),
        sha: pipeline.sha.clone(),
        spec,
        variables,
        overrides,
        dependencies,
        dotenv,
    })
}

/// Failed test cases kept per job.
const MAX_JUNIT_CASES: usize = 1000;

/// Heartbeats and the final state.
pub async fn update_job(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(body): Json<JobUpdate>,
) -> Result<Json<JobUpdateReply>, ApiError> {
    let token = job_token(&headers).ok_or(ApiError::Unauthorized)?;
    let job = app
        .store
        .job_by_token(&token)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if job.id != id {
        return Err(ApiError::Forbidden);
    }
    if job.status != "running" {
        // Canceled (or failed as lost): the runner stops.
        return Ok(Json(JobUpdateReply { status: job.status }));
    }
    match body.state.as_str() {
        "running" => {
            // The final update is followed by the runner's next request,
            // which marks it as seen: only heartbeats do it here.
            if let Some(r) = job.runner_id {
                app.store.touch_runner(r).await?;
            }
            app.store.heartbeat(id).await?;
            Ok(Json(JobUpdateReply {
                status: "running".into(),
            }))
        }
        "success" | "failed" => {
            if !body.junit_failures.is_empty() {
                // Test names are user content: masked like the log, and bounded.
                let secrets = secrets(&app, &job).await?;
                let cases: Vec<String> = body
                    .junit_failures
                    .iter()
                    .take(MAX_JUNIT_CASES)
                    .map(|c| {
                        let c: String = c.chars().take(500).collect();
                        String::from_utf8_lossy(&crate::logs::mask(c.as_bytes(), &secrets))
                            .into_owned()
                    })
                    .collect();
                app.store.set_junit_failures(id, &cases).await?;
            }
            let dotenv = (!body.dotenv.is_empty())
                .then(|| serde_json::to_string(&body.dotenv).unwrap_or_default());
            let reason = body
                .failure_reason
                .as_deref()
                .filter(|_| body.state == "failed");
            let stored = crate::queue::attempt_ended(
                &app,
                &job,
                &body.state,
                reason,
                body.exit_code,
                dotenv.as_deref(),
            )
            .await?;
            let now = match stored {
                Some(status) => status.to_string(),
                // Ended meanwhile (canceled, lost): the row says how.
                None => app
                    .store
                    .job(id)
                    .await?
                    .map(|j| j.status)
                    .unwrap_or_default(),
            };
            Ok(Json(JobUpdateReply { status: now }))
        }
        other => Err(ApiError::BadRequest(format!(
            "state `{other}` is not one of running, success, failed"
        ))),
    }
}

/// `PATCH /jobs/:id/trace` with `Content-Range: START-END`.
pub async fn append_trace(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let job = require_job(&app, &headers, id).await?;
    let start: u64 = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| ApiError::BadRequest("Content-Range: START-END is missing".into()))?;
    let secrets = secrets(&app, &job).await?;
    let outcome = app.logs.append(id, start, &body, &secrets).await?;
    Metrics::inc(&app.metrics.log_bytes, body.len() as u64);
    let (status, next) = match outcome {
        Appended::Next(n) => (StatusCode::ACCEPTED, n),
        Appended::Gap(n) => (StatusCode::RANGE_NOT_SATISFIABLE, n),
    };
    let mut resp = status.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("0-{next}")) {
        resp.headers_mut().insert(header::RANGE, v);
    }
    Ok(resp)
}

/// Why an artifact archive is refused: an entry that would land outside
/// the directory it is extracted into (zip-slip).
pub fn check_archive(bytes: &[u8]) -> Result<(), String> {
    check_archive_in(std::io::Cursor::new(bytes))
}

/// [`check_archive`] of an archive read from `reader` (a file).
pub fn check_archive_in(reader: impl std::io::Read + std::io::Seek) -> Result<(), String> {
    let mut archive =
        zip::ZipArchive::new(reader).map_err(|e| format!("not a zip archive: {e}"))?;
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| format!("unreadable entry: {e}"))?;
        let name = entry.name().to_string();
        let escapes = name.starts_with('/')
            || name.starts_with('\\')
            || name.split(['/', '\\']).any(|c| c == "..")
            || entry.enclosed_name().is_none();
        if escapes {
            return Err(format!(
                "entry `{name}` would be written outside the job's directory"
            ));
        }
    }
    Ok(())
}

pub async fn upload_artifacts(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let job = require_job(&app, &headers, id).await?;
    check_archive(&body)
        .map_err(|e| ApiError::BadRequest(format!("artifact archive refused: {e}")))?;
    let size = body.len() as i64;
    app.objects
        .put(&format!("artifacts/{id}.zip"), body)
        .await?;
    let expire_at = crate::sweeper::artifacts_expire_at(&job, crate::now_ms());
    app.store.set_artifact_size(id, size, expire_at).await?;
    Ok(StatusCode::CREATED.into_response())
}

/// A dependency's artifacts, for a running job of the same project.
pub async fn download_artifacts(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let token = job_token(&headers).ok_or(ApiError::Unauthorized)?;
    let caller = app
        .store
        .job_by_token(&token)
        .await?
        .filter(|j| j.status == "running")
        .ok_or(ApiError::Unauthorized)?;
    let job = app.store.job(id).await?.ok_or(ApiError::NotFound("Job"))?;
    if job.project_id != caller.project_id {
        return Err(ApiError::Forbidden);
    }
    let zip = app
        .objects
        .get(&format!("artifacts/{id}.zip"))
        .await?
        .ok_or(ApiError::NotFound("Artifacts"))?;
    let mut resp = Response::new(Body::from(zip));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    Ok(resp)
}

/// Where a job's cache `key` lives: per project, apart for protected refs
/// (as GitLab's `-protected` suffix: an unprotected branch cannot poison a
/// protected branch's cache) unless the job's caches say `unprotect: true`.
/// Named by the key's digest: a key expanded from a masked variable holds
/// a secret, and object names are listed and logged.
async fn cache_object(app: &Shared, job: &Job, key: &str) -> Result<String, ApiError> {
    if key.is_empty() || key.len() > 1024 {
        return Err(ApiError::BadRequest(
            "a cache key has 1 to 1024 bytes".into(),
        ));
    }
    let pipeline = app
        .store
        .pipeline(job.pipeline_id)
        .await?
        .ok_or(ApiError::NotFound("Pipeline"))?;
    let unprotect =
        crate::engine_bridge::spec(job).is_some_and(|s| s.cache.iter().any(|c| c.unprotect));
    let scope = if pipeline.protected != 0 && !unprotect {
        "protected"
    } else {
        "unprotected"
    };
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    Ok(format!("caches/{}/{scope}/{digest}.zip", job.project_id))
}

/// A cache archive, for a running job of the project.
pub async fn get_cache(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, key)): Path<(i64, String)>,
) -> Result<Response, ApiError> {
    let job = require_job(&app, &headers, id).await?;
    let object = cache_object(&app, &job, &key).await?;
    let (size, stream) = app
        .objects
        .get_stream(&object)
        .await?
        .ok_or(ApiError::NotFound("Cache"))?;
    app.cache_uses
        .restored(&app, &object, crate::now_ms())
        .await;
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    Ok(resp)
}

/// Stores a cache archive a running job made (replacing the key's last one).
pub async fn put_cache(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, key)): Path<(i64, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let job = require_job(&app, &headers, id).await?;
    let object = cache_object(&app, &job, &key).await?;
    crate::shared_cache::receive(&app, &object, body).await?;
    Ok(StatusCode::CREATED)
}
