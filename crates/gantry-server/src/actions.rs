//! Job actions shared by the API and the dashboard (play, retry, cancel):
//! one rule for who may do what, one sequence of store writes, and the
//! approval of a deploy to a protected environment recorded whichever door
//! it came through.

use crate::app::Shared;
use crate::error::StoreError;
use crate::store::{Job, Role, User};
use crate::store_dashboard::DashboardStore;

/// Why an action was not done.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The user's role does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// The job is in a state the action does not apply to.
    #[error("{0}")]
    WrongState(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Environments whose deployments need an approver (maintainer or admin):
/// the production tier, as the server names tiers.
pub fn is_protected_environment(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("prod") || n == "live"
}

/// The job's protected environment, if it deploys to one.
pub fn protected_environment(job: &Job) -> Option<&str> {
    job.environment
        .as_deref()
        .filter(|e| is_protected_environment(e))
}

/// Developers act on jobs; a job deploying to a protected environment
/// needs an approver.
fn check_role(user: &User, job: &Job) -> Result<(), ActionError> {
    let needed = if protected_environment(job).is_some() {
        Role::Maintainer
    } else {
        Role::Developer
    };
    if user.role().allows(needed) {
        return Ok(());
    }
    Err(ActionError::Forbidden(match protected_environment(job) {
        Some(env) => format!(
            "deploying to the protected environment `{env}` needs an approver (maintainer or admin); you are {}",
            user.role
        ),
        None => format!(
            "your role ({}) cannot do this; it needs {} or above",
            user.role,
            needed.as_str()
        ),
    }))
}

/// Plays a manual or delayed job (or runs a finished one again). Answers
/// the job that will run. The approval of a protected deploy is recorded.
pub async fn play(app: &Shared, job: &Job, user: &User) -> Result<Job, ActionError> {
    check_role(user, job)?;
    let verb = if protected_environment(job).is_some() {
        "approved"
    } else {
        "played"
    };
    // A trigger job is not a runner's: the server creates its child.
    let to = crate::children::start_status(job);
    let runs = match job.status.as_str() {
        "manual" | "scheduled" => {
            let reason = format!("{verb} by {}", user.username);
            if !app
                .store
                .transition(job.id, &job.status, to, Some(&reason))
                .await?
            {
                return Err(ActionError::WrongState(
                    "the job changed meanwhile; reload and try again".into(),
                ));
            }
            job.clone()
        }
        s if crate::store::is_finished(s) && job.retried == 0 => {
            app.store.retry_job(job, to, Some(user.id)).await?
        }
        s => {
            return Err(ActionError::WrongState(format!(
                "a {s} job cannot be played"
            )));
        }
    };
    if let Some(env) = protected_environment(job) {
        DashboardStore(&app.store)
            .record_approval(job, user, env)
            .await?;
    }
    app.queue.notify_waiters();
    crate::queue::advance_pipeline(app, job.pipeline_id).await?;
    if to == "running" {
        crate::children::spawn_start(app.clone(), runs.id);
    }
    Ok(runs)
}

/// Retries a finished job as a new job row; answers the new one.
pub async fn retry(app: &Shared, job: &Job, user: &User) -> Result<Job, ActionError> {
    check_role(user, job)?;
    if !matches!(job.status.as_str(), "failed" | "canceled" | "success") || job.retried != 0 {
        return Err(ActionError::WrongState(format!(
            "a {} job cannot be retried",
            job.status
        )));
    }
    let to = crate::children::start_status(job);
    let new = app.store.retry_job(job, to, Some(user.id)).await?;
    app.queue.notify_waiters();
    crate::queue::advance_pipeline(app, job.pipeline_id).await?;
    if to == "running" {
        crate::children::spawn_start(app.clone(), new.id);
    }
    Ok(new)
}

/// Cancels a job that has not finished (a finished one is left as is).
pub async fn cancel(app: &Shared, job: &Job, user: &User) -> Result<(), ActionError> {
    if !user.role().allows(Role::Developer) {
        return Err(ActionError::Forbidden(format!(
            "your role ({}) cannot cancel jobs",
            user.role
        )));
    }
    app.store
        .cancel_job(job.id, &format!("canceled by {}", user.username))
        .await?;
    crate::queue::advance_pipeline(app, job.pipeline_id).await?;
    Ok(())
}
