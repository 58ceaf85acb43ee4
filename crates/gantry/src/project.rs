//! The CLI's wiring from flags to a planned pipeline: locate the file and
//! read the repository with `gantry-source`, load and plan with
//! `gantry-config`, print diagnostics.

use gantry_config::context::{Context, GitFacts};
use gantry_config::load::{FileSource, LoadOptions, Loaded};
use gantry_config::model::Pipeline;
use gantry_config::{Diagnostic, Sources};
use gantry_source::{Located, WorkingTree, git, locate};
use std::path::PathBuf;

/// Exit code for a usage or I/O error (bad flag, unreadable file).
pub const EXIT_USAGE: i32 = crate::exit::Exit::Usage.code();
/// Exit code for an invalid configuration or a failed pipeline.
pub const EXIT_FAILURE: i32 = crate::exit::Exit::Failed.code();

/// Options shared by every command that plans a pipeline.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PlanArgs {
    /// The configuration file (default: `.gitlab-ci.yml` at the repository root).
    pub file: Option<PathBuf>,
    /// Plan for this branch or tag instead of the checked-out one.
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// Pipeline source: push, web, schedule, merge_request_event, api, trigger, ...
    #[arg(long, default_value = "push")]
    pub source: String,
    /// Set a variable (repeatable); wins over predefined ones.
    #[arg(short = 'v', long = "variable", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub vars: Vec<(String, String)>,
    /// Keep the merged configuration in [`Planned::loaded`] (for `--merged`).
    #[arg(skip)]
    pub keep_merged: bool,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// A planned pipeline and where it came from.
pub struct Planned {
    pub pipeline: Pipeline,
    pub loaded: Loaded,
    pub project_dir: PathBuf,
    pub facts: GitFacts,
}

/// A loaded configuration and the context it was loaded in.
pub struct LoadedProject {
    pub located: Located,
    pub facts: GitFacts,
    /// Pre-pipeline context: no file list or diff yet (see [`plan`]).
    pub context: Context,
    pub files: WorkingTree,
    pub loaded: Loaded,
}

/// Finds, reads and validates the configuration (what `gantry lint` does).
/// Prints diagnostics itself; the error is the exit code.
pub fn load(args: &PlanArgs) -> Result<LoadedProject, i32> {
    let located = locate(args.file.as_deref()).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })?;
    let facts = git::working_tree_facts(&located.project_dir, args.git_ref.as_deref());
    let context = Context::new(&facts, &args.source, &args.vars);
    let files = WorkingTree::new(located.project_dir.clone());
    let opts = LoadOptions {
        entry: located.entry.clone(),
        variables: context.variables.clone(),
        display_name: None,
    };
    let loaded = gantry_config::load::load(&files, &opts).map_err(|e| {
        print_diagnostics(&e.diagnostics, &e.sources);
        EXIT_FAILURE
    })?;
    Ok(LoadedProject {
        located,
        facts,
        context,
        files,
        loaded,
    })
}

/// Loads and plans. Prints diagnostics itself; the error is the exit code.
pub fn plan(args: &PlanArgs) -> Result<Planned, i32> {
    let LoadedProject {
        located,
        mut facts,
        mut context,
        files,
        mut loaded,
    } = load(args)?;
    // The file list and the diff cost git calls: only when rules use them.
    let (needs_files, needs_changes) = gantry_config::load::uses_exists_and_changes(&loaded.merged);
    if needs_files {
        facts.files = files.local_files();
        context.files = facts.files.clone();
    }
    if needs_changes {
        facts.changed_paths = git::changed_paths(
            &located.project_dir,
            &facts.sha,
            &facts.default_branch,
            facts.is_tag,
            &args.source,
            true,
        );
        context.changed_paths = facts.changed_paths.clone();
    }
    if !args.keep_merged {
        // Only `plan --merged` reads the merged tree; free it before planning.
        loaded.merged = gantry_config::node::Node::null(loaded.merged.span);
    }
    let pipeline = gantry_config::plan::plan(&loaded.config, &context).map_err(|d| {
        print_diagnostics(&d, &loaded.sources);
        EXIT_FAILURE
    })?;
    Ok(Planned {
        pipeline,
        loaded,
        project_dir: located.project_dir,
        facts,
    })
}

pub fn print_diagnostics(diagnostics: &[Diagnostic], sources: &Sources) {
    for d in diagnostics {
        eprintln!("{}", d.render(sources));
    }
    let n = diagnostics.len();
    eprintln!("{n} error{} found", if n == 1 { "" } else { "s" });
}
