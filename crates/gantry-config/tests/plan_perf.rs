//! Planning cost on a 5,000-job pipeline with rules, needs and parallel
//! jobs, built directly as a model so only `plan` is measured. Prints the
//! time; `cargo test --release -p gantry-config --test plan_perf -- --nocapture`
//! for the real figure.

mod plan_support;

use gantry_config::model::{Config, JobDef, Need, Parallel, Rule, Variable, When};
use gantry_config::plan::plan;
use std::time::Instant;

fn big_config(jobs: usize) -> Config {
    let stages: Vec<String> = [".pre", "build", "test", "deploy", ".post"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut config = Config {
        stages: stages.clone(),
        variables: vec![
            Variable::new("GLOBAL", "1"),
            Variable::new("TARGET", "staging"),
        ],
        ..Config::default()
    };
    for i in 0..jobs {
        let stage = ["build", "test", "deploy"][i * 3 / jobs].to_string();
        let name = format!("job-{i}");
        let rules = vec![
            Rule {
                if_expr: Some(r#"$CI_COMMIT_BRANCH == "release" || $FORCE"#.into()),
                when: Some(When::Never),
                ..Rule::default()
            },
            Rule {
                if_expr: Some(format!(
                    r#"$CI_COMMIT_BRANCH =~ /^(main|feature)/ && $JOB_KIND == "k{}""#,
                    i % 7
                )),
                variables: vec![Variable::new("FROM_RULE", "yes")],
                ..Rule::default()
            },
            Rule {
                if_expr: Some("$CI_PIPELINE_SOURCE == \"push\"".into()),
                when: Some(When::Manual),
                ..Rule::default()
            },
        ];
        // Each job after the first few needs two earlier jobs of an earlier
        // or the same stage.
        let needs = (i >= 10).then(|| {
            let first_of_stage = (0..i)
                .find(|&k| ["build", "test", "deploy"][k * 3 / jobs] == stage)
                .unwrap_or(0);
            let a = if first_of_stage > 2 {
                first_of_stage - 1
            } else {
                i - 1
            };
            let b = if first_of_stage > 2 {
                first_of_stage - 2
            } else {
                i - 2
            };
            [a, b]
                .iter()
                .map(|k| Need {
                    job: format!("job-{k}"),
                    artifacts: true,
                    optional: false,
                    matrix: None,
                    pipeline: None,
                    project: None,
                    git_ref: None,
                    span: None,
                })
                .collect()
        });
        let mut variables = config.variables.clone();
        variables.push(Variable::new("JOB_KIND", format!("k{}", i % 7)));
        let job = JobDef {
            name: name.clone(),
            stage,
            script: vec![format!("echo {i}")],
            variables,
            rules: Some(rules),
            needs,
            parallel: (i % 500 == 499).then_some(Parallel::Count(2)),
            ..JobDef::default()
        };
        config.jobs.insert(name, job);
    }
    config
}

#[test]
fn plans_five_thousand_jobs_quickly() {
    let config = big_config(5000);
    let ctx = plan_support::push("main");
    let mut best = f64::MAX;
    let mut created = 0;
    let runs = if cfg!(debug_assertions) { 5 } else { 30 };
    for _ in 0..runs {
        let start = Instant::now();
        let p = plan(&config, &ctx).expect("plan");
        best = best.min(start.elapsed().as_secs_f64() * 1000.0);
        created = p.jobs.len();
    }
    println!("planned 5000 jobs ({created} created) in {best:.2} ms (best of {runs})");
    // 10 parallel jobs add one instance each.
    assert_eq!(created, 5010);
    // Generous bound for unoptimised builds on a shared machine; the
    // release figure is a few milliseconds.
    assert!(best < 2000.0, "{best} ms");
}
