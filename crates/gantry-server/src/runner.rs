//! `gantry runner`: registers with a server, long-polls for jobs, runs each
//! through the engine ([`crate::engine_bridge::run_job`]), streams the log in
//! chunks with offsets, heartbeats, uploads artifacts and reports the end.
//! The server's built-in runner is this same code over loopback HTTP.

use crate::engine_bridge::{self, Workspace};
use crate::lock_file::{Held, HeldLock, try_hold};
use crate::protocol::{
    JobPayload, JobRequest, JobUpdate, JobUpdateReply, RegisterRequest, Registered,
};
use crate::shared_cache::ServerCaches;
use gantry_engine::executor::Executor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OnceCell};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorChoice {
    Shell,
    Docker,
    /// Docker for jobs with `image:`, the shell for the others.
    Auto,
}

impl ExecutorChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorChoice::Shell => "shell",
            ExecutorChoice::Docker => "docker",
            ExecutorChoice::Auto => "auto",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RunnerConfig {
    pub url: String,
    pub registration_token: String,
    pub description: String,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub executor: ExecutorChoice,
    pub concurrency: u32,
    pub work_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot reach the server at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error(
        "the server refused the registration token (HTTP {0}); print the right one with `gantry serve --print-runner-token`"
    )]
    Refused(u16),
    #[error("the server answered HTTP {status}: {body}")]
    Server { status: u16, body: String },
    #[error(
        "the work directory {dir} is in use by another runner; give each runner its own (--work-dir DIR)"
    )]
    WorkDirBusy { dir: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Takes the work directory for this process (held until it exits) and
/// removes what a runner killed mid-job left there: build directories, the
/// jobs' environment records (job tokens, secrets), cache and dependency
/// archives, half-cloned mirrors. Mirrors stay.
pub fn claim_work_dir(work: &std::path::Path) -> Result<HeldLock, RunnerError> {
    std::fs::create_dir_all(work)?;
    let lock = match try_hold(&work.join(".runner.lock"))? {
        Held::Taken(lock) => lock,
        Held::Busy(_) => {
            return Err(RunnerError::WorkDirBusy {
                dir: work.display().to_string(),
            });
        }
    };
    if let Ok(projects) = std::fs::read_dir(work.join("projects")) {
        for project in projects.flatten() {
            // `cache`: runners before shared caches kept them here.
            for stale in ["builds", "caches", "dependencies", "mirror.tmp", "cache"] {
                let _ = std::fs::remove_dir_all(project.path().join(stale));
            }
        }
    }
    Ok(lock)
}

/// How often a running job tells the server it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often buffered log lines are sent.
const LOG_FLUSH: Duration = Duration::from_millis(200);

struct Ctx {
    http: reqwest::Client,
    url: String,
    token: String,
    executor: ExecutorChoice,
    workspace: Workspace,
    shell: Arc<dyn Executor>,
    docker: OnceCell<Result<Arc<dyn Executor>, String>>,
    /// One snapshot extraction and one fetch per project at a time.
    snapshot_lock: Mutex<()>,
    fetch_locks: std::sync::Mutex<std::collections::HashMap<i64, Arc<Mutex<()>>>>,
}

/// Registers and runs jobs until the process ends.
pub async fn run(cfg: RunnerConfig) -> Result<(), RunnerError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|source| RunnerError::Unreachable {
            url: cfg.url.clone(),
            source,
        })?;
    let url = cfg.url.trim_end_matches('/').to_string();
    // Absolute: jobs run their scripts from their build directories.
    let work_dir = std::path::absolute(&cfg.work_dir)?;
    let _work_dir_lock = claim_work_dir(&work_dir)?;
    let registered = register(&http, &url, &cfg).await?;
    eprintln!(
        "gantry runner: registered as runner {} ({}, tags [{}], executor {}, concurrency {}) with {url}",
        registered.id,
        cfg.description,
        cfg.tags.join(", "),
        cfg.executor.as_str(),
        cfg.concurrency
    );
    std::fs::create_dir_all(&work_dir)?;
    let ctx = Arc::new(Ctx {
        http,
        url,
        token: registered.token,
        executor: cfg.executor,
        workspace: Workspace { root: work_dir },
        shell: Arc::new(gantry_engine::shell::ShellExecutor::new()),
        docker: OnceCell::new(),
        snapshot_lock: Mutex::new(()),
        fetch_locks: Default::default(),
    });
    let mut workers = Vec::new();
    for _ in 0..cfg.concurrency.max(1) {
        let ctx = ctx.clone();
        workers.push(tokio::spawn(async move { worker(ctx).await }));
    }
    for w in workers {
        let _ = w.await;
    }
    Ok(())
}

async fn register(
    http: &reqwest::Client,
    url: &str,
    cfg: &RunnerConfig,
) -> Result<Registered, RunnerError> {
    let body = RegisterRequest {
        token: cfg.registration_token.clone(),
        description: cfg.description.clone(),
        tag_list: cfg.tags.clone(),
        run_untagged: cfg.run_untagged,
        executor: cfg.executor.as_str().into(),
        concurrency: cfg.concurrency,
    };
    // The server may still be starting: try for a while.
    let mut last = None;
    for _ in 0..50 {
        match http
            .post(format!("{url}/api/v4/runners"))
            .json(&body)
            .send()
            .await
        {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if status == 201 {
                    return resp
                        .json()
                        .await
                        .map_err(|source| RunnerError::Unreachable {
                            url: url.into(),
                            source,
                        });
                }
                if status == 403 || status == 401 {
                    return Err(RunnerError::Refused(status));
                }
                return Err(RunnerError::Server {
                    status,
                    body: resp.text().await.unwrap_or_default(),
                });
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Err(RunnerError::Unreachable {
        url: url.into(),
        source: last.expect("at least one attempt"),
    })
}

async fn worker(ctx: Arc<Ctx>) {
    loop {
        let resp = ctx
            .http
            .post(format!("{}/api/v4/jobs/request", ctx.url))
            .json(&JobRequest {
                token: ctx.token.clone(),
            })
            .timeout(Duration::from_secs(60))
            .send()
            .await;
        match resp {
            Ok(r) if r.status().as_u16() == 201 => match r.json::<JobPayload>().await {
                Ok(payload) => run_one(&ctx, payload).await,
                Err(e) => {
                    eprintln!("gantry runner: unreadable job from the server: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            Ok(r) if r.status().as_u16() == 204 => {}
            Ok(r) => {
                let status = r.status().as_u16();
                eprintln!(
                    "gantry runner: job request answered HTTP {status}: {}",
                    r.text().await.unwrap_or_default().trim()
                );
                if status == 403 {
                    eprintln!("gantry runner: this runner was removed from the server; stopping");
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                eprintln!("gantry runner: cannot reach {}: {e}; retrying", ctx.url);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Sends log bytes in order, each chunk with its offset; a chunk is resent
/// until the server has it.
struct LogSender {
    ctx: Arc<Ctx>,
    job_id: i64,
    job_token: String,
    offset: u64,
}

impl LogSender {
    async fn send(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        for attempt in 0..30 {
            let resp = self
                .ctx
                .http
                .patch(format!(
                    "{}/api/v4/jobs/{}/trace",
                    self.ctx.url, self.job_id
                ))
                .header("JOB-TOKEN", &self.job_token)
                .header(
                    "Content-Range",
                    format!("{}-{}", self.offset, self.offset + data.len() as u64 - 1),
                )
                .body(data.to_vec())
                .send()
                .await;
            match resp {
                Ok(r) if r.status().as_u16() == 202 => {
                    self.offset += data.len() as u64;
                    return;
                }
                // The job ended on the server (canceled, lost): stop sending.
                Ok(r) if matches!(r.status().as_u16(), 401 | 403) => return,
                Ok(r) if r.status().as_u16() == 416 => {
                    // The server has less than we thought (it lost a chunk
                    // it had acknowledged): nothing we still hold fills it.
                    eprintln!(
                        "gantry runner: job {}: the server refused log offset {}",
                        self.job_id, self.offset
                    );
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(200 * (attempt + 1).min(10))).await,
            }
        }
    }
}

async fn update(ctx: &Ctx, job_id: i64, token: &str, body: &JobUpdate) -> Option<JobUpdateReply> {
    for attempt in 0..30u64 {
        let resp = ctx
            .http
            .put(format!("{}/api/v4/jobs/{job_id}", ctx.url))
            .header("JOB-TOKEN", token)
            .json(body)
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => return r.json().await.ok(),
            Ok(r) if matches!(r.status().as_u16(), 401 | 403) => return None,
            _ if body.state == "running" => return None,
            _ => tokio::time::sleep(Duration::from_millis(200 * (attempt + 1).min(10))).await,
        }
    }
    None
}

async fn executor_for(
    ctx: &Ctx,
    payload: &JobPayload,
) -> Result<(Arc<dyn Executor>, bool), String> {
    let want_docker = match ctx.executor {
        ExecutorChoice::Shell => false,
        ExecutorChoice::Docker => true,
        ExecutorChoice::Auto => payload.spec.image.is_some(),
    };
    if !want_docker {
        return Ok((ctx.shell.clone(), false));
    }
    let docker = ctx
        .docker
        .get_or_init(|| async {
            gantry_engine::docker::DockerExecutor::connect()
                .await
                .map(|d| Arc::new(d) as Arc<dyn Executor>)
                .map_err(|e| e.to_string())
        })
        .await;
    docker.clone().map(|d| (d, true))
}

/// Why the project's commit could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot run git: {0}")]
    Spawn(std::io::Error),
    #[error("cannot prepare the mirror {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the server refused this job's token for {url}: a job token opens the repository only while its job runs (was the job canceled or lost?); git said: {stderr}"
    )]
    Refused { url: String, stderr: String },
    #[error("git {action} {url}: {stderr}")]
    Git {
        action: &'static str,
        url: String,
        stderr: String,
    },
    #[error("commit {sha} is not in {url}")]
    NoCommit { sha: String, url: String },
}

/// A git command that reaches `url`. Over HTTP the job token goes as an
/// `Authorization` header through git's environment configuration: never
/// in a command line, the mirror's configuration, or a URL git prints.
fn git_command(url: &str, job_token: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("git");
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .stdin(std::process::Stdio::null());
    if url.starts_with("http://") || url.starts_with("https://") {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{job_token}", crate::git_http::JOB_TOKEN_USER));
        cmd.env("GIT_CONFIG_COUNT", "2")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Basic {basic}"),
            )
            // No credential helper is asked for, or told, anything.
            .env("GIT_CONFIG_KEY_1", "credential.helper")
            .env("GIT_CONFIG_VALUE_1", "");
    }
    cmd
}

/// git's error, with a refused job token said plainly.
fn git_failure(action: &'static str, url: &str, out: &std::process::Output) -> FetchError {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let refused = [
        "error: 401",
        "error: 403",
        "could not read Username",
        "Authentication failed",
    ]
    .iter()
    .any(|m| stderr.contains(m));
    if refused {
        FetchError::Refused {
            url: url.to_string(),
            stderr,
        }
    } else {
        FetchError::Git {
            action,
            url: url.to_string(),
            stderr,
        }
    }
}

/// Brings `dir` (a mirror of `url`) up to the commit `sha`: cloned on
/// first use, fetched when the commit is missing.
pub fn fetch_mirror(
    dir: &std::path::Path,
    url: &str,
    job_token: &str,
    sha: &str,
) -> Result<(), FetchError> {
    let has = |dir: &std::path::Path| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["cat-file", "-e", &format!("{sha}^{{commit}}")])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if dir.join("HEAD").exists() {
        if has(dir) {
            return Ok(());
        }
        // The server's URL may have changed since the clone.
        let out = git_command(url, job_token)
            .arg("-C")
            .arg(dir)
            .args(["remote", "set-url", "origin", url])
            .output()
            .map_err(FetchError::Spawn)?;
        if !out.status.success() {
            return Err(git_failure("remote set-url", url, &out));
        }
        let out = git_command(url, job_token)
            .arg("-C")
            .arg(dir)
            .args(["fetch", "--quiet", "--prune", "origin"])
            .output()
            .map_err(FetchError::Spawn)?;
        if !out.status.success() {
            return Err(git_failure("fetch", url, &out));
        }
    } else {
        let io = |source| FetchError::Io {
            path: dir.display().to_string(),
            source,
        };
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let tmp = dir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        let out = git_command(url, job_token)
            .args(["clone", "--mirror", "--quiet", url])
            .arg(&tmp)
            .output()
            .map_err(FetchError::Spawn)?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(git_failure("clone", url, &out));
        }
        std::fs::rename(&tmp, dir).map_err(io)?;
    }
    if has(dir) {
        Ok(())
    } else {
        Err(FetchError::NoCommit {
            sha: sha.to_string(),
            url: url.to_string(),
        })
    }
}

/// The repository URL the runner fetches from: a repository the server
/// serves is reached at the address the runner reaches the server by (the
/// server's own idea of its URL may not work from this machine); any other
/// URL or path is used as it is.
pub fn repository_url(payload_url: &str, server_url: &str) -> String {
    const MARK: &str = "/api/v4/projects/";
    let served = (payload_url.starts_with("http://") || payload_url.starts_with("https://"))
        && payload_url.ends_with("/repository.git");
    match payload_url.find(MARK) {
        Some(at) if served => format!("{}{}", server_url.trim_end_matches('/'), &payload_url[at..]),
        _ => payload_url.to_string(),
    }
}

/// The runner's mirror of the project, fetched up to the job's commit.
async fn fetch(ctx: &Ctx, payload: &JobPayload) -> Result<PathBuf, String> {
    let lock = ctx
        .fetch_locks
        .lock()
        .expect("fetch locks")
        .entry(payload.project_id)
        .or_default()
        .clone();
    let _guard = lock.lock().await;
    let dir = ctx
        .workspace
        .project_dir(payload.project_id)
        .join("mirror.git");
    let url = repository_url(&payload.repo_url, &ctx.url);
    let token = payload.token.clone();
    let sha = payload.sha.clone();
    tokio::task::spawn_blocking(move || {
        fetch_mirror(&dir, &url, &token, &sha)
            .map(|()| dir)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn run_one(ctx: &Arc<Ctx>, payload: JobPayload) {
    let job_id = payload.id;
    let token = payload.token.clone();
    let cancel = CancellationToken::new();
    // Heartbeats; the server's answer tells us when the job was canceled.
    let beat = {
        let ctx = ctx.clone();
        let token = token.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let hb = JobUpdate {
                    state: "running".into(),
                    failure_reason: None,
                    exit_code: None,
                    dotenv: Vec::new(),
                    junit_failures: Vec::new(),
                };
                if let Some(reply) = update(&ctx, job_id, &token, &hb).await
                    && reply.status != "running"
                {
                    cancel.cancel();
                    return;
                }
            }
        })
    };
    let mut log = LogSender {
        ctx: ctx.clone(),
        job_id,
        job_token: token.clone(),
        offset: 0,
    };
    let result = execute(ctx, &payload, &mut log, cancel.clone()).await;
    beat.abort();
    let (state, reason, exit_code, dotenv, junit_failures) = match result {
        Ok(r) => {
            if r.state == "canceled" {
                return;
            }
            if let Some(path) = &r.artifact {
                upload_artifact(ctx, job_id, &token, path, &mut log).await;
            }
            (
                r.state,
                r.failure_reason,
                r.exit_code,
                r.dotenv,
                r.junit_failures,
            )
        }
        Err(message) => {
            log.send(format!("ERROR: {message}\n").as_bytes()).await;
            (
                "failed",
                Some("runner_system_failure".to_string()),
                None,
                Vec::new(),
                Vec::new(),
            )
        }
    };
    let body = JobUpdate {
        state: state.into(),
        failure_reason: reason,
        exit_code,
        dotenv,
        junit_failures,
    };
    update(ctx, job_id, &token, &body).await;
}

async fn upload_artifact(
    ctx: &Ctx,
    job_id: i64,
    token: &str,
    path: &std::path::Path,
    log: &mut LogSender,
) {
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) => {
            log.send(format!("WARNING: cannot read the artifacts archive: {e}\n").as_bytes())
                .await;
            return;
        }
    };
    let resp = ctx
        .http
        .post(format!("{}/api/v4/jobs/{job_id}/artifacts", ctx.url))
        .header("JOB-TOKEN", token)
        .body(bytes)
        .send()
        .await;
    match resp {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            log.send(
                format!("WARNING: uploading artifacts failed (HTTP {status}): {text}\n").as_bytes(),
            )
            .await;
        }
        Err(e) => {
            log.send(format!("WARNING: uploading artifacts failed: {e}\n").as_bytes())
                .await
        }
    }
}

async fn download_dependencies(
    ctx: &Ctx,
    payload: &JobPayload,
    dir: &std::path::Path,
) -> Result<Vec<(String, PathBuf)>, String> {
    let mut out = Vec::new();
    for dep in payload.dependencies.iter().filter(|d| d.has_artifacts) {
        let resp = ctx
            .http
            .get(format!("{}/api/v4/jobs/{}/artifacts", ctx.url, dep.job_id))
            .header("JOB-TOKEN", &payload.token)
            .send()
            .await
            .map_err(|e| format!("downloading the artifacts of `{}`: {e}", dep.name))?;
        if !resp.status().is_success() {
            return Err(format!(
                "downloading the artifacts of `{}`: HTTP {}",
                dep.name,
                resp.status().as_u16()
            ));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("downloading the artifacts of `{}`: {e}", dep.name))?;
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let path = dir.join(format!("{}.zip", dep.job_id));
        std::fs::write(&path, &bytes).map_err(|e| e.to_string())?;
        out.push((dep.name.clone(), path));
    }
    Ok(out)
}

async fn execute(
    ctx: &Arc<Ctx>,
    payload: &JobPayload,
    log: &mut LogSender,
    cancel: CancellationToken,
) -> Result<engine_bridge::JobResult, String> {
    let mirror = fetch(ctx, payload).await?;
    let (executor, docker) = executor_for(ctx, payload).await?;
    let deps_dir = ctx
        .workspace
        .project_dir(payload.project_id)
        .join("dependencies")
        .join(payload.id.to_string());
    let dependencies = download_dependencies(ctx, payload, &deps_dir).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let caches_dir = ctx
        .workspace
        .project_dir(payload.project_id)
        .join("caches")
        .join(payload.id.to_string());
    let caches = ServerCaches {
        http: ctx.http.clone(),
        url: ctx.url.clone(),
        job_id: payload.id,
        job_token: payload.token.clone(),
        dir: caches_dir.clone(),
        notes: tx.clone(),
    };
    let run = {
        let ctx = ctx.clone();
        let payload = payload.clone();
        let cancel = cancel.clone();
        async move {
            engine_bridge::run_job(
                &payload,
                &mirror,
                &ctx.workspace,
                executor,
                docker,
                dependencies,
                caches,
                tx,
                cancel,
                &ctx.snapshot_lock,
            )
            .await
        }
    };
    tokio::pin!(run);
    let mut buf: Vec<u8> = Vec::new();
    let mut tick = tokio::time::interval(LOG_FLUSH);
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            line = rx.recv() => {
                if let Some(line) = line {
                    buf.extend_from_slice(line.as_bytes());
                    buf.push(b'\n');
                    if buf.len() >= 64 * 1024 {
                        log.send(&std::mem::take(&mut buf)).await;
                    }
                }
            }
            _ = tick.tick() => {
                if !buf.is_empty() {
                    log.send(&std::mem::take(&mut buf)).await;
                }
            }
        }
    };
    while let Ok(line) = rx.try_recv() {
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
    }
    log.send(&buf).await;
    let _ = std::fs::remove_dir_all(&deps_dir);
    let _ = std::fs::remove_dir_all(&caches_dir);
    result.map_err(|e| format!("the job could not be set up: {e}"))
}

#[cfg(test)]
mod tests {
    use super::repository_url;

    #[test]
    fn a_served_repository_is_reached_through_the_runners_server_address() {
        assert_eq!(
            repository_url(
                "http://gantry.invalid/api/v4/projects/3/repository.git",
                "https://ci.example.com/prefix/"
            ),
            "https://ci.example.com/prefix/api/v4/projects/3/repository.git"
        );
        // Anything else is used as it is.
        for other in [
            "/srv/gantry/repos/3.git",
            "https://git.example.com/group/app.git",
        ] {
            assert_eq!(repository_url(other, "http://127.0.0.1:8080"), other);
        }
    }
}
