//! `extends:` through `load::merge`: parents in order, deep merge, the
//! depth limit, cycles and bad bases, and extends across includes.

use gantry_config::Sources;
use gantry_config::load::{LoadOptions, MemorySource, merge};
use serde_json::{Value, json};

fn run(yaml: &str) -> Result<Value, Vec<String>> {
    let src = MemorySource::single(".gitlab-ci.yml", yaml);
    let mut sources = Sources::new();
    merge(&src, &LoadOptions::new(".gitlab-ci.yml"), &mut sources)
        .map(|n| n.to_json())
        .map_err(|errors| errors.iter().map(|d| d.short(&sources)).collect())
}

#[test]
fn multiple_parents_merge_in_order_and_the_job_wins() {
    let v = run(r#"
.base:
  image: ruby:3
  variables: {A: base, B: base}
  script: [base]
  rules:
    - if: $X
.other:
  variables: {B: other, C: other}
  script: [other]
  tags: [docker]
job:
  extends: [.base, .other]
  variables: {C: job}
  before_script: [setup]
"#)
    .expect("valid");
    assert_eq!(
        v["job"],
        json!({
            "image": "ruby:3",
            "variables": {"A": "base", "B": "other", "C": "job"},
            "script": ["other"],
            "rules": [{"if": "$X"}],
            "tags": ["docker"],
            "extends": [".base", ".other"],
            "before_script": ["setup"],
        })
    );
    // Bases are untouched, and keep their own extends-free content.
    assert_eq!(v[".base"]["script"], json!(["base"]));
}

#[test]
fn chains_resolve_bases_first_and_hashes_merge_deeply() {
    let v = run(r#"
.a:
  cache: {key: a, paths: [a], policy: pull}
  variables: {LEVEL: a}
.b:
  extends: .a
  cache: {paths: [b]}
  variables: {LEVEL: b}
job:
  extends: .b
  script: make
"#)
    .expect("valid");
    assert_eq!(
        v["job"]["cache"],
        json!({"key": "a", "paths": ["b"], "policy": "pull"})
    );
    assert_eq!(v["job"]["variables"], json!({"LEVEL": "b"}));
    assert_eq!(v["job"]["extends"], ".b");
    assert_eq!(v[".b"]["cache"]["key"], "a", "hidden jobs are extended too");
}

fn chain(levels: usize) -> String {
    let mut yaml = String::from(".l0:\n  script: x\n");
    for i in 1..=levels {
        yaml.push_str(&format!(".l{i}:\n  extends: .l{}\n", i - 1));
    }
    yaml.push_str(&format!("job:\n  extends: .l{levels}\n"));
    yaml
}

#[test]
fn eleven_levels_are_allowed_twelve_are_not() {
    // `job` plus .l10 … .l1 extending: 11 levels.
    let v = run(&chain(10)).expect("11 levels are allowed");
    assert_eq!(v["job"]["script"], "x");
    let e = run(&chain(11)).expect_err("12 levels");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("nesting too deep in `extends`"), "{e:?}");
}

#[test]
fn circular_extends_name_the_chain() {
    let e = run("a:\n  extends: b\n  script: x\nb:\n  extends: c\nc:\n  extends: a\n")
        .expect_err("cycle");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with(".gitlab-ci.yml:7:12:"), "{e:?}");
    assert!(
        e[0].contains("circular dependency detected in `extends` (a → b → c → a)"),
        "{e:?}"
    );

    let own = run("a:\n  extends: a\n  script: x\n").expect_err("self");
    assert!(own[0].contains("(a → a)"), "{own:?}");
}

#[test]
fn unknown_and_invalid_bases_are_reported_together() {
    let e = run("a:\n  extends: .missing\n  script: x\n.str: hello\nb:\n  extends: [.str]\n  script: x\nc:\n  extends: [1.5]\n")
        .expect_err("bad bases");
    assert_eq!(e.len(), 3, "{e:?}");
    assert_eq!(
        e[0],
        ".gitlab-ci.yml:2:12: a: `extends` target `.missing` is not defined"
    );
    assert_eq!(
        e[1],
        ".gitlab-ci.yml:6:13: b: invalid base hashes in `extends` (.str)"
    );
    assert!(e[2].starts_with(".gitlab-ci.yml:9:13:"), "{e:?}");
}

#[test]
fn extends_sees_included_templates() {
    let src = MemorySource::new()
        .with_file(
            ".gitlab-ci.yml",
            "include: t.yml\njob:\n  extends: .t\n  script: own\n",
        )
        .with_file("t.yml", ".t:\n  image: alpine\n  script: template\n");
    let mut sources = Sources::new();
    let v = merge(&src, &LoadOptions::new(".gitlab-ci.yml"), &mut sources)
        .expect("valid")
        .to_json();
    assert_eq!(
        v["job"],
        json!({"image": "alpine", "script": "own", "extends": ".t"})
    );
}

#[test]
fn errors_in_bases_keep_their_file_position() {
    // A value inherited from a template keeps its template's position, so a
    // later validation error points at the template.
    let src = MemorySource::new()
        .with_file(".gitlab-ci.yml", "include: t.yml\njob:\n  extends: .t\n")
        .with_file("t.yml", ".t:\n  image: alpine\n");
    let mut sources = Sources::new();
    let merged = merge(&src, &LoadOptions::new(".gitlab-ci.yml"), &mut sources).expect("valid");
    let image = merged
        .as_map()
        .and_then(|m| m.get("job"))
        .and_then(|j| j.as_map())
        .and_then(|j| j.get("image"))
        .expect("image");
    assert_eq!(sources.name(image.span.file), "t.yml");
    assert_eq!(image.span.line, 2);
}

#[test]
fn many_jobs_sharing_templates_extend_quickly() {
    let mut yaml = String::from(
        ".base:\n  image: alpine\n  variables: {A: '1'}\n.mid:\n  extends: .base\n  tags: [x]\n",
    );
    for i in 0..5000 {
        yaml.push_str(&format!(
            "job{i}:\n  extends: [.mid]\n  script: [echo {i}]\n"
        ));
    }
    let start = std::time::Instant::now();
    let v = run(&yaml).expect("valid");
    let took = start.elapsed();
    assert_eq!(v["job4999"]["image"], "alpine");
    // Debug builds are slow; this guards against quadratic behaviour only.
    assert!(took.as_secs_f64() < 5.0, "took {took:?}");
}

/// `cargo test --release -p gantry-config --test load_extends -- --ignored --nocapture`
#[test]
#[ignore = "timing; run in release"]
fn timing_5000_jobs_full_load() {
    let mut yaml = String::from(
        "stages: [build, test, deploy]\nvariables:\n  GLOBAL: g\n.defaults: &defaults\n  image: alpine:3\n  tags: [docker]\n.base:\n  <<: *defaults\n  variables: {A: '1'}\n  before_script: [echo setup]\n.test:\n  extends: .base\n  stage: test\n  rules:\n    - if: $CI_COMMIT_BRANCH == \"main\"\n    - when: manual\n",
    );
    for i in 0..5000 {
        if i % 2 == 0 {
            yaml.push_str(&format!(
                "build{i}:\n  extends: .base\n  stage: build\n  script: [make {i}]\n"
            ));
        } else {
            yaml.push_str(&format!(
                "test{i}:\n  extends: [.test]\n  needs: [build{}]\n  script:\n    - !reference [.base, before_script]\n    - make test {i}\n",
                i - 1
            ));
        }
    }
    let src = MemorySource::single(".gitlab-ci.yml", yaml.as_str());
    let opts = LoadOptions::new(".gitlab-ci.yml");
    let mut best = std::time::Duration::MAX;
    for _ in 0..5 {
        let start = std::time::Instant::now();
        let mut sources = Sources::new();
        let merged = merge(&src, &opts, &mut sources).expect("valid");
        let merge_time = start.elapsed();
        let loaded = gantry_config::load::load(&src, &opts);
        let total = start.elapsed();
        best = best.min(merge_time);
        eprintln!(
            "{} bytes: merge (yaml+include+extends+reference) {merge_time:?}; + full load {:?} ({} jobs)",
            yaml.len(),
            total - merge_time,
            loaded.map(|l| l.config.jobs.len()).unwrap_or(0)
        );
        assert!(merged.as_map().is_some());
    }
    eprintln!("best merge: {best:?}");
}
