//! The queue: moves stored jobs through their states with the engine's
//! rules ([`crate::engine_bridge`]) and keeps time-driven work going:
//! delayed jobs, `resource_group` hand-over, lost runners, schedules.
//! Everything it decides is a conditional row update, so several server
//! processes may run it at once.

use crate::app::{Metrics, Shared};
use crate::engine_bridge::{self, AfterAttempt, LiveSchedule, Step};
use crate::error::StoreError;
use crate::now_ms;
use crate::store::{Job, Transition};
use std::collections::HashMap;
use std::sync::Arc;
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

/// The live pipelines' state machines, kept in memory between events
/// ([`LiveSchedule`]): restored from the rows on the first event after the
/// server starts (or restarts after a crash), and again whenever a row
/// changed behind the queue's back. Each pipeline's `state_version` counts
/// the row changes the schedule sees; a live schedule is trusted only while
/// that number is what its own writes made it, so API actions, other server
/// processes and delayed jobs are seen without a rebuild on every event.
#[derive(Default)]
pub struct LivePipelines {
    slots: std::sync::Mutex<HashMap<i64, Arc<tokio::sync::Mutex<Option<Live>>>>>,
}

/// One pipeline's live state machine.
struct Live {
    schedule: LiveSchedule,
    /// The pipeline's `state_version` the schedule reflects.
    version: i64,
    /// A job has been claimed: the pipeline is running (sticky).
    started: bool,
}

impl LivePipelines {
    fn slot(&self, pipeline_id: i64) -> Arc<tokio::sync::Mutex<Option<Live>>> {
        self.slots
            .lock()
            .expect("live pipelines")
            .entry(pipeline_id)
            .or_default()
            .clone()
    }

    fn forget(&self, pipeline_id: i64) {
        self.slots
            .lock()
            .expect("live pipelines")
            .remove(&pipeline_id);
    }

    /// How many pipelines have a schedule in memory (for `/metrics`).
    pub fn len(&self) -> usize {
        self.slots.lock().expect("live pipelines").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The live schedule of a pipeline at `version`: the one in memory when it
/// is current, else rebuilt from the rows.
async fn current(
    app: &Shared,
    pipeline_id: i64,
    version: i64,
    held: Option<Live>,
) -> Result<Option<Live>, StoreError> {
    if let Some(live) = held
        && live.version == version
    {
        return Ok(Some(live));
    }
    if app.store.pipeline_state(pipeline_id).await?.is_none() {
        return Ok(None);
    }
    let planned = app.planned(pipeline_id).await?;
    let rows = app.store.pipeline_job_states(pipeline_id).await?;
    let schedule = LiveSchedule::restore(&planned, &rows).map_err(StoreError::Corrupt)?;
    Metrics::inc(&app.metrics.schedule_restores, 1);
    Ok(Some(Live {
        schedule,
        version,
        started: false,
    }))
}

/// Decides what can be decided in one pipeline, then stores its status.
pub async fn advance_pipeline(app: &Shared, pipeline_id: i64) -> Result<(), StoreError> {
    let slot = app.live.slot(pipeline_id);
    let mut held = slot.lock().await;
    let Some((version, stored_status)) = app.store.pipeline_state(pipeline_id).await? else {
        *held = None;
        app.live.forget(pipeline_id);
        return Ok(());
    };
    let live = held.take();
    advance_held(app, pipeline_id, held, live, version, &stored_status).await
}

/// [`advance_pipeline`] with the pipeline's lock held and its stored
/// state (`version`, `stored_status`) known.
async fn advance_held(
    app: &Shared,
    pipeline_id: i64,
    mut held: tokio::sync::MutexGuard<'_, Option<Live>>,
    live: Option<Live>,
    version: i64,
    stored_status: &str,
) -> Result<(), StoreError> {
    let Some(mut live) = current(app, pipeline_id, version, live).await? else {
        *held = None;
        return Ok(());
    };
    let mut enqueued = false;
    let mut triggered = Vec::new();
    loop {
        let steps = live.schedule.step();
        if steps.is_empty() {
            break;
        }
        // The state machine's view and the rows part (a resource group busy
        // in another pipeline): rebuild on the next event.
        let mut diverged = false;
        // A job failed instead of starting: rebuild from the rows.
        let mut refused = false;
        let mut writes = Vec::with_capacity(steps.len());
        // The rows of the jobs to enqueue, read at once (their environment
        // and user decide whether they may start; their resource group).
        let enqueued_ids: Vec<i64> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Enqueue { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        let mut rows = app.store.jobs_by_id(&enqueued_ids).await?;
        for step in &steps {
            match step {
                Step::Enqueue { id, from } => {
                    let Some(job) = rows.remove(id) else {
                        diverged = true;
                        continue;
                    };
                    if !crate::environments::automatic_deploy_allowed(app, &job).await? {
                        refused |= app
                            .store
                            .fail_unstarted(
                                job.id,
                                from,
                                crate::environments::PROTECTED_ENVIRONMENT_FAILURE,
                            )
                            .await?;
                        diverged = true;
                        continue;
                    }
                    let group = job.resource_group.map(|g| (job.project_id, g));
                    let busy = match group {
                        Some((project, g)) => app.store.resource_group_busy(project, &g).await?,
                        None => false,
                    };
                    let to = if busy {
                        diverged = true;
                        "waiting_for_resource"
                    } else {
                        "pending"
                    };
                    if from != to {
                        writes.push(Transition {
                            job_id: *id,
                            from,
                            to,
                            reason: None,
                            scheduled_at: None,
                        });
                    }
                }
                Step::Trigger { id, from } => writes.push(Transition {
                    job_id: *id,
                    from,
                    to: "running",
                    reason: Some("creating the downstream pipeline"),
                    scheduled_at: None,
                }),
                Step::Delay { id, seconds } => writes.push(Transition {
                    job_id: *id,
                    from: "created",
                    to: "scheduled",
                    reason: None,
                    scheduled_at: Some(now_ms() + *seconds as i64 * 1000),
                }),
                Step::Finish {
                    id,
                    from,
                    status,
                    reason,
                } => writes.push(Transition {
                    job_id: *id,
                    from,
                    to: status,
                    reason: reason.as_deref(),
                    scheduled_at: None,
                }),
            }
        }
        if refused {
            // The failed rows decide what follows (skips, the status).
            let Some((version, _)) = app.store.pipeline_state(pipeline_id).await? else {
                return Ok(());
            };
            live = match current(app, pipeline_id, version, None).await? {
                Some(l) => l,
                None => return Ok(()),
            };
            continue;
        }
        if writes.is_empty() {
            if diverged {
                live.version = -1;
            }
            break;
        }
        let (made, version_after) = app.store.apply_transitions(pipeline_id, &writes).await?;
        let mut count = 0;
        for (w, ok) in writes.iter().zip(&made) {
            if *ok {
                count += 1;
                live.schedule.row_written(w.job_id, w.to);
                enqueued |= w.to == "pending";
                if w.to == "running" {
                    triggered.push(w.job_id);
                }
            } else {
                diverged = true;
            }
        }
        if diverged || version_after != live.version + count {
            // Someone else changed a row meanwhile: rebuild and decide again.
            live = match current(app, pipeline_id, version_after, None).await? {
                Some(l) => l,
                None => return Ok(()),
            };
        } else {
            live.version = version_after;
        }
    }
    if !live.started && live.schedule.mirror_started() {
        live.started = true;
    }
    let mut status = live
        .schedule
        .pipeline_status(live.started, live.schedule.mirror_pending());
    if status != "running" && status != "manual" && !crate::store::is_finished(status) {
        // Claims are not the queue's writes: look once whether one happened.
        if app.store.pipeline_started(pipeline_id).await? {
            live.started = true;
            status = "running";
        }
    }
    if status != stored_status {
        app.store.set_pipeline_status(pipeline_id, status).await?;
        if crate::store::is_finished(status) {
            crate::children::spawn_pipeline_finished(app.clone(), pipeline_id, status);
        }
    }
    if crate::store::is_finished(status) {
        app.live.forget(pipeline_id);
    } else {
        *held = Some(live);
    }
    drop(held);
    if enqueued {
        app.queue.notify_waiters();
    }
    for job_id in triggered {
        crate::children::spawn_start(app.clone(), job_id);
    }
    Ok(())
}

async fn start_due_delayed_jobs(app: &Shared) -> Result<(), StoreError> {
    let now = now_ms();
    for job in app.store.jobs_with_status("scheduled").await? {
        if job.scheduled_at.is_some_and(|at| at <= now)
            && !crate::environments::automatic_deploy_allowed(app, &job).await?
        {
            // The queue's next pass sees the failure in the rows.
            app.store
                .fail_unstarted(
                    job.id,
                    "scheduled",
                    crate::environments::PROTECTED_ENVIRONMENT_FAILURE,
                )
                .await?;
            continue;
        }
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
/// deployment and the pipeline follow. Returns the job's status as
/// stored, or `None` when the job was no longer running (canceled
/// meanwhile, or already ended).
pub async fn attempt_ended(
    app: &Shared,
    job: &Job,
    state: &str,
    failure: Option<&str>,
    exit_code: Option<i64>,
    dotenv: Option<&str>,
) -> Result<Option<&'static str>, StoreError> {
    let slot = app.live.slot(job.pipeline_id);
    let mut held = slot.lock().await;
    let Some((version, _)) = app.store.pipeline_state(job.pipeline_id).await? else {
        return Ok(None);
    };
    let Some(mut live) = current(app, job.pipeline_id, version, held.take()).await? else {
        return Ok(None);
    };
    let after = live
        .schedule
        .attempt_finished(job, state, failure, exit_code);
    let status = match &after {
        AfterAttempt::Retry => "failed",
        AfterAttempt::Done(s) => s,
    };
    let Some((version_after, stored_status)) = app
        .store
        .finish_job(job.id, status, failure, exit_code, dotenv)
        .await?
    else {
        // No longer running (canceled, or lost): the rows say what it is.
        return Ok(None);
    };
    live.schedule.row_written(job.id, status);
    live.started = true;
    // Another write in between (another server) or a retry (a new row):
    // the next event rebuilds the schedule from rows.
    live.version = match version_after == version + 1 && after != AfterAttempt::Retry {
        true => version_after,
        false => -1,
    };
    Metrics::inc(&app.metrics.jobs_finished, 1);
    let finish_log = || async {
        app.logs
            .finish(job.id)
            .await
            .map_err(|e| StoreError::Config(e.to_string()))
    };
    if after != AfterAttempt::Retry && job.environment.is_none() {
        // The common end: nothing else to write, so the pipeline advances
        // under the lock still held, from the state the write returned.
        finish_log().await?;
        advance_held(
            app,
            job.pipeline_id,
            held,
            Some(live),
            version_after,
            &stored_status,
        )
        .await?;
        return Ok(Some(status));
    }
    *held = Some(live);
    drop(held);
    finish_log().await?;
    if after == AfterAttempt::Retry {
        let to = crate::children::start_status(job);
        let retry = app.store.retry_job(job, to, None).await?;
        if to == "running" {
            crate::children::spawn_start(app.clone(), retry.id);
        }
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
        // The pipeline row is read only here: most jobs deploy nothing.
        let pipeline = match deploys && after != AfterAttempt::Retry {
            true => app.store.pipeline(job.pipeline_id).await?,
            false => None,
        };
        if let Some(pipeline) = pipeline {
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
            if status == "success" {
                crate::environments::deployed(app, job, env, &pipeline, crate::now_ms()).await?;
            }
        }
    }
    crate::environments::job_finished(app, job, status).await?;
    advance_pipeline(app, job.pipeline_id).await?;
    Ok(Some(status))
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

/// Cancels every unfinished job of a pipeline and of its child pipelines.
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
    advance_pipeline(app, pipeline_id).await?;
    for link in app.store.child_links(pipeline_id).await? {
        Box::pin(cancel_pipeline(app, link.child_pipeline_id, reason)).await?;
    }
    Ok(())
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
