//! Regression tests of the `gantry` command, one per fixed defect, named
//! after the behaviour. Each failed before its fix.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
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

// ---- engine: exit codes, run records (issue 8) ----

/// Issue 8, defect 12: `lint` said 1 and `run` said 2 for the same file.
#[test]
fn an_invalid_file_exits_1_under_lint_plan_and_run() {
    let bad = repo("job:\n  scriptt: [true]\n");
    for cmd in [&["lint"][..], &["plan"], &["run"]] {
        let out = gantry(bad.path(), cmd);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}: {out:?}");
    }
}

/// Issue 8, defect 12: Ctrl-C exited 1, like a failed pipeline.
#[test]
fn an_interrupted_run_exits_130() {
    let dir = repo("job:\n  script: [\"echo started\", \"sleep 30\"]\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["run", "--json"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the job has started, then interrupt.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let started = Instant::now();
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert!(n > 0, "gantry ended before the job started");
        if line.contains("\"line\":\"started\"") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
}

/// Issue 8: `-j 0` ran with the number of cores instead of being refused.
#[test]
fn zero_concurrency_is_refused() {
    let dir = repo("job:\n  script: [true]\n");
    let out = gantry(dir.path(), &["run", "-j", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join(".gantry/runs").exists());
}

// ---- end engine ----
