//! Composition must stay linear: a generated 5,000-job pipeline (rules,
//! needs, dependencies, variables, cache, artifacts, defaults) composes in
//! milliseconds per thousand jobs; the figures are printed.

use gantry_config::FileId;
use gantry_config::compose::{compose, validate};
use gantry_config::yaml;
use std::fmt::Write as _;
use std::time::Instant;

/// Milliseconds since `t`. The tests take the best of several runs, which
/// filters out time the thread spent descheduled on a busy machine.
fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Upper bounds that catch blow-ups (quadratic loops) without failing on a
/// loaded machine: measured figures are printed, and are far lower.
fn limit_ms() -> f64 {
    if cfg!(debug_assertions) {
        5000.0
    } else {
        250.0
    }
}

fn pipeline(jobs: usize) -> String {
    let mut s = String::from(
        "stages: [build, test, deploy]\n\
         variables:\n  GLOBAL: one\n  COUNT: 5\n\
         default:\n  image: alpine:3\n  retry: 1\n  before_script: [echo setup]\n",
    );
    for i in 0..jobs {
        let stage = ["build", "test", "deploy"][i % 3];
        let _ = write!(
            s,
            "job_{i}:\n  stage: {stage}\n  script:\n    - echo {i}\n    - [make, test]\n  variables:\n    N: {i}\n  \
             rules:\n    - if: '$CI_COMMIT_BRANCH == \"main\"'\n      when: on_success\n    - changes: [src/{i}/**]\n  \
             cache:\n    key: k{i}\n    paths: [vendor/]\n  artifacts:\n    paths: [out/{i}]\n    expire_in: 1 day\n  \
             timeout: 30m\n",
        );
        if i % 3 != 0 {
            let prev = i - 1;
            let _ = write!(s, "  needs: [job_{prev}]\n  dependencies: [job_{prev}]\n");
        }
    }
    s
}

/// Best-of-`runs` CPU milliseconds of composing a generated pipeline.
fn compose_ms(jobs: usize, runs: usize) -> f64 {
    let text = pipeline(jobs);
    let root = yaml::parse(
        &text,
        FileId(0),
        &yaml::Limits {
            max_bytes: 64 << 20,
            ..yaml::Limits::default()
        },
    )
    .expect("generated pipeline parses");
    let config = compose(&root).unwrap_or_else(|d| panic!("{:?}", &d[..d.len().min(3)]));
    assert_eq!(config.jobs.len(), jobs);
    drop(config);
    let mut best = f64::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        let c = compose(&root).expect("valid");
        best = best.min(ms(t));
        assert_eq!(c.jobs.len(), jobs);
    }
    best
}

#[test]
fn composing_5000_jobs_is_fast() {
    let small = compose_ms(1000, 5);
    let big = compose_ms(5000, 5);
    println!("compose: 1000 jobs {small:.2} ms, 5000 jobs {big:.2} ms (best of 5)");
    assert!(
        big < limit_ms(),
        "compose took {big:.1} ms for 5000 jobs (limit {} ms)",
        limit_ms()
    );
}

#[test]
fn validating_5000_jobs_is_fast() {
    let text = pipeline(5000);
    let root = yaml::parse(
        &text,
        FileId(0),
        &yaml::Limits {
            max_bytes: 64 << 20,
            ..yaml::Limits::default()
        },
    )
    .expect("parses");
    let t = Instant::now();
    assert!(validate(&root).is_empty());
    let took = ms(t);
    println!("validate of 5000 jobs: {took:.2} ms");
    assert!(took < limit_ms(), "{took} ms");
}

#[test]
fn errors_in_a_large_pipeline_stay_linear() {
    // Every job needs a missing job: suggestions must not turn quadratic.
    let mut text = String::new();
    for i in 0..5000 {
        let _ = writeln!(text, "job_{i}:\n  script: s\n  needs: [missing_{i}]");
    }
    let root = yaml::parse(
        &text,
        FileId(0),
        &yaml::Limits {
            max_bytes: 64 << 20,
            ..yaml::Limits::default()
        },
    )
    .expect("parses");
    let t = Instant::now();
    let errors = compose(&root).expect_err("needs are missing");
    let took = ms(t);
    assert_eq!(errors.len(), 5000);
    println!("compose of 5000 broken jobs: {took:.2} ms");
    assert!(took < limit_ms(), "{took} ms");
}
