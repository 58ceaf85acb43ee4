//! Checks across jobs, done once every job is known: stages exist, `needs`
//! and `dependencies` name jobs that exist in current or earlier stages,
//! `needs` has no cycles, and `environment:on_stop` names a stopping job.
//! All are linear in the number of jobs and needs.

use super::check::closest;
use crate::diag::Diagnostic;
use crate::model::JobDef;
use crate::source::Span;
use indexmap::IndexMap;
use std::collections::HashMap;

/// Positions of the values the checks report on, per job.
#[derive(Default)]
pub(crate) struct JobSpans {
    pub stage: Option<Span>,
    pub dependencies: Vec<Span>,
    pub on_stop: Option<Span>,
}

pub(crate) fn check(
    stages: &[String],
    jobs: &IndexMap<String, JobDef>,
    spans: &[JobSpans],
    out: &mut Vec<Diagnostic>,
) {
    let stage_index: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let names: Vec<&str> = jobs.keys().map(String::as_str).collect();
    let job_stage = |name: &str| {
        jobs.get(name)
            .and_then(|j| stage_index.get(j.stage.as_str()).copied())
    };
    let fallback = Span::default();
    let no_spans = JobSpans::default();
    // Instance names of parallel jobs (`build: [arm]`, `test 1/2`), which
    // `needs` and `dependencies` may name as GitLab's normaliser expands
    // them first. Built on first use.
    let mut instances: Option<HashMap<String, String>> = None;
    let mut resolve = |name: &str| -> Option<String> {
        if jobs.contains_key(name) {
            return Some(name.to_string());
        }
        instances
            .get_or_insert_with(|| {
                jobs.values()
                    .filter(|j| j.parallel.is_some())
                    .flat_map(|j| {
                        crate::plan::instance_names(j)
                            .into_iter()
                            .map(|i| (i, j.name.clone()))
                    })
                    .collect()
            })
            .get(name)
            .cloned()
    };

    for (i, (name, job)) in jobs.iter().enumerate() {
        let sp = spans.get(i).unwrap_or(&no_spans);
        let job_span = job.span.unwrap_or(fallback);
        let own_stage = stage_index.get(job.stage.as_str()).copied();
        if own_stage.is_none() {
            out.push(
                Diagnostic::at(
                    sp.stage.unwrap_or(job_span),
                    format!("job `{name}`: chosen stage `{}` does not exist", job.stage),
                )
                .expected(format!("one of the stages: {}", stages.join(", "))),
            );
        }

        let rule_needs = job
            .rules
            .iter()
            .flatten()
            .filter_map(|r| r.needs.as_ref())
            .flatten();
        for need in job.needs.iter().flatten().chain(rule_needs) {
            if need.pipeline.is_some() || need.project.is_some() {
                continue;
            }
            let span = need.span.unwrap_or(job_span);
            match resolve(&need.job) {
                None if need.optional => {}
                None => {
                    let mut d = Diagnostic::at(
                        span,
                        format!("job `{name}` needs `{}`, which is not a job", need.job),
                    );
                    // Suggestions cost a pass over every job name: only for the first ten errors.
                    if let Some(s) = (out.len() < 10)
                        .then(|| closest(&need.job, &names))
                        .flatten()
                    {
                        d.message.push_str(&format!("; did you mean `{s}`?"));
                    }
                    out.push(d.expected("the name of a visible job (or `optional: true`)"));
                }
                Some(base) => {
                    if let Some(matrix) = &need.matrix {
                        matrix_needs(name, job, &base, matrix, jobs, span, out);
                    }
                    if let (Some(own), Some(theirs)) = (own_stage, job_stage(&base))
                        && theirs > own
                    {
                        out.push(
                                Diagnostic::at(
                                    span,
                                    format!(
                                        "job `{name}` needs `{}`, which is not in the current or an earlier stage",
                                        need.job
                                    ),
                                )
                                .expected(format!("a job in stage `{}` or before", job.stage)),
                            );
                    }
                }
            }
        }

        if let Some(deps) = &job.dependencies {
            for (k, dep) in deps.iter().enumerate() {
                let span = sp.dependencies.get(k).copied().unwrap_or(job_span);
                let Some(base) = resolve(dep) else {
                    let mut d = Diagnostic::at(
                        span,
                        format!("job `{name}` has the dependency `{dep}`, which is not a job"),
                    );
                    if let Some(s) = (out.len() < 10).then(|| closest(dep, &names)).flatten() {
                        d.message.push_str(&format!("; did you mean `{s}`?"));
                    }
                    out.push(d.expected("the name of a job in an earlier stage"));
                    continue;
                };
                // GitLab's `dependencies_in_needs`: only when `needs` lists
                // jobs (`needs: []` skips the check).
                if let Some(needs) = job.needs.as_ref().filter(|n| !n.is_empty())
                    && !needs
                        .iter()
                        .any(|n| n.job == *dep && n.pipeline.is_none() && n.project.is_none())
                {
                    out.push(
                        Diagnostic::at(
                            span,
                            format!(
                                "job `{name}`: the dependency `{dep}` should be part of `needs`"
                            ),
                        )
                        .expected("a job listed in `needs`"),
                    );
                }
                // `YamlProcessor#validate_job_dependency!`: current or prior stages.
                if let (Some(own), Some(theirs)) = (own_stage, job_stage(&base))
                    && theirs > own
                {
                    out.push(
                        Diagnostic::at(
                            span,
                            format!("job `{name}`: the dependency `{dep}` is not defined in current or prior stages"),
                        )
                        .expected(format!("a job in stage `{}` or before", job.stage)),
                    );
                }
            }
        }

        if let Some(env) = &job.environment
            && let Some(stop) = &env.on_stop
        {
            let span = sp.on_stop.unwrap_or(job_span);
            let problem = match jobs.get(stop).map(|j| j.environment.as_ref()) {
                None => Some(format!("on_stop job `{stop}` is not defined")),
                Some(None) => Some(format!(
                    "on_stop job `{stop}` does not have an environment defined"
                )),
                Some(Some(other)) if other.name != env.name => Some(format!(
                    "on_stop job `{stop}` has the environment `{}`, not `{}`",
                    other.name, env.name
                )),
                Some(Some(other)) if other.action.as_deref() != Some("stop") => {
                    Some(format!("on_stop job `{stop}` needs to have `action: stop`"))
                }
                _ => None,
            };
            if let Some(problem) = problem {
                out.push(
                    Diagnostic::at(span, format!("job `{name}`: {problem}"))
                        .expected("a job with the same environment name and `action: stop`"),
                );
            }
        }
    }

    cycles(jobs, out);
}

/// `needs:parallel:matrix`: every instance it selects, for every instance
/// of the needing job, must exist, as planning will look them up.
fn matrix_needs(
    name: &str,
    job: &JobDef,
    needed: &str,
    matrix: &[crate::model::MatrixEntry],
    jobs: &IndexMap<String, JobDef>,
    span: Span,
    out: &mut Vec<Diagnostic>,
) {
    let Some(target) = jobs.get(needed) else {
        return;
    };
    let existing: std::collections::HashSet<String> =
        crate::plan::instance_names(target).into_iter().collect();
    for own in crate::plan::instance_matrices(job) {
        match crate::plan::needed_instances(needed, matrix, &own) {
            Ok(names) => {
                if let Some(missing) = names.iter().find(|n| !existing.contains(*n)) {
                    out.push(
                        Diagnostic::at(
                            span,
                            format!("job `{name}` needs `{missing}`, which is not an instance of `{needed}`"),
                        )
                        .expected(format!("values of `{needed}`'s `parallel:matrix`")),
                    );
                    return;
                }
            }
            Err(message) => {
                out.push(
                    Diagnostic::at(span, format!("job `{name}`: {message}"))
                        .expected("`$[[ matrix.NAME ]]` with a NAME of this job's matrix"),
                );
                return;
            }
        }
    }
}

/// Reports each cycle of `needs` once, with its path.
fn cycles(jobs: &IndexMap<String, JobDef>, out: &mut Vec<Diagnostic>) {
    // Edges as indices; rules:needs replace job needs when a rule matches,
    // so both can form edges.
    let edges: Vec<Vec<usize>> = jobs
        .values()
        .map(|j| {
            let rule_needs = j
                .rules
                .iter()
                .flatten()
                .filter_map(|r| r.needs.as_ref())
                .flatten();
            j.needs
                .iter()
                .flatten()
                .chain(rule_needs)
                .filter(|n| n.pipeline.is_none() && n.project.is_none())
                .filter_map(|n| jobs.get_index_of(&n.job))
                .collect()
        })
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; edges.len()];
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for start in 0..edges.len() {
        if state[start] != 0 {
            continue;
        }
        state[start] = 1;
        stack.push((start, 0));
        while let Some(top) = stack.last_mut() {
            let node = top.0;
            if let Some(&to) = edges[node].get(top.1) {
                top.1 += 1;
                match state[to] {
                    0 => {
                        state[to] = 1;
                        stack.push((to, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|(n, _)| *n == to).unwrap_or(0);
                        let mut path: Vec<&str> = stack[from..]
                            .iter()
                            .map(|(n, _)| jobs.get_index(*n).map_or("", |(k, _)| k))
                            .collect();
                        path.push(jobs.get_index(to).map_or("", |(k, _)| k));
                        let (name, job) = jobs
                            .get_index(node)
                            .map_or(("", None), |(k, j)| (k.as_str(), Some(j)));
                        let target = path.last().copied().unwrap_or_default();
                        let span = job
                            .and_then(|j| {
                                j.needs
                                    .iter()
                                    .flatten()
                                    .find(|n| n.job == target)
                                    .and_then(|n| n.span)
                            })
                            .or(job.and_then(|j| j.span))
                            .unwrap_or_default();
                        out.push(
                            Diagnostic::at(
                                span,
                                format!("circular dependency in `needs`: {}", path.join(" → ")),
                            )
                            .expected(format!("`{name}` not to need a job that needs it")),
                        );
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
}
