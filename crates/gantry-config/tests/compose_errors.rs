//! Error output of composition on whole files: every problem in one run,
//! each at `file:line:col` with the source line, a caret and what was
//! expected.

use gantry_config::Sources;
use gantry_config::compose::compose;
use gantry_config::yaml;

const BROKEN: &str = "\
stages: [build, test]
variables:
  MODE:
    value: fast
    options: [slow, careful]
build:
  stage: build
  scirpt: make
test:
  stage: tset
  script: make test
  needs: [biuld]
  timeout: 2 fortnights
deploy:
  stage: test
  script: ./deploy
  when: delayed
  environment:
    name: prod
    on_stop: stop_prod
";

fn render_all(text: &str) -> (Vec<(u32, u32, String)>, String) {
    let mut sources = Sources::new();
    let file = sources.add(".gitlab-ci.yml", text);
    let root = yaml::parse(text, file, &yaml::Limits::default()).expect("valid YAML");
    let errors = compose(&root).expect_err("the file is invalid");
    let positions = errors
        .iter()
        .map(|d| {
            let s = d.span.expect("every error has a position");
            (s.line, s.col, d.message.clone())
        })
        .collect();
    let rendered = errors
        .iter()
        .map(|d| d.render(&sources))
        .collect::<Vec<_>>()
        .join("\n");
    (positions, rendered)
}

#[test]
fn every_error_is_reported_with_its_position_and_expectation() {
    let (errors, rendered) = render_all(BROKEN);
    let expect = [
        (4, 12, "`variables:MODE:value` must be one of its `options`"),
        (
            8,
            3,
            "unknown key `scirpt` in job `build`; did you mean `script`?",
        ),
        (13, 12, "`timeout` in job `test` must be a duration"),
        (
            17,
            9,
            "job `deploy` uses `when: delayed` without `start_in`",
        ),
        (
            6,
            1,
            "job `build` config should implement the script:, run:, or trigger: keyword",
        ),
        (10, 10, "job `test`: chosen stage `tset` does not exist"),
        (
            12,
            11,
            "job `test` needs `biuld`, which is not a job; did you mean `build`?",
        ),
        (
            20,
            14,
            "job `deploy`: on_stop job `stop_prod` is not defined",
        ),
    ];
    for (line, col, needle) in expect {
        assert!(
            errors
                .iter()
                .any(|(l, c, m)| *l == line && *c == col && m.contains(needle)),
            "missing {line}:{col} {needle:?} in:\n{errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");

    // The rendering shows the file, the line and a caret with the expectation.
    assert!(
        rendered.contains("error: unknown key `scirpt` in job `build`; did you mean `script`?\n")
    );
    assert!(
        rendered.contains("  --> .gitlab-ci.yml:8:3\n"),
        "{rendered}"
    );
    assert!(rendered.contains(" 8 |   scirpt: make\n"), "{rendered}");
    assert!(
        rendered.contains("   |   ^ expected one of: script, stage, image,"),
        "{rendered}"
    );
    assert!(
        rendered.contains("  --> .gitlab-ci.yml:10:10\n"),
        "{rendered}"
    );
    assert!(
        rendered.contains("^ expected one of the stages: .pre, build, test, .post"),
        "{rendered}"
    );
}

#[test]
fn a_fragment_without_jobs_says_so() {
    let (errors, rendered) = render_all("variables:\n  A: b\n.hidden:\n  script: x\n");
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].2,
        "jobs config should contain at least one visible job"
    );
    assert!(rendered.contains("--> .gitlab-ci.yml:1:1"), "{rendered}");
}
