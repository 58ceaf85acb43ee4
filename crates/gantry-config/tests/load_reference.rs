//! `!reference` through `load::merge`: after extends, nested, missing,
//! circular, and arrays inside scripts.

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
fn references_resolve_and_arrays_stay_nested_in_scripts() {
    let v = run(r#"
.setup:
  script:
    - echo one
    - echo two
  variables:
    A: a
job:
  variables: !reference [.setup, variables]
  script:
    - !reference [.setup, script]
    - echo three
"#)
    .expect("valid");
    assert_eq!(v["job"]["variables"], json!({"A": "a"}));
    assert_eq!(
        v["job"]["script"],
        json!([["echo one", "echo two"], "echo three"])
    );
}

#[test]
fn references_see_extends_and_nested_references() {
    let v = run(r#"
.base:
  script: [base]
.child:
  extends: .base
  after_script: [after]
.indirect:
  before_script:
    - !reference [.child, script]
    - !reference [.child, after_script]
job:
  script: !reference [.indirect, before_script]
"#)
    .expect("valid");
    assert_eq!(v["job"]["script"], json!([["base"], ["after"]]));
}

#[test]
fn missing_references_are_all_reported() {
    let e = run("job:\n  script:\n    - !reference [.nope, script]\n  image: !reference [job, script, first]\n").expect_err("missing");
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(
        e[0],
        r#".gitlab-ci.yml:3:7: !reference [".nope", "script"] could not be found"#
    );
    assert!(
        e[1].contains(r#"!reference ["job", "script", "first"] could not be found"#),
        "{e:?}"
    );
}

#[test]
fn circular_references_are_reported() {
    let e = run(".a:\n  script: !reference [.b, script]\n.b:\n  script: !reference [.a, script]\njob:\n  script: !reference [.a, script]\n")
        .expect_err("cycle");
    assert!(
        e.iter().all(|m| m.contains("is part of a circular chain")),
        "{e:?}"
    );
    assert!(!e.is_empty());

    let own = run("job:\n  script:\n    - !reference [job, script]\n").expect_err("self");
    assert!(
        own[0].contains(r#"!reference ["job", "script"] is part of a circular chain"#),
        "{own:?}"
    );
}

#[test]
fn null_and_false_targets_are_not_found() {
    let e =
        run(".t:\n  a: null\n  b: false\njob:\n  x: !reference [.t, a]\n  y: !reference [.t, b]\n")
            .expect_err("nil");
    assert_eq!(e.len(), 2, "{e:?}");
}

#[test]
fn references_inside_included_files_resolve_against_the_merged_config() {
    let src = MemorySource::new()
        .with_file(".gitlab-ci.yml", "include: t.yml\n.own:\n  script: [own]\n")
        .with_file("t.yml", "job:\n  script: !reference [.own, script]\n");
    let mut sources = Sources::new();
    let v = merge(&src, &LoadOptions::new(".gitlab-ci.yml"), &mut sources)
        .expect("valid")
        .to_json();
    assert_eq!(v["job"]["script"], json!(["own"]));
}

fn chain(levels: usize) -> String {
    let mut yaml = String::from(".r0:\n  s: [base]\n");
    for i in 1..=levels {
        yaml.push_str(&format!(
            ".r{i}:\n  s:\n    - !reference [.r{}, s]\n",
            i - 1
        ));
    }
    yaml.push_str(&format!("job:\n  script: !reference [.r{levels}, s]\n"));
    yaml
}

#[test]
fn nesting_is_limited_to_ten_levels() {
    // `job`'s tag plus nine nested ones.
    let v = run(&chain(9)).expect("ten levels");
    assert!(v["job"]["script"].is_array());
    let e = run(&chain(10)).expect_err("eleven levels");
    assert!(
        e.iter().any(|m| m.contains("more than 10 levels deep")),
        "{e:?}"
    );
    // A long hostile chain fails cleanly instead of exhausting the stack.
    assert!(run(&chain(20_000)).is_err());
}
