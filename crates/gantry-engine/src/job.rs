//! One job attempt through gitlab-runner's named stages, the same for every
//! executor: prepare → get_sources → restore_cache → download_artifacts →
//! step_script → after_script → archive_cache → upload_artifacts → cleanup.
//!
//! Everything but the scripts happens on the host, in the job's directory.
//! All output (the scripts' and the stages' own lines) goes through the
//! job's masker before it reaches the log file or an event.

use crate::archive::{self, Selection};
use crate::cache;
use crate::executor::{
    ExecError, Executor, JobEnvironment, JobStage, LogSink, PrepareRequest, ScriptOutcome,
    ScriptRequest,
};
use crate::script;
use crate::sources::{GitStrategy, Snapshot};
use crate::state::{JobEnvRecord, RunDir, write_private};
use crate::vars::{VarSet, parse_dotenv_report};
use gantry_config::model::{ArtifactsWhen, CachePolicy, Job};
use indexmap::IndexMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The runner's after_script timeout (common/consts.go).
pub const AFTER_SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
/// GitLab's default job timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Run-wide facts every job uses.
pub struct RunShared {
    pub run: RunDir,
    pub snapshot: Snapshot,
    pub cache_dir: PathBuf,
}

/// Everything one attempt of one job needs.
pub struct JobSpec {
    pub index: usize,
    pub job: Job,
    pub slug: String,
    pub attempt: u32,
    pub executor: Arc<dyn Executor>,
    /// The variables in precedence order, before expansion.
    pub vars: VarSet,
    /// `CI_PROJECT_DIR` as the job sees it.
    pub ci_project_dir: String,
    /// Artifact archives of the job's dependencies, in order.
    pub dependencies: Vec<(String, PathBuf)>,
}

/// Why an attempt failed, in GitLab's retry vocabulary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The script exited non-zero.
    Script,
    /// The job timed out.
    Timeout,
    /// Gantry or the executor could not run the job.
    System(String),
}

impl Failure {
    pub fn retry_kind(&self) -> &'static str {
        match self {
            Failure::Script => "script_failure",
            Failure::Timeout => "stuck_or_timeout_failure",
            Failure::System(_) => "runner_system_failure",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptStatus {
    Success,
    Failed(Failure),
    Canceled,
}

#[derive(Debug)]
pub struct AttemptOutcome {
    pub status: AttemptStatus,
    pub exit_code: Option<i32>,
    pub dotenv: Vec<(String, String)>,
    pub junit_failures: Vec<String>,
    pub artifact: Option<PathBuf>,
    pub build_dir: PathBuf,
    pub shell_command: Option<Vec<String>>,
    pub duration: Duration,
}

/// A masked line of a job, for the dispatcher.
/// Bounded ([`LINE_QUEUE`]): a job printing faster than the dispatcher shows
/// its lines waits, instead of filling memory.
pub type LineSender = tokio::sync::mpsc::Sender<(usize, String)>;

/// Lines queued between all jobs and the dispatcher.
pub const LINE_QUEUE: usize = 1024;

/// Runs one attempt of a job. Lines go to `lines` (masked) and to the log
/// file (appended: retries share one log).
pub async fn run_attempt(
    shared: Arc<RunShared>,
    spec: JobSpec,
    lines: LineSender,
    cancel: CancellationToken,
) -> AttemptOutcome {
    let started = Instant::now();
    let build_dir = shared.run.build_dir(&spec.slug);
    let tmp_dir = shared.run.tmp_dir(&spec.slug);
    // As on the runner, the host's environment is not a source of values.
    let fallback = |_: &str| None;

    // Variables: file-type ones become paths (before expansion, so that a
    // reference to one gives the path, as on the runner).
    let mut vars = spec.vars.clone();
    let mut files: Vec<(String, String)> = Vec::new();
    let ci_tmp = format!("{}.tmp", spec.ci_project_dir);
    for v in spec.vars.iter().filter(|v| v.file) {
        let mut as_path = v.clone();
        as_path.value = format!("{ci_tmp}/{}", v.name);
        as_path.file = false;
        as_path.expand = false;
        files.push((v.name.clone(), v.value.clone()));
        vars.push(as_path);
    }
    let expanded = vars.expand(&fallback);
    let mut secrets = spec
        .vars
        .masked_values(expanded.as_ref().unwrap_or(&IndexMap::new()));
    secrets.extend(
        spec.vars
            .iter()
            .filter(|v| v.masked && v.file)
            .map(|v| v.value.clone()),
    );

    // The log pump: raw bytes → masker → lines → file + dispatcher.
    let (raw_tx, mut raw_rx) = crate::executor::log_channel();
    let log_path = shared.run.log_path(&spec.slug);
    let index = spec.index;
    let pump = tokio::spawn(async move {
        let mut log_lines = crate::mask::LogLines::new(secrets, crate::mask::LogLines::LIVE_CAP);
        let mut file: Box<dyn std::io::Write + Send> = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
        {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(_) => Box::new(std::io::sink()),
        };
        let mut ready: Vec<String> = Vec::new();
        while let Some(chunk) = raw_rx.recv().await {
            let _ = log_lines.push(&chunk, &mut file, &mut |line| ready.push(line));
            for line in ready.drain(..) {
                let _ = lines.send((index, line)).await;
            }
        }
        let _ = log_lines.finish(&mut file, &mut |line| ready.push(line));
        for line in ready.drain(..) {
            let _ = lines.send((index, line)).await;
        }
        let _ = file.flush();
    });
    let log = JobLog { tx: raw_tx };

    let mut outcome = AttemptOutcome {
        status: AttemptStatus::Success,
        exit_code: None,
        dotenv: Vec::new(),
        junit_failures: Vec::new(),
        artifact: None,
        build_dir: build_dir.clone(),
        shell_command: None,
        duration: Duration::ZERO,
    };
    let env_map = match expanded {
        Ok(m) => m,
        Err(e) => {
            log.line(&format!("ERROR: job variables: {e}"));
            outcome.status = AttemptStatus::Failed(Failure::System(format!("variables: {e}")));
            drop(log);
            let _ = pump.await;
            outcome.duration = started.elapsed();
            return outcome;
        }
    };
    let lifecycle = Lifecycle {
        shared: &shared,
        spec: &spec,
        log: &log,
        env_map: &env_map,
        files: &files,
        build_dir: &build_dir,
        tmp_dir: &tmp_dir,
        cancel: &cancel,
        started,
    };
    lifecycle.run(&mut outcome).await;
    drop(log);
    let _ = pump.await;
    outcome.duration = started.elapsed();
    outcome
}

/// The job's own messages, into the same masked stream as its output.
struct JobLog {
    tx: LogSink,
}

impl JobLog {
    fn line(&self, text: &str) {
        let _ = self.tx.send(format!("{text}\n").into_bytes());
    }
    fn sink(&self) -> LogSink {
        self.tx.clone()
    }
}

struct Lifecycle<'a> {
    shared: &'a RunShared,
    spec: &'a JobSpec,
    log: &'a JobLog,
    env_map: &'a IndexMap<String, String>,
    files: &'a [(String, String)],
    build_dir: &'a PathBuf,
    tmp_dir: &'a PathBuf,
    cancel: &'a CancellationToken,
    started: Instant,
}

impl Lifecycle<'_> {
    fn env_with_status(&self, status: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .env_map
            .iter()
            .filter(|(k, _)| k.as_str() != "CI_JOB_STATUS")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("CI_JOB_STATUS".into(), status.into()));
        env
    }

    async fn run(&self, outcome: &mut AttemptOutcome) {
        // prepare
        let env = match self.prepare().await {
            Ok(env) => env,
            Err(e) => {
                let msg = e.to_string();
                self.log
                    .line(&format!("ERROR: preparing environment: {msg}"));
                outcome.status = if self.cancel.is_cancelled() {
                    AttemptStatus::Canceled
                } else {
                    AttemptStatus::Failed(Failure::System(msg))
                };
                self.remove_tmp();
                return;
            }
        };
        let mut env = env;
        let status = self.run_prepared(env.as_mut(), outcome).await;
        // Asked after the scripts: an executor keeps a failed job's environment.
        outcome.shell_command = env.shell_command();
        outcome.status = status;
        self.save_env_record();
        // cleanup
        if let Err(e) = env.cleanup().await {
            self.log.line(&format!("WARNING: cleanup: {e}"));
        }
        self.remove_tmp();
    }

    async fn prepare(&self) -> Result<Box<dyn JobEnvironment>, ExecError> {
        // A retry starts from a fresh directory.
        if self.build_dir.exists() {
            std::fs::remove_dir_all(self.build_dir)?;
        }
        std::fs::create_dir_all(self.build_dir)?;
        std::fs::create_dir_all(self.tmp_dir)?;
        for (name, content) in self.files {
            write_private(&self.tmp_dir.join(name), content.as_bytes())?;
        }
        let request = PrepareRequest {
            job: self.spec.job.clone(),
            project_dir: self.build_dir.clone(),
            ci_project_dir: self.spec.ci_project_dir.clone(),
            env: self.env_with_status("running"),
            run_id: self.shared.run.id.clone(),
            repository_key: crate::executor::repository_key(&self.shared.snapshot.repo_dir),
        };
        self.spec
            .executor
            .prepare(request, self.log.sink(), self.cancel.clone())
            .await
    }

    fn remove_tmp(&self) {
        let _ = std::fs::remove_dir_all(self.tmp_dir);
    }

    fn save_env_record(&self) {
        let record = JobEnvRecord {
            env: self.env_with_status("running"),
            files: self.files.to_vec(),
            ci_project_dir: self.spec.ci_project_dir.clone(),
        };
        if let Ok(bytes) = serde_json::to_vec(&record) {
            let _ = write_private(&self.shared.run.job_env_path(&self.spec.slug), &bytes);
        }
    }

    async fn run_prepared(
        &self,
        env: &mut dyn JobEnvironment,
        outcome: &mut AttemptOutcome,
    ) -> AttemptStatus {
        let job = &self.spec.job;
        // get_sources
        let strategy =
            GitStrategy::from_variable(self.env_map.get("GIT_STRATEGY").map(|s| s.as_str()));
        if let Err(e) = self.shared.snapshot.checkout(self.build_dir, strategy) {
            self.log.line(&format!("ERROR: getting sources: {e}"));
            return AttemptStatus::Failed(Failure::System(format!("get_sources: {e}")));
        }
        if self.cancel.is_cancelled() {
            return AttemptStatus::Canceled;
        }
        // restore_cache (a key whose restore failed is not saved again: the
        // job's files are incomplete and would shrink the cache)
        let mut restore_failed: std::collections::HashSet<String> = Default::default();
        for c in job.cache.iter().filter(|c| c.policy != CachePolicy::Push) {
            let key = cache::cache_key(
                c,
                self.env_map,
                &self.shared.snapshot.repo_dir,
                &self.shared.snapshot.sha,
            );
            let mut restored = false;
            for k in cache::restore_keys(c, &key, self.env_map) {
                let path = cache::cache_path(&self.shared.cache_dir, &k);
                if path.is_file() {
                    match cache::restore(&path, self.build_dir) {
                        Ok(n) => {
                            self.log
                                .line(&format!("Restored cache \"{k}\" ({n} entries)"));
                            restored = true;
                            break;
                        }
                        Err(e) => {
                            restore_failed.insert(k.clone());
                            self.log.line(&format!(
                                "WARNING: cache \"{k}\" could not be restored: {e}"
                            ))
                        }
                    }
                }
            }
            if !restored {
                self.log.line(&format!("No cache found for \"{key}\""));
            }
        }
        // download_artifacts
        for (dep, zip) in &self.spec.dependencies {
            match archive::extract_zip(zip, self.build_dir) {
                Ok(n) => self
                    .log
                    .line(&format!("Downloaded artifacts of {dep} ({n} entries)")),
                Err(e) => {
                    self.log.line(&format!(
                        "ERROR: artifacts of {dep} could not be extracted: {e}"
                    ));
                    return AttemptStatus::Failed(Failure::System(format!(
                        "download_artifacts: {dep}: {e}"
                    )));
                }
            }
        }
        if self.cancel.is_cancelled() {
            return AttemptStatus::Canceled;
        }
        // step_script
        let timeout = job
            .timeout
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT)
            .saturating_sub(self.started.elapsed());
        let request = ScriptRequest {
            stage: JobStage::StepScript,
            script: script::step_script(&job.before_script, &job.script),
            env: self.env_with_status("running"),
            timeout: Some(timeout),
        };
        let mut status = match env
            .run_script(request, self.log.sink(), self.cancel.clone())
            .await
        {
            Ok(ScriptOutcome::Exited(0)) => {
                outcome.exit_code = Some(0);
                AttemptStatus::Success
            }
            Ok(ScriptOutcome::Exited(code)) => {
                outcome.exit_code = Some(code);
                self.log
                    .line(&format!("ERROR: Job failed: exit code {code}"));
                AttemptStatus::Failed(Failure::Script)
            }
            Ok(ScriptOutcome::TimedOut) => {
                self.log.line(&format!(
                    "ERROR: Job failed: execution took longer than {}",
                    crate::report::fmt_duration(timeout)
                ));
                AttemptStatus::Failed(Failure::Timeout)
            }
            Ok(ScriptOutcome::Cancelled) => AttemptStatus::Canceled,
            Err(e) => {
                self.log.line(&format!("ERROR: {e}"));
                AttemptStatus::Failed(Failure::System(e.to_string()))
            }
        };
        // after_script (not after a cancellation: the run is stopping)
        if !job.after_script.is_empty() && status != AttemptStatus::Canceled {
            let job_status = match status {
                AttemptStatus::Success => "success",
                _ => "failed",
            };
            self.log.line("Running after_script");
            let request = ScriptRequest {
                stage: JobStage::AfterScript,
                script: script::after_script(&job.after_script),
                env: self.env_with_status(job_status),
                timeout: Some(AFTER_SCRIPT_TIMEOUT),
            };
            match env
                .run_script(request, self.log.sink(), self.cancel.clone())
                .await
            {
                Ok(ScriptOutcome::Exited(0)) => {}
                Ok(ScriptOutcome::Exited(code)) => self.log.line(&format!(
                    "WARNING: after_script failed with exit code {code}"
                )),
                Ok(ScriptOutcome::TimedOut) => self.log.line("WARNING: after_script timed out"),
                Ok(ScriptOutcome::Cancelled) => status = AttemptStatus::Canceled,
                Err(e) => self.log.line(&format!("WARNING: after_script: {e}")),
            }
        }
        if status == AttemptStatus::Canceled {
            return status;
        }
        let succeeded = status == AttemptStatus::Success;
        let when_ok = |w: ArtifactsWhen| match w {
            ArtifactsWhen::OnSuccess => succeeded,
            ArtifactsWhen::OnFailure => !succeeded,
            ArtifactsWhen::Always => true,
        };
        // archive_cache
        for c in job
            .cache
            .iter()
            .filter(|c| c.policy != CachePolicy::Pull && when_ok(c.when))
        {
            let key = cache::cache_key(
                c,
                self.env_map,
                &self.shared.snapshot.repo_dir,
                &self.shared.snapshot.sha,
            );
            let paths: Vec<String> = c
                .paths
                .iter()
                .map(|p| crate::vars::expand_runner(p, self.env_map))
                .collect();
            let (files, warnings) = archive::select(
                self.build_dir,
                &Selection {
                    paths: &paths,
                    exclude: &[],
                    untracked: c.untracked,
                    tracked: &self.shared.snapshot.tracked,
                    ci_project_dir: &self.spec.ci_project_dir,
                },
            );
            for w in warnings {
                self.log.line(&format!("WARNING: cache: {w}"));
            }
            if files.is_empty() {
                self.log
                    .line(&format!("WARNING: cache \"{key}\": no matching files"));
                continue;
            }
            if restore_failed.contains(&key) {
                self.log.line(&format!(
                    "WARNING: cache \"{key}\" not saved: its restore failed, and saving would replace it with this job's incomplete files"
                ));
                continue;
            }
            let dest = cache::cache_path(&self.shared.cache_dir, &key);
            match archive::write_zip(self.build_dir, &files, &dest) {
                Ok(n) => self
                    .log
                    .line(&format!("Saved cache \"{key}\" ({n} entries)")),
                Err(e) => self
                    .log
                    .line(&format!("WARNING: cache \"{key}\" could not be saved: {e}")),
            }
        }
        // upload_artifacts
        if let Some(art) = &job.artifacts {
            if when_ok(art.when) && (!art.paths.is_empty() || art.untracked) {
                let paths: Vec<String> = art
                    .paths
                    .iter()
                    .map(|p| crate::vars::expand_runner(p, self.env_map))
                    .collect();
                let exclude: Vec<String> = art
                    .exclude
                    .iter()
                    .map(|p| crate::vars::expand_runner(p, self.env_map))
                    .collect();
                let (files, warnings) = archive::select(
                    self.build_dir,
                    &Selection {
                        paths: &paths,
                        exclude: &exclude,
                        untracked: art.untracked,
                        tracked: &self.shared.snapshot.tracked,
                        ci_project_dir: &self.spec.ci_project_dir,
                    },
                );
                for w in warnings
                    .into_iter()
                    .chain(archive::outside_links(self.build_dir, &files))
                {
                    self.log.line(&format!("WARNING: artifacts: {w}"));
                }
                if files.is_empty() {
                    self.log.line("WARNING: artifacts: no files to upload");
                } else {
                    let dest = self.shared.run.artifact_path(&self.spec.slug);
                    match archive::write_zip(self.build_dir, &files, &dest) {
                        Ok(n) => {
                            self.log.line(&format!("Uploaded artifacts ({n} entries)"));
                            outcome.artifact = Some(dest);
                        }
                        Err(e) => {
                            self.log
                                .line(&format!("ERROR: artifacts could not be saved: {e}"));
                            if succeeded {
                                status = AttemptStatus::Failed(Failure::System(format!(
                                    "upload_artifacts: {e}"
                                )));
                            }
                        }
                    }
                }
            }
            // Reports are collected whatever the job's result.
            if let Some(paths) = art.reports.get("dotenv") {
                for p in paths {
                    let p = crate::vars::expand_runner(p, self.env_map);
                    let path = self.build_dir.join(&p);
                    match std::fs::read_to_string(&path) {
                        Ok(text) => match parse_dotenv_report(&text) {
                            Ok(vars) => {
                                self.log.line(&format!(
                                    "dotenv report {p}: {} variable(s)",
                                    vars.len()
                                ));
                                outcome.dotenv.extend(vars);
                            }
                            Err(e) => {
                                self.log.line(&format!("ERROR: dotenv report {p}: {e}"));
                                if status == AttemptStatus::Success {
                                    status = AttemptStatus::Failed(Failure::System(format!(
                                        "dotenv report {p}: {e}"
                                    )));
                                }
                            }
                        },
                        Err(_) => self
                            .log
                            .line(&format!("WARNING: dotenv report {p} not found")),
                    }
                }
            }
            if let Some(paths) = art.reports.get("junit") {
                let paths: Vec<String> = paths
                    .iter()
                    .map(|p| crate::vars::expand_runner(p, self.env_map))
                    .collect();
                let (gs, _) = crate::glob::GlobSet::new(&paths, &self.spec.ci_project_dir);
                for f in gs.collect(self.build_dir) {
                    if let Ok(xml) = std::fs::read_to_string(self.build_dir.join(&f)) {
                        outcome.junit_failures.extend(archive::junit_failures(&xml));
                    }
                }
            }
        }
        status
    }
}
