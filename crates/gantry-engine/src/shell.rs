//! The shell executor: scripts run on the host, in the job's clean copy,
//! with `bash` (or `sh` when there is no bash).
//!
//! Each script runs in its own process group, with stdout and stderr on
//! pipes of their own (the live view marks stderr); a line buffer per stream
//! passes only whole lines on, in the order they arrive, so a line of one
//! stream never splices into a line of the other. On timeout or cancellation the
//! group gets SIGTERM, then SIGKILL after a grace period; when the script
//! ends, whatever it left running in its group is killed, so no job leaves
//! orphans behind.

use crate::executor::{
    ExecError, Executor, JobEnvironment, LineBuffers, LogSink, PrepareRequest, ScriptOutcome,
    ScriptRequest,
};
use async_trait::async_trait;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// Time a killed script gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_millis(1000);
/// Time to drain output after the script ended (a detached process may
/// still hold the pipe).
const DRAIN_LIMIT: Duration = Duration::from_millis(500);
/// Longest time output is read after the script ended.
const DRAIN_TOTAL: Duration = Duration::from_secs(10);

pub struct ShellExecutor {
    shell: PathBuf,
}

impl ShellExecutor {
    /// Uses `bash` from PATH, else `sh`.
    pub fn new() -> ShellExecutor {
        ShellExecutor {
            shell: find_in_path("bash").unwrap_or_else(|| PathBuf::from("/bin/sh")),
        }
    }

    pub fn shell(&self) -> &Path {
        &self.shell
    }
}

impl Default for ShellExecutor {
    fn default() -> Self {
        Self::new()
    }
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[async_trait]
impl Executor for ShellExecutor {
    fn name(&self) -> &'static str {
        "shell"
    }

    async fn prepare(
        &self,
        request: PrepareRequest,
        _output: LogSink,
        _cancel: CancellationToken,
    ) -> Result<Box<dyn JobEnvironment>, ExecError> {
        let script_dir = PathBuf::from(format!("{}.tmp", request.project_dir.display()));
        std::fs::create_dir_all(&script_dir)?;
        Ok(Box::new(ShellEnvironment {
            dir: request.project_dir,
            script_dir,
            shell: self.shell.clone(),
        }))
    }
}

struct ShellEnvironment {
    dir: PathBuf,
    script_dir: PathBuf,
    shell: PathBuf,
}

#[async_trait]
impl JobEnvironment for ShellEnvironment {
    async fn run_script(
        &mut self,
        request: ScriptRequest,
        output: LogSink,
        cancel: CancellationToken,
    ) -> Result<ScriptOutcome, ExecError> {
        let script_path = self
            .script_dir
            .join(format!("{}.sh", request.stage.as_str()));
        std::fs::write(&script_path, &request.script)?;
        let outcome = run_in_group(
            &self.shell,
            &script_path,
            &self.dir,
            &request.env,
            request.timeout,
            &output,
            &cancel,
        )
        .await;
        let _ = std::fs::remove_file(&script_path);
        outcome
    }

    fn shell_command(&self) -> Option<Vec<String>> {
        None
    }

    async fn cleanup(self: Box<Self>) -> Result<(), ExecError> {
        let _ = std::fs::remove_dir_all(&self.script_dir);
        Ok(())
    }
}

/// A pipe whose ends are closed on exec (the child gets dup2'd copies).
fn cloexec_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two fresh descriptors we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn kill_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        // SAFETY: plain syscall; a negative pid addresses the process group.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// Runs `shell script` in `dir` in a new process group and streams its
/// output into `output`.
async fn run_in_group(
    shell: &Path,
    script: &Path,
    dir: &Path,
    env: &[(String, String)],
    timeout: Option<Duration>,
    output: &LogSink,
    cancel: &CancellationToken,
) -> Result<ScriptOutcome, ExecError> {
    let (out_read, out_write) = cloexec_pipe()?;
    let (err_read, err_write) = cloexec_pipe()?;
    let mut child = {
        let mut cmd = tokio::process::Command::new(shell);
        cmd.arg(script)
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out_write))
            .stderr(Stdio::from(err_write))
            .process_group(0);
        cmd.spawn()
            .map_err(|e| ExecError::Setup(format!("cannot start {}: {e}", shell.display())))?
        // `cmd` drops here, closing our copies of the write end.
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);

    let mut out_reader = tokio::net::unix::pipe::Receiver::from_owned_fd(out_read)?;
    let mut err_reader = tokio::net::unix::pipe::Receiver::from_owned_fd(err_read)?;
    let sink = output.clone();
    // Set when the script ended: from then on a read that waits longer than
    // DRAIN_LIMIT means a detached process holds the pipe (sends that wait
    // for the log never time out: nothing printed is lost).
    let ended = CancellationToken::new();
    let script_ended = ended.clone();
    let pump = tokio::spawn(async move {
        let mut out_buf = vec![0u8; 16 * 1024];
        let mut err_buf = vec![0u8; 16 * 1024];
        let (mut out_open, mut err_open) = (true, true);
        let mut lines = LineBuffers::new();
        // A process that left the script's group may write forever: after
        // the script ended, reading stops at DRAIN_TOTAL whatever comes.
        let ended_long_ago = async {
            script_ended.cancelled().await;
            tokio::time::sleep(DRAIN_TOTAL).await;
        };
        tokio::pin!(ended_long_ago);
        while out_open || err_open {
            // Reads first: what the script printed is never dropped for a
            // deadline that passed while the log was behind.
            let (stream, read) = tokio::select! {
                biased;
                r = out_reader.read(&mut out_buf), if out_open => (0, r),
                r = err_reader.read(&mut err_buf), if err_open => (1, r),
                _ = async {
                    script_ended.cancelled().await;
                    tokio::time::sleep(DRAIN_LIMIT).await;
                } => break,
                _ = &mut ended_long_ago => break,
            };
            let n = match read {
                Ok(0) | Err(_) => {
                    if stream == 0 {
                        out_open = false;
                    } else {
                        err_open = false;
                    }
                    continue;
                }
                Ok(n) => n,
            };
            let buf = if stream == 0 { &out_buf } else { &err_buf };
            let ready = lines.push_pieces(stream, &buf[..n]);
            // Waits while the log is behind: the script then blocks on a
            // full pipe instead of filling memory.
            if sink.send_pieces(ready).await.is_err() {
                return;
            }
        }
        let _ = sink.send_pieces(lines.finish_pieces()).await;
    });

    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending::<()>().await,
        }
    };
    let outcome = tokio::select! {
        status = child.wait() => {
            let status = status?;
            ScriptOutcome::Exited(exit_code(status))
        }
        _ = deadline => {
            terminate(&mut child, pgid).await;
            ScriptOutcome::TimedOut
        }
        _ = cancel.cancelled() => {
            terminate(&mut child, pgid).await;
            ScriptOutcome::Cancelled
        }
    };
    // Whatever the script left running in its group goes too.
    kill_group(pgid, libc::SIGKILL);
    ended.cancel();
    let _ = pump.await;
    Ok(outcome)
}

async fn terminate(child: &mut tokio::process::Child, pgid: i32) {
    kill_group(pgid, libc::SIGTERM);
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        kill_group(pgid, libc::SIGKILL);
        let _ = child.wait().await;
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
