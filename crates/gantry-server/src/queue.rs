//! The queue: moves stored jobs through their states with the engine's
//! rules ([`crate::engine_bridge`]) and keeps time-driven work going:
//! delayed jobs, `resource_group` hand-over, lost runners, schedules.
//! Everything it decides is a conditional row update, so several server
//! processes may run it at once.

use crate::app::{Metrics, Shared};
use crate::engine_bridge::{self, AfterAttempt, Step};
use crate::error::StoreError;
use crate::now_ms;
use crate::store::Job;
use std::time::Duration;

/// Starts the background loop.
pub fn spawn(app: Shared) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = tick(&app).await {
                eprintln!("gantry serve: queue: {e}");
            }
            tokio::select! {
                _ = app.advance.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    });
}

/// One pass over everything time- or event-driven.
pub async fn tick(app: &Shared) -> Result<(), StoreError> {
    sweep_lost_runners(app).await?;
    start_due_delayed_jobs(app).await?;
    for id in app.store.active_pipeline_ids().await? {
        advance_pipeline(app, id).await?;
    }
    crate::schedules::run_due(app).await;
    Ok(())
}

/// Decides what can be decided in one pipeline, then stores its status.
pub async fn advance_pipeline(app: &Shared, pipeline_id: i64) -> Result<(), StoreError> {
    let Some(pipeline) = app.store.pipeline(pipeline_id).await? else {
        return Ok(());
    };
    let planned = app.planned(&pipeline)?;
    let mut enqueued = false;
    loop {
        let jobs = app.store.pipeline_job_states(pipeline_id).await?;
        let steps = engine_bridge::next_steps(&planned, &jobs).map_err(StoreError::Corrupt)?;
        let mut changed = false;
        for step in steps {
            let Some(job) = jobs.iter().find(|j| match &step {
                Step::Enqueue(id) | Step::Delay(id, _) | Step::Finish(id, _, _) => j.id == *id,
            }) else {
                continue;
            };
            match step {
                Step::Enqueue(id) => {
                    // A resource group admits one job at a time across pipelines.
                    let busy = match &job.resource_group {
                        Some(g) => app.store.resource_group_busy(job.project_id, g).await?,
                        None => false,
                    };
                    let to = if busy {
                        "waiting_for_resource"
                    } else {
                        "pending"
                    };
                    if job.status != to && app.store.transition(id, &job.status, to, None).await? {
                        changed = true;
                        enqueued |= !busy;
                    }
                }
                Step::Delay(id, seconds) => {
                    changed |= app
                        .store
                        .schedule_job(id, now_ms() + seconds as i64 * 1000)
                        .await?;
                }
                Step::Finish(id, status, reason) => {
                    changed |= app
                        .store
                        .transition(id, &job.status, status, reason.as_deref())
                        .await?;
                }
            }
        }
        if !changed {
            app.store
                .set_pipeline_status(pipeline_id, engine_bridge::pipeline_status(&planned, &jobs))
                .await?;
            break;
        }
    }
    if enqueued {
        app.queue.notify_waiters();
    }
    Ok(())
}

async fn start_due_delayed_jobs(app: &Shared) -> Result<(), StoreError> {
    let now = now_ms();
    for job in app.store.jobs_with_status("scheduled").await? {
        if job.scheduled_at.is_some_and(|at| at <= now)
            && app
                .store
                .transition(job.id, "scheduled", "pending", Some("start_in elapsed"))
                .await?
        {
            app.queue.notify_waiters();
        }
    }
    Ok(())
}

/// Running jobs whose runner stopped heartbeating fail "runner lost" and
/// are retried per `retry` (a runner system failure).
async fn sweep_lost_runners(app: &Shared) -> Result<(), StoreError> {
    let before = now_ms() - app.config.runner_timeout.as_millis() as i64;
    for job in app.store.lost_jobs(before).await? {
        eprintln!(
            "gantry serve: job {} ({}) failed: runner lost",
            job.id, job.name
        );
        attempt_ended(app, &job, "failed", Some(RUNNER_LOST), None, None).await?;
    }
    Ok(())
}

/// The failure reason of a job whose runner stopped heartbeating.
pub const RUNNER_LOST: &str = "runner lost";

/// An attempt ended (reported by its runner, or its runner was lost): the
/// state machine says whether it is retried; the row, the log, a
/// deployment and the pipeline follow. Returns false when the job was no
/// longer running (canceled meanwhile, or already ended).
pub async fn attempt_ended(
    app: &Shared,
    job: &Job,
    state: &str,
    failure: Option<&str>,
    exit_code: Option<i64>,
    dotenv: Option<&str>,
) -> Result<bool, StoreError> {
    let Some(pipeline) = app.store.pipeline(job.pipeline_id).await? else {
        return Ok(false);
    };
    let planned = app.planned(&pipeline)?;
    let rows = app.store.pipeline_job_states(job.pipeline_id).await?;
    let after = engine_bridge::attempt_finished(&planned, &rows, job, state, failure, exit_code);
    let status = match &after {
        AfterAttempt::Retry => "failed",
        AfterAttempt::Done(s) => s,
    };
    if !app
        .store
        .finish_job(job.id, status, failure, exit_code, dotenv)
        .await?
    {
        return Ok(false);
    }
    Metrics::inc(&app.metrics.jobs_finished, 1);
    app.logs
        .finish(job.id)
        .await
        .map_err(|e| StoreError::Config(e.to_string()))?;
    if after == AfterAttempt::Retry {
        let retry = app.store.retry_job(job, "pending", None).await?;
        eprintln!(
            "gantry serve: job {} ({}) failed ({}); retried as job {} (attempt {})",
            job.id,
            job.name,
            failure.unwrap_or("script_failure"),
            retry.id,
            retry.attempt
        );
        app.queue.notify_waiters();
    }
    if let Some(env) = &job.environment {
        let e = engine_bridge::spec(job).and_then(|s| s.environment);
        let deploys = e
            .as_ref()
            .and_then(|e| e.action.as_deref())
            .is_none_or(|a| a == "start");
        if deploys && after != AfterAttempt::Retry {
            let url = e.as_ref().and_then(|e| e.url.clone());
            let tier = e
                .as_ref()
                .and_then(|e| e.deployment_tier.clone())
                .unwrap_or_else(|| tier_of(env).into());
            app.store
                .record_deployment(
                    job.project_id,
                    env,
                    url.as_deref(),
                    &tier,
                    job.id,
                    &pipeline,
                    status,
                    job.user_id,
                )
                .await?;
        }
    }
    advance_pipeline(app, job.pipeline_id).await?;
    Ok(true)
}

/// GitLab's guess of an environment's tier from its name.
fn tier_of(name: &str) -> &'static str {
    let n = name.to_ascii_lowercase();
    if n.starts_with("prod") || n == "live" {
        "production"
    } else if n.starts_with("stag") || n.starts_with("pre") {
        "staging"
    } else if n.starts_with("test") || n.starts_with("qa") {
        "testing"
    } else if n.starts_with("dev") || n.starts_with("review") {
        "development"
    } else {
        "other"
    }
}

/// Cancels every unfinished job of a pipeline.
pub async fn cancel_pipeline(
    app: &Shared,
    pipeline_id: i64,
    reason: &str,
) -> Result<(), StoreError> {
    for job in app.store.pipeline_jobs(pipeline_id, false).await? {
        if !job.is_finished() {
            app.store.cancel_job(job.id, reason).await?;
        }
    }
    advance_pipeline(app, pipeline_id).await
}

/// Retries every failed or canceled job of a pipeline.
pub async fn retry_pipeline(
    app: &Shared,
    pipeline_id: i64,
    user_id: Option<i64>,
) -> Result<(), StoreError> {
    for job in app.store.pipeline_jobs(pipeline_id, false).await? {
        if matches!(job.status.as_str(), "failed" | "canceled") {
            app.store.retry_job(&job, "created", user_id).await?;
        }
    }
    // Jobs that were skipped because of the failure are decided again.
    for job in app.store.pipeline_jobs(pipeline_id, false).await? {
        if job.status == "skipped" {
            app.store.retry_job(&job, "created", user_id).await?;
        }
    }
    advance_pipeline(app, pipeline_id).await
}
