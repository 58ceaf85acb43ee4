//! What `gantry plan` prints: [`plan_json`] for `--json` (the fields the
//! issue lists, stable for scripts and snapshot tests) and [`plan_human`]
//! (plain text; colour is the CLI's business).

use crate::model::{Job, Pipeline, PipelineStatus, Variable};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use std::fmt::Write as _;

/// The pipeline as one JSON object: `status`, `name`, `filtered_reason`,
/// `stages`, `jobs[]`, `skipped[]` and the pipeline's global `variables`.
pub fn plan_json(p: &Pipeline) -> Value {
    serde_json::to_value(PlanJson(p)).unwrap_or(Value::Null)
}

/// The same object, serialised straight from the pipeline without building
/// a [`Value`] first (a 5,000-job plan is megabytes of JSON).
pub struct PlanJson<'a>(pub &'a Pipeline);

impl Serialize for PlanJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut m = ser.serialize_map(Some(7))?;
        m.serialize_entry("status", status_str(p.status))?;
        m.serialize_entry("name", &p.name)?;
        m.serialize_entry("filtered_reason", &p.filtered_reason)?;
        m.serialize_entry("stages", &p.stages)?;
        m.serialize_entry("jobs", &Seq(p.jobs.iter().map(JobJson)))?;
        m.serialize_entry(
            "skipped",
            &Seq(p.skipped.iter().map(|s| Skipped {
                name: &s.name,
                reason: &s.reason,
            })),
        )?;
        m.serialize_entry("variables", &Vars(&p.variables))?;
        m.end()
    }
}

fn status_str(s: PipelineStatus) -> &'static str {
    match s {
        PipelineStatus::Created => "created",
        PipelineStatus::Filtered => "filtered",
    }
}

/// Serialises an iterator as a JSON array, once.
struct Seq<I>(I);

impl<I: Iterator<Item = T> + Clone, T: Serialize> Serialize for Seq<I> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_seq(self.0.clone())
    }
}

#[derive(serde::Serialize)]
struct Skipped<'a> {
    name: &'a str,
    reason: &'a str,
}

/// Variables as one object, name to value.
struct Vars<'a>(&'a [Variable]);

impl Serialize for Vars<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_map(self.0.iter().map(|v| (&v.name, &v.value)))
    }
}

#[derive(Clone, Copy)]
struct JobJson<'a>(&'a Job);

impl Serialize for JobJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let j = self.0;
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("name", &j.name)?;
        m.serialize_entry("stage", &j.stage)?;
        m.serialize_entry("when", j.when.as_str())?;
        m.serialize_entry("allow_failure", &j.allow_failure)?;
        if !j.allow_failure_exit_codes.is_empty() {
            m.serialize_entry("allow_failure_exit_codes", &j.allow_failure_exit_codes)?;
        }
        // `null` for stage ordering, else the names of the needed jobs.
        let needs = j
            .needs
            .as_ref()
            .map(|list| Seq(list.iter().map(|n| n.job.as_str())));
        m.serialize_entry("needs", &needs)?;
        m.serialize_entry("dependencies", &j.dependencies)?;
        m.serialize_entry("script", &j.script)?;
        m.serialize_entry("before_script", &j.before_script)?;
        m.serialize_entry("after_script", &j.after_script)?;
        m.serialize_entry("image", &j.image)?;
        m.serialize_entry("services", &j.services)?;
        m.serialize_entry("variables", &Vars(&j.variables))?;
        m.serialize_entry("environment", &j.environment)?;
        m.serialize_entry("start_in", &j.start_in.as_ref().map(|s| s.text.as_str()))?;
        m.serialize_entry("retry", &j.retry)?;
        m.serialize_entry("timeout", &j.timeout)?;
        m.serialize_entry("resource_group", &j.resource_group)?;
        m.serialize_entry("interruptible", &j.interruptible)?;
        m.serialize_entry("artifacts", &j.artifacts)?;
        m.serialize_entry("cache", &j.cache)?;
        m.serialize_entry("tags", &j.tags)?;
        m.end()
    }
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
