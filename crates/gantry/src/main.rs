//! `gantry`: GitLab CI pipelines on your machine, deploys to ECS with a
//! rollback you can trust.
//!
//! Exit codes, for every command: 0 success; 1 an invalid configuration,
//! a failed pipeline or a failed deploy; 2 a usage or I/O error.

mod project;

use clap::{Parser, Subcommand};
use project::{EXIT_FAILURE, EXIT_USAGE, PlanArgs};
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "gantry", version, about = "Run GitLab CI pipelines locally; deploy with health checks and rollback.")]
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
}

#[derive(clap::Args)]
struct LintArgs {
    /// The configuration file (default: `.gitlab-ci.yml` at the repository root).
    file: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
struct PlanCmdArgs {
    #[command(flatten)]
    plan: PlanArgs,
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
    };
    // Exit without tearing down large configurations piece by piece.
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn lint(args: LintArgs) -> i32 {
    let plan_args = PlanArgs { file: args.file, ..PlanArgs::default() };
    let located = match project::locate(plan_args.file.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let facts = project::git_facts(&located.project_dir, None);
    let context = gantry_config::context::Context::new(&facts, "push", &[]);
    let files = project::ProjectFiles::new(located.project_dir.clone());
    let opts = gantry_config::load::LoadOptions { entry: located.entry.clone(), variables: context.variables.clone(), display_name: None };
    match gantry_config::load::load(&files, &opts) {
        Ok(loaded) => {
            let jobs = loaded.config.jobs.len();
            let stages = loaded.config.stages.len();
            println!("{}: valid ({jobs} job{}, {stages} stages)", located.entry, if jobs == 1 { "" } else { "s" });
            0
        }
        Err(e) => {
            project::print_diagnostics(&e.diagnostics, &e.sources);
            EXIT_FAILURE
        }
    }
}

fn plan(args: PlanCmdArgs) -> i32 {
    let planned = match project::plan(&args.plan) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if args.merged {
        print!("{}", gantry_config::emit::to_yaml(&planned.loaded.merged));
    } else if args.json {
        let json = gantry_config::output::plan_json(&planned.pipeline);
        println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
    } else {
        print!("{}", gantry_config::output::plan_human(&planned.pipeline));
    }
    0
}
