//! Webhooks from forges: GitLab's format (`X-Gitlab-Token`), GitHub's
//! (HMAC-SHA256 in `X-Hub-Signature-256`) and Gitea's (`X-Gitea-Signature`).
//! Push, tag and merge/pull request events create a pipeline for the exact
//! commit with the matching `CI_PIPELINE_SOURCE`.

use crate::api::gitlab::{create_error, find_project};
use crate::app::{Metrics, Shared};
use crate::crypto;
use crate::error::ApiError;
use crate::pipelines::Request;
use crate::store::Project;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const ZEROS: &str = crate::pipelines::ZERO_SHA;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn refused(app: &Shared) -> ApiError {
    Metrics::inc(&app.metrics.webhooks_refused, 1);
    ApiError::Unauthorized
}

fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the payload is not JSON: {e}")))
}

fn s(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().map(str::to_string)
}

/// What an event asks for, in forge-neutral terms.
enum Event {
    Push {
        git_ref: String,
        is_tag: bool,
        sha: String,
        before: String,
    },
    MergeRequest {
        iid: i64,
        source: String,
        target: String,
        sha: String,
        title: String,
    },
    Ignored(String),
}

fn push_event(payload: &Value) -> Event {
    let full_ref = s(payload, &["ref"]).unwrap_or_default();
    let sha = s(payload, &["checkout_sha"])
        .filter(|x| !x.is_empty())
        .or_else(|| s(payload, &["after"]))
        .unwrap_or_default();
    if sha.is_empty() || sha == ZEROS {
        return Event::Ignored(format!("{full_ref} was deleted"));
    }
    let (git_ref, is_tag) = if let Some(b) = full_ref.strip_prefix("refs/heads/") {
        (b.to_string(), false)
    } else if let Some(t) = full_ref.strip_prefix("refs/tags/") {
        (t.to_string(), true)
    } else {
        return Event::Ignored(format!("ref `{full_ref}` is neither a branch nor a tag"));
    };
    Event::Push {
        git_ref,
        is_tag,
        sha,
        before: s(payload, &["before"]).unwrap_or_else(|| ZEROS.into()),
    }
}

async fn run(app: &Shared, project: &Project, event: Event) -> Result<Response, ApiError> {
    Metrics::inc(&app.metrics.webhooks, 1);
    let req = match event {
        Event::Ignored(why) => {
            return Ok((
                StatusCode::OK,
                Json(json!({"message": format!("ignored: {why}")})),
            )
                .into_response());
        }
        Event::Push {
            git_ref,
            is_tag,
            sha,
            before,
        } => Request::push(git_ref, is_tag, sha, before),
        Event::MergeRequest {
            iid,
            source,
            target,
            sha,
            title,
        } => Request {
            predefined: vec![
                ("CI_MERGE_REQUEST_IID".into(), iid.to_string()),
                ("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME".into(), source.clone()),
                ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME".into(), target),
                ("CI_MERGE_REQUEST_TITLE".into(), title),
                ("CI_MERGE_REQUEST_SOURCE_BRANCH_SHA".into(), sha.clone()),
                ("CI_MERGE_REQUEST_EVENT_TYPE".into(), "detached".into()),
            ],
            git_ref: source,
            sha: Some(sha),
            is_tag: Some(false),
            source: "merge_request_event".into(),
            fetch: true,
            ..Default::default()
        },
    };
    let pipeline = crate::pipelines::create(app, project, req)
        .await
        .map_err(create_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"pipeline_id": pipeline.id, "status": pipeline.status})),
    )
        .into_response())
}

/// GitLab's format: the secret in `X-Gitlab-Token`.
pub async fn gitlab(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let project = find_project(&app, &id).await?;
    let token = header(&headers, "x-gitlab-token").ok_or_else(|| refused(&app))?;
    if !crypto::constant_time_eq(token.as_bytes(), project.webhook_secret.as_bytes()) {
        return Err(refused(&app));
    }
    let payload = parse(&body)?;
    let kind = header(&headers, "x-gitlab-event")
        .map(str::to_string)
        .or_else(|| s(&payload, &["object_kind"]))
        .unwrap_or_default();
    let event = match kind.as_str() {
        "Push Hook" | "Tag Push Hook" | "push" | "tag_push" => push_event(&payload),
        "Merge Request Hook" | "merge_request" => {
            let attrs = payload
                .get("object_attributes")
                .cloned()
                .unwrap_or(Value::Null);
            let action = s(&attrs, &["action"]).unwrap_or_default();
            if matches!(
                action.as_str(),
                "close" | "merge" | "approved" | "unapproved"
            ) {
                Event::Ignored(format!("merge request action `{action}`"))
            } else {
                Event::MergeRequest {
                    iid: attrs.get("iid").and_then(Value::as_i64).unwrap_or(0),
                    source: s(&attrs, &["source_branch"]).unwrap_or_default(),
                    target: s(&attrs, &["target_branch"]).unwrap_or_default(),
                    sha: s(&attrs, &["last_commit", "id"]).unwrap_or_default(),
                    title: s(&attrs, &["title"]).unwrap_or_default(),
                }
            }
        }
        other => Event::Ignored(format!("event `{other}`")),
    };
    run(&app, &project, event).await
}

fn pull_request(payload: &Value) -> Event {
    let action = s(payload, &["action"]).unwrap_or_default();
    if !matches!(
        action.as_str(),
        "opened" | "synchronize" | "synchronized" | "reopened"
    ) {
        return Event::Ignored(format!("pull request action `{action}`"));
    }
    let pr = payload.get("pull_request").cloned().unwrap_or(Value::Null);
    Event::MergeRequest {
        iid: pr
            .get("number")
            .or_else(|| payload.get("number"))
            .and_then(Value::as_i64)
            .unwrap_or(0),
        source: s(&pr, &["head", "ref"]).unwrap_or_default(),
        target: s(&pr, &["base", "ref"]).unwrap_or_default(),
        sha: s(&pr, &["head", "sha"]).unwrap_or_default(),
        title: s(&pr, &["title"]).unwrap_or_default(),
    }
}

/// GitHub's format: HMAC-SHA256 of the body in `X-Hub-Signature-256`.
pub async fn github(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let project = find_project(&app, &id).await?;
    let sig = header(&headers, "x-hub-signature-256").ok_or_else(|| refused(&app))?;
    if !crypto::verify_hmac_sha256(&project.webhook_secret, &body, sig) {
        return Err(refused(&app));
    }
    let payload = parse(&body)?;
    let event = match header(&headers, "x-github-event").unwrap_or("") {
        "push" => push_event(&payload),
        "pull_request" => pull_request(&payload),
        other => Event::Ignored(format!("event `{other}`")),
    };
    run(&app, &project, event).await
}

/// Gitea's format: HMAC-SHA256 of the body, hex, in `X-Gitea-Signature`.
pub async fn gitea(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let project = find_project(&app, &id).await?;
    let sig = header(&headers, "x-gitea-signature").ok_or_else(|| refused(&app))?;
    if !crypto::verify_hmac_sha256(&project.webhook_secret, &body, sig) {
        return Err(refused(&app));
    }
    let payload = parse(&body)?;
    let event = match header(&headers, "x-gitea-event").unwrap_or("") {
        "push" => push_event(&payload),
        "pull_request" => pull_request(&payload),
        other => Event::Ignored(format!("event `{other}`")),
    };
    run(&app, &project, event).await
}
