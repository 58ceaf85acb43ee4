//! The CLI's wiring from flags to a planned pipeline: locate the file and
//! read the repository with `gantry-source`, load and plan with
//! `gantry-config`, print diagnostics.

use gantry_config::context::{Context, GitFacts};
use gantry_config::load::{FileSource, LoadOptions, Loaded};
use gantry_config::model::Pipeline;
use gantry_config::{Diagnostic, Sources};
use gantry_source::{CommitTree, GitlabInstance, Located, WorkingTree, git, locate};
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
    /// Read the configuration from this commit instead of the working tree
    /// (`gantry run` runs a commit: its configuration and its files).
    #[arg(skip)]
    pub at_commit: Option<String>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// How strictly to load, and where GitLab is. Kept out of [`PlanArgs`] so
/// commands that build `PlanArgs` themselves keep compiling.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LoadSettings {
    /// Treat warnings (duplicate keys) as errors.
    #[arg(long)]
    pub strict: bool,
    /// The GitLab instance for `include:template` and `include:component`
    /// (default: GANTRY_GITLAB_URL, CI_SERVER_URL, https://gitlab.com).
    #[arg(long, value_name = "URL")]
    pub gitlab_url: Option<String>,
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
    /// Pre-pipeline context: no file list or diff yet (see [`plan_with`]).
    pub context: Context,
    pub files: Box<dyn FileSource>,
    pub loaded: Loaded,
}

/// Finds, reads and validates the configuration (what `gantry lint` does),
/// with settings from the command line.
/// Prints diagnostics itself; the error is the exit code.
pub fn load_with(args: &PlanArgs, settings: &LoadSettings) -> Result<LoadedProject, i32> {
    let located = locate(args.file.as_deref()).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })?;
    let facts = git::working_tree_facts(&located.project_dir, args.git_ref.as_deref());
    let context = Context::new(&facts, &args.source, &args.vars);
    let gitlab = GitlabInstance::from_env(settings.gitlab_url.as_deref());
    let files: Box<dyn FileSource> = match &args.at_commit {
        Some(sha) => Box::new(
            CommitTree::new(located.project_dir.clone(), sha.clone()).with_gitlab(gitlab),
        ),
        None => Box::new(WorkingTree::new(located.project_dir.clone()).with_gitlab(gitlab)),
    };
    let opts = LoadOptions {
        entry: located.entry.clone(),
        variables: context.variables.clone(),
        display_name: None,
    };
    let loaded = gantry_config::load::load(files.as_ref(), &opts).map_err(|e| {
        print_diagnostics(&e.diagnostics, &e.sources);
        EXIT_FAILURE
    })?;
    if !loaded.warnings.is_empty() {
        if settings.strict {
            let as_errors: Vec<Diagnostic> = loaded
                .warnings
                .iter()
                .map(|w| Diagnostic {
                    severity: gantry_config::diag::Severity::Error,
                    ..w.clone()
                })
                .collect();
            print_diagnostics(&as_errors, &loaded.sources);
            eprintln!("(--strict turns warnings into errors)");
            return Err(EXIT_FAILURE);
        }
        print_diagnostics(&loaded.warnings, &loaded.sources);
    }
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
    plan_with(args, &LoadSettings::default())
}

/// [`plan`] with settings from the command line.
pub fn plan_with(args: &PlanArgs, settings: &LoadSettings) -> Result<Planned, i32> {
    let LoadedProject {
        located,
        mut facts,
        mut context,
        files,
        mut loaded,
    } = load_with(args, settings)?;
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

/// Prints diagnostics, then how many errors and warnings there were.
pub fn print_diagnostics(diagnostics: &[Diagnostic], sources: &Sources) {
    for d in diagnostics {
        eprintln!("{}", d.render(sources));
    }
    let warnings = diagnostics.iter().filter(|d| d.is_warning()).count();
    let errors = diagnostics.len() - warnings;
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    match (errors, warnings) {
        (0, w) => eprintln!("{w} warning{}", plural(w)),
        (e, 0) => eprintln!("{e} error{} found", plural(e)),
        (e, w) => eprintln!("{e} error{} and {w} warning{} found", plural(e), plural(w)),
    }
}
