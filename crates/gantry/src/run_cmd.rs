//! `gantry run`, `gantry logs`, `gantry shell`: run the planned pipeline on
//! this machine, show a job's log from the last run, open a shell in a
//! job's environment.

use crate::project::{self, EXIT_FAILURE, EXIT_USAGE, PlanArgs};
use gantry_config::model::{PipelineStatus, Variable};
use gantry_engine::executor::Executor;
use gantry_engine::report::{OutputMode, Reporter};
use gantry_engine::run::{DockerConnect, EngineError, ExecutorKind, RunOptions, run_blocking};
use gantry_engine::state::{JobEnvRecord, JobRecord, RunManifest, StateDir};
use gantry_engine::vars::{parse_variables_file, valid_name};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The variables file read when present (git-ignored with `.gantry/`).
pub const DEFAULT_VARIABLES_FILE: &str = ".gantry/variables.env";

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ExecutorArg {
    Shell,
    Docker,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Run only these jobs (a parallel job's name selects all its
    /// instances; a manual job named here runs).
    #[arg(value_name = "JOB")]
    pub jobs: Vec<String>,
    /// The configuration file (default: `.gitlab-ci.yml` at the repository root).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Plan for this branch or tag instead of the checked-out one.
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// Pipeline source: push, web, schedule, merge_request_event, api, ...
    #[arg(long, default_value = "push")]
    pub source: String,
    /// Set a variable (repeatable); wins over every other definition.
    #[arg(short = 'v', long = "variable", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub vars: Vec<(String, String)>,
    /// A file of variables you do not commit: `KEY=VALUE` lines (prefix a
    /// line with `masked` and/or `file`), or a JSON object. Default:
    /// `.gantry/variables.env` when it exists.
    #[arg(long, value_name = "FILE")]
    pub variables_file: Option<PathBuf>,
    /// With JOB...: also run their needs, transitively.
    #[arg(long)]
    pub needs: bool,
    /// Run one stage only.
    #[arg(long, value_name = "STAGE")]
    pub stage: Option<String>,
    /// Run this manual job (repeatable); other manual jobs are skipped.
    #[arg(long, value_name = "JOB")]
    pub manual: Vec<String>,
    /// Start delayed jobs at once instead of waiting for `start_in`.
    #[arg(long)]
    pub no_delay: bool,
    /// Jobs to run at once (default: the number of cores).
    #[arg(short = 'j', long = "concurrency", value_name = "N")]
    pub concurrency: Option<usize>,
    /// Run every job with this executor (default: docker for jobs with
    /// `image:`, shell for the others).
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorArg>,
    /// Print events as JSON, one object per line.
    #[arg(long)]
    pub json: bool,
    // Docker executor options (EXEC): built into DockerOptions by docker_options().
    /// Keep every docker job's container for `gantry shell` (default: only a failed job's).
    #[arg(long)]
    pub keep: bool,
    /// Run job and service containers privileged (e.g. a `docker:dind` service).
    #[arg(long)]
    pub privileged: bool,
    /// Mount into job and service containers (repeatable), as `docker run -v`.
    #[arg(long = "volume", value_name = "HOST_PATH:CONTAINER_PATH[:ro]")]
    pub volumes: Vec<String>,
    /// Also join this existing network (repeatable).
    #[arg(long = "network", value_name = "NETWORK")]
    pub networks: Vec<String>,
    /// Pull policy for images whose job sets none (default: if-not-present).
    #[arg(long, value_enum, value_name = "POLICY")]
    pub pull_policy: Option<PullPolicyArg>,
    /// Image of jobs without `image:` that run on the docker executor (--executor docker).
    #[arg(long, value_name = "IMAGE")]
    pub default_image: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum PullPolicyArg {
    Always,
    IfNotPresent,
    Never,
}

/// The docker executor's options from the command line, checked.
fn docker_options(
    args: &RunArgs,
) -> Result<gantry_engine::docker::DockerOptions, gantry_engine::docker::OptionError> {
    use gantry_engine::docker::{DockerOptions, KeepContainers, PullPolicy};
    let options = DockerOptions {
        keep: if args.keep {
            KeepContainers::Always
        } else {
            KeepContainers::OnFailure
        },
        privileged: args.privileged,
        volumes: args.volumes.clone(),
        networks: args.networks.clone(),
        pull_policy: args.pull_policy.map(|p| match p {
            PullPolicyArg::Always => PullPolicy::Always,
            PullPolicyArg::IfNotPresent => PullPolicy::IfNotPresent,
            PullPolicyArg::Never => PullPolicy::Never,
        }),
        default_image: args.default_image.clone(),
        ..DockerOptions::default()
    };
    options.check()?;
    Ok(options)
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if valid_name(k) => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The job.
    pub job: String,
    /// A run id (default: the last run).
    #[arg(long)]
    pub run: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ShellArgs {
    /// The job.
    pub job: String,
    /// A run id (default: the last run).
    #[arg(long)]
    pub run: Option<String>,
}

pub fn run(args: RunArgs) -> i32 {
    let plan_args = PlanArgs {
        file: args.file.clone(),
        git_ref: args.git_ref.clone(),
        source: args.source.clone(),
        vars: args.vars.clone(),
        keep_merged: false,
    };
    // An invalid configuration is a usage error for `run` (exit 2); the
    // diagnostics are already printed.
    let planned = match project::plan(&plan_args) {
        Ok(p) => p,
        Err(_) => return EXIT_USAGE,
    };
    if planned.pipeline.status == PipelineStatus::Filtered {
        let why = planned
            .pipeline
            .filtered_reason
            .clone()
            .unwrap_or_else(|| "workflow:rules".into());
        eprintln!("no pipeline for this context: {why}");
        return 0;
    }
    if planned.facts.sha.is_empty() {
        eprintln!("error: gantry run needs a commit: jobs run on a clean copy of it");
        return EXIT_USAGE;
    }

    // Variables you do not commit, then -v (highest precedence).
    let mut variables: Vec<Variable> = Vec::new();
    let file = args.variables_file.clone().or_else(|| {
        let default = planned.project_dir.join(DEFAULT_VARIABLES_FILE);
        default.is_file().then_some(default)
    });
    if let Some(path) = file {
        match std::fs::read_to_string(&path) {
            Ok(text) => match parse_variables_file(&text) {
                Ok(vars) => variables.extend(vars),
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    return EXIT_USAGE;
                }
            },
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return EXIT_USAGE;
            }
        }
    }
    variables.extend(args.vars.iter().map(|(k, v)| Variable::new(k, v)));

    let opts = RunOptions {
        repo_dir: planned.project_dir.clone(),
        sha: planned.facts.sha.clone(),
        jobs: args.jobs.clone(),
        with_needs: args.needs,
        stage: args.stage.clone(),
        manual: args.manual.clone(),
        no_delay: args.no_delay,
        concurrency: args.concurrency.unwrap_or(0),
        executor: args.executor.map(|e| match e {
            ExecutorArg::Shell => ExecutorKind::Shell,
            ExecutorArg::Docker => ExecutorKind::Docker,
        }),
        variables,
    };
    let mode = if args.json {
        OutputMode::Json
    } else {
        let color = std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        OutputMode::Human { color }
    };
    let docker_options = match docker_options(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let mut reporter = Reporter::stdout(mode);
    let docker: DockerConnect = Box::new(move || {
        Box::pin(async move {
            let mut executor = gantry_engine::docker::DockerExecutor::connect().await?;
            executor.options = docker_options;
            Ok(Arc::new(executor) as Arc<dyn Executor>)
        })
    });

    match run_blocking(&planned.pipeline, opts, Some(docker), &mut reporter) {
        Ok(report) => report.exit_code(),
        Err(EngineError::Usage(e)) => {
            eprintln!("error: {e}");
            EXIT_USAGE
        }
        Err(EngineError::Setup(e)) => {
            eprintln!("error: {e}");
            EXIT_FAILURE
        }
    }
}

/// The repository root for the state directory: git's top level, else cwd.
fn repo_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    std::process::Command::new("git")
        .args(["rev-parse", "--show-toplevel"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or(cwd)
}

/// The manifest of `run` (or the last run) and the job named `job` in it.
fn find_job(run: Option<&str>, job: &str) -> Result<(StateDir, RunManifest, JobRecord), i32> {
    let state = StateDir::for_repo(&repo_root());
    let Some(run_id) = run.map(str::to_string).or_else(|| state.last()) else {
        eprintln!("error: no run yet in this repository (gantry run first)");
        return Err(EXIT_USAGE);
    };
    let manifest = match state.read_manifest(&run_id) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: run {run_id}: {e}");
            return Err(EXIT_USAGE);
        }
    };
    let found = manifest
        .jobs
        .iter()
        .find(|j| j.name == job)
        .or_else(|| manifest.jobs.iter().find(|j| j.slug == job))
        .cloned();
    match found {
        Some(record) => Ok((state, manifest, record)),
        None => {
            let names: Vec<&str> = manifest.jobs.iter().map(|j| j.name.as_str()).collect();
            eprintln!(
                "error: no job `{job}` in run {run_id} (jobs: {})",
                names.join(", ")
            );
            Err(EXIT_USAGE)
        }
    }
}

pub fn logs(args: LogsArgs) -> i32 {
    let (_, manifest, record) = match find_job(args.run.as_deref(), &args.job) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let Some(path) = record.log.as_ref() else {
        eprintln!(
            "{}: no log in run {} (status: {})",
            record.name, manifest.run_id, record.status
        );
        return EXIT_FAILURE;
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&bytes);
            let _ = out.flush();
            0
        }
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            EXIT_FAILURE
        }
    }
}

pub fn shell(args: ShellArgs) -> i32 {
    let (state, manifest, record) = match find_job(args.run.as_deref(), &args.job) {
        Ok(found) => found,
        Err(code) => return code,
    };
    // A docker job whose container was kept: the executor's command.
    if let Some(cmd) = record.shell_command.as_ref().filter(|c| !c.is_empty()) {
        return spawn_interactive(std::process::Command::new(&cmd[0]).args(&cmd[1..]));
    }
    let Some(dir) = record.build_dir.as_ref().filter(|d| d.is_dir()) else {
        eprintln!(
            "error: {} has no working copy in run {} (status: {}, executor: {})",
            record.name, manifest.run_id, record.status, record.executor
        );
        return EXIT_FAILURE;
    };
    if record.executor != "shell" {
        eprintln!(
            "error: {} ran in a container that was not kept; its files are in {}",
            record.name,
            dir.display()
        );
        return EXIT_FAILURE;
    }
    let env_path = state
        .run_dir(&manifest.run_id)
        .join("jobs")
        .join(format!("{}.json", record.slug));
    let env: JobEnvRecord = match std::fs::read(&env_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(e) => e,
        None => {
            eprintln!("error: the environment of {} was not saved", record.name);
            return EXIT_FAILURE;
        }
    };
    open_shell(&record.name, dir, &env)
}

/// `bash` in the job's working copy with its variables (file-type ones
/// written again for the session, removed after it).
fn open_shell(job: &str, dir: &Path, env: &JobEnvRecord) -> i32 {
    let tmp = PathBuf::from(format!("{}.tmp", dir.display()));
    if let Err(e) = std::fs::create_dir_all(&tmp) {
        eprintln!("error: {}: {e}", tmp.display());
        return EXIT_FAILURE;
    }
    for (name, content) in &env.files {
        let _ = gantry_engine::state::write_private(&tmp.join(name), content.as_bytes());
    }
    let rc = tmp.join("shellrc");
    let prompt = format!(
        "[ -f ~/.bashrc ] && . ~/.bashrc\nPS1='(gantry: {}) \\w\\$ '\n",
        job.replace('\'', "")
    );
    let _ = std::fs::write(&rc, prompt);
    eprintln!(
        "gantry: shell in {} with the variables of {job}; exit to leave",
        dir.display()
    );
    let shell = gantry_engine::shell::find_in_path("bash");
    let mut cmd = match &shell {
        Some(bash) => {
            let mut c = std::process::Command::new(bash);
            c.arg("--rcfile").arg(&rc).arg("-i");
            c
        }
        None => std::process::Command::new("/bin/sh"),
    };
    cmd.current_dir(dir)
        .envs(env.env.iter().map(|(k, v)| (k, v)));
    let code = spawn_interactive(&mut cmd);
    let _ = std::fs::remove_dir_all(&tmp);
    code
}

fn spawn_interactive(cmd: &mut std::process::Command) -> i32 {
    match cmd.status() {
        Ok(status) => status.code().unwrap_or(EXIT_FAILURE),
        Err(e) => {
            eprintln!("error: cannot start the shell: {e}");
            EXIT_FAILURE
        }
    }
}
