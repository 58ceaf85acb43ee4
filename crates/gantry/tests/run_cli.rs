//! `gantry run`, `gantry logs` and `gantry shell` as a user calls them, on
//! real git repositories. Assertions are on what the jobs printed, exit
//! codes and the event stream, not on the human formatting.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

fn repo(ci: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".gitlab-ci.yml"), ci).unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "-A"]);
    git(
        dir.path(),
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-qm",
            "init",
        ],
    );
    dir
}

fn gantry(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const PIPELINE: &str = r#"
stages: [build, test]
build:
  stage: build
  script:
    - echo "built $CI_COMMIT_SHORT_SHA" > out.txt
    - cat out.txt
  artifacts:
    paths: [out.txt]
test:
  stage: test
  script:
    - echo "testing $(cat out.txt) token=$TOKEN"
"#;

#[test]
fn run_then_logs() {
    let dir = repo(PIPELINE);
    std::fs::create_dir_all(dir.path().join(".gantry")).unwrap();
    std::fs::write(
        dir.path().join(".gantry/variables.env"),
        "masked TOKEN=very-secret-token\n",
    )
    .unwrap();
    let out = gantry(dir.path(), &["run"]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("testing built "), "{text}");
    assert!(text.contains("token=[MASKED]"), "{text}");
    assert!(!text.contains("very-secret-token"), "{text}");
    // Piped output has no colour codes.
    assert!(!text.contains('\x1b'), "{text}");
    // The working tree is untouched: artifacts stay under .gantry/.
    assert!(!dir.path().join("out.txt").exists());

    let logs = gantry(dir.path(), &["logs", "test"]);
    assert_eq!(logs.status.code(), Some(0));
    let log = stdout(&logs);
    assert!(
        log.contains("testing built ") && log.contains("token=[MASKED]"),
        "{log}"
    );
    assert!(!log.contains("very-secret-token"));
    assert_eq!(gantry(dir.path(), &["logs", "nope"]).status.code(), Some(2));
}

#[test]
fn failing_pipeline_exits_1_and_usage_errors_exit_2() {
    let dir = repo("job:\n  script: [\"echo before\", \"exit 4\", \"echo never\"]\n");
    let out = gantry(dir.path(), &["run"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("before") && !text.contains("| never"),
        "{text}"
    );
    assert_eq!(
        gantry(dir.path(), &["run", "missing-job"]).status.code(),
        Some(2)
    );
    assert_eq!(
        gantry(dir.path(), &["run", "--stage", "nope"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn json_event_stream() {
    let dir = repo(PIPELINE);
    let out = gantry(dir.path(), &["run", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_finished"));
    let finished: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "job_finished")
        .collect();
    assert_eq!(finished.len(), 2);
    assert!(
        finished
            .iter()
            .all(|e| e["status"] == "success" && e["exit_code"] == 0)
    );
    assert!(events.iter().any(|e| e["event"] == "log"
        && e["job"] == "test"
        && e["line"].as_str().unwrap().starts_with("testing built")));
}

#[test]
fn shell_opens_in_the_jobs_working_copy_with_its_variables() {
    let dir = repo(PIPELINE);
    assert_eq!(gantry(dir.path(), &["run", "build"]).status.code(), Some(0));
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["shell", "build"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo job=$CI_JOB_NAME; cat out.txt; exit 0\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("job=build"), "{text}");
    assert!(text.contains("built "), "{text}");
}
