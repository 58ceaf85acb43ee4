//! Property test: mutated configurations using includes, inputs, extends
//! and `!reference` never make the loader panic; it returns the merged
//! configuration or positioned errors.

use gantry_config::Sources;
use gantry_config::load::{LoadOptions, MemorySource, merge};
use proptest::prelude::*;

const MAIN: &str = r#"include:
  - local: a.yml
  - local: 'ci/*.yml'
    rules:
      - if: $X == "1"
      - exists: [a.yml]
  - local: t.yml
    inputs: {name: x, n: 2}
  - remote: https://example.com/r.yml
.base: &base
  image: alpine
  variables: {A: '1'}
  script: [echo base]
job:
  <<: *base
  extends: [.tmpl, .base]
  script:
    - !reference [.base, script]
    - echo $[[ inputs.name ]]
other:
  extends: job
  before_script: !reference [.tmpl, before_script]
"#;

const A: &str = ".tmpl:\n  before_script: [setup]\n  extends: .base\ninclude: ci/b.yml\n";
const B: &str = "b:\n  script: !reference [job, script]\n";
const T: &str = "spec:\n  inputs:\n    name:\n    n:\n      type: number\n      default: 1\n---\n\"t-$[[ inputs.name ]]\":\n  parallel: $[[ inputs.n ]]\n  script:\n    - echo $[[ inputs.name | truncate(0,1) ]]\n";

fn source(main: &str, a: &str, t: &str) -> MemorySource {
    MemorySource::new()
        .with_file(".gitlab-ci.yml", main)
        .with_file("a.yml", a)
        .with_file("ci/b.yml", B)
        .with_file("t.yml", t)
        .with_remote("https://example.com/r.yml", "r:\n  extends: .tmpl\n")
}

/// Applies edits (position fraction, replacement) to `text`.
fn mutate(text: &str, edits: &[(f64, usize, String)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (at, remove, insert) in edits {
        let pos = ((chars.len() as f64) * at) as usize;
        let pos = pos.min(chars.len());
        let end = (pos + remove).min(chars.len());
        chars.splice(pos..end, insert.chars());
    }
    chars.into_iter().collect()
}

fn edits() -> impl Strategy<Value = Vec<(f64, usize, String)>> {
    let token = prop_oneof![
        Just(String::new()),
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just(": ".to_string()),
        Just("- ".to_string()),
        Just("!reference [job, script]".to_string()),
        Just("extends: other".to_string()),
        Just("include: a.yml".to_string()),
        Just("include: .gitlab-ci.yml".to_string()),
        Just("$[[ inputs.n ]]".to_string()),
        Just("*base".to_string()),
        Just("&x".to_string()),
        Just("<<: *base".to_string()),
        Just("---\n".to_string()),
        Just("[".to_string()),
        Just("{".to_string()),
        "[ -~]{0,6}",
    ];
    prop::collection::vec((0.0f64..1.0, 0usize..8, token), 1..6)
}

fn run(src: &MemorySource) {
    let mut opts = LoadOptions::new(".gitlab-ci.yml");
    opts.variables.insert("X".into(), "1".into());
    let mut sources = Sources::new();
    match merge(src, &opts, &mut sources) {
        Ok(node) => {
            let _ = gantry_config::emit::to_yaml(&node);
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for d in &errors {
                let _ = d.render(&sources);
            }
        }
    }
}

#[test]
fn the_unmutated_configuration_loads() {
    let mut opts = LoadOptions::new(".gitlab-ci.yml");
    opts.variables.insert("X".into(), "1".into());
    let mut sources = Sources::new();
    let merged = merge(&source(MAIN, A, T), &opts, &mut sources)
        .map_err(|e| e.iter().map(|d| d.short(&sources)).collect::<Vec<_>>());
    let v = merged.expect("valid").to_json();
    assert_eq!(v["t-x"]["parallel"], 2);
    assert_eq!(v["other"]["before_script"], serde_json::json!(["setup"]));
    assert!(v.get("b").is_some() && v.get("r").is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn mutated_configurations_never_panic(main in edits(), a in edits(), t in edits()) {
        run(&source(&mutate(MAIN, &main), &mutate(A, &a), &mutate(T, &t)));
    }
}
