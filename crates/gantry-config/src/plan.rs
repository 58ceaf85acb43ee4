//! Planning: the pipeline GitLab would create for one [`Context`].
//!
//! GitLab's order (`Ci::CreatePipelineService` chain, `Seed::Build`):
//! 1. `workflow:rules` (default `always`, root YAML variables) decide whether
//!    there is a pipeline at all; a matching rule's `variables` override the
//!    global ones.
//! 2. `parallel` is expanded (the config `Normalizer` runs before seeds), so
//!    rules see each instance with its matrix variables.
//! 3. Each instance is kept or dropped by `rules` or `only`/`except`, and
//!    gets its `when`, `allow_failure`, `start_in`, `needs`, `interruptible`
//!    and variables from the matching rule.
//! 4. `needs` are resolved against the created jobs (parallel names
//!    expanded, optional needs dropped, missing ones reported like GitLab),
//!    then `dependencies` (where artifacts come from).
//!
//! Every visible job that is not created is listed in
//! [`Pipeline::skipped`] with the rule or clause that decided it.
//!
//! Cost: each distinct `if:` is parsed once; needs are resolved through a
//! name index, so planning is linear in jobs + needs (+ the size of the
//! implicit dependency lists).

use crate::context::{Context, slugify};
use crate::diag::Diagnostic;
use crate::expr::Expression;
use crate::fnmatch;
use crate::model::{
    AllowFailure, Artifacts, Config, Exists, Job, JobDef, JobNeed, MatrixEntry, Need, Parallel,
    Pipeline, PipelineStatus, Policy, Rule, SkippedJob, Variable, When,
};
use regex::Regex;
use std::hash::{BuildHasherDefault, Hasher};

/// Maps keyed by the configuration's own names (jobs, variables,
/// expressions): FxHash is several times cheaper than SipHash on such
/// short keys, and planning hashes a few of them per job.
type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FxHasher>>;
type HashSet<K> = std::collections::HashSet<K, BuildHasherDefault<FxHasher>>;

/// rustc's FxHash.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(tail) ^ rest.len() as u64);
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// GitLab's cap on pattern comparisons in one `exists:` clause; beyond it
/// the clause counts as satisfied (`clause/exists.rb`).
const MAX_EXISTS_COMPARISONS: usize = 10_000;

/// Upper bound on the instances one matrix expands to.
const MAX_MATRIX_COMBINATIONS: usize = 10_000;

/// Plans `config` for `ctx`: the pipeline GitLab would create. Errors are
/// the ones GitLab reports when creating the pipeline (a need on a job that
/// is not in the pipeline, circular needs, an unknown stage).
pub fn plan(config: &Config, ctx: &Context) -> Result<Pipeline, Vec<Diagnostic>> {
    let predefined: HashMap<&str, &str> = ctx
        .variables
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Planner::new(config, ctx, &predefined).run()
}

/// Where a variable lookup for an expression looks, lowest precedence last
/// in [`Scope::get`]: `-v` overrides, YAML variables, pipeline predefined,
/// then the job's own predefined (`CI_JOB_NAME`, `CI_NODE_*`).
struct Scope<'a> {
    ctx: &'a Context,
    /// `ctx.variables`, indexed with the fast hasher.
    predefined: &'a HashMap<&'a str, &'a str>,
    yaml: &'a [Variable],
    job: Option<JobFacts<'a>>,
}

#[derive(Clone, Copy)]
struct JobFacts<'a> {
    name: &'a str,
    stage: &'a str,
    node_index: Option<u32>,
    node_total: Option<u32>,
}

impl Scope<'_> {
    fn get(&self, name: &str) -> Option<String> {
        if !self.ctx.overrides.is_empty()
            && let Some(v) = self.ctx.overrides.get(name)
        {
            return Some(v.clone());
        }
        // Job variable lists are short: a scan beats hashing. The last
        // definition of a name wins.
        if let Some(v) = self.yaml.iter().rev().find(|v| v.name == name) {
            return Some(v.value.clone());
        }
        if let Some(v) = self.predefined.get(name) {
            return Some(v.to_string());
        }
        let job = self.job?;
        match name {
            "CI_JOB_NAME" => Some(job.name.to_string()),
            "CI_JOB_NAME_SLUG" => Some(slugify(job.name)),
            "CI_JOB_STAGE" => Some(job.stage.to_string()),
            "CI_NODE_INDEX" => job.node_index.map(|i| i.to_string()),
            "CI_NODE_TOTAL" => Some(job.node_total.unwrap_or(1).to_string()),
            _ => None,
        }
    }
}

/// One instance of a job definition after `parallel` expansion.
struct Instance {
    name: String,
    node_index: Option<u32>,
    node_total: Option<u32>,
    matrix: Vec<(String, String)>,
}

/// What rules or only/except decided for a created instance.
struct Decision<'a> {
    when: When,
    start_in: Option<crate::model::StartIn>,
    allow_failure: Option<&'a AllowFailure>,
    /// Default `allow_failure` when neither rule nor job sets it.
    manual_default: bool,
    needs: Option<&'a Vec<Need>>,
    interruptible: Option<bool>,
    rule_variables: &'a [Variable],
}

/// An instance that rules let through, before its job record is built.
struct Created<'a> {
    def: &'a JobDef,
    inst: Instance,
    decision: Decision<'a>,
    vars: Vec<Variable>,
}

/// What resolving needs keeps of each created job (aligned with the jobs).
struct Meta<'a> {
    def: &'a JobDef,
    stage_idx: usize,
    needs: Option<&'a Vec<Need>>,
    /// The instance's matrix values, for `$[[ matrix.NAME ]]` in needs.
    matrix: Vec<(String, String)>,
}

struct Planner<'a> {
    config: &'a Config,
    ctx: &'a Context,
    predefined: &'a HashMap<&'a str, &'a str>,
    /// Parsed `if:` expressions by source; `None` when the text does not
    /// parse (GitLab evaluates those to false).
    exprs: HashMap<String, Option<Expression>>,
    /// `/regex/` patterns of only/except refs by source.
    regexes: HashMap<String, Option<Regex>>,
    diags: Vec<Diagnostic>,
}

impl<'a> Planner<'a> {
    fn new(
        config: &'a Config,
        ctx: &'a Context,
        predefined: &'a HashMap<&'a str, &'a str>,
    ) -> Self {
        Planner {
            config,
            ctx,
            predefined,
            exprs: HashMap::default(),
            regexes: HashMap::default(),
            diags: Vec::new(),
        }
    }

    fn run(mut self) -> Result<Pipeline, Vec<Diagnostic>> {
        let config = self.config;
        let global: Vec<Variable> = dedup(config.variables.iter().cloned());

        // 1. workflow:rules
        let mut workflow_vars: &[Variable] = &[];
        let mut filtered: Option<String> = None;
        if let Some(rules) = &config.workflow.rules {
            let scope = Scope {
                predefined: self.predefined,
                ctx: self.ctx,
                yaml: &global,
                job: None,
            };
            match self.first_match(rules, &scope) {
                None => filtered = Some("workflow:rules: no rule matched".into()),
                Some((i, rule)) if rule.when == Some(When::Never) => {
                    filtered = Some(format!(
                        "workflow:rules[{i}]{} → when: never",
                        describe_rule(rule)
                    ));
                }
                Some((_, rule)) => workflow_vars = &rule.variables,
            }
        }
        let mut pipeline_vars = global.clone();
        for v in workflow_vars {
            upsert(&mut pipeline_vars, v.clone());
        }
        let context_variables: Vec<Variable> = self
            .ctx
            .variables
            .iter()
            .map(|(k, v)| Variable::new(k.clone(), v.clone()))
            .collect();

        if let Some(reason) = filtered {
            let skipped = config
                .jobs
                .values()
                .map(|d| SkippedJob {
                    name: d.name.clone(),
                    reason: format!("pipeline filtered out by {reason}"),
                })
                .collect();
            return Ok(Pipeline {
                status: PipelineStatus::Filtered,
                filtered_reason: Some(reason),
                name: None,
                stages: Vec::new(),
                jobs: Vec::new(),
                skipped,
                variables: pipeline_vars,
                context_variables,
            });
        }

        // 2–3. parallel expansion, then rules / only-except per instance.
        let stage_idx: HashMap<&str, usize> = config
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let inherit = VariableInheritance::new(workflow_vars);
        let has_workflow_rules = config.workflow.rules.is_some();
        let mut parallel_names: HashMap<&str, Vec<String>> = HashMap::default();
        // Created jobs by stage: pipeline order without sorting (and moving)
        // the large job records.
        let mut by_stage: Vec<Vec<Created<'a>>> =
            config.stages.iter().map(|_| Vec::new()).collect();
        let mut skipped: Vec<SkippedJob> = Vec::new();

        for def in config.jobs.values() {
            let Some(&sidx) = stage_idx.get(def.stage.as_str()) else {
                self.diags.push(Diagnostic::new(
                    def.span,
                    format!(
                        "{} job: chosen stage {} does not exist; available stages are {}",
                        def.name,
                        def.stage,
                        config.stages.join(", ")
                    ),
                ));
                continue;
            };
            let instances = expand_parallel(def);
            if def.parallel.is_some() {
                parallel_names.insert(
                    def.name.as_str(),
                    instances.iter().map(|i| i.name.clone()).collect(),
                );
            }
            let mut base_vars = inherit.job_variables(def);
            let count = instances.len();
            for (n, inst) in instances.into_iter().enumerate() {
                // The last instance takes the list, the others copy it.
                let mut vars = if n + 1 == count {
                    std::mem::take(&mut base_vars)
                } else {
                    base_vars.clone()
                };
                for (k, v) in &inst.matrix {
                    upsert(&mut vars, Variable::new(k.clone(), v.clone()));
                }
                let facts = JobFacts {
                    name: &inst.name,
                    stage: &def.stage,
                    node_index: inst.node_index,
                    node_total: inst.node_total,
                };
                let decision = {
                    let scope = Scope {
                        predefined: self.predefined,
                        ctx: self.ctx,
                        yaml: &vars,
                        job: Some(facts),
                    };
                    self.decide(def, &scope, has_workflow_rules)
                };
                let decision = match decision {
                    Ok(d) => d,
                    Err(reason) => {
                        skipped.push(SkippedJob {
                            name: inst.name,
                            reason,
                        });
                        continue;
                    }
                };
                for v in decision.rule_variables {
                    upsert(&mut vars, v.clone());
                }
                by_stage[sidx].push(Created {
                    def,
                    inst,
                    decision,
                    vars,
                });
            }
        }

        // A pipeline needs at least one job outside .pre/.post (GitLab does
        // not create it otherwise).
        let real_job = by_stage
            .iter()
            .zip(&config.stages)
            .any(|(list, stage)| !list.is_empty() && stage != ".pre" && stage != ".post");
        if !real_job && self.diags.is_empty() {
            let reason = if by_stage.iter().all(Vec::is_empty) {
                "no job would be created: the rules prevented every job from being added to the pipeline"
            } else {
                "only .pre/.post jobs would be created, and such a pipeline does not run"
            };
            for c in by_stage.into_iter().flatten() {
                skipped.push(SkippedJob {
                    name: c.inst.name,
                    reason: reason.to_string(),
                });
            }
            return Ok(Pipeline {
                status: PipelineStatus::Filtered,
                filtered_reason: Some(reason.to_string()),
                name: None,
                stages: Vec::new(),
                jobs: Vec::new(),
                skipped,
                variables: pipeline_vars,
                context_variables,
            });
        }

        let stages = config
            .stages
            .iter()
            .zip(&by_stage)
            .filter(|(_, list)| !list.is_empty())
            .map(|(s, _)| s.clone())
            .collect();

        // Job records are built once, in pipeline order, where they stay.
        let total = by_stage.iter().map(Vec::len).sum();
        let mut jobs: Vec<Job> = Vec::with_capacity(total);
        let mut metas: Vec<Meta<'a>> = Vec::with_capacity(total);
        for (stage_idx, list) in by_stage.into_iter().enumerate() {
            for c in list {
                metas.push(Meta {
                    def: c.def,
                    stage_idx,
                    needs: c.decision.needs,
                    matrix: c.inst.matrix.clone(),
                });
                jobs.push(build_job(c.def, c.inst, &c.decision, c.vars));
                if let Some(job) = jobs.last_mut() {
                    self.expand_job_fields(job);
                }
            }
        }

        // 4. needs and dependencies.
        let index: HashMap<&str, usize> = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.name.as_str(), i))
            .collect();
        let resolved_needs: Vec<Option<Vec<JobNeed>>> = (0..jobs.len())
            .map(|i| self.resolve_needs(i, &metas, &jobs, &index, &parallel_names))
            .collect();
        let dependencies =
            self.resolve_dependencies(&metas, &jobs, &resolved_needs, &index, &parallel_names);
        self.check_cycles(&metas, &jobs, &resolved_needs, &index);

        if !self.diags.is_empty() {
            return Err(self.diags);
        }
        for ((job, needs), deps) in jobs.iter_mut().zip(resolved_needs).zip(dependencies) {
            job.needs = needs;
            job.dependencies = deps;
        }

        let name = config
            .workflow
            .name
            .as_ref()
            .map(|n| self.pipeline_name(n, &pipeline_vars));
        Ok(Pipeline {
            status: PipelineStatus::Created,
            filtered_reason: None,
            name,
            stages,
            jobs,
            skipped,
            variables: pipeline_vars,
            context_variables,
        })
    }

    /// `workflow:name`, expanded as GitLab does (`Chain::Populate`): against
    /// the pipeline's variables, themselves expanded, unknown names empty,
    /// then stripped.
    fn pipeline_name(&self, name: &str, pipeline_vars: &[Variable]) -> String {
        let mut vars: Vec<Variable> = pipeline_vars.to_vec();
        vars.extend(
            self.ctx
                .overrides
                .iter()
                .map(|(k, v)| Variable::new(k.clone(), v.clone())),
        );
        let predefined = |k: &str| self.ctx.variables.get(k).cloned();
        let expanded = match crate::expand::expand_all(&vars, &predefined) {
            Ok(map) => crate::expand::expand(name, &|k: &str| {
                map.get(k).cloned().or_else(|| predefined(k))
            }),
            Err(_) => {
                let scope = Scope {
                    predefined: self.predefined,
                    ctx: self.ctx,
                    yaml: pipeline_vars,
                    job: None,
                };
                crate::expand::expand(name, &|k: &str| scope.get(k))
            }
        };
        expanded.trim().to_string()
    }

    /// Expands `environment:name`, `environment:url` and `resource_group`
    /// as GitLab does when it creates the job, against the job's variables
    /// (predefined, YAML, `-v`). Names only known when the job runs
    /// (`CI_JOB_ID`, ...) are kept for the runner to expand.
    fn expand_job_fields(&self, job: &mut Job) {
        let env_needs = job.environment.as_ref().is_some_and(|e| {
            e.name.contains(['$', '%']) || e.url.as_ref().is_some_and(|u| u.contains(['$', '%']))
        });
        let group_needs = job
            .resource_group
            .as_ref()
            .is_some_and(|g| g.contains(['$', '%']));
        if !env_needs && !group_needs {
            return;
        }
        let mut vars = job.variables.clone();
        vars.extend(
            self.ctx
                .overrides
                .iter()
                .map(|(k, v)| Variable::new(k.clone(), v.clone())),
        );
        let empty: [Variable; 0] = [];
        let facts = JobFacts {
            name: &job.name,
            stage: &job.stage,
            node_index: job.node_index,
            node_total: job.node_total,
        };
        let predefined = Scope {
            predefined: self.predefined,
            ctx: self.ctx,
            yaml: &empty,
            job: Some(facts),
        };
        let fallback = |k: &str| predefined.get(k);
        let expanded = crate::expand::expand_all(&vars, &fallback).unwrap_or_default();
        let lookup = |k: &str| expanded.get(k).cloned().or_else(|| fallback(k));
        let expand = |s: &str| crate::expand::expand_existing(s, &lookup);
        let environment = job.environment.clone().map(|mut e| {
            e.name = expand(&e.name);
            e.url = e.url.as_deref().map(expand);
            e
        });
        let resource_group = job.resource_group.as_deref().map(expand);
        job.environment = environment;
        job.resource_group = resource_group;
    }

    /// rules, or only/except: `Ok` with the job's attributes when it is
    /// created, `Err(reason)` when it is not.
    fn decide(
        &mut self,
        def: &'a JobDef,
        scope: &Scope,
        has_workflow_rules: bool,
    ) -> Result<Decision<'a>, String> {
        let job_when = def.when.unwrap_or_default();
        let manual_default = job_when == When::Manual;
        if let Some(rules) = &def.rules {
            let Some((i, rule)) = self.first_match(rules, scope) else {
                return Err("rules: no rule matched".into());
            };
            let when = rule.when.unwrap_or(job_when);
            if when == When::Never {
                return Err(format!("rules[{i}]{} → when: never", describe_rule(rule)));
            }
            return Ok(Decision {
                when,
                start_in: if when == When::Delayed {
                    rule.start_in.clone().or_else(|| def.start_in.clone())
                } else {
                    None
                },
                allow_failure: rule.allow_failure.as_ref().or(def.allow_failure.as_ref()),
                manual_default,
                needs: rule.needs.as_ref().or(def.needs.as_ref()),
                interruptible: rule.interruptible.or(def.interruptible),
                rule_variables: &rule.variables,
            });
        }

        let default_only;
        let only = match &def.only {
            Some(p) => Some(p),
            None if has_workflow_rules => None,
            None => {
                default_only = Policy {
                    refs: vec!["branches".into(), "tags".into()],
                    ..Policy::default()
                };
                Some(&default_only)
            }
        };
        if let Some(only) = only {
            self.check_only(only, scope, def.only.is_none())?;
        }
        if let Some(except) = &def.except {
            self.check_except(except, scope)?;
        }
        if job_when == When::Never {
            return Err("when: never".into());
        }
        Ok(Decision {
            when: job_when,
            start_in: if job_when == When::Delayed {
                def.start_in.clone()
            } else {
                None
            },
            allow_failure: def.allow_failure.as_ref(),
            manual_default,
            needs: def.needs.as_ref(),
            interruptible: def.interruptible,
            rule_variables: &[],
        })
    }

    /// The first rule whose clauses all match, with its index.
    fn first_match<'r>(&mut self, rules: &'r [Rule], scope: &Scope) -> Option<(usize, &'r Rule)> {
        rules
            .iter()
            .enumerate()
            .find(|(_, r)| self.rule_matches(r, scope))
    }

    fn rule_matches(&mut self, rule: &Rule, scope: &Scope) -> bool {
        if let Some(src) = &rule.if_expr
            && !self.eval_if(src, scope)
        {
            return false;
        }
        if let Some(changes) = &rule.changes {
            // `compare_to` needs another ref's tree; locally the context's
            // changed paths are used for it too.
            if !self.changes_match(&changes.paths, scope) {
                return false;
            }
        }
        if let Some(exists) = &rule.exists
            && !self.exists_match(exists, scope)
        {
            return false;
        }
        true
    }

    fn eval_if(&mut self, src: &str, scope: &Scope) -> bool {
        let lookup = |name: &str| scope.get(name);
        if let Some(parsed) = self.exprs.get(src) {
            return parsed.as_ref().is_some_and(|e| e.evaluate(&lookup));
        }
        let parsed = Expression::parse(src).ok();
        let result = parsed.as_ref().is_some_and(|e| e.evaluate(&lookup));
        self.exprs.insert(src.to_string(), parsed);
        result
    }

    /// `changes:`: true when there is no diff to compare (GitLab's
    /// `modified_paths` nil), else when any changed path matches any glob.
    fn changes_match(&self, globs: &[String], scope: &Scope) -> bool {
        let Some(changed) = &self.ctx.changed_paths else {
            return true;
        };
        let globs: Vec<String> = globs.iter().map(|g| expand_path(g, scope)).collect();
        changed
            .iter()
            .any(|path| globs.iter().any(|g| fnmatch::fnmatch(g, path)))
    }

    /// `exists:`: exact names are binary-searched in the sorted file list,
    /// globs are matched against every file, up to GitLab's comparison cap.
    fn exists_match(&self, exists: &Exists, scope: &Scope) -> bool {
        // Files of another project cannot be seen locally.
        if exists.project.is_some() {
            return false;
        }
        let files = &self.ctx.files;
        let mut comparisons = 0usize;
        for raw in &exists.paths {
            let glob = expand_path(raw, scope);
            if !fnmatch::is_glob(&glob) {
                if files.binary_search(&glob).is_ok() {
                    return true;
                }
                continue;
            }
            for file in files {
                comparisons += 1;
                if comparisons > MAX_EXISTS_COMPARISONS {
                    return true;
                }
                if fnmatch::fnmatch(&glob, file) {
                    return true;
                }
            }
        }
        false
    }

    /// Every `only:` spec must be satisfied.
    fn check_only(&mut self, only: &Policy, scope: &Scope, is_default: bool) -> Result<(), String> {
        let default = if is_default { " (default)" } else { "" };
        if !only.refs.is_empty() && self.matching_ref(&only.refs, scope).is_none() {
            let r = scope.get("CI_COMMIT_REF_NAME").unwrap_or_default();
            let mut why = format!(
                "only:refs [{}]{default} did not match ref {r:?}",
                only.refs.join(", ")
            );
            if self.ref_kind(scope) == RefKind::MergeRequest {
                why.push_str(" (merge request pipeline: only source keywords can match)");
            }
            return Err(why);
        }
        if !only.variables.is_empty() && !only.variables.iter().any(|e| self.eval_if(e, scope)) {
            return Err(format!(
                "only:variables [{}]: no expression was true",
                only.variables.join(", ")
            ));
        }
        if let Some(changes) = &only.changes
            && !self.changes_match(&changes.paths, scope)
        {
            return Err(format!(
                "only:changes [{}]: no changed file matched",
                changes.paths.join(", ")
            ));
        }
        if let Some(k) = &only.kubernetes
            && scope.get("CI_KUBERNETES_ACTIVE").is_none()
        {
            return Err(format!(
                "only:kubernetes {k}: no Kubernetes cluster is active"
            ));
        }
        Ok(())
    }

    /// No `except:` spec may be satisfied.
    fn check_except(&mut self, except: &Policy, scope: &Scope) -> Result<(), String> {
        if let Some(pattern) = self.matching_ref(&except.refs, scope) {
            return Err(format!(
                "except:refs [{}] matched: {pattern}",
                except.refs.join(", ")
            ));
        }
        if let Some(e) = except.variables.iter().find(|e| self.eval_if(e, scope)) {
            return Err(format!(
                "except:variables [{}]: {e} was true",
                except.variables.join(", ")
            ));
        }
        if let Some(changes) = &except.changes
            && self.changes_match(&changes.paths, scope)
        {
            return Err(format!(
                "except:changes [{}]: a changed file matched",
                changes.paths.join(", ")
            ));
        }
        if let Some(k) = &except.kubernetes
            && scope.get("CI_KUBERNETES_ACTIVE").is_some()
        {
            return Err(format!(
                "except:kubernetes {k}: a Kubernetes cluster is active"
            ));
        }
        Ok(())
    }

    fn ref_kind(&self, scope: &Scope) -> RefKind {
        if self.ctx.source == "merge_request_event" {
            RefKind::MergeRequest
        } else if scope.get("CI_COMMIT_TAG").is_some_and(|t| !t.is_empty()) {
            RefKind::Tag
        } else {
            RefKind::Branch
        }
    }

    /// The first `refs:` pattern that matches the pipeline
    /// (`policy/refs.rb`): `branches`, `tags`, a pipeline source (singular
    /// or plural, `_event` dropped), then — for branch and tag pipelines
    /// only — `/regex/` or the exact ref; `pattern@group/project` also
    /// requires the project path.
    fn matching_ref<'p>(&mut self, patterns: &'p [String], scope: &Scope) -> Option<&'p str> {
        let kind = self.ref_kind(scope);
        let source = self
            .ctx
            .source
            .strip_suffix("_event")
            .unwrap_or(&self.ctx.source)
            .to_string();
        let git_ref = scope.get("CI_COMMIT_REF_NAME").unwrap_or_default();
        let project = scope.get("CI_PROJECT_PATH").unwrap_or_default();
        patterns
            .iter()
            .find(|full| {
                let (pattern, path) = match full.split_once('@') {
                    Some((p, path)) => (p, Some(path)),
                    None => (full.as_str(), None),
                };
                if path.is_some_and(|p| p != project) {
                    return false;
                }
                if (pattern == "tags" && kind == RefKind::Tag)
                    || (pattern == "branches" && kind == RefKind::Branch)
                {
                    return true;
                }
                if !source.is_empty() && (pattern == source || pattern == pluralize(&source)) {
                    return true;
                }
                if kind == RefKind::MergeRequest {
                    return false;
                }
                match self.ref_regex(pattern) {
                    Some(re) => re.is_match(&git_ref),
                    None => pattern == git_ref,
                }
            })
            .map(|s| s.as_str())
    }

    /// `/body/flags` as a regex (Ruby flags `i`, `m` → dot-all, `x`), or
    /// `None` when the pattern is not a valid regex literal (then it is
    /// compared as a plain ref name, as GitLab's fallback does).
    fn ref_regex(&mut self, pattern: &str) -> Option<&Regex> {
        if !self.regexes.contains_key(pattern) {
            self.regexes
                .insert(pattern.to_string(), ruby_regex(pattern));
        }
        self.regexes.get(pattern).and_then(|r| r.as_ref())
    }

    /// Resolves a created job's `needs` to instance names.
    fn resolve_needs(
        &mut self,
        i: usize,
        metas: &[Meta<'a>],
        jobs: &[Job],
        index: &HashMap<&str, usize>,
        parallel_names: &HashMap<&str, Vec<String>>,
    ) -> Option<Vec<JobNeed>> {
        let meta = &metas[i];
        let job_name = jobs[i].name.as_str();
        let needs = meta.needs?;
        let mut out: Vec<JobNeed> = Vec::with_capacity(needs.len());
        for need in needs {
            // Needs on other pipelines or projects do not gate local jobs.
            if need.pipeline.is_some() || need.project.is_some() {
                continue;
            }
            // A matrix selection names instances, parallel job or not (a
            // job without that matrix then has no such instance).
            let names: Vec<String> = match (&need.matrix, parallel_names.get(need.job.as_str())) {
                (Some(matrix), _) => match needed_instances(&need.job, matrix, &meta.matrix) {
                    Ok(names) => names,
                    Err(message) => {
                        self.diags.push(Diagnostic::new(
                            need.span.or(meta.def.span),
                            format!("{job_name} job: {message}"),
                        ));
                        continue;
                    }
                },
                (None, Some(all)) => all.clone(),
                (None, None) => vec![need.job.clone()],
            };
            for name in names {
                match index.get(name.as_str()) {
                    Some(&k) if metas[k].stage_idx <= meta.stage_idx => {
                        if !out.iter().any(|n| n.job == name) {
                            out.push(JobNeed {
                                job: name,
                                artifacts: need.artifacts,
                                optional: need.optional,
                            });
                        }
                    }
                    None if need.optional => {}
                    found => {
                        let defined = found.is_some()
                            || self.config.jobs.contains_key(name.as_str())
                            || parallel_names
                                .get(need.job.as_str())
                                .is_some_and(|all| all.contains(&name));
                        let message = if defined {
                            format!(
                                "'{job_name}' job needs '{name}' job, but '{name}' is not in any previous stage"
                            )
                        } else {
                            format!("{job_name} job: undefined need: {name}")
                        };
                        self.diags
                            .push(Diagnostic::new(need.span.or(meta.def.span), message));
                    }
                }
            }
        }
        Some(out)
    }

    /// Jobs whose artifacts each job downloads (`Ci::BuildDependencies`):
    /// none for `dependencies: []`; otherwise the needs with `artifacts:
    /// true` (DAG) or the created jobs of earlier stages, narrowed to the
    /// `dependencies:` names when given. Without `dependencies:`, a
    /// stage-ordered job lists only earlier jobs that declare artifacts:
    /// the others have nothing to download, and listing every earlier job
    /// of a large pipeline would be quadratic.
    fn resolve_dependencies(
        &mut self,
        metas: &[Meta<'a>],
        jobs: &[Job],
        needs: &[Option<Vec<JobNeed>>],
        index: &HashMap<&str, usize>,
        parallel_names: &HashMap<&str, Vec<String>>,
    ) -> Vec<Vec<String>> {
        // Jobs with artifacts, in pipeline order, and how many of them come
        // before each stage.
        let with_artifacts: Vec<usize> = (0..jobs.len())
            .filter(|&i| declares_artifacts(jobs[i].artifacts.as_ref()))
            .collect();
        let before_stage =
            |stage: usize| with_artifacts.partition_point(|&i| metas[i].stage_idx < stage);

        metas
            .iter()
            .zip(needs)
            .map(|(p, needs)| {
                let explicit: Option<Vec<&str>> = p.def.dependencies.as_ref().map(|deps| {
                    deps.iter()
                        .flat_map(|d| match parallel_names.get(d.as_str()) {
                            Some(all) => all.iter().map(String::as_str).collect::<Vec<_>>(),
                            None => vec![d.as_str()],
                        })
                        .collect()
                });
                match (needs, explicit) {
                    (_, Some(names)) if names.is_empty() => Vec::new(),
                    (Some(needs), Some(names)) => {
                        let wanted: HashSet<&str> = names.into_iter().collect();
                        needs
                            .iter()
                            .filter(|n| n.artifacts && wanted.contains(n.job.as_str()))
                            .map(|n| n.job.clone())
                            .collect()
                    }
                    (Some(needs), None) => needs
                        .iter()
                        .filter(|n| n.artifacts)
                        .map(|n| n.job.clone())
                        .collect(),
                    (None, Some(names)) => {
                        let mut out: Vec<String> = Vec::new();
                        for name in names {
                            if let Some(&k) = index.get(name)
                                && metas[k].stage_idx < p.stage_idx
                                && !out.iter().any(|o| o == name)
                            {
                                out.push(name.to_string());
                            }
                        }
                        out
                    }
                    (None, None) => with_artifacts[..before_stage(p.stage_idx)]
                        .iter()
                        .map(|&i| jobs[i].name.clone())
                        .collect(),
                }
            })
            .collect()
    }

    /// Reports needs that form a cycle (possible within one stage), with
    /// Kahn's algorithm over the resolved needs.
    fn check_cycles(
        &mut self,
        metas: &[Meta<'a>],
        jobs: &[Job],
        needs: &[Option<Vec<JobNeed>>],
        index: &HashMap<&str, usize>,
    ) {
        let n = jobs.len();
        let mut indegree = vec![0usize; n];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, list) in needs.iter().enumerate() {
            for need in list.iter().flatten() {
                if let Some(&k) = index.get(need.job.as_str()) {
                    indegree[i] += 1;
                    dependents[k].push(i);
                }
            }
        }
        let mut queue: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut done = 0usize;
        while let Some(i) = queue.pop() {
            done += 1;
            for &d in &dependents[i] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    queue.push(d);
                }
            }
        }
        if done < n {
            let in_cycle: Vec<&str> = (0..n)
                .filter(|&i| indegree[i] > 0)
                .map(|i| jobs[i].name.as_str())
                .take(10)
                .collect();
            let first = (0..n)
                .find(|&i| indegree[i] > 0)
                .and_then(|i| metas[i].def.span);
            self.diags.push(Diagnostic::new(
                first,
                format!(
                    "circular dependency detected in `needs` between jobs: {}",
                    in_cycle.join(", ")
                ),
            ));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RefKind {
    Branch,
    Tag,
    MergeRequest,
}

/// How `workflow:rules:variables` reach each job, as GitLab's
/// `Variables::Helpers.inherit_yaml_variables` does: the workflow's values
/// are merged into the global ones, the result filtered by
/// `inherit:variables`, and the job's own variables win over both. A
/// [`JobDef`] carries the global and own variables merged, with the names
/// it set itself in `own_variables`.
struct VariableInheritance<'v> {
    workflow: &'v [Variable],
}

impl<'v> VariableInheritance<'v> {
    fn new(workflow: &'v [Variable]) -> Self {
        VariableInheritance { workflow }
    }

    fn job_variables(&self, def: &JobDef) -> Vec<Variable> {
        let mut out = dedup(def.variables.iter().cloned());
        for w in self.workflow {
            if def.inherit_variables.allows(&w.name) && !def.own_variables.contains(&w.name) {
                upsert(&mut out, w.clone());
            }
        }
        out
    }
}

/// Variables by name, a later definition replacing an earlier one in place.
fn dedup(vars: impl ExactSizeIterator<Item = Variable>) -> Vec<Variable> {
    let mut out = Vec::with_capacity(vars.len());
    for v in vars {
        upsert(&mut out, v);
    }
    out
}

/// Sets a variable: replaces the one of the same name in place, or appends.
/// A scan: variable lists of jobs are short.
fn upsert(vars: &mut Vec<Variable>, v: Variable) {
    match vars.iter_mut().find(|x| x.name == v.name) {
        Some(slot) => *slot = v,
        None => vars.push(v),
    }
}

/// The instances of a job: `name i/N` for `parallel: N`, `name: [v1, v2]`
/// for each combination of a matrix (entries in order, each the cartesian
/// product of its values in key order, the first key varying slowest).
fn expand_parallel(def: &JobDef) -> Vec<Instance> {
    match &def.parallel {
        None => vec![Instance {
            name: def.name.clone(),
            node_index: None,
            node_total: None,
            matrix: Vec::new(),
        }],
        Some(Parallel::Count(n)) => (1..=*n)
            .map(|i| Instance {
                name: format!("{} {i}/{n}", def.name),
                node_index: Some(i),
                node_total: Some(*n),
                matrix: Vec::new(),
            })
            .collect(),
        Some(Parallel::Matrix(entries)) => {
            let combos = matrix_combinations(entries);
            let total = combos.len() as u32;
            combos
                .into_iter()
                .enumerate()
                .map(|(i, vars)| Instance {
                    name: matrix_name(&def.name, &vars),
                    node_index: Some(i as u32 + 1),
                    node_total: Some(total),
                    matrix: vars,
                })
                .collect()
        }
    }
}

fn matrix_combinations(entries: &[MatrixEntry]) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in entries {
        let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for (key, values) in entry {
            // The loader allows 200 instances; the cap only keeps a model
            // built some other way from exhausting memory.
            let size = combos
                .len()
                .saturating_mul(values.len())
                .min(MAX_MATRIX_COMBINATIONS);
            let mut next = Vec::with_capacity(size);
            'fill: for combo in &combos {
                for value in values {
                    if next.len() == MAX_MATRIX_COMBINATIONS {
                        break 'fill;
                    }
                    let mut c = combo.clone();
                    c.push((key.clone(), value.clone()));
                    next.push(c);
                }
            }
            combos = next;
        }
        if !entry.is_empty() {
            out.extend(combos);
        }
    }
    out
}

/// The names of a job's instances (just its name when not parallel).
pub(crate) fn instance_names(def: &JobDef) -> Vec<String> {
    expand_parallel(def).into_iter().map(|i| i.name).collect()
}

fn matrix_name(job: &str, vars: &[(String, String)]) -> String {
    let values: Vec<&str> = vars.iter().map(|(_, v)| v.as_str()).collect();
    format!("{job}: [{}]", values.join(", "))
}

/// Instance names selected by `needs:parallel:matrix`.
fn matrix_names(job: &str, matrix: &[MatrixEntry]) -> Vec<String> {
    matrix_combinations(matrix)
        .iter()
        .map(|vars| matrix_name(job, vars))
        .collect()
}

/// The matrix values of each instance of a job (empty without a matrix).
pub(crate) fn instance_matrices(def: &JobDef) -> Vec<Vec<(String, String)>> {
    expand_parallel(def).into_iter().map(|i| i.matrix).collect()
}

/// Instance names selected by `needs:parallel:matrix` for one instance of
/// the needing job: `$[[ matrix.NAME ]]` in a value is that instance's own
/// value of `NAME` (GitLab 18.6), so each instance needs its counterpart.
pub(crate) fn needed_instances(
    job: &str,
    matrix: &[MatrixEntry],
    own: &[(String, String)],
) -> Result<Vec<String>, String> {
    if !matrix
        .iter()
        .flat_map(|e| e.values().flatten())
        .any(|v| v.contains("$[["))
    {
        return Ok(matrix_names(job, matrix));
    }
    let mut substituted = Vec::with_capacity(matrix.len());
    for entry in matrix {
        let mut out = MatrixEntry::new();
        for (key, values) in entry {
            let values = values
                .iter()
                .map(|v| substitute_matrix_refs(v, own))
                .collect::<Result<Vec<_>, _>>()?;
            out.insert(key.clone(), values);
        }
        substituted.push(out);
    }
    Ok(matrix_names(job, &substituted))
}

/// Replaces each `$[[ matrix.NAME ]]` in `value` by the instance's value.
fn substitute_matrix_refs(value: &str, own: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("$[[") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let Some(end) = after.find("]]") else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let inner = after[..end].trim();
        match inner.strip_prefix("matrix.") {
            Some(name) => match own.iter().find(|(k, _)| k == name.trim()) {
                Some((_, v)) => out.push_str(v),
                None => {
                    return Err(format!(
                        "`$[[ {inner} ]]` in `needs:parallel:matrix` names no variable of this job's `parallel:matrix`"
                    ));
                }
            },
            None => out.push_str(&rest[start..start + 3 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Builds the planned job; needs and dependencies are filled in later.
fn build_job(def: &JobDef, inst: Instance, d: &Decision, vars: Vec<Variable>) -> Job {
    let (allow_failure, exit_codes) = match d.allow_failure {
        Some(AllowFailure::Bool(b)) => (*b, Vec::new()),
        Some(AllowFailure::ExitCodes { exit_codes }) => (false, exit_codes.clone()),
        None => (d.manual_default, Vec::new()),
    };
    Job {
        name: inst.name,
        definition: def.name.clone(),
        stage: def.stage.clone(),
        when: d.when,
        start_in: d.start_in.clone(),
        allow_failure,
        allow_failure_exit_codes: exit_codes,
        needs: None,
        dependencies: Vec::new(),
        script: def.script.clone(),
        before_script: def.before_script.clone(),
        after_script: def.after_script.clone(),
        image: def.image.clone(),
        services: def.services.clone(),
        variables: vars,
        environment: def.environment.clone(),
        retry: def.retry.clone().unwrap_or_default(),
        timeout: def.timeout,
        resource_group: def.resource_group.clone(),
        interruptible: d.interruptible.unwrap_or(false),
        artifacts: def.artifacts.clone(),
        cache: def.cache.clone(),
        tags: def.tags.clone(),
        coverage: def.coverage.clone(),
        trigger: def.trigger.clone(),
        node_index: inst.node_index,
        node_total: inst.node_total,
        extra: def.extra.clone(),
    }
}

fn declares_artifacts(a: Option<&Artifacts>) -> bool {
    a.is_some_and(|a| !a.paths.is_empty() || a.untracked || !a.reports.is_empty())
}

/// ` (if: ..., changes: [...], exists: [...])` for a rule, or `` when it
/// has no clause.
fn describe_rule(rule: &Rule) -> String {
    let mut parts = Vec::new();
    if let Some(e) = &rule.if_expr {
        parts.push(format!("if: {e}"));
    }
    if let Some(c) = &rule.changes {
        parts.push(format!("changes: [{}]", c.paths.join(", ")));
    }
    if let Some(e) = &rule.exists {
        parts.push(format!("exists: [{}]", e.paths.join(", ")));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// Paths in `changes:`/`exists:` may reference variables; unknown ones stay.
fn expand_path(path: &str, scope: &Scope) -> String {
    if path.contains('$') {
        crate::expand::expand_existing(path, &|k: &str| scope.get(k))
    } else {
        path.to_string()
    }
}

/// ActiveSupport's `pluralize` for the pipeline source names.
fn pluralize(word: &str) -> String {
    if word.ends_with("sh") || word.ends_with("ch") || word.ends_with('s') || word.ends_with('x') {
        format!("{word}es")
    } else if let Some(stem) = word
        .strip_suffix('y')
        .filter(|s| !s.ends_with(['a', 'e', 'i', 'o', 'u']))
    {
        format!("{stem}ies")
    } else {
        format!("{word}s")
    }
}

/// A Ruby regex literal `/body/flags` as a [`Regex`].
fn ruby_regex(pattern: &str) -> Option<Regex> {
    let rest = pattern.strip_prefix('/')?;
    let end = rest.rfind('/')?;
    let (body, flags) = (&rest[..end], &rest[end + 1..]);
    if body.is_empty() {
        return None;
    }
    let mut prefix = String::new();
    for f in flags.chars() {
        match f {
            'i' => prefix.push('i'),
            'm' => prefix.push('s'),
            'x' => prefix.push('x'),
            _ => return None,
        }
    }
    let source = if prefix.is_empty() {
        body.to_string()
    } else {
        format!("(?{prefix}){body}")
    };
    Regex::new(&source).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pluralizes_source_names() {
        assert_eq!(pluralize("push"), "pushes");
        assert_eq!(pluralize("schedule"), "schedules");
        assert_eq!(pluralize("merge_request"), "merge_requests");
        assert_eq!(pluralize("api"), "apis");
        assert_eq!(pluralize("external_pull_request"), "external_pull_requests");
    }

    #[test]
    fn ruby_regex_literals() {
        assert!(ruby_regex("/^release-.*$/").is_some_and(|r| r.is_match("release-1.0")));
        assert!(ruby_regex("/^REL/i").is_some_and(|r| r.is_match("release")));
        assert!(ruby_regex("main").is_none());
        assert!(ruby_regex("/x/q").is_none());
        assert!(ruby_regex("//").is_none());
    }

    #[test]
    fn matrix_products_in_key_order() {
        let mut entry = MatrixEntry::new();
        entry.insert("P".into(), vec!["aws".into(), "gcp".into()]);
        entry.insert("R".into(), vec!["eu".into(), "us".into()]);
        let names = matrix_names("deploy", &[entry]);
        assert_eq!(
            names,
            [
                "deploy: [aws, eu]",
                "deploy: [aws, us]",
                "deploy: [gcp, eu]",
                "deploy: [gcp, us]"
            ]
        );
    }
}
