//! The executor seam. Every job goes through the same named stages
//! (gitlab-runner's lifecycle); an executor only decides *where* the
//! user's scripts run. The engine does everything else (sources, caches,
//! artifacts, masking, logs) on the host, in the job's project directory.

use async_trait::async_trait;
use gantry_config::model::Job;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The lifecycle stages of a job, in order, as gitlab-runner names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobStage {
    Prepare,
    GetSources,
    RestoreCache,
    DownloadArtifacts,
    StepScript,
    AfterScript,
    ArchiveCache,
    UploadArtifacts,
    Cleanup,
}

impl JobStage {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStage::Prepare => "prepare",
            JobStage::GetSources => "get_sources",
            JobStage::RestoreCache => "restore_cache",
            JobStage::DownloadArtifacts => "download_artifacts",
            JobStage::StepScript => "step_script",
            JobStage::AfterScript => "after_script",
            JobStage::ArchiveCache => "archive_cache",
            JobStage::UploadArtifacts => "upload_artifacts",
            JobStage::Cleanup => "cleanup",
        }
    }
}

/// Raw output bytes of a script; the engine splits lines and masks secrets.
pub type LogSink = tokio::sync::mpsc::UnboundedSender<Vec<u8>>;

/// What the engine hands an executor to prepare one job.
#[derive(Clone, Debug)]
pub struct PrepareRequest {
    pub job: Job,
    /// Host directory holding the job's clean copy of the repository.
    pub project_dir: PathBuf,
    /// Path the job sees as `CI_PROJECT_DIR` (same as `project_dir` on the
    /// shell executor; e.g. `/builds/group/project` in a container).
    pub ci_project_dir: String,
    /// The job's full environment, already expanded (values unmasked).
    pub env: Vec<(String, String)>,
    /// Unique id of this pipeline run, for naming containers and networks.
    pub run_id: String,
}

/// One shell script to run in the job environment.
#[derive(Clone, Debug)]
pub struct ScriptRequest {
    /// `StepScript` (before_script + script in one shell) or `AfterScript`.
    pub stage: JobStage,
    /// The script text for `sh`/`bash`; each command's failure fails it.
    pub script: String,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptOutcome {
    Exited(i32),
    /// Killed at the timeout (the whole process tree or container).
    TimedOut,
    /// Killed because the run was cancelled (Ctrl-C).
    Cancelled,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    Setup(String),
    #[error("image `{image}` is not available locally and could not be pulled: {reason}")]
    Image { image: String, reason: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A prepared job environment: a working directory on the host, or a
/// container with its services.
#[async_trait]
pub trait JobEnvironment: Send {
    async fn run_script(
        &mut self,
        request: ScriptRequest,
        output: LogSink,
        cancel: CancellationToken,
    ) -> Result<ScriptOutcome, ExecError>;

    /// A command line that opens an interactive shell in this environment
    /// (for `gantry shell`), if the environment outlives the job.
    fn shell_command(&self) -> Option<Vec<String>> {
        None
    }

    /// Removes everything `prepare` created. Must be safe to call after a
    /// failure or a cancellation.
    async fn cleanup(self: Box<Self>) -> Result<(), ExecError>;
}

/// Where scripts run: `shell` or `docker`.
#[async_trait]
pub trait Executor: Send + Sync {
    fn name(&self) -> &'static str;

    /// The `prepare` stage: create the environment, start services.
    async fn prepare(
        &self,
        request: PrepareRequest,
        output: LogSink,
        cancel: CancellationToken,
    ) -> Result<Box<dyn JobEnvironment>, ExecError>;

    /// Called once when the pipeline run ends (also after Ctrl-C), to remove
    /// run-wide resources such as the per-run network.
    async fn shutdown(&self) -> Result<(), ExecError> {
        Ok(())
    }
}

/// The host path of a project dir as a `Path`, for executors.
pub fn host_dir(req: &PrepareRequest) -> &Path {
    &req.project_dir
}
