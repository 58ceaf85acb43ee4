//! The dispatcher: one task owns the whole run state; job attempts run as
//! their own tasks and report lines and outcomes over channels.
//!
//! A job starts the moment its gate opens: its `needs` (DAG mode) or every
//! earlier stage (stage mode) have finished and GitLab's `when` rules say
//! it runs. Concurrency is bounded by `-j`, and by one job at a time per
//! `resource_group`. There are no waves and no polling: the loop wakes on
//! a message (a line, a finished attempt, an elapsed delay, Ctrl-C).

use crate::executor::{ExecError, Executor};
use crate::job::{self, AttemptOutcome, AttemptStatus, Failure, JobSpec, RunShared};
use crate::report::{Event, Reporter, SummaryRow};
use crate::shell::ShellExecutor;
use crate::sources::{self, Snapshot};
use crate::state::{JobRecord, RunDir, RunManifest, StateDir, slugify};
use crate::vars::{VarSet, expand_runner};
use gantry_config::model::{Job, Pipeline, Variable, When};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::unbounded_channel;
use tokio_util::sync::CancellationToken;

/// Snapshots of commits kept in `.gantry/snapshots/` for later runs.
pub const SNAPSHOTS_KEPT: usize = 3;

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

/// How to run a pipeline.
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
}

/// Creates the docker executor; called only when a selected job needs it.
pub type DockerConnect = Box<
    dyn FnOnce() -> futures_util::future::BoxFuture<'static, Result<Arc<dyn Executor>, ExecError>>
        + Send,
>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A bad selection or option (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The run could not be set up (state dir, sources).
    #[error("{0}")]
    Setup(String),
}

/// A job's final status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Success,
    Failed,
    Canceled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Success => "success",
            RunStatus::Failed => "failed",
            RunStatus::Canceled => "canceled",
        }
    }
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
    pub junit_failures: Vec<String>,
    pub log: PathBuf,
    pub build_dir: Option<PathBuf>,
    pub artifact: Option<PathBuf>,
    pub dotenv: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct RunReport {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub status: RunStatus,
    pub duration: Duration,
    pub jobs: Vec<JobReport>,
}

impl RunReport {
    /// 0 when the pipeline succeeded, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            RunStatus::Success => 0,
            _ => 1,
        }
    }

    pub fn job(&self, name: &str) -> Option<&JobReport> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    Delayed,
    Ready,
    Running,
    Done,
}

struct Node {
    job: Job,
    slug: String,
    kind: ExecutorKind,
    /// Jobs whose results open this job's gate.
    prereqs: Vec<usize>,
    dag: bool,
    triggered: bool,
    resource_group: Option<String>,
    state: State,
    status: Option<JobStatus>,
    attempt: u32,
    started: Option<Instant>,
    duration: Option<Duration>,
    exit_code: Option<i32>,
    reason: Option<String>,
    junit_failures: Vec<String>,
    dotenv: Vec<(String, String)>,
    artifact: Option<PathBuf>,
    build_dir: Option<PathBuf>,
    shell_command: Option<Vec<String>>,
}

/// What a finished prerequisite means for a gate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum GateView {
    Success,
    Failed,
    Skipped,
    BlockingManual,
}

enum Decision {
    Go,
    Skip(String),
}

/// Runs the pipeline. Output goes to `reporter`; Ctrl-C is `cancel`.
pub async fn run_pipeline(
    pipeline: &Pipeline,
    opts: RunOptions,
    docker: Option<DockerConnect>,
    reporter: &mut Reporter,
    cancel: CancellationToken,
) -> Result<RunReport, EngineError> {
    let run_started = Instant::now();
    let selected = select_jobs(pipeline, &opts)?;
    let mut triggered: HashSet<usize> = HashSet::new();
    for name in opts.manual.iter().chain(opts.jobs.iter()) {
        let found = resolve(pipeline, name);
        if found.is_empty() {
            return Err(EngineError::Usage(format!("no job named `{name}`")));
        }
        triggered.extend(found);
    }

    // State dir and the commit's snapshot.
    let state = StateDir::for_repo(&opts.repo_dir);
    let run = state
        .new_run()
        .map_err(|e| EngineError::Setup(format!("cannot create {}: {e}", state.root.display())))?;
    let previous = state.last().and_then(|id| state.read_manifest(&id).ok());
    // Old runs go while this one runs (removing directories is slow on some
    // filesystems); the previous run's build dirs stay for `gantry shell`.
    let pruning = {
        let state = state.clone();
        let current = run.id.clone();
        std::thread::spawn(move || state.prune(&current))
    };
    // Whether the working tree differs from the commit is only a note: it
    // is found out while the run goes on.
    let dirty_check = {
        let repo_dir = opts.repo_dir.clone();
        std::thread::spawn(move || sources::working_tree_dirty(&repo_dir))
    };
    let repo_dir = opts.repo_dir.clone();
    let sha = opts.sha.clone();
    let snapshots = state.root.join("snapshots");
    let snapshot = tokio::task::spawn_blocking(move || {
        Snapshot::cached(&repo_dir, &sha, &snapshots, SNAPSHOTS_KEPT)
    })
    .await
    .map_err(|e| EngineError::Setup(e.to_string()))?
    .map_err(|e| EngineError::Setup(format!("cannot get the sources of {}: {e}", opts.sha)))?;
    let shared = Arc::new(RunShared {
        run: run.clone(),
        snapshot,
        cache_dir: state.cache_dir(),
    });

    // Nodes.
    let stage_index = |s: &str| pipeline.stages.iter().position(|x| x == s).unwrap_or(0);
    let mut slugs: HashSet<String> = HashSet::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut node_of_job: HashMap<usize, usize> = HashMap::new();
    for &ji in &selected {
        let job = &pipeline.jobs[ji];
        let mut slug = slugify(&job.name);
        let base = slug.clone();
        let mut n = 2;
        while !slugs.insert(slug.clone()) {
            slug = format!("{base}-{n}");
            n += 1;
        }
        let kind = opts.executor.unwrap_or(if job.image.is_some() {
            ExecutorKind::Docker
        } else {
            ExecutorKind::Shell
        });
        let group_vars: indexmap::IndexMap<String, String> = pipeline
            .context_variables
            .iter()
            .chain(job.variables.iter())
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect();
        node_of_job.insert(ji, nodes.len());
        nodes.push(Node {
            job: job.clone(),
            slug,
            kind,
            prereqs: Vec::new(),
            dag: job.needs.is_some(),
            triggered: triggered.contains(&ji),
            resource_group: job
                .resource_group
                .as_ref()
                .map(|g| expand_runner(g, &group_vars)),
            state: State::Waiting,
            status: None,
            attempt: 0,
            started: None,
            duration: None,
            exit_code: None,
            reason: None,
            junit_failures: Vec::new(),
            dotenv: Vec::new(),
            artifact: None,
            build_dir: None,
            shell_command: None,
        });
    }
    for (ni, &ji) in selected.iter().enumerate() {
        let job = &pipeline.jobs[ji];
        let prereqs: Vec<usize> = match &job.needs {
            Some(needs) => needs
                .iter()
                .flat_map(|n| resolve(pipeline, &n.job))
                .filter_map(|j| node_of_job.get(&j).copied())
                .collect(),
            None => {
                let own = stage_index(&job.stage);
                selected
                    .iter()
                    .enumerate()
                    .filter(|(_, j)| stage_index(&pipeline.jobs[**j].stage) < own)
                    .map(|(n, _)| n)
                    .collect()
            }
        };
        nodes[ni].prereqs = prereqs;
    }

    // Executors: shell always, docker only if a selected job needs it.
    let shell: Arc<dyn Executor> = Arc::new(ShellExecutor::new());
    let mut docker_exec: Option<Arc<dyn Executor>> = None;
    let mut docker_error: Option<String> = None;
    if nodes.iter().any(|n| n.kind == ExecutorKind::Docker) {
        match docker {
            Some(connect) => match connect().await {
                Ok(d) => docker_exec = Some(d),
                Err(e) => docker_error = Some(e.to_string()),
            },
            None => docker_error = Some("the docker executor is not available".into()),
        }
    }

    reporter.set_names(nodes.iter().map(|n| n.job.name.as_str()));
    reporter.emit(&Event::RunStarted {
        run_id: run.id.clone(),
        sha: opts.sha.clone(),
        jobs: nodes.iter().map(|n| n.job.name.clone()).collect(),
    });
    if let Some(e) = &docker_error {
        reporter.emit(&Event::Note {
            message: format!(
                "docker executor unavailable: {e} (jobs with `image:` will fail; --executor shell runs them on the host)"
            ),
        });
    }

    let concurrency = if opts.concurrency == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        opts.concurrency
    };
    let mut d = Dispatcher {
        pipeline,
        opts: &opts,
        nodes,
        shared,
        shell,
        docker: docker_exec,
        docker_error,
        previous,
        reporter,
        running: 0,
        delayed: 0,
        concurrency,
        busy_groups: HashSet::new(),
        next_job_id: 1,
        canceled: false,
    };
    d.run_loop(&cancel).await;

    // Wrap up.
    if let Some(dx) = &d.docker
        && let Err(e) = dx.shutdown().await
    {
        d.reporter.emit(&Event::Note {
            message: format!("docker executor shutdown: {e}"),
        });
    }
    let _ = d.shell.shutdown().await;
    let dirty = dirty_check.join().unwrap_or(false);
    if dirty {
        d.reporter.emit(&Event::Note {
            message: format!(
                "note: the working tree has uncommitted changes; the jobs ran on commit {} (commit your changes to run them)",
                opts.sha.get(..8).unwrap_or(&opts.sha)
            ),
        });
    }
    let status = if d.canceled {
        RunStatus::Canceled
    } else if d.nodes.iter().any(|n| {
        matches!(
            n.status,
            Some(JobStatus::Failed) | Some(JobStatus::Canceled)
        )
    }) {
        RunStatus::Failed
    } else {
        RunStatus::Success
    };
    let duration = run_started.elapsed();
    let report = d.report(&run, status, duration);
    write_manifest(&run, &opts.sha, &report, &d.nodes);
    let _ = state.set_last(&run.id);
    let _ = pruning.join();
    d.reporter.emit(&Event::RunFinished {
        run_id: run.id.clone(),
        status: status.as_str().into(),
        duration_ms: duration.as_millis() as u64,
        dirty,
    });
    let rows: Vec<SummaryRow> = report
        .jobs
        .iter()
        .map(|j| SummaryRow {
            job: j.name.clone(),
            stage: j.stage.clone(),
            status: j.status.as_str().into(),
            duration: j.duration,
            allow_failure: j.allow_failure,
            reason: j.reason.clone(),
            junit_failures: j.junit_failures.clone(),
        })
        .collect();
    d.reporter.summary(&rows, status.as_str(), duration);
    Ok(report)
}

/// Runs the pipeline on a runtime of its own; Ctrl-C or SIGTERM cancels
/// the run cleanly (process groups killed, executors shut down).
pub fn run_blocking(
    pipeline: &Pipeline,
    opts: RunOptions,
    docker: Option<DockerConnect>,
    reporter: &mut Reporter,
) -> Result<RunReport, EngineError> {
    // One thread: the run is I/O-bound (waiting on processes and pipes), and
    // every hand-off between threads costs a wake-up on a busy machine.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| EngineError::Setup(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        let on_signal = cancel.clone();
        let watcher = tokio::spawn(async move {
            wait_for_interrupt().await;
            on_signal.cancel();
            // A second interrupt while cleaning up: leave at once.
            wait_for_interrupt().await;
            std::process::exit(130);
        });
        let result = run_pipeline(pipeline, opts, docker, reporter, cancel).await;
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

/// Job indices named `name`: the job itself, or every instance of a
/// parallel job's definition.
fn resolve(pipeline: &Pipeline, name: &str) -> Vec<usize> {
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

fn select_jobs(pipeline: &Pipeline, opts: &RunOptions) -> Result<Vec<usize>, EngineError> {
    let mut set: BTreeSet<usize> = BTreeSet::new();
    if opts.jobs.is_empty() {
        set.extend(0..pipeline.jobs.len());
    } else {
        let mut queue: Vec<usize> = Vec::new();
        for name in &opts.jobs {
            let found = resolve(pipeline, name);
            if found.is_empty() {
                let known: Vec<&str> = pipeline.jobs.iter().map(|j| j.name.as_str()).collect();
                return Err(EngineError::Usage(format!(
                    "no job named `{name}` in this pipeline (jobs: {})",
                    known.join(", ")
                )));
            }
            queue.extend(found);
        }
        while let Some(i) = queue.pop() {
            if !set.insert(i) || !opts.with_needs {
                continue;
            }
            if let Some(needs) = &pipeline.jobs[i].needs {
                for n in needs {
                    queue.extend(resolve(pipeline, &n.job));
                }
            }
        }
    }
    if let Some(stage) = &opts.stage {
        if !pipeline.stages.iter().any(|s| s == stage) {
            return Err(EngineError::Usage(format!(
                "no stage `{stage}` in this pipeline (stages: {})",
                pipeline.stages.join(", ")
            )));
        }
        set.retain(|&i| &pipeline.jobs[i].stage == stage);
    }
    if set.is_empty() {
        return Err(EngineError::Usage("no job selected".into()));
    }
    Ok(set.into_iter().collect())
}

struct Dispatcher<'a> {
    pipeline: &'a Pipeline,
    opts: &'a RunOptions,
    nodes: Vec<Node>,
    shared: Arc<RunShared>,
    shell: Arc<dyn Executor>,
    docker: Option<Arc<dyn Executor>>,
    docker_error: Option<String>,
    previous: Option<RunManifest>,
    reporter: &'a mut Reporter,
    running: usize,
    delayed: usize,
    concurrency: usize,
    busy_groups: HashSet<String>,
    next_job_id: u64,
    canceled: bool,
}

impl Dispatcher<'_> {
    async fn run_loop(&mut self, cancel: &CancellationToken) {
        let (line_tx, mut line_rx) = tokio::sync::mpsc::channel::<(usize, String)>(job::LINE_QUEUE);
        let (done_tx, mut done_rx) = unbounded_channel::<(usize, AttemptOutcome)>();
        let (delay_tx, mut delay_rx) = unbounded_channel::<usize>();
        let job_cancel = cancel.child_token();
        loop {
            if !self.canceled {
                self.open_gates(&delay_tx);
                self.start_ready(&line_tx, &done_tx, &job_cancel);
            }
            if self.running == 0 && (self.delayed == 0 || self.canceled) {
                break;
            }
            tokio::select! {
                biased;
                Some((i, line)) = line_rx.recv() => {
                    let job = self.nodes[i].job.name.clone();
                    self.reporter.emit(&Event::Log { job, line });
                }
                Some((i, outcome)) = done_rx.recv() => {
                    // Lines sent before the outcome are queued: show them first.
                    while let Ok((li, line)) = line_rx.try_recv() {
                        let job = self.nodes[li].job.name.clone();
                        self.reporter.emit(&Event::Log { job, line });
                    }
                    self.finish_attempt(i, outcome);
                }
                Some(i) = delay_rx.recv() => {
                    if self.nodes[i].state == State::Delayed {
                        self.delayed -= 1;
                        self.nodes[i].state = State::Ready;
                    }
                }
                _ = cancel.cancelled(), if !self.canceled => {
                    self.canceled = true;
                    job_cancel.cancel();
                    self.reporter.emit(&Event::Note { message: "canceling the run...".into() });
                    for i in 0..self.nodes.len() {
                        if matches!(self.nodes[i].state, State::Waiting | State::Ready | State::Delayed) {
                            self.nodes[i].state = State::Done;
                            self.finish(i, JobStatus::Canceled, None);
                        }
                    }
                    self.delayed = 0;
                }
            }
        }
        // Lines still queued.
        while let Ok((li, line)) = line_rx.try_recv() {
            let job = self.nodes[li].job.name.clone();
            self.reporter.emit(&Event::Log { job, line });
        }
    }

    fn gate_view(&self, i: usize) -> GateView {
        let n = &self.nodes[i];
        match n.status {
            Some(JobStatus::Success) | Some(JobStatus::Warning) => GateView::Success,
            Some(JobStatus::Failed) | Some(JobStatus::Canceled) => GateView::Failed,
            Some(JobStatus::Manual) if !n.job.allow_failure => GateView::BlockingManual,
            _ => GateView::Skipped,
        }
    }

    /// GitLab's gate: `None` while a prerequisite is still pending.
    fn decide(&self, i: usize) -> Option<Decision> {
        let n = &self.nodes[i];
        if n.prereqs
            .iter()
            .any(|&p| self.nodes[p].state != State::Done)
        {
            return None;
        }
        let views: Vec<(usize, GateView)> =
            n.prereqs.iter().map(|&p| (p, self.gate_view(p))).collect();
        let failed = views.iter().any(|(_, v)| *v == GateView::Failed);
        let blocking = views.iter().find(|(_, v)| *v == GateView::BlockingManual);
        let not_run = views
            .iter()
            .find(|(_, v)| matches!(v, GateView::Skipped | GateView::BlockingManual));
        let name = |p: usize| self.nodes[p].job.name.clone();
        Some(match n.job.when {
            When::Always => Decision::Go,
            When::Never => Decision::Skip("when: never".into()),
            When::OnFailure => {
                if failed {
                    Decision::Go
                } else {
                    Decision::Skip("when: on_failure, and nothing failed".into())
                }
            }
            When::OnSuccess | When::Manual | When::Delayed => {
                if failed {
                    Decision::Skip(if n.dag {
                        "a needed job failed".into()
                    } else {
                        "an earlier stage failed".into()
                    })
                } else if let (true, Some((p, _))) = (n.dag, not_run) {
                    Decision::Skip(format!("needed job `{}` did not run", name(*p)))
                } else if let Some((p, _)) = blocking {
                    Decision::Skip(format!("blocked by manual job `{}`", name(*p)))
                } else {
                    Decision::Go
                }
            }
        })
    }

    /// Moves every waiting job whose gate is decided, until nothing changes.
    fn open_gates(&mut self, delay_tx: &tokio::sync::mpsc::UnboundedSender<usize>) {
        loop {
            let mut changed = false;
            for i in 0..self.nodes.len() {
                if self.nodes[i].state != State::Waiting {
                    continue;
                }
                let Some(decision) = self.decide(i) else {
                    continue;
                };
                changed = true;
                match decision {
                    Decision::Skip(reason) => {
                        self.nodes[i].state = State::Done;
                        self.finish(i, JobStatus::Skipped, Some(reason));
                    }
                    Decision::Go => self.go(i, delay_tx),
                }
            }
            if !changed {
                break;
            }
        }
    }

    fn go(&mut self, i: usize, delay_tx: &tokio::sync::mpsc::UnboundedSender<usize>) {
        let n = &self.nodes[i];
        if n.job.trigger.is_some() {
            self.nodes[i].state = State::Done;
            self.finish(
                i,
                JobStatus::Skipped,
                Some("trigger jobs start downstream pipelines on GitLab; not run locally".into()),
            );
            return;
        }
        match n.job.when {
            When::Manual if !n.triggered => {
                self.nodes[i].state = State::Done;
                self.finish(
                    i,
                    JobStatus::Manual,
                    Some("manual: run it with --manual".into()),
                );
            }
            When::Delayed if !self.opts.no_delay => {
                let wait = n
                    .job
                    .start_in
                    .as_deref()
                    .and_then(parse_duration)
                    .unwrap_or(Duration::ZERO);
                let name = n.job.name.clone();
                self.nodes[i].state = State::Delayed;
                self.delayed += 1;
                self.reporter.emit(&Event::Note {
                    message: format!(
                        "{name}: delayed, starts in {}",
                        crate::report::fmt_duration(wait)
                    ),
                });
                let tx = delay_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = tx.send(i);
                });
            }
            _ => self.nodes[i].state = State::Ready,
        }
    }

    fn start_ready(
        &mut self,
        line_tx: &job::LineSender,
        done_tx: &tokio::sync::mpsc::UnboundedSender<(usize, AttemptOutcome)>,
        cancel: &CancellationToken,
    ) {
        for i in 0..self.nodes.len() {
            if self.running >= self.concurrency {
                return;
            }
            if self.nodes[i].state != State::Ready {
                continue;
            }
            if let Some(g) = &self.nodes[i].resource_group {
                if self.busy_groups.contains(g) {
                    continue;
                }
                self.busy_groups.insert(g.clone());
            }
            self.start(i, line_tx, done_tx, cancel);
        }
    }

    fn start(
        &mut self,
        i: usize,
        line_tx: &job::LineSender,
        done_tx: &tokio::sync::mpsc::UnboundedSender<(usize, AttemptOutcome)>,
        cancel: &CancellationToken,
    ) {
        self.running += 1;
        let job_id = self.next_job_id;
        self.next_job_id += 1;
        let node = &mut self.nodes[i];
        node.state = State::Running;
        node.attempt += 1;
        if node.started.is_none() {
            node.started = Some(Instant::now());
        }
        let kind = node.kind;
        self.reporter.emit(&Event::JobStarted {
            job: self.nodes[i].job.name.clone(),
            stage: self.nodes[i].job.stage.clone(),
            attempt: self.nodes[i].attempt,
            executor: kind.as_str().into(),
        });
        let executor = match kind {
            ExecutorKind::Shell => Some(self.shell.clone()),
            ExecutorKind::Docker => self.docker.clone(),
        };
        let done = done_tx.clone();
        let Some(executor) = executor else {
            let reason = self
                .docker_error
                .clone()
                .unwrap_or_else(|| "the docker executor is not available".into());
            let outcome = AttemptOutcome {
                status: AttemptStatus::Failed(Failure::System(format!("docker: {reason}"))),
                exit_code: None,
                dotenv: Vec::new(),
                junit_failures: Vec::new(),
                artifact: None,
                build_dir: PathBuf::new(),
                shell_command: None,
                duration: Duration::ZERO,
            };
            let _ = done.send((i, outcome));
            return;
        };
        let spec = self.job_spec(i, job_id, executor);
        let shared = self.shared.clone();
        let lines = line_tx.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let outcome = job::run_attempt(shared, spec, lines, cancel).await;
            let _ = done.send((i, outcome));
        });
    }

    /// The job's variables in GitLab's precedence order, and its inputs.
    fn job_spec(&self, i: usize, job_id: u64, executor: Arc<dyn Executor>) -> JobSpec {
        let node = &self.nodes[i];
        let job = &node.job;
        let ctx = &self.pipeline.context_variables;
        let ctx_value = |name: &str| {
            ctx.iter()
                .rev()
                .find(|v| v.name == name)
                .map(|v| v.value.clone())
        };
        let host_build_dir = self.shared.run.build_dir(&node.slug);
        let (ci_project_dir, ci_builds_dir) = match node.kind {
            ExecutorKind::Shell => (
                host_build_dir.display().to_string(),
                self.shared.run.dir.join("builds").display().to_string(),
            ),
            ExecutorKind::Docker => {
                let path = ctx_value("CI_PROJECT_PATH").unwrap_or_else(|| "project".into());
                (format!("/builds/{path}"), "/builds".to_string())
            }
        };
        let timeout = job.timeout.unwrap_or(job::DEFAULT_TIMEOUT.as_secs());

        let mut vars = VarSet::new();
        // Job predefined.
        vars.set("CI", "true");
        vars.set("GITLAB_CI", "true");
        vars.set("CI_JOB_NAME", job.name.clone());
        vars.set("CI_JOB_NAME_SLUG", node.slug.clone());
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
        // Pipeline predefined (the context).
        vars.extend(ctx.iter());
        // Runner.
        vars.set("CI_BUILDS_DIR", ci_builds_dir);
        vars.set("CI_PROJECT_DIR", ci_project_dir.clone());
        vars.set("CI_JOB_STATUS", "running");
        vars.set("CI_SERVER", "yes");
        vars.set("CI_JOB_TIMEOUT", timeout.to_string());
        vars.set("CI_CONCURRENT_ID", (i % self.concurrency).to_string());
        vars.set(
            "CI_CONCURRENT_PROJECT_ID",
            (i % self.concurrency).to_string(),
        );
        vars.set("CI_RUNNER_EXECUTABLE_ARCH", format!("linux/{}", go_arch()));
        match node.kind {
            ExecutorKind::Shell => vars.set("CI_SHARED_ENVIRONMENT", "true"),
            ExecutorKind::Docker => vars.set("CI_DISPOSABLE_ENVIRONMENT", "true"),
        }
        // YAML (global + job + rules + matrix).
        vars.extend(job.variables.iter());
        // dotenv reports of dependencies.
        let mut dependencies = Vec::new();
        for dep in &job.dependencies {
            let producers = resolve(self.pipeline, dep);
            let mut found_here = false;
            for p in producers {
                if let Some(ni) = self
                    .nodes
                    .iter()
                    .position(|n| n.job.name == self.pipeline.jobs[p].name)
                {
                    found_here = true;
                    let n = &self.nodes[ni];
                    for (k, v) in &n.dotenv {
                        vars.set(k, v.clone());
                    }
                    if let Some(a) = &n.artifact {
                        dependencies.push((n.job.name.clone(), a.clone()));
                    }
                }
            }
            if !found_here {
                // Not in this run: use the last run's result, if any.
                if let Some(rec) = self.previous.as_ref().and_then(|m| {
                    m.jobs
                        .iter()
                        .find(|j| &j.name == dep || j.name.starts_with(&format!("{dep} ")))
                }) {
                    for (k, v) in &rec.dotenv {
                        vars.set(k, v.clone());
                    }
                    if let Some(a) = rec.artifact.as_ref().filter(|a| a.is_file()) {
                        dependencies.push((rec.name.clone(), a.clone()));
                    }
                }
            }
        }
        // Command line and variables file.
        vars.extend(self.opts.variables.iter());

        JobSpec {
            index: i,
            job: job.clone(),
            slug: node.slug.clone(),
            attempt: node.attempt,
            executor,
            vars,
            ci_project_dir,
            dependencies,
        }
    }

    fn finish_attempt(&mut self, i: usize, outcome: AttemptOutcome) {
        self.running -= 1;
        if let Some(g) = self.nodes[i].resource_group.clone() {
            self.busy_groups.remove(&g);
        }
        let node = &mut self.nodes[i];
        node.exit_code = outcome.exit_code;
        node.junit_failures = outcome.junit_failures;
        if !outcome.build_dir.as_os_str().is_empty() {
            node.build_dir = Some(outcome.build_dir);
        }
        node.shell_command = outcome.shell_command;
        match outcome.status {
            AttemptStatus::Success => {
                node.dotenv = outcome.dotenv;
                node.artifact = outcome.artifact;
                node.state = State::Done;
                self.finish(i, JobStatus::Success, None);
            }
            AttemptStatus::Canceled => {
                node.state = State::Done;
                self.finish(i, JobStatus::Canceled, Some("canceled".into()));
            }
            AttemptStatus::Failed(failure) => {
                node.dotenv = outcome.dotenv;
                node.artifact = outcome.artifact;
                let retry = &node.job.retry;
                if !self.canceled
                    && node.attempt <= retry.max
                    && retry_allowed(retry, &failure, outcome.exit_code)
                {
                    node.state = State::Ready;
                    let msg = format!(
                        "{}: attempt {} failed ({}), retrying",
                        node.job.name,
                        node.attempt,
                        failure.retry_kind()
                    );
                    self.reporter.emit(&Event::Note { message: msg });
                    return;
                }
                let allowed = node.job.allow_failure
                    || outcome
                        .exit_code
                        .is_some_and(|c| node.job.allow_failure_exit_codes.contains(&c));
                let reason = match &failure {
                    Failure::Script => None,
                    Failure::Timeout => Some("timeout".to_string()),
                    Failure::System(m) => Some(m.clone()),
                };
                node.state = State::Done;
                self.finish(
                    i,
                    if allowed {
                        JobStatus::Warning
                    } else {
                        JobStatus::Failed
                    },
                    reason,
                );
            }
        }
    }

    fn finish(&mut self, i: usize, status: JobStatus, reason: Option<String>) {
        let node = &mut self.nodes[i];
        node.status = Some(status);
        node.reason = reason.clone();
        node.duration = node.started.map(|s| s.elapsed());
        let allow_failure = node.job.allow_failure || !node.job.allow_failure_exit_codes.is_empty();
        self.reporter.emit(&Event::JobFinished {
            job: node.job.name.clone(),
            stage: node.job.stage.clone(),
            status: status.as_str().into(),
            duration_ms: node.duration.map(|d| d.as_millis() as u64),
            exit_code: node.exit_code,
            allow_failure,
            reason,
            attempt: node.attempt,
            junit_failures: node.junit_failures.clone(),
        });
    }

    fn report(&self, run: &RunDir, status: RunStatus, duration: Duration) -> RunReport {
        RunReport {
            run_id: run.id.clone(),
            run_dir: run.dir.clone(),
            status,
            duration,
            jobs: self
                .nodes
                .iter()
                .map(|n| JobReport {
                    name: n.job.name.clone(),
                    stage: n.job.stage.clone(),
                    status: n.status.unwrap_or(JobStatus::Canceled),
                    allow_failure: n.job.allow_failure
                        || !n.job.allow_failure_exit_codes.is_empty(),
                    duration: n.duration,
                    exit_code: n.exit_code,
                    reason: n.reason.clone(),
                    attempts: n.attempt,
                    junit_failures: n.junit_failures.clone(),
                    log: run.log_path(&n.slug),
                    build_dir: n.build_dir.clone(),
                    artifact: n.artifact.clone(),
                    dotenv: n.dotenv.clone(),
                })
                .collect(),
        }
    }
}

fn write_manifest(run: &RunDir, sha: &str, report: &RunReport, nodes: &[Node]) {
    let manifest = RunManifest {
        run_id: run.id.clone(),
        sha: sha.to_string(),
        status: report.status.as_str().into(),
        jobs: report
            .jobs
            .iter()
            .zip(nodes)
            .map(|(j, n)| JobRecord {
                name: j.name.clone(),
                slug: n.slug.clone(),
                stage: j.stage.clone(),
                status: j.status.as_str().into(),
                executor: n.kind.as_str().into(),
                log: j.log.is_file().then(|| j.log.clone()),
                build_dir: j.build_dir.clone(),
                shell_command: n.shell_command.clone(),
                artifact: j.artifact.clone(),
                dotenv: j.dotenv.clone(),
            })
            .collect(),
    };
    let _ = run.write_manifest(&manifest);
}

/// Whether a failed attempt may be retried (`retry:when`, `retry:exit_codes`).
fn retry_allowed(
    retry: &gantry_config::model::Retry,
    failure: &Failure,
    exit_code: Option<i32>,
) -> bool {
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

/// Parses a GitLab duration (`start_in`, ChronicDuration-style):
/// `30`, `30 seconds`, `5 min`, `1h 30m`, `2 days`, `1 week`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim().to_ascii_lowercase();
    if text.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = text.as_str();
    let mut any = false;
    while !rest.is_empty() {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',' || c == '+');
        if rest.is_empty() {
            break;
        }
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            if let Some(r) = rest.strip_prefix("and") {
                rest = r;
                continue;
            }
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "wk" | "week" | "weeks" => 604800.0,
            _ => return None,
        };
        total += n * secs;
        any = true;
    }
    any.then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("2 seconds"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1 day"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn retry_rules() {
        let r = gantry_config::model::Retry {
            max: 2,
            when: vec!["script_failure".into()],
            exit_codes: vec![],
        };
        assert!(retry_allowed(&r, &Failure::Script, Some(1)));
        assert!(!retry_allowed(&r, &Failure::Timeout, None));
        let r = gantry_config::model::Retry {
            max: 1,
            when: vec![],
            exit_codes: vec![137],
        };
        assert!(retry_allowed(&r, &Failure::Script, Some(137)));
        assert!(!retry_allowed(&r, &Failure::Script, Some(1)));
    }
}
