//! Property test of `plan` on random models: it never panics, and when it
//! succeeds the pipeline is consistent (every instance is either created or
//! skipped, names are unique, needs point at created jobs of the same or an
//! earlier stage, dependencies at created jobs).

mod plan_support;

use gantry_config::model::{Config, JobDef, Need, Parallel, Rule, StartIn, Variable, When};
use gantry_config::plan::plan;
use indexmap::IndexMap;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

const STAGES: [&str; 5] = [".pre", "build", "test", "deploy", ".post"];
const EXPRS: [&str; 7] = [
    r#"$CI_COMMIT_BRANCH == "main""#,
    "$CI_COMMIT_TAG",
    "$FLAG",
    r#"$CI_JOB_NAME =~ /1/"#,
    r#"$A == "unterminated"#,
    "$CI_NODE_INDEX == \"2\"",
    "",
];

#[derive(Debug, Clone)]
struct JobSpec {
    stage: usize,
    rules: Option<Vec<(usize, Option<When>)>>,
    needs: Option<Vec<(usize, bool)>>,
    parallel: Option<u32>,
    deps: Option<Vec<usize>>,
}

fn when() -> impl Strategy<Value = Option<When>> {
    prop_oneof![
        Just(None),
        Just(Some(When::Never)),
        Just(Some(When::Manual)),
        Just(Some(When::Always)),
        Just(Some(When::Delayed)),
    ]
}

fn job_spec() -> impl Strategy<Value = JobSpec> {
    (
        0..STAGES.len(),
        proptest::option::of(proptest::collection::vec((0..EXPRS.len(), when()), 0..3)),
        proptest::option::of(proptest::collection::vec((0..8usize, any::<bool>()), 0..3)),
        proptest::option::of(1..4u32),
        proptest::option::of(proptest::collection::vec(0..8usize, 0..3)),
    )
        .prop_map(|(stage, rules, needs, parallel, deps)| JobSpec {
            stage,
            rules,
            needs,
            parallel,
            deps,
        })
}

fn build(specs: &[JobSpec]) -> Config {
    let mut jobs = IndexMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let name = format!("j{i}");
        let rules = spec.rules.as_ref().map(|rules| {
            rules
                .iter()
                .map(|(e, w)| Rule {
                    if_expr: (!EXPRS[*e].is_empty()).then(|| EXPRS[*e].to_string()),
                    when: *w,
                    start_in: (*w == Some(When::Delayed)).then(|| StartIn {
                        seconds: 60,
                        text: "1 minute".to_string(),
                    }),
                    ..Rule::default()
                })
                .collect()
        });
        let needs = spec.needs.as_ref().map(|needs| {
            needs
                .iter()
                .map(|(k, optional)| Need {
                    job: format!("j{k}"),
                    artifacts: true,
                    optional: *optional,
                    matrix: None,
                    pipeline: None,
                    project: None,
                    git_ref: None,
                    span: None,
                })
                .collect()
        });
        let def = JobDef {
            name: name.clone(),
            stage: STAGES[spec.stage].to_string(),
            script: vec!["true".into()],
            variables: vec![Variable::new("FLAG", if i % 2 == 0 { "1" } else { "" })],
            rules,
            needs,
            parallel: spec.parallel.map(Parallel::Count),
            dependencies: spec
                .deps
                .as_ref()
                .map(|d| d.iter().map(|k| format!("j{k}")).collect()),
            ..JobDef::default()
        };
        jobs.insert(name, def);
    }
    Config {
        stages: STAGES.iter().map(|s| s.to_string()).collect(),
        jobs,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_consistent(specs in proptest::collection::vec(job_spec(), 1..8), on_main in any::<bool>()) {
        let config = build(&specs);
        let ctx = plan_support::push(if on_main { "main" } else { "feature" });
        let instances: usize = specs.iter().map(|s| s.parallel.unwrap_or(1) as usize).sum();
        match plan(&config, &ctx) {
            Err(diags) => prop_assert!(!diags.is_empty()),
            Ok(p) => {
                prop_assert_eq!(p.jobs.len() + p.skipped.len(), instances);
                let stage_of: HashMap<&str, usize> = p
                    .jobs
                    .iter()
                    .map(|j| (j.name.as_str(), STAGES.iter().position(|s| *s == j.stage).unwrap_or(usize::MAX)))
                    .collect();
                prop_assert_eq!(stage_of.len(), p.jobs.len(), "duplicate job names");
                let mut last_stage = 0;
                for j in &p.jobs {
                    let stage = stage_of[j.name.as_str()];
                    prop_assert!(stage >= last_stage, "jobs out of stage order");
                    last_stage = stage;
                    prop_assert!(j.when != When::Never);
                    for n in j.needs.iter().flatten() {
                        let needed = stage_of.get(n.job.as_str()).copied();
                        prop_assert!(needed.is_some_and(|s| s <= stage), "{} needs {}", j.name, n.job);
                    }
                    let deps: HashSet<&str> = j.dependencies.iter().map(String::as_str).collect();
                    prop_assert_eq!(deps.len(), j.dependencies.len(), "duplicate dependencies");
                    for d in &j.dependencies {
                        prop_assert!(stage_of.contains_key(d.as_str()), "{} depends on missing {}", j.name, d);
                    }
                }
                let stages: Vec<&str> = STAGES.iter().copied().filter(|s| p.jobs.iter().any(|j| j.stage == *s)).collect();
                prop_assert_eq!(p.stages.iter().map(String::as_str).collect::<Vec<_>>(), stages);
            }
        }
    }
}
