//! `emit::to_yaml` round-trips: the emitted YAML parses back (with GitLab's
//! YAML 1.1 reading) to the same values, for hand-picked tricky strings and
//! for random trees.

use gantry_config::emit::to_yaml;
use gantry_config::node::{Map, Node, Value};
use gantry_config::yaml::{Limits, parse};
use gantry_config::{FileId, Span};
use proptest::prelude::*;

fn round_trip(node: &Node) {
    let text = to_yaml(node);
    let back = match parse(&text, FileId(0), &Limits::default()) {
        Ok(n) => n,
        Err(e) => panic!("emitted YAML does not parse: {e:?}\n---\n{text}"),
    };
    assert_eq!(back.to_json(), node.to_json(), "\n---\n{text}");
}

fn s(text: &str) -> Node {
    Node::str(text, Span::default())
}

fn map(entries: Vec<(&str, Node)>) -> Node {
    let mut m = Map::new();
    for (k, v) in entries {
        m.insert(k, Span::default(), v);
    }
    Node::new(Value::Map(m), Span::default())
}

fn seq(items: Vec<Node>) -> Node {
    Node::new(Value::Seq(items), Span::default())
}

const TRICKY: &[&str] = &[
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "true",
    "False",
    "null",
    "~",
    "",
    " ",
    "1.0",
    "1",
    "-1",
    "+1",
    "0x1F",
    "0o17",
    "017",
    "1_000",
    "1,000",
    "1:30",
    "1:30.5",
    ".5",
    "1e5",
    ".inf",
    "-.Inf",
    ".NaN",
    "2024-01-01",
    "2001-12-14t21:59:43.10-05:00",
    "a: b",
    "a:b",
    "a #b",
    "a#b",
    "#x",
    "- x",
    "-x",
    "--x",
    "---",
    "...",
    "? x",
    "[x]",
    "{x}",
    "x, y",
    "*a",
    "&a",
    "!tag",
    "|",
    ">",
    "'",
    "\"",
    "%x",
    "@x",
    "`x",
    "<<",
    "=",
    "tab\there",
    "line\nbreak",
    "trailing\n",
    "two\n\n",
    "\nlead",
    " lead",
    "trail ",
    "back\\slash",
    "uni ✓ code",
    "ctl\u{1}x",
    "a\r\nb",
    "script:\n  - x\n",
    "  indented\nlines",
    "blank\n  \nline",
    "echo \"$CI_COMMIT_SHA\"",
    "$[[ inputs.x ]]",
    "3rd-party",
    "v1.2.3",
    "1.2.3",
    "~x",
    "x~",
];

#[test]
fn tricky_strings_round_trip_as_values_and_keys() {
    for t in TRICKY {
        round_trip(&map(vec![("k", s(t))]));
        round_trip(&seq(vec![s(t), seq(vec![s(t)])]));
        // A `<<` key is always a merge key when read, so no parsed
        // configuration holds one.
        if *t != "<<" {
            round_trip(&map(vec![(t, s("v"))]));
        }
    }
}

#[test]
fn scalars_and_shapes_round_trip() {
    let node = map(vec![
        ("stages", seq(vec![s("build"), s("test")])),
        ("empty_map", map(vec![])),
        ("empty_seq", seq(vec![])),
        ("null", Node::null(Span::default())),
        ("bool", Node::new(Value::Bool(false), Span::default())),
        ("int", Node::new(Value::Int(-42), Span::default())),
        ("big", Node::new(Value::Int(i64::MAX), Span::default())),
        ("float", Node::new(Value::Float(1.5), Span::default())),
        ("whole_float", Node::new(Value::Float(2.0), Span::default())),
        ("tiny", Node::new(Value::Float(1.25e-9), Span::default())),
        ("huge", Node::new(Value::Float(-3.5e30), Span::default())),
        (
            "job",
            map(vec![
                (
                    "script",
                    seq(vec![
                        s("echo a"),
                        seq(vec![s("nested"), s("yes")]),
                        s("multi\nline\n"),
                    ]),
                ),
                (
                    "rules",
                    seq(vec![
                        map(vec![("if", s("$A == \"b\"")), ("when", s("never"))]),
                        map(vec![]),
                    ]),
                ),
                (
                    "matrix",
                    seq(vec![
                        seq(vec![]),
                        map(vec![("X", seq(vec![s("1"), s("2")]))]),
                    ]),
                ),
            ]),
        ),
    ]);
    round_trip(&node);
    let text = to_yaml(&node);
    assert!(text.starts_with("stages:\n  - build\n  - test\n"), "{text}");
    assert!(
        text.contains("    - |\n      multi\n      line\n"),
        "{text}"
    );
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(TRICKY.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        "[ -~\\n\\t]{0,12}",
        "[a-z0-9:#\\-\\[\\]{}*&!|>'\"%@` .,?~$=<]{0,10}",
        any::<String>().prop_map(|s| s.chars().take(8).collect()),
    ]
}

fn arb_node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        arb_string().prop_map(Value::Str),
    ]
    .prop_map(|v| Node::new(v, Span::default()));
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5)
                .prop_map(|items| Node::new(Value::Seq(items), Span::default())),
            prop::collection::vec((arb_string(), inner), 0..5).prop_map(|entries| {
                let mut m = Map::new();
                for (k, v) in entries.into_iter().filter(|(k, _)| k != "<<") {
                    m.insert(k, Span::default(), v);
                }
                Node::new(Value::Map(m), Span::default())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn random_trees_round_trip(node in arb_node()) {
        round_trip(&node);
    }
}
