//! Waiting for an ECS rollout, with a result that can be trusted.
//!
//! The PRIMARY deployment id is recorded right after UpdateService. The rollout succeeds only
//! when that deployment reports `rolloutState == COMPLETED`, or when RUNNING tasks of the new
//! revision reach the desired count while it is still PRIMARY. It fails on: a FAILED
//! deployment, a changed PRIMARY id (the circuit breaker rolled back), service events saying
//! "unable", stopped tasks of the new revision, or the timeout. The failure message carries the
//! service events and the stopped tasks' reasons.
//!
//! All reads go through [`RolloutObserver`], the narrow seam: [`SdkObserver`] asks ECS
//! (DescribeServices, ListTasks, DescribeTasks); [`ScriptedObserver`] replays states for tests,
//! because moto never moves a deployment out of IN_PROGRESS.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{DeployError, Log};

/// What the deployer is waiting for.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitContext {
    pub cluster: String,
    pub service: String,
    /// The revision being rolled out (full ARN).
    pub task_definition: String,
    /// The PRIMARY deployment id right after UpdateService.
    pub deployment_id: Option<String>,
    /// The PRIMARY deployment id before UpdateService.
    pub previous_deployment_id: Option<String>,
    /// Seconds since the epoch when the update was sent; older events and tasks are ignored.
    pub started_at: f64,
    pub desired_count: i32,
    /// Do not treat "unable" events as failures (ecs-deploy's `--ignore-warnings`).
    pub ignore_warnings: bool,
}

/// One deployment of the service, as DescribeServices reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeploymentState {
    pub id: String,
    /// PRIMARY, ACTIVE or INACTIVE.
    pub status: String,
    pub task_definition: String,
    /// IN_PROGRESS, COMPLETED or FAILED.
    pub rollout_state: Option<String>,
    pub rollout_state_reason: Option<String>,
    pub desired_count: i32,
    pub running_count: i32,
    pub failed_tasks: i32,
}

/// One service event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceEvent {
    pub created_at: Option<f64>,
    pub message: String,
}

/// One task of the service.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskState {
    pub arn: String,
    pub task_definition: String,
    pub last_status: String,
    pub stopped_reason: Option<String>,
    pub created_at: Option<f64>,
    /// (container name, exit code, reason) for containers that stopped.
    pub containers: Vec<(String, Option<i32>, Option<String>)>,
}

/// Everything the verdict is computed from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceSnapshot {
    pub desired_count: i32,
    pub running_count: i32,
    pub deployments: Vec<DeploymentState>,
    /// Newest first, as ECS returns them.
    pub events: Vec<ServiceEvent>,
    pub tasks: Vec<TaskState>,
}

/// The seam every rollout read goes through.
pub trait RolloutObserver: Send + Sync {
    /// The service's current state, as seen for `ctx`.
    fn snapshot(
        &self,
        ctx: &WaitContext,
    ) -> impl Future<Output = Result<ServiceSnapshot, DeployError>> + Send;
}

/// Why a rollout is not a success.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutFailure {
    pub reason: String,
    /// Set when ECS itself moved PRIMARY to another deployment: (deployment id, task definition).
    pub ecs_rolled_back_to: Option<(String, String)>,
    pub events: Vec<String>,
    pub stopped_tasks: Vec<String>,
}

impl std::fmt::Display for RolloutFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.reason)?;
        if !self.events.is_empty() {
            write!(f, "\n  service events:")?;
            for e in &self.events {
                write!(f, "\n    {e}")?;
            }
        }
        if !self.stopped_tasks.is_empty() {
            write!(f, "\n  stopped tasks:")?;
            for t in &self.stopped_tasks {
                write!(f, "\n    {t}")?;
            }
        }
        Ok(())
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Still rolling out; the text says how far.
    Pending(String),
    Succeeded(String),
    Failed(RolloutFailure),
}

/// Events and tasks are compared with the local clock; allow for skew.
const CLOCK_SKEW_SECS: f64 = 5.0;

/// Judges one snapshot. Pure, so every rule is unit-tested.
pub fn judge(ctx: &WaitContext, snap: &ServiceSnapshot) -> Verdict {
    let since = ctx.started_at - CLOCK_SKEW_SECS;
    let recent_events: Vec<&ServiceEvent> = snap
        .events
        .iter()
        .filter(|e| e.created_at.is_none_or(|t| t >= since))
        .collect();
    let event_lines: Vec<String> = recent_events
        .iter()
        .take(10)
        .map(|e| e.message.clone())
        .collect();
    let new_tasks: Vec<&TaskState> = snap
        .tasks
        .iter()
        .filter(|t| t.task_definition == ctx.task_definition)
        .filter(|t| t.created_at.is_none_or(|c| c >= since))
        .collect();
    let stopped: Vec<String> = new_tasks
        .iter()
        .filter(|t| t.last_status == "STOPPED")
        .map(|t| describe_stopped(t))
        .collect();
    let fail = |reason: String, rolled: Option<(String, String)>| {
        Verdict::Failed(RolloutFailure {
            reason,
            ecs_rolled_back_to: rolled,
            events: event_lines.clone(),
            stopped_tasks: stopped.clone(),
        })
    };

    let primary = snap.deployments.iter().find(|d| d.status == "PRIMARY");
    let tracked = ctx
        .deployment_id
        .as_deref()
        .and_then(|id| snap.deployments.iter().find(|d| d.id == id));

    if let (Some(id), Some(p)) = (ctx.deployment_id.as_deref(), primary)
        && p.id != id
    {
        let state = tracked
            .and_then(|t| t.rollout_state.clone())
            .map(|s| format!(" (our deployment is {s})"))
            .unwrap_or_default();
        return fail(
            format!(
                "ECS replaced deployment {id}: the PRIMARY deployment is now {} on {}{state} — the circuit breaker rolled back",
                p.id,
                crate::history::short_revision(&p.task_definition)
            ),
            Some((p.id.clone(), p.task_definition.clone())),
        );
    }
    if let Some(t) = tracked
        && t.rollout_state.as_deref() == Some("FAILED")
    {
        return fail(
            format!(
                "deployment {} FAILED: {}",
                t.id,
                t.rollout_state_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            ),
            None,
        );
    }
    if ctx.deployment_id.is_some() && tracked.is_none() {
        return fail(
            format!(
                "deployment {} disappeared from the service",
                ctx.deployment_id.as_deref().unwrap_or("?")
            ),
            None,
        );
    }
    if !ctx.ignore_warnings
        && let Some(e) = recent_events
            .iter()
            .find(|e| e.message.to_ascii_lowercase().contains("unable"))
    {
        return fail(format!("ECS reports: {}", e.message), None);
    }
    if !stopped.is_empty() {
        return fail(
            format!(
                "{} task(s) of {} stopped during the rollout",
                stopped.len(),
                crate::history::short_revision(&ctx.task_definition)
            ),
            None,
        );
    }
    // COMPLETED counts only for a deployment of our revision: moto (MOTO_ECS_SERVICE_RUNNING)
    // reports the old deployment COMPLETED after an update that never created a new one.
    if let Some(t) = tracked
        && t.rollout_state.as_deref() == Some("COMPLETED")
        && (t.task_definition.is_empty() || t.task_definition == ctx.task_definition)
    {
        return Verdict::Succeeded(format!("deployment {} COMPLETED", t.id));
    }
    // moto (and ECS while scaling) may report 0 on the deployment; the context knows better.
    let desired = tracked
        .map(|t| t.desired_count)
        .filter(|d| *d > 0)
        .unwrap_or(ctx.desired_count);
    let running_new = new_tasks
        .iter()
        .filter(|t| t.last_status == "RUNNING")
        .count() as i32;
    if desired <= 0 {
        return Verdict::Succeeded("desired count is 0".into());
    }
    if running_new >= desired {
        return Verdict::Succeeded(format!(
            "{running_new}/{desired} tasks of {} RUNNING",
            crate::history::short_revision(&ctx.task_definition)
        ));
    }
    let state = tracked
        .and_then(|t| t.rollout_state.clone())
        .unwrap_or_else(|| "unknown".into());
    Verdict::Pending(format!(
        "{running_new}/{desired} new tasks running, {} deployment(s), rollout {state}",
        snap.deployments.len()
    ))
}

fn describe_stopped(t: &TaskState) -> String {
    let id = t.arn.rsplit('/').next().unwrap_or(&t.arn);
    let mut s = format!(
        "{id}: {}",
        t.stopped_reason.as_deref().unwrap_or("no reason given")
    );
    for (name, code, reason) in &t.containers {
        if code.is_some() || reason.is_some() {
            s.push_str(&format!(
                "; {name} exit {}{}",
                code.map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
                reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ));
        }
    }
    s
}

/// Polls until a verdict other than Pending, or the timeout. Progress is logged when it changes.
pub async fn wait_for_rollout<O: RolloutObserver>(
    observer: &O,
    ctx: &WaitContext,
    timeout: Duration,
    poll: Duration,
    log: &Log,
) -> Result<String, RolloutFailure> {
    let deadline = Instant::now() + timeout;
    let mut last_progress = String::new();
    let mut last_events: Vec<String> = Vec::new();
    loop {
        // A hung read must not outlive the deadline by more than a few seconds.
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(5));
        let read = tokio::time::timeout(budget, observer.snapshot(ctx))
            .await
            .unwrap_or_else(|_| {
                Err(DeployError::Aws(format!(
                    "no answer within {}s",
                    budget.as_secs()
                )))
            });
        match read {
            Ok(snap) => {
                last_events = snap
                    .events
                    .iter()
                    .take(10)
                    .map(|e| e.message.clone())
                    .collect();
                match judge(ctx, &snap) {
                    Verdict::Succeeded(why) => return Ok(why),
                    Verdict::Failed(f) => return Err(f),
                    Verdict::Pending(progress) => {
                        if progress != last_progress {
                            log.line(format!("waiting: {progress}"));
                            last_progress = progress;
                        }
                    }
                }
            }
            // A transient read error is not a verdict; the deadline still bounds the wait.
            Err(e) => log.line(format!("warning: cannot read the service state: {e}")),
        }
        if Instant::now() >= deadline {
            return Err(RolloutFailure {
                reason: format!(
                    "timed out after {}s waiting for {} to roll out ({})",
                    timeout.as_secs(),
                    crate::history::short_revision(&ctx.task_definition),
                    if last_progress.is_empty() {
                        "no state read".into()
                    } else {
                        last_progress
                    },
                ),
                ecs_rolled_back_to: None,
                events: last_events,
                stopped_tasks: Vec::new(),
            });
        }
        tokio::time::sleep(
            poll.min(deadline.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1)),
        )
        .await;
    }
}

/// Replays scripted snapshots, built from the context so tests can refer to the real ids.
/// The last one repeats once the script runs out. For tests: moto cannot produce these states.
/// One scripted state, built from the wait context.
type ScriptStep = Box<dyn Fn(&WaitContext) -> ServiceSnapshot + Send>;

pub struct ScriptedObserver {
    steps: Mutex<VecDeque<ScriptStep>>,
    last: Mutex<Option<ServiceSnapshot>>,
    seen: Mutex<Vec<WaitContext>>,
}

impl ScriptedObserver {
    /// Empty script: every read returns an empty snapshot until steps are pushed.
    pub fn new() -> Self {
        ScriptedObserver {
            steps: Mutex::new(VecDeque::new()),
            last: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Appends one state.
    pub fn then(self, step: impl Fn(&WaitContext) -> ServiceSnapshot + Send + 'static) -> Self {
        self.steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Box::new(step));
        self
    }

    /// The contexts the deployer waited with, in order (one entry per read).
    pub fn contexts(&self) -> Vec<WaitContext> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Default for ScriptedObserver {
    fn default() -> Self {
        ScriptedObserver::new()
    }
}

impl RolloutObserver for ScriptedObserver {
    fn snapshot(
        &self,
        ctx: &WaitContext,
    ) -> impl Future<Output = Result<ServiceSnapshot, DeployError>> + Send {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ctx.clone());
        let next = self
            .steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let snap = match next {
            Some(step) => step(ctx),
            None => last.clone().unwrap_or_default(),
        };
        *last = Some(snap.clone());
        std::future::ready(Ok(snap))
    }
}

/// Builders for scripted states, shared by unit and integration tests.
pub mod script {
    use super::*;

    /// The tracked deployment as PRIMARY with the given rollout state.
    pub fn primary(ctx: &WaitContext, rollout_state: &str) -> ServiceSnapshot {
        ServiceSnapshot {
            desired_count: ctx.desired_count,
            running_count: 0,
            deployments: vec![DeploymentState {
                id: ctx
                    .deployment_id
                    .clone()
                    .unwrap_or_else(|| "ecs-svc/new".into()),
                status: "PRIMARY".into(),
                task_definition: ctx.task_definition.clone(),
                rollout_state: Some(rollout_state.into()),
                rollout_state_reason: Some(format!("ECS deployment {rollout_state}")),
                desired_count: ctx.desired_count,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// The circuit breaker rolled back: a new PRIMARY on `old_task_definition`, ours FAILED.
    pub fn circuit_breaker_rollback(
        ctx: &WaitContext,
        old_task_definition: &str,
    ) -> ServiceSnapshot {
        let mut snap = primary(ctx, "FAILED");
        snap.deployments[0].status = "ACTIVE".into();
        snap.deployments[0].rollout_state_reason =
            Some("ECS deployment circuit breaker: tasks failed to start.".into());
        snap.deployments.insert(
            0,
            DeploymentState {
                id: "ecs-svc/circuit-breaker-rollback".into(),
                status: "PRIMARY".into(),
                task_definition: old_task_definition.into(),
                rollout_state: Some("IN_PROGRESS".into()),
                desired_count: ctx.desired_count,
                ..Default::default()
            },
        );
        snap.events.push(ServiceEvent {
            created_at: Some(ctx.started_at + 30.0),
            message: "(service web) rolling back to deployment ecs-svc/previous.".into(),
        });
        snap
    }

    /// An "unable" service event on an otherwise in-progress deployment.
    pub fn unable_event(ctx: &WaitContext) -> ServiceSnapshot {
        let mut snap = primary(ctx, "IN_PROGRESS");
        snap.events.push(ServiceEvent {
            created_at: Some(ctx.started_at + 2.0),
            message: "(service web) was unable to place a task because no container instance met all of its requirements.".into(),
        });
        snap
    }

    /// `n` RUNNING tasks of the new revision, deployment still IN_PROGRESS.
    pub fn running_tasks(ctx: &WaitContext, n: usize) -> ServiceSnapshot {
        let mut snap = primary(ctx, "IN_PROGRESS");
        for i in 0..n {
            snap.tasks.push(TaskState {
                arn: format!("arn:aws:ecs:eu-west-1:123456789012:task/c/t{i}"),
                task_definition: ctx.task_definition.clone(),
                last_status: "RUNNING".into(),
                created_at: Some(ctx.started_at + 1.0),
                ..Default::default()
            });
        }
        snap
    }

    /// One stopped task of the new revision with a container exit code.
    pub fn stopped_task(ctx: &WaitContext) -> ServiceSnapshot {
        let mut snap = primary(ctx, "IN_PROGRESS");
        snap.tasks.push(TaskState {
            arn: "arn:aws:ecs:eu-west-1:123456789012:task/c/dead1".into(),
            task_definition: ctx.task_definition.clone(),
            last_status: "STOPPED".into(),
            stopped_reason: Some("Essential container in task exited".into()),
            created_at: Some(ctx.started_at + 1.0),
            containers: vec![("app".into(), Some(137), Some("OutOfMemoryError".into()))],
        });
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::script::*;
    use super::*;

    fn ctx() -> WaitContext {
        WaitContext {
            cluster: "c".into(),
            service: "web".into(),
            task_definition: "arn:aws:ecs:eu-west-1:123456789012:task-definition/web:2".into(),
            deployment_id: Some("ecs-svc/2".into()),
            previous_deployment_id: Some("ecs-svc/1".into()),
            started_at: 1_000_000.0,
            desired_count: 2,
            ignore_warnings: false,
        }
    }

    // Scripted states below: moto never completes, fails or rolls back a deployment.

    #[test]
    fn completed_deployment_succeeds() {
        assert!(matches!(
            judge(&ctx(), &primary(&ctx(), "COMPLETED")),
            Verdict::Succeeded(_)
        ));
    }

    #[test]
    fn in_progress_is_pending_until_new_tasks_reach_desired_count() {
        assert!(matches!(
            judge(&ctx(), &primary(&ctx(), "IN_PROGRESS")),
            Verdict::Pending(_)
        ));
        assert!(matches!(
            judge(&ctx(), &running_tasks(&ctx(), 1)),
            Verdict::Pending(_)
        ));
        assert!(matches!(
            judge(&ctx(), &running_tasks(&ctx(), 2)),
            Verdict::Succeeded(_)
        ));
    }

    #[test]
    fn tasks_of_the_old_revision_do_not_count() {
        let c = ctx();
        let mut snap = running_tasks(&c, 2);
        for t in &mut snap.tasks {
            t.task_definition = "arn:aws:ecs:eu-west-1:123456789012:task-definition/web:1".into();
        }
        assert!(matches!(judge(&c, &snap), Verdict::Pending(_)));
    }

    #[test]
    fn completed_on_another_revision_is_not_success() {
        let c = ctx();
        let mut snap = primary(&c, "COMPLETED");
        snap.deployments[0].task_definition =
            "arn:aws:ecs:eu-west-1:123456789012:task-definition/web:1".into();
        assert!(matches!(judge(&c, &snap), Verdict::Pending(_)));
    }

    #[test]
    fn failed_deployment_fails_with_reason() {
        let Verdict::Failed(f) = judge(&ctx(), &primary(&ctx(), "FAILED")) else {
            panic!("expected failure")
        };
        assert!(f.reason.contains("FAILED"), "{}", f.reason);
    }

    #[test]
    fn circuit_breaker_rollback_is_a_failure_even_when_stable() {
        let c = ctx();
        let old = "arn:aws:ecs:eu-west-1:123456789012:task-definition/web:1";
        let mut snap = circuit_breaker_rollback(&c, old);
        // ECS finished its own rollback: stable, one deployment, all tasks running. The
        // services-stable waiter would call this a success; it is not.
        snap.deployments.truncate(1);
        snap.deployments[0].rollout_state = Some("COMPLETED".into());
        let Verdict::Failed(f) = judge(&c, &snap) else {
            panic!("expected failure")
        };
        assert_eq!(
            f.ecs_rolled_back_to,
            Some((
                "ecs-svc/circuit-breaker-rollback".to_string(),
                old.to_string()
            ))
        );
        assert!(f.to_string().contains("rolling back"), "{f}");
    }

    #[test]
    fn unable_events_fail_unless_ignored() {
        let mut c = ctx();
        let Verdict::Failed(f) = judge(&c, &unable_event(&c)) else {
            panic!("expected failure")
        };
        assert!(f.reason.contains("unable to place"), "{}", f.reason);
        c.ignore_warnings = true;
        assert!(matches!(judge(&c, &unable_event(&c)), Verdict::Pending(_)));
    }

    #[test]
    fn old_unable_events_are_ignored() {
        let c = ctx();
        let mut snap = unable_event(&c);
        snap.events[0].created_at = Some(c.started_at - 3600.0);
        assert!(matches!(judge(&c, &snap), Verdict::Pending(_)));
    }

    #[test]
    fn stopped_tasks_fail_with_their_reasons() {
        let Verdict::Failed(f) = judge(&ctx(), &stopped_task(&ctx())) else {
            panic!("expected failure")
        };
        let text = f.to_string();
        assert!(
            text.contains("Essential container in task exited"),
            "{text}"
        );
        assert!(text.contains("app exit 137 (OutOfMemoryError)"), "{text}");
    }

    #[tokio::test]
    async fn wait_times_out_with_progress_in_the_message() {
        let obs = ScriptedObserver::new().then(|c| primary(c, "IN_PROGRESS"));
        let err = wait_for_rollout(
            &obs,
            &ctx(),
            Duration::from_millis(120),
            Duration::from_millis(20),
            &Log::silent(),
        )
        .await
        .expect_err("timeout");
        assert!(
            err.reason.starts_with("timed out after 0s"),
            "{}",
            err.reason
        );
        assert!(err.reason.contains("rollout IN_PROGRESS"), "{}", err.reason);
        assert!(obs.contexts().len() >= 3);
    }

    #[tokio::test]
    async fn wait_follows_the_script_to_completion() {
        let obs = ScriptedObserver::new()
            .then(|c| primary(c, "IN_PROGRESS"))
            .then(|c| running_tasks(c, 1))
            .then(|c| primary(c, "COMPLETED"));
        let ok = wait_for_rollout(
            &obs,
            &ctx(),
            Duration::from_secs(5),
            Duration::from_millis(1),
            &Log::silent(),
        )
        .await
        .expect("completed");
        assert!(ok.contains("COMPLETED"));
        assert_eq!(obs.contexts().len(), 3);
    }
}
