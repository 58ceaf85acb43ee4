//! The dispatcher: one task owns the run; job attempts run as their own
//! tasks and report lines and outcomes over channels. GitLab's scheduling
//! rules live in [`crate::schedule`]; this module only drives them, and
//! takes everything else from its caller ([`Ports`]): where records, logs
//! and archives go, where events go, where sources come from, and which
//! executors exist.
//!
//! There are no waves and no polling: the loop wakes on a message (a line,
//! a finished attempt, an elapsed delay, Ctrl-C).

use crate::job::{self, JobPorts, JobSignal};
use crate::local::{LocalSources, LocalStore};
use crate::payload::{ArtifactRef, AttemptStatus, Failure, JobOutcome, JobPayload};
use crate::ports::{
    ChildPlanner, ConnectExecutor, EventSink, ExecutorRegistry, RunInfo, RunStore, SourceProvider,
};
use crate::report::{Event, SummaryRow};
use crate::schedule::{Decision, Schedule, Selection};
use crate::shell::ShellExecutor;
use crate::state::{JobRecord, RunManifest, slugify};
use crate::vars::VarSet;
use gantry_config::model::{Pipeline, Variable, When};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

use crate::error::ChildPipelineError;
pub use crate::error::EngineError;
pub use crate::schedule::JobStatus;
pub use crate::schedule::PipelineState as RunStatus;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    Shell,
    Docker,
}

impl ExecutorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Shell => "shell",
            ExecutorKind::Docker => "docker",
        }
    }
}

/// How `gantry run` runs a pipeline of a local repository.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The repository root (`.gantry/` lives there).
    pub repo_dir: PathBuf,
    /// The commit to run; the jobs get clean copies of it.
    pub sha: String,
    /// Run only these jobs (names, or a parallel job's definition name).
    pub jobs: Vec<String>,
    /// With `jobs`: add their needs, transitively.
    pub with_needs: bool,
    /// Run one stage only.
    pub stage: Option<String>,
    /// Manual jobs to run.
    pub manual: Vec<String>,
    /// Start delayed jobs without waiting for `start_in`.
    pub no_delay: bool,
    /// Jobs running at once; 0 = the number of cores.
    pub concurrency: usize,
    /// Force every job onto one executor.
    pub executor: Option<ExecutorKind>,
    /// Command-line and variables-file variables (highest precedence).
    pub variables: Vec<Variable>,
    /// Run the working tree as it is instead of the commit `sha`.
    pub working_tree: bool,
    /// Plans the child pipelines of `trigger:include` jobs; without one they
    /// are skipped.
    pub children: ChildPlanners,
}

/// The caller's [`ChildPlanner`], if any.
#[derive(Clone, Default)]
pub struct ChildPlanners(pub Option<Arc<dyn ChildPlanner>>);

impl std::fmt::Debug for ChildPlanners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ChildPlanners(Some)"
        } else {
            "ChildPlanners(None)"
        })
    }
}

impl RunOptions {
    /// The dispatcher's request for these options.
    pub fn request(&self) -> RunRequest {
        let concurrency = if self.concurrency == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            self.concurrency
        };
        RunRequest {
            sha: self.sha.clone(),
            selection: Selection {
                jobs: self.jobs.clone(),
                with_needs: self.with_needs,
                stage: self.stage.clone(),
                manual: self.manual.clone(),
                no_delay: self.no_delay,
                concurrency,
                child_pipelines: self.children.0.is_some(),
                // No server here: `trigger: project` is skipped with a reason.
                multi_project_pipelines: false,
            },
            executor: self.executor.map(|e| e.as_str().to_string()),
            variables: self.variables.clone(),
        }
    }
}

/// Creates the docker executor; called only when a selected job needs it.
pub type DockerConnect = ConnectExecutor;

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct RunRequest {
    pub sha: String,
    pub selection: Selection,
    /// Run every job on this executor (default: `docker` for jobs with
    /// `image:`, `shell` for the others).
    pub executor: Option<String>,
    /// Variables with the highest precedence (command line, variables file).
    pub variables: Vec<Variable>,
}

/// The dispatcher's ports, from its caller.
pub struct Ports<'a> {
    pub store: Arc<dyn RunStore>,
    pub sources: Arc<dyn SourceProvider>,
    pub executors: ExecutorRegistry,
    pub events: &'a mut dyn EventSink,
    /// Plans child pipelines (needed when the request runs them).
    pub children: Option<Arc<dyn ChildPlanner>>,
}

#[derive(Clone, Debug)]
pub struct JobReport {
    pub name: String,
    pub stage: String,
    pub status: JobStatus,
    pub allow_failure: bool,
    pub duration: Option<Duration>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub attempts: u32,
    /// `CI_JOB_ID` of the last attempt (0 if it never started).
    pub job_id: u64,
    pub junit_failures: Vec<String>,
    pub log: PathBuf,
    pub build_dir: Option<PathBuf>,
    pub artifact: Option<PathBuf>,
    pub dotenv: Vec<(String, String)>,
    /// A trigger job's child pipeline, when it ran.
    pub child: Option<Box<RunReport>>,
}

#[derive(Clone, Debug)]
pub struct RunReport {
    pub run_id: String,
    /// `CI_PIPELINE_ID`.
    pub pipeline_id: u64,
    /// The run's directory (its builds are in `builds/`).
    pub run_dir: PathBuf,
    pub status: RunStatus,
    pub duration: Duration,
    pub jobs: Vec<JobReport>,
}

impl RunReport {
    /// Whether the pipeline succeeded (a blocked pipeline did not fail).
    pub fn succeeded(&self) -> bool {
        matches!(self.status, RunStatus::Success | RunStatus::Blocked)
    }

    /// 0 when the pipeline succeeded (or waits on a manual job), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.succeeded() { 0 } else { 1 }
    }

    pub fn job(&self, name: &str) -> Option<&JobReport> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

/// Runs the pipeline of a local repository: `.gantry/` for records, the
/// commit's snapshot for sources, the shell executor and (when `docker` is
/// given) the docker executor. Output goes to `events`; Ctrl-C is `cancel`.
pub async fn run_pipeline(
    pipeline: &Pipeline,
    opts: RunOptions,
    docker: Option<DockerConnect>,
    events: &mut dyn EventSink,
    cancel: CancellationToken,
) -> Result<RunReport, EngineError> {
    let request = opts.request();
    // A bad selection is reported before anything is written.
    Schedule::plan(pipeline, &request.selection)?;
    let repo_dir = opts.repo_dir.clone();
    let sha = opts.sha.clone();
    let working_tree = opts.working_tree;
    let sources = tokio::task::spawn_blocking(move || {
        if working_tree {
            LocalSources::working_tree(&repo_dir)
        } else {
            LocalSources::open(&repo_dir, &sha)
        }
    })
    .await
    .map_err(|e| EngineError::Runtime(std::io::Error::other(e)))??;
    let mut executors = ExecutorRegistry::new();
    executors.insert("shell", Arc::new(ShellExecutor::new()));
    match docker {
        Some(connect) => executors.insert_lazy("docker", connect),
        None => executors.insert_lazy(
            "docker",
            Box::new(|| {
                Box::pin(async {
                    Err(crate::executor::ExecError::Setup(
                        "the docker executor is not available".into(),
                    ))
                })
            }),
        ),
    }
    let ports = Ports {
        store: Arc::new(LocalStore::new(&opts.repo_dir)),
        sources: Arc::new(sources),
        executors,
        events,
        children: opts.children.0.clone(),
    };
    dispatch(pipeline, request, ports, cancel).await
}

/// [`run_pipeline`] on a runtime of its own; Ctrl-C or SIGTERM cancels the
/// run cleanly (process groups killed, executors shut down).
pub fn run_blocking(
    pipeline: &Pipeline,
    opts: RunOptions,
    docker: Option<DockerConnect>,
    events: &mut dyn EventSink,
) -> Result<RunReport, EngineError> {
    // One thread: the run is I/O-bound (waiting on processes and pipes), and
    // every hand-off between threads costs a wake-up on a busy machine.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(EngineError::Runtime)?;
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        let on_signal = cancel.clone();
        let watcher = tokio::spawn(async move {
            wait_for_interrupt().await;
            on_signal.cancel();
            // A second interrupt while cleaning up: leave at once.
            wait_for_interrupt().await;
            std::process::exit(crate::EXIT_INTERRUPTED);
        });
        let result = run_pipeline(pipeline, opts, docker, events, cancel).await;
        watcher.abort();
        result
    })
}

/// Ctrl-C or SIGTERM.
async fn wait_for_interrupt() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The dispatcher's own facts about one job of the schedule.
struct JobRun {
    slug: String,
    executor: String,
    job_id: u64,
    started: Option<Instant>,
    duration: Option<Duration>,
    outcome: Option<JobOutcome>,
}

/// Runs `pipeline` with the caller's ports until every job is done or the
/// run is canceled.
pub async fn dispatch(
    pipeline: &Pipeline,
    request: RunRequest,
    ports: Ports<'_>,
    cancel: CancellationToken,
) -> Result<RunReport, EngineError> {
    dispatch_run(pipeline, request, ports, cancel, false).await
}

/// [`dispatch`]; a child pipeline (`nested`) shares its parent's
/// executors and leaves their shutdown to it.
async fn dispatch_run(
    pipeline: &Pipeline,
    request: RunRequest,
    ports: Ports<'_>,
    cancel: CancellationToken,
    nested: bool,
) -> Result<RunReport, EngineError> {
    let run_started = Instant::now();
    let schedule = Schedule::plan(pipeline, &request.selection)?;
    let info = ports.store.create_run(&request.sha)?;
    let ids = ports.store.allocate_job_ids(schedule.jobs().len() as u64)?;
    let mut slugs: HashSet<String> = HashSet::new();
    let runs: Vec<JobRun> = schedule
        .jobs()
        .iter()
        .zip(ids)
        .map(|(sj, job_id)| {
            let job = &pipeline.jobs[sj.pipeline_index];
            let base = slugify(&job.name);
            let mut slug = base.clone();
            let mut n = 2;
            while !slugs.insert(slug.clone()) {
                slug = format!("{base}-{n}");
                n += 1;
            }
            let executor = request.executor.clone().unwrap_or_else(|| {
                if job.image.is_some() {
                    "docker"
                } else {
                    "shell"
                }
                .to_string()
            });
            JobRun {
                slug,
                executor,
                job_id,
                started: None,
                duration: None,
                outcome: None,
            }
        })
        .collect();
    let mut d = Dispatcher {
        pipeline,
        request: &request,
        schedule,
        runs,
        info,
        store: ports.store,
        sources: ports.sources,
        executors: ports.executors,
        events: Arc::new(std::sync::Mutex::new(ports.events)),
        children: ports.children,
        child_launches: Vec::new(),
        child_reports: HashMap::new(),
        executor_notes: HashSet::new(),
        by_pipeline_index: HashMap::new(),
        index: crate::schedule::JobIndex::new(pipeline),
    };
    d.by_pipeline_index = d
        .schedule
        .jobs()
        .iter()
        .enumerate()
        .map(|(si, j)| (j.pipeline_index, si))
        .collect();
    d.emit(&Event::RunStarted {
        run_id: d.info.run_id.clone(),
        pipeline_id: d.info.pipeline_id,
        sha: request.sha.clone(),
        jobs: d.schedule.jobs().iter().map(|j| j.name.clone()).collect(),
    });
    // The record exists from the start: `gantry logs` finds live logs.
    d.store.finish_run(&d.manifest("running"))?;
    d.run_loop(&cancel).await;

    if !nested {
        for (name, e) in d.executors.shutdown().await {
            d.emit(&Event::Note {
                message: format!("{name} executor shutdown: {e}"),
            });
        }
    }
    let status = d.schedule.status();
    let duration = run_started.elapsed();
    let report = d.report(status, duration);
    d.store.finish_run(&d.manifest(status.as_str()))?;
    d.emit(&Event::RunFinished {
        run_id: d.info.run_id.clone(),
        status: status.as_str().into(),
        duration_ms: duration.as_millis() as u64,
        jobs: summary_rows(&report.jobs, None),
    });
    Ok(report)
}

/// Summary rows of `jobs`, each trigger job followed by its child
/// pipeline's jobs (marked with the trigger job's name).
fn summary_rows(jobs: &[JobReport], child_of: Option<&str>) -> Vec<SummaryRow> {
    let mut rows = Vec::new();
    for j in jobs {
        rows.push(SummaryRow {
            job: j.name.clone(),
            stage: j.stage.clone(),
            status: j.status.as_str().into(),
            duration_ms: j.duration.map(|d| d.as_millis() as u64),
            allow_failure: j.allow_failure,
            reason: j.reason.clone(),
            junit_failures: j.junit_failures.clone(),
            child_of: child_of.map(str::to_string),
        });
        if let Some(child) = &j.child {
            rows.extend(summary_rows(&child.jobs, Some(&j.name)));
        }
    }
    rows
}

/// The event sink, shared by a run and its child pipelines (they run in
/// the same task; the lock is only ever held for one `emit`).
type SharedEvents<'a> = Arc<std::sync::Mutex<&'a mut dyn EventSink>>;

/// A child pipeline's events, into its parent's sink: its jobs named
/// `TRIGGER > JOB`, its start and end as notes.
struct ChildEvents<'a> {
    parent: SharedEvents<'a>,
    trigger: String,
}

impl EventSink for ChildEvents<'_> {
    fn emit(&mut self, event: &Event) {
        let rename = |job: &str| format!("{} > {job}", self.trigger);
        let event = match event.clone() {
            Event::RunStarted {
                run_id,
                pipeline_id,
                jobs,
                ..
            } => Event::Note {
                message: format!(
                    "child pipeline of `{}`: pipeline #{pipeline_id} (run {run_id}), {} job(s)",
                    self.trigger,
                    jobs.len()
                ),
            },
            // The parent reports the end, with the child's rows.
            Event::RunFinished { .. } => return,
            Event::JobStarted {
                job,
                stage,
                attempt,
                executor,
                job_id,
            } => Event::JobStarted {
                job: rename(&job),
                stage,
                attempt,
                executor,
                job_id,
            },
            Event::JobStage { job, stage } => Event::JobStage {
                job: rename(&job),
                stage,
            },
            Event::Log { job, line, stream } => Event::Log {
                job: rename(&job),
                line,
                stream,
            },
            Event::JobFinished {
                job,
                stage,
                status,
                duration_ms,
                exit_code,
                allow_failure,
                reason,
                attempt,
                junit_failures,
            } => Event::JobFinished {
                job: rename(&job),
                stage,
                status,
                duration_ms,
                exit_code,
                allow_failure,
                reason,
                attempt,
                junit_failures,
            },
            Event::Note { message } => Event::Note {
                message: format!("{} (child): {message}", self.trigger),
            },
        };
        self.parent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .emit(&event);
    }
}

/// A child pipeline running (its trigger job's index, its report).
type ChildRun<'a> = futures_util::future::BoxFuture<'a, (usize, Result<RunReport, EngineError>)>;

struct Dispatcher<'a> {
    pipeline: &'a Pipeline,
    request: &'a RunRequest,
    schedule: Schedule,
    runs: Vec<JobRun>,
    info: RunInfo,
    store: Arc<dyn RunStore>,
    sources: Arc<dyn SourceProvider>,
    executors: ExecutorRegistry,
    events: SharedEvents<'a>,
    children: Option<Arc<dyn ChildPlanner>>,
    /// Child pipelines planned by trigger jobs, to start.
    child_launches: Vec<(usize, Pipeline)>,
    /// Finished child pipelines, by trigger job.
    child_reports: HashMap<usize, RunReport>,
    /// Executors whose unavailability was reported.
    executor_notes: HashSet<String>,
    /// Schedule index of each selected job, by its index in the pipeline.
    by_pipeline_index: std::collections::HashMap<usize, usize>,
    index: crate::schedule::JobIndex<'a>,
}

type Done = UnboundedSender<(usize, JobOutcome)>;
type Signals = tokio::sync::mpsc::Sender<(usize, JobSignal)>;

/// Lines and stage events in flight between all jobs and the event sink: a
/// sink slower than the jobs' output makes them wait (on their pipes).
pub const SIGNALS_IN_FLIGHT: usize = 1024;
/// Signals one job may have queued before its own forwarder.
const JOB_SIGNALS_IN_FLIGHT: usize = 64;

impl<'a> Dispatcher<'a> {
    fn emit(&self, event: &Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .emit(event);
    }

    /// The child pipeline of trigger job `i`, dispatched with this run's
    /// store, sources and executors; its events go to this run's sink.
    fn child_run(&self, i: usize, child: Pipeline, cancel: &CancellationToken) -> ChildRun<'a> {
        let trigger = self.schedule.job(i).name.clone();
        let parent = self.events.clone();
        let store = self.store.clone();
        let sources = self.sources.clone();
        let executors = self.executors.clone();
        let mut request = RunRequest {
            sha: self.request.sha.clone(),
            selection: Selection {
                concurrency: self.request.selection.concurrency,
                no_delay: self.request.selection.no_delay,
                ..Selection::default()
            },
            executor: self.request.executor.clone(),
            // Forwarded (or not) by the planner, as `trigger:forward` says.
            variables: Vec::new(),
        };
        request.selection.child_pipelines = false;
        let cancel = cancel.child_token();
        Box::pin(async move {
            let mut sink = ChildEvents { parent, trigger };
            let ports = Ports {
                store,
                sources,
                executors,
                events: &mut sink,
                children: None,
            };
            let result = dispatch_run(&child, request, ports, cancel, true).await;
            (i, result)
        })
    }

    /// A child pipeline ended: its report, and its status on the trigger
    /// job with `strategy: depend`.
    fn child_finished(&mut self, i: usize, result: Result<RunReport, EngineError>) {
        let trigger = self.schedule.job(i).name.clone();
        let depend = trigger_depends(&self.pipeline.jobs[self.schedule.job(i).pipeline_index]);
        let outcome = match result {
            Ok(report) => {
                self.emit(&Event::Note {
                    message: format!(
                        "child pipeline of `{trigger}` (pipeline #{}): {}",
                        report.pipeline_id,
                        report.status.as_str()
                    ),
                });
                let status = match report.status {
                    RunStatus::Success | RunStatus::Blocked => AttemptStatus::Success,
                    RunStatus::Canceled => AttemptStatus::Canceled,
                    RunStatus::Failed | RunStatus::Running => {
                        AttemptStatus::Failed(Failure::Script)
                    }
                };
                let failed = matches!(status, AttemptStatus::Failed(_));
                self.child_reports.insert(i, report);
                JobOutcome {
                    status,
                    reason: failed.then(|| "the child pipeline failed".to_string()),
                    ..JobOutcome::system_failure(String::new())
                }
            }
            Err(e) => {
                self.emit(&Event::Note {
                    message: format!("child pipeline of `{trigger}` could not run: {e}"),
                });
                JobOutcome::system_failure(format!("the child pipeline could not run: {e}"))
            }
        };
        if depend {
            self.attempt_finished(i, outcome);
        }
    }

    async fn run_loop(&mut self, cancel: &CancellationToken) {
        let (signal_tx, mut signal_rx) =
            tokio::sync::mpsc::channel::<(usize, JobSignal)>(SIGNALS_IN_FLIGHT);
        let (done_tx, mut done_rx) = unbounded_channel::<(usize, JobOutcome)>();
        let (delay_tx, mut delay_rx) = unbounded_channel::<usize>();
        let job_cancel = cancel.child_token();
        let mut children = futures_util::stream::FuturesUnordered::<ChildRun<'a>>::new();
        loop {
            let decisions = self.schedule.step();
            for decision in decisions {
                self.apply(decision, &signal_tx, &done_tx, &delay_tx, &job_cancel)
                    .await;
            }
            for (i, child) in std::mem::take(&mut self.child_launches) {
                children.push(self.child_run(i, child, &job_cancel));
            }
            // A child pipeline whose trigger job did not wait for it still
            // belongs to the run.
            if self.schedule.is_finished() && children.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some((i, signal)) = signal_rx.recv() => self.signal(i, signal),
                Some((i, result)) = futures_util::StreamExt::next(&mut children), if !children.is_empty() => {
                    self.child_finished(i, result);
                }
                Some((i, outcome)) = done_rx.recv() => {
                    // Lines sent before the outcome are queued: show them first.
                    while let Ok((li, signal)) = signal_rx.try_recv() {
                        self.signal(li, signal);
                    }
                    self.attempt_finished(i, outcome);
                }
                Some(i) = delay_rx.recv() => self.schedule.delay_elapsed(i),
                _ = cancel.cancelled(), if !self.schedule.is_canceled() => {
                    job_cancel.cancel();
                    self.emit(&Event::Note { message: "canceling the run...".into() });
                    for decision in self.schedule.cancel() {
                        self.apply(decision, &signal_tx, &done_tx, &delay_tx, &job_cancel).await;
                    }
                }
            }
        }
        while let Ok((li, signal)) = signal_rx.try_recv() {
            self.signal(li, signal);
        }
    }

    fn signal(&mut self, i: usize, signal: JobSignal) {
        let job = self.schedule.job(i).name.clone();
        match signal {
            JobSignal::Line { text, stream } => self.emit(&Event::Log {
                job,
                line: text,
                stream,
            }),
            JobSignal::Stage(stage) => self.emit(&Event::JobStage {
                job,
                stage: stage.as_str().into(),
            }),
        }
    }

    async fn apply(
        &mut self,
        decision: Decision,
        signals: &Signals,
        done: &Done,
        delays: &UnboundedSender<usize>,
        cancel: &CancellationToken,
    ) {
        match decision {
            Decision::Start { job, attempt } => {
                self.start(job, attempt, signals, done, cancel).await
            }
            Decision::Delay { job, seconds } => {
                let wait = Duration::from_secs(seconds);
                self.emit(&Event::Note {
                    message: format!(
                        "{}: delayed, starts in {}",
                        self.schedule.job(job).name,
                        crate::report::fmt_duration(wait)
                    ),
                });
                let tx = delays.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = tx.send(job);
                });
            }
            Decision::Finished { job, .. } => self.finished(job),
            Decision::Retry {
                job,
                failed_attempt,
                failure,
            } => self.emit(&Event::Note {
                message: format!(
                    "{}: attempt {failed_attempt} failed ({failure}), retrying",
                    self.schedule.job(job).name
                ),
            }),
        }
    }

    async fn start(
        &mut self,
        i: usize,
        attempt: u32,
        signals: &Signals,
        done: &Done,
        cancel: &CancellationToken,
    ) {
        if attempt > 1 {
            // A retry is a new job on GitLab: a new id.
            match self.store.allocate_job_ids(1) {
                Ok(ids) => self.runs[i].job_id = ids.start,
                Err(e) => {
                    let _ = done.send((i, JobOutcome::system_failure(e.to_string())));
                    return;
                }
            }
        }
        let pipeline_index = self.schedule.job(i).pipeline_index;
        if self.pipeline.jobs[pipeline_index].trigger.is_some() {
            self.start_trigger(i, attempt, done);
            return;
        }
        let run = &mut self.runs[i];
        run.started.get_or_insert_with(Instant::now);
        let executor_name = run.executor.clone();
        let job_id = run.job_id;
        let sj = self.schedule.job(i);
        self.emit(&Event::JobStarted {
            job: sj.name.clone(),
            stage: sj.stage.clone(),
            attempt,
            executor: executor_name.clone(),
            job_id,
        });
        let executor = match self.executors.get(&executor_name).await {
            Ok(e) => e,
            Err(reason) => {
                if self.executor_notes.insert(executor_name.clone()) {
                    self.emit(&Event::Note {
                        message: format!(
                            "{executor_name} executor unavailable: {reason} (its jobs fail; --executor shell runs them on the host)"
                        ),
                    });
                }
                let _ = done.send((
                    i,
                    JobOutcome::system_failure(format!("{executor_name}: {reason}")),
                ));
                return;
            }
        };
        let payload = self.payload(i, attempt, &executor_name);
        let log = match self.store.open_log(&self.info.run_id, &self.runs[i].slug) {
            Ok(log) => log,
            Err(e) => {
                let _ = done.send((i, JobOutcome::system_failure(e.to_string())));
                return;
            }
        };
        let (job_tx, mut job_rx) = tokio::sync::mpsc::channel(JOB_SIGNALS_IN_FLIGHT);
        let ports = JobPorts {
            log,
            signals: Some(job_tx),
            blobs: self.store.blobs(),
            sources: self.sources.clone(),
            executor,
            builds_dir: self.info.builds_dir.clone(),
            state_dir: self.info.state_dir.clone(),
        };
        let done = done.clone();
        let cancel = cancel.clone();
        let signals = signals.clone();
        tokio::spawn(async move {
            // Tags the job's signals with its index; waits while the
            // dispatcher is behind. Ends when the attempt drops its sender.
            let forward = async move {
                while let Some(signal) = job_rx.recv().await {
                    if signals.send((i, signal)).await.is_err() {
                        break;
                    }
                }
            };
            let (outcome, ()) = tokio::join!(job::run_job(payload, ports, cancel), forward);
            // After the last signal: the dispatcher shows every line first.
            let _ = done.send((i, outcome));
        });
    }

    /// A `trigger:include` job: plans its child pipeline (from its files,
    /// or from an artifact of an earlier job), which then runs beside this
    /// run's jobs. Without `strategy: depend` the job succeeds once the
    /// child exists; with it, it ends with the child.
    fn start_trigger(&mut self, i: usize, attempt: u32, done: &Done) {
        self.runs[i].started.get_or_insert_with(Instant::now);
        let sj = self.schedule.job(i);
        let job = &self.pipeline.jobs[sj.pipeline_index];
        self.emit(&Event::JobStarted {
            job: sj.name.clone(),
            stage: sj.stage.clone(),
            attempt,
            executor: "trigger".into(),
            job_id: self.runs[i].job_id,
        });
        let planned = match &self.children {
            None => Err(ChildPipelineError::Invalid(
                "this run has no child pipeline planner".into(),
            )),
            Some(planner) => match gantry_config::child::static_child(job) {
                gantry_config::child::ChildSource::Artifact {
                    job: from,
                    artifact,
                } => self.artifact_text(&from, &artifact).and_then(|text| {
                    let name = format!("{artifact} (artifact of `{from}`)");
                    planner.plan_child(job, Some((&name, &text)))
                }),
                _ => planner.plan_child(job, None),
            },
        };
        let planned = planned.and_then(|child| {
            if child.jobs.is_empty()
                || child.status == gantry_config::model::PipelineStatus::Filtered
            {
                Err(ChildPipelineError::Empty)
            } else {
                Ok(child)
            }
        });
        match planned {
            Ok(child) => {
                let depend = trigger_depends(job);
                self.child_launches.push((i, child));
                if !depend {
                    // GitLab: the trigger job succeeds once its child exists.
                    let mut created = JobOutcome::system_failure(String::new());
                    created.status = AttemptStatus::Success;
                    created.reason = None;
                    let _ = done.send((i, created));
                }
            }
            Err(e) => {
                let _ = done.send((i, JobOutcome::system_failure(e.to_string())));
            }
        }
    }

    /// The text of `path` in the artifacts job `from` made in this run.
    fn artifact_text(&self, from: &str, path: &str) -> Result<String, ChildPipelineError> {
        let missing = |reason: String| ChildPipelineError::MissingArtifact {
            job: from.to_string(),
            path: path.to_string(),
            reason,
        };
        let artifact = self
            .index
            .resolve(from)
            .iter()
            .filter_map(|p| self.by_pipeline_index.get(p))
            .filter_map(|&si| self.runs[si].outcome.as_ref())
            .find_map(|o| o.artifact.clone())
            .ok_or_else(|| missing("that job made no artifacts in this run".into()))?;
        let zip_path = self
            .store
            .blobs()
            .artifact_path(&artifact)
            .map_err(|e| missing(e.to_string()))?;
        let file = std::fs::File::open(&zip_path).map_err(|e| missing(e.to_string()))?;
        let mut archive = zip::ZipArchive::new(file).map_err(|e| missing(e.to_string()))?;
        let mut entry = archive
            .by_name(path.trim_start_matches("./"))
            .map_err(|e| missing(e.to_string()))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).map_err(|e| missing(e.to_string()))?;
        Ok(text)
    }

    fn attempt_finished(&mut self, i: usize, outcome: JobOutcome) {
        let decision = self
            .schedule
            .attempt_finished(i, &outcome.status, outcome.exit_code);
        let run = &mut self.runs[i];
        // A failed attempt's build directory may be gone; keep the last known.
        let previous_dir = run.outcome.as_ref().and_then(|o| o.build_dir.clone());
        let mut outcome = outcome;
        if outcome.build_dir.is_none() {
            outcome.build_dir = previous_dir;
        }
        run.outcome = Some(outcome);
        match decision {
            Decision::Finished { job, .. } => self.finished(job),
            Decision::Retry {
                job,
                failed_attempt,
                failure,
            } => self.emit(&Event::Note {
                message: format!(
                    "{}: attempt {failed_attempt} failed ({failure}), retrying",
                    self.schedule.job(job).name
                ),
            }),
            _ => {}
        }
    }

    /// A job reached its final status: event and record.
    fn finished(&mut self, i: usize) {
        let run = &mut self.runs[i];
        run.duration = run.started.map(|s| s.elapsed());
        let run = &self.runs[i];
        let sj = self.schedule.job(i);
        let status = sj.status().unwrap_or(JobStatus::Canceled);
        let outcome = run.outcome.as_ref();
        let reason = sj
            .reason
            .clone()
            .or_else(|| outcome.and_then(|o| o.reason.clone()));
        self.emit(&Event::JobFinished {
            job: sj.name.clone(),
            stage: sj.stage.clone(),
            status: status.as_str().into(),
            duration_ms: run.duration.map(|d| d.as_millis() as u64),
            exit_code: sj.exit_code,
            allow_failure: sj.may_fail(),
            reason,
            attempt: sj.attempt,
            junit_failures: outcome
                .map(|o| o.junit_failures.clone())
                .unwrap_or_default(),
        });
        let record = self.record(i);
        if let Err(e) = self.store.record_job(&self.info.run_id, &record) {
            self.emit(&Event::Note {
                message: format!("cannot record {}: {e}", record.name),
            });
        }
    }

    fn record(&self, i: usize) -> JobRecord {
        let sj = self.schedule.job(i);
        let run = &self.runs[i];
        let outcome = run.outcome.as_ref();
        let status = match sj.state {
            crate::schedule::JobState::Done(s) => s.as_str(),
            crate::schedule::JobState::Running => "running",
            _ => "pending",
        };
        let log = self.store.log_location(&self.info.run_id, &run.slug);
        JobRecord {
            name: sj.name.clone(),
            slug: run.slug.clone(),
            stage: sj.stage.clone(),
            status: status.into(),
            job_id: run.job_id,
            attempts: sj.attempt,
            exit_code: sj.exit_code,
            duration_ms: run.duration.map(|d| d.as_millis() as u64),
            reason: sj
                .reason
                .clone()
                .or_else(|| outcome.and_then(|o| o.reason.clone())),
            executor: run.executor.clone(),
            log: Some(log),
            build_dir: outcome.and_then(|o| o.build_dir.clone()),
            shell_command: outcome.and_then(|o| o.shell_command.clone()),
            artifact: outcome
                .and_then(|o| o.artifact.as_ref())
                .and_then(|a| self.store.blobs().artifact_path(a).ok()),
            dotenv: outcome.map(|o| o.dotenv.clone()).unwrap_or_default(),
        }
    }

    fn manifest(&self, status: &str) -> RunManifest {
        RunManifest {
            run_id: self.info.run_id.clone(),
            pipeline_id: self.info.pipeline_id,
            sha: self.request.sha.clone(),
            status: status.into(),
            jobs: (0..self.runs.len()).map(|i| self.record(i)).collect(),
        }
    }

    fn report(&self, status: RunStatus, duration: Duration) -> RunReport {
        let blobs = self.store.blobs();
        RunReport {
            run_id: self.info.run_id.clone(),
            pipeline_id: self.info.pipeline_id,
            run_dir: self
                .info
                .builds_dir
                .parent()
                .map(PathBuf::from)
                .unwrap_or_default(),
            status,
            duration,
            jobs: self
                .schedule
                .jobs()
                .iter()
                .zip(&self.runs)
                .enumerate()
                .map(|(si, (sj, run))| {
                    let outcome = run.outcome.as_ref();
                    JobReport {
                        name: sj.name.clone(),
                        stage: sj.stage.clone(),
                        status: sj.status().unwrap_or(JobStatus::Canceled),
                        allow_failure: sj.may_fail(),
                        duration: run.duration,
                        exit_code: sj.exit_code,
                        reason: sj
                            .reason
                            .clone()
                            .or_else(|| outcome.and_then(|o| o.reason.clone())),
                        attempts: sj.attempt,
                        job_id: run.job_id,
                        junit_failures: outcome
                            .map(|o| o.junit_failures.clone())
                            .unwrap_or_default(),
                        log: self.store.log_location(&self.info.run_id, &run.slug),
                        build_dir: outcome.and_then(|o| o.build_dir.clone()),
                        artifact: outcome
                            .and_then(|o| o.artifact.as_ref())
                            .and_then(|a| blobs.artifact_path(a).ok()),
                        dotenv: outcome.map(|o| o.dotenv.clone()).unwrap_or_default(),
                        child: self.child_reports.get(&si).cloned().map(Box::new),
                    }
                })
                .collect(),
        }
    }

    /// The attempt's payload: the job's variables in GitLab's precedence
    /// order, and its inputs.
    fn payload(&self, i: usize, attempt: u32, executor: &str) -> JobPayload {
        let run = &self.runs[i];
        let job = &self.pipeline.jobs[self.schedule.job(i).pipeline_index];
        let job_id = run.job_id;
        let shell = executor == "shell";
        let ctx = &self.pipeline.context_variables;
        let ctx_value = |name: &str| {
            ctx.iter()
                .rev()
                .find(|v| v.name == name)
                .map(|v| v.value.clone())
        };
        let (ci_project_dir, ci_builds_dir) = if shell {
            (
                self.info.builds_dir.join(&run.slug).display().to_string(),
                self.info.builds_dir.display().to_string(),
            )
        } else {
            let path = ctx_value("CI_PROJECT_PATH").unwrap_or_else(|| "project".into());
            (format!("/builds/{path}"), "/builds".to_string())
        };
        let timeout = job.timeout.unwrap_or(job::DEFAULT_TIMEOUT.as_secs());

        let mut vars = VarSet::new();
        // Job predefined.
        vars.set("CI", "true");
        vars.set("GITLAB_CI", "true");
        vars.set("CI_JOB_NAME", job.name.clone());
        vars.set("CI_JOB_NAME_SLUG", run.slug.clone());
        vars.set("CI_JOB_STAGE", job.stage.clone());
        vars.set("CI_JOB_ID", job_id.to_string());
        vars.set(
            "CI_JOB_STARTED_AT",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        );
        if job.when == When::Manual {
            vars.set("CI_JOB_MANUAL", "true");
        }
        if let (Some(index), Some(total)) = (job.node_index, job.node_total) {
            vars.set("CI_NODE_INDEX", index.to_string());
            vars.set("CI_NODE_TOTAL", total.to_string());
        }
        if let Some(env) = &job.environment {
            vars.set("CI_ENVIRONMENT_NAME", env.name.clone());
            let mut env_slug = slugify(&env.name);
            env_slug.truncate(24);
            vars.set(
                "CI_ENVIRONMENT_SLUG",
                env_slug.trim_end_matches('-').to_string(),
            );
            if let Some(url) = &env.url {
                vars.set("CI_ENVIRONMENT_URL", url.clone());
            }
            vars.set(
                "CI_ENVIRONMENT_ACTION",
                env.action.clone().unwrap_or_else(|| "start".into()),
            );
            vars.set(
                "CI_ENVIRONMENT_TIER",
                env.deployment_tier
                    .clone()
                    .unwrap_or_else(|| guess_tier(&env.name).into()),
            );
        }
        // Pipeline predefined (the context), with this run's pipeline id.
        vars.extend(ctx.iter());
        vars.set("CI_PIPELINE_ID", self.info.pipeline_id.to_string());
        vars.set("CI_PIPELINE_IID", self.info.pipeline_id.to_string());
        // Runner.
        vars.set("CI_BUILDS_DIR", ci_builds_dir);
        vars.set("CI_PROJECT_DIR", ci_project_dir.clone());
        vars.set("CI_JOB_STATUS", "running");
        vars.set("CI_SERVER", "yes");
        vars.set("CI_JOB_TIMEOUT", timeout.to_string());
        let concurrency = self.request.selection.concurrency.max(1);
        vars.set("CI_CONCURRENT_ID", (i % concurrency).to_string());
        vars.set("CI_CONCURRENT_PROJECT_ID", (i % concurrency).to_string());
        // State that outlives the job (a deploy's history) lives here; a
        // container gets it mounted (JobPorts::state_dir).
        if let Some(dir) = &self.info.state_dir {
            let seen_as = if shell {
                dir.display().to_string()
            } else {
                crate::executor::STATE_DIR_IN_CONTAINER.to_string()
            };
            vars.set("GANTRY_STATE_DIR", seen_as);
        }
        vars.set("CI_RUNNER_EXECUTABLE_ARCH", format!("linux/{}", go_arch()));
        if shell {
            vars.set("CI_SHARED_ENVIRONMENT", "true");
        } else {
            vars.set("CI_DISPOSABLE_ENVIRONMENT", "true");
        }
        // YAML (global + job + rules + matrix).
        vars.extend(job.variables.iter());
        // dotenv reports of dependencies.
        let mut dependencies = Vec::new();
        for dep in &job.dependencies {
            let mut found_here = false;
            for p in self.index.resolve(dep) {
                let Some(&si) = self.by_pipeline_index.get(p) else {
                    continue;
                };
                found_here = true;
                if let Some(o) = &self.runs[si].outcome {
                    for (k, v) in &o.dotenv {
                        vars.set(k, v.clone());
                    }
                    if let Some(a) = &o.artifact {
                        dependencies.push(a.clone());
                    }
                }
            }
            if !found_here && let Some(rec) = self.store.previous_job(dep) {
                // Not in this run: the last run's result, if any.
                for (k, v) in &rec.dotenv {
                    vars.set(k, v.clone());
                }
                if let Some(a) = rec.artifact.as_ref().filter(|a| a.is_file()) {
                    dependencies.push(ArtifactRef {
                        job: rec.name.clone(),
                        key: a.display().to_string(),
                    });
                }
            }
        }
        // Command line and variables file.
        vars.extend(self.request.variables.iter());

        JobPayload {
            run_id: self.info.run_id.clone(),
            pipeline_id: self.info.pipeline_id,
            job_id,
            job: job.clone(),
            slug: run.slug.clone(),
            attempt,
            executor: executor.to_string(),
            vars,
            ci_project_dir,
            dependencies,
        }
    }
}

/// `trigger: {strategy: depend}` (or `mirror`): the trigger job ends as
/// its downstream pipeline ends.
pub fn trigger_depends(job: &gantry_config::model::Job) -> bool {
    matches!(
        job.trigger
            .as_ref()
            .and_then(|t| t.get("strategy"))
            .and_then(|s| s.as_str()),
        Some("depend" | "mirror")
    )
}

fn guess_tier(name: &str) -> &'static str {
    let n = name.to_ascii_lowercase();
    if n.contains("prod") || n == "live" {
        "production"
    } else if n.contains("stag") || n.contains("model") || n.contains("pre") || n.contains("demo") {
        "staging"
    } else if n.contains("test") || n.contains("qa") {
        "testing"
    } else if n.contains("dev") || n.contains("review") {
        "development"
    } else {
        "other"
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
