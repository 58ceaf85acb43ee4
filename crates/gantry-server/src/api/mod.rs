//! HTTP: the GitLab REST API (v4) subset existing clients use
//! (python-gitlab and its `gitlab` command), Gantry's extras under the same
//! prefix, the runner protocol ([`runner`]), webhooks ([`hooks`]),
//! `/healthz`, `/metrics` and the OpenAPI document.

pub mod bridges;
pub mod gitlab;
pub mod hooks;
pub mod members;
pub mod openapi;
pub mod protected;
pub mod runner;

use crate::app::{Metrics, Shared};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};

/// Largest request body: artifact and cache uploads.
pub const MAX_BODY: usize = 1 << 30;

pub fn router(app: Shared) -> Router {
    use gitlab::*;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v4/openapi.json", get(openapi::document))
        .route("/api/v4/version", get(version))
        .route("/api/v4/user", get(current_user))
        .route("/api/v4/users", post(create_user))
        .route("/api/v4/users/{uid}", get(get_user))
        .route("/api/v4/projects", get(list_projects).post(create_project))
        .route("/api/v4/projects/{id}", get(get_project))
        .route("/api/v4/projects/{id}/pipeline", post(create_pipeline))
        .route(
            "/api/v4/projects/{id}/protected_environments",
            get(protected::list).post(protected::create),
        )
        .route(
            "/api/v4/projects/{id}/protected_environments/{name}",
            axum::routing::delete(protected::delete),
        )
        .route("/api/v4/projects/{id}/pipelines", get(list_pipelines))
        .route("/api/v4/projects/{id}/pipelines/{pid}", get(get_pipeline))
        .route(
            "/api/v4/projects/{id}/pipelines/{pid}/jobs",
            get(pipeline_jobs),
        )
        .route(
            "/api/v4/projects/{id}/pipelines/{pid}/bridges",
            get(bridges::pipeline_bridges),
        )
        .route(
            "/api/v4/projects/{id}/pipelines/{pid}/variables",
            get(pipeline_variables),
        )
        .route(
            "/api/v4/projects/{id}/pipelines/{pid}/retry",
            post(retry_pipeline),
        )
        .route(
            "/api/v4/projects/{id}/pipelines/{pid}/cancel",
            post(cancel_pipeline),
        )
        .route("/api/v4/projects/{id}/jobs", get(project_jobs))
        .route("/api/v4/projects/{id}/jobs/{jid}", get(get_job))
        .route("/api/v4/projects/{id}/jobs/{jid}/trace", get(job_trace))
        .route(
            "/api/v4/projects/{id}/jobs/{jid}/trace/stream",
            get(job_trace_stream),
        )
        .route("/api/v4/projects/{id}/jobs/{jid}/play", post(play_job))
        .route("/api/v4/projects/{id}/jobs/{jid}/retry", post(retry_job))
        .route("/api/v4/projects/{id}/jobs/{jid}/cancel", post(cancel_job))
        .route(
            "/api/v4/projects/{id}/jobs/{jid}/artifacts",
            get(job_artifacts),
        )
        .route(
            "/api/v4/projects/{id}/variables",
            get(list_variables).post(create_variable),
        )
        .route(
            "/api/v4/projects/{id}/variables/{key}",
            get(get_variable)
                .put(update_variable)
                .delete(delete_variable),
        )
        .route(
            "/api/v4/admin/ci/variables",
            get(list_instance_variables).post(create_instance_variable),
        )
        .route(
            "/api/v4/projects/{id}/pipeline_schedules",
            get(list_schedules).post(create_schedule),
        )
        .route(
            "/api/v4/projects/{id}/members",
            get(members::list).post(members::add),
        )
        .route("/api/v4/projects/{id}/members/all", get(members::list_all))
        .route(
            "/api/v4/projects/{id}/members/all/{uid}",
            get(members::get_all),
        )
        .route(
            "/api/v4/projects/{id}/members/{uid}",
            get(members::get)
                .put(members::update)
                .delete(members::remove),
        )
        .route("/api/v4/projects/{id}/environments", get(list_environments))
        .route(
            "/api/v4/projects/{id}/environments/stop_stale",
            post(stop_stale_environments),
        )
        .route(
            "/api/v4/projects/{id}/environments/{eid}",
            get(get_environment),
        )
        .route(
            "/api/v4/projects/{id}/environments/{eid}/stop",
            post(stop_environment),
        )
        .route("/api/v4/projects/{id}/deployments", get(list_deployments))
        .route(
            "/api/v4/projects/{id}/gantry_webhook",
            get(webhook_settings),
        )
        .route(
            "/api/v4/deploy_history/records",
            get(crate::deploy_history::list_records),
        )
        .route(
            "/api/v4/deploy_history/records/{record_id}",
            put(crate::deploy_history::put_record),
        )
        .route(
            "/api/v4/deploy_history/leases",
            post(crate::deploy_history::acquire_lease).delete(crate::deploy_history::release_lease),
        )
        .route("/api/v4/runners/all", get(list_runners))
        .route("/api/v4/projects/{id}/webhooks/gitlab", post(hooks::gitlab))
        .route("/api/v4/projects/{id}/webhooks/github", post(hooks::github))
        .route("/api/v4/projects/{id}/webhooks/gitea", post(hooks::gitea))
        .route(
            "/api/v4/runners",
            post(runner::register).delete(runner::unregister),
        )
        .route("/api/v4/jobs/request", post(runner::request_job))
        .route("/api/v4/jobs/{id}", put(runner::update_job))
        .route("/api/v4/jobs/{id}/trace", patch(runner::append_trace))
        .route(
            "/api/v4/jobs/{id}/artifacts",
            post(runner::upload_artifacts).get(runner::download_artifacts),
        )
        .route(
            "/api/v4/jobs/{id}/cache/{key}",
            get(runner::get_cache).put(runner::put_cache),
        )
        .route(
            "/api/v4/projects/{id}/repository.git/info/refs",
            get(crate::git_http::info_refs),
        )
        .route(
            "/api/v4/projects/{id}/repository.git/git-upload-pack",
            post(crate::git_http::upload_pack),
        )
        .route(
            "/api/v4/projects/{id}/repository.git/git-receive-pack",
            post(crate::git_http::receive_pack),
        )
        .merge(crate::dashboard::routes())
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

async fn count_requests(State(app): State<Shared>, req: Request, next: Next) -> Response {
    Metrics::inc(&app.metrics.http_requests, 1);
    next.run(req).await
}

async fn healthz(State(app): State<Shared>) -> Response {
    match sqlx::query("SELECT 1").execute(&app.store.db.pool).await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unavailable: {e}\n"),
        )
            .into_response(),
    }
}

/// Prometheus text exposition.
async fn metrics(State(app): State<Shared>) -> Response {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let m = &app.metrics;
    let mut out = String::new();
    let counters = [
        (
            "gantry_http_requests_total",
            "HTTP requests served.",
            &m.http_requests,
        ),
        (
            "gantry_jobs_claimed_total",
            "Jobs handed to runners.",
            &m.jobs_claimed,
        ),
        (
            "gantry_jobs_finished_total",
            "Jobs finished by runners.",
            &m.jobs_finished,
        ),
        (
            "gantry_log_bytes_total",
            "Log bytes received from runners.",
            &m.log_bytes,
        ),
        ("gantry_webhooks_total", "Webhooks accepted.", &m.webhooks),
        (
            "gantry_webhooks_refused_total",
            "Webhooks refused (bad token or signature).",
            &m.webhooks_refused,
        ),
        (
            "gantry_pipelines_created_total",
            "Pipelines created.",
            &m.pipelines_created,
        ),
        (
            "gantry_schedule_restores_total",
            "Pipeline schedules rebuilt from job rows.",
            &m.schedule_restores,
        ),
    ];
    for (name, help, c) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            c.load(Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP gantry_jobs Jobs by status.\n# TYPE gantry_jobs gauge"
    );
    if let Ok(counts) = app.store.job_counts().await {
        for (status, n) in counts {
            let _ = writeln!(out, "gantry_jobs{{status=\"{status}\"}} {n}");
        }
    }
    let online = app
        .store
        .runners()
        .await
        .map(|rs| {
            let cutoff = crate::now_ms() - app.config.runner_timeout.as_millis() as i64;
            rs.iter()
                .filter(|r| r.active != 0 && r.contacted_at >= cutoff)
                .count()
        })
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "# HELP gantry_runners_online Runners heard from recently.\n# TYPE gantry_runners_online gauge\ngantry_runners_online {online}"
    );
    let _ = writeln!(
        out,
        "# HELP gantry_live_pipelines Pipelines whose schedule is kept in memory.\n# TYPE gantry_live_pipelines gauge\ngantry_live_pipelines {}",
        app.live.len()
    );
    let _ = writeln!(
        out,
        "# HELP gantry_uptime_seconds Seconds since the server started.\n# TYPE gantry_uptime_seconds gauge\ngantry_uptime_seconds {}",
        app.started.elapsed().as_secs()
    );
    let mut resp = out.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}
