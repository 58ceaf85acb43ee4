//! The one deploy state machine every target goes through (ECS, CloudFormation, the local
//! engine).
//!
//! A [`Target`] knows how to make a revision, roll it out, observe the rollout, probe its
//! health and roll back. This module owns everything around that, once:
//!
//! 1. take the target's lease in the history store (`--wait-lock`, else fail naming the holder);
//! 2. read the current state and the rollback target (the last known-good revision, else the
//!    one that runs now) *before* changing anything, so a history outage later cannot prevent
//!    a rollback;
//! 3. record the attempt, notify, roll out, observe, probe, racing SIGINT/SIGTERM;
//! 4. on failure or a signal: roll back (awaited and probed like a deploy; only then is the
//!    rollback's revision marked known good), or with `--no-rollback` leave it and record
//!    `failed` / `interrupted`; a record never stays `in_progress` unless the process is killed
//!    with SIGKILL;
//! 5. say what is live now and the exact command to run next.
//!
//! Whether a deploy "rolled back" is decided here from typed states ([`Phase`],
//! [`LiveAfterFailure`], [`Outcome`]), never from error text.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::history::{
    DeployResult, DeploymentRecord, HistoryStore, RecordKind, acquire_lease_waiting,
    short_revision, withdraw_known_good,
};
use crate::notify::{Event, EventKind};
use crate::{DeployError, Log};

/// A revision ready to roll out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Revision {
    /// What the history records as the revision (task-definition ARN, `rN`, ...).
    pub id: String,
    /// Facts recorded with it (images, desired count, container spec, ...).
    pub details: BTreeMap<String, String>,
}

/// Where the target stands after a failed rollout.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveAfterFailure {
    /// The new revision never took traffic; what ran before still serves.
    Unchanged,
    /// The new revision is (or may be) live.
    Changed,
    /// The platform itself moved to this revision (ECS's circuit breaker).
    ReplacedBy(String),
}

/// Why a rollout is not a success, and where it left the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: String,
    pub live: LiveAfterFailure,
}

impl Failure {
    pub fn changed(reason: impl Into<String>) -> Self {
        Failure {
            reason: reason.into(),
            live: LiveAfterFailure::Changed,
        }
    }
    pub fn unchanged(reason: impl Into<String>) -> Self {
        Failure {
            reason: reason.into(),
            live: LiveAfterFailure::Unchanged,
        }
    }
}

/// Where to roll back to, fixed before the rollout starts.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackPlan {
    pub revision: String,
    /// The record that made it known good, if any (its details hold e.g. the desired count).
    pub record: Option<DeploymentRecord>,
    /// "last known-good revision", "revision that ran before", "revision asked for".
    pub why: &'static str,
}

/// What a completed rollback left live.
#[derive(Debug, Clone, PartialEq)]
pub struct RolledBack {
    /// The revision now live (may differ from the plan's: ECS re-registers an INACTIVE one).
    pub revision: String,
    /// False with `--timeout -1`: submitted, not awaited, so not known good.
    pub awaited: bool,
    pub note: String,
}

/// One deploy target. Methods are called in order: `prepare`, `make_revision`, `roll_out`,
/// `observe`, `probe`; `roll_back` on failure. A dropped `roll_out`/`observe`/`probe` future
/// (SIGINT/SIGTERM) must leave the target in a state `roll_back` or `abandon` can clean up.
#[allow(async_fn_in_trait)]
pub trait Target {
    /// The history key (`ecs:ACCOUNT:REGION:CLUSTER/SERVICE`, ...).
    fn key(&self) -> String;
    /// The command that rolls this target back by hand, without `--history`.
    fn rollback_command(&self) -> String;
    /// The revision live now, as far as the target knows.
    fn live_revision(&self) -> Option<String>;
    /// Whether the caller asked not to wait (`--timeout -1`).
    fn no_wait(&self) -> bool {
        false
    }
    /// Reads the current state (after the lease is held).
    async fn prepare(&mut self, store: &dyn HistoryStore) -> Result<(), DeployError>;
    /// Makes the new revision (registers a task definition, pulls nothing yet, ...).
    async fn make_revision(&mut self) -> Result<Revision, DeployError>;
    /// Starts the rollout. Errors say whether the live revision changed.
    async fn roll_out(&mut self, rev: &Revision) -> Result<(), Failure>;
    /// Waits for the rollout's verdict.
    async fn observe(&mut self, rev: &Revision) -> Result<String, Failure>;
    /// Probes the new revision's health.
    async fn probe(&mut self, rev: &Revision) -> Result<String, Failure>;
    /// Returns the target to `plan`, awaited and probed like a deploy.
    async fn roll_back(&mut self, plan: &RollbackPlan) -> Result<RolledBack, DeployError>;
    /// Where a SIGINT/SIGTERM that stopped `roll_out`/`observe`/`probe` left the target:
    /// `Unchanged` only when the new revision cannot have taken traffic yet (a candidate
    /// checked beside the live revision). The default assumes the worst.
    fn live_after_interrupt(&self) -> LiveAfterFailure {
        LiveAfterFailure::Changed
    }
    /// Cleans up a failed revision that never took traffic (e.g. a candidate container).
    async fn abandon(&mut self, _rev: &Revision) {}
    /// After a success (e.g. prune old revisions); returns notes to print.
    async fn after_success(&mut self, _rev: &Revision, _store: &dyn HistoryStore) -> Vec<String> {
        Vec::new()
    }
    /// `--to REV` of `gantry rollback`, as a revision id.
    async fn resolve(&mut self, to: &str) -> Result<String, DeployError>;
}

/// Options of the machine itself.
#[derive(Debug, Clone)]
pub struct MachineOptions {
    pub rollback: bool,
    /// How long to wait for another deploy's lease.
    pub wait_lock: Duration,
    /// How long our lease lasts if we die without releasing it.
    pub lease_ttl: Duration,
    /// `--notify` webhooks.
    pub notify: Vec<String>,
}

impl Default for MachineOptions {
    fn default() -> Self {
        MachineOptions {
            rollback: true,
            wait_lock: Duration::ZERO,
            lease_ttl: Duration::from_secs(3600),
            notify: Vec::new(),
        }
    }
}

/// The typed result of one deploy or rollback.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Rolled out and healthy: known good.
    Succeeded { revision: String, message: String },
    /// Not waited for (`--timeout -1`).
    Submitted { revision: String },
    /// Failed; the target is back on `to`.
    RolledBack {
        revision: String,
        to: String,
        reason: String,
        /// Which rollback target it was: "last known-good revision", ...
        why: String,
    },
    /// Failed and left as it is (no rollback wanted or possible, or the rollback failed).
    Failed {
        revision: Option<String>,
        reason: String,
    },
    /// SIGINT/SIGTERM with `--no-rollback`.
    Interrupted { revision: String, signal: String },
    /// Nothing was changed (usage, lease held, API error before the rollout).
    NotStarted { reason: String, locked: bool },
}

/// The outcome plus what a human needs next.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub outcome: Outcome,
    /// What is live now, as far as known.
    pub live_now: Option<String>,
    /// The exact command to run next, if any.
    pub next: Option<String>,
    /// History writes that failed after the rollout started.
    pub history_warnings: Vec<String>,
    pub record_id: Option<String>,
    /// Notes from `after_success` (e.g. deregistered revisions).
    pub notes: Vec<String>,
}

impl Report {
    fn new(outcome: Outcome) -> Self {
        Report {
            outcome,
            live_now: None,
            next: None,
            history_warnings: Vec::new(),
            record_id: None,
            notes: Vec::new(),
        }
    }

    /// Nothing was changed, for `reason`.
    pub fn not_started(reason: impl Into<String>) -> Self {
        Report::new(Outcome::NotStarted {
            reason: reason.into(),
            locked: false,
        })
    }

    pub fn ok(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Succeeded { .. } | Outcome::Submitted { .. }
        )
    }

    /// Whether anything was changed (exit code 1) or nothing was (exit code 2).
    pub fn changed_anything(&self) -> bool {
        !matches!(self.outcome, Outcome::NotStarted { .. })
    }

    /// A summary for the job log: the outcome, what is live, what to run next.
    pub fn message(&self) -> String {
        let mut s = match &self.outcome {
            Outcome::Succeeded { revision, message } => {
                format!("{} is live: {message}", short_revision(revision))
            }
            Outcome::Submitted { revision } => {
                format!(
                    "submitted {} (not waited for, so not known good)",
                    short_revision(revision)
                )
            }
            Outcome::RolledBack {
                revision,
                to,
                reason,
                why,
            } => format!(
                "{} failed: {reason}\nrolled back to {} ({why})",
                short_revision(revision),
                short_revision(to)
            ),
            Outcome::Failed {
                revision: Some(r),
                reason,
            } => format!("{} failed: {reason}", short_revision(r)),
            Outcome::Failed {
                revision: None,
                reason,
            } => reason.clone(),
            Outcome::Interrupted { revision, signal } => format!(
                "{signal} during the deploy of {}: left as it is (--no-rollback), recorded as interrupted",
                short_revision(revision)
            ),
            Outcome::NotStarted { reason, .. } => reason.clone(),
        };
        for n in &self.notes {
            s.push_str(&format!("\n{n}"));
        }
        for w in &self.history_warnings {
            s.push_str(&format!("\nwarning: {w}"));
        }
        if let Some(l) = &self.live_now {
            s.push_str(&format!("\nlive now: {}", short_revision(l)));
        }
        if let Some(n) = &self.next {
            s.push_str(&format!("\nnext: {n}"));
        }
        s
    }
}

enum Phase {
    Healthy(String),
    Submitted,
    Failed(Failure),
    Interrupted(&'static str),
}

fn with_history(cmd: String, store: &dyn HistoryStore) -> String {
    format!("{cmd} --history {}", store.location())
}

/// Deploys a new revision of `target`; see the module docs for the steps.
pub async fn deploy<T: Target>(
    target: &mut T,
    store: &dyn HistoryStore,
    opts: &MachineOptions,
    log: &Log,
) -> Report {
    let key = target.key();
    leased(
        store,
        &key,
        opts,
        log,
        deploy_leased(target, store, opts, log, &key),
    )
    .await
}

/// Runs `work` (not started yet) while holding `key`'s lease; a held lease is a
/// `NotStarted` report naming the holder. The one place a lease is taken and released.
async fn leased(
    store: &dyn HistoryStore,
    key: &str,
    opts: &MachineOptions,
    log: &Log,
    work: impl std::future::Future<Output = Report>,
) -> Report {
    let holder = match acquire_lease_waiting(store, key, opts.lease_ttl, opts.wait_lock, log).await
    {
        Ok(h) => h,
        Err(e) => {
            return Report::new(Outcome::NotStarted {
                locked: matches!(e, DeployError::Locked(_)),
                reason: e.to_string(),
            });
        }
    };
    let report = work.await;
    if let Err(e) = store.release_lease(key, &holder.id).await {
        log.line(format!(
            "warning: could not release the lease on {key} (it expires by itself at {}): {e}",
            holder.expires_at
        ));
    }
    report
}

async fn deploy_leased<T: Target>(
    target: &mut T,
    store: &dyn HistoryStore,
    opts: &MachineOptions,
    log: &Log,
    key: &str,
) -> Report {
    let not_started = Report::not_started;
    if let Err(e) = target.prepare(store).await {
        return not_started(e.to_string());
    }
    let live = target.live_revision();
    // The rollback target is read now: a history outage later must not prevent a rollback.
    let known_good = match store.last_known_good(key, None).await {
        Ok(k) => k,
        Err(e) => {
            return not_started(format!(
                "{e}; nothing was changed (the rollback target must be known before deploying)"
            ));
        }
    };
    let rev = match target.make_revision().await {
        Ok(r) => r,
        Err(e) => {
            let mut r = not_started(e.to_string());
            r.live_now = live;
            return r;
        }
    };
    let plan = match known_good.filter(|k| k.revision != rev.id) {
        Some(k) => Some(RollbackPlan {
            revision: k.revision.clone(),
            record: Some(k),
            why: "last known-good revision",
        }),
        None => live.clone().filter(|l| *l != rev.id).map(|l| RollbackPlan {
            revision: l,
            record: None,
            why: "revision that ran before",
        }),
    };
    let mut record = DeploymentRecord::start(key, RecordKind::Deploy, &rev.id, live.as_deref());
    record.details = rev.details.clone();
    if let Err(e) = store.save(&record).await {
        let mut r = not_started(format!("{e}; nothing was rolled out"));
        r.live_now = live;
        return r;
    }
    let mut warnings = Vec::new();
    let save = |store_result: Result<(), DeployError>, warnings: &mut Vec<String>| {
        if let Err(e) = store_result {
            warnings.push(format!(
                "the deployment record could not be written to {}: {e}",
                store.location()
            ));
        }
    };
    crate::notify::send(
        &opts.notify,
        &Event::new(EventKind::Started, key, &rev.id),
        log,
    )
    .await;

    let phase = {
        let run = async {
            if let Err(f) = target.roll_out(&rev).await {
                return Phase::Failed(f);
            }
            if target.no_wait() {
                return Phase::Submitted;
            }
            let why = match target.observe(&rev).await {
                Ok(w) => w,
                Err(f) => return Phase::Failed(f),
            };
            log.line(format!("rollout succeeded: {why}"));
            match target.probe(&rev).await {
                Ok(h) => Phase::Healthy(h),
                Err(f) => Phase::Failed(f),
            }
        };
        tokio::select! {
            p = run => p,
            sig = crate::interrupt::signalled() => Phase::Interrupted(sig),
        }
    };

    let mut report = match phase {
        Phase::Healthy(why) => {
            record.finish(DeployResult::Succeeded, None);
            save(store.save(&record).await, &mut warnings);
            let notes = target.after_success(&rev, store).await;
            crate::notify::send(
                &opts.notify,
                &Event::new(EventKind::Succeeded, key, &rev.id),
                log,
            )
            .await;
            let mut r = Report::new(Outcome::Succeeded {
                revision: rev.id.clone(),
                message: why,
            });
            r.notes = notes;
            r.live_now = Some(rev.id.clone());
            r
        }
        Phase::Submitted => {
            record.finish(
                DeployResult::Submitted,
                Some("not waited for (--timeout -1)".into()),
            );
            save(store.save(&record).await, &mut warnings);
            let mut r = Report::new(Outcome::Submitted {
                revision: rev.id.clone(),
            });
            r.notes = target.after_success(&rev, store).await;
            r.live_now = Some(rev.id.clone());
            r
        }
        Phase::Failed(f) => {
            fail(
                target,
                store,
                opts,
                log,
                key,
                &rev,
                &mut record,
                plan,
                f,
                None,
                &mut warnings,
            )
            .await
        }
        Phase::Interrupted(sig) => {
            log.line(format!("{sig} received: stopping the deploy"));
            let f = Failure {
                reason: format!("interrupted by {sig}"),
                live: target.live_after_interrupt(),
            };
            fail(
                target,
                store,
                opts,
                log,
                key,
                &rev,
                &mut record,
                plan,
                f,
                Some(sig),
                &mut warnings,
            )
            .await
        }
    };
    report.record_id = Some(record.id.clone());
    report.history_warnings.extend(warnings);
    report
}

#[allow(clippy::too_many_arguments)]
async fn fail<T: Target>(
    target: &mut T,
    store: &dyn HistoryStore,
    opts: &MachineOptions,
    log: &Log,
    key: &str,
    rev: &Revision,
    record: &mut DeploymentRecord,
    plan: Option<RollbackPlan>,
    failure: Failure,
    signal: Option<&'static str>,
    warnings: &mut Vec<String>,
) -> Report {
    let save_warn = |r: Result<(), DeployError>, warnings: &mut Vec<String>| {
        if let Err(e) = r {
            warnings.push(format!(
                "the deployment record could not be written to {}: {e}",
                store.location()
            ));
        }
    };
    let reason = failure.reason.clone();
    log.line(format!(
        "deploy of {} failed: {reason}",
        short_revision(&rev.id)
    ));
    let before = record.previous_revision.clone();
    let next_rollback = with_history(target.rollback_command(), store);

    // The new revision never took traffic: what ran before is still live.
    if failure.live == LiveAfterFailure::Unchanged {
        target.abandon(rev).await;
        let msg = format!(
            "{reason}; it never took traffic, {} keeps serving",
            before
                .as_deref()
                .map(short_revision)
                .unwrap_or("nothing".into())
        );
        let outcome = match &before {
            // --no-rollback asked to leave things as they are: recorded as interrupted.
            Some(_) if signal.is_some() && !opts.rollback => {
                record.finish(DeployResult::Interrupted, Some(msg.clone()));
                Outcome::Interrupted {
                    revision: rev.id.clone(),
                    signal: signal.unwrap_or("a signal").to_string(),
                }
            }
            Some(b) => {
                record.rolled_back_to = Some(b.clone());
                record.finish(DeployResult::RolledBack, Some(msg.clone()));
                Outcome::RolledBack {
                    revision: rev.id.clone(),
                    to: b.clone(),
                    reason: msg,
                    why: "it never took traffic".into(),
                }
            }
            None => {
                record.finish(DeployResult::Failed, Some(msg.clone()));
                Outcome::Failed {
                    revision: Some(rev.id.clone()),
                    reason: msg,
                }
            }
        };
        save_warn(store.save(record).await, warnings);
        notify_failure(opts, key, rev, &outcome, log).await;
        let mut r = Report::new(outcome);
        r.live_now = before;
        r.next = Some("fix the revision and deploy again".into());
        return r;
    }

    let live_if_left = match &failure.live {
        LiveAfterFailure::ReplacedBy(r) => r.clone(),
        _ => rev.id.clone(),
    };
    if !opts.rollback {
        // Whatever of the new revision never took traffic (a candidate) goes; the rest stays.
        target.abandon(rev).await;
        let outcome = match signal {
            Some(sig) => {
                record.finish(
                    DeployResult::Interrupted,
                    Some(format!("{reason} (rollback disabled)")),
                );
                Outcome::Interrupted {
                    revision: rev.id.clone(),
                    signal: sig.to_string(),
                }
            }
            None => {
                record.finish(
                    DeployResult::Failed,
                    Some(format!("{reason} (rollback disabled)")),
                );
                Outcome::Failed {
                    revision: Some(rev.id.clone()),
                    reason: format!("{reason} (rollback disabled)"),
                }
            }
        };
        save_warn(store.save(record).await, warnings);
        notify_failure(opts, key, rev, &outcome, log).await;
        let mut r = Report::new(outcome);
        r.live_now = Some(live_if_left);
        r.next = Some(next_rollback);
        return r;
    }
    let Some(plan) = plan else {
        record.finish(
            DeployResult::Failed,
            Some(format!("{reason}; nothing to roll back to")),
        );
        save_warn(store.save(record).await, warnings);
        let outcome = Outcome::Failed {
            revision: Some(rev.id.clone()),
            reason: format!("{reason}; no earlier revision to roll back to"),
        };
        notify_failure(opts, key, rev, &outcome, log).await;
        let mut r = Report::new(outcome);
        r.live_now = Some(live_if_left);
        r.next = Some("fix the revision and deploy again".into());
        return r;
    };
    log.line(format!(
        "rolling back to {} ({})",
        short_revision(&plan.revision),
        plan.why
    ));
    let rb = run_rollback(target, store, key, &plan, Some(&rev.id), log, warnings).await;
    let outcome = match rb {
        Ok(back) => {
            record.rolled_back_to = Some(back.revision.clone());
            record.finish(DeployResult::RolledBack, Some(reason.clone()));
            Outcome::RolledBack {
                revision: rev.id.clone(),
                to: back.revision,
                reason,
                why: format!("{}{}", plan.why, note_suffix(&back.note)),
            }
        }
        Err(e) => {
            record.finish(
                DeployResult::Failed,
                Some(format!("{reason}; rollback failed: {e}")),
            );
            Outcome::Failed {
                revision: Some(rev.id.clone()),
                reason: format!(
                    "{reason}\nrollback to {} FAILED too: {e}",
                    short_revision(&plan.revision)
                ),
            }
        }
    };
    save_warn(store.save(record).await, warnings);
    notify_failure(opts, key, rev, &outcome, log).await;
    let mut r = Report::new(outcome.clone());
    match outcome {
        Outcome::RolledBack { to, .. } => {
            r.live_now = Some(to);
            r.next = Some("fix the revision and deploy again".into());
        }
        _ => {
            r.live_now = Some(format!(
                "unknown (was rolling back to {})",
                short_revision(&plan.revision)
            ));
            r.next = Some(next_rollback);
        }
    }
    r
}

fn note_suffix(note: &str) -> String {
    if note.is_empty() {
        String::new()
    } else {
        format!("; {note}")
    }
}

async fn notify_failure(
    opts: &MachineOptions,
    key: &str,
    rev: &Revision,
    outcome: &Outcome,
    log: &Log,
) {
    if opts.notify.is_empty() {
        return;
    }
    let mut ev = match outcome {
        Outcome::RolledBack { to, reason, .. } => {
            let mut e = Event::new(EventKind::RolledBack, key, &rev.id);
            e.rolled_back_to = Some(to.clone());
            e.message = Some(reason.clone());
            e
        }
        Outcome::Failed { reason, .. } => {
            let mut e = Event::new(EventKind::Failed, key, &rev.id);
            e.message = Some(reason.clone());
            e
        }
        _ => Event::new(EventKind::Failed, key, &rev.id),
    };
    if let Some(to) = &ev.rolled_back_to {
        ev.text
            .push_str(&format!(", back on {}", short_revision(to)));
    }
    crate::notify::send(&opts.notify, &ev, log).await;
}

/// Runs a rollback with its own record: known good only once awaited and probed.
async fn run_rollback<T: Target>(
    target: &mut T,
    store: &dyn HistoryStore,
    key: &str,
    plan: &RollbackPlan,
    from: Option<&str>,
    log: &Log,
    warnings: &mut Vec<String>,
) -> Result<RolledBack, DeployError> {
    let mut record = DeploymentRecord::start(key, RecordKind::Rollback, &plan.revision, from);
    if let Some(k) = &plan.record {
        record.details = k.details.clone();
    }
    let mut record_ok = true;
    if let Err(e) = store.save(&record).await {
        // A rollback never depends on a history write.
        log.line(format!(
            "warning: the rollback record could not be written ({e}); rolling back anyway"
        ));
        record_ok = false;
    }
    let result = target.roll_back(plan).await;
    match &result {
        Ok(back) => {
            record.revision = back.revision.clone();
            if back.awaited {
                record.finish(DeployResult::Succeeded, none_if_empty(&back.note));
            } else {
                record.finish(DeployResult::Submitted, Some("not waited for".into()));
            }
            log.line(format!(
                "{} is live again{}",
                short_revision(&back.revision),
                note_suffix(&back.note)
            ));
        }
        Err(e) => record.finish(DeployResult::Failed, Some(e.to_string())),
    }
    if let Err(e) = store.save(&record).await {
        warnings.push(format!(
            "the rollback record could not be written to {}: {e}",
            store.location()
        ));
    } else if !record_ok {
        warnings.push(format!(
            "the rollback record was written late to {}",
            store.location()
        ));
    }
    result
}

fn none_if_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// `gantry rollback`: to `to` (resolved by the target), else the newest known-good revision
/// other than the live one, else the revision the history says ran before the live one.
/// After success, "known good" is withdrawn from every record of the revision left.
pub async fn rollback<T: Target>(
    target: &mut T,
    store: &dyn HistoryStore,
    to: Option<&str>,
    opts: &MachineOptions,
    log: &Log,
) -> Report {
    let key = target.key();
    leased(
        store,
        &key,
        opts,
        log,
        rollback_leased(target, store, to, log, &key),
    )
    .await
}

async fn rollback_leased<T: Target>(
    target: &mut T,
    store: &dyn HistoryStore,
    to: Option<&str>,
    log: &Log,
    key: &str,
) -> Report {
    let not_started = Report::not_started;
    if let Err(e) = target.prepare(store).await {
        return not_started(e.to_string());
    }
    let live = target.live_revision();
    let plan = match to {
        Some(to) => match target.resolve(to).await {
            Ok(rev) => {
                let record = store
                    .records(key)
                    .await
                    .ok()
                    .and_then(|rs| rs.into_iter().rev().find(|r| r.revision == rev));
                RollbackPlan {
                    revision: rev,
                    record,
                    why: "revision asked for",
                }
            }
            Err(e) => return not_started(e.to_string()),
        },
        None => {
            let records = match store.records(key).await {
                Ok(r) => r,
                Err(e) => return not_started(format!("{e}; pass --to REV")),
            };
            let good = records
                .iter()
                .rev()
                .find(|r| r.known_good && Some(&r.revision) != live.as_ref())
                .cloned();
            match good {
                Some(g) => RollbackPlan {
                    revision: g.revision.clone(),
                    record: Some(g),
                    why: "last known-good revision",
                },
                None => match records
                    .iter()
                    .rev()
                    .find(|r| Some(&r.revision) == live.as_ref())
                    .and_then(|r| r.previous_revision.clone())
                {
                    Some(prev) => RollbackPlan {
                        revision: prev,
                        record: None,
                        why: "revision that ran before",
                    },
                    None => {
                        return not_started(format!(
                            "no known-good revision of {key} in {}; pass --to REV",
                            store.location()
                        ));
                    }
                },
            }
        }
    };
    // The revision the rollback leaves, whose "known good" is withdrawn after success.
    let mut bad = live.clone();
    if live.as_deref() == Some(plan.revision.as_str()) {
        // Already pointed there: only an unfinished earlier rollback (e.g. timed out) is
        // worth finishing; then the revision it left is the bad one.
        let newest = store
            .records(key)
            .await
            .ok()
            .and_then(|rs| rs.into_iter().rev().find(|r| r.revision == plan.revision));
        match newest {
            Some(r) if r.kind == RecordKind::Rollback && r.result == DeployResult::Failed => {
                bad = r.previous_revision.filter(|p| *p != plan.revision);
            }
            _ => {
                let mut r = not_started(format!(
                    "{key} already runs {}",
                    short_revision(&plan.revision)
                ));
                r.live_now = live;
                return r;
            }
        }
    }
    log.line(format!(
        "rolling back {key}: {} -> {} ({})",
        live.as_deref()
            .map(short_revision)
            .unwrap_or("nothing".into()),
        short_revision(&plan.revision),
        plan.why
    ));
    let mut warnings = Vec::new();
    // Not raced against signals: a rollback is the safe way out, so it runs to its end.
    let result = run_rollback(
        target,
        store,
        key,
        &plan,
        bad.as_deref(),
        log,
        &mut warnings,
    )
    .await;
    let mut report = match result {
        Ok(back) => {
            // Only now, with the good revision live, is the bad one's record withdrawn.
            if back.awaited
                && let Some(bad) = &bad
                && let Err(e) = withdraw_known_good(
                    store,
                    key,
                    bad,
                    &format!("rolled back to {} by hand", short_revision(&back.revision)),
                )
                .await
            {
                warnings.push(format!(
                    "could not withdraw \"known good\" from {}: {e}",
                    short_revision(bad)
                ));
            }
            let note = back.note.clone();
            let mut r = Report::new(if back.awaited {
                Outcome::Succeeded {
                    revision: back.revision.clone(),
                    message: format!("rolled back ({}{})", plan.why, note_suffix(&back.note)),
                }
            } else {
                Outcome::Submitted {
                    revision: back.revision.clone(),
                }
            });
            r.live_now = Some(back.revision);
            if !note.is_empty() && !r.message().contains(&note) {
                r.notes.push(note);
            }
            r
        }
        Err(e) => {
            let mut r = Report::new(Outcome::Failed {
                revision: Some(plan.revision.clone()),
                reason: format!("rollback: {e}"),
            });
            r.live_now = Some(format!(
                "unknown (was {})",
                live.as_deref()
                    .map(short_revision)
                    .unwrap_or("nothing".into())
            ));
            r.next = Some(with_history(target.rollback_command(), store));
            r
        }
    };
    report.history_warnings = warnings;
    report
}
