//! The pipeline state machine: from the jobs' states it decides which jobs
//! start now, which are skipped, manual or delayed, whether a failed
//! attempt is retried, and the pipeline's status. GitLab's rules, no I/O,
//! no clock, no async: the in-process dispatcher drives it from channel
//! messages, a server from database rows ([`Schedule::restore`]).
//!
//! A job's gate opens when its `needs` (DAG mode) or every job of the
//! earlier stages (stage mode) are done; `when:` then says what happens.
//! Work per event is proportional to the jobs it affects: stage-mode gates
//! read per-stage counters, not every earlier job.

use crate::error::{SelectionError, closest};
use crate::payload::{AttemptStatus, Failure};
use crate::vars::expand_runner;
use gantry_config::model::{Pipeline, Retry, When};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};

/// A job's final status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Success,
    /// Failed with `allow_failure`: counts as success, with a warning.
    Warning,
    Failed,
    Skipped,
    /// A manual job that was not asked for.
    Manual,
    Canceled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Success => "success",
            JobStatus::Warning => "warning",
            JobStatus::Failed => "failed",
            JobStatus::Skipped => "skipped",
            JobStatus::Manual => "manual",
            JobStatus::Canceled => "canceled",
        }
    }
}

/// Where a job is in the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "status", rename_all = "snake_case")]
pub enum JobState {
    /// Its gate is not decided yet.
    Waiting,
    /// `when: delayed`, waiting for `start_in`.
    Delayed,
    /// May start when a slot (and its resource group) is free.
    Ready,
    Running,
    Done(JobStatus),
}

/// The pipeline's status, as GitLab names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineState {
    Running,
    Success,
    Failed,
    Canceled,
    /// Finished, but a blocking manual job (`allow_failure: false`) waits.
    Blocked,
}

impl PipelineState {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineState::Running => "running",
            PipelineState::Success => "success",
            PipelineState::Failed => "failed",
            PipelineState::Canceled => "canceled",
            PipelineState::Blocked => "blocked",
        }
    }
}

/// Which jobs of the pipeline run, and how.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Selection {
    /// Run only these jobs (names, or a parallel job's definition name);
    /// empty: all.
    pub jobs: Vec<String>,
    /// With `jobs`: add their needs, transitively.
    pub with_needs: bool,
    /// Run one stage only.
    pub stage: Option<String>,
    /// Manual jobs to run.
    pub manual: Vec<String>,
    /// Start delayed jobs without waiting for `start_in`.
    pub no_delay: bool,
    /// Jobs running at once (at least 1).
    pub concurrency: usize,
    /// Start `trigger:include` jobs (the caller runs their child pipelines);
    /// otherwise they are skipped with a reason.
    #[serde(default)]
    pub child_pipelines: bool,
    /// Start `trigger: project` jobs (a server creates the other project's
    /// pipeline); otherwise they are skipped with a reason.
    #[serde(default)]
    pub multi_project_pipelines: bool,
}

/// One job as the state machine sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScheduledJob {
    pub name: String,
    pub stage: String,
    /// Index in `Pipeline::jobs`.
    pub pipeline_index: usize,
    stage_index: usize,
    /// DAG mode: the jobs in `needs` (indices in the schedule).
    needs: Vec<usize>,
    dag: bool,
    when: When,
    /// Named on the command line (a manual job named there runs).
    triggered: bool,
    /// A `trigger:` job (a downstream pipeline on GitLab).
    trigger: bool,
    /// A `trigger:include` job: its downstream pipeline is a child pipeline
    /// of this project (else `trigger: project`, multi-project).
    #[serde(default)]
    child: bool,
    pub allow_failure: bool,
    allow_failure_exit_codes: Vec<i32>,
    retry: Retry,
    pub resource_group: Option<String>,
    /// `start_in` in seconds.
    start_in: u64,
    pub state: JobState,
    /// Attempts started so far.
    pub attempt: u32,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
}

impl ScheduledJob {
    pub fn status(&self) -> Option<JobStatus> {
        match self.state {
            JobState::Done(s) => Some(s),
            _ => None,
        }
    }

    /// `allow_failure` in any form (for the summary).
    pub fn may_fail(&self) -> bool {
        self.allow_failure || !self.allow_failure_exit_codes.is_empty()
    }
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Start attempt `attempt` of the job.
    Start { job: usize, attempt: u32 },
    /// Call [`Schedule::delay_elapsed`] after `seconds`.
    Delay { job: usize, seconds: u64 },
    /// The job is done without (another) attempt, or its last attempt ended.
    Finished {
        job: usize,
        status: JobStatus,
        reason: Option<String>,
    },
    /// The attempt failed and the job goes back to the queue.
    Retry {
        job: usize,
        failed_attempt: u32,
        failure: String,
    },
}

/// A job's stored progress, to rebuild a schedule from database rows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobProgress {
    pub name: String,
    pub state: JobState,
    pub attempt: u32,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
}

/// The serialized form of a [`Schedule`] (indexes are rebuilt on load).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScheduleData {
    pub stages: Vec<String>,
    pub jobs: Vec<ScheduledJob>,
    pub concurrency: usize,
    pub no_delay: bool,
    pub canceled: bool,
    #[serde(default)]
    pub child_pipelines: bool,
    #[serde(default)]
    pub multi_project_pipelines: bool,
}

/// Per-stage counters for stage-mode gates.
#[derive(Clone, Debug, Default)]
struct StageTally {
    /// Jobs of the stage not done yet.
    pending: usize,
    failed: bool,
    /// The first blocking manual job of the stage.
    blocking: Option<usize>,
}

/// The pipeline state machine.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "ScheduleData", into = "ScheduleData")]
pub struct Schedule {
    stages: Vec<String>,
    jobs: Vec<ScheduledJob>,
    concurrency: usize,
    no_delay: bool,
    canceled: bool,
    child_pipelines: bool,
    multi_project_pipelines: bool,
    // Derived (rebuilt by `index`).
    tally: Vec<StageTally>,
    /// DAG dependents of each job.
    dependents: Vec<Vec<usize>>,
    /// Stage-mode jobs of each stage.
    stage_jobs: Vec<Vec<usize>>,
    /// Waiting jobs whose gate may have changed.
    dirty: BTreeSet<usize>,
    ready: BTreeSet<usize>,
    running: usize,
    delayed: usize,
    busy_groups: HashSet<String>,
}

impl From<ScheduleData> for Schedule {
    fn from(d: ScheduleData) -> Schedule {
        let mut s = Schedule {
            stages: d.stages,
            jobs: d.jobs,
            concurrency: d.concurrency.max(1),
            no_delay: d.no_delay,
            canceled: d.canceled,
            child_pipelines: d.child_pipelines,
            multi_project_pipelines: d.multi_project_pipelines,
            tally: Vec::new(),
            dependents: Vec::new(),
            stage_jobs: Vec::new(),
            dirty: BTreeSet::new(),
            ready: BTreeSet::new(),
            running: 0,
            delayed: 0,
            busy_groups: HashSet::new(),
        };
        s.index();
        s
    }
}

impl From<Schedule> for ScheduleData {
    fn from(s: Schedule) -> ScheduleData {
        ScheduleData {
            stages: s.stages,
            jobs: s.jobs,
            concurrency: s.concurrency,
            no_delay: s.no_delay,
            canceled: s.canceled,
            child_pipelines: s.child_pipelines,
            multi_project_pipelines: s.multi_project_pipelines,
        }
    }
}

/// Job indices by name and by definition name, to resolve `needs` and
/// `dependencies` without scanning the pipeline for each.
pub struct JobIndex<'p> {
    by_name: HashMap<&'p str, Vec<usize>>,
    by_definition: HashMap<&'p str, Vec<usize>>,
}

impl<'p> JobIndex<'p> {
    pub fn new(pipeline: &'p Pipeline) -> JobIndex<'p> {
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut by_definition: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, j) in pipeline.jobs.iter().enumerate() {
            by_name.entry(j.name.as_str()).or_default().push(i);
            by_definition
                .entry(j.definition.as_str())
                .or_default()
                .push(i);
        }
        JobIndex {
            by_name,
            by_definition,
        }
    }

    /// The job named `name`, or every instance of a parallel job's definition.
    pub fn resolve(&self, name: &str) -> &[usize] {
        self.by_name
            .get(name)
            .or_else(|| self.by_definition.get(name))
            .map_or(&[], Vec::as_slice)
    }
}

/// Job indices named `name`: the job itself, or every instance of a
/// parallel job's definition.
pub fn resolve(pipeline: &Pipeline, name: &str) -> Vec<usize> {
    let exact: Vec<usize> = pipeline
        .jobs
        .iter()
        .enumerate()
        .filter(|(_, j)| j.name == name)
        .map(|(i, _)| i)
        .collect();
    if !exact.is_empty() {
        return exact;
    }
    pipeline
        .jobs
        .iter()
        .enumerate()
        .filter(|(_, j)| j.definition == name)
        .map(|(i, _)| i)
        .collect()
}

fn unknown_job(pipeline: &Pipeline, name: &str) -> SelectionError {
    let mut names: Vec<&str> = Vec::new();
    for j in &pipeline.jobs {
        if names.last() != Some(&j.definition.as_str()) && j.definition != j.name {
            names.push(&j.definition);
        }
        names.push(&j.name);
    }
    SelectionError::UnknownJob {
        name: name.to_string(),
        suggestion: closest(name, names.iter().copied()),
        known: pipeline.jobs.iter().map(|j| j.name.clone()).collect(),
    }
}

/// The pipeline's jobs selected by `sel`, in pipeline order.
pub fn select_jobs(pipeline: &Pipeline, sel: &Selection) -> Result<Vec<usize>, SelectionError> {
    let mut set: BTreeSet<usize> = BTreeSet::new();
    if sel.jobs.is_empty() {
        set.extend(0..pipeline.jobs.len());
    } else {
        let index = JobIndex::new(pipeline);
        let mut queue: Vec<usize> = Vec::new();
        for name in &sel.jobs {
            let found = index.resolve(name);
            if found.is_empty() {
                return Err(unknown_job(pipeline, name));
            }
            queue.extend(found.iter().copied());
        }
        while let Some(i) = queue.pop() {
            if !set.insert(i) || !sel.with_needs {
                continue;
            }
            if let Some(needs) = &pipeline.jobs[i].needs {
                for n in needs {
                    queue.extend(index.resolve(&n.job).iter().copied());
                }
            }
        }
    }
    if let Some(stage) = &sel.stage {
        if !pipeline.stages.iter().any(|s| s == stage) {
            return Err(SelectionError::UnknownStage {
                name: stage.clone(),
                stages: pipeline.stages.clone(),
            });
        }
        set.retain(|&i| &pipeline.jobs[i].stage == stage);
    }
    if set.is_empty() {
        return Err(SelectionError::NothingSelected);
    }
    Ok(set.into_iter().collect())
}

impl Schedule {
    /// A new schedule: every selected job waiting.
    pub fn plan(pipeline: &Pipeline, sel: &Selection) -> Result<Schedule, SelectionError> {
        if sel.concurrency == 0 {
            return Err(SelectionError::ZeroConcurrency);
        }
        let selected = select_jobs(pipeline, sel)?;
        let index = JobIndex::new(pipeline);
        let mut triggered: HashSet<usize> = HashSet::new();
        for name in sel.manual.iter().chain(sel.jobs.iter()) {
            let found = index.resolve(name);
            if found.is_empty() {
                return Err(unknown_job(pipeline, name));
            }
            triggered.extend(found.iter().copied());
        }
        let stage_index: HashMap<&str, usize> = pipeline
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let position: HashMap<usize, usize> =
            selected.iter().enumerate().map(|(n, &j)| (j, n)).collect();
        let mut jobs = Vec::with_capacity(selected.len());
        for &ji in &selected {
            let job = &pipeline.jobs[ji];
            let needs: Vec<usize> = job
                .needs
                .iter()
                .flatten()
                .flat_map(|n| index.resolve(&n.job))
                .filter_map(|j| position.get(j).copied())
                .collect();
            let resource_group = job.resource_group.as_ref().map(|g| {
                let vars: indexmap::IndexMap<String, String> = pipeline
                    .context_variables
                    .iter()
                    .chain(job.variables.iter())
                    .map(|v| (v.name.clone(), v.value.clone()))
                    .collect();
                expand_runner(g, &vars)
            });
            jobs.push(ScheduledJob {
                name: job.name.clone(),
                stage: job.stage.clone(),
                pipeline_index: ji,
                stage_index: stage_index.get(job.stage.as_str()).copied().unwrap_or(0),
                needs,
                dag: job.needs.is_some(),
                when: job.when,
                triggered: triggered.contains(&ji),
                trigger: job.trigger.is_some(),
                child: !matches!(
                    gantry_config::child::static_child(job),
                    gantry_config::child::ChildSource::None
                ),
                allow_failure: job.allow_failure,
                allow_failure_exit_codes: job.allow_failure_exit_codes.clone(),
                retry: job.retry.clone(),
                resource_group,
                // Parsed once, by the model.
                start_in: job.start_in.as_ref().map_or(0, |s| s.seconds),
                state: JobState::Waiting,
                attempt: 0,
                exit_code: None,
                reason: None,
            });
        }
        Ok(Schedule::from(ScheduleData {
            stages: pipeline.stages.clone(),
            jobs,
            concurrency: sel.concurrency,
            no_delay: sel.no_delay,
            canceled: false,
            child_pipelines: sel.child_pipelines,
            multi_project_pipelines: sel.multi_project_pipelines,
        }))
    }

    /// A schedule rebuilt from stored progress (a server's job rows).
    /// Jobs recorded as running stay running: their outcome is awaited.
    pub fn restore(
        pipeline: &Pipeline,
        sel: &Selection,
        progress: &[JobProgress],
    ) -> Result<Schedule, SelectionError> {
        let mut s = Schedule::plan(pipeline, sel)?;
        let by_name: HashMap<&str, &JobProgress> =
            progress.iter().map(|p| (p.name.as_str(), p)).collect();
        for job in &mut s.jobs {
            if let Some(p) = by_name.get(job.name.as_str()) {
                job.state = p.state;
                job.attempt = p.attempt;
                job.exit_code = p.exit_code;
                job.reason = p.reason.clone();
            }
        }
        s.index();
        Ok(s)
    }

    /// Every job's progress, for storing.
    pub fn progress(&self) -> Vec<JobProgress> {
        self.jobs
            .iter()
            .map(|j| JobProgress {
                name: j.name.clone(),
                state: j.state,
                attempt: j.attempt,
                exit_code: j.exit_code,
                reason: j.reason.clone(),
            })
            .collect()
    }

    fn index(&mut self) {
        let n = self.jobs.len();
        let stages = self
            .jobs
            .iter()
            .map(|j| j.stage_index + 1)
            .max()
            .unwrap_or(0)
            .max(self.stages.len());
        self.tally = vec![StageTally::default(); stages];
        self.dependents = vec![Vec::new(); n];
        self.stage_jobs = vec![Vec::new(); stages];
        self.dirty.clear();
        self.ready.clear();
        self.running = 0;
        self.delayed = 0;
        self.busy_groups.clear();
        for i in 0..n {
            let j = &self.jobs[i];
            if j.dag {
                for &p in &j.needs {
                    self.dependents[p].push(i);
                }
            } else {
                self.stage_jobs[j.stage_index].push(i);
            }
            match j.state {
                JobState::Done(status) => self.count_done(i, status),
                state => {
                    self.tally[j.stage_index].pending += 1;
                    match state {
                        JobState::Waiting => {
                            self.dirty.insert(i);
                        }
                        JobState::Ready => {
                            self.ready.insert(i);
                        }
                        JobState::Delayed => self.delayed += 1,
                        JobState::Running => {
                            self.running += 1;
                            if let Some(g) = &j.resource_group {
                                self.busy_groups.insert(g.clone());
                            }
                        }
                        JobState::Done(_) => {}
                    }
                }
            }
        }
    }

    fn count_done(&mut self, i: usize, status: JobStatus) {
        let j = &self.jobs[i];
        let t = &mut self.tally[j.stage_index];
        match status {
            JobStatus::Failed | JobStatus::Canceled => t.failed = true,
            JobStatus::Manual if !j.allow_failure && t.blocking.is_none() => t.blocking = Some(i),
            _ => {}
        }
    }

    pub fn jobs(&self) -> &[ScheduledJob] {
        &self.jobs
    }

    pub fn job(&self, i: usize) -> &ScheduledJob {
        &self.jobs[i]
    }

    pub fn is_canceled(&self) -> bool {
        self.canceled
    }

    pub fn running(&self) -> usize {
        self.running
    }

    /// Nothing runs and nothing will start without a new event.
    pub fn is_finished(&self) -> bool {
        self.running == 0 && (self.delayed == 0 || self.canceled) && self.ready.is_empty()
    }

    /// The pipeline's status now.
    pub fn status(&self) -> PipelineState {
        if self.canceled {
            return PipelineState::Canceled;
        }
        if self.jobs.iter().any(|j| j.status().is_none()) {
            return PipelineState::Running;
        }
        if self
            .jobs
            .iter()
            .any(|j| matches!(j.status(), Some(JobStatus::Failed | JobStatus::Canceled)))
        {
            PipelineState::Failed
        } else if self
            .jobs
            .iter()
            .any(|j| j.status() == Some(JobStatus::Manual) && !j.allow_failure)
        {
            PipelineState::Blocked
        } else {
            PipelineState::Success
        }
    }

    /// Opens every gate that can open and starts jobs up to the
    /// concurrency limit. Call after every event.
    pub fn step(&mut self) -> Vec<Decision> {
        let mut out = Vec::new();
        if self.canceled {
            return out;
        }
        while let Some(i) = self.dirty.pop_first() {
            if self.jobs[i].state != JobState::Waiting {
                continue;
            }
            let Some(gate) = self.gate(i) else {
                continue;
            };
            match gate {
                Gate::Skip(reason) => self.finish(i, JobStatus::Skipped, Some(reason), &mut out),
                Gate::Open => self.open(i, &mut out),
            }
        }
        self.start_ready(&mut out);
        out
    }

    fn start_ready(&mut self, out: &mut Vec<Decision>) {
        if self.running >= self.concurrency {
            return;
        }
        let mut started = Vec::new();
        for &i in &self.ready {
            if self.running >= self.concurrency {
                break;
            }
            if let Some(g) = &self.jobs[i].resource_group {
                if self.busy_groups.contains(g) {
                    continue;
                }
                self.busy_groups.insert(g.clone());
            }
            self.running += 1;
            started.push(i);
        }
        for i in started {
            self.ready.remove(&i);
            let j = &mut self.jobs[i];
            j.state = JobState::Running;
            j.attempt += 1;
            out.push(Decision::Start {
                job: i,
                attempt: j.attempt,
            });
        }
    }

    /// A delayed job's `start_in` has passed.
    pub fn delay_elapsed(&mut self, i: usize) {
        if self.jobs[i].state == JobState::Delayed {
            self.delayed -= 1;
            self.jobs[i].state = JobState::Ready;
            self.ready.insert(i);
        }
    }

    /// An attempt ended: the job is done, or it is retried.
    pub fn attempt_finished(
        &mut self,
        i: usize,
        status: &AttemptStatus,
        exit_code: Option<i32>,
    ) -> Decision {
        if self.jobs[i].state == JobState::Running {
            self.running -= 1;
            if let Some(g) = &self.jobs[i].resource_group {
                self.busy_groups.remove(g);
            }
        }
        self.jobs[i].exit_code = exit_code;
        let mut out = Vec::new();
        match status {
            AttemptStatus::Success => self.finish(i, JobStatus::Success, None, &mut out),
            AttemptStatus::Canceled => {
                self.finish(i, JobStatus::Canceled, Some("canceled".into()), &mut out)
            }
            AttemptStatus::Failed(failure) => {
                let job = &self.jobs[i];
                if !self.canceled
                    && job.attempt <= job.retry.max
                    && retry_allowed(&job.retry, failure, exit_code)
                {
                    let failed_attempt = job.attempt;
                    self.jobs[i].state = JobState::Ready;
                    self.ready.insert(i);
                    return Decision::Retry {
                        job: i,
                        failed_attempt,
                        failure: failure.retry_kind().into(),
                    };
                }
                let allowed = job.allow_failure
                    || exit_code.is_some_and(|c| job.allow_failure_exit_codes.contains(&c));
                let reason = match failure {
                    Failure::Script => None,
                    Failure::Timeout => Some("timeout".to_string()),
                    Failure::System(m) => Some(m.clone()),
                };
                let status = if allowed {
                    JobStatus::Warning
                } else {
                    JobStatus::Failed
                };
                self.finish(i, status, reason, &mut out)
            }
        }
        out.pop().expect("finish decides")
    }

    /// Ctrl-C or an API cancel: jobs not started are canceled; running ones
    /// report their own (canceled) outcome.
    pub fn cancel(&mut self) -> Vec<Decision> {
        let mut out = Vec::new();
        if self.canceled {
            return out;
        }
        self.canceled = true;
        for i in 0..self.jobs.len() {
            if matches!(
                self.jobs[i].state,
                JobState::Waiting | JobState::Ready | JobState::Delayed
            ) {
                if self.jobs[i].state == JobState::Delayed {
                    self.delayed -= 1;
                }
                self.ready.remove(&i);
                self.finish(i, JobStatus::Canceled, None, &mut out);
            }
        }
        self.dirty.clear();
        out
    }

    fn finish(
        &mut self,
        i: usize,
        status: JobStatus,
        reason: Option<String>,
        out: &mut Vec<Decision>,
    ) {
        let j = &mut self.jobs[i];
        j.state = JobState::Done(status);
        j.reason = reason.clone();
        let stage = j.stage_index;
        self.tally[stage].pending -= 1;
        self.count_done(i, status);
        self.dirty.extend(self.dependents[i].iter().copied());
        if self.tally[stage].pending == 0 {
            // Later stages' gates may open now.
            for s in stage + 1..self.stage_jobs.len() {
                self.dirty.extend(self.stage_jobs[s].iter().copied());
                if self.tally[s].pending > 0 {
                    break;
                }
            }
        }
        out.push(Decision::Finished {
            job: i,
            status,
            reason,
        });
    }

    fn open(&mut self, i: usize, out: &mut Vec<Decision>) {
        let j = &self.jobs[i];
        let started_elsewhere = if j.child {
            self.child_pipelines
        } else {
            self.multi_project_pipelines
        };
        if j.trigger && !started_elsewhere {
            let reason = if !j.child {
                "multi-project trigger (`trigger: project`): it runs another project's pipeline on GitLab; not run locally"
            } else {
                "trigger jobs start child pipelines; this run does not run them"
            };
            self.finish(i, JobStatus::Skipped, Some(reason.into()), out);
            return;
        }
        match j.when {
            When::Manual if !j.triggered => {
                let reason = format!("manual: run it with --manual '{}'", j.name);
                self.finish(i, JobStatus::Manual, Some(reason), out);
            }
            When::Delayed if !self.no_delay && j.start_in > 0 => {
                let seconds = j.start_in;
                self.jobs[i].state = JobState::Delayed;
                self.delayed += 1;
                out.push(Decision::Delay { job: i, seconds });
            }
            _ => {
                self.jobs[i].state = JobState::Ready;
                self.ready.insert(i);
            }
        }
    }

    /// GitLab's gate: `None` while a prerequisite is pending.
    fn gate(&self, i: usize) -> Option<Gate> {
        let j = &self.jobs[i];
        let (failed, blocking, not_run) = if j.dag {
            let mut failed = false;
            let mut blocking = None;
            let mut not_run = None;
            for &p in &j.needs {
                let pj = &self.jobs[p];
                match pj.status()? {
                    JobStatus::Success | JobStatus::Warning => {}
                    JobStatus::Failed | JobStatus::Canceled => failed = true,
                    JobStatus::Manual if !pj.allow_failure => {
                        blocking = blocking.or(Some(p));
                        not_run = not_run.or(Some(p));
                    }
                    JobStatus::Manual | JobStatus::Skipped => not_run = not_run.or(Some(p)),
                }
            }
            (failed, blocking, not_run)
        } else {
            let earlier = &self.tally[..j.stage_index];
            if earlier.iter().any(|t| t.pending > 0) {
                return None;
            }
            (
                earlier.iter().any(|t| t.failed),
                earlier.iter().find_map(|t| t.blocking),
                None,
            )
        };
        let name = |p: usize| self.jobs[p].name.clone();
        Some(match j.when {
            When::Always => Gate::Open,
            When::Never => Gate::Skip("when: never".into()),
            When::OnFailure => {
                if failed {
                    Gate::Open
                } else {
                    Gate::Skip("when: on_failure, and nothing failed".into())
                }
            }
            When::OnSuccess | When::Manual | When::Delayed => {
                if failed {
                    Gate::Skip(if j.dag {
                        "a needed job failed".into()
                    } else {
                        "an earlier stage failed".into()
                    })
                } else if let Some(p) = not_run {
                    Gate::Skip(format!("needed job `{}` did not run", name(p)))
                } else if let Some(p) = blocking {
                    Gate::Skip(format!("blocked by manual job `{}`", name(p)))
                } else {
                    Gate::Open
                }
            }
        })
    }
}

enum Gate {
    Open,
    Skip(String),
}

/// Whether a failed attempt may be retried (`retry:when`, `retry:exit_codes`).
pub fn retry_allowed(retry: &Retry, failure: &Failure, exit_code: Option<i32>) -> bool {
    let kind = failure.retry_kind();
    let when_ok = retry.when.is_empty()
        || retry.when.iter().any(|w| {
            w == "always"
                || w == kind
                || (w == "unknown_failure" && matches!(failure, Failure::System(_)))
                || (w == "job_execution_timeout" && *failure == Failure::Timeout)
        });
    let code_ok =
        retry.exit_codes.is_empty() || exit_code.is_some_and(|c| retry.exit_codes.contains(&c));
    when_ok && code_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_rules() {
        let r = Retry {
            max: 2,
            when: vec!["script_failure".into()],
            exit_codes: vec![],
        };
        assert!(retry_allowed(&r, &Failure::Script, Some(1)));
        assert!(!retry_allowed(&r, &Failure::Timeout, None));
        let r = Retry {
            max: 1,
            when: vec![],
            exit_codes: vec![137],
        };
        assert!(retry_allowed(&r, &Failure::Script, Some(137)));
        assert!(!retry_allowed(&r, &Failure::Script, Some(1)));
    }
}
