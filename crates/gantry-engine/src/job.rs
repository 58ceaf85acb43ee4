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
    ExecError, Executor, JobEnvironment, JobStage, LogSink, OutputStream, PrepareRequest,
    ScriptOutcome, ScriptRequest,
};
use crate::payload::{AttemptStatus, Failure, JobOutcome, JobPayload};
use crate::ports::{BlobStore, LogWriter, SourceProvider};
use crate::script;
use crate::sources::GitStrategy;
use crate::state::{JobEnvRecord, write_private};
use crate::vars::parse_dotenv_report;
use gantry_config::model::{ArtifactsWhen, CachePolicy};
use indexmap::IndexMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::unbounded_channel;
use tokio_util::sync::CancellationToken;

/// The runner's after_script timeout (common/consts.go).
pub const AFTER_SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
/// GitLab's default job timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// What a job attempt tells whoever watches it, as it happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobSignal {
    /// A masked line of output (the scripts' or the stages' own), cut to
    /// [`crate::mask::LogLines::LIVE_CAP`] bytes, and its stream.
    Line { text: String, stream: OutputStream },
    /// A lifecycle stage begins.
    Stage(JobStage),
}

/// Everything an attempt uses that is not in its payload.
pub struct JobPorts {
    /// The job's log (retries append).
    pub log: Box<dyn LogWriter>,
    /// Live lines and stage events, or `None` when nobody watches. The
    /// channel is bounded: when the watcher is behind, the job's log pump
    /// waits, then the executor, then the script on its pipe (memory stays
    /// bounded whatever the output's speed).
    pub signals: Option<tokio::sync::mpsc::Sender<JobSignal>>,
    pub blobs: Arc<dyn BlobStore>,
    pub sources: Arc<dyn SourceProvider>,
    pub executor: Arc<dyn Executor>,
    /// Host directory holding the jobs' build directories.
    pub builds_dir: PathBuf,
    /// The project's state directory on the host, given to a container
    /// executor to mount (the caller sets `GANTRY_STATE_DIR` to match).
    pub state_dir: Option<PathBuf>,
}

/// Runs one attempt of a job through gitlab-runner's stages. Lines are
/// masked before they reach the log or a signal.
pub async fn run_job(
    payload: JobPayload,
    ports: JobPorts,
    cancel: CancellationToken,
) -> JobOutcome {
    let started = Instant::now();
    let build_dir = ports.builds_dir.join(&payload.slug);
    let tmp_dir = ports.builds_dir.join(format!("{}.tmp", payload.slug));
    // As on the runner, the host's environment is not a source of values.
    let fallback = |_: &str| None;

    // Variables: file-type ones become paths (before expansion, so that a
    // reference to one gives the path, as on the runner).
    let mut vars = payload.vars.clone();
    let mut files: Vec<(String, String)> = Vec::new();
    let ci_tmp = format!("{}.tmp", payload.ci_project_dir);
    for v in payload.vars.iter().filter(|v| v.file) {
        let mut as_path = v.clone();
        as_path.value = format!("{ci_tmp}/{}", v.name);
        as_path.file = false;
        as_path.expand = false;
        files.push((v.name.clone(), v.value.clone()));
        vars.push(as_path);
    }
    let expanded = vars.expand(&fallback);
    let mut secrets = payload
        .vars
        .masked_values(expanded.as_ref().unwrap_or(&IndexMap::new()));
    secrets.extend(
        payload
            .vars
            .iter()
            .filter(|v| v.masked && v.file)
            .map(|v| v.value.clone()),
    );

    // The log pump: raw bytes → masker → lines → log + signals. The log is
    // flushed whenever the pump has caught up, so readers see lines live.
    let (raw_tx, mut raw_rx) = crate::executor::log_channel();
    let (stage_tx, mut stage_rx) = unbounded_channel::<JobStage>();
    let JobPorts {
        log: log_writer,
        signals,
        blobs,
        sources,
        executor,
        builds_dir: _,
        state_dir,
    } = ports;
    let pump = tokio::spawn(async move {
        // Masks, splits and cuts lines for the live view in linear time.
        let mut masker = crate::mask::LogLines::new(secrets, crate::mask::LogLines::LIVE_CAP);
        let mut lines = LineSplitter {
            takes_bytes: log_writer.takes_bytes(),
            writer: log_writer,
            live: Vec::new(),
            stream: OutputStream::Stdout,
            partial: Vec::new(),
            log_ok: true,
        };

        let mut raw_open = true;
        let mut stage_open = true;
        while raw_open || stage_open {
            tokio::select! {
                biased;
                chunk = raw_rx.recv_from(), if raw_open => match chunk {
                    Some((chunk, stream)) => {
                        // One chunk at a time: the lines waiting for the
                        // watcher are those of one chunk (at most 1 MiB).
                        lines.take(&mut masker, &chunk, stream);
                        for (text, stream) in lines.live.drain(..) {
                            send_signal(&signals, JobSignal::Line { text, stream }).await;
                        }
                        if raw_rx.is_empty() {
                            lines.flush();
                        }
                    }
                    None => raw_open = false,
                },
                stage = stage_rx.recv(), if stage_open => match stage {
                    Some(stage) => send_signal(&signals, JobSignal::Stage(stage)).await,
                    None => stage_open = false,
                },
            }
        }
        lines.finish(&mut masker);
        for (text, stream) in lines.live.drain(..) {
            send_signal(&signals, JobSignal::Line { text, stream }).await;
        }
    });
    let log = JobLog {
        tx: raw_tx,
        stages: stage_tx,
    };

    let mut outcome = JobOutcome {
        status: AttemptStatus::Success,
        exit_code: None,
        reason: None,
        dotenv: Vec::new(),
        junit_failures: Vec::new(),
        artifact: None,
        build_dir: Some(build_dir.clone()),
        shell_command: None,
        duration: Duration::ZERO,
    };
    match expanded {
        Ok(env_map) => {
            let lifecycle = Lifecycle {
                payload: &payload,
                log: &log,
                env_map: &env_map,
                files: &files,
                build_dir: &build_dir,
                tmp_dir: &tmp_dir,
                cancel: &cancel,
                started,
                blobs: blobs.as_ref(),
                sources: sources.as_ref(),
                executor: executor.as_ref(),
                state_dir: state_dir.as_deref(),
                restore_failed: Default::default(),
            };
            lifecycle.run(&mut outcome).await;
        }
        Err(e) => {
            log.line(&format!("ERROR: job variables: {e}"));
            outcome.status = AttemptStatus::Failed(Failure::System(format!("variables: {e}")));
        }
    }
    drop(log);
    let _ = pump.await;
    if let AttemptStatus::Failed(failure) = &outcome.status {
        outcome.reason = match failure {
            Failure::Script => None,
            Failure::Timeout => Some(timeout_reason(&payload)),
            Failure::System(m) => Some(m.clone()),
        };
    }
    outcome.duration = started.elapsed();
    outcome
}

/// Waits until the watcher has room for `signal`; a watcher that is gone
/// no longer holds the job up.
async fn send_signal(signals: &Option<tokio::sync::mpsc::Sender<JobSignal>>, signal: JobSignal) {
    if let Some(tx) = signals {
        let _ = tx.send(signal).await;
    }
}

/// Splits masked output into lines for the log and the live view.
struct LineSplitter {
    writer: Box<dyn LogWriter>,
    /// The writer takes bytes as they come (else lines are collected whole).
    takes_bytes: bool,
    /// Finished lines for the live view, cut to
    /// [`crate::mask::LogLines::LIVE_CAP`], not yet sent, with the stream
    /// of the chunk that ended them (executors send whole lines of one
    /// stream at a time).
    live: Vec<(String, OutputStream)>,
    /// The stream of the last chunk (the last line's, at the end).
    stream: OutputStream,
    partial: Vec<u8>,
    /// Cleared at the first write error (the disk is full): the run goes on.
    log_ok: bool,
}

impl LineSplitter {
    /// Raw output through the masker: bytes to the log as they come, lines
    /// cut to [`crate::mask::LogLines::LIVE_CAP`] into `live`.
    fn take(&mut self, masker: &mut crate::mask::LogLines, chunk: &[u8], stream: OutputStream) {
        self.stream = stream;
        let live = &mut self.live;
        let mut file = LogBytes {
            writer: &mut self.writer,
            takes_bytes: self.takes_bytes,
            line: &mut self.partial,
            ok: &mut self.log_ok,
        };
        let _ = masker.push(chunk, &mut file, &mut |line| live.push((line, stream)));
    }

    fn flush(&mut self) {
        if self.log_ok && self.writer.flush().is_err() {
            self.log_ok = false;
        }
    }

    /// The last line, even without a newline.
    fn finish(&mut self, masker: &mut crate::mask::LogLines) {
        let stream = self.stream;
        let live = &mut self.live;
        let mut file = LogBytes {
            writer: &mut self.writer,
            takes_bytes: self.takes_bytes,
            line: &mut self.partial,
            ok: &mut self.log_ok,
        };
        let _ = masker.finish(&mut file, &mut |line| live.push((line, stream)));
        self.flush();
    }
}

/// The log side of [`crate::mask::LogLines`]: bytes in, straight to a
/// [`LogWriter`] that takes bytes (memory bounded whatever a line's
/// length), else whole lines (a long line grows one buffer: linear).
struct LogBytes<'a> {
    writer: &'a mut Box<dyn LogWriter>,
    takes_bytes: bool,
    line: &'a mut Vec<u8>,
    /// Cleared at the first write error (the disk is full): the run goes on.
    ok: &'a mut bool,
}

impl std::io::Write for LogBytes<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.takes_bytes {
            if *self.ok && self.writer.write_bytes(buf).is_err() {
                *self.ok = false;
            }
            return Ok(buf.len());
        }
        let mut rest = buf;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..pos]);
            if *self.ok {
                let text = String::from_utf8_lossy(self.line);
                if self.writer.write_line(&text).is_err() {
                    *self.ok = false;
                }
            }
            self.line.clear();
            rest = &rest[pos + 1..];
        }
        self.line.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// "timeout after 1m30s (timeout: 90 in .gitlab-ci.yml)" or the default.
fn timeout_reason(payload: &JobPayload) -> String {
    match payload.job.timeout {
        Some(secs) => format!(
            "timed out after {} (the job's timeout)",
            crate::report::fmt_duration(Duration::from_secs(secs))
        ),
        None => format!(
            "timed out after {} (the default timeout; set `timeout:` on the job to change it)",
            crate::report::fmt_duration(DEFAULT_TIMEOUT)
        ),
    }
}

/// The job's own messages, into the same masked stream as its output.
struct JobLog {
    tx: LogSink,
    stages: tokio::sync::mpsc::UnboundedSender<JobStage>,
}

impl JobLog {
    /// A stage begins: a signal and a section line in the log.
    fn stage(&self, stage: JobStage) {
        let _ = self.stages.send(stage);
    }
    fn line(&self, text: &str) {
        let _ = self.tx.send(format!("{text}\n").into_bytes());
    }
    fn sink(&self) -> LogSink {
        self.tx.clone()
    }
}

struct Lifecycle<'a> {
    payload: &'a JobPayload,
    blobs: &'a dyn BlobStore,
    sources: &'a dyn SourceProvider,
    executor: &'a dyn Executor,
    state_dir: Option<&'a std::path::Path>,
    log: &'a JobLog,
    env_map: &'a IndexMap<String, String>,
    files: &'a [(String, String)],
    build_dir: &'a PathBuf,
    tmp_dir: &'a PathBuf,
    cancel: &'a CancellationToken,
    started: Instant,
    /// Cache keys whose restore failed: never saved again by this job.
    restore_failed: std::sync::Mutex<std::collections::HashSet<String>>,
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

    fn canceled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The stages in order; a failed stage skips to `after_script` (if the
    /// script ran) or to the end, as gitlab-runner does.
    async fn run(&self, outcome: &mut JobOutcome) {
        self.log.stage(JobStage::Prepare);
        let mut env = match self.prepare().await {
            Ok(env) => env,
            Err(e) => {
                let msg = e.to_string();
                self.log
                    .line(&format!("ERROR: preparing environment: {msg}"));
                outcome.status = if self.canceled() {
                    AttemptStatus::Canceled
                } else {
                    AttemptStatus::Failed(Failure::System(msg))
                };
                self.remove_tmp();
                return;
            }
        };
        outcome.status = self.run_prepared(env.as_mut(), outcome).await;
        // Asked after the scripts: an executor keeps a failed job's environment.
        outcome.shell_command = env.shell_command();
        self.save_env_record();
        self.log.stage(JobStage::Cleanup);
        self.cleanup(env).await;
    }

    async fn run_prepared(
        &self,
        env: &mut dyn JobEnvironment,
        outcome: &mut JobOutcome,
    ) -> AttemptStatus {
        self.log.stage(JobStage::GetSources);
        if let Err(failure) = self.get_sources() {
            return AttemptStatus::Failed(failure);
        }
        if self.canceled() {
            return AttemptStatus::Canceled;
        }
        self.log.stage(JobStage::RestoreCache);
        self.restore_cache();
        self.log.stage(JobStage::DownloadArtifacts);
        if let Err(failure) = self.download_artifacts() {
            return AttemptStatus::Failed(failure);
        }
        if self.canceled() {
            return AttemptStatus::Canceled;
        }
        self.log.stage(JobStage::StepScript);
        let mut status = self.step_script(env, outcome).await;
        if !self.payload.job.after_script.is_empty() && status != AttemptStatus::Canceled {
            self.log.stage(JobStage::AfterScript);
            if self.after_script(env, &status).await == Some(AttemptStatus::Canceled) {
                status = AttemptStatus::Canceled;
            }
        }
        if status == AttemptStatus::Canceled {
            return status;
        }
        let succeeded = status == AttemptStatus::Success;
        self.log.stage(JobStage::ArchiveCache);
        self.archive_cache(succeeded);
        self.log.stage(JobStage::UploadArtifacts);
        if let Err(failure) = self.upload_artifacts(succeeded, outcome)
            && status == AttemptStatus::Success
        {
            status = AttemptStatus::Failed(failure);
        }
        status
    }

    /// `prepare`: a fresh build directory, file variables, the executor's
    /// environment (container, services).
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
            job: self.payload.job.clone(),
            project_dir: self.build_dir.clone(),
            ci_project_dir: self.payload.ci_project_dir.clone(),
            env: self.env_with_status("running"),
            run_id: self.payload.run_id.clone(),
            state_dir: self.state_dir.map(PathBuf::from),
            repository_key: crate::executor::repository_key_of_build_dir(self.build_dir),
        };
        self.executor
            .prepare(request, self.log.sink(), self.cancel.clone())
            .await
    }

    /// `cleanup`: the executor's environment and the file variables go.
    async fn cleanup(&self, env: Box<dyn JobEnvironment>) {
        if let Err(e) = env.cleanup().await {
            self.log.line(&format!("WARNING: cleanup: {e}"));
        }
        if let Err(e) = self.sources.release(self.build_dir) {
            self.log.line(&format!("WARNING: sources: {e}"));
        }
        self.remove_tmp();
    }

    fn remove_tmp(&self) {
        let _ = std::fs::remove_dir_all(self.tmp_dir);
    }

    /// The environment for `gantry shell`, next to the build directory.
    fn save_env_record(&self) {
        let record = JobEnvRecord {
            env: self.env_with_status("running"),
            files: self.files.to_vec(),
            ci_project_dir: self.payload.ci_project_dir.clone(),
        };
        if let Ok(bytes) = serde_json::to_vec(&record) {
            let _ = write_private(&env_record_path(self.build_dir), &bytes);
        }
    }

    /// `get_sources`: the job's copy of the commit.
    fn get_sources(&self) -> Result<(), Failure> {
        let strategy =
            GitStrategy::from_variable(self.env_map.get("GIT_STRATEGY").map(|s| s.as_str()));
        self.sources
            .checkout(self.build_dir, strategy)
            .map_err(|e| {
                self.log.line(&format!("ERROR: getting sources: {e}"));
                Failure::System(format!("get_sources: {e}"))
            })
    }

    fn cache_key(&self, c: &gantry_config::model::Cache) -> String {
        cache::cache_key(c, self.env_map, self.sources.git_dir(), self.sources.sha())
    }

    /// `restore_cache`: the first key (or fallback key) found; a missing or
    /// broken cache is a warning.
    fn restore_cache(&self) {
        for c in self
            .payload
            .job
            .cache
            .iter()
            .filter(|c| c.policy != CachePolicy::Push)
        {
            let key = self.cache_key(c);
            let mut restored = false;
            for k in cache::restore_keys(c, &key, self.env_map) {
                let Some(path) = self.blobs.cache_path(&k) else {
                    continue;
                };
                match cache::restore(&path, self.build_dir) {
                    Ok(n) => {
                        self.log
                            .line(&format!("Restored cache \"{k}\" ({n} entries)"));
                        restored = true;
                        break;
                    }
                    Err(e) => {
                        // Not saved again: the files are incomplete.
                        if let Ok(mut failed) = self.restore_failed.lock() {
                            failed.insert(k.clone());
                        }
                        self.log.line(&format!(
                            "WARNING: cache \"{k}\" could not be restored: {e}"
                        ))
                    }
                }
            }
            if !restored {
                self.log.line(&format!("No cache found for \"{key}\""));
            }
        }
    }

    /// `download_artifacts`: the dependencies' archives, in order.
    fn download_artifacts(&self) -> Result<(), Failure> {
        for dep in &self.payload.dependencies {
            let extracted = self
                .blobs
                .artifact_path(dep)
                .map_err(|e| e.to_string())
                .and_then(|zip| {
                    archive::extract_zip(&zip, self.build_dir).map_err(|e| e.to_string())
                });
            match extracted {
                Ok(n) => self.log.line(&format!(
                    "Downloaded artifacts of {} ({n} entries)",
                    dep.job
                )),
                Err(e) => {
                    self.log.line(&format!(
                        "ERROR: artifacts of {} could not be extracted: {e}",
                        dep.job
                    ));
                    return Err(Failure::System(format!(
                        "download_artifacts: {}: {e}",
                        dep.job
                    )));
                }
            }
        }
        Ok(())
    }

    /// `step_script`: before_script and script in one shell, within what is
    /// left of the job's timeout.
    async fn step_script(
        &self,
        env: &mut dyn JobEnvironment,
        outcome: &mut JobOutcome,
    ) -> AttemptStatus {
        let job = &self.payload.job;
        let limit = job
            .timeout
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT);
        let timeout = limit.saturating_sub(self.started.elapsed());
        let request = ScriptRequest {
            stage: JobStage::StepScript,
            script: script::step_script(&job.before_script, &job.script),
            env: self.env_with_status("running"),
            timeout: Some(timeout),
        };
        match env
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
                let source = if job.timeout.is_some() {
                    "the job's `timeout:`"
                } else {
                    "the default timeout"
                };
                self.log.line(&format!(
                    "ERROR: Job failed: execution took longer than {} ({source})",
                    crate::report::fmt_duration(limit)
                ));
                AttemptStatus::Failed(Failure::Timeout)
            }
            Ok(ScriptOutcome::Cancelled) => AttemptStatus::Canceled,
            Err(e) => {
                self.log.line(&format!("ERROR: {e}"));
                AttemptStatus::Failed(Failure::System(e.to_string()))
            }
        }
    }

    /// `after_script`: its failure is a warning; `Some(Canceled)` when the
    /// run was canceled while it ran.
    async fn after_script(
        &self,
        env: &mut dyn JobEnvironment,
        status: &AttemptStatus,
    ) -> Option<AttemptStatus> {
        let job_status = match status {
            AttemptStatus::Success => "success",
            _ => "failed",
        };
        self.log.line("Running after_script");
        let request = ScriptRequest {
            stage: JobStage::AfterScript,
            script: script::after_script(&self.payload.job.after_script),
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
            Ok(ScriptOutcome::TimedOut) => self.log.line(&format!(
                "WARNING: after_script timed out after {}",
                crate::report::fmt_duration(AFTER_SCRIPT_TIMEOUT)
            )),
            Ok(ScriptOutcome::Cancelled) => return Some(AttemptStatus::Canceled),
            Err(e) => self.log.line(&format!("WARNING: after_script: {e}")),
        }
        None
    }

    fn when_ok(succeeded: bool, when: ArtifactsWhen) -> bool {
        match when {
            ArtifactsWhen::OnSuccess => succeeded,
            ArtifactsWhen::OnFailure => !succeeded,
            ArtifactsWhen::Always => true,
        }
    }

    /// `archive_cache`: a failure to save is a warning.
    fn archive_cache(&self, succeeded: bool) {
        for c in self
            .payload
            .job
            .cache
            .iter()
            .filter(|c| c.policy != CachePolicy::Pull && Self::when_ok(succeeded, c.when))
        {
            let key = self.cache_key(c);
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
                    tracked: self.sources.tracked(),
                    ci_project_dir: &self.payload.ci_project_dir,
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
            if self
                .restore_failed
                .lock()
                .is_ok_and(|failed| failed.contains(&key))
            {
                self.log.line(&format!(
                    "WARNING: cache \"{key}\" not saved: its restore failed, and saving would replace it with this job's incomplete files"
                ));
                continue;
            }
            let dest = self.blobs.cache_staging(&key);
            let saved = archive::write_zip(self.build_dir, &files, &dest)
                .map_err(|e| e.to_string())
                .and_then(|n| {
                    self.blobs
                        .commit_cache(&key, &dest)
                        .map(|()| n)
                        .map_err(|e| e.to_string())
                });
            match saved {
                Ok(n) => self
                    .log
                    .line(&format!("Saved cache \"{key}\" ({n} entries)")),
                Err(e) => self
                    .log
                    .line(&format!("WARNING: cache \"{key}\" could not be saved: {e}")),
            }
        }
    }

    /// `upload_artifacts`: the archive, then the reports (collected
    /// whatever the job's result).
    fn upload_artifacts(&self, succeeded: bool, outcome: &mut JobOutcome) -> Result<(), Failure> {
        let Some(art) = &self.payload.job.artifacts else {
            return Ok(());
        };
        let mut result = Ok(());
        if Self::when_ok(succeeded, art.when) && (!art.paths.is_empty() || art.untracked) {
            let expand = |list: &[String]| -> Vec<String> {
                list.iter()
                    .map(|p| crate::vars::expand_runner(p, self.env_map))
                    .collect()
            };
            let paths = expand(&art.paths);
            let exclude = expand(&art.exclude);
            let (files, warnings) = archive::select(
                self.build_dir,
                &Selection {
                    paths: &paths,
                    exclude: &exclude,
                    untracked: art.untracked,
                    tracked: self.sources.tracked(),
                    ci_project_dir: &self.payload.ci_project_dir,
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
                let dest = self
                    .blobs
                    .artifact_staging(&self.payload.run_id, &self.payload.slug);
                let stored = archive::write_zip(self.build_dir, &files, &dest)
                    .map_err(|e| e.to_string())
                    .and_then(|n| {
                        self.blobs
                            .commit_artifact(&self.payload.run_id, &self.payload.job.name, &dest)
                            .map(|r| (n, r))
                            .map_err(|e| e.to_string())
                    });
                match stored {
                    Ok((n, artifact)) => {
                        self.log.line(&format!("Uploaded artifacts ({n} entries)"));
                        outcome.artifact = Some(artifact);
                    }
                    Err(e) => {
                        self.log
                            .line(&format!("ERROR: artifacts could not be saved: {e}"));
                        result = Err(Failure::System(format!("upload_artifacts: {e}")));
                    }
                }
            }
        }
        if let Some(paths) = art.reports.get("dotenv") {
            for p in paths {
                let p = crate::vars::expand_runner(p, self.env_map);
                match std::fs::read_to_string(self.build_dir.join(&p)) {
                    Ok(text) => match parse_dotenv_report(&text) {
                        Ok(vars) => {
                            self.log
                                .line(&format!("dotenv report {p}: {} variable(s)", vars.len()));
                            outcome.dotenv.extend(vars);
                        }
                        Err(e) => {
                            self.log.line(&format!("ERROR: dotenv report {p}: {e}"));
                            if result.is_ok() {
                                result = Err(Failure::System(format!("dotenv report {p}: {e}")));
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
            let (gs, _) = crate::glob::GlobSet::new(&paths, &self.payload.ci_project_dir);
            for f in gs.collect(self.build_dir) {
                if let Ok(xml) = std::fs::read_to_string(self.build_dir.join(&f)) {
                    outcome.junit_failures.extend(archive::junit_failures(&xml));
                }
            }
        }
        result
    }
}

/// Where the environment of a job is kept for `gantry shell` (0600).
pub fn env_record_path(build_dir: &std::path::Path) -> PathBuf {
    PathBuf::from(format!("{}.env.json", build_dir.display()))
}
