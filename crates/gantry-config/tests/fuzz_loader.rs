//! Property test of the whole loader: random and mutated documents go
//! through yaml → include → extends → !reference → compose → plan and must
//! never panic. Errors are fine; panics are bugs.

use gantry_config::context::{Context, GitFacts};
use gantry_config::load::{LoadOptions, MemorySource, load};
use proptest::prelude::*;

const SEED_DOCS: &[&str] = &[
    include_str!("../../../examples/seeds/seed001/.gitlab-ci.yml"),
    include_str!("../../../examples/seeds/seed002/.gitlab-ci.yml"),
    include_str!("../../../examples/seeds/seed004/.gitlab-ci.yml"),
    include_str!("../../../examples/seeds/seed000-with-job/.gitlab-ci.yml"),
    "stages: [a, b]\n.t: &t {script: [x], rules: [{if: '$A == \"1\" || $B =~ /x/i', when: manual}]}\nj:\n  <<: *t\n  stage: a\n  parallel: {matrix: [{P: [1, 2], Q: x}]}\nk:\n  extends: .t\n  stage: b\n  needs: [{job: j, parallel: {matrix: [{P: '1', Q: x}]}}]\n  script: !reference [.t, script]\ninclude: [{local: other.yml, rules: [{exists: ['*.yml']}]}]\n",
];

fn run(text: &str) {
    let src = MemorySource::new()
        .with_file(".gitlab-ci.yml", text)
        .with_file("other.yml", "o:\n  script: [echo o]\n");
    if let Ok(loaded) = load(&src, &LoadOptions::new(".gitlab-ci.yml")) {
        let facts = GitFacts {
            sha: "a".repeat(40),
            ref_name: "main".into(),
            default_branch: "main".into(),
            ..GitFacts::default()
        };
        let ctx = Context::new(&facts, "push", &[]);
        let _ = gantry_config::plan::plan(&loaded.config, &ctx);
        let _ = gantry_config::emit::to_yaml(&loaded.merged);
    }
}

fn mutate(doc: &str, ops: &[(u16, u8, u8)]) -> String {
    const PIECES: &[&str] = &[
        ":",
        "-",
        " ",
        "\n",
        "  ",
        "[",
        "]",
        "{",
        "}",
        "&a",
        "*a",
        "<<: *a",
        "!reference [a, b]",
        "'",
        "\"",
        "#",
        "|",
        ">",
        "extends: j",
        "needs: [k]",
        "rules:\n  - if: $X",
        "script: ",
        "yes",
        "~",
        "0x1",
        "1.10",
        "\t",
        "---\n",
        "include: x.yml",
        "parallel: 3",
        "\\",
    ];
    let mut chars: Vec<char> = doc.chars().collect();
    for &(pos, kind, piece) in ops {
        if chars.is_empty() {
            chars.push('a');
        }
        let at = pos as usize % (chars.len() + 1);
        match kind % 3 {
            0 => {
                let p: Vec<char> = PIECES[piece as usize % PIECES.len()].chars().collect();
                chars.splice(at..at, p);
            }
            1 => {
                let end = (at + 1 + piece as usize % 8).min(chars.len());
                if at < end {
                    chars.drain(at..end);
                }
            }
            _ => {
                if at < chars.len() {
                    chars[at] = PIECES[piece as usize % PIECES.len()]
                        .chars()
                        .next()
                        .unwrap_or('x');
                }
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn mutated_documents_never_panic(seed in 0usize..SEED_DOCS.len(), ops in prop::collection::vec((any::<u16>(), any::<u8>(), any::<u8>()), 1..12)) {
        run(&mutate(SEED_DOCS[seed], &ops));
    }

    #[test]
    fn random_yamlish_text_never_panics(text in "[a-z:\\-\\[\\]{}&*!<>|'\" \n$=~/.0-9#]{0,300}") {
        run(&text);
    }
}
