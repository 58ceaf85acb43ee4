//! Browser sessions: a random cookie (HttpOnly, SameSite=Lax, Secure behind
//! https) whose hash names a `dashboard_sessions` row; every form carries the
//! session's CSRF token, checked in constant time. A page without a session
//! redirects to the login page.

use super::DashError;
use crate::app::Shared;
use crate::crypto::constant_time_eq;
use crate::store::{Role, User};
use crate::store_dashboard::{DashboardStore, SESSION_MS};
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};

pub const SESSION_COOKIE: &str = "gantry_session";
pub const LOGIN_CSRF_COOKIE: &str = "gantry_login_csrf";

/// The signed-in user of a page request.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: User,
    pub csrf: String,
}

impl Session {
    /// The user must have at least `needed`.
    pub fn require(&self, needed: Role) -> Result<(), DashError> {
        if self.user.role().allows(needed) {
            Ok(())
        } else {
            Err(DashError::Forbidden(format!(
                "your role ({}) cannot do this; it needs {} or above",
                self.user.role,
                needed.as_str()
            )))
        }
    }

    /// This session as its user acts in `project_id` (their role there:
    /// see [`crate::members::in_project`]).
    pub async fn in_project(&self, app: &Shared, project_id: i64) -> Result<Session, DashError> {
        Ok(Session {
            user: crate::members::in_project(&app.store, self.user.clone(), project_id).await?,
            csrf: self.csrf.clone(),
        })
    }

    /// The form's `csrf` field must be this session's token.
    pub fn check_csrf(&self, form: &Form) -> Result<(), DashError> {
        let given = form.get("csrf").unwrap_or("");
        if constant_time_eq(given.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(DashError::Csrf)
        }
    }
}

/// A cookie's value from the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Whether the browser reached us over https (directly or via a proxy).
pub fn is_https(app: &Shared, headers: &HeaderMap) -> bool {
    app.url.starts_with("https://")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value; `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age_s: i64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{}",
        if secure { "; Secure" } else { "" }
    )
}

pub fn session_cookie(token: &str, secure: bool) -> String {
    set_cookie(SESSION_COOKIE, token, SESSION_MS / 1000, secure)
}

impl FromRequestParts<Shared> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, Self::Rejection> {
        let to_login = || {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/dash".into());
            let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
            Redirect::to(&format!("/login?next={next}")).into_response()
        };
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login());
        };
        match DashboardStore(&app.store).session(&token).await {
            Ok(Some(row)) => Ok(Session {
                user: row.user,
                csrf: row.csrf,
            }),
            Ok(None) => Err(to_login()),
            Err(e) => Err(DashError::from(e).into_response()),
        }
    }
}

/// A parsed `application/x-www-form-urlencoded` body (repeated keys kept).
pub struct Form(pub Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An argon2id hash of a password, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, DashError> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| DashError::Internal(format!("cannot hash the password: {e}")))
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    use argon2::password_hash::phc::PasswordHash;
    PasswordHash::new(phc)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the user has none, for even timing.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("gantry-no-such-user").unwrap_or_default())
}
