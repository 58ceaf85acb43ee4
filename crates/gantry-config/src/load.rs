//! Loading a configuration the way GitLab builds it
//! (`lib/gitlab/ci/config.rb#build_config`): parse each file, expand
//! `include:` ([`crate::include`]), apply `extends:` ([`crate::extends`]),
//! resolve `!reference` ([`crate::reference`]), then validate and compose
//! ([`crate::compose`]). Every stage reports all of its errors together and
//! the load stops at the first stage that has any.
//!
//! Files come through a [`FileSource`], so this crate does no I/O itself;
//! [`MemorySource`] serves tests, benchmarks and fuzzing.

use crate::diag::{ConfigError, Diagnostic};
use crate::model::Config;
use crate::node::Node;
use crate::source::Sources;
use indexmap::IndexMap;
use std::collections::HashMap;

/// Why a [`FileSource`] gave no file. The kind decides GitLab's wording
/// (`Local file … does not exist!` only for a file that is not there); the
/// message says what the source looked for, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The file, project, ref, template or component does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The path is not one the source may read (it leaves the project).
    #[error("{0}")]
    Refused(String),
    /// Nothing to read from here: no GitLab instance, no clone, offline.
    #[error("{0}")]
    Unavailable(String),
    /// It exists, or may, but reading it failed (I/O, network, git).
    #[error("{0}")]
    Failed(String),
}

/// Where configuration files come from. The CLI implements it over the
/// filesystem, `git`, and HTTP.
pub trait FileSource {
    /// A file of the project, path relative to the project root (no leading '/').
    fn read_local(&self, path: &str) -> Result<String, ReadError>;
    /// Every file path of the project (relative, sorted), for `include:local` globs.
    fn local_files(&self) -> Vec<String>;
    /// `include:project` (a local clone resolved by the implementation).
    fn read_project(
        &self,
        project: &str,
        git_ref: Option<&str>,
        path: &str,
    ) -> Result<String, ReadError>;
    /// `include:remote` over HTTP(S); the implementation caches.
    fn read_remote(&self, url: &str) -> Result<String, ReadError>;
    /// `include:template`: one of GitLab's CI/CD templates by its path
    /// under `lib/gitlab/ci/templates` (`Jobs/Build.gitlab-ci.yml`).
    fn read_template(&self, name: &str) -> Result<String, ReadError> {
        Err(ReadError::Unavailable(format!(
            "no GitLab instance to read the template `{name}` from"
        )))
    }
    /// `include:component`: the template of a CI/CD component.
    fn read_component(&self, component: &ComponentRef) -> Result<String, ReadError> {
        Err(ReadError::Unavailable(format!(
            "no GitLab instance to read the component `{}` from",
            component.address()
        )))
    }
    /// What `spec:component` exposes about a component (`version`, `sha`).
    /// Asked only when a component's header declares one of them, so a
    /// component that does not pays no extra request.
    fn component_facts(&self, component: &ComponentRef) -> Result<ComponentFacts, ReadError> {
        Err(ReadError::Unavailable(format!(
            "no GitLab instance to resolve the component `{}` against",
            component.address()
        )))
    }
}

/// A component's own metadata for `$[[ component.* ]]` (GitLab 18.6+).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComponentFacts {
    /// The released semantic version the address resolved to; `None` for
    /// a branch, a SHA or a project that is not a catalog resource.
    pub version: Option<String>,
    /// The commit the component was read at.
    pub sha: Option<String>,
}

/// A parsed `include:component` address: `host/group/project/name@version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentRef {
    /// The instance's host (`gitlab.com`, `$CI_SERVER_FQDN`).
    pub host: String,
    /// The component project's full path (`group/sub/project`).
    pub project: String,
    /// The component's name: `templates/NAME.yml` or
    /// `templates/NAME/template.yml` in the project.
    pub name: String,
    /// `1.2.3`, a partial version (`1`, `1.2`), `~latest`, a branch or a SHA.
    pub version: String,
}

impl ComponentRef {
    /// Parses `host/project/name@version`; `None` when a part is missing.
    pub fn parse(address: &str) -> Option<ComponentRef> {
        let (path, version) = address.rsplit_once('@')?;
        let (host, rest) = path.split_once('/')?;
        let (project, name) = rest.rsplit_once('/')?;
        if host.is_empty() || project.is_empty() || name.is_empty() || version.is_empty() {
            return None;
        }
        Some(ComponentRef {
            host: host.to_string(),
            project: project.to_string(),
            name: name.to_string(),
            version: version.to_string(),
        })
    }

    /// The address as written.
    pub fn address(&self) -> String {
        format!(
            "{}/{}/{}@{}",
            self.host, self.project, self.name, self.version
        )
    }

    /// The paths a component's template may have in its project, in
    /// GitLab's order.
    pub fn template_paths(&self) -> [String; 2] {
        [
            format!("templates/{}.yml", self.name),
            format!("templates/{}/template.yml", self.name),
        ]
    }
}

/// What to load and with which pre-pipeline variables.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The entry file relative to the project root, e.g. `.gitlab-ci.yml`.
    pub entry: String,
    /// Variables known before the pipeline exists (predefined `CI_*` and
    /// `-v` ones), for `include:rules` and include path expansion.
    pub variables: IndexMap<String, String>,
    /// Name shown for the entry file in errors; `entry` when `None`.
    pub display_name: Option<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            entry: ".gitlab-ci.yml".into(),
            variables: IndexMap::new(),
            display_name: None,
        }
    }
}

impl LoadOptions {
    /// Options for loading `entry` with no variables.
    pub fn new(entry: impl Into<String>) -> Self {
        LoadOptions {
            entry: entry.into(),
            ..Self::default()
        }
    }
}

/// A loaded configuration.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The validated model.
    pub config: Config,
    /// The configuration after includes, extends and `!reference`, before
    /// validation (what `gantry plan --merged` starts from).
    pub merged: Node,
    /// Every file that took part, for rendering diagnostics.
    pub sources: Sources,
    /// What GitLab accepts but the user should see (duplicate keys).
    pub warnings: Vec<Diagnostic>,
}

/// yaml → includes → extends → !reference → compose. All diagnostics of a
/// stage are reported together.
/// Errors come after the warnings found before them, so a user sees both.
pub fn load(fs: &dyn FileSource, opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    load_given(fs, opts, None, Sources::new())
}

/// [`load`] with pipeline inputs (`POST /pipeline` `inputs`, the run
/// form): given as JSON values, checked against the entry file's
/// `spec:inputs` (types, `options`, `regex`, unknown and missing inputs,
/// with GitLab's messages) and interpolated into it as `$[[ inputs.x ]]`.
/// The inputs appear in errors as the file `pipeline inputs`.
pub fn load_with_inputs(
    fs: &dyn FileSource,
    opts: &LoadOptions,
    inputs: &serde_json::Map<String, serde_json::Value>,
) -> Result<Loaded, ConfigError> {
    let mut sources = Sources::new();
    // JSON is YAML: parsed like a file, the inputs carry positions.
    let text = serde_json::to_string_pretty(inputs).unwrap_or_else(|_| "{}".into());
    let id = sources.add("pipeline inputs", text.clone());
    let given = match crate::yaml::parse(&text, id, &crate::yaml::Limits::default()) {
        Ok(node) => node,
        Err(diagnostics) => {
            return Err(ConfigError {
                diagnostics,
                sources,
            });
        }
    };
    load_given(fs, opts, Some(&given), sources)
}

/// Merges (with `given` pipeline inputs, else the defaults) and composes;
/// errors come after the warnings found before them.
fn load_given(
    fs: &dyn FileSource,
    opts: &LoadOptions,
    given: Option<&Node>,
    mut sources: Sources,
) -> Result<Loaded, ConfigError> {
    let mut warnings = Vec::new();
    let merged = crate::include::expand_with_inputs(fs, opts, given, &mut sources, &mut warnings)
        .and_then(finish_merge);
    let merged = match merged {
        Ok(node) => node,
        Err(diagnostics) => {
            warnings.extend(diagnostics);
            return Err(ConfigError {
                diagnostics: warnings,
                sources,
            });
        }
    };
    match crate::compose::compose(&merged) {
        Ok(config) => Ok(Loaded {
            config,
            merged,
            sources,
            warnings,
        }),
        Err(diagnostics) => {
            warnings.extend(diagnostics);
            Err(ConfigError {
                diagnostics: warnings,
                sources,
            })
        }
    }
}

/// extends → !reference → normalize, after includes.
fn finish_merge(root: Node) -> Result<Node, Vec<Diagnostic>> {
    let root = crate::extends::apply(root)?;
    let mut root = crate::reference::resolve(root)?;
    crate::normalize::normalize(&mut root);
    Ok(root)
}

/// The stages before validation: includes, extends, `!reference`. The
/// result is the merged configuration; `sources` receives every file read,
/// even when there are errors.
pub fn merge(
    fs: &dyn FileSource,
    opts: &LoadOptions,
    sources: &mut Sources,
) -> Result<Node, Vec<Diagnostic>> {
    merge_with_warnings(fs, opts, sources, &mut Vec::new())
}

/// [`merge`], collecting warnings into `warnings`.
pub fn merge_with_warnings(
    fs: &dyn FileSource,
    opts: &LoadOptions,
    sources: &mut Sources,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Node, Vec<Diagnostic>> {
    finish_merge(crate::include::expand_with_warnings(
        fs, opts, sources, warnings,
    )?)
}

/// A [`FileSource`] over maps held in memory.
#[derive(Clone, Debug, Default)]
pub struct MemorySource {
    files: HashMap<String, String>,
    /// `(project, ref or "HEAD", path)` to text.
    projects: HashMap<(String, String, String), String>,
    remotes: HashMap<String, String>,
    templates: HashMap<String, String>,
    /// Component address (`host/project/name@version`) to text.
    components: HashMap<String, String>,
    /// Component address to its `spec:component` facts.
    component_facts: HashMap<String, ComponentFacts>,
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }

    /// A source holding one project file, typically `.gitlab-ci.yml`.
    pub fn single(path: impl Into<String>, text: impl Into<String>) -> Self {
        Self::new().with_file(path, text)
    }

    /// Adds a project file (path relative to the project root).
    pub fn with_file(mut self, path: impl Into<String>, text: impl Into<String>) -> Self {
        self.add_file(path, text);
        self
    }

    pub fn add_file(&mut self, path: impl Into<String>, text: impl Into<String>) {
        let path = path.into();
        self.files
            .insert(path.trim_start_matches('/').to_string(), text.into());
    }

    /// Adds a file of another project for `include:project`; `git_ref`
    /// `None` stands for `HEAD`, the ref GitLab uses when none is given.
    pub fn with_project(
        mut self,
        project: impl Into<String>,
        git_ref: Option<&str>,
        path: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        let path = path.into();
        let key = (
            project.into().to_lowercase(),
            git_ref.unwrap_or("HEAD").to_string(),
            path.trim_start_matches('/').to_string(),
        );
        self.projects.insert(key, text.into());
        self
    }

    /// Adds the body served for a remote URL.
    pub fn with_remote(mut self, url: impl Into<String>, text: impl Into<String>) -> Self {
        self.remotes.insert(url.into(), text.into());
        self
    }

    /// Adds a GitLab CI/CD template (`Jobs/Build.gitlab-ci.yml`).
    pub fn with_template(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        self.templates.insert(name.into(), text.into());
        self
    }

    /// Adds a component's template under its full address.
    pub fn with_component(mut self, address: impl Into<String>, text: impl Into<String>) -> Self {
        self.components.insert(address.into(), text.into());
        self
    }

    /// Sets what a component's address resolved to (its version and SHA).
    pub fn with_component_facts(
        mut self,
        address: impl Into<String>,
        facts: ComponentFacts,
    ) -> Self {
        self.component_facts.insert(address.into(), facts);
        self
    }
}

impl FileSource for MemorySource {
    fn read_local(&self, path: &str) -> Result<String, ReadError> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| ReadError::NotFound(format!("no such file: {path}")))
    }

    fn local_files(&self) -> Vec<String> {
        let mut files: Vec<String> = self.files.keys().cloned().collect();
        files.sort();
        files
    }

    fn read_project(
        &self,
        project: &str,
        git_ref: Option<&str>,
        path: &str,
    ) -> Result<String, ReadError> {
        let key = (
            project.to_lowercase(),
            git_ref.unwrap_or("HEAD").to_string(),
            path.to_string(),
        );
        self.projects
            .get(&key)
            .cloned()
            .ok_or_else(|| ReadError::NotFound(format!("no file `{path}` in project `{project}`")))
    }

    fn read_remote(&self, url: &str) -> Result<String, ReadError> {
        self.remotes
            .get(url)
            .cloned()
            .ok_or_else(|| ReadError::NotFound("HTTP 404".to_string()))
    }

    fn read_template(&self, name: &str) -> Result<String, ReadError> {
        self.templates
            .get(name)
            .cloned()
            .ok_or_else(|| ReadError::NotFound(format!("no template `{name}`")))
    }

    fn read_component(&self, component: &ComponentRef) -> Result<String, ReadError> {
        self.components
            .get(&component.address())
            .cloned()
            .ok_or_else(|| ReadError::NotFound(format!("no component `{}`", component.address())))
    }

    fn component_facts(&self, component: &ComponentRef) -> Result<ComponentFacts, ReadError> {
        self.component_facts
            .get(&component.address())
            .cloned()
            .ok_or_else(|| {
                ReadError::NotFound(format!(
                    "no facts for the component `{}`",
                    component.address()
                ))
            })
    }
}

/// Whether the configuration uses `exists:` and `changes:` anywhere, in
/// one walk, so the git queries they need run only when they matter.
pub fn uses_exists_and_changes(node: &Node) -> (bool, bool) {
    use crate::node::Value;
    fn walk(node: &Node, found: &mut (bool, bool)) {
        match &node.value {
            Value::Map(m) => {
                for (k, e) in m.iter() {
                    found.0 |= k == "exists";
                    found.1 |= k == "changes";
                    if let Value::Map(_) | Value::Seq(_) = e.value.value {
                        walk(&e.value, found);
                    }
                }
            }
            Value::Seq(items) => items.iter().for_each(|n| walk(n, found)),
            _ => {}
        }
    }
    let mut found = (false, false);
    walk(node, &mut found);
    found
}
