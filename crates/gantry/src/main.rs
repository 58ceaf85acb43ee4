//! `gantry`: GitLab CI pipelines on your machine, deploys to ECS with a
//! rollback you can trust.
//!
//! Exit codes, for every command ([`exit::Exit`]): 0 success; 1 an invalid
//! configuration, a failed pipeline or a failed deploy; 2 a usage or I/O
//! error; 130 interrupted (Ctrl-C, SIGTERM).

mod clean_cmd;
mod deploy_cmd;
mod exit;
mod project;
mod run_cmd;
mod serve_cmd;

use clap::{Parser, Subcommand};
use project::{EXIT_USAGE, LoadSettings, PlanArgs};
use std::process::ExitCode;

// mimalloc halves the time of loading large configurations; its `no_thp`
// feature keeps huge pages out, so `gantry run` stays small in memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gantry",
    version,
    about = "Run GitLab CI pipelines locally; deploy with health checks and rollback.",
    after_help = "Exit codes: 0 success; 1 failed pipeline, deploy or invalid configuration; 2 usage or I/O error; 130 interrupted."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a .gitlab-ci.yml: exit 0 if valid, 1 if invalid (every error listed), 2 on usage or I/O errors.
    Lint(LintArgs),
    /// Show the pipeline GitLab would create for a ref and source.
    Plan(PlanCmdArgs),
    /// Run the pipeline (or some jobs) on this machine.
    Run(run_cmd::RunArgs),
    /// Show the last run's log of a job.
    Logs(run_cmd::LogsArgs),
    /// Open a shell in a job's environment after it ran.
    Shell(run_cmd::ShellArgs),
    /// Remove this repository's containers, networks, kept shells and finished runs' build folders.
    Clean(clean_cmd::CleanArgs),
    /// Deploy to ECS, CloudFormation or the local container host; wait, check health, roll back.
    Deploy(deploy_cmd::DeployArgs),
    /// Roll a target back to its last known-good revision (or a given one).
    Rollback(deploy_cmd::RollbackArgs),
    /// List the deployment history.
    Deployments(deploy_cmd::DeploymentsArgs),
    /// Log the local container engine into a registry (ECR).
    Registry(deploy_cmd::RegistryArgs),
    /// One-off ECS tasks.
    Ecs(deploy_cmd::EcsArgs),
    /// Serve the API, webhooks and a job queue (SQLite or PostgreSQL), with a built-in runner.
    Serve(serve_cmd::ServeArgs),
    /// Run jobs for a `gantry serve` server.
    Runner(serve_cmd::RunnerArgs),
}

#[derive(clap::Args)]
struct LintArgs {
    /// The configuration file (default: `.gitlab-ci.yml` at the repository root).
    file: Option<std::path::PathBuf>,
    #[command(flatten)]
    settings: LoadSettings,
}

#[derive(clap::Args)]
struct PlanCmdArgs {
    #[command(flatten)]
    plan: PlanArgs,
    #[command(flatten)]
    settings: LoadSettings,
    /// Print the plan as one JSON object.
    #[arg(long, conflicts_with = "merged")]
    json: bool,
    /// Print the fully merged configuration (after includes, extends, !reference) as YAML.
    #[arg(long)]
    merged: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let code = match cli.command {
        Command::Lint(args) => lint(args),
        Command::Plan(args) => plan(args),
        Command::Run(args) => run_cmd::run(args),
        Command::Logs(args) => run_cmd::logs(args),
        Command::Shell(args) => run_cmd::shell(args),
        Command::Clean(args) => clean_cmd::clean(args),
        Command::Deploy(args) => deploy_cmd::deploy(args),
        Command::Rollback(args) => deploy_cmd::rollback(args),
        Command::Deployments(args) => deploy_cmd::deployments(args),
        Command::Registry(args) => deploy_cmd::registry(args),
        Command::Ecs(args) => deploy_cmd::ecs(args),
        Command::Serve(args) => serve_cmd::serve(args),
        Command::Runner(args) => serve_cmd::runner(args),
    };
    // Exit without tearing down large configurations piece by piece.
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn lint(args: LintArgs) -> i32 {
    let plan_args = PlanArgs {
        file: args.file,
        source: "push".into(),
        ..PlanArgs::default()
    };
    match project::load_with(&plan_args, &args.settings) {
        Ok(project) => {
            let jobs = project.loaded.config.jobs.len();
            let stages = project.loaded.config.stages.len();
            println!(
                "{}: valid ({jobs} job{}, {stages} stages)",
                project.located.entry,
                if jobs == 1 { "" } else { "s" }
            );
            0
        }
        Err(code) => code,
    }
}

fn write_json<W: std::io::Write, T: serde::Serialize>(
    out: &mut W,
    value: &T,
    pretty: bool,
) -> serde_json::Result<()> {
    if pretty {
        serde_json::to_writer_pretty(out, value)
    } else {
        serde_json::to_writer(out, value)
    }
}

/// `child_pipelines` of `plan --json`: each trigger job's child plan, or
/// why there is none yet.
fn children_json(children: &[(String, project::ChildOutcome)]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (name, child) in children {
        let value = match child {
            project::ChildOutcome::Planned(c) => gantry_config::output::plan_json(&c.pipeline),
            project::ChildOutcome::Dynamic { job, artifact } => {
                serde_json::json!({"dynamic": {"job": job, "artifact": artifact}})
            }
            project::ChildOutcome::Invalid(e) => serde_json::json!({"error": e}),
        };
        map.insert(name.clone(), value);
    }
    serde_json::Value::Object(map)
}

fn plan(args: PlanCmdArgs) -> i32 {
    let mut plan_args = args.plan.clone();
    plan_args.keep_merged = args.merged;
    let planned = match project::plan_with(&plan_args, &args.settings) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if args.merged {
        print!("{}", gantry_config::emit::to_yaml(&planned.loaded.merged));
    } else if args.json {
        let children = project::child_plans(&planned);
        // Indented for a person, compact for a pipe (half the bytes to write).
        let stdout = std::io::stdout();
        let pretty = std::io::IsTerminal::is_terminal(&stdout);
        let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
        let parent = gantry_config::output::PlanJson(&planned.pipeline);
        let _ = if children.is_empty() {
            write_json(&mut out, &parent, pretty)
        } else {
            let mut value = serde_json::to_value(&parent).unwrap_or_default();
            value["child_pipelines"] = children_json(&children);
            write_json(&mut out, &value, pretty)
        };
        let _ = std::io::Write::write_all(&mut out, b"\n");
        let _ = std::io::Write::flush(&mut out);
    } else {
        print!("{}", gantry_config::output::plan_human(&planned.pipeline));
        for (name, child) in project::child_plans(&planned) {
            println!();
            match child {
                project::ChildOutcome::Planned(c) => {
                    println!("child pipeline of `{name}` (trigger:include):");
                    for line in gantry_config::output::plan_human(&c.pipeline).lines() {
                        println!("  {line}");
                    }
                }
                project::ChildOutcome::Dynamic { job, artifact } => println!(
                    "child pipeline of `{name}`: generated by job `{job}` (artifact `{artifact}`); planned when it runs"
                ),
                project::ChildOutcome::Invalid(e) => {
                    println!("child pipeline of `{name}`: invalid, the trigger job would fail:");
                    for line in e.lines() {
                        println!("  {line}");
                    }
                }
            }
        }
    }
    0
}
