//! The typed model. [`Config`] is a validated configuration before any
//! context is applied (what `gantry lint` checks); [`Pipeline`] is what
//! GitLab would create for one context (what `gantry plan` prints and
//! `gantry run` executes).

use crate::source::Span;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

pub type Json = serde_json::Value;

/// `when:` values. `Never` only appears inside rules and workflow rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum When {
    #[default]
    OnSuccess,
    OnFailure,
    Always,
    Manual,
    Delayed,
    Never,
}

impl When {
    pub fn parse(s: &str) -> Option<When> {
        Some(match s {
            "on_success" => When::OnSuccess,
            "on_failure" => When::OnFailure,
            "always" => When::Always,
            "manual" => When::Manual,
            "delayed" => When::Delayed,
            "never" => When::Never,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            When::OnSuccess => "on_success",
            When::OnFailure => "on_failure",
            When::Always => "always",
            When::Manual => "manual",
            When::Delayed => "delayed",
            When::Never => "never",
        }
    }
}

/// A YAML-defined variable (`variables:`), or one given on the command line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    pub name: String,
    pub value: String,
    /// `expand: false` makes the value raw: `$X` inside it is never expanded.
    #[serde(default = "yes")]
    pub expand: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// File-type variable: the job sees a path to a file holding the value.
    #[serde(default, skip_serializing_if = "is_false")]
    pub file: bool,
    /// Masked values are replaced by `[MASKED]` in every log line.
    #[serde(default, skip_serializing_if = "is_false")]
    pub masked: bool,
}

impl Variable {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Variable {
            name: name.into(),
            value: value.into(),
            expand: true,
            description: None,
            options: Vec::new(),
            file: false,
            masked: false,
        }
    }
}

fn yes() -> bool {
    true
}
fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_policy: Vec<String>,
    /// `docker: {platform, user}`, carried as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<Json>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_policy: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<Json>,
}

/// `allow_failure:` as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AllowFailure {
    Bool(bool),
    ExitCodes { exit_codes: Vec<i32> },
}

/// `changes:` of a rule or of only/except.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Changes {
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare_to: Option<String>,
}

/// `exists:` of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Exists {
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
}

/// One entry of `rules:` (job, workflow or include rules).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Rule {
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub if_expr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<Exists>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_in: Option<StartIn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_failure: Option<AllowFailure>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<Need>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interruptible: Option<bool>,
    /// workflow:rules only: `auto_cancel`, carried as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_cancel: Option<Json>,
    /// Where the rule starts, to say which rule decided.
    #[serde(skip)]
    pub span: Option<Span>,
}

/// `only:` / `except:` in their normalised (hash) form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<String>,
}

/// A `parallel:matrix` entry: variable name to the values it takes.
pub type MatrixEntry = IndexMap<String, Vec<String>>;

/// One entry of `needs:` as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Need {
    pub job: String,
    #[serde(default = "yes")]
    pub artifacts: bool,
    #[serde(default)]
    pub optional: bool,
    /// `parallel: {matrix: [...]}` selecting some instances of a parallel job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<Vec<MatrixEntry>>,
    /// Cross-pipeline or cross-project needs: carried, not resolved locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ref")]
    pub git_ref: Option<String>,
    #[serde(skip)]
    pub span: Option<Span>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parallel {
    Count(u32),
    Matrix(Vec<MatrixEntry>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_stop: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_stop_in: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Json>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Retry {
    /// 0..=2
    pub max: u32,
    /// Failure kinds that allow a retry; empty means `always`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<i32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactsWhen {
    #[default]
    OnSuccess,
    OnFailure,
    Always,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Artifacts {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub untracked: bool,
    #[serde(default)]
    pub when: ArtifactsWhen,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_in: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_as: Option<String>,
    /// `reports:` kind (`dotenv`, `junit`, ...) to its paths.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub reports: IndexMap<String, Vec<String>>,
    /// Other keys (`public`, `access`), carried as given.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub extra: IndexMap<String, Json>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CacheKey {
    Literal(String),
    Files {
        files: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
    },
}

impl Default for CacheKey {
    fn default() -> Self {
        CacheKey::Literal("default".into())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CachePolicy {
    #[serde(rename = "pull")]
    Pull,
    #[serde(rename = "push")]
    Push,
    #[default]
    #[serde(rename = "pull-push")]
    PullPush,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cache {
    #[serde(default)]
    pub key: CacheKey,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default)]
    pub untracked: bool,
    #[serde(default)]
    pub policy: CachePolicy,
    #[serde(default)]
    pub when: ArtifactsWhen,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_keys: Vec<String>,
    #[serde(default)]
    pub unprotect: bool,
}

/// A job as defined in the configuration after includes, extends,
/// `!reference`, `default:` and `inherit:` have been applied, and before
/// any context (rules, parallel expansion) is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct JobDef {
    pub name: String,
    pub stage: String,
    /// `script` flattened to lines; empty for trigger jobs.
    pub script: Vec<String>,
    pub before_script: Vec<String>,
    pub after_script: Vec<String>,
    pub image: Option<Image>,
    pub services: Vec<Service>,
    /// Global variables (filtered by `inherit:variables`) then job variables.
    pub variables: Vec<Variable>,
    /// Names of the variables the job set itself (its own `variables:`,
    /// after `extends` and `!reference`): `workflow:rules:variables`
    /// replace every other one, never these.
    pub own_variables: Vec<String>,
    /// `inherit:variables`: which global (and workflow) variables reach
    /// the job.
    pub inherit_variables: Inheritance,
    /// `when:` as written (`None` = default on_success).
    pub when: Option<When>,
    pub start_in: Option<StartIn>,
    pub allow_failure: Option<AllowFailure>,
    pub rules: Option<Vec<Rule>>,
    pub only: Option<Policy>,
    pub except: Option<Policy>,
    pub needs: Option<Vec<Need>>,
    pub dependencies: Option<Vec<String>>,
    pub parallel: Option<Parallel>,
    pub environment: Option<Environment>,
    pub retry: Option<Retry>,
    /// Seconds.
    pub timeout: Option<u64>,
    pub resource_group: Option<String>,
    pub interruptible: Option<bool>,
    pub artifacts: Option<Artifacts>,
    pub cache: Vec<Cache>,
    pub tags: Vec<String>,
    pub coverage: Option<String>,
    /// `trigger:` of a bridge job, carried as given.
    pub trigger: Option<Json>,
    /// Every other keyword (`secrets`, `id_tokens`, `release`, `pages`,
    /// `hooks`, `identity`, `dast_configuration`, ...), validated and carried.
    pub extra: IndexMap<String, Json>,
    #[serde(skip)]
    pub span: Option<Span>,
}

/// `inherit:variables` (and `inherit:default`): all, none, or the listed names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Inheritance {
    #[default]
    All,
    None,
    Only(Vec<String>),
}

impl Inheritance {
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Inheritance::All => true,
            Inheritance::None => false,
            Inheritance::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

/// `workflow:`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Workflow {
    pub name: Option<String>,
    pub rules: Option<Vec<Rule>>,
    pub auto_cancel: Option<Json>,
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Config {
    /// `.pre`, the user's stages, `.post`.
    pub stages: Vec<String>,
    /// Global `variables:`.
    pub variables: Vec<Variable>,
    pub workflow: Workflow,
    /// Visible jobs (not hidden `.x` keys) in definition order.
    pub jobs: IndexMap<String, JobDef>,
}

/// Whether workflow rules let the pipeline be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineStatus {
    Created,
    Filtered,
}

/// A resolved need of a planned job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobNeed {
    pub job: String,
    pub artifacts: bool,
    pub optional: bool,
}

/// `start_in:`, parsed once when the file is read (lint reports a bad one
/// with its position): the seconds an engine waits, and the text as
/// written, for display.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartIn {
    pub seconds: u64,
    pub text: String,
}

impl StartIn {
    /// A delay given in seconds (no text to keep).
    pub fn from_seconds(seconds: u64) -> StartIn {
        StartIn {
            seconds,
            text: format!("{seconds} seconds"),
        }
    }
}

impl std::fmt::Display for StartIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A job of a planned pipeline: one instance (parallel jobs are expanded),
/// with rules applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Instance name: `build`, `test 1/3`, `deploy: [aws, eu]`.
    pub name: String,
    /// The job's key in the YAML (same as `name` unless parallel).
    pub definition: String,
    pub stage: String,
    pub when: When,
    pub start_in: Option<StartIn>,
    pub allow_failure: bool,
    /// `allow_failure: {exit_codes}`: failures with these codes are allowed.
    pub allow_failure_exit_codes: Vec<i32>,
    /// `None`: stage ordering. `Some`: DAG, start when these finish.
    pub needs: Option<Vec<JobNeed>>,
    /// Jobs whose artifacts this job downloads, in order.
    pub dependencies: Vec<String>,
    pub script: Vec<String>,
    pub before_script: Vec<String>,
    pub after_script: Vec<String>,
    pub image: Option<Image>,
    pub services: Vec<Service>,
    /// The job's YAML variables after rules (global, job, rules, matrix).
    pub variables: Vec<Variable>,
    pub environment: Option<Environment>,
    pub retry: Retry,
    /// Seconds; `None` = the default (1 hour).
    pub timeout: Option<u64>,
    pub resource_group: Option<String>,
    pub interruptible: bool,
    pub artifacts: Option<Artifacts>,
    pub cache: Vec<Cache>,
    pub tags: Vec<String>,
    pub coverage: Option<String>,
    pub trigger: Option<Json>,
    /// 1-based instance of a parallel job, and the number of instances.
    pub node_index: Option<u32>,
    pub node_total: Option<u32>,
    pub extra: IndexMap<String, Json>,
}

/// A visible job that was not created, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedJob {
    pub name: String,
    pub reason: String,
}

/// What GitLab would create for one context.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub status: PipelineStatus,
    /// Why the pipeline was filtered, when it was.
    pub filtered_reason: Option<String>,
    /// `workflow:name`, expanded.
    pub name: Option<String>,
    /// Stages that have at least one job, in order (`.pre` first).
    pub stages: Vec<String>,
    pub jobs: Vec<Job>,
    pub skipped: Vec<SkippedJob>,
    /// Global YAML variables after workflow:rules:variables.
    pub variables: Vec<Variable>,
    /// Predefined pipeline variables of the context (`CI_*`), and `-v` ones.
    pub context_variables: Vec<Variable>,
}
