//! The dashboard: server-rendered HTML pages on `gantry serve` (askama
//! templates checked at compile time, htmx and its SSE extension embedded
//! in the binary). Pages: overview of every project's pipelines, pipeline
//! graph, job log, run-pipeline form, environments with approvals, runners,
//! schedules and users. Sessions and CSRF are in [`session`]; the queries it
//! adds are in [`crate::store_dashboard`].

pub mod inputs;
pub mod session;
pub mod views;

use crate::app::Shared;
use crate::error::{ObjectError, StoreError};
use askama::Template;
use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

/// Why a page could not be served.
#[derive(Debug, thiserror::Error)]
pub enum DashError {
    #[error("{0}")]
    Forbidden(String),
    #[error("the form's CSRF token is missing or wrong: reload the page and try again")]
    Csrf,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Objects(#[from] ObjectError),
    #[error("cannot render the page: {0}")]
    Render(#[from] askama::Error),
}

impl From<crate::actions::ActionError> for DashError {
    fn from(e: crate::actions::ActionError) -> Self {
        use crate::actions::ActionError;
        match e {
            ActionError::Forbidden(m) => DashError::Forbidden(m),
            ActionError::WrongState(m) => DashError::BadRequest(m),
            ActionError::Store(e) => DashError::Store(e),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    message: &'a str,
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        let status = match &self {
            DashError::Forbidden(_) | DashError::Csrf => StatusCode::FORBIDDEN,
            DashError::NotFound(_) => StatusCode::NOT_FOUND,
            DashError::BadRequest(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            eprintln!("gantry serve: dashboard: {self}");
        }
        let message = self.to_string();
        let body = ErrorPage {
            status: status.as_u16(),
            message: &message,
        }
        .render()
        .unwrap_or_else(|_| "error".into());
        (status, Html(body)).into_response()
    }
}

/// The dashboard's routes, merged into the server's router.
pub fn routes() -> Router<Shared> {
    use views::*;
    Router::new()
        .route("/", get(|| async { Redirect::to("/dash") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/dash", get(overview))
        .route("/dash/board", get(board))
        .route("/dash/events", get(events))
        .route("/dash/pipelines/{id}", get(pipeline_page))
        .route("/dash/pipelines/{id}/graph", get(pipeline_graph))
        .route("/dash/pipelines/{id}/retry", post(pipeline_retry))
        .route("/dash/pipelines/{id}/cancel", post(pipeline_cancel))
        .route("/dash/jobs/{id}", get(job_page))
        .route("/dash/jobs/{id}/log", get(job_log_stream))
        .route("/dash/jobs/{id}/raw", get(job_raw))
        .route("/dash/jobs/{id}/artifacts", get(job_artifacts_download))
        .route("/dash/jobs/{id}/play", post(job_play))
        .route("/dash/jobs/{id}/retry", post(job_retry))
        .route("/dash/jobs/{id}/cancel", post(job_cancel))
        .route("/dash/projects/{id}/run", get(run_form).post(run_pipeline))
        .route("/dash/environments", get(environments))
        .route("/dash/environments/rollback", post(environment_rollback))
        .route("/dash/environments/protect", post(environment_protect))
        .route("/dash/environments/{id}/stop", post(environment_stop))
        .route("/dash/runners", get(runners))
        .route("/dash/schedules", get(schedules).post(create_schedule))
        .route("/dash/users", get(users).post(create_user))
        .route("/dash/password", post(change_password))
        .route("/dash/assets/{name}", get(asset))
        .layer(middleware::from_fn(security_headers))
}

/// Security headers on every dashboard response.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    resp
}

/// Files embedded in the binary: no build step, no CDN.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript",
        include_bytes!("../../assets/htmx-2.0.11.min.js"),
    ),
    (
        "sse.min.js",
        "text/javascript",
        include_bytes!("../../assets/htmx-ext-sse-2.2.4.min.js"),
    ),
    (
        "dashboard.js",
        "text/javascript",
        include_bytes!("../../assets/dashboard.js"),
    ),
    (
        "dashboard.css",
        "text/css",
        include_bytes!("../../assets/dashboard.css"),
    ),
];

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, bytes)) => {
            let mut resp = bytes.to_vec().into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            );
            resp
        }
        None => DashError::NotFound("asset").into_response(),
    }
}
