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
    repo_with(&[(".gitlab-ci.yml", ci)])
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
    let dir = repo("job:\n  script: [\"true\"]\n");
    let out = gantry(dir.path(), &["run", "-j", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join(".gantry/runs").exists());
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Issue 8, defect 6: `gantry logs` did not say which run it showed, and
/// `--run ID` of a run without a record printed an I/O error.
#[test]
fn logs_name_their_run_and_unknown_runs_are_explained() {
    let dir = repo("job:\n  script: [\"echo hello-log\"]\n");
    assert_eq!(gantry(dir.path(), &["run"]).status.code(), Some(0));
    let out = gantry(dir.path(), &["logs", "job"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("hello-log"));
    let last = std::fs::read_to_string(dir.path().join(".gantry/last")).unwrap();
    assert!(
        stderr(&out).contains(&format!("run {}", last.trim())),
        "{}",
        stderr(&out)
    );
    let out = gantry(
        dir.path(),
        &["logs", "job", "--run", "20990101-000000-1-beef"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("no run `20990101-000000-1-beef`") && err.contains(last.trim()),
        "{err}"
    );
}

/// Issue 8, defect 9: a repository without a commit gave `git archive …
/// not a tree object`.
#[test]
fn a_repository_without_a_commit_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".gitlab-ci.yml"),
        "job:\n  script: [\"echo from-tree\"]\n",
    )
    .unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    let out = gantry(dir.path(), &["run"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("no commit yet") && err.contains("--working-tree"),
        "{err}"
    );
    assert!(!err.contains("tree object"), "{err}");
    // --working-tree runs it as it is.
    let out = gantry(dir.path(), &["run", "--working-tree"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("from-tree"));
}

/// Issue 8, defect 9: with uncommitted changes the script came from the
/// working tree and the files from the commit. Now: the commit, said
/// before the jobs start; `--working-tree` runs exactly the working tree.
#[test]
fn uncommitted_changes_are_never_mixed_with_the_commit() {
    let dir = repo("job:\n  script: [\"echo script-v1\", \"cat data.txt\"]\n");
    std::fs::write(dir.path().join("data.txt"), "data-v1\n").unwrap();
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
            "data",
        ],
    );
    std::fs::write(
        dir.path().join(".gitlab-ci.yml"),
        "job:\n  script: [\"echo script-v2\", \"cat data.txt\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("data.txt"), "data-v2\n").unwrap();
    let out = gantry(dir.path(), &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("script-v1") && text.contains("data-v1"),
        "{text}"
    );
    assert!(!text.contains("v2"), "{text}");
    assert!(
        stderr(&out).contains("uncommitted changes are not included"),
        "{}",
        stderr(&out)
    );
    let out = gantry(dir.path(), &["run", "--working-tree"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("script-v2") && text.contains("data-v2"),
        "{text}"
    );
    assert!(!text.contains("v1"), "{text}");
}

/// Issue 8, defect 9: a configuration file outside the repository.
#[test]
fn a_file_outside_the_repository_is_explained() {
    let dir = repo("job:\n  script: [\"true\"]\n");
    let elsewhere = tempfile::tempdir().unwrap();
    let file = elsewhere.path().join("ci.yml");
    std::fs::write(&file, "job:\n  script: [\"true\"]\n").unwrap();
    let out = gantry(dir.path(), &["run", "-f", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("outside this repository"), "{err}");
}

/// Issue 8: a failed pipeline ended on the table alone; now each failed
/// job's last lines and the command for its whole log follow.
#[test]
fn a_failed_job_shows_its_last_lines_and_the_logs_command() {
    let dir = repo("broken job:\n  script: [\"echo clue-before-failure\", \"exit 3\"]\n");
    let out = gantry(dir.path(), &["run"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let tail = text.rsplit("failed; its last lines:").next().unwrap();
    assert!(tail.contains("clue-before-failure"), "{text}");
    assert!(tail.contains("gantry logs 'broken job'"), "{text}");
}

/// Issue 8: `--color`, FORCE_COLOR and NO_COLOR; a job name is never in a
/// status colour; commands are highlighted.
#[test]
fn colour_follows_the_flag_and_the_environment() {
    let dir = repo("job:\n  script: [\"echo plain\"]\n");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry"));
        cmd.args(args)
            .current_dir(dir.path())
            .env_remove("NO_COLOR")
            .env_remove("FORCE_COLOR");
        for (k, v) in env {
            cmd.env(k, v);
        }
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
    };
    assert!(
        !run(&["run"], &[]).contains('\x1b'),
        "piped output has no colour"
    );
    let forced = run(&["run"], &[("FORCE_COLOR", "1")]);
    assert!(forced.contains("\x1b[1;32m$ echo plain"), "{forced}");
    for status_colour in ["\x1b[32mjob", "\x1b[31mjob", "\x1b[33mjob"] {
        assert!(!forced.contains(status_colour), "{forced}");
    }
    assert!(run(&["run", "--color", "always"], &[("NO_COLOR", "1")]).contains('\x1b'));
    assert!(!run(&["run", "--color", "never"], &[("FORCE_COLOR", "1")]).contains('\x1b'));
}

/// Issue 8: an unknown job name lists every job instead of the close one.
#[test]
fn an_unknown_job_name_gets_a_suggestion() {
    let dir = repo("build:\n  script: [\"true\"]\ndeploy:\n  script: [\"true\"]\n");
    let out = gantry(dir.path(), &["run", "biuld"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("did you mean `build`?"),
        "{}",
        stderr(&out)
    );
}

/// Issue 8: the summary table was misaligned by wide characters; log lines
/// can carry timestamps; artifacts can be copied into the working tree.
#[test]
fn wide_names_align_timestamps_and_artifacts_to_worktree() {
    let dir = repo(concat!(
        "ビルド:\n  script: [\"mkdir -p out\", \"echo made > out/file.txt\"]\n",
        "  artifacts:\n    paths: [out/]\n",
        "b:\n  script: [\"true\"]\n"
    ));
    let out = gantry(
        dir.path(),
        &["run", "--timestamps", "--artifacts-to-worktree", "-j", "1"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ビルド  ") || l.starts_with("b  "))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    let stage_col = |l: &str| {
        let mut cols = 0;
        for c in l.chars() {
            if l[l.find(c).unwrap()..].starts_with("test") {
                break;
            }
            cols += if (c as u32) > 0x2000 { 2 } else { 1 };
        }
        cols
    };
    assert_eq!(stage_col(rows[0]), stage_col(rows[1]), "{text}");
    assert!(
        text.lines()
            .any(|l| l.len() > 13 && l.as_bytes()[2] == b':' && l.as_bytes()[8] == b'.'),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/file.txt")).unwrap(),
        "made\n"
    );
}

/// Issue 8, defect 4: the deploy history went into the job's throwaway
/// build folder, so `examples/seed002-local`'s rollback found no
/// deployment. Now jobs get GANTRY_STATE_DIR (the repository's .gantry/).
/// Needs Podman (skips with a reason unless GANTRY_REQUIRE_PODMAN is set).
#[test]
fn seed002_local_rolls_back_under_gantry_run() {
    let ping = Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "2",
            "--unix-socket",
            "/run/podman/podman.sock",
            "http://d/_ping",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let has_docker_cli = Command::new("docker").arg("--version").output().is_ok();
    if !ping || !has_docker_cli {
        let why = "no Podman API socket at /run/podman/podman.sock or no docker CLI";
        assert!(
            std::env::var("GANTRY_REQUIRE_PODMAN").is_err(),
            "GANTRY_REQUIRE_PODMAN is set but: {why}"
        );
        eprintln!("SKIPPED seed002_local_rolls_back_under_gantry_run: {why}");
        return;
    }
    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), &target).unwrap();
            }
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("seed002");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed002-local");
    copy_dir(&example, &dir);
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["add", "-A"]);
    git(
        &dir,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-qm",
            "seed",
        ],
    );
    // Our own name and port: other tests may run the example at the same time.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = format!("gantry-reg-seed002-{}", std::process::id());
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_gantry"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "-j", "1", "-v"];
        let name = format!("APP_NAME={app}");
        let port = format!("APP_PORT={port}");
        args.push(&name);
        args.push("-v");
        args.push(&port);
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(&args)
            .current_dir(&dir)
            .env("NO_COLOR", "1")
            .env("PATH", &path)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // The app and the stopped revisions the deploy keeps for rollback
    // (`APP-rN`) go when the test ends, also when it panics.
    struct RemoveContainers(String);
    impl Drop for RemoveContainers {
        fn drop(&mut self) {
            let docker = |args: &[&str]| {
                Command::new("docker")
                    .args(args)
                    .env("DOCKER_HOST", "unix:///run/podman/podman.sock")
                    .output()
            };
            let filter = format!("name=^{}", self.0);
            if let Ok(listed) = docker(&["ps", "-aq", "--filter", &filter]) {
                for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
                    let _ = docker(&["rm", "-f", id]);
                }
            }
        }
    }
    let _remove = RemoveContainers(app.clone());
    let good = run(&[]);
    let broken = run(&["-v", "BREAK_KEEPALIVE=1"]);
    assert_eq!(good.status.code(), Some(0), "{}", stdout(&good));
    let text = stdout(&broken);
    assert_eq!(broken.status.code(), Some(1), "{text}");
    assert!(text.contains("r1 is live"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("rollback") && l.contains("success")),
        "{text}"
    );
    // The history lives in the project's state location, not a job's build folder.
    assert!(dir.join(".gantry/targets").is_dir());
}

/// Issue 8, defect 3: two `gantry run`s at once, in one repository and in
/// two repositories with the same folder name: both succeed, each with its
/// own files. (The container half is the docker executor's test.)
#[test]
fn concurrent_runs_in_one_and_in_same_named_repositories_succeed() {
    let ci = "stages: [a, b]\nslow:\n  stage: a\n  script: [\"sleep 1\", \"cat mine.txt\"]\nafter:\n  stage: b\n  script: [\"cat mine.txt\"]\n";
    let parent_a = tempfile::tempdir().unwrap();
    let parent_b = tempfile::tempdir().unwrap();
    let mut repos = Vec::new();
    for (parent, tag) in [(&parent_a, "first"), (&parent_b, "second")] {
        let dir = parent.path().join("project");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".gitlab-ci.yml"), ci).unwrap();
        std::fs::write(dir.join("mine.txt"), format!("{tag}\n")).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        git(&dir, &["add", "-A"]);
        git(
            &dir,
            &[
                "-c",
                "user.name=T",
                "-c",
                "user.email=t@example.com",
                "commit",
                "-qm",
                "x",
            ],
        );
        repos.push((dir, tag));
    }
    let spawn = |dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["run", "--json"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Two runs in the first repository, one in the second, all at once.
    let children = vec![
        (spawn(&repos[0].0), repos[0].1),
        (spawn(&repos[0].0), repos[0].1),
        (spawn(&repos[1].0), repos[1].1),
    ];
    for (child, tag) in children {
        let out = child.wait_with_output().unwrap();
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"event\":\"log\"") && l.contains("\"line\":\""))
            .collect();
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("\"line\":\"{tag}\""))),
            "{text}"
        );
        let other = if tag == "first" { "second" } else { "first" };
        assert!(
            !lines
                .iter()
                .any(|l| l.contains(&format!("\"line\":\"{other}\""))),
            "{text}"
        );
    }
    let runs = std::fs::read_dir(repos[0].0.join(".gantry/runs"))
        .unwrap()
        .count();
    assert_eq!(runs, 2);
}

// ---- end engine ----

// ---- run: leftovers of a killed run (issue 8, defect 8) ----

const PODMAN_SOCKET: &str = "unix:///run/podman/podman.sock";

/// Podman and the test images, else skip (or fail when required).
fn podman_ready(test: &str) -> bool {
    let images = [
        "localhost/busybox:latest",
        "localhost/gantry-test-httpd:latest",
    ];
    let ok = Path::new("/run/podman/podman.sock").exists()
        && images.iter().all(|image| {
            Command::new("podman")
                .args(["image", "exists", image])
                .status()
                .is_ok_and(|s| s.success())
        });
    if !ok {
        assert!(
            std::env::var("GANTRY_REQUIRE_PODMAN").as_deref() != Ok("1"),
            "{test}: GANTRY_REQUIRE_PODMAN=1 but Podman or a test image is missing"
        );
        eprintln!(
            "SKIPPED {test}: Podman or a test image missing (scripts/setup-podman.sh, scripts/make-test-images.sh)"
        );
    }
    ok
}

/// Containers and networks labelled with a run id.
fn run_objects(run_id: &str) -> (usize, usize) {
    let label = format!("label=gantry.run={run_id}");
    let count = |args: &[&str]| {
        let out = Command::new("podman").args(args).output().expect("podman");
        assert!(out.status.success(), "podman {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    };
    (
        count(&["ps", "-a", "--filter", &label, "--format", "{{.ID}}"]),
        count(&["network", "ls", "--filter", &label, "--format", "{{.Name}}"]),
    )
}

/// Removes a run's containers and networks when dropped (a failed
/// assertion must not leave the killed run's objects behind).
struct RemoveRunObjects(String);

impl Drop for RemoveRunObjects {
    fn drop(&mut self) {
        let label = format!("label=gantry.run={}", self.0);
        let list = |args: &[&str]| {
            Command::new("podman")
                .args(args)
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .map(str::to_string)
                        .filter(|l| !l.trim().is_empty())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        for id in list(&["ps", "-aq", "--filter", &label]) {
            let _ = Command::new("podman").args(["rm", "-f", &id]).output();
        }
        for name in list(&["network", "ls", "--filter", &label, "--format", "{{.Name}}"]) {
            let _ = Command::new("podman")
                .args(["network", "rm", &name])
                .output();
        }
    }
}

/// Issue 8, defect 8: `gantry run` wrote no owner file for its run, so
/// after a `kill -9` nothing on disk said the run was dead (and `run.json`,
/// written at the start, made `gantry clean` take a live run for a finished
/// one). Now the run records its process; after a `kill -9` the next run
/// removes the dead run's containers and network, and `gantry clean` its
/// build folder.
#[test]
fn after_a_kill_9_the_next_run_removes_the_dead_runs_containers() {
    let test = "after_a_kill_9_the_next_run_removes_the_dead_runs_containers";
    if !podman_ready(test) {
        return;
    }
    let dir = repo(
        "variables:\n  NAP: \"300\"\n\
         sleeper:\n  image: localhost/busybox:latest\n  services:\n    - name: localhost/gantry-test-httpd:latest\n      alias: web\n  script:\n    - echo started-sleeping\n    - sleep $NAP\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("run")
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env("DOCKER_HOST", PODMAN_SOCKET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gantry run");
    let child_out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let started = std::io::BufReader::new(child_out)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("started-sleeping") && !l.contains("echo"));
        let _ = tx.send(started);
    });
    let started = rx.recv_timeout(Duration::from_secs(180)).unwrap_or(false);
    if !started {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the job did not start");
    }
    let runs = dir.path().join(".gantry/runs");
    let ids: Vec<String> = std::fs::read_dir(&runs)
        .expect("runs")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let dead = ids[0].clone();
    // Whatever happens below, the killed run's objects go with the test.
    let _leftovers = RemoveRunObjects(dead.clone());
    let builds = runs.join(&dead).join("builds");

    // While it runs, `gantry clean` leaves its folder and containers alone.
    let clean = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("clean")
        .current_dir(dir.path())
        .env("DOCKER_HOST", PODMAN_SOCKET)
        .output()
        .expect("clean");
    let live_folder_kept = builds.join("sleeper").exists();
    let live_objects = run_objects(&dead);

    // SIGKILL: the run cannot clean up.
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        live_folder_kept,
        "gantry clean removed the build folder of a live run: {}",
        stdout(&clean)
    );
    assert!(
        live_objects.0 >= 2 && live_objects.1 >= 1,
        "{live_objects:?}: {}",
        stdout(&clean)
    );
    let owner = std::fs::read_to_string(runs.join(&dead).join("owner"))
        .expect("the run records its owner process");
    assert!(
        owner.contains(&format!("/{}/", child.id())),
        "owner file `{owner}` names the killed gantry"
    );
    let (containers, networks) = run_objects(&dead);
    assert!(
        containers >= 2 && networks >= 1,
        "the killed run left {containers} container(s), {networks} network(s)"
    );

    // The next run in the repository sweeps what the dead run left.
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["run", "-v", "NAP=0"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env("DOCKER_HOST", PODMAN_SOCKET)
        .stdin(Stdio::null())
        .output()
        .expect("second run");
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(run_objects(&dead), (0, 0), "{}", stdout(&out));

    // Its build folder went with the old runs the next run pruned.
    assert!(!builds.exists());
}

// ---- run: start_in (issue 8, defect 10) ----

/// Issue 8, defect 10: `start_in: "1:30"` passed lint and then the job ran
/// at once, because the engine parsed the text again with its own parser.
/// The model parses it once (clock form included) and the engine waits its
/// seconds; a bad duration is a lint error with its position.
#[test]
fn start_in_is_parsed_once_and_the_run_waits_its_seconds() {
    let dir =
        repo("later:\n  when: delayed\n  start_in: \"0:02\"\n  script:\n    - echo ran-later\n");
    let started = Instant::now();
    let out = gantry(dir.path(), &["run"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("ran-later"), "{}", stdout(&out));
    assert!(
        took >= Duration::from_secs(2),
        "the delayed job started after {took:?}, not after start_in's 2 s"
    );
    let bad =
        repo("later:\n  when: delayed\n  start_in: \"1:30 later\"\n  script:\n    - echo x\n");
    let out = gantry(bad.path(), &["lint"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains(".gitlab-ci.yml:3:"), "{text}");
    assert!(text.contains('^'), "{text}");
}

// ---- run: child pipelines (issue 7) ----

/// A repository with `files` committed.
fn repo_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
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

/// Issue 7: trigger jobs were skipped by `gantry run`. A `trigger:include`
/// job now runs its child pipeline (a local file, or YAML an earlier job
/// generated as an artifact) through the same dispatcher, with
/// `CI_PIPELINE_SOURCE=parent_pipeline` and the trigger job's variables;
/// the summary shows the child's jobs under the trigger job; a
/// multi-project trigger stays skipped with its reason.
#[test]
fn trigger_include_jobs_run_their_child_pipelines() {
    let dir = repo_with(&[
        (
            ".gitlab-ci.yml",
            "stages: [build, test, deploy]\n\
             variables:\n  GLOBAL: from-parent\n\
             gen:\n  stage: build\n  script:\n    - printf 'dyn-job:\\n  script:\\n    - echo dynamic-child-ran\\n' > generated.yml\n  artifacts:\n    paths: [generated.yml]\n\
             child:\n  stage: test\n  variables:\n    FOR_CHILD: passed-down\n  trigger:\n    include: ci/child.yml\n    strategy: depend\n\
             dynamic:\n  stage: test\n  trigger:\n    include:\n      - artifact: generated.yml\n        job: gen\n\
             multi:\n  stage: test\n  trigger:\n    project: group/other\n\
             after:\n  stage: deploy\n  script:\n    - echo after-ran\n",
        ),
        (
            "ci/child.yml",
            "child-a:\n  script:\n    - echo \"source=$CI_PIPELINE_SOURCE for=$FOR_CHILD global=$GLOBAL\"\n",
        ),
    ]);
    let out = gantry(dir.path(), &["run"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.lines().any(|l| l.contains("child > child-a")
            && l.contains("source=parent_pipeline for=passed-down global=from-parent")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("dynamic > dyn-job") && l.contains("dynamic-child-ran")),
        "{text}"
    );
    assert!(text.contains("after-ran"), "{text}");
    let summary = &text[text.rfind("\njob ").expect("summary")..];
    let row = |name: &str| {
        summary
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no row {name} in {summary}"))
            .to_string()
    };
    assert!(row("child ").contains("success"), "{summary}");
    assert!(row("↳ child-a").starts_with("  ↳ child-a"), "{summary}");
    assert!(row("↳ dyn-job").contains("success"), "{summary}");
    assert!(row("multi").contains("skipped"), "{summary}");
    assert!(row("multi").contains("multi-project"), "{summary}");
    // The child row follows its trigger job's row.
    let pos = |needle: &str| summary.find(needle).expect(needle);
    assert!(pos("\nchild ") < pos("↳ child-a"), "{summary}");
}

/// `strategy: depend`: the trigger job takes its child's status (a failed
/// child fails the parent); without it the trigger job succeeds once the
/// child exists. An invalid child configuration fails the trigger job.
#[test]
fn a_trigger_job_with_strategy_depend_mirrors_its_child() {
    let dir = repo_with(&[
        (
            ".gitlab-ci.yml",
            "mirrored:\n  trigger:\n    include: ci/fail.yml\n    strategy: depend\n\
             fire-and-forget:\n  trigger:\n    include: ci/fail.yml\n\
             broken:\n  trigger:\n    include: ci/broken.yml\n",
        ),
        ("ci/fail.yml", "failing:\n  script:\n    - exit 3\n"),
        ("ci/broken.yml", "oops:\n  scirpt: nope\n"),
    ]);
    let out = gantry(dir.path(), &["run"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let summary = &text[text.rfind("\njob ").expect("summary")..];
    let row = |name: &str| {
        summary
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no row {name} in {summary}"))
            .to_string()
    };
    assert!(row("mirrored").contains("failed"), "{summary}");
    assert!(row("fire-and-forget").contains("success"), "{summary}");
    assert!(row("↳ failing").contains("failed"), "{summary}");
    assert!(row("broken").contains("failed"), "{summary}");
    assert!(row("broken").contains("invalid"), "{summary}");
}

// ---- deploy (issue 9) ----

/// Runs `gantry deploy docker NAME` with the local engine and a file history in `dir`.
fn deploy_docker(dir: &Path, name: &str, port: u16, command: &str, extra: &[&str]) -> Command {
    let history = format!("file://{}", dir.join("state").display());
    let port_spec = format!("127.0.0.1:{port}:80");
    let url = format!("http://127.0.0.1:{port}/");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry"));
    cmd.args([
        "deploy",
        "docker",
        name,
        "--image",
        "localhost/busybox:latest",
    ])
    .args(["--command", command, "-p", &port_spec, "--health-url", &url])
    .args(["--history", &history])
    .args(extra)
    .current_dir(dir)
    .env("DOCKER_HOST", "unix:///run/podman/podman.sock")
    .env_remove("GANTRY_HISTORY")
    .env_remove("CI_JOB_ID")
    .stdin(Stdio::null());
    cmd
}

fn podman_busybox(test: &str) -> bool {
    let ok = Path::new("/run/podman/podman.sock").exists()
        && Command::new("podman")
            .args(["image", "exists", "localhost/busybox:latest"])
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("GANTRY_REQUIRE_PODMAN").as_deref() != Ok("1"),
            "{test}: GANTRY_REQUIRE_PODMAN=1 but Podman or localhost/busybox is missing"
        );
        eprintln!("SKIPPED {test}: no Podman socket or localhost/busybox");
    }
    ok
}

fn deploy_containers(name: &str) -> Vec<String> {
    let o = Command::new("podman")
        .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
        .arg(format!("label=io.gantry.deploy={name}"))
        .output()
        .unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Issue 9: a SIGTERM while the new revision was still a candidate beside the live one
/// (`--no-rollback`) said "live now: r2" although r1 never stopped serving; without
/// `--no-rollback` it ran a needless rollback of the untouched r1.
#[test]
fn sigterm_before_the_cut_over_says_the_old_revision_is_live_and_records_interrupted() {
    let test = "sigterm_before_the_cut_over";
    if !podman_busybox(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = format!("gantry-reg-sigterm-{}", std::process::id());
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            for c in deploy_containers(&self.0) {
                let _ = Command::new("podman").args(["rm", "-f", &c]).output();
            }
        }
    }
    let _gone = Gone(name.clone());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let serve = "sh -c 'mkdir -p /www && echo v1 > /www/index.html && exec httpd -f -p 80 -h /www'";
    let good = deploy_docker(dir.path(), &name, port, serve, &[])
        .output()
        .unwrap();
    assert_eq!(good.status.code(), Some(0), "{}", stderr(&good));

    let child = deploy_docker(
        dir.path(),
        &name,
        port,
        "sleep 600",
        &["--health-timeout", "120s", "--no-rollback"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let candidate = format!("{name}-r2");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !deploy_containers(&name).contains(&candidate) {
        assert!(Instant::now() < deadline, "no candidate {candidate}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    // Ended by a signal: 130, as every gantry command.
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("recorded as interrupted"), "{err}");
    assert!(err.contains("live now: r1"), "{err}");
    assert_eq!(
        deploy_containers(&name),
        std::slice::from_ref(&name),
        "{err}"
    );
}

/// A run killed while it was being set up left its folder in
/// `.gantry/staging/` (and snapshot temporaries); `gantry clean` said
/// nothing of them and left them for ever.
#[test]
fn clean_removes_what_runs_that_died_left_half_made() {
    let dir = repo("job:\n  script: [\"true\"]\n");
    let dead_pid = {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        pid
    };
    let half_made = dir
        .path()
        .join(".gantry/staging/20260101-000000-0000000000-beef");
    std::fs::create_dir_all(half_made.join("builds/job")).unwrap();
    std::fs::write(half_made.join("builds/job/file"), "x").unwrap();
    let dead_tmp = dir
        .path()
        .join(format!(".gantry/snapshots/abc.tmp{dead_pid}"));
    std::fs::create_dir_all(&dead_tmp).unwrap();
    let kept = dir.path().join(".gantry/snapshots/abc");
    std::fs::create_dir_all(&kept).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("clean")
        .current_dir(dir.path())
        .env("DOCKER_HOST", PODMAN_SOCKET)
        .output()
        .expect("clean");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(!half_made.exists(), "{text}");
    assert!(!dead_tmp.exists(), "{text}");
    assert!(kept.is_dir(), "a kept snapshot was removed: {text}");
    assert!(
        text.contains("left by runs that died: 2 folder(s)"),
        "{text}"
    );
}
