//! The README's main job, end to end: examples/app under `gantry run` on a
//! real Podman engine and a real local registry. test → docker build → push
//! → `gantry deploy docker` with a health check → keepalive.
//! Needs scripts/setup-podman.sh, make-test-images.sh and setup-registry.sh
//! (scripts/test.sh runs them); skips with a reason when they are missing
//! unless GANTRY_REQUIRE_PODMAN=1.

mod common;
use common::{Cmd, examples};
use std::path::Path;
use std::process::Command;

fn available() -> Result<(), String> {
    let ping = |args: &[&str]| {
        Command::new("curl")
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !ping(&[
        "-sf",
        "--max-time",
        "2",
        "--unix-socket",
        "/run/podman/podman.sock",
        "http://d/_ping",
    ]) {
        return Err("no Podman API socket at /run/podman/podman.sock".into());
    }
    if !ping(&["-sf", "--max-time", "2", "http://127.0.0.1:5000/v2/"]) {
        return Err("no registry on 127.0.0.1:5000".into());
    }
    if Command::new("docker").arg("--version").output().is_err() {
        return Err("no docker client".into());
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read example") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", "unix:///run/podman/podman.sock")
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn example_app_runs_end_to_end() {
    if let Err(why) = available() {
        assert!(
            std::env::var("GANTRY_REQUIRE_PODMAN").is_err(),
            "GANTRY_REQUIRE_PODMAN is set but: {why}"
        );
        eprintln!("SKIPPED example_app_runs_end_to_end: {why}");
        return;
    }
    // CI_PROJECT_NAME comes from the directory name, and image names must be lowercase.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp
        .path()
        .join(format!("gantry-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    copy_dir(&examples().join("app"), &dir);
    let git = |args: &[&str]| {
        assert!(
            Command::new("git")
                .current_dir(&dir)
                .args(args)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@t")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@t")
                .status()
                .expect("git")
                .success()
        )
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "example"]);
    let name = dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_lowercase();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_gantry"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ran = Cmd::new()
        .dir(&dir)
        .env("PATH", &path)
        .env("DOCKER_HOST", "unix:///run/podman/podman.sock")
        .args(&["run", "-v", "APP_PORT=18581"])
        .run();
    // Remove what the deploy created before asserting, so a failure leaves nothing behind.
    // The deployed revisions are named after the project; the build
    // containers `gantry shell` could reopen carry the project's path.
    for line in docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}|{{.Label \"gantry.project\"}}",
    ])
    .lines()
    {
        let (container, project) = line.split_once('|').unwrap_or((line, ""));
        if container.starts_with(&name) || project.ends_with(&format!("/{name}")) {
            docker(&["rm", "-f", container]);
        }
    }
    let ran = ran.status(0);
    assert!(ran.stdout.contains("2 passed, 0 failed"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains("Successfully tagged 127.0.0.1:5000/"),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("r1 is live"), "{}", ran.stdout);
    assert!(
        ran.stdout
            .lines()
            .any(|l| l.starts_with("keepalive") && l.trim_end().ends_with("| ok")),
        "{}",
        ran.stdout
    );
}
