//! Job actions shared by the API and the dashboard (play, retry, cancel):
//! one rule for who may do what, one sequence of store writes, and the
//! approval of a deploy to a protected environment recorded whichever door
//! it came through.

use crate::app::Shared;
use crate::error::StoreError;
use crate::store::{Job, Role, User};
use crate::store_dashboard::{DashboardStore, ProtectedEnvironment};

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

/// Environments protected by default (no rule for the project): the
/// production tier, as the server names tiers; they need a maintainer.
pub fn is_protected_environment(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("prod") || n == "live"
}

/// Who may deploy to a protected environment (play or retry its jobs).
#[derive(Clone, Debug)]
pub struct DeployRule {
    pub environment: String,
    /// The role that is enough; `None`: only the named approvers (and admins).
    pub role: Option<Role>,
    pub approvers: Vec<String>,
    /// Distinct approvals a manual deploy needs before it runs (GitLab's
    /// `required_approval_count`; 0 or 1: the play is the approval).
    pub required_approvals: i64,
}

impl DeployRule {
    /// The rule a project set for `env`.
    pub fn of(env: &str, rule: &ProtectedEnvironment) -> DeployRule {
        DeployRule {
            environment: env.to_string(),
            role: Role::parse(&rule.required_role),
            approvers: rule
                .approver_names()
                .into_iter()
                .map(String::from)
                .collect(),
            required_approvals: rule.required_approval_count,
        }
    }

    /// The default rule of production-tier names: a maintainer.
    pub fn default_for(env: &str) -> DeployRule {
        DeployRule {
            environment: env.to_string(),
            role: Some(Role::Maintainer),
            approvers: Vec::new(),
            required_approvals: 0,
        }
    }

    /// Administrators always may.
    pub fn allows(&self, user: &User) -> bool {
        user.role() == Role::Admin
            || self.role.is_some_and(|r| user.role().allows(r))
            || self.approvers.contains(&user.username)
    }

    /// "a maintainer or admin", "one of alice, bob (or an admin)", …
    pub fn who(&self) -> String {
        let mut parts = Vec::new();
        if let Some(role) = self.role.filter(|r| *r != Role::Admin) {
            parts.push(format!("a {} or above", role.as_str()));
        }
        if !self.approvers.is_empty() {
            parts.push(self.approvers.join(", "));
        }
        parts.push("an admin".into());
        let who = parts.join(" or ");
        if self.required_approvals > 1 {
            format!("{who}; {} approvals", self.required_approvals)
        } else {
            who
        }
    }
}

/// A checked rule for `name` of `project_id`: a known role (or none) and
/// existing approvers, at least one of the two. The problems otherwise.
pub async fn new_rule(
    app: &Shared,
    project_id: i64,
    name: &str,
    role: Option<&str>,
    approvers: &[String],
    required_approvals: i64,
    by: &User,
) -> Result<Result<ProtectedEnvironment, Vec<String>>, StoreError> {
    let mut problems = Vec::new();
    let name = name.trim();
    if name.is_empty() || name.len() > 255 {
        problems.push("the environment name must be 1 to 255 characters".to_string());
    }
    let role = role.map(str::trim).filter(|r| !r.is_empty());
    if let Some(role) = role
        && !matches!(role, "developer" | "maintainer" | "admin")
    {
        problems.push(format!(
            "unknown role `{role}`: use developer, maintainer or admin (or none with named approvers)"
        ));
    }
    // GitLab's range for `required_approval_count`.
    if !(0..=5).contains(&required_approvals) {
        problems.push(format!(
            "required approvals must be 0 to 5, not {required_approvals}"
        ));
    }
    if role.is_none() && approvers.is_empty() {
        problems.push("give a role or at least one approver".into());
    }
    // The system bot approves nothing.
    let known: Vec<String> = DashboardStore(&app.store)
        .users()
        .await?
        .into_iter()
        .filter(|u| !u.is_bot())
        .map(|u| u.username)
        .collect();
    let unknown: Vec<&str> = approvers
        .iter()
        .filter(|a| !known.contains(a))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        problems.push(format!("no such user: {}", unknown.join(", ")));
    }
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    Ok(Ok(ProtectedEnvironment {
        project_id,
        name: name.to_string(),
        required_role: role.unwrap_or_default().to_string(),
        approvers: approvers.join(","),
        created_by: by.username.clone(),
        created_at: crate::now_ms(),
        required_approval_count: required_approvals,
    }))
}

/// The project's own rule for environment `env`
/// (dashboard_protected_environments, or GitLab's API), if any.
pub async fn explicit_rule(
    app: &Shared,
    project_id: i64,
    env: &str,
) -> Result<Option<DeployRule>, StoreError> {
    Ok(DashboardStore(&app.store)
        .protected_environment(project_id, env)
        .await?
        .map(|rule| DeployRule::of(env, &rule)))
}

/// The rule of environment `env`, if it is protected: the project's own
/// rule, else the default for production-tier names.
pub async fn environment_rule(
    app: &Shared,
    project_id: i64,
    env: &str,
) -> Result<Option<DeployRule>, StoreError> {
    if let Some(rule) = explicit_rule(app, project_id, env).await? {
        return Ok(Some(rule));
    }
    Ok(is_protected_environment(env).then(|| DeployRule::default_for(env)))
}

/// The rule of the environment the job deploys to, if it is protected
/// ([`environment_rule`]).
pub async fn deploy_rule(app: &Shared, job: &Job) -> Result<Option<DeployRule>, StoreError> {
    match job.environment.as_deref() {
        Some(env) => environment_rule(app, job.project_id, env).await,
        None => Ok(None),
    }
}

/// Developers act on jobs; a job deploying to a protected environment
/// needs someone its rule allows. Answers the rule, if any.
async fn check_role(
    app: &Shared,
    user: &User,
    job: &Job,
) -> Result<Option<DeployRule>, ActionError> {
    let user = &crate::members::in_project(&app.store, user.clone(), job.project_id).await?;
    let rule = deploy_rule(app, job).await?;
    match &rule {
        Some(rule) if !rule.allows(user) => Err(ActionError::Forbidden(format!(
            "deploying to the protected environment `{}` needs an approver ({}); you are {} ({})",
            rule.environment,
            rule.who(),
            user.username,
            user.role
        ))),
        None if !user.role().allows(Role::Developer) => Err(ActionError::Forbidden(format!(
            "your role ({}) cannot do this; it needs developer or above",
            user.role
        ))),
        _ => Ok(rule),
    }
}

/// Plays a manual or delayed job (or runs a finished one again). Answers
/// the job that will run. The approval of a protected deploy is recorded.
pub async fn play(app: &Shared, job: &Job, user: &User) -> Result<Job, ActionError> {
    let rule = check_role(app, user, job).await?;
    let verb = if rule.is_some() { "approved" } else { "played" };
    // A trigger job is not a runner's: the server creates its child.
    let to = crate::children::start_status(job);
    let runs = match job.status.as_str() {
        "manual" | "scheduled"
            if rule.as_ref().is_some_and(|r| r.required_approvals > 1)
                && !approved_enough(app, job, user, rule.as_ref()).await? =>
        {
            // Recorded; the job waits for the other approvers.
            return Ok(job.clone());
        }
        "manual" | "scheduled" => {
            let reason = format!("{verb} by {}", user.username);
            if !app
                .store
                .transition_played(job.id, &job.status, to, &reason, user.id)
                .await?
            {
                return Err(ActionError::WrongState(
                    "the job changed meanwhile; reload and try again".into(),
                ));
            }
            if to == "running" {
                // Before its downstream pipeline is created (below): it is
                // the player's.
                app.store.set_trigger_job_user(job.id, user.id).await?;
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
    if let Some(rule) = rule.as_ref().filter(|r| r.required_approvals <= 1) {
        DashboardStore(&app.store)
            .record_approval(job, user, &rule.environment)
            .await?;
    }
    app.queue.notify_waiters();
    crate::queue::advance_pipeline(app, job.pipeline_id).await?;
    if to == "running" {
        crate::children::spawn_start(app.clone(), runs.id);
    }
    Ok(runs)
}

/// With several approvals required: records `user`'s approval of `job`
/// (once per person) and answers whether the job now has enough distinct
/// approvals to run.
async fn approved_enough(
    app: &Shared,
    job: &Job,
    user: &User,
    rule: Option<&DeployRule>,
) -> Result<bool, ActionError> {
    let Some(rule) = rule else { return Ok(true) };
    let dash = DashboardStore(&app.store);
    let before = approvers_of(app, job.id).await?;
    if before.contains(&user.username) {
        return Err(ActionError::WrongState(format!(
            "you already approved this deployment ({} of {} approvals); it needs another approver",
            before.len(),
            rule.required_approvals
        )));
    }
    dash.record_approval(job, user, &rule.environment).await?;
    Ok(approvers_of(app, job.id).await?.len() as i64 >= rule.required_approvals)
}

/// The distinct users who approved `job_id`, in order.
pub async fn approvers_of(app: &Shared, job_id: i64) -> Result<Vec<String>, StoreError> {
    let mut names: Vec<String> = Vec::new();
    for a in DashboardStore(&app.store).approvals(&[job_id]).await? {
        if !names.contains(&a.username) {
            names.push(a.username);
        }
    }
    Ok(names)
}

/// Retries a finished job as a new job row; answers the new one.
pub async fn retry(app: &Shared, job: &Job, user: &User) -> Result<Job, ActionError> {
    check_role(app, user, job).await?;
    if !matches!(job.status.as_str(), "failed" | "canceled" | "success") || job.retried != 0 {
        return Err(ActionError::WrongState(format!(
            "a {} job cannot be retried",
            job.status
        )));
    }
    // GitLab's `Ci::Bridge#retryable?`: a retry would fail the same way.
    if let Some(reason) = job.failure_reason.as_deref().filter(|r| {
        [
            crate::children::PIPELINE_LOOP_DETECTED,
            crate::children::MAX_DESCENDANTS_DEPTH,
        ]
        .contains(r)
    }) {
        return Err(ActionError::WrongState(format!(
            "a trigger job that failed with {reason} cannot be retried"
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
    let user = &crate::members::in_project(&app.store, user.clone(), job.project_id).await?;
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
