//! Typed errors: the store's, the server's start-up, and API errors that
//! render as GitLab does (`{"message": …}` with the matching status).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("{0}")]
    Config(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "cannot decrypt a stored secret: the server key differs from the one it was written with"
    )]
    Decrypt,
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("object storage URL {url}: {reason}")]
    Url { url: String, reason: String },
}

/// Why `gantry serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(
        "cannot listen on {addr}: {source} (is another server running? choose another with --listen)"
    )]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    /// Another live server holds `path` (its data directory, or its
    /// SQLite database): two would clean each other's uploads or fight
    /// over one SQLite file.
    #[error("another gantry serve{pid} is using {what} {path}; {next}", pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Busy {
        what: &'static str,
        path: String,
        pid: Option<u32>,
        next: &'static str,
    },
    #[error("{0}")]
    Config(String),
}

/// An API error: a status and a message, as GitLab sends them.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("401 Unauthorized")]
    Unauthorized,
    #[error("403 Forbidden")]
    Forbidden,
    #[error("404 {0} Not Found")]
    NotFound(&'static str),
    #[error("400 Bad request - {0}")]
    BadRequest(String),
    #[error("409 Conflict - {0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("internal error: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Objects(#[from] ObjectError),
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Store(StoreError::Sql(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Store(_) | ApiError::Objects(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            eprintln!("gantry serve: {self}");
        }
        (
            status,
            Json(serde_json::json!({ "message": self.to_string() })),
        )
            .into_response()
    }
}
