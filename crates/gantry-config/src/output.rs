//! What `gantry plan` prints: [`plan_json`] for `--json` (the fields the
//! issue lists, stable for scripts and snapshot tests) and [`plan_human`]
//! (plain text; colour is the CLI's business).

use crate::model::{Job, Pipeline, PipelineStatus, Variable};
use serde_json::{Map, Value, json};
use std::fmt::Write as _;

/// The pipeline as one JSON object: `status`, `name`, `filtered_reason`,
/// `stages`, `jobs[]`, `skipped[]` and the pipeline's global `variables`.
pub fn plan_json(p: &Pipeline) -> Value {
    json!({
        "status": status_str(p.status),
        "name": p.name,
        "filtered_reason": p.filtered_reason,
        "stages": p.stages,
        "jobs": p.jobs.iter().map(job_json).collect::<Vec<_>>(),
        "skipped": p.skipped.iter().map(|s| json!({"name": s.name, "reason": s.reason})).collect::<Vec<_>>(),
        "variables": variables_json(&p.variables),
    })
}

fn status_str(s: PipelineStatus) -> &'static str {
    match s {
        PipelineStatus::Created => "created",
        PipelineStatus::Filtered => "filtered",
    }
}

fn variables_json(vars: &[Variable]) -> Value {
    Value::Object(
        vars.iter()
            .map(|v| (v.name.clone(), Value::String(v.value.clone())))
            .collect::<Map<_, _>>(),
    )
}

/// Serialises a model value; the model types are plain data, so this does
/// not fail, and `null` stands in if it ever did.
fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn job_json(j: &Job) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), j.name.clone().into());
    o.insert("stage".into(), j.stage.clone().into());
    o.insert("when".into(), j.when.as_str().into());
    o.insert("allow_failure".into(), j.allow_failure.into());
    if !j.allow_failure_exit_codes.is_empty() {
        o.insert(
            "allow_failure_exit_codes".into(),
            to_json(&j.allow_failure_exit_codes),
        );
    }
    let needs = match &j.needs {
        None => Value::Null,
        Some(list) => Value::Array(list.iter().map(|n| Value::String(n.job.clone())).collect()),
    };
    o.insert("needs".into(), needs);
    o.insert("dependencies".into(), to_json(&j.dependencies));
    o.insert("script".into(), to_json(&j.script));
    o.insert("before_script".into(), to_json(&j.before_script));
    o.insert("after_script".into(), to_json(&j.after_script));
    o.insert("image".into(), to_json(&j.image));
    o.insert("services".into(), to_json(&j.services));
    o.insert("variables".into(), variables_json(&j.variables));
    o.insert("environment".into(), to_json(&j.environment));
    o.insert("start_in".into(), to_json(&j.start_in));
    o.insert("retry".into(), to_json(&j.retry));
    o.insert("timeout".into(), to_json(&j.timeout));
    o.insert("resource_group".into(), to_json(&j.resource_group));
    o.insert("interruptible".into(), j.interruptible.into());
    o.insert("artifacts".into(), to_json(&j.artifacts));
    o.insert("cache".into(), to_json(&j.cache));
    o.insert("tags".into(), to_json(&j.tags));
    Value::Object(o)
}

/// The pipeline for people:
///
/// ```text
/// stage build
///   compile                  when: on_success
/// stage test
///   unit 1/2                 when: on_success, needs: [compile]
///   lint                     when: manual, allow_failure: true
///
/// Not created:
///   docs                     rules: no rule matched
/// ```
pub fn plan_human(p: &Pipeline) -> String {
    let mut out = String::new();
    if let Some(name) = &p.name {
        let _ = writeln!(out, "Pipeline: {name}");
    }
    if p.status == PipelineStatus::Filtered {
        let reason = p.filtered_reason.as_deref().unwrap_or("filtered out");
        let _ = writeln!(out, "No pipeline: {reason}");
        let filtered_by_workflow = p
            .skipped
            .iter()
            .all(|s| s.reason.starts_with("pipeline filtered out by workflow"));
        if filtered_by_workflow {
            if !p.skipped.is_empty() {
                let _ = writeln!(out, "({} jobs not created)", p.skipped.len());
            }
            return out;
        }
    }
    let width = p
        .jobs
        .iter()
        .map(|j| j.name.chars().count())
        .chain(p.skipped.iter().map(|s| s.name.chars().count()))
        .max()
        .unwrap_or(0)
        .max(20);
    for stage in &p.stages {
        let _ = writeln!(out, "stage {stage}");
        for job in p.jobs.iter().filter(|j| &j.stage == stage) {
            let _ = writeln!(out, "  {:<width$}  {}", job.name, job_attributes(job));
        }
    }
    if !p.skipped.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str("Not created:\n");
        for s in &p.skipped {
            let _ = writeln!(out, "  {:<width$}  {}", s.name, s.reason);
        }
    }
    out
}

/// `when: manual, needs: [a, b], allow_failure: true`
fn job_attributes(job: &Job) -> String {
    let mut parts = Vec::new();
    match &job.start_in {
        Some(start_in) => parts.push(format!(
            "when: {} (start_in: {start_in})",
            job.when.as_str()
        )),
        None => parts.push(format!("when: {}", job.when.as_str())),
    }
    if let Some(needs) = &job.needs {
        let names: Vec<&str> = needs.iter().map(|n| n.job.as_str()).collect();
        parts.push(format!("needs: [{}]", names.join(", ")));
    }
    if job.allow_failure {
        parts.push("allow_failure: true".into());
    } else if !job.allow_failure_exit_codes.is_empty() {
        let codes: Vec<String> = job
            .allow_failure_exit_codes
            .iter()
            .map(|c| c.to_string())
            .collect();
        parts.push(format!("allow_failure: exit_codes [{}]", codes.join(", ")));
    }
    parts.join(", ")
}
