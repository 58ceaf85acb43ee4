//! The queue: moves stored jobs through their states with the engine's
//! rules ([`crate::engine_bridge`]) and keeps time-driven work going:
//! delayed jobs, `resource_group` hand-over, lost runners, schedules.
//! Everything it decides is a conditional row update, so several server
//! processes may run it at once.

use crate::app::{Metrics, Shared};
use crate::engine_bridge::{self, Step};
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
    let mut enqueued = false;
    loop {
        let jobs = app.store.pipeline_jobs(pipeline_id, false).await?;
        let steps = engine_bridge::next_steps(&jobs);
        if steps.is_empty() {
            // Jobs waiting for their resource group take it when it frees.
            for job in jobs.iter().filter(|j| j.status == "waiting_for_resource") {
                if let Some(group) = &job.resource_group
                    && !app.store.resource_group_busy(job.project_id, group).await?
                    && app
                        .store
                        .transition(job.id, "waiting_for_resource", "pending", None)
                        .await?
                {
                    enqueued = true;
                }
            }
            let jobs = app.store.pipeline_jobs(pipeline_id, false).await?;
            app.store
                .set_pipeline_status(pipeline_id, engine_bridge::pipeline_status(&jobs))
                .await?;
            break;
        }
        for step in steps {
            match step {
                Step::Enqueue(id) => {
                    let job = jobs.iter().find(|j| j.id == id);
                    let busy = match job.and_then(|j| j.resource_group.as_ref().map(|g| (j, g))) {
                        Some((j, g)) => app.store.resource_group_busy(j.project_id, g).await?,
                        None => false,
                    };
                    let to = if busy {
                        "waiting_for_resource"
                    } else {
                        "pending"
                    };
                    if app.store.transition(id, "created", to, None).await? && !busy {
                        enqueued = true;
                    }
                }
                Step::Manual(id) => {
                    app.store.transition(id, "created", "manual", None).await?;
                }
                Step::Delay(id, delay) => {
                    app.store
                        .schedule_job(id, now_ms() + delay.as_millis() as i64)
                        .await?;
                }
                Step::Skip(id, reason) => {
                    app.store
                        .transition(id, "created", "skipped", Some(&reason))
                        .await?;
                }
            }
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
        if app
            .store
            .finish_job(job.id, "failed", Some("runner lost"), None, None)
            .await?
        {
            let _ = app.logs.finish(job.id).await;
            eprintln!(
                "gantry serve: job {} ({}) failed: runner lost",
                job.id, job.name
            );
            after_failure(app, &job, "runner_system_failure", None).await?;
            advance_pipeline(app, job.pipeline_id).await?;
        }
    }
    Ok(())
}

/// A job ended (reported by its runner): retry, record a deployment,
/// advance the pipeline.
pub async fn job_finished(
    app: &Shared,
    job: &Job,
    status: &str,
    kind: Option<&str>,
    exit_code: Option<i64>,
) -> Result<(), StoreError> {
    Metrics::inc(&app.metrics.jobs_finished, 1);
    if status == "failed" {
        after_failure(app, job, kind.unwrap_or("script_failure"), exit_code).await?;
    }
    if let (Some(env), Some(pipeline)) =
        (&job.environment, app.store.pipeline(job.pipeline_id).await?)
    {
        let spec = engine_bridge::spec(job);
        let e = spec.as_ref().and_then(|s| s.environment.clone());
        let deploys = e
            .as_ref()
            .and_then(|e| e.action.as_deref())
            .is_none_or(|a| a == "start");
        if deploys {
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
    advance_pipeline(app, job.pipeline_id).await
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

async fn after_failure(
    app: &Shared,
    job: &Job,
    kind: &str,
    exit_code: Option<i64>,
) -> Result<(), StoreError> {
    let Some(spec) = engine_bridge::spec(job) else {
        return Ok(());
    };
    if engine_bridge::retry_allowed(&spec, job.attempt, kind, exit_code) {
        let retry = app.store.retry_job(job, "pending", None).await?;
        eprintln!(
            "gantry serve: job {} ({}) failed ({kind}); retried as job {} (attempt {})",
            job.id, job.name, retry.id, retry.attempt
        );
        app.queue.notify_waiters();
    }
    Ok(())
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
