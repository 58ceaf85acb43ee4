//! Random documents never make validation or composition panic: trees
//! built from GitLab keywords, job names and values of every type
//! (including `!reference` tags), nested a few levels deep.

use gantry_config::compose::{compose, parse_duration, validate};
use gantry_config::node::{Map, Node, Value};
use gantry_config::{FileId, Span};
use proptest::prelude::*;

/// Keys that reach every parser, plus job names and junk.
const KEYS: &[&str] = &[
    "script",
    "stage",
    "stages",
    "types",
    "type",
    "image",
    "services",
    "variables",
    "rules",
    "needs",
    "dependencies",
    "artifacts",
    "cache",
    "when",
    "allow_failure",
    "start_in",
    "only",
    "except",
    "extends",
    "tags",
    "timeout",
    "retry",
    "parallel",
    "matrix",
    "interruptible",
    "resource_group",
    "environment",
    "on_stop",
    "action",
    "name",
    "coverage",
    "trigger",
    "include",
    "project",
    "file",
    "local",
    "remote",
    "inherit",
    "default",
    "hooks",
    "id_tokens",
    "aud",
    "identity",
    "secrets",
    "vault",
    "release",
    "pages",
    "publish",
    "inputs",
    "run",
    "step",
    "spec",
    "workflow",
    "if",
    "changes",
    "exists",
    "paths",
    "key",
    "files",
    "policy",
    "job",
    "optional",
    "pipeline",
    "value",
    "options",
    "expand",
    "max",
    "exit_codes",
    "reports",
    "junit",
    "build",
    "test",
    "deploy",
    ".hidden",
    "a",
    "b",
    "",
];

fn span() -> Span {
    Span::new(FileId(0), 1, 1, 0)
}

fn scalar() -> impl Strategy<Value = Node> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i64..300).prop_map(Value::Int),
        any::<f64>().prop_map(Value::Float),
        prop::sample::select(KEYS).prop_map(|s| Value::Str(s.to_string())),
        "[ -~]{0,12}".prop_map(Value::Str),
        prop::sample::select(
            &[
                "1h 30m",
                "delayed",
                "manual",
                "never",
                "$A == 'b'",
                "a/b",
                "/x/",
                "3 days"
            ][..]
        )
        .prop_map(|s| Value::Str(s.to_string())),
    ]
    .prop_map(|v| Node::new(v, span()))
}

fn tree() -> impl Strategy<Value = Node> {
    scalar().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5)
                .prop_map(|items| Node::new(Value::Seq(items), span())),
            prop::collection::vec(inner.clone(), 0..3)
                .prop_map(|items| Node::new(Value::Reference(items), span())),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|entries| {
                let mut m = Map::new();
                for (k, v) in entries {
                    m.insert(k, span(), v);
                }
                Node::new(Value::Map(m), span())
            }),
        ]
    })
}

fn map_of(values: impl Strategy<Value = Node>, max: usize) -> impl Strategy<Value = Node> {
    prop::collection::vec((prop::sample::select(KEYS), values), 0..max).prop_map(|entries| {
        let mut m = Map::new();
        for (k, v) in entries {
            m.insert(k, span(), v);
        }
        Node::new(Value::Map(m), span())
    })
}

/// A document: top-level keys to hashes of keywords (jobs, `default`,
/// `workflow`, ...) whose values are random trees, or to random trees.
fn document() -> impl Strategy<Value = Node> {
    let section = prop_oneof![3 => map_of(tree(), 8), 1 => tree()];
    map_of(section, 8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn validation_and_composition_never_panic(root in prop_oneof![4 => document(), 1 => tree()]) {
        let _ = validate(&root);
        if let Err(errors) = compose(&root) {
            prop_assert!(!errors.is_empty());
        }
    }

    #[test]
    fn durations_never_panic(s in "\\PC{0,20}") {
        let _ = parse_duration(&s);
    }
}
