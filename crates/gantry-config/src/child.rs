//! Child pipelines (`trigger:include`): the plan of the pipeline a trigger
//! job starts, as GitLab builds it (`Ci::CreateDownstreamPipelineService`
//! with `source: parent_pipeline`).
//!
//! - [`child_context`]: the child's context: `CI_PIPELINE_SOURCE` is
//!   `parent_pipeline`; the trigger job's variables are passed down as
//!   pipeline variables unless `forward:yaml_variables: false`; the
//!   parent's own pipeline variables (`-v`) only with
//!   `forward:pipeline_variables: true`.
//! - [`static_child`]: what a trigger job includes, when it can be known
//!   before the pipeline runs (local, project, template, component or
//!   remote files, not an artifact of a job).
//! - [`plan_child`] / [`plan_child_yaml`]: load and plan a child from its
//!   includes, or from YAML text (a dynamic child pipeline: the engine
//!   reads the artifact a job generated and passes its text).

use crate::context::Context;
use crate::diag::{ConfigError, Diagnostic};
use crate::load::{ComponentRef, FileSource, LoadOptions, Loaded, load};
use crate::model::{Job, Pipeline};
use serde_json::Value as Json;

/// Where a trigger job's child configuration comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ChildSource {
    /// Not a child pipeline: `trigger: project` (multi-project), or no
    /// `trigger:` at all.
    None,
    /// Files known before the pipeline runs: the `trigger:include` value.
    Static(Json),
    /// A file an earlier job generates: `{artifact, job}`. Plan it with
    /// [`plan_child_yaml`] once the artifact exists.
    Artifact { job: String, artifact: String },
}

/// What `trigger:include` of `job` names.
pub fn static_child(job: &Job) -> ChildSource {
    let Some(include) = job.trigger.as_ref().and_then(|t| t.get("include")) else {
        return ChildSource::None;
    };
    let items: Vec<&Json> = match include {
        Json::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    for item in &items {
        if let (Some(artifact), Some(from)) = (
            item.get("artifact").and_then(Json::as_str),
            item.get("job").and_then(Json::as_str),
        ) {
            return ChildSource::Artifact {
                job: from.to_string(),
                artifact: artifact.to_string(),
            };
        }
    }
    ChildSource::Static(include.clone())
}

/// The context a trigger job's child pipeline is planned in.
pub fn child_context(parent: &Context, trigger_job: &Job) -> Context {
    let forward = trigger_job.trigger.as_ref().and_then(|t| t.get("forward"));
    let flag = |key: &str, default: bool| {
        forward
            .and_then(|f| f.get(key))
            .and_then(Json::as_bool)
            .unwrap_or(default)
    };
    let mut ctx = parent.clone();
    ctx.source = "parent_pipeline".to_string();
    if !flag("pipeline_variables", false) {
        for name in parent.overrides.keys() {
            ctx.variables.shift_remove(name);
        }
        ctx.overrides.clear();
    }
    ctx.variables
        .insert("CI_PIPELINE_SOURCE".into(), "parent_pipeline".into());
    if flag("yaml_variables", true) {
        for v in &trigger_job.variables {
            ctx.variables.insert(v.name.clone(), v.value.clone());
            ctx.overrides.insert(v.name.clone(), v.value.clone());
        }
    }
    ctx
}

/// A child pipeline, loaded and planned.
#[derive(Debug)]
pub struct ChildPlan {
    pub loaded: Loaded,
    pub pipeline: Pipeline,
    pub context: Context,
}

/// The name the child's entry has in errors.
fn entry_name(trigger_job: &str) -> String {
    format!("<child pipeline of `{trigger_job}`>")
}

/// Plans the child pipeline of `trigger_job` (a planned job of the parent)
/// when its configuration is static; `Ok(None)` for an artifact or a
/// multi-project trigger. Files come from `fs` as for the parent.
pub fn plan_child(
    fs: &dyn FileSource,
    parent: &Context,
    trigger_job: &Job,
) -> Result<Option<ChildPlan>, ConfigError> {
    let include = match static_child(trigger_job) {
        ChildSource::Static(include) => include,
        ChildSource::None | ChildSource::Artifact { .. } => return Ok(None),
    };
    // The child's entry is a file holding only the trigger's `include:`;
    // the loader then reads local, project, template and component files
    // as it does for any include.
    let entry = serde_json::json!({ "include": include });
    let text = serde_json::to_string(&entry).unwrap_or_default();
    plan_child_yaml(
        fs,
        parent,
        trigger_job,
        &text,
        &entry_name(&trigger_job.name),
    )
    .map(Some)
}

/// Plans a child pipeline from YAML `text` (a dynamic child pipeline: the
/// artifact a job generated), shown as `display_name` in errors. Its
/// `include:local` files come from `fs`, the parent's project.
pub fn plan_child_yaml(
    fs: &dyn FileSource,
    parent: &Context,
    trigger_job: &Job,
    text: &str,
    display_name: &str,
) -> Result<ChildPlan, ConfigError> {
    let context = child_context(parent, trigger_job);
    let entry = OneFile {
        inner: fs,
        path: ENTRY_PATH,
        text,
    };
    let opts = LoadOptions {
        entry: ENTRY_PATH.to_string(),
        variables: context.variables.clone(),
        display_name: Some(display_name.to_string()),
    };
    let loaded = load(&entry, &opts)?;
    let pipeline =
        crate::plan::plan(&loaded.config, &context).map_err(|diagnostics| ConfigError {
            diagnostics,
            sources: loaded.sources.clone(),
        })?;
    Ok(ChildPlan {
        loaded,
        pipeline,
        context,
    })
}

/// A path no project file has: the child's entry.
const ENTRY_PATH: &str = "\u{0}gantry-child-pipeline.yml";

/// `inner`, with one more file: the child's entry.
struct OneFile<'a> {
    inner: &'a dyn FileSource,
    path: &'a str,
    text: &'a str,
}

impl FileSource for OneFile<'_> {
    fn read_local(&self, path: &str) -> Result<String, crate::load::ReadError> {
        if path == self.path {
            Ok(self.text.to_string())
        } else {
            self.inner.read_local(path)
        }
    }
    fn local_files(&self) -> Vec<String> {
        self.inner.local_files()
    }
    fn read_project(
        &self,
        project: &str,
        git_ref: Option<&str>,
        path: &str,
    ) -> Result<String, crate::load::ReadError> {
        self.inner.read_project(project, git_ref, path)
    }
    fn read_remote(&self, url: &str) -> Result<String, crate::load::ReadError> {
        self.inner.read_remote(url)
    }
    fn read_template(&self, name: &str) -> Result<String, crate::load::ReadError> {
        self.inner.read_template(name)
    }
    fn read_component(&self, component: &ComponentRef) -> Result<String, crate::load::ReadError> {
        self.inner.read_component(component)
    }
    fn component_facts(
        &self,
        component: &ComponentRef,
    ) -> Result<crate::load::ComponentFacts, crate::load::ReadError> {
        self.inner.component_facts(component)
    }
}

/// An error about a child pipeline as one diagnostic (for callers that
/// report it next to the parent's).
pub fn describe_error(trigger_job: &str, error: &ConfigError) -> Diagnostic {
    Diagnostic::new(
        None,
        format!(
            "the child pipeline of `{trigger_job}` is invalid:\n{}",
            error
        ),
    )
}
