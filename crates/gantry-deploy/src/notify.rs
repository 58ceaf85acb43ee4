//! `--notify URL`: a JSON event POSTed to a webhook (e.g. a chat's incoming webhook) when a
//! deploy starts, succeeds, is rolled back or fails. A notification failure is a warning, never
//! a deploy failure. The body has a `text` field so chat webhooks show it as is.

use std::time::Duration;

use serde::Serialize;

use crate::Log;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Started,
    Succeeded,
    RolledBack,
    Failed,
}

/// The posted body.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: EventKind,
    pub target: String,
    pub revision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// One line for chat webhooks.
    pub text: String,
}

impl Event {
    pub fn new(event: EventKind, target: &str, revision: &str) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let word = match event {
            EventKind::Started => "deploying",
            EventKind::Succeeded => "deployed",
            EventKind::RolledBack => "rolled back",
            EventKind::Failed => "FAILED to deploy",
        };
        Event {
            event,
            target: target.into(),
            revision: revision.into(),
            rolled_back_to: None,
            message: None,
            pipeline: env("CI_PIPELINE_ID"),
            job: env("CI_JOB_ID"),
            commit: env("CI_COMMIT_SHA"),
            text: format!(
                "gantry: {word} {} to {target}",
                crate::history::short_revision(revision)
            ),
        }
    }
}

/// Checks a `--notify` URL up front.
pub fn validate_url(url: &str) -> Result<(), crate::DeployError> {
    crate::health::validate_url(url, "--notify")
}

/// Posts `event` to every URL; failures are logged as warnings.
pub async fn send(urls: &[String], event: &Event, log: &Log) {
    for url in urls {
        let body = match serde_json::to_string(event) {
            Ok(b) => b,
            Err(e) => {
                log.line(format!("warning: cannot encode the notification: {e}"));
                return;
            }
        };
        let u = url.clone();
        let result = tokio::task::spawn_blocking(move || {
            ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .build()
                .post(&u)
                .set("Content-Type", "application/json")
                .send_string(&body)
                .map(|_| ())
                .map_err(|e| match e {
                    ureq::Error::Status(code, _) => format!("HTTP {code}"),
                    ureq::Error::Transport(t) => t.kind().to_string(),
                })
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            // The URL may carry a token: name only its host.
            Ok(Err(e)) => log.line(format!(
                "warning: notification to {} failed: {e}",
                crate::health::url_host(url)
            )),
            Err(e) => log.line(format!("warning: notification task failed: {e}")),
        }
    }
}
