//! Stopping environments (`environment:on_stop`, `environment:auto_stop_in`):
//! a successful deploy remembers its pipeline's stop job and when to stop;
//! stopping (API, dashboard, sweeper) plays that job through
//! [`crate::actions::play`] and the environment is `stopping` until it
//! succeeds, then `stopped` (at once without a stop job, or when forced).
//! Stops nobody asked for (auto-stop, stale environments) act as the
//! deployer, or the system bot when the deploying pipeline had no user.
//! Explicit protection rules also gate automatic deploy jobs
//! ([`automatic_deploy_allowed`]).

use crate::actions::ActionError;
use crate::app::Shared;
use crate::error::StoreError;
use crate::store::{Environment, Job, Pipeline, Role, Store, User};
use crate::store_dashboard::DashboardStore;

/// The environment queries this module adds to [`Store`].
pub struct EnvironmentStore<'a>(pub &'a Store);

const COLUMNS: &str =
    "id, project_id, name, url, tier, state, created_at, stop_job_id, auto_stop_at";

impl EnvironmentStore<'_> {
    pub async fn environment(&self, id: i64) -> Result<Option<Environment>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM environments WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.0.db.pool)
        .await?)
    }

    /// Available environments whose auto-stop time is at or before `now`.
    pub async fn due(&self, now: i64) -> Result<Vec<Environment>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM environments WHERE state = 'available' \
             AND auto_stop_at IS NOT NULL AND auto_stop_at <= $1 ORDER BY id"
        )))
        .bind(now)
        .fetch_all(&self.0.db.pool)
        .await?)
    }

    /// Available environments of `project_id` neither created nor deployed
    /// to at or after `before` (ms), oldest first.
    pub async fn stale(
        &self,
        project_id: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<Environment>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM environments e WHERE project_id = $1 AND state = 'available' \
             AND created_at < $2 AND NOT EXISTS (SELECT 1 FROM deployments d \
             WHERE d.environment_id = e.id AND (d.created_at >= $2 OR d.finished_at >= $2)) \
             ORDER BY id LIMIT $3"
        )))
        .bind(project_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.0.db.pool)
        .await?)
    }

    /// After a successful deploy: the stop job and auto-stop time it set
    /// (GitLab replaces both with each deploy).
    pub async fn set_stop(
        &self,
        project_id: i64,
        name: &str,
        stop_job_id: Option<i64>,
        auto_stop_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let _w = self.0.db.write_lock().await;
        sqlx::query(
            "UPDATE environments SET stop_job_id = $1, auto_stop_at = $2 WHERE project_id = $3 AND name = $4",
        )
        .bind(stop_job_id)
        .bind(auto_stop_at)
        .bind(project_id)
        .bind(name)
        .execute(&self.0.db.pool)
        .await?;
        Ok(())
    }

    pub async fn set_stop_job(&self, id: i64, job_id: i64) -> Result<(), StoreError> {
        let _w = self.0.db.write_lock().await;
        sqlx::query("UPDATE environments SET stop_job_id = $1 WHERE id = $2")
            .bind(job_id)
            .bind(id)
            .execute(&self.0.db.pool)
            .await?;
        Ok(())
    }

    /// Moves `id` from `from` to `to`; false when it was not in `from`.
    pub async fn transition(&self, id: i64, from: &str, to: &str) -> Result<bool, StoreError> {
        let _w = self.0.db.write_lock().await;
        let r = sqlx::query(
            "UPDATE environments SET state = $1, \
             auto_stop_at = CASE WHEN $1 = 'stopped' THEN NULL ELSE auto_stop_at END \
             WHERE id = $2 AND state = $3",
        )
        .bind(to)
        .bind(id)
        .bind(from)
        .execute(&self.0.db.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The `stopping` environment `name` of `project_id` becomes `stopped`.
    async fn stopped(&self, project_id: i64, name: &str) -> Result<(), StoreError> {
        let _w = self.0.db.write_lock().await;
        sqlx::query(
            "UPDATE environments SET state = 'stopped', auto_stop_at = NULL \
             WHERE project_id = $1 AND name = $2 AND state = 'stopping'",
        )
        .bind(project_id)
        .bind(name)
        .execute(&self.0.db.pool)
        .await?;
        Ok(())
    }
}

/// Called when a deploy job of `pipeline` to `env` succeeded: remembers its
/// `on_stop` job (the newest of that name in the pipeline) and auto-stop time.
pub async fn deployed(
    app: &Shared,
    job: &Job,
    env: &str,
    pipeline: &Pipeline,
    finished_at: i64,
) -> Result<(), StoreError> {
    let spec = crate::engine_bridge::spec(job).and_then(|s| s.environment);
    let on_stop = spec.as_ref().and_then(|e| e.on_stop.clone());
    let auto_stop_at = spec
        .as_ref()
        .and_then(|e| e.auto_stop_in.as_deref())
        .filter(|t| !t.trim().eq_ignore_ascii_case("never"))
        .and_then(gantry_config::compose::parse_duration)
        .map(|s| finished_at.saturating_add((s as i64).saturating_mul(1000)));
    let stop_job_id = match on_stop {
        Some(name) => app
            .store
            .pipeline_jobs(pipeline.id, false)
            .await?
            .into_iter()
            .filter(|j| j.name == name)
            .map(|j| j.id)
            .max(),
        None => None,
    };
    EnvironmentStore(&app.store)
        .set_stop(job.project_id, env, stop_job_id, auto_stop_at)
        .await
}

/// Called when a job finished: a successful `action: stop` job ends its
/// environment's `stopping` (matched by name, so a retried stop job counts
/// too). A failed one leaves it `stopping`, as GitLab does; stopping again
/// plays the job again.
pub async fn job_finished(app: &Shared, job: &Job, status: &str) -> Result<(), StoreError> {
    let Some(env) = job.environment.as_deref() else {
        return Ok(());
    };
    let stops = crate::engine_bridge::spec(job)
        .and_then(|s| s.environment)
        .is_some_and(|e| e.action.as_deref() == Some("stop"));
    if status == "success" && stops {
        EnvironmentStore(&app.store)
            .stopped(job.project_id, env)
            .await?;
    }
    Ok(())
}

/// How a stop treats the environment's `on_stop` job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Play the stop job (the environment is `stopping` until it succeeds).
    RunOnStop,
    /// GitLab's `force`: `stopped` at once, the stop job is not run.
    Force,
}

/// Stops `env` as `user`: plays its stop job (`stopping`) or, without one
/// or with [`StopMode::Force`], marks it `stopped`. Answers the
/// environment afterwards.
pub async fn stop(
    app: &Shared,
    env: &Environment,
    user: &User,
    mode: StopMode,
) -> Result<Environment, ActionError> {
    let store = EnvironmentStore(&app.store);
    let user = &crate::members::in_project(&app.store, user.clone(), env.project_id).await?;
    // Also without a stop job (`play` checks the role of one that exists).
    if !user.role().allows(Role::Developer) {
        return Err(ActionError::Forbidden(format!(
            "your role ({}) cannot stop environments; it needs developer or above",
            user.role
        )));
    }
    if env.state == "stopped" {
        return Err(ActionError::WrongState(format!(
            "the environment `{}` is already stopped",
            env.name
        )));
    }
    let stop_job = match (mode, env.stop_job_id) {
        (StopMode::RunOnStop, Some(id)) => app.store.job(id).await?,
        _ => None,
    };
    match stop_job {
        Some(job) => {
            // `stopping` before the job can run, so its success finds it.
            if !store.transition(env.id, &env.state, "stopping").await? {
                return Err(ActionError::WrongState(
                    "the environment changed meanwhile; reload and try again".into(),
                ));
            }
            match crate::actions::play(app, &job, user).await {
                Ok(played) => {
                    // A finished stop job plays again as a new row.
                    store.set_stop_job(env.id, played.id).await?;
                }
                Err(e) => {
                    store.transition(env.id, "stopping", &env.state).await?;
                    return Err(e);
                }
            }
        }
        None => {
            if !store.transition(env.id, &env.state, "stopped").await? {
                return Err(ActionError::WrongState(
                    "the environment changed meanwhile; reload and try again".into(),
                ));
            }
        }
    }
    Ok(store
        .environment(env.id)
        .await?
        .unwrap_or_else(|| env.clone()))
}

/// Stops `env` without a person asking (auto-stop, stale environments), as
/// GitLab does: as the user of its stop job (who deployed), or the system
/// bot when that pipeline had none (a webhook's or a poll's push).
pub async fn stop_unattended(app: &Shared, env: &Environment) -> Result<(), ActionError> {
    let job = match env.stop_job_id {
        Some(id) => app.store.job(id).await?,
        None => None,
    };
    let Some(job) = job else {
        // Nothing to run, so nobody to run it as.
        if !EnvironmentStore(&app.store)
            .transition(env.id, &env.state, "stopped")
            .await?
        {
            return Err(ActionError::WrongState(
                "the environment changed meanwhile".into(),
            ));
        }
        return Ok(());
    };
    let user = match job.user_id {
        Some(id) => app.store.user(id).await?,
        None => None,
    };
    let user = match user {
        Some(user) => user,
        None => DashboardStore(&app.store).bot_user().await?,
    };
    stop(app, env, &user, StopMode::RunOnStop).await?;
    Ok(())
}

/// One sweeper pass at `now` (ms): stops every environment whose auto-stop
/// time has passed ([`stop_unattended`]). Answers how many were stopped.
pub async fn stop_due(app: &Shared, now: i64) -> Result<usize, StoreError> {
    let mut stopped = 0;
    for env in EnvironmentStore(&app.store).due(now).await? {
        match stop_unattended(app, &env).await {
            Ok(_) => stopped += 1,
            Err(e) => eprintln!(
                "gantry serve: auto-stop of environment {} ({}): {e}",
                env.id, env.name
            ),
        }
    }
    Ok(stopped)
}

/// GitLab's `POST /projects/:id/environments/stop_stale`: stops (as
/// [`stop_unattended`]) up to `limit` available environments of the
/// project neither created nor deployed to since `before` (ms), except
/// protected ones. Answers the environments it stopped and those it could
/// not stop, with why.
pub async fn stop_stale(
    app: &Shared,
    project_id: i64,
    before: i64,
    limit: usize,
) -> Result<(Vec<Environment>, Vec<(Environment, String)>), StoreError> {
    let mut stopped = Vec::new();
    let mut refused = Vec::new();
    for env in EnvironmentStore(&app.store)
        .stale(project_id, before, limit as i64)
        .await?
    {
        if crate::actions::environment_rule(app, project_id, &env.name)
            .await?
            .is_some()
        {
            continue;
        }
        match stop_unattended(app, &env).await {
            Ok(_) => stopped.push(env),
            Err(ActionError::Store(e)) => return Err(e),
            Err(e) => refused.push((env, e.to_string())),
        }
    }
    Ok((stopped, refused))
}

/// GitLab's failure reason of a job deploying to a protected environment
/// for a user without deploy access.
pub const PROTECTED_ENVIRONMENT_FAILURE: &str = "protected_environment_failure";

/// Whether an automatic job (not played by a person) may start: a job
/// with an `environment` whose project has an explicit protection rule for
/// it needs a job user the rule allows. A pipeline without a user (a
/// webhook's or a poll's push) may not deploy there, as GitLab's runs as
/// the pusher, whom the server does not know. The default protection of
/// production-tier names gates manual play only.
pub async fn automatic_deploy_allowed(app: &Shared, job: &Job) -> Result<bool, StoreError> {
    let Some(env) = job.environment.as_deref() else {
        return Ok(true);
    };
    let Some(rule) = crate::actions::explicit_rule(app, job.project_id, env).await? else {
        return Ok(true);
    };
    let user = match job.user_id {
        Some(id) => app.store.user(id).await?,
        None => None,
    };
    let Some(user) = user else {
        return Ok(false);
    };
    let user = crate::members::in_project(&app.store, user, job.project_id).await?;
    Ok(rule.allows(&user))
}
