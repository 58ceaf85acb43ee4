//! A pipeline for one commit of a project: the facts of the commit from
//! `gantry-source`, its files through a [`gantry_source::CommitTree`], and
//! `gantry-config`'s load and plan with the `CI_*` variables of the trigger.

use gantry_config::context::Context;
use gantry_config::load::{ComponentFacts, ComponentRef, FileSource, LoadOptions, ReadError};
use gantry_config::model::Pipeline;
use gantry_source::Revision;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Source(#[from] gantry_source::SourceError),
    /// The configuration is invalid; the rendered diagnostics.
    #[error("invalid CI configuration:\n{0}")]
    Config(String),
}

/// What triggered the pipeline.
#[derive(Clone, Debug)]
pub struct Trigger {
    pub sha: String,
    pub git_ref: String,
    pub is_tag: bool,
    pub before_sha: Option<String>,
    /// `CI_PIPELINE_SOURCE`: push, web, api, schedule, merge_request_event, …
    pub source: String,
    /// Pipeline variables (API, schedule): they also decide rules.
    pub variables: Vec<(String, String)>,
    /// Extra predefined variables (merge request facts, server URLs).
    pub predefined: Vec<(String, String)>,
    /// Pipeline inputs for the entry file's `spec:inputs`; `None`: defaults.
    pub inputs: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The context `trigger`'s pipeline is planned in (rules, variables,
/// files, changes); also the parent context of its child pipelines.
pub fn context(repo: &Path, trigger: &Trigger) -> Result<Context, PlanError> {
    let revision = Revision {
        sha: trigger.sha.clone(),
        ref_name: trigger.git_ref.clone(),
        is_tag: trigger.is_tag,
        before_sha: trigger.before_sha.clone(),
    };
    let mut facts = gantry_source::commit_facts(repo, &revision)?;
    facts.files = gantry_source::git::files_at(repo, &facts.sha)?;
    if let Some(before) = trigger
        .before_sha
        .as_deref()
        .filter(|b| !b.chars().all(|c| c == '0'))
    {
        facts.changed_paths = gantry_source::git::changed_between(repo, before, &facts.sha);
    }
    let mut context = Context::new(&facts, &trigger.source, &trigger.variables);
    for (k, v) in &trigger.predefined {
        context.variables.insert(k.clone(), v.clone());
    }
    context.files = facts.files.clone();
    context.changed_paths = facts.changed_paths.clone();
    Ok(context)
}

/// The files of commit `sha` in `repo` (a mirror), with templates and
/// components from `gitlab_url` (else the environment's instance, else
/// gitlab.com). `include:project` reads another registered project's
/// mirror (see [`crate::repos::Repos::alias`]).
pub fn files(repo: &Path, sha: &str, gitlab_url: Option<&str>) -> MirrorFiles {
    MirrorFiles {
        tree: gantry_source::CommitTree::new(repo.to_path_buf(), sha.to_string())
            .with_gitlab(gantry_source::GitlabInstance::from_env(gitlab_url)),
        projects_read: Default::default(),
    }
}

/// A commit of a mirror. Mirrors are bare: an `include:project` without a
/// `ref` reads the project's default branch (its `HEAD`), as GitLab does,
/// not a working tree.
pub struct MirrorFiles {
    tree: gantry_source::CommitTree,
    /// The projects `include:project` asked for, found or not.
    projects_read: ProjectsRead,
}

/// The projects a [`MirrorFiles`] was asked for, as the configuration
/// named them; a handle that outlives the files given to a planner.
#[derive(Clone, Default)]
pub struct ProjectsRead(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl ProjectsRead {
    pub fn list(&self) -> Vec<String> {
        self.0.lock().expect("projects read").clone()
    }
    fn note(&self, project: &str) {
        self.0
            .lock()
            .expect("projects read")
            .push(project.to_string());
    }
}

impl MirrorFiles {
    /// The projects read so far (also after the files are handed on).
    pub fn projects_read(&self) -> ProjectsRead {
        self.projects_read.clone()
    }
}

impl FileSource for MirrorFiles {
    fn read_local(&self, path: &str) -> Result<String, ReadError> {
        self.tree.read_local(path)
    }
    fn local_files(&self) -> Vec<String> {
        self.tree.local_files()
    }
    fn read_project(
        &self,
        project: &str,
        git_ref: Option<&str>,
        path: &str,
    ) -> Result<String, ReadError> {
        self.projects_read.note(project);
        self.tree
            .read_project(project, Some(git_ref.unwrap_or("HEAD")), path)
    }
    fn read_remote(&self, url: &str) -> Result<String, ReadError> {
        self.tree.read_remote(url)
    }
    fn read_template(&self, name: &str) -> Result<String, ReadError> {
        self.tree.read_template(name)
    }
    fn read_component(&self, component: &ComponentRef) -> Result<String, ReadError> {
        self.tree.read_component(component)
    }
    fn component_facts(&self, component: &ComponentRef) -> Result<ComponentFacts, ReadError> {
        self.tree.component_facts(component)
    }
}

/// A plan, and the other projects its configuration read.
pub struct Planned {
    pub pipeline: Result<Pipeline, PlanError>,
    /// Paths as `include:project` named them (see [`MirrorFiles`]).
    pub projects_read: Vec<String>,
}

/// Plans the pipeline of `trigger` from the repository at `repo` (the
/// server's mirror). `entry` is the configuration file's path.
pub fn plan(repo: &Path, entry: &str, trigger: &Trigger, gitlab_url: Option<&str>) -> Planned {
    let files = files(repo, &trigger.sha, gitlab_url);
    let pipeline = plan_from(&files, repo, entry, trigger);
    Planned {
        pipeline,
        projects_read: files.projects_read().list(),
    }
}

fn plan_from(
    files: &MirrorFiles,
    repo: &Path,
    entry: &str,
    trigger: &Trigger,
) -> Result<Pipeline, PlanError> {
    let context = context(repo, trigger)?;
    let opts = LoadOptions {
        entry: entry.to_string(),
        variables: context.variables.clone(),
        display_name: None,
    };
    let loaded = match &trigger.inputs {
        Some(inputs) => gantry_config::load::load_with_inputs(files, &opts, inputs),
        None => gantry_config::load::load(files, &opts),
    }
    .map_err(|e| PlanError::Config(render(&e.diagnostics, &e.sources)))?;
    gantry_config::plan::plan(&loaded.config, &context)
        .map_err(|d| PlanError::Config(render(&d, &loaded.sources)))
}

fn render(
    diagnostics: &[gantry_config::diag::Diagnostic],
    sources: &gantry_config::source::Sources,
) -> String {
    diagnostics
        .iter()
        .map(|d| d.render(sources))
        .collect::<Vec<_>>()
        .join("\n")
}
