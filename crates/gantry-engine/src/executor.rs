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

/// Which of a script's output streams bytes come from. The log file does
/// not tell them apart (it is what the job printed); the live view marks
/// stderr.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    #[default]
    Stdout,
    Stderr,
}

impl OutputStream {
    /// 0 for stdout, 1 for stderr (the index [`LineBuffers`] takes).
    pub fn index(self) -> usize {
        match self {
            OutputStream::Stdout => 0,
            OutputStream::Stderr => 1,
        }
    }

    /// 1 is stderr; anything else is stdout.
    pub fn from_index(index: usize) -> OutputStream {
        if index == 1 {
            OutputStream::Stderr
        } else {
            OutputStream::Stdout
        }
    }
}

/// Bytes of script output that may be in flight between an executor and the
/// job's log pump before [`LogSink::send_output`] waits (backpressure).
pub const LOG_BUDGET: usize = 1 << 20;

/// The receiving end of a job's log is gone.
#[derive(Debug, thiserror::Error)]
#[error("the job's log is closed")]
pub struct LogClosed;

/// Where an executor writes a job's raw output; the engine splits lines and
/// masks secrets. Script output goes through [`LogSink::send_output`], which
/// waits while [`LOG_BUDGET`] bytes are unread, so a fast job cannot fill
/// memory; the engine's own short messages use [`LogSink::send`], which
/// never waits. An executor must send whole lines of one stream at a time
/// (see [`LineBuffers`]) so that a secret is never split by another stream.
#[derive(Clone, Debug)]
pub struct LogSink {
    tx: tokio::sync::mpsc::UnboundedSender<(Vec<u8>, u32, OutputStream)>,
    budget: std::sync::Arc<tokio::sync::Semaphore>,
}

/// The engine's end of a [`LogSink`].
#[derive(Debug)]
pub struct LogReceiver {
    rx: tokio::sync::mpsc::UnboundedReceiver<(Vec<u8>, u32, OutputStream)>,
    budget: std::sync::Arc<tokio::sync::Semaphore>,
}

/// A job's log channel, bounded to [`LOG_BUDGET`] bytes of script output.
pub fn log_channel() -> (LogSink, LogReceiver) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(LOG_BUDGET));
    (
        LogSink {
            tx,
            budget: budget.clone(),
        },
        LogReceiver { rx, budget },
    )
}

impl LogSink {
    /// A short message of the engine or executor; never waits.
    pub fn send(&self, bytes: Vec<u8>) -> Result<(), LogClosed> {
        self.tx
            .send((bytes, 0, OutputStream::Stdout))
            .map_err(|_| LogClosed)
    }

    /// Script output (stdout): waits while the log is [`LOG_BUDGET`] bytes
    /// behind.
    pub async fn send_output(&self, bytes: Vec<u8>) -> Result<(), LogClosed> {
        self.send_output_from(OutputStream::Stdout, bytes).await
    }

    /// Script output of `stream` (whole lines, or pieces of one long line):
    /// waits while the log is [`LOG_BUDGET`] bytes behind.
    pub async fn send_output_from(
        &self,
        stream: OutputStream,
        bytes: Vec<u8>,
    ) -> Result<(), LogClosed> {
        if bytes.is_empty() {
            return Ok(());
        }
        let want = u32::try_from(bytes.len().min(LOG_BUDGET)).unwrap_or(u32::MAX);
        let permits = self
            .budget
            .acquire_many(want)
            .await
            .map_err(|_| LogClosed)?;
        // The receiver gives the permits back when it takes the chunk.
        permits.forget();
        self.tx.send((bytes, want, stream)).map_err(|_| LogClosed)
    }

    /// Pieces from [`LineBuffers`], each with its stream.
    pub async fn send_pieces(&self, pieces: Vec<(OutputStream, Vec<u8>)>) -> Result<(), LogClosed> {
        for (stream, bytes) in pieces {
            self.send_output_from(stream, bytes).await?;
        }
        Ok(())
    }
}

impl LogReceiver {
    /// The next chunk, or None when every sink is gone.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        self.recv_from().await.map(|(bytes, _)| bytes)
    }

    /// The next chunk and its stream, or None when every sink is gone.
    pub async fn recv_from(&mut self) -> Option<(Vec<u8>, OutputStream)> {
        let (bytes, permits, stream) = self.rx.recv().await?;
        self.budget.add_permits(permits as usize);
        Some((bytes, stream))
    }

    /// Whether no chunk is queued now.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// A chunk already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Vec<u8>> {
        let (bytes, permits, _) = self.rx.try_recv().ok()?;
        self.budget.add_permits(permits as usize);
        Some(bytes)
    }
}

impl Drop for LogReceiver {
    fn drop(&mut self) {
        // Wakes senders waiting for budget: nobody will read any more.
        self.budget.close();
    }
}

/// Line buffers of an executor whose job has two output streams (stdout and
/// stderr arrive as separate, arbitrarily cut chunks). Each stream's bytes
/// are held until a newline, and only whole lines go to the log, so lines of
/// the two streams interleave but never splice (a secret cut by a line of
/// the other stream could not be masked). A line longer than
/// [`LineBuffers::FRAGMENT`] is passed on in pieces; while it is unfinished,
/// the other stream's lines wait (up to [`LineBuffers::HELD_LIMIT`] bytes,
/// after which the long line is ended with a newline so the log stays
/// bounded).
#[derive(Debug, Default)]
pub struct LineBuffers {
    partial: [Vec<u8>; 2],
    /// The stream whose long line was partly passed on, if any.
    open: Option<usize>,
    /// Whole lines of the other stream, waiting for the open line to end.
    held: Vec<u8>,
}

impl LineBuffers {
    /// Longest piece of one line held before it is passed on.
    pub const FRAGMENT: usize = 64 * 1024;
    /// Most bytes of the other stream held while a long line is open.
    pub const HELD_LIMIT: usize = 1 << 20;

    pub fn new() -> LineBuffers {
        LineBuffers::default()
    }

    /// Feeds bytes of `stream` (0: stdout, 1: stderr, anything else is
    /// treated as stdout); returns what may be written to the log now.
    pub fn push(&mut self, stream: usize, bytes: &[u8]) -> Vec<u8> {
        flatten(self.push_pieces(stream, bytes))
    }

    /// Everything still held (the end of the output).
    pub fn finish(&mut self) -> Vec<u8> {
        flatten(self.finish_pieces())
    }

    /// [`LineBuffers::push`], each piece with its stream.
    pub fn push_pieces(&mut self, stream: usize, bytes: &[u8]) -> Vec<(OutputStream, Vec<u8>)> {
        let s = stream.min(1);
        let mut out = Pieces::default();
        let mut rest = bytes;
        while !rest.is_empty() {
            match memchr_newline(rest) {
                Some(pos) => {
                    let (line, tail) = rest.split_at(pos + 1);
                    rest = tail;
                    self.partial[s].extend_from_slice(line);
                    let whole = std::mem::take(&mut self.partial[s]);
                    self.emit_line(s, whole, true, &mut out);
                }
                None => {
                    self.partial[s].extend_from_slice(rest);
                    rest = &[];
                    if self.partial[s].len() >= Self::FRAGMENT {
                        let piece = std::mem::take(&mut self.partial[s]);
                        self.emit_line(s, piece, false, &mut out);
                    }
                }
            }
        }
        out.0
    }

    /// [`LineBuffers::finish`], each piece with its stream.
    pub fn finish_pieces(&mut self) -> Vec<(OutputStream, Vec<u8>)> {
        let mut out = Pieces::default();
        let first = self.open.unwrap_or(0);
        for s in [first, 1 - first] {
            if !self.partial[s].is_empty() {
                let mut line = std::mem::take(&mut self.partial[s]);
                line.push(b'\n');
                self.emit_line(s, line, true, &mut out);
            } else if self.open == Some(s) {
                self.emit_line(s, b"\n".to_vec(), true, &mut out);
            }
        }
        if let Some(open) = self.open {
            out.add(1 - open, std::mem::take(&mut self.held));
        }
        out.0
    }

    /// Passes on a line (`complete`) or a piece of a long one.
    fn emit_line(&mut self, s: usize, bytes: Vec<u8>, complete: bool, out: &mut Pieces) {
        match self.open {
            Some(open) if open != s => {
                // Another stream's long line is unfinished: wait for it.
                self.held.extend_from_slice(&bytes);
                if !complete {
                    // Cannot hold a piece of a second long line: end the
                    // first one here; the second one is open now.
                    self.close_open(out);
                    self.open = Some(s);
                } else if self.held.len() > Self::HELD_LIMIT {
                    self.close_open(out);
                }
            }
            _ => {
                out.add(s, bytes);
                if complete {
                    self.open = None;
                    // Held lines are the other stream's.
                    out.add(1 - s, std::mem::take(&mut self.held));
                } else {
                    self.open = Some(s);
                }
            }
        }
    }

    /// Ends the open long line with a newline and releases the held lines
    /// (the other stream's).
    fn close_open(&mut self, out: &mut Pieces) {
        if let Some(open) = self.open.take() {
            // Anything still buffered of the open line goes first.
            let mut rest = std::mem::take(&mut self.partial[open]);
            rest.push(b'\n');
            out.add(open, rest);
            out.add(1 - open, std::mem::take(&mut self.held));
        }
    }
}

/// Output pieces in order; neighbours of one stream are joined.
#[derive(Default)]
struct Pieces(Vec<(OutputStream, Vec<u8>)>);

impl Pieces {
    fn add(&mut self, stream: usize, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let stream = OutputStream::from_index(stream);
        match self.0.last_mut() {
            Some((last, joined)) if *last == stream => joined.extend_from_slice(&bytes),
            _ => self.0.push((stream, bytes)),
        }
    }
}

fn flatten(pieces: Vec<(OutputStream, Vec<u8>)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, bytes) in pieces {
        out.extend_from_slice(&bytes);
    }
    out
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

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
    /// The project's state directory on the host (`GANTRY_STATE_DIR`:
    /// state that outlives a job, such as a deploy's history). A container
    /// executor mounts it at [`STATE_DIR_IN_CONTAINER`].
    pub state_dir: Option<PathBuf>,
    /// Which repository the run belongs to: [`repository_key`] of its
    /// absolute path. Executors label what they create with it, so that two
    /// repositories (even with the same folder name) never touch each
    /// other's objects.
    pub repository_key: String,
}

/// Where a container executor mounts the project's state directory; jobs
/// find it in `GANTRY_STATE_DIR`.
pub const STATE_DIR_IN_CONTAINER: &str = "/gantry-state";

/// [`repository_key`] of the repository a job's build directory belongs to:
/// the parent of the `.gantry` state directory above it (the directory
/// above the build directory when there is none, e.g. in a server's store).
pub fn repository_key_of_build_dir(build_dir: &Path) -> String {
    let repo = build_dir
        .ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == ".gantry"))
        .and_then(Path::parent)
        .or_else(|| build_dir.parent())
        .unwrap_or(build_dir);
    repository_key(repo)
}

/// A short stable id of a repository: the first 16 hex digits of the SHA-1
/// of its canonical absolute path (the path as given when it cannot be
/// resolved).
pub fn repository_key(repo_dir: &Path) -> String {
    use sha1::{Digest, Sha1};
    let path = std::fs::canonicalize(repo_dir).unwrap_or_else(|_| {
        std::path::absolute(repo_dir).unwrap_or_else(|_| repo_dir.to_path_buf())
    });
    let digest = Sha1::digest(path.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..8])
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

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(parts: &[(usize, &[u8])]) -> Vec<u8> {
        let mut buffers = LineBuffers::new();
        let mut out = Vec::new();
        for (stream, bytes) in parts {
            out.extend(buffers.push(*stream, bytes));
        }
        out.extend(buffers.finish());
        out
    }

    #[test]
    fn lines_of_two_streams_interleave_whole() {
        let out = feed(&[(0, b"tok s3cr"), (1, b"err 1\n"), (0, b"3t\n"), (1, b"err")]);
        assert_eq!(out, b"err 1\ntok s3cr3t\nerr\n");
    }

    #[test]
    fn a_long_line_goes_on_in_pieces_and_holds_the_other_stream() {
        let long = vec![b'x'; LineBuffers::FRAGMENT + 10];
        let mut buffers = LineBuffers::new();
        let first = buffers.push(0, &long);
        assert_eq!(first.len(), long.len(), "passed on before its newline");
        assert!(
            buffers.push(1, b"err\n").is_empty(),
            "held until the line ends"
        );
        let rest = buffers.push(0, b"yy\n");
        assert_eq!(rest, b"yy\nerr\n");
    }

    #[test]
    fn held_lines_past_the_limit_end_the_long_line() {
        let long = vec![b'x'; LineBuffers::FRAGMENT];
        let mut buffers = LineBuffers::new();
        buffers.push(0, &long);
        let line = vec![b'e'; 1000];
        let mut line = line;
        line.push(b'\n');
        let mut out = Vec::new();
        for _ in 0..(LineBuffers::HELD_LIMIT / line.len() + 2) {
            out.extend(buffers.push(1, &line));
        }
        assert!(out.starts_with(b"\n"), "the long line is ended first");
        assert_eq!(out.len() % line.len(), 1);
    }
}
