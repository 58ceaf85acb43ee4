//! Polling remotes, as GitLab's pull mirroring does: every `--poll-interval`
//! the server fetches each project's mirror, and every branch or tag whose
//! head moved (or is new) gets a push pipeline for that exact commit, with
//! the previous head as `before` (for `rules:changes`). Deleted refs get
//! none. The first poll of a project compares with the mirror as it was
//! cloned at registration, so existing branches get no pipeline then; with
//! no mirror yet it only records the heads. Pipelines go through the
//! webhook's path ([`crate::pipelines::Request::push`]), auto-cancel
//! included. A commit a webhook already ran on the same ref is skipped.

use crate::app::Shared;
use crate::error::StoreError;
use crate::pipelines::{CreateError, Request, ZERO_SHA};
use crate::repos::RepoError;
use crate::store::Project;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Polls every project every `interval`, forever.
pub fn spawn(app: Shared, interval: Duration) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            poll_all(&app).await;
        }
    });
}

/// One poll of every project; errors are reported and the next project
/// is polled.
pub async fn poll_all(app: &Shared) {
    let projects = match app.store.projects().await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("gantry serve: poll: {e}");
            return;
        }
    };
    for project in projects {
        if let Err(e) = poll_project(app, &project).await {
            eprintln!("gantry serve: poll of {}: {e}", project.path);
        }
    }
}

/// What one poll of a project did.
#[derive(Debug, Default)]
pub struct Polled {
    /// Pipelines created, by ref.
    pub created: Vec<(String, i64)>,
    /// Refs that moved but got no pipeline, and why.
    pub refused: Vec<(String, String)>,
}

/// Fetches one project's remote and creates the pipelines of the refs
/// that moved since the last poll.
pub async fn poll_project(app: &Shared, project: &Project) -> Result<Polled, PollError> {
    let stored = app.store.poll_heads(project.id).await?;
    let mirror_exists = app.repos.mirror_dir(project.id).join("HEAD").exists();
    let (before, version): (Option<BTreeMap<String, String>>, Option<i64>) = match &stored {
        Some((json, version)) => (serde_json::from_str(json).ok(), Some(*version)),
        // First poll: the mirror as registration (or a webhook) left it.
        None if mirror_exists => (Some(app.repos.heads(project.id)?), None),
        None => (None, None),
    };
    crate::pipelines::sync_shared::<PollError>(app, project).await?;
    let after = app.repos.heads(project.id)?;
    let json = serde_json::to_string(&after).unwrap_or_else(|_| "{}".into());
    // Claim this poll first: another server polling at once creates nothing.
    if !app
        .store
        .claim_poll_heads(project.id, version, &json)
        .await?
    {
        return Ok(Polled::default());
    }
    let mut polled = Polled::default();
    let Some(before) = before else {
        return Ok(polled);
    };
    for (full_ref, sha) in &after {
        let old = before.get(full_ref);
        if old == Some(sha) {
            continue;
        }
        let (name, is_tag) = if let Some(b) = full_ref.strip_prefix("refs/heads/") {
            (b, false)
        } else if let Some(t) = full_ref.strip_prefix("refs/tags/") {
            (t, true)
        } else {
            continue;
        };
        if already_ran(app, project, name, sha).await? {
            continue;
        }
        let mut req = Request::push(
            name.to_string(),
            is_tag,
            sha.clone(),
            old.cloned().unwrap_or_else(|| ZERO_SHA.to_string()),
        );
        req.fetch = false;
        match crate::pipelines::create(app, project, req).await {
            Ok(p) => polled.created.push((name.to_string(), p.id)),
            Err(CreateError::Store(e)) => return Err(e.into()),
            Err(e) => {
                eprintln!(
                    "gantry serve: poll of {}: no pipeline for {name} at {}: {e}",
                    project.path,
                    &sha[..sha.len().min(8)]
                );
                polled.refused.push((name.to_string(), e.to_string()));
            }
        }
    }
    Ok(polled)
}

/// Whether a push pipeline (a webhook's) already exists for `sha` on `git_ref`.
async fn already_ran(
    app: &Shared,
    project: &Project,
    git_ref: &str,
    sha: &str,
) -> Result<bool, StoreError> {
    Ok(app
        .store
        .pipelines(project.id, Some(git_ref), None, 20, 0)
        .await?
        .iter()
        .any(|p| p.sha == sha && p.source == "push"))
}
