//! `gantry lint` on invalid files: exit codes, every error in one run, and
//! snapshots of the rendered errors (file:line:column, the source line, a
//! caret, what was expected).

mod common;
use common::{Cmd, git_repo};

fn lint_stderr(files: &[(&str, &str)]) -> String {
    let repo = git_repo(files);
    let ran = Cmd::new().dir(repo.path()).args(&["lint"]).run().status(1);
    ran.stderr
}

#[test]
fn exit_codes() {
    let repo = git_repo(&[(".gitlab-ci.yml", "job:\n  script: echo ok\n")]);
    Cmd::new().dir(repo.path()).args(&["lint"]).run().status(0);
    Cmd::new()
        .dir(repo.path())
        .args(&["lint", "missing.yml"])
        .run()
        .status(2)
        .stderr_has("missing.yml");
    Cmd::new()
        .dir(repo.path())
        .args(&["lint", "--bogus"])
        .run()
        .status(2);
    Cmd::new()
        .dir(repo.path())
        .args(&["plan", "--json", "missing.yml"])
        .run()
        .status(2);
    let empty = tempfile::tempdir().expect("tempdir");
    Cmd::new()
        .dir(empty.path())
        .args(&["lint"])
        .run()
        .status(2)
        .stderr_has(".gitlab-ci.yml");
}

#[test]
fn typo_wrong_type_and_missing_need_in_one_run() {
    let err = lint_stderr(&[(
        ".gitlab-ci.yml",
        "stages: [build, test]\nbuild:\n  stage: build\n  scirpt: make\ntest:\n  stage: test\n  script: make test\n  timeout: [1]\n  needs: [biuld]\n",
    )]);
    insta::assert_snapshot!("typo_type_need", err);
    assert!(err.contains(".gitlab-ci.yml:4:3"), "{err}");
    assert!(err.contains("4 errors found"), "{err}");
}

#[test]
fn yaml_syntax() {
    insta::assert_snapshot!(
        "yaml_syntax",
        lint_stderr(&[(".gitlab-ci.yml", "job:\n  script: [a, b\n")])
    );
}

#[test]
fn duplicate_keys_warn_and_strict_makes_them_errors() {
    let repo = git_repo(&[(".gitlab-ci.yml", "job:\n  script: a\n  script: b\n")]);
    // GitLab accepts the file (the last value wins): so does lint, loudly.
    let ran = Cmd::new().dir(repo.path()).args(&["lint"]).run().status(0);
    assert!(
        ran.stderr
            .contains("warning: duplicate key `script`: this value (line 3, column 3) replaces the one at line 2, column 3"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains(".gitlab-ci.yml:3:3"), "{}", ran.stderr);
    assert!(ran.stderr.contains("1 warning"), "{}", ran.stderr);
    let ran = Cmd::new()
        .dir(repo.path())
        .args(&["lint", "--strict"])
        .run()
        .status(1);
    assert!(
        ran.stderr.contains("error: duplicate key `script`"),
        "{}",
        ran.stderr
    );
    Cmd::new()
        .dir(repo.path())
        .args(&["plan", "--strict"])
        .run()
        .status(1);
    let ran = Cmd::new()
        .dir(repo.path())
        .args(&["plan", "--json"])
        .run()
        .status(0);
    assert!(
        ran.stdout.contains("\"b\""),
        "the last value wins: {}",
        ran.stdout
    );
}

#[test]
fn billion_laughs_is_rejected() {
    let mut doc = String::from("a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
    let mut prev = "a".to_string();
    for n in ["b", "c", "d", "e", "f", "g", "h", "i"] {
        doc.push_str(&format!("{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        prev = n.to_string();
    }
    let started = std::time::Instant::now();
    let err = lint_stderr(&[(".gitlab-ci.yml", &doc)]);
    assert!(err.contains("aliases expand to more than"), "{err}");
    assert!(started.elapsed().as_secs() < 5);
}

#[test]
fn include_extends_and_reference_errors_point_into_their_files() {
    let err = lint_stderr(&[
        (
            ".gitlab-ci.yml",
            "include: ci/jobs.yml\n.a:\n  extends: .b\n.b:\n  extends: .a\njob:\n  extends: .a\n",
        ),
        (
            "ci/jobs.yml",
            "other:\n  script: !reference [.missing, script]\n",
        ),
    ]);
    insta::assert_snapshot!("include_extends_cycle", err);
    let err = lint_stderr(&[
        (".gitlab-ci.yml", "include: ci/jobs.yml\n"),
        ("ci/jobs.yml", "job:\n  script: echo\n  when: sometimes\n"),
    ]);
    assert!(err.contains("ci/jobs.yml:3:"), "{err}");
    let err = lint_stderr(&[(
        ".gitlab-ci.yml",
        "include: missing.yml\njob:\n  script: echo\n",
    )]);
    assert!(err.contains("missing.yml"), "{err}");
}

#[test]
fn needs_cycles_and_broken_on_stop() {
    let err = lint_stderr(&[(
        ".gitlab-ci.yml",
        "a:\n  script: x\n  needs: [b]\nb:\n  script: x\n  needs: [a]\ndeploy:\n  script: x\n  environment:\n    name: review\n    on_stop: stop\n",
    )]);
    insta::assert_snapshot!("needs_cycle_on_stop", err);
}

#[test]
fn only_hidden_jobs_is_no_pipeline() {
    let err = lint_stderr(&[(
        ".gitlab-ci.yml",
        ".hidden:\n  script: x\nvariables:\n  A: b\n",
    )]);
    assert!(err.contains("visible job"), "{err}");
}
