//! `include:` as GitLab's `External::Processor` and `Mapper` do it
//! (lib/gitlab/ci/config/external/*).
//!
//! For each file: its `include:` items go through the mapper's steps in
//! order — normalise (a bare string is `remote` when it is a URL, else
//! `local`, after variable expansion), filter by `rules`, expand locations
//! (`local` globs, `project` `file:` arrays), expand variables, match
//! exactly one kind, verify (limit of 150 files, YAML extension), fetch.
//! Each included file is parsed on its own (anchors do not cross files),
//! gets its `spec:inputs` interpolated, and has its own includes expanded
//! first. Then `content = {}`, every included file deep-merged in order,
//! the including file deep-merged last, `include` removed.
//!
//! Nested `local:` includes resolve where their file came from: the
//! project for local files, the other project for `project:` files, and
//! nowhere for remote files (GitLab: "Local file ... does not have
//! project!"). GitLab allows the same file to be included twice (each
//! counts towards the limit); a file that includes itself, directly or not,
//! would only stop at the limit in GitLab, so it is reported as a cycle.

use crate::diag::Diagnostic;
use crate::load::{ComponentFacts, ComponentRef, FileSource, LoadOptions, ReadError};
use crate::node::{Map, Node, Value, deep_merge};
use crate::source::{FileId, Sources, Span};
use crate::yaml;
use indexmap::IndexMap;
use regex::Regex;
use std::sync::OnceLock;

/// `ci_max_includes`, GitLab's default.
pub const MAX_INCLUDES: usize = 150;

/// Keys an include hash may have (`Entry::Include::ALLOWED_KEYS`).
const ALLOWED_KEYS: &[&str] = &[
    "local",
    "file",
    "remote",
    "project",
    "ref",
    "template",
    "artifact",
    "job",
    "inputs",
    "rules",
    "cache",
    "component",
    "integrity",
];

/// The kinds of include, in GitLab's error message order.
const KINDS: &[&str] = &[
    "local",
    "project",
    "remote",
    "template",
    "component",
    "artifact",
];

/// Keys of an include rule (`Entry::Include::Rules::Rule`).
const RULE_KEYS: &[&str] = &["if", "exists", "changes", "when"];

/// Where a file came from, which decides where its `local:` includes are read.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Scope {
    /// The project being loaded.
    Main,
    /// Another project, through `include:project`.
    Project {
        project: String,
        git_ref: Option<String>,
    },
    /// A remote file: no project context.
    Detached,
}

/// A file's identity, for cycle detection.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileKey {
    scope: Scope,
    path: String,
}

/// Expands the includes of the entry file of `opts` and returns the merged
/// configuration. Every file read is added to `sources`.
pub fn expand(
    fs: &dyn FileSource,
    opts: &LoadOptions,
    sources: &mut Sources,
) -> Result<Node, Vec<Diagnostic>> {
    expand_with_warnings(fs, opts, sources, &mut Vec::new())
}

/// [`expand`], collecting warnings (duplicate keys) into `warnings`.
pub fn expand_with_warnings(
    fs: &dyn FileSource,
    opts: &LoadOptions,
    sources: &mut Sources,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Node, Vec<Diagnostic>> {
    expand_with_inputs(fs, opts, None, sources, warnings)
}

/// [`expand_with_warnings`] with pipeline inputs (GitLab 17.x: the inputs
/// of a run, checked against the entry file's `spec:inputs` exactly as an
/// include's `inputs:` are). `None` uses the defaults.
pub fn expand_with_inputs(
    fs: &dyn FileSource,
    opts: &LoadOptions,
    inputs: Option<&Node>,
    sources: &mut Sources,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Node, Vec<Diagnostic>> {
    let name = opts
        .display_name
        .clone()
        .unwrap_or_else(|| opts.entry.clone());
    let entry = opts.entry.trim_start_matches('/').to_string();
    let text = fs
        .read_local(&entry)
        .map_err(|e| vec![Diagnostic::new(None, format!("cannot read `{name}`: {e}"))])?;
    let mut expander = Expander {
        fs,
        vars: &opts.variables,
        sources,
        errors: Vec::new(),
        warnings,
        count: 0,
        limit_reached: false,
        stack: Vec::new(),
        local_files: None,
    };
    let key = FileKey {
        scope: Scope::Main,
        path: entry,
    };
    let root = expander.load_entry(key, name, text, inputs);
    match root {
        Some(root) if expander.errors.is_empty() => Ok(root),
        _ => Err(expander.errors),
    }
}

/// The type of a `spec:inputs` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    String,
    Number,
    Boolean,
    Array,
}

/// One input the entry file declares in its `spec:inputs` header (with
/// `spec:include` files merged), for a form. Checking given values is
/// [`expand_with_inputs`]'s job, with GitLab's messages.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct InputSpec {
    pub name: String,
    /// `None` for a type GitLab does not know (loading reports it).
    pub kind: Option<InputType>,
    /// `None`: the input is required.
    pub default: Option<serde_json::Value>,
    pub description: Option<String>,
    pub options: Vec<serde_json::Value>,
    pub regex: Option<String>,
}

/// The `spec:inputs` the entry file of `opts` declares, in order; empty
/// without a header.
pub fn entry_inputs(
    fs: &dyn FileSource,
    opts: &LoadOptions,
    sources: &mut Sources,
) -> Result<Vec<InputSpec>, Vec<Diagnostic>> {
    let name = opts
        .display_name
        .clone()
        .unwrap_or_else(|| opts.entry.clone());
    let entry = opts.entry.trim_start_matches('/').to_string();
    let text = fs
        .read_local(&entry)
        .map_err(|e| vec![Diagnostic::new(None, format!("cannot read `{name}`: {e}"))])?;
    let mut warnings = Vec::new();
    let mut expander = Expander {
        fs,
        vars: &opts.variables,
        sources,
        errors: Vec::new(),
        warnings: &mut warnings,
        count: 0,
        limit_reached: false,
        stack: Vec::new(),
        local_files: None,
    };
    let id = expander.sources.add(name, text);
    let Some(doc) = expander.parse(id) else {
        return Err(expander.errors);
    };
    let Some(mut header) = doc.header else {
        return Ok(Vec::new());
    };
    let Some(external) = expander.spec_include_inputs(&header, &Scope::Main) else {
        return Err(expander.errors);
    };
    add_spec_inputs(&mut header, external);
    let Some(specs) = header
        .as_map()
        .and_then(|h| h.get("spec"))
        .and_then(Node::as_map)
        .and_then(|s| s.get("inputs"))
        .and_then(Node::as_map)
    else {
        return Ok(Vec::new());
    };
    Ok(specs
        .iter()
        .map(|(name, entry)| {
            let spec = entry.value.as_map();
            let get = |key: &str| spec.and_then(|m| m.get(key));
            let kind = match get("type").and_then(Node::as_str).unwrap_or("string") {
                "string" => Some(InputType::String),
                "number" => Some(InputType::Number),
                "boolean" => Some(InputType::Boolean),
                "array" => Some(InputType::Array),
                _ => None,
            };
            InputSpec {
                name: name.to_string(),
                kind,
                default: get("default").map(Node::to_json),
                description: get("description").and_then(Node::scalar_string),
                options: get("options")
                    .and_then(Node::as_seq)
                    .map(|o| o.iter().map(Node::to_json).collect())
                    .unwrap_or_default(),
                regex: get("regex").and_then(Node::as_str).map(str::to_string),
            }
        })
        .collect())
}

struct Expander<'a> {
    fs: &'a dyn FileSource,
    vars: &'a IndexMap<String, String>,
    sources: &'a mut Sources,
    errors: Vec<Diagnostic>,
    warnings: &'a mut Vec<Diagnostic>,
    /// Included files so far (GitLab's `expandset`).
    count: usize,
    limit_reached: bool,
    /// Files being expanded, outermost first, with their display names.
    stack: Vec<(FileKey, String)>,
    local_files: Option<Vec<String>>,
}

/// One include after normalisation: its hash and where it was written.
struct Location {
    map: Map,
    span: Span,
}

/// What an include resolved to, ready to fetch.
enum Target {
    Local(String),
    Project {
        project: String,
        git_ref: Option<String>,
        file: String,
    },
    Remote(String),
    Template(String),
    Component(ComponentRef),
}

impl Expander<'_> {
    fn error(&mut self, span: Span, message: impl Into<String>, expected: &str) {
        self.errors
            .push(Diagnostic::at(span, message).expected(expected.to_string()));
    }

    /// Parses the entry file and expands its includes.
    fn load_entry(
        &mut self,
        key: FileKey,
        name: String,
        text: String,
        inputs: Option<&Node>,
    ) -> Option<Node> {
        let id = self.sources.add(name.clone(), text);
        let doc = self.parse(id)?;
        let body = match doc.header {
            None if inputs.and_then(Node::as_map).is_some_and(|m| !m.is_empty()) => {
                let span = inputs.map(|i| i.span).unwrap_or(doc.body.span);
                self.errors.push(
                    Diagnostic::at(span, format!("`{name}`: Given inputs not defined in the `spec` section of the configuration file"))
                        .expected("a `spec:inputs` header in the pipeline's configuration file"),
                );
                return None;
            }
            Some(mut header) => {
                let external = self.spec_include_inputs(&header, &Scope::Main)?;
                add_spec_inputs(&mut header, external);
                let component = self.component_context(&header, None, &name, header.span)?;
                let site = InterpolationSite {
                    location: &name,
                    vars: self.vars,
                    include_span: None,
                    component: &component,
                };
                interpolate(header, inputs, doc.body, &site, &mut self.errors)?
            }
            None => doc.body,
        };
        match &body.value {
            Value::Map(_) => {}
            Value::Null => {
                self.errors.push(
                    Diagnostic::at(body.span, format!("Please provide content of {name}"))
                        .expected("a hash of jobs and global keywords"),
                );
                return None;
            }
            _ => {
                self.errors.push(
                    Diagnostic::at(body.span, "Invalid configuration format")
                        .expected("a hash of jobs and global keywords"),
                );
                return None;
            }
        }
        self.stack.push((key, name));
        let merged = self.expand_includes(body, &Scope::Main);
        self.stack.pop();
        Some(merged)
    }

    fn parse(&mut self, id: FileId) -> Option<yaml::Document> {
        let text = self.sources.get(id).map(|f| f.text.as_str()).unwrap_or("");
        match yaml::parse_document(text, id, &yaml::Limits::default()) {
            Ok(mut doc) => {
                self.warnings.append(&mut doc.warnings);
                Some(doc)
            }
            Err(errors) => {
                self.errors.extend(errors);
                None
            }
        }
    }

    /// Replaces `include:` of `body` by the content it names.
    fn expand_includes(&mut self, mut body: Node, scope: &Scope) -> Node {
        let Some(include) = body.as_map_mut().and_then(|m| m.remove("include")) else {
            return body;
        };
        let items = match include.value {
            Value::Seq(items) => items,
            Value::Null => Vec::new(),
            _ => vec![include],
        };
        let mut content = Node::new(Value::Map(Map::new()), body.span);
        for item in items {
            if self.limit_reached {
                break;
            }
            let Some(location) = self.normalize(item) else {
                continue;
            };
            for file in self.locate(location, scope) {
                deep_merge(&mut content, file);
            }
        }
        deep_merge(&mut content, body);
        content
    }

    /// Normaliser: an item as a hash; a string becomes `remote` or `local`
    /// after variable expansion.
    fn normalize(&mut self, item: Node) -> Option<Location> {
        let span = item.span;
        match item.value {
            Value::Str(s) => {
                let expanded = expand_variables(&s, self.vars);
                let kind = if is_valid_url(&expanded) {
                    "remote"
                } else {
                    "local"
                };
                let mut map = Map::new();
                map.insert(kind, span, Node::str(expanded, span));
                Some(Location { map, span })
            }
            Value::Map(map) => {
                let unknown: Vec<(&str, Span)> = map
                    .iter()
                    .filter(|(k, _)| !ALLOWED_KEYS.contains(k))
                    .map(|(k, e)| (k, e.key_span))
                    .collect();
                if let Some((_, key_span)) = unknown.first() {
                    let names: Vec<&str> = unknown.iter().map(|(k, _)| *k).collect();
                    self.errors.push(
                        Diagnostic::at(
                            *key_span,
                            format!("include config contains unknown keys: {}", names.join(", ")),
                        )
                        .expected(format!("one of: {}", ALLOWED_KEYS.join(", "))),
                    );
                    return None;
                }
                Some(Location { map, span })
            }
            Value::Null => None,
            _ => {
                self.errors.push(
                    Diagnostic::at(span, "include config should be a hash or a string").expected(
                        "`local: path`, `project:` with `file:`, `remote: url`, or a path string",
                    ),
                );
                None
            }
        }
    }

    /// Filter, location expansion, variable expansion, matching and
    /// verification of one include; returns the expanded content of every
    /// file it names.
    fn locate(&mut self, mut location: Location, scope: &Scope) -> Vec<Node> {
        if let Some(rules) = location.map.remove("rules") {
            match self.rules_pass(&rules) {
                Some(true) => {}
                Some(false) | None => return Vec::new(),
            }
        }
        let inputs = location.map.remove("inputs");
        if let Some(inputs) = &inputs
            && !matches!(inputs.value, Value::Map(_) | Value::Null)
        {
            self.errors.push(
                Diagnostic::at(inputs.span, "include:inputs must be a hash")
                    .expected("a hash of input names to values"),
            );
            return Vec::new();
        }
        let mut files = Vec::new();
        for location in self.expand_locations(location, scope) {
            if self.limit_reached {
                break;
            }
            if let Some(node) = self.fetch(location, scope, inputs.as_ref()) {
                files.push(node);
            }
        }
        files
    }

    /// LocationExpander then VariablesExpander.
    fn expand_locations(&mut self, location: Location, scope: &Scope) -> Vec<Location> {
        let span = location.span;
        let mut expanded = Vec::new();
        if location.map.contains_key("project") {
            match location.map.get("file").map(|f| f.value.clone()) {
                Some(Value::Seq(files)) => {
                    for file in files {
                        let mut map = location.map.clone();
                        let key_span = location
                            .map
                            .entry("file")
                            .map(|e| e.key_span)
                            .unwrap_or(span);
                        map.insert("file", key_span, file);
                        expanded.push(Location { map, span });
                    }
                }
                _ => expanded.push(location),
            }
        } else if let Some(local) = location
            .map
            .get("local")
            .and_then(Node::as_str)
            .filter(|l| l.contains('*'))
        {
            let pattern = local.trim_start_matches('/').to_string();
            let local_span = location.map.get("local").map(|n| n.span).unwrap_or(span);
            match scope {
                Scope::Main => {
                    let files = self.local_files().to_vec();
                    for path in files
                        .into_iter()
                        .filter(|p| wildcard_path_match(&pattern, p))
                    {
                        let mut map = Map::new();
                        map.insert("local", local_span, Node::str(path, local_span));
                        expanded.push(Location { map, span });
                    }
                }
                Scope::Project { project, .. } => {
                    self.error(
                        local_span,
                        format!("Local file `{local}` uses a wildcard inside a file of project `{project}`; gantry cannot list that project's files"),
                        "an exact path for includes inside another project",
                    );
                }
                Scope::Detached => {
                    self.error(
                        local_span,
                        format!("Local file `{local}` does not have project!"),
                        "`project:` with `file:` or `remote:` inside a remote file",
                    );
                }
            }
        } else {
            expanded.push(location);
        }
        for location in &mut expanded {
            for (key, entry) in location.map.iter_mut() {
                if key == "inputs" || key == "rules" {
                    continue;
                }
                expand_node_variables(&mut entry.value, self.vars);
            }
        }
        expanded
    }

    fn local_files(&mut self) -> &[String] {
        if self.local_files.is_none() {
            self.local_files = Some(self.fs.local_files());
        }
        self.local_files.as_deref().unwrap_or(&[])
    }

    /// Matcher, Verifier and fetching of one location.
    fn fetch(&mut self, location: Location, scope: &Scope, inputs: Option<&Node>) -> Option<Node> {
        let span = location.span;
        let present = |key: &str| location.map.get(key).is_some_and(is_present);
        let matching: Vec<&str> = KINDS
            .iter()
            .copied()
            .filter(|kind| match *kind {
                "project" => present("project") && present("file"),
                kind => present(kind),
            })
            .collect();
        let kind = match matching.as_slice() {
            [kind] => *kind,
            [] => {
                let json = serde_json::to_string(
                    &Node::new(Value::Map(location.map.clone()), span).to_json(),
                )
                .unwrap_or_default();
                self.errors.push(
                    Diagnostic::at(span, format!("`{json}` does not have a valid subkey for include. Valid subkeys are: `{}`", KINDS.join("`, `")))
                        .expected("exactly one of `local`, `project` (with `file`), `remote`, `template`, `component`, `artifact`"),
                );
                return None;
            }
            _ => {
                self.errors.push(
                    Diagnostic::at(
                        span,
                        format!(
                            "Each include must use only one of: `{}`",
                            KINDS.join("`, `")
                        ),
                    )
                    .expected("one kind of include per item"),
                );
                return None;
            }
        };

        // Verifier: every file counts, nested ones and duplicates included.
        self.count += 1;
        if self.count > MAX_INCLUDES {
            self.limit_reached = true;
            self.errors.push(
                Diagnostic::at(
                    span,
                    format!("Maximum of {MAX_INCLUDES} nested includes are allowed!"),
                )
                .expected(format!("at most {MAX_INCLUDES} included files in all")),
            );
            return None;
        }

        let value_node = location
            .map
            .get(if kind == "project" { "file" } else { kind })?;
        let value_span = value_node.span;
        let Some(value) = value_node
            .scalar_string()
            .filter(|_| matches!(value_node.value, Value::Str(_)))
        else {
            let shown = serde_json::to_string(&value_node.to_json()).unwrap_or_default();
            self.error(
                value_span,
                format!("Included file `{shown}` needs to be a string"),
                "a path or URL string",
            );
            return None;
        };
        match kind {
            "template" => {
                return self.read_and_expand(Target::Template(value), value_span, scope, inputs);
            }
            "component" => {
                let Some(component) = ComponentRef::parse(&value) else {
                    self.error(
                        value_span,
                        format!("`{value}` is not a component address"),
                        "`host/group/project/name@version`, e.g. `$CI_SERVER_FQDN/my-org/components/build@1.0.0`",
                    );
                    return None;
                };
                return self.read_and_expand(
                    Target::Component(component),
                    value_span,
                    scope,
                    inputs,
                );
            }
            "artifact" => {
                self.error(value_span, "Including configs from artifacts is only allowed when triggering child pipelines", "`artifact:` only under a job's `trigger:include`");
                return None;
            }
            _ => {}
        }
        if !has_yaml_extension(&value) {
            self.errors.push(
                Diagnostic::at(
                    value_span,
                    format!("Included file `{value}` does not have YAML extension!"),
                )
                .expected("a file name ending in .yml or .yaml"),
            );
            return None;
        }
        // GitLab reads local paths from the repository root as given: a
        // `./` prefix names no file there ("does not exist"), unlike `/`.
        if kind == "local" && value.starts_with("./") {
            self.error(
                value_span,
                format!("Local file `{value}` does not exist!"),
                &format!(
                    "a path from the repository root without `./`, such as `{}` or `/{}`",
                    value.trim_start_matches("./"),
                    value.trim_start_matches("./")
                ),
            );
            return None;
        }
        let target = match kind {
            "local" => Target::Local(value.trim_start_matches('/').to_string()),
            "remote" => {
                if !is_valid_url(&value) {
                    self.error(
                        value_span,
                        format!("Remote file `{value}` does not have a valid address!"),
                        "an http:// or https:// URL",
                    );
                    return None;
                }
                Target::Remote(value)
            }
            _ => {
                let project_node = location.map.get("project")?;
                let project = match &project_node.value {
                    Value::Str(s) => s.to_lowercase(),
                    // GitLab still takes the first of an array (deprecated).
                    Value::Seq(items) => items
                        .first()
                        .and_then(Node::scalar_string)
                        .unwrap_or_default()
                        .to_lowercase(),
                    _ => project_node.scalar_string().unwrap_or_default(),
                };
                let git_ref = location
                    .map
                    .get("ref")
                    .and_then(Node::scalar_string)
                    .filter(|r| !r.is_empty());
                Target::Project {
                    project,
                    git_ref,
                    file: value.trim_start_matches('/').to_string(),
                }
            }
        };
        self.read_and_expand(target, value_span, scope, inputs)
    }

    /// Reads a target, parses it, interpolates inputs and expands its own
    /// includes.
    fn read_and_expand(
        &mut self,
        target: Target,
        span: Span,
        scope: &Scope,
        inputs: Option<&Node>,
    ) -> Option<Node> {
        // Opening the target is its own frame: includes nest 150 deep.
        let Opened {
            key,
            name,
            read,
            site,
        } = self.open(target, span, scope)?;
        if let Some(pos) = self.stack.iter().position(|(k, _)| *k == key) {
            let mut chain: Vec<&str> = self.stack[pos..].iter().map(|(_, n)| n.as_str()).collect();
            chain.push(&name);
            let message = format!(
                "include cycle: {}",
                chain
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(" → ")
            );
            self.errors.push(
                Diagnostic::at(span, message)
                    .expected("includes that do not lead back to a file including them"),
            );
            return None;
        }
        let text = match read {
            Ok(text) => text,
            Err(message) => {
                self.error(
                    span,
                    message,
                    "a file that exists (local paths are relative to the project root)",
                );
                return None;
            }
        };
        if text.trim().is_empty() {
            self.error(
                span,
                format!("Included file `{name}` is empty!"),
                "a file holding jobs or keywords",
            );
            return None;
        }
        let id = self.sources.add(name.clone(), text);
        let doc = self.parse(id)?;
        let body = match (doc.header, inputs) {
            (Some(mut header), inputs) => {
                let external = self.spec_include_inputs(&header, &key.scope)?;
                add_spec_inputs(&mut header, external);
                let component = self.component_context(&header, site.as_ref(), &name, span)?;
                let site = InterpolationSite {
                    location: &name,
                    vars: self.vars,
                    include_span: Some(span),
                    component: &component,
                };
                interpolate(header, inputs, doc.body, &site, &mut self.errors)?
            }
            (None, Some(inputs)) if inputs.as_map().is_some_and(|m| !m.is_empty()) => {
                self.errors.push(
                    Diagnostic::at(inputs.span, format!("`{name}`: Given inputs not defined in the `spec` section of the included configuration file"))
                        .expected("a `spec:inputs` header in the included file"),
                );
                return None;
            }
            (None, _) => doc.body,
        };
        if !matches!(body.value, Value::Map(_)) {
            self.errors.push(
                Diagnostic::at(
                    span,
                    format!("Included file `{name}` does not have valid YAML syntax!"),
                )
                .expected("a file holding a hash of jobs and keywords"),
            );
            return None;
        }
        let nested_scope = key.scope.clone();
        self.stack.push((key, name));
        let merged = self.expand_includes(body, &nested_scope);
        self.stack.pop();
        Some(merged)
    }

    /// The identity, display name and text of an include target.
    #[inline(never)]
    fn open(&mut self, target: Target, span: Span, scope: &Scope) -> Option<Opened> {
        let mut site = None;
        let opened = match target {
            Target::Local(path) => match scope {
                Scope::Main => {
                    let read = self.fs.read_local(&path).map_err(|e| match e {
                        ReadError::NotFound(_) => format!("Local file `{path}` does not exist!"),
                        other => format!("Local file `{path}` could not be read: {other}"),
                    });
                    (
                        FileKey {
                            scope: Scope::Main,
                            path: path.clone(),
                        },
                        path.clone(),
                        read,
                    )
                }
                Scope::Project { project, git_ref } => {
                    let read = self
                        .fs
                        .read_project(project, git_ref.as_deref(), &path)
                        .map_err(|e| {
                            format!("Project `{project}` file `{path}` does not exist! ({e})")
                        });
                    (
                        FileKey {
                            scope: scope.clone(),
                            path: path.clone(),
                        },
                        project_file_name(project, git_ref.as_deref(), &path),
                        read,
                    )
                }
                Scope::Detached => {
                    self.error(
                        span,
                        format!("Local file `{path}` does not have project!"),
                        "`project:` with `file:` or `remote:` inside a remote file",
                    );
                    return None;
                }
            },
            Target::Project {
                project,
                git_ref,
                file,
            } => {
                let read = self
                    .fs
                    .read_project(&project, git_ref.as_deref(), &file)
                    .map_err(|e| {
                        format!("Project `{project}` file `{file}` could not be read: {e}")
                    });
                let name = project_file_name(&project, git_ref.as_deref(), &file);
                (
                    FileKey {
                        scope: Scope::Project { project, git_ref },
                        path: file,
                    },
                    name,
                    read,
                )
            }
            Target::Remote(url) => {
                let read = self
                    .fs
                    .read_remote(&url)
                    .map_err(|e| format!("Remote file `{url}` could not be fetched: {e}"));
                (
                    FileKey {
                        scope: Scope::Detached,
                        path: url.clone(),
                    },
                    url,
                    read,
                )
            }
            Target::Template(name) => {
                let read = self.fs.read_template(&name).map_err(|e| {
                    format!("Included file `{name}` (include:template) could not be read: {e}")
                });
                (
                    FileKey {
                        scope: Scope::Detached,
                        path: format!("template:{name}"),
                    },
                    format!("template:{name}"),
                    read,
                )
            }
            Target::Component(component) => {
                let name = component.address();
                let (scope, read, local) = match self.local_component(&component) {
                    // The project's own component at the pipeline's commit
                    // (how a component is tested in its repository): the
                    // working tree, no network.
                    Some(read) => (Scope::Main, read, true),
                    None => (
                        Scope::Project {
                            project: component.project.to_lowercase(),
                            git_ref: Some(component.version.clone()),
                        },
                        self.fs.read_component(&component),
                        false,
                    ),
                };
                let read = read.map_err(|e| format!("Component `{name}` could not be read: {e}"));
                site = Some(ComponentSite { component, local });
                (
                    FileKey {
                        scope,
                        path: name.clone(),
                    },
                    name,
                    read,
                )
            }
        };
        let (key, name, read) = opened;
        Some(Opened {
            key,
            name,
            read,
            site,
        })
    }

    /// The `$[[ component.* ]]` values a component's header declares in
    /// `spec:component`. `version` and `sha` are asked of the file source
    /// only when declared. `None` after reporting an error.
    fn component_context(
        &mut self,
        header: &Node,
        site: Option<&ComponentSite>,
        name: &str,
        span: Span,
    ) -> Option<ComponentContext> {
        let declared = match declared_component_fields(header) {
            Ok(fields) => fields,
            Err((at, message)) => {
                self.error(
                    at,
                    format!("`{name}`: {message}"),
                    "a list of `name`, `sha`, `version`, `reference`",
                );
                return None;
            }
        };
        let mut context = ComponentContext {
            declared,
            values: IndexMap::new(),
        };
        let Some(site) = site else {
            return Some(context);
        };
        let c = &site.component;
        context.values.insert("name".into(), Some(c.name.clone()));
        context
            .values
            .insert("reference".into(), Some(c.version.clone()));
        let wants_facts = context
            .declared
            .iter()
            .any(|f| f == "version" || f == "sha");
        if wants_facts {
            let facts = if site.local {
                Ok(ComponentFacts {
                    version: None,
                    sha: self.vars.get("CI_COMMIT_SHA").cloned(),
                })
            } else {
                self.fs.component_facts(c)
            };
            match facts {
                Ok(facts) => {
                    context.values.insert("version".into(), facts.version);
                    context.values.insert("sha".into(), facts.sha);
                }
                Err(e) => {
                    self.error(
                        span,
                        format!("Component `{name}`: its version and SHA could not be resolved: {e}"),
                        "a reachable GitLab instance (`--gitlab-url`, `GANTRY_GITLAB_URL`) or a cached copy",
                    );
                    return None;
                }
            }
        }
        Some(context)
    }

    /// `spec:include` (GitLab 18.6): files whose top-level `inputs:` are
    /// input specifications, merged in order; the file's own
    /// `spec:inputs` win over them. `None` after reporting an error.
    fn spec_include_inputs(&mut self, header: &Node, scope: &Scope) -> Option<Option<Map>> {
        let Some(include) = header
            .as_map()
            .and_then(|h| h.get("spec"))
            .and_then(Node::as_map)
            .and_then(|s| s.get("include"))
        else {
            return Some(None);
        };
        let items: Vec<Node> = match &include.value {
            Value::Seq(items) => items.clone(),
            Value::Map(_) => vec![include.clone()],
            _ => {
                self.error(
                    include.span,
                    "header:spec:include must be an array of includes",
                    "`- local: path`, `- remote: url` or `- project:` with `file:`",
                );
                return None;
            }
        };
        let mut merged = Map::new();
        for item in items {
            let Some(m) = item.as_map() else {
                self.error(
                    item.span,
                    "header:spec:include items must be hashes",
                    "`local:`, `remote:` or `project:` with `file:`",
                );
                return None;
            };
            let text = |key: &str| {
                m.get(key)
                    .and_then(Node::as_str)
                    .map(|v| expand_variables(v, self.vars))
            };
            let (name, read) = if let Some(local) = text("local") {
                let path = local.trim_start_matches('/').to_string();
                let read = match scope {
                    Scope::Main => self.fs.read_local(&path),
                    Scope::Project { project, git_ref } => {
                        self.fs.read_project(project, git_ref.as_deref(), &path)
                    }
                    Scope::Detached => Err(ReadError::Refused(format!(
                        "Local file `{path}` does not have project!"
                    ))),
                };
                (path, read)
            } else if let Some(url) = text("remote") {
                let read = self.fs.read_remote(&url);
                (url, read)
            } else if let (Some(project), Some(file)) = (text("project"), text("file")) {
                let git_ref = text("ref");
                let file = file.trim_start_matches('/').to_string();
                let project = project.to_lowercase();
                let read = self.fs.read_project(&project, git_ref.as_deref(), &file);
                (project_file_name(&project, git_ref.as_deref(), &file), read)
            } else {
                self.error(
                    item.span,
                    "header:spec:include items take `local`, `remote`, or `project` with `file`",
                    "`local: path`, `remote: url` or `project:` with `file:`",
                );
                return None;
            };
            let text = match read {
                Ok(text) => text,
                Err(e) => {
                    self.error(
                        item.span,
                        format!("inputs file `{name}` could not be read: {e}"),
                        "a file holding an `inputs:` hash",
                    );
                    return None;
                }
            };
            let id = self.sources.add(name.clone(), text);
            let doc = self.parse(id)?;
            match doc
                .body
                .as_map()
                .and_then(|b| b.get("inputs"))
                .map(|i| &i.value)
            {
                Some(Value::Map(inputs)) => {
                    for (k, e) in inputs.iter() {
                        merged.insert(k, e.key_span, e.value.clone());
                    }
                }
                _ => {
                    self.error(
                        item.span,
                        format!("inputs file `{name}` has no `inputs:` hash"),
                        "a file holding `inputs:` with input specifications",
                    );
                    return None;
                }
            }
        }
        Some(Some(merged))
    }

    /// A component of this very project at this pipeline's commit:
    /// `$CI_SERVER_FQDN/$CI_PROJECT_PATH/name@$CI_COMMIT_SHA` (or the
    /// ref name) reads `templates/` of the project itself.
    fn local_component(&mut self, c: &ComponentRef) -> Option<Result<String, ReadError>> {
        let var = |k: &str| self.vars.get(k).map(String::as_str).unwrap_or("");
        let same_host = c.host == var("CI_SERVER_FQDN") || c.host == var("CI_SERVER_HOST");
        let same_project = c.project.eq_ignore_ascii_case(var("CI_PROJECT_PATH"));
        let same_commit = !var("CI_COMMIT_SHA").is_empty()
            && (c.version == var("CI_COMMIT_SHA") || c.version == var("CI_COMMIT_REF_NAME"));
        if !(same_host && same_project && same_commit) {
            return None;
        }
        let paths = c.template_paths();
        Some(
            self.fs
                .read_local(&paths[0])
                .or_else(|_| self.fs.read_local(&paths[1]))
                .map_err(|_| {
                    ReadError::NotFound(format!(
                        "this project has neither `{}` nor `{}`",
                        paths[0], paths[1]
                    ))
                }),
        )
    }

    /// `include:rules`: the first rule whose clauses all match decides;
    /// `when: never` or no match excludes the include. `None` on errors.
    fn rules_pass(&mut self, rules: &Node) -> Option<bool> {
        let Some(list) = rules.as_seq() else {
            self.errors.push(
                Diagnostic::at(
                    rules.span,
                    "include:rules config should be an array of hashes",
                )
                .expected("a list of rules"),
            );
            return None;
        };
        let mut ok = true;
        for rule in list {
            let Some(map) = rule.as_map() else {
                self.errors.push(
                    Diagnostic::at(rule.span, "include:rules:rule config should be a hash")
                        .expected("a hash with `if`, `exists`, `changes`, `when`"),
                );
                ok = false;
                continue;
            };
            for (key, entry) in map.iter() {
                if !RULE_KEYS.contains(&key) {
                    self.errors.push(
                        Diagnostic::at(
                            entry.key_span,
                            format!("include:rules:rule config contains unknown keys: {key}"),
                        )
                        .expected(format!("one of: {}", RULE_KEYS.join(", "))),
                    );
                    ok = false;
                }
            }
            if let Some(when) = map.get("when")
                && !matches!(when.as_str(), Some("never" | "always"))
            {
                self.errors.push(
                    Diagnostic::at(when.span, "include:rules:rule when unknown value")
                        .expected("`never` or `always`"),
                );
                ok = false;
            }
            if let Some(cond) = map.get("if")
                && cond.as_str().is_none()
            {
                self.errors.push(
                    Diagnostic::at(cond.span, "include:rules:rule if should be a string")
                        .expected("an expression string"),
                );
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        for rule in list {
            let Some(map) = rule.as_map() else { continue };
            if self.rule_matches(map)? {
                return Some(map.get("when").and_then(Node::as_str) != Some("never"));
            }
        }
        Some(false)
    }

    fn rule_matches(&mut self, rule: &Map) -> Option<bool> {
        if let Some(cond) = rule.get("if").and_then(Node::as_str) {
            let vars = self.vars;
            if !crate::expr::evaluate(cond, &|name: &str| vars.get(name).cloned()) {
                return Some(false);
            }
        }
        if let Some(exists) = rule.get("exists") {
            let patterns: Vec<&Node> = match &exists.value {
                Value::Str(_) => vec![exists],
                Value::Seq(items) => items.iter().collect(),
                Value::Map(m) => m
                    .get("paths")
                    .and_then(Node::as_seq)
                    .map(|s| s.iter().collect())
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            let mut globs = Vec::new();
            for pattern in patterns {
                match pattern.as_str() {
                    Some(p) => globs.push(
                        expand_existing_variables(p, self.vars)
                            .trim_start_matches('/')
                            .to_string(),
                    ),
                    None => {
                        self.errors.push(
                            Diagnostic::at(
                                pattern.span,
                                "include:rules:rule exists should be an array of strings",
                            )
                            .expected("file paths or globs"),
                        );
                        return None;
                    }
                }
            }
            let files = self.local_files();
            let found = globs.iter().any(|glob| {
                if crate::fnmatch::is_glob(glob) {
                    files.iter().any(|f| crate::fnmatch::fnmatch(glob, f))
                } else {
                    files.iter().any(|f| f == glob)
                }
            });
            if !found {
                return Some(false);
            }
        }
        // `changes`: without a diff to compare (the case before a pipeline
        // exists), GitLab treats changes as matching.
        Some(true)
    }
}

/// Puts `spec:include` input specifications under the header's
/// `spec:inputs`, the header's own ones winning.
fn add_spec_inputs(header: &mut Node, external: Option<Map>) {
    let Some(mut merged) = external else { return };
    let span = header.span;
    let Some(spec) = header.as_map_mut().and_then(|h| h.get_mut("spec")) else {
        return;
    };
    let Some(spec) = spec.as_map_mut() else {
        return;
    };
    if let Some(own) = spec.get("inputs").and_then(Node::as_map) {
        for (k, e) in own.iter() {
            merged.insert(k, e.key_span, e.value.clone());
        }
    }
    spec.insert("inputs", span, Node::new(Value::Map(merged), span));
}

fn project_file_name(project: &str, git_ref: Option<&str>, path: &str) -> String {
    match git_ref {
        Some(r) => format!("{project}@{r}:{path}"),
        None => format!("{project}:{path}"),
    }
}

/// Ruby's `present?` for an include value: not nil, not blank.
fn is_present(node: &Node) -> bool {
    match &node.value {
        Value::Null => false,
        Value::Str(s) => !s.trim().is_empty(),
        Value::Seq(s) => !s.is_empty(),
        Value::Map(m) => !m.is_empty(),
        _ => true,
    }
}

/// `File::Base::YAML_ALLOWLIST_EXTENSION` on the base name.
fn has_yaml_extension(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    let lower = base.to_ascii_lowercase();
    (lower.ends_with(".yml") && lower.len() > 4) || (lower.ends_with(".yaml") && lower.len() > 5)
}

/// `Gitlab::UrlSanitizer.valid?`: a URL with an allowed scheme and a host.
pub fn is_valid_url(s: &str) -> bool {
    let s = s.trim();
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    let scheme_ok = ["http", "https", "ssh", "git"].contains(&scheme.to_ascii_lowercase().as_str());
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    scheme_ok && !host.is_empty() && !s.chars().any(char::is_whitespace)
}

/// `Repository#search_files_by_wildcard_path`: `**` matches anything,
/// `*` anything but `/`, the rest literally, anchored at both ends.
pub fn wildcard_path_match(pattern: &str, path: &str) -> bool {
    #[derive(Clone, Copy)]
    enum Tok {
        Lit(u8),
        Star,
        DoubleStar,
    }
    let bytes = pattern.as_bytes();
    let mut toks = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'*' {
            if bytes.get(i + 1) == Some(&b'*') {
                toks.push(Tok::DoubleStar);
                i += 2;
            } else {
                toks.push(Tok::Star);
                i += 1;
            }
        } else {
            toks.push(Tok::Lit(bytes[i]));
            i += 1;
        }
    }
    // Dynamic programming over (token, byte): linear in their product, so a
    // hostile pattern cannot backtrack exponentially.
    let text = path.as_bytes();
    let mut reach = vec![false; text.len() + 1];
    reach[0] = true;
    for tok in toks {
        let mut next = vec![false; text.len() + 1];
        match tok {
            Tok::Lit(c) => {
                for j in 0..text.len() {
                    if reach[j] && text[j] == c {
                        next[j + 1] = true;
                    }
                }
            }
            Tok::Star | Tok::DoubleStar => {
                let any = matches!(tok, Tok::DoubleStar);
                let mut on = false;
                for j in 0..=text.len() {
                    on = on || reach[j];
                    next[j] = on;
                    if j < text.len() && !any && text[j] == b'/' {
                        on = false;
                    }
                }
            }
        }
        reach = next;
    }
    reach[text.len()]
}

/// `ExpandVariables.expand`: unknown variables become empty.
fn expand_variables(s: &str, vars: &IndexMap<String, String>) -> String {
    crate::expand::expand(s, &|name: &str| vars.get(name).cloned())
}

/// `ExpandVariables.expand_existing`: unknown variables stay as written.
fn expand_existing_variables(s: &str, vars: &IndexMap<String, String>) -> String {
    crate::expand::expand_existing(s, &|name: &str| vars.get(name).cloned())
}

/// VariablesExpander on one value: strings, and strings inside arrays.
fn expand_node_variables(node: &mut Node, vars: &IndexMap<String, String>) {
    match &mut node.value {
        Value::Str(s) => *s = expand_variables(s, vars),
        Value::Seq(items) => {
            for item in items {
                if let Value::Str(s) = &mut item.value {
                    *s = expand_variables(s, vars);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// spec:inputs interpolation (lib/gitlab/ci/config/yaml/interpolator.rb,
// lib/gitlab/ci/config/interpolation/*).

const SPEC_KEYS: &[&str] = &["inputs", "include", "component", "description"];

/// The fields `spec:component` may declare.
const COMPONENT_FIELDS: &[&str] = &["name", "sha", "version", "reference"];

/// An include target, read: its identity, display name, text (or why
/// not), and where it came from when it is a component.
struct Opened {
    key: FileKey,
    name: String,
    read: Result<String, String>,
    site: Option<ComponentSite>,
}

/// Where a component include was read from.
struct ComponentSite {
    component: ComponentRef,
    /// This project's own component at the pipeline's commit.
    local: bool,
}

/// `$[[ component.* ]]` for one file: the fields its `spec:component`
/// declares, and their values when the file is a component.
struct ComponentContext {
    declared: Vec<String>,
    /// Field to value; `None` is GitLab's `nil` (e.g. `version` of a branch).
    values: IndexMap<String, Option<String>>,
}

impl ComponentContext {
    /// A declared field's value; `None` when the field is not available,
    /// which GitLab reports as an unknown interpolation.
    fn get(&self, field: &str) -> Option<&Option<String>> {
        if !self.declared.iter().any(|d| d == field) {
            return None;
        }
        self.values.get(field)
    }
}

/// `spec:component`: an array of known field names.
fn declared_component_fields(header: &Node) -> Result<Vec<String>, (Span, String)> {
    let Some(node) = header
        .as_map()
        .and_then(|h| h.get("spec"))
        .and_then(Node::as_map)
        .and_then(|s| s.get("component"))
    else {
        return Ok(Vec::new());
    };
    let items = match &node.value {
        Value::Seq(items) => items,
        Value::Null => return Ok(Vec::new()),
        _ => {
            return Err((
                node.span,
                "header:spec:component config should be an array of strings".into(),
            ));
        }
    };
    let mut fields = Vec::new();
    for item in items {
        match item.as_str() {
            Some(field) if COMPONENT_FIELDS.contains(&field) => fields.push(field.to_string()),
            Some(field) => {
                return Err((
                    item.span,
                    format!(
                        "header:spec:component config contains unknown values: {field} (allowed: {})",
                        COMPONENT_FIELDS.join(", ")
                    ),
                ));
            }
            None => {
                return Err((
                    item.span,
                    "header:spec:component config should be an array of strings".into(),
                ));
            }
        }
    }
    Ok(fields)
}
const INPUT_KEYS: &[&str] = &[
    "default",
    "type",
    "description",
    "options",
    "regex",
    "rules",
];

fn block_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // Interpolation::Template::BLOCK_PATTERN
    RE.get_or_init(|| {
        Regex::new(r"\$\[\[\s*(\S.*?\S)\s*\]\]").unwrap_or_else(|_| unreachable!("constant regex"))
    })
}

/// Where a file with a `spec:` header is interpolated.
#[derive(Clone, Copy)]
struct InterpolationSite<'a> {
    /// The file's display name, for errors.
    location: &'a str,
    vars: &'a IndexMap<String, String>,
    /// The include item, for errors about given inputs (`None` for the
    /// entry file).
    include_span: Option<Span>,
    component: &'a ComponentContext,
}

/// Applies a header's `spec:inputs` to the body: values from `given` (the
/// include's `inputs:`) or the defaults, type-checked, then every
/// `$[[ inputs.name ]]` and `$[[ component.field ]]` block replaced.
fn interpolate(
    header: Node,
    given: Option<&Node>,
    body: Node,
    site: &InterpolationSite<'_>,
    errors: &mut Vec<Diagnostic>,
) -> Option<Node> {
    let InterpolationSite {
        location,
        vars,
        include_span,
        component,
    } = *site;
    let before = errors.len();
    let mut push = |span: Span, message: String, expected: &str| {
        errors.push(
            Diagnostic::at(span, format!("`{location}`: {message}")).expected(expected.to_string()),
        );
    };
    let empty = Map::new();
    let spec = header.as_map().and_then(|h| h.get("spec"));
    if let Some(h) = header.as_map() {
        for (key, entry) in h.iter() {
            if key != "spec" {
                push(
                    entry.key_span,
                    format!("header config contains unknown keys: {key}"),
                    "only `spec:` in the header document",
                );
            }
        }
    }
    let spec_map = match spec {
        Some(Node {
            value: Value::Map(m),
            ..
        }) => m,
        Some(Node {
            value: Value::Null, ..
        })
        | None => &empty,
        Some(other) => {
            push(
                other.span,
                "header:spec config must be a hash".into(),
                "a hash with `inputs:`",
            );
            return None;
        }
    };
    for (key, entry) in spec_map.iter() {
        if !SPEC_KEYS.contains(&key) {
            push(
                entry.key_span,
                format!("header:spec config contains unknown keys: {key}"),
                "`inputs`",
            );
        }
    }
    let specs = match spec_map.get("inputs") {
        Some(Node {
            value: Value::Map(m),
            ..
        }) => m,
        Some(Node {
            value: Value::Null, ..
        })
        | None => &empty,
        Some(other) => {
            push(
                other.span,
                "header:spec:inputs config must be a hash".into(),
                "a hash of input names to their specification",
            );
            return None;
        }
    };
    let given_map = given.and_then(Node::as_map).unwrap_or(&empty);
    let given_span = given
        .map(|g| g.span)
        .or(include_span)
        .unwrap_or(header.span);
    let unknown: Vec<&str> = given_map
        .keys()
        .filter(|k| !specs.contains_key(k))
        .collect();
    if !unknown.is_empty() {
        push(
            given_span,
            format!("unknown input arguments: {}", unknown.join(", ")),
            "inputs declared in the file's `spec:inputs`",
        );
    }
    let mut values: IndexMap<String, Node> = IndexMap::new();
    for (name, entry) in specs.iter() {
        let spec = &entry.value;
        let spec_map = match &spec.value {
            Value::Map(m) => m,
            Value::Null => &empty,
            _ => {
                push(
                    spec.span,
                    format!("`{name}` input: the specification must be a hash"),
                    "`default`, `type`, `options`, `regex`, `description`",
                );
                continue;
            }
        };
        for (key, e) in spec_map.iter() {
            if !INPUT_KEYS.contains(&key) {
                push(
                    e.key_span,
                    format!("`{name}` input: unknown key `{key}`"),
                    "`default`, `type`, `options`, `regex`, `description`",
                );
            }
        }
        let kind = spec_map
            .get("type")
            .and_then(Node::as_str)
            .unwrap_or("string");
        if !["string", "number", "boolean", "array"].contains(&kind) {
            push(
                spec.span,
                format!(
                    "unknown input specification for `{name}` (valid types: boolean, number, string, array)"
                ),
                "a known input type",
            );
            continue;
        }
        let type_ok = |n: &Node| match kind {
            "string" => matches!(n.value, Value::Str(_)),
            "number" => matches!(n.value, Value::Int(_) | Value::Float(_)),
            "boolean" => matches!(n.value, Value::Bool(_)),
            _ => matches!(n.value, Value::Seq(_)),
        };
        let provided = given_map.get(name).filter(|n| !n.is_null());
        let default = spec_map.get("default");
        let value = match (provided, default) {
            (Some(v), _) => {
                if !type_ok(v) {
                    push(
                        v.span,
                        format!("`{name}` input: provided value is not a {kind}"),
                        kind,
                    );
                    continue;
                }
                v.clone()
            }
            (None, Some(d)) => {
                if !d.is_null() && !type_ok(d) {
                    push(
                        d.span,
                        format!("`{name}` input: default value is not a {kind}"),
                        kind,
                    );
                    continue;
                }
                d.clone()
            }
            (None, None) => {
                push(
                    given_span,
                    format!("`{name}` input: required value has not been provided"),
                    "a value for every input without a default",
                );
                continue;
            }
        };
        if let Some(options) = spec_map.get("options").and_then(Node::as_seq)
            && !value.is_null()
            && !options.iter().any(|o| o.to_json() == value.to_json())
        {
            let shown = value.scalar_string().unwrap_or_default();
            push(
                value.span,
                format!(
                    "`{name}` input: `{shown}` cannot be used because it is not in the list of allowed options"
                ),
                "one of the input's `options`",
            );
            continue;
        }
        if let Some(pattern) = spec_map.get("regex").and_then(Node::as_str)
            && let Some(text) = value.as_str()
        {
            match Regex::new(pattern) {
                Ok(re) if re.is_match(text) => {}
                Ok(_) => {
                    let which = if provided.is_some() {
                        "provided"
                    } else {
                        "default"
                    };
                    push(
                        value.span,
                        format!(
                            "`{name}` input: {which} value does not match required RegEx pattern"
                        ),
                        pattern,
                    );
                    continue;
                }
                Err(_) => {
                    push(
                        spec.span,
                        format!("`{name}` input: invalid regular expression"),
                        "a valid regular expression",
                    );
                    continue;
                }
            }
        }
        values.insert(name.to_string(), value);
    }
    if errors.len() > before {
        return None;
    }
    let mut interpolator = Interpolator {
        values: &values,
        component,
        vars,
        location,
        errors,
        blocks: 0,
    };
    let result = interpolator.node(body);
    if errors.len() > before {
        None
    } else {
        Some(result)
    }
}

struct Interpolator<'a> {
    values: &'a IndexMap<String, Node>,
    component: &'a ComponentContext,
    vars: &'a IndexMap<String, String>,
    location: &'a str,
    errors: &'a mut Vec<Diagnostic>,
    blocks: usize,
}

/// `Interpolation::Template::MAX_BLOCKS`
const MAX_BLOCKS: usize = 10_000;

impl Interpolator<'_> {
    fn node(&mut self, node: Node) -> Node {
        let span = node.span;
        match node.value {
            Value::Str(s) if s.contains("$[[") => self.string(s, span),
            Value::Seq(items) => Node::new(
                Value::Seq(items.into_iter().map(|n| self.node(n)).collect()),
                span,
            ),
            Value::Map(map) => {
                let mut out = Map::new();
                for (key, entry) in map.iter() {
                    let key = if key.contains("$[[") {
                        let k = self.string(key.to_string(), entry.key_span);
                        k.scalar_string().unwrap_or_default()
                    } else {
                        key.to_string()
                    };
                    let value = self.node(entry.value.clone());
                    out.insert(key, entry.key_span, value);
                }
                Node::new(Value::Map(out), span)
            }
            Value::Reference(items) => Node::new(
                Value::Reference(items.into_iter().map(|n| self.node(n)).collect()),
                span,
            ),
            other => Node::new(other, span),
        }
    }

    fn string(&mut self, s: String, span: Span) -> Node {
        let re = block_regex();
        // A string that is exactly one block takes the input's own type.
        if let Some(c) = re.captures(&s)
            && c.get(0)
                .is_some_and(|m| m.start() == 0 && m.end() == s.len())
        {
            let data = c.get(1).map(|m| m.as_str()).unwrap_or("");
            return match self.block(data, span) {
                Some(mut v) => {
                    v.span = span;
                    v
                }
                None => Node::str(s.clone(), span),
            };
        }
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        for c in re.captures_iter(&s) {
            let (Some(whole), Some(data)) = (c.get(0), c.get(1)) else {
                continue;
            };
            out.push_str(&s[last..whole.start()]);
            match self.block(data.as_str(), span) {
                Some(v) => out.push_str(&ruby_to_s(&v)),
                None => out.push_str(whole.as_str()),
            }
            last = whole.end();
        }
        out.push_str(&s[last..]);
        Node::str(out, span)
    }

    fn fail(&mut self, span: Span, message: String) {
        self.errors.push(
            Diagnostic::at(span, format!("`{}`: {message}", self.location))
                .expected("`$[[ inputs.name ]]` with a declared input"),
        );
    }

    /// One `$[[ access | function ... ]]` block.
    fn block(&mut self, data: &str, span: Span) -> Option<Node> {
        self.blocks += 1;
        if self.blocks > MAX_BLOCKS {
            if self.blocks == MAX_BLOCKS + 1 {
                self.fail(span, "too many interpolation blocks".into());
            }
            return None;
        }
        let mut parts = data.split('|').map(str::trim);
        let access = parts.next().unwrap_or("");
        let functions: Vec<&str> = parts.collect();
        // `matrix.*` is left for parallel:matrix (Block::SKIP_INTERPOLATION_CONTEXTS).
        if access.split('.').next() == Some("matrix") {
            return None;
        }
        let objects: Vec<&str> = access.splitn(5, '.').collect();
        if objects.len() <= 1 {
            self.fail(span, "invalid interpolation access pattern".into());
            return None;
        }
        if objects[0] == "component" {
            let field = objects[1];
            let value = match self.component.get(field) {
                Some(value) => value,
                None => {
                    self.fail(
                        span,
                        format!("unknown interpolation provided: `{field}` in `{access}`"),
                    );
                    return None;
                }
            };
            if objects.len() > 2 {
                self.fail(span, format!("unknown interpolation key: `{}`", objects[2]));
                return None;
            }
            let mut node = match value {
                Some(text) => Node::str(text.clone(), span),
                None => Node::new(Value::Null, span),
            };
            for &function in &functions {
                node = self.function(function, node, span)?;
            }
            return Some(node);
        }
        if objects[0] != "inputs" {
            self.fail(span, format!("unknown interpolation key: `{}`", objects[0]));
            return None;
        }
        let Some(mut value) = self.values.get(objects[1]).cloned() else {
            self.fail(span, format!("unknown interpolation key: `{}`", objects[1]));
            return None;
        };
        for key in &objects[2..] {
            match value.as_map().and_then(|m| m.get(key)).cloned() {
                Some(v) => value = v,
                None => {
                    self.fail(span, format!("unknown interpolation key: `{key}`"));
                    return None;
                }
            }
        }
        if functions.len() > 3 {
            self.fail(span, "too many functions in interpolation block".into());
            return None;
        }
        for function in functions {
            value = self.function(function, value, span)?;
        }
        Some(value)
    }

    fn function(&mut self, function: &str, value: Node, span: Span) -> Option<Node> {
        let Some(text) = value.as_str().map(str::to_string) else {
            self.fail(
                span,
                format!("invalid input type: {function} can only be used with string inputs"),
            );
            return None;
        };
        if function == "expand_vars" {
            return Some(Node::str(
                expand_existing_variables(&text, self.vars),
                value.span,
            ));
        }
        if function == "posix_escape" {
            return Some(Node::str(posix_escape(&text), value.span));
        }
        if let Some(args) = function
            .strip_prefix("truncate(")
            .and_then(|a| a.strip_suffix(')'))
        {
            let nums: Vec<Option<usize>> = args.split(',').map(|a| a.trim().parse().ok()).collect();
            if let [Some(offset), Some(length)] = nums.as_slice() {
                let out: String = text.chars().skip(*offset).take(*length).collect();
                return Some(Node::str(out, value.span));
            }
        }
        self.fail(span, format!("no function matching `{function}`: check that the function name, arguments, and types are correct"));
        None
    }
}

/// Ruby's `to_s` for an input value placed inside a string.
fn ruby_to_s(node: &Node) -> String {
    match &node.value {
        Value::Null => String::new(),
        Value::Seq(_) | Value::Map(_) | Value::Reference(_) => {
            serde_json::to_string(&node.to_json()).unwrap_or_default()
        }
        _ => node.scalar_string().unwrap_or_default(),
    }
}

/// `Shellwords.escape`.
fn posix_escape(s: &str) -> String {
    if s.is_empty() {
        return "''".into();
    }
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if c == '\n' {
            out.push_str("'\n'");
        } else if c.is_ascii_alphanumeric() || "_-.,:+/@".contains(c) || !c.is_ascii() {
            out.push(c);
        } else {
            out.push('\\');
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_paths_follow_gitlab() {
        assert!(wildcard_path_match("configs/*.yml", "configs/a.yml"));
        assert!(!wildcard_path_match("configs/*.yml", "configs/sub/a.yml"));
        assert!(wildcard_path_match("configs/**.yml", "configs/sub/a.yml"));
        assert!(wildcard_path_match("configs/**.yml", "configs/a.yml"));
        assert!(wildcard_path_match("configs/**/*.yml", "configs/sub/a.yml"));
        assert!(!wildcard_path_match("configs/**/*.yml", "configs/a.yml"));
        assert!(!wildcard_path_match("configs/*.yml", "other/configs/a.yml"));
        assert!(wildcard_path_match("*.yml", "a.yml"));
        assert!(!wildcard_path_match("*.yml", "a.yaml"));
        let long = "a".repeat(2000);
        assert!(!wildcard_path_match(&"*a".repeat(200), &format!("{long}b")));
    }

    #[test]
    fn variables_expand_like_expand_variables() {
        let mut vars = IndexMap::new();
        vars.insert("A".to_string(), "x".to_string());
        assert_eq!(expand_variables("$A/${A}/%A%/$B", &vars), "x/x/x/");
        assert_eq!(expand_existing_variables("$A/$B", &vars), "x/$B");
    }

    #[test]
    fn urls_and_extensions() {
        assert!(is_valid_url("https://example.com/a.yml"));
        assert!(!is_valid_url("templates/a.yml"));
        assert!(!is_valid_url("https:///a.yml"));
        assert!(has_yaml_extension("a/b.YML"));
        assert!(has_yaml_extension("b.yaml"));
        assert!(!has_yaml_extension("b.json"));
        assert!(!has_yaml_extension(".yml"));
    }

    #[test]
    fn posix_escape_quotes_specials() {
        assert_eq!(posix_escape("a b"), "a\\ b");
        assert_eq!(posix_escape(""), "''");
        assert_eq!(posix_escape("x$y"), "x\\$y");
    }
}
