//! `gantry run`, `gantry logs`, `gantry shell`: run the planned pipeline on
//! this machine, show a job's log from the last run, open a shell in a
//! job's environment.

use crate::exit::Exit;
use crate::project::{self, EXIT_FAILURE, EXIT_USAGE, PlanArgs};
use gantry_config::model::{PipelineStatus, Variable};
use gantry_engine::executor::Executor;
use gantry_engine::report::{OutputMode, Reporter};
use gantry_engine::run::{
    ChildPlanners, DockerConnect, ExecutorKind, RunOptions, RunStatus, run_blocking,
};
use gantry_engine::sources;
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
    #[arg(short = 'j', long = "concurrency", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// Run every job with this executor (default: docker for jobs with
    /// `image:`, shell for the others).
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorArg>,
    /// Print events as JSON, one object per line.
    #[arg(long)]
    pub json: bool,
    /// Run the working tree as it is (configuration and files, including
    /// uncommitted changes) instead of the last commit.
    #[arg(long)]
    pub working_tree: bool,
    /// Colours: auto (a terminal, unless NO_COLOR is set; FORCE_COLOR
    /// forces them), always, never.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    pub color: ColorArg,
    /// Prefix each log line with the time it was shown.
    #[arg(long)]
    pub timestamps: bool,
    /// After the run, extract the artifacts of the jobs that made some into
    /// the working tree (as gitlab-ci-local does).
    #[arg(long)]
    pub artifacts_to_worktree: bool,
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

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

/// Whether to colour: `--color`, then FORCE_COLOR, then NO_COLOR, then
/// whether stdout is a terminal.
fn use_color(arg: ColorArg) -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    match arg {
        ColorArg::Always => true,
        ColorArg::Never => false,
        ColorArg::Auto => {
            if std::env::var_os("FORCE_COLOR").is_some_and(|v| v != "0" && v != "false") {
                true
            } else if set("NO_COLOR") {
                false
            } else {
                std::io::stdout().is_terminal()
            }
        }
    }
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

/// What `gantry run` runs: a commit (the default) or the working tree.
struct Target {
    /// The commit (empty with `--working-tree` in a repository without one).
    sha: String,
    /// The working tree has changes the commit does not have.
    dirty: bool,
}

/// Finds what to run, or says what is wrong and what to do.
fn target(args: &RunArgs) -> Result<Target, String> {
    let located = gantry_source::locate(args.file.as_deref()).map_err(|e| e.to_string())?;
    let repo = &located.project_dir;
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    if let (Some(file), Some(here)) = (&args.file, gantry_source::git::toplevel(&cwd)) {
        let here = here.canonicalize().unwrap_or(here);
        if &here != repo {
            return Err(format!(
                "{} is outside this repository ({}): gantry run runs the repository that holds the configuration; copy the file into {}, or run from {}",
                file.display(),
                here.display(),
                here.display(),
                repo.display()
            ));
        }
    }
    let is_repo = gantry_source::git::toplevel(repo).is_some();
    if args.working_tree {
        return Ok(Target {
            sha: sources::head_sha(repo).unwrap_or_default(),
            dirty: false,
        });
    }
    if !is_repo {
        return Err(format!(
            "{} is not a git repository: gantry run runs a commit (git init and commit, or use --working-tree to run the files as they are)",
            repo.display()
        ));
    }
    if let Some(git_ref) = &args.git_ref {
        // `--ref`: that ref's commit, whatever the working tree holds.
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("{git_ref}^{{commit}}"))
            .stderr(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        let sha = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || sha.is_empty() {
            return Err(format!(
                "`{git_ref}` is not a branch, tag or commit of {} (git branch -a lists them)",
                repo.display()
            ));
        }
        return Ok(Target { sha, dirty: false });
    }
    let Some(sha) = sources::head_sha(repo) else {
        return Err(format!(
            "{} has no commit yet: gantry run runs a commit (commit your files, or use --working-tree to run them as they are)",
            repo.display()
        ));
    };
    let dirty = sources::working_tree_dirty(repo);
    Ok(Target { sha, dirty })
}

pub fn run(args: RunArgs) -> i32 {
    let target = match target(&args) {
        Ok(t) => t,
        Err(message) => {
            eprintln!("error: {message}");
            return Exit::Usage.code();
        }
    };
    if target.dirty {
        eprintln!(
            "note: uncommitted changes are not included: running commit {} (its configuration and files); --working-tree runs the working tree as it is",
            target.sha.get(..8).unwrap_or(&target.sha)
        );
    }
    let plan_args = PlanArgs {
        file: args.file.clone(),
        git_ref: args.git_ref.clone(),
        source: args.source.clone(),
        vars: args.vars.clone(),
        keep_merged: false,
        at_commit: (!args.working_tree).then(|| target.sha.clone()),
    };
    // The diagnostics are already printed; the code is the same as lint's.
    let planned = match project::plan(&plan_args) {
        Ok(p) => p,
        Err(code) => return code,
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

    // Child pipelines read the same files as the parent (the commit, or
    // the working tree) and start from its context.
    let child_files: Box<dyn gantry_config::load::FileSource + Send + Sync> = if args.working_tree {
        Box::new(
            gantry_source::WorkingTree::new(planned.project_dir.clone())
                .with_gitlab(gantry_source::GitlabInstance::from_env(None)),
        )
    } else {
        Box::new(
            gantry_source::CommitTree::new(planned.project_dir.clone(), target.sha.clone())
                .with_gitlab(gantry_source::GitlabInstance::from_env(None)),
        )
    };
    let children = gantry_engine::child_planner::FileChildPlanner {
        files: child_files,
        context: planned.context.clone(),
    };
    let opts = RunOptions {
        children: ChildPlanners(Some(Arc::new(children))),
        repo_dir: planned.project_dir.clone(),
        sha: if target.sha.is_empty() {
            planned.facts.sha.clone()
        } else {
            target.sha.clone()
        },
        working_tree: args.working_tree,
        jobs: args.jobs.clone(),
        with_needs: args.needs,
        stage: args.stage.clone(),
        manual: args.manual.clone(),
        no_delay: args.no_delay,
        concurrency: args.concurrency.map_or(0, |n| n as usize),
        executor: args.executor.map(|e| match e {
            ExecutorArg::Shell => ExecutorKind::Shell,
            ExecutorArg::Docker => ExecutorKind::Docker,
        }),
        variables,
    };
    let mode = if args.json {
        OutputMode::Json
    } else {
        OutputMode::Human {
            color: use_color(args.color),
        }
    };
    let mut reporter = Reporter::stdout(mode).with_timestamps(args.timestamps);
    let repo_dir = planned.project_dir.clone();
    let docker_options = match docker_options(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let docker: DockerConnect = Box::new(move || {
        Box::pin(async move {
            let mut executor = gantry_engine::docker::DockerExecutor::connect().await?;
            executor.options = docker_options;
            Ok(Arc::new(executor) as Arc<dyn Executor>)
        })
    });

    match run_blocking(&planned.pipeline, opts, Some(docker), &mut reporter) {
        Ok(report) if args.artifacts_to_worktree && !copy_artifacts(&report, &repo_dir) => {
            Exit::Usage.code()
        }
        Ok(report) => match report.status {
            RunStatus::Success | RunStatus::Blocked => Exit::Success.code(),
            RunStatus::Canceled => Exit::Interrupted.code(),
            RunStatus::Failed | RunStatus::Running => Exit::Failed.code(),
        },
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Usage.code()
        }
    }
}

/// `--artifacts-to-worktree`: every job's artifacts, in pipeline order,
/// extracted into the working tree. False (after a message) on an error.
fn copy_artifacts(report: &gantry_engine::run::RunReport, repo_dir: &Path) -> bool {
    for job in &report.jobs {
        let Some(zip) = &job.artifact else { continue };
        match gantry_engine::archive::extract_zip(zip, repo_dir) {
            Ok(n) => eprintln!(
                "gantry: artifacts of {} into the working tree ({n} entries)",
                job.name
            ),
            Err(e) => {
                eprintln!(
                    "error: artifacts of {} could not be extracted into {}: {e}",
                    job.name,
                    repo_dir.display()
                );
                return false;
            }
        }
    }
    true
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
            let dir = state.run_dir(&run_id);
            if dir.is_dir() {
                eprintln!(
                    "error: run {run_id} has no record ({e}): it stopped before it started its jobs; its files are in {}",
                    dir.display()
                );
            } else {
                let mut ids: Vec<String> = std::fs::read_dir(state.runs_dir())
                    .map(|d| {
                        d.flatten()
                            .filter_map(|e| e.file_name().into_string().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                ids.sort();
                let recent: Vec<&str> = ids.iter().rev().take(5).map(String::as_str).collect();
                if recent.is_empty() {
                    eprintln!(
                        "error: no run `{run_id}` in this repository (no runs yet: gantry run first)"
                    );
                } else {
                    eprintln!(
                        "error: no run `{run_id}` in this repository (recent runs: {}; without --run: the last run)",
                        recent.join(", ")
                    );
                }
            }
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
            match gantry_engine::error::closest(job, names.iter().copied()) {
                Some(near) => {
                    eprintln!("error: no job `{job}` in run {run_id}; did you mean `{near}`?")
                }
                None => eprintln!(
                    "error: no job `{job}` in run {run_id} (jobs: {})",
                    names.join(", ")
                ),
            }
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
    // Which run this is goes to stderr: stdout is the log alone.
    eprintln!(
        "gantry: log of {} in run {} (job {}, pipeline {})",
        record.name, manifest.run_id, record.status, manifest.status
    );
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
    let (_, manifest, record) = match find_job(args.run.as_deref(), &args.job) {
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
    let env_path = gantry_engine::job::env_record_path(dir);
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
