//! `https://SERVER` (or `http://` on a trusted network): the deployment history kept by a
//! `gantry serve`, so every runner of a team sees the same known-good record.
//!
//! The server stores one row per record and one per target (the lease) and changes them with
//! compare-and-swap on a version column, so concurrent writers never lose a record and at most
//! one unexpired lease exists per target. This client only speaks its REST API:
//!
//! | call | request |
//! |---|---|
//! | records of a target / matching a filter | `GET /api/v4/deploy_history/records?target=T` / `?filter=F` |
//! | save a record | `PUT /api/v4/deploy_history/records/{id}` (the record as JSON) |
//! | take a lease | `POST /api/v4/deploy_history/leases {"target", "holder"}` → `{"acquired", "holder"}` |
//! | release a lease | `DELETE /api/v4/deploy_history/leases?target=T&holder_id=ID` |
//!
//! Authentication: `GANTRY_HISTORY_TOKEN` (a user's API token, sent as `PRIVATE-TOKEN`), else
//! the job's `CI_JOB_TOKEN` (sent as `JOB-TOKEN`; the server ties the records to the job's
//! project and environment). Tokens never appear in messages.

use std::time::Duration;

use serde::Deserialize;

use crate::DeployError;
use crate::history::{DeploymentRecord, HistoryStore, LeaseAttempt, LeaseHolder};

/// How the client proves who it is.
#[derive(Clone)]
enum Credential {
    /// A user's API token: `PRIVATE-TOKEN`.
    User(String),
    /// A running job's token: `JOB-TOKEN`.
    Job(String),
}

/// A `gantry serve` holding the history.
#[derive(Clone)]
pub struct HttpHistoryStore {
    /// `https://host[:port][/prefix]` without a trailing slash.
    base: String,
    credential: Credential,
    agent: ureq::Agent,
}

impl std::fmt::Debug for HttpHistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpHistoryStore")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn env_value(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

impl HttpHistoryStore {
    /// The store at `url`, with the token from `GANTRY_HISTORY_TOKEN` or `CI_JOB_TOKEN`.
    pub fn from_env(url: &str) -> Result<Self, DeployError> {
        let credential = match (env_value("GANTRY_HISTORY_TOKEN"), env_value("CI_JOB_TOKEN")) {
            (Some(t), _) => Credential::User(t),
            (None, Some(t)) => Credential::Job(t),
            (None, None) => {
                return Err(DeployError::Usage(format!(
                    "--history {url}: the Gantry server needs a token: set GANTRY_HISTORY_TOKEN to an API token \
                     (inside a Gantry job, CI_JOB_TOKEN is used)"
                )));
            }
        };
        Self::new(url, credential)
    }

    /// The store at `url` authenticated with a user's API token.
    pub fn with_user_token(url: &str, token: &str) -> Result<Self, DeployError> {
        Self::new(url, Credential::User(token.to_string()))
    }

    fn new(url: &str, credential: Credential) -> Result<Self, DeployError> {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| {
                DeployError::Usage(format!(
                    "--history {url:?}: expected https://SERVER (a gantry serve)"
                ))
            })?;
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() {
            return Err(DeployError::Usage(format!(
                "--history {url:?}: the URL names no server, e.g. https://gantry.example.com"
            )));
        }
        if authority.contains('@') {
            return Err(DeployError::Usage(
                "--history: put no credentials in the URL (they would show in logs); set GANTRY_HISTORY_TOKEN instead"
                    .into(),
            ));
        }
        let mut base = url.trim_end_matches('/').to_string();
        // `$CI_API_V4_URL` works as well as the server's URL.
        if let Some(b) = base.strip_suffix("/api/v4") {
            base = b.to_string();
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build();
        Ok(HttpHistoryStore {
            base,
            credential,
            agent,
        })
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.credential {
            Credential::User(t) => req.set("PRIVATE-TOKEN", t),
            Credential::Job(t) => req.set("JOB-TOKEN", t),
        }
    }

    /// Sends the request on a blocking thread; answers the body as text.
    async fn call(
        &self,
        what: String,
        method: &'static str,
        path: String,
        query: Vec<(&'static str, String)>,
        body: Option<String>,
    ) -> Result<String, DeployError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut req = this.request(method, &path);
            for (k, v) in &query {
                req = req.query(k, v);
            }
            let resp = match body {
                Some(b) => req
                    .set("Content-Type", "application/json")
                    .send_string(&b),
                None => req.call(),
            };
            match resp {
                Ok(r) => r.into_string().map_err(|e| {
                    DeployError::History(format!("{what}: reading the answer of {}: {e}", this.base))
                }),
                Err(ureq::Error::Status(code, r)) => {
                    let text = r.into_string().unwrap_or_default();
                    let message = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["message"].as_str().map(str::to_string))
                        .unwrap_or(text);
                    let hint = match code {
                        401 => ": the token is unknown (GANTRY_HISTORY_TOKEN or CI_JOB_TOKEN)",
                        403 => ": the token may not do this (a job token works only while its job runs; users need the developer role to write)",
                        404 => ": is this a gantry serve with the deploy history API?",
                        _ => "",
                    };
                    Err(DeployError::History(format!(
                        "{what}: {} answered HTTP {code} {}{hint}",
                        this.base,
                        message.chars().take(300).collect::<String>()
                    )))
                }
                Err(ureq::Error::Transport(t)) => Err(DeployError::History(format!(
                    "{what}: cannot reach {}: {t}",
                    this.base
                ))),
            }
        })
        .await
        .map_err(|e| DeployError::History(format!("the history request stopped: {e}")))?
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        text: &str,
    ) -> Result<T, DeployError> {
        serde_json::from_str(text).map_err(|e| {
            DeployError::History(format!(
                "{what}: {} sent an answer that is not valid: {e}",
                self.base
            ))
        })
    }
}

#[derive(Deserialize)]
struct LeaseAnswer {
    acquired: bool,
    #[serde(default)]
    holder: Option<LeaseHolder>,
}

#[async_trait::async_trait]
impl HistoryStore for HttpHistoryStore {
    fn location(&self) -> String {
        self.base.clone()
    }

    async fn save(&self, record: &DeploymentRecord) -> Result<(), DeployError> {
        let body = serde_json::to_string(record)
            .map_err(|e| DeployError::History(format!("cannot encode a record: {e}")))?;
        let id: String = url_segment(&record.id);
        self.call(
            format!("saving record {}", record.id),
            "PUT",
            format!("/api/v4/deploy_history/records/{id}"),
            Vec::new(),
            Some(body),
        )
        .await
        .map(|_| ())
    }

    async fn records(&self, target: &str) -> Result<Vec<DeploymentRecord>, DeployError> {
        let what = format!("reading the records of {target}");
        let text = self
            .call(
                what.clone(),
                "GET",
                "/api/v4/deploy_history/records".into(),
                vec![("target", target.to_string())],
                None,
            )
            .await?;
        self.decode(&what, &text)
    }

    async fn list(&self, filter: Option<&str>) -> Result<Vec<DeploymentRecord>, DeployError> {
        let what = "listing deployment records".to_string();
        let query = filter
            .map(|f| vec![("filter", f.to_string())])
            .unwrap_or_default();
        let text = self
            .call(
                what.clone(),
                "GET",
                "/api/v4/deploy_history/records".into(),
                query,
                None,
            )
            .await?;
        self.decode(&what, &text)
    }

    async fn acquire_lease(
        &self,
        target: &str,
        holder: &LeaseHolder,
    ) -> Result<LeaseAttempt, DeployError> {
        let what = format!("taking the lease of {target}");
        let body = serde_json::json!({"target": target, "holder": holder}).to_string();
        let text = self
            .call(
                what.clone(),
                "POST",
                "/api/v4/deploy_history/leases".into(),
                Vec::new(),
                Some(body),
            )
            .await?;
        let answer: LeaseAnswer = self.decode(&what, &text)?;
        match (answer.acquired, answer.holder) {
            (true, _) => Ok(LeaseAttempt::Acquired),
            (false, Some(h)) => Ok(LeaseAttempt::Held(h)),
            (false, None) => Err(DeployError::History(format!(
                "{what}: {} refused the lease without naming its holder",
                self.base
            ))),
        }
    }

    async fn release_lease(&self, target: &str, holder_id: &str) -> Result<(), DeployError> {
        self.call(
            format!("releasing the lease of {target}"),
            "DELETE",
            "/api/v4/deploy_history/leases".into(),
            vec![
                ("target", target.to_string()),
                ("holder_id", holder_id.to_string()),
            ],
            None,
        )
        .await
        .map(|_| ())
    }
}

/// Percent-encodes everything but unreserved characters, for one path segment.
fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_api_suffix_dropped() {
        let s = HttpHistoryStore::with_user_token("https://ci.example.com/api/v4/", "t").unwrap();
        assert_eq!(s.location(), "https://ci.example.com");
        assert!(HttpHistoryStore::with_user_token("https://u:p@ci.example.com", "t").is_err());
        assert!(HttpHistoryStore::with_user_token("https:///x", "t").is_err());
        assert!(HttpHistoryStore::with_user_token("ftp://x", "t").is_err());
        assert_eq!(
            url_segment("2026-11-26T03:00:00.000Z-ab"),
            "2026-11-26T03%3A00%3A00.000Z-ab"
        );
    }
}
