//! The variables a trigger job passes down, as GitLab's
//! `Gitlab::Ci::Variables::Downstream::Generator` makes them: its YAML
//! variables expanded upstream against what the trigger job sees
//! (`Ci::Bridge#variables`), and the upstream pipeline variables with
//! `forward:pipeline_variables`.

use super::trigger_of;
use crate::app::Shared;
use crate::error::StoreError;
use crate::store::{Job, Pipeline, Project};

/// The trigger job of a child pipeline with its YAML variables expanded
/// upstream, as GitLab passes them down (`PARENT_PIPELINE_ID:
/// $CI_PIPELINE_ID` is the parent's id; `$X` from a dotenv report of a
/// needed job is its value). References to masked variables stay as
/// written: the child, in the same project, expands and masks them itself.
pub(super) async fn child_spec(
    app: &Shared,
    project: &Project,
    pipeline: &Pipeline,
    job: &Job,
    spec: &gantry_config::model::Job,
) -> Result<gantry_config::model::Job, BridgeVariablesError> {
    let mut spec = spec.clone();
    if spec
        .variables
        .iter()
        .all(|v| !v.expand || !v.value.contains(['$', '%']))
    {
        return Ok(spec);
    }
    let bridge = bridge_variables(app, project, pipeline, job, &spec).await?;
    for v in spec.variables.iter_mut().filter(|v| v.expand) {
        v.value =
            gantry_config::expand::expand_existing(&v.value, &|n| bridge.unmasked.get(n).cloned());
    }
    Ok(spec)
}

/// The variables a trigger job sees upstream (GitLab's `bridge.variables`):
/// predefined, YAML, instance and project (protected ones only on a
/// protected ref), pipeline variables; each expanded.
pub(super) struct BridgeVariables {
    pub(super) values: indexmap::IndexMap<String, String>,
    /// The same without the upstream project's protected variables (what
    /// another project's pipeline on a protected ref may see).
    pub(super) cross_project: indexmap::IndexMap<String, String>,
    /// The same without any protected variable (what a downstream ref that
    /// is not protected may see).
    pub(super) unprotected: indexmap::IndexMap<String, String>,
    /// The same with references to masked variables kept as written.
    pub(super) unmasked: indexmap::IndexMap<String, String>,
    /// Values of masked upstream variables.
    pub(super) masked: Vec<String>,
}

/// Why the upstream variables of a trigger job could not be worked out.
#[derive(Debug, thiserror::Error)]
pub(super) enum BridgeVariablesError {
    #[error("the upstream repository: {0}")]
    Repo(#[from] crate::repos::RepoError),
    #[error("the upstream commit: {0}")]
    Plan(#[from] crate::planning::PlanError),
    #[error("the planning task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the trigger job's variables: {0}")]
    Expand(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(super) async fn bridge_variables(
    app: &Shared,
    project: &Project,
    pipeline: &Pipeline,
    job: &Job,
    spec: &gantry_config::model::Job,
) -> Result<BridgeVariables, BridgeVariablesError> {
    use gantry_config::model::Variable;
    // Another server may have created this pipeline: its mirror may lack the commit.
    let mirror = app
        .repos
        .ensure(project.id, &project.source_url, Some(&pipeline.sha))
        .await?;
    let trigger = trigger_of(app, project, pipeline).await?;
    let context =
        tokio::task::spawn_blocking(move || crate::planning::context(&mirror, &trigger)).await??;
    // Predefined < YAML < dotenv of dependencies < instance < project <
    // pipeline variables.
    let mut ci_variables = Vec::new();
    let mut masked = Vec::new();
    for scope in [0, project.id] {
        for v in app.store.variables(scope).await? {
            if v.protected && pipeline.protected == 0 {
                continue;
            }
            if v.masked && !v.value.is_empty() {
                masked.push(v.value.clone());
            }
            // (instance or project scope, protected)
            let kind = (scope != 0, v.protected);
            let var = Variable {
                expand: !v.raw,
                file: v.variable_type == "file",
                masked: v.masked,
                ..Variable::new(&v.key, &v.value)
            };
            ci_variables.push((kind, var));
        }
    }
    let pipeline_vars: Vec<(String, String)> =
        serde_json::from_str(&pipeline.variables).unwrap_or_default();
    let dotenv = dependency_dotenv(app, pipeline, spec).await?;
    // The trigger job's own predefined variables (the planning context
    // knows the commit, not the stored pipeline and job).
    let pipeline_url = format!("{}/{}/-/pipelines/{}", app.url, project.path, pipeline.id);
    let job_predefined = [
        ("CI_PIPELINE_ID", pipeline.id.to_string()),
        ("CI_PIPELINE_IID", pipeline.iid.to_string()),
        ("CI_PIPELINE_URL", pipeline_url),
        (
            "CI_PIPELINE_CREATED_AT",
            crate::api::gitlab::iso(pipeline.created_at),
        ),
        ("CI_JOB_ID", job.id.to_string()),
        ("CI_JOB_NAME", job.name.clone()),
        (
            "CI_JOB_NAME_SLUG",
            gantry_config::context::slugify(&job.name),
        ),
        ("CI_JOB_STAGE", job.stage.clone()),
        (
            "CI_JOB_URL",
            format!("{}/{}/-/jobs/{}", app.url, project.path, job.id),
        ),
    ];
    // Which instance and project variables take part: `keep(in_project,
    // protected, masked)`.
    let expanded = |keep: &dyn Fn(bool, bool, bool) -> bool| {
        let mut set = gantry_engine::vars::VarSet::new();
        for (k, v) in &context.variables {
            set.set(k, v.clone());
        }
        for (k, v) in &job_predefined {
            set.set(k, v.clone());
        }
        set.extend(&spec.variables);
        for (k, v) in &dotenv {
            set.set(k, v.clone());
        }
        for ((in_project, protected), var) in &ci_variables {
            if keep(*in_project, *protected, var.masked) {
                set.push(var.clone());
            }
        }
        for (k, v) in &pipeline_vars {
            set.set(k, v.clone());
        }
        let list: Vec<Variable> = set.iter().cloned().collect();
        gantry_config::expand::expand_all(&list, &|_| None)
    };
    let values = expanded(&|_, _, _| true).map_err(BridgeVariablesError::Expand)?;
    // GitLab (`exclude_protected_variables_from_multi_project_pipeline_triggers`):
    // another project's pipeline never gets the protected project variables.
    let cross_project = expanded(&|in_project, protected, _| !(in_project && protected))
        .map_err(BridgeVariablesError::Expand)?;
    let unprotected =
        expanded(&|_, protected, _| !protected).map_err(BridgeVariablesError::Expand)?;
    let unmasked = expanded(&|_, _, masked| !masked).map_err(BridgeVariablesError::Expand)?;
    Ok(BridgeVariables {
        values,
        cross_project,
        unprotected,
        unmasked,
        masked,
    })
}

/// The `reports:dotenv` variables of the jobs the trigger job depends on
/// (`needs`/`dependencies`), as a runner's job receives them: GitLab's way
/// to pass a value an upstream job computed to a downstream pipeline.
async fn dependency_dotenv(
    app: &Shared,
    pipeline: &Pipeline,
    spec: &gantry_config::model::Job,
) -> Result<Vec<(String, String)>, StoreError> {
    if spec.dependencies.is_empty() {
        return Ok(Vec::new());
    }
    let jobs = app.store.pipeline_jobs(pipeline.id, false).await?;
    let mut out = Vec::new();
    for name in &spec.dependencies {
        let exact: Vec<&Job> = jobs.iter().filter(|j| &j.name == name).collect();
        let producers = if exact.is_empty() {
            jobs.iter()
                .filter(|j| crate::engine_bridge::spec(j).is_some_and(|s| &s.definition == name))
                .collect()
        } else {
            exact
        };
        for job in producers {
            if let Some(text) = &job.dotenv {
                let pairs: Vec<(String, String)> = serde_json::from_str(text).unwrap_or_default();
                out.extend(pairs);
            }
        }
    }
    Ok(out)
}

/// What a multi-project pipeline receives.
pub(super) struct Forwarded {
    pub(super) variables: Vec<(String, String)>,
    /// One line per variable not passed on, saying why.
    pub(super) withheld: Vec<String>,
}

/// GitLab's `Ci::Bridge#downstream_variables`: the trigger job's YAML
/// variables (unless `forward:yaml_variables: false`) expanded with the
/// bridge's variables, then (with `forward:pipeline_variables: true`) the
/// upstream pipeline variables, which win. A value holding a masked
/// upstream variable is withheld: downstream pipeline variables are stored
/// and shown unmasked. One referring to a protected upstream variable is
/// withheld unless the downstream ref is protected as well.
pub(super) fn downstream_variables(
    bridge: &BridgeVariables,
    spec: &gantry_config::model::Job,
    upstream: &Pipeline,
    downstream_protected: bool,
) -> Forwarded {
    let forward = spec.trigger.as_ref().and_then(|t| t.get("forward"));
    let flag = |key: &str, default: bool| {
        forward
            .and_then(|f| f.get(key))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(default)
    };
    let mut out = Forwarded {
        variables: Vec::new(),
        withheld: Vec::new(),
    };
    let put = |out: &mut Forwarded, key: &str, value: String| {
        out.variables.retain(|(k, _)| k != key);
        out.variables.push((key.to_string(), value));
    };
    if flag("yaml_variables", true) {
        for v in &spec.variables {
            if !v.expand {
                put(&mut out, &v.name, v.value.clone());
                continue;
            }
            let allowed = if downstream_protected {
                &bridge.cross_project
            } else {
                &bridge.unprotected
            };
            let value = gantry_config::expand::expand(&v.value, &|n| allowed.get(n).cloned());
            if value != gantry_config::expand::expand(&v.value, &|n| bridge.values.get(n).cloned())
            {
                out.withheld.push(format!(
                    "WARNING: variable {} is not passed downstream: it uses a protected \
                     variable (the upstream project's are never given to another project, \
                     protected instance variables only to a protected ref)",
                    v.name
                ));
                continue;
            }
            if bridge.masked.iter().any(|m| value.contains(m.as_str())) {
                out.withheld.push(format!(
                    "WARNING: variable {} is not passed downstream: it holds a masked \
                     variable's value, which downstream pipeline variables would show unmasked",
                    v.name
                ));
                continue;
            }
            put(&mut out, &v.name, value);
        }
    }
    if flag("pipeline_variables", false) {
        let pipeline_vars: Vec<(String, String)> =
            serde_json::from_str(&upstream.variables).unwrap_or_default();
        for (k, v) in pipeline_vars {
            put(&mut out, &k, v);
        }
    }
    out
}
