//! `gantry deploy` / `rollback` / `deployments` as real processes: two "runners" (two
//! processes, two working directories) sharing one S3 history on moto, and a real SIGTERM to a
//! deploy in flight. The deploy target is the local engine (Podman's Docker API), so health
//! checks and rollbacks run real containers. Skipped without moto or Podman unless
//! GANTRY_REQUIRE_MOTO=1 / GANTRY_REQUIRE_PODMAN=1.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "localhost/busybox:latest";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv() -> PathBuf {
    std::env::var_os("GANTRY_AWS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv-aws"))
}

fn start_moto(test: &str) -> Option<Moto> {
    let bin = venv().join("bin/moto_server");
    if !bin.exists() {
        assert!(
            std::env::var("GANTRY_REQUIRE_MOTO").as_deref() != Ok("1"),
            "{test}: GANTRY_REQUIRE_MOTO=1 but {} is missing",
            bin.display()
        );
        eprintln!("SKIPPED {test}: no moto (run scripts/setup-moto.sh)");
        return None;
    }
    let port = free_port();
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn moto");
    let moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(moto);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{test}: moto did not start");
}

/// Podman answering with the test image, else skip (or fail when required).
fn podman_ready(test: &str) -> bool {
    let ok = Command::new("podman")
        .args(["image", "exists", IMAGE])
        .status()
        .is_ok_and(|s| s.success())
        && Path::new("/run/podman/podman.sock").exists();
    if !ok {
        assert!(
            std::env::var("GANTRY_REQUIRE_PODMAN").as_deref() != Ok("1"),
            "{test}: GANTRY_REQUIRE_PODMAN=1 but Podman or {IMAGE} is missing"
        );
        eprintln!("SKIPPED {test}: Podman socket or {IMAGE} missing (scripts/setup-podman.sh)");
    }
    ok
}

fn gantry(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry"));
    cmd.current_dir(dir)
        .args(args)
        .env("DOCKER_HOST", "unix:///run/podman/podman.sock")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("GANTRY_HISTORY")
        .env_remove("GANTRY_STATE_DIR")
        .env_remove("CI_JOB_ID")
        .env_remove("CI_PROJECT_DIR")
        .env_remove("CI_PIPELINE_ID")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run gantry");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn get(url: &str) -> Option<String> {
    ureq::get(url)
        .timeout(Duration::from_secs(2))
        .call()
        .ok()?
        .into_string()
        .ok()
        .map(|s| s.trim().to_string())
}

fn serving_args(body: &str) -> String {
    format!("sh -c 'mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www'")
}

/// Removes every container of deploy `name` when dropped.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let out = Command::new("podman")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=io.gantry.deploy={}", self.0),
            ])
            .output();
        if let Ok(o) = out {
            for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("podman").args(["rm", "-f", id]).output();
            }
        }
    }
}

fn containers(name: &str) -> Vec<String> {
    let o = Command::new("podman")
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("label=io.gantry.deploy={name}"),
        ])
        .output()
        .expect("podman ps");
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn records(dir: &Path, name: &str, history: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let (code, out, err) = run(&mut gantry(
        dir,
        &["deployments", name, "--json", "--history", history],
        env,
    ));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("json")
}

#[test]
fn two_runners_share_one_s3_history_and_the_second_rolls_back_to_the_firsts_revision() {
    let test = "two_runners_s3";
    if !podman_ready(test) {
        return;
    }
    let Some(moto) = start_moto(test) else {
        return;
    };
    let status = Command::new(venv().join("bin/aws"))
        .args(["--endpoint-url", &moto.url, "--region", "eu-west-1"])
        .args(["s3", "mb", "s3://team-history"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdout(Stdio::null())
        .status()
        .expect("aws s3 mb");
    assert!(status.success());
    let aws: &[(&str, &str)] = &[("AWS_ENDPOINT_URL", &moto.url), ("AWS_REGION", "eu-west-1")];
    let history = "s3://team-history/deploys";
    let name = format!("gantry-runners-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let runner_a = tempfile::tempdir().expect("dir a");
    let runner_b = tempfile::tempdir().expect("dir b");
    let port_spec = format!("127.0.0.1:{port}:80");

    // Runner A, pipeline 100: a good revision.
    let cmd_v1 = serving_args("v1");
    let mut env_a = aws.to_vec();
    env_a.extend([("CI_PIPELINE_ID", "100"), ("CI_JOB_ID", "1")]);
    let (code, _, err) = run(&mut gantry(
        runner_a.path(),
        &[
            "deploy",
            "docker",
            &name,
            "--image",
            IMAGE,
            "--command",
            &cmd_v1,
            "-p",
            &port_spec,
            "--health-url",
            &url,
            "--history",
            history,
        ],
        &env_a,
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(get(&url).as_deref(), Some("v1"));

    // The containers go away (another runner host, a cleaned engine): only the shared history
    // knows r1 now.
    drop(Cleanup(name.clone()));
    assert!(containers(&name).is_empty());

    // Runner B, pipeline 200, another directory: a revision that never listens.
    let mut env_b = aws.to_vec();
    env_b.extend([("CI_PIPELINE_ID", "200"), ("CI_JOB_ID", "2")]);
    let (code, _, err) = run(&mut gantry(
        runner_b.path(),
        &[
            "deploy",
            "docker",
            &name,
            "--image",
            IMAGE,
            "--command",
            "sleep 600",
            "-p",
            &port_spec,
            "--health-url",
            &url,
            "--health-timeout",
            "3s",
            "--history",
            history,
        ],
        &env_b,
    ));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("rolled back to r1"), "{err}");
    assert!(err.contains("live now: r1"), "{err}");
    assert_eq!(
        get(&url).as_deref(),
        Some("v1"),
        "r1 recreated from the shared record"
    );

    let recs = records(runner_b.path(), &name, history, aws);
    let rows: Vec<(String, String, String, bool)> = recs
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or("").to_string(),
                r["revision"].as_str().unwrap_or("").to_string(),
                r["pipeline"].as_str().unwrap_or("").to_string(),
                r["known_good"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("deploy".into(), "r1".into(), "100".into(), true),
            ("deploy".into(), "r2".into(), "200".into(), false),
            ("rollback".into(), "r1".into(), "200".into(), true),
        ]
    );
    assert_eq!(recs[1]["result"], "rolled_back");
    assert_eq!(recs[1]["rolled_back_to"], "r1");
}

/// Starts a bad deploy of revision `revision`, waits for its candidate container `NAME-rN`
/// (checked beside the live revision), sends SIGTERM, returns the exit code and stderr.
/// Revision numbers are never reused: a deploy that was rolled back keeps its number taken.
fn interrupted_deploy(
    dir: &Path,
    name: &str,
    history: &str,
    port: u16,
    revision: u32,
    extra: &[&str],
) -> (i32, String) {
    let url = format!("http://127.0.0.1:{port}/");
    let port_spec = format!("127.0.0.1:{port}:80");
    let mut args = vec![
        "deploy",
        "docker",
        name,
        "--image",
        IMAGE,
        "--command",
        "sleep 600",
        "-p",
        &port_spec,
        "--health-url",
        &url,
        "--health-timeout",
        "120s",
        "--history",
        history,
    ];
    args.extend_from_slice(extra);
    let child = gantry(dir, &args, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let candidate = format!("{name}-r{revision}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut child = child;
    while !containers(name).contains(&candidate) {
        if Instant::now() >= deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "no candidate container {candidate} appeared (containers: {:?}); the deploy said:\n{}",
                containers(name),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let started = Instant::now();
    let out = child.wait_with_output().expect("wait");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the deploy did not stop after SIGTERM"
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sigterm_during_a_deploy_rolls_back_or_records_interrupted_and_leaves_nothing_in_progress() {
    let test = "sigterm_deploy";
    if !podman_ready(test) {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let history = format!("file://{}", dir.path().join("state").display());
    let name = format!("gantry-sigterm-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let cmd_v1 = serving_args("v1");
    let port_spec = format!("127.0.0.1:{port}:80");
    let (code, _, err) = run(&mut gantry(
        dir.path(),
        &[
            "deploy",
            "docker",
            &name,
            "--image",
            IMAGE,
            "--command",
            &cmd_v1,
            "-p",
            &port_spec,
            "--health-url",
            &url,
            "--history",
            &history,
        ],
        &[],
    ));
    assert_eq!(code, 0, "{err}");

    let (code, err) = interrupted_deploy(dir.path(), &name, &history, port, 2, &[]);
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("SIGTERM"), "{err}");
    assert!(err.contains("live now: r1"), "{err}");
    assert_eq!(get(&url).as_deref(), Some("v1"), "{err}");
    assert_eq!(
        containers(&name),
        std::slice::from_ref(&name),
        "no candidate left behind"
    );

    // r2 keeps its number in the history: the next deploy is r3.
    let (code, err) = interrupted_deploy(dir.path(), &name, &history, port, 3, &["--no-rollback"]);
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains("live now: r1"), "{err}");
    assert_eq!(get(&url).as_deref(), Some("v1"));
    assert_eq!(
        containers(&name),
        std::slice::from_ref(&name),
        "no candidate left behind"
    );

    let recs = records(dir.path(), &name, &history, &[]);
    let results: Vec<&str> = recs
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["result"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(results, ["succeeded", "rolled_back", "interrupted"]);
}

#[test]
fn in_a_ci_job_without_a_history_the_deploy_refuses_instead_of_losing_records() {
    let dir = tempfile::tempdir().expect("dir");
    let (code, _, err) = run(&mut gantry(
        dir.path(),
        &["deployments"],
        &[("CI_JOB_ID", "7"), ("CI_PROJECT_DIR", "/builds/x")],
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--history"), "{err}");
    // GANTRY_STATE_DIR (what `gantry run` passes to its jobs) is the history then.
    let state = dir.path().join("state");
    let (code, _, err) = run(&mut gantry(
        dir.path(),
        &["deployments"],
        &[
            ("CI_JOB_ID", "7"),
            ("GANTRY_STATE_DIR", state.to_str().expect("utf8")),
        ],
    ));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&state.display().to_string()), "{err}");
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// Plays ECS's scheduler against moto, which never starts a service's tasks: whenever the
/// service points at a revision with fewer RUNNING tasks (in its group `service:NAME`) than
/// desired, it runs them. Until `stop` is set. Replaced tasks are left running: moto's tasks
/// have no createdAt, so a stopped task of a revision would look like one that stopped during
/// a later rollback to that same revision.
fn scheduler_stand_in(
    endpoint: String,
    cluster: &'static str,
    service: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use gantry_deploy::sdk::ecs::types::{DesiredStatus, LaunchType};
    std::thread::spawn(move || {
        let rt = gantry_deploy::runtime().expect("runtime");
        rt.block_on(async move {
            let opts = gantry_deploy::aws::AwsOptions {
                region: Some("us-east-1".into()),
                endpoint_url: Some(endpoint),
                access_key_id: Some("testing".into()),
                secret_access_key: Some("testing".into()),
                ..Default::default()
            };
            let cfg = gantry_deploy::aws::load_config(&opts).await.expect("cfg");
            let ecs = gantry_deploy::sdk::ecs::Client::new(&cfg);
            let group = format!("service:{service}");
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let Ok(d) = ecs
                    .describe_services()
                    .cluster(cluster)
                    .services(service)
                    .send()
                    .await
                else {
                    continue;
                };
                let Some(svc) = d.services().first() else {
                    continue;
                };
                let (Some(td), desired) = (svc.task_definition(), svc.desired_count()) else {
                    continue;
                };
                let arns = ecs
                    .list_tasks()
                    .cluster(cluster)
                    .desired_status(DesiredStatus::Running)
                    .send()
                    .await
                    .map(|r| r.task_arns().to_vec())
                    .unwrap_or_default();
                let mut running = 0;
                if !arns.is_empty()
                    && let Ok(tasks) = ecs
                        .describe_tasks()
                        .cluster(cluster)
                        .set_tasks(Some(arns))
                        .send()
                        .await
                {
                    for t in tasks.tasks() {
                        if t.group() != Some(group.as_str()) || t.last_status() != Some("RUNNING") {
                            continue;
                        }
                        if t.task_definition_arn() == Some(td) {
                            running += 1;
                        }
                    }
                }
                if running < desired {
                    let _ = ecs
                        .run_task()
                        .cluster(cluster)
                        .task_definition(td)
                        .count(desired - running)
                        .group(&group)
                        .launch_type(LaunchType::Fargate)
                        .send()
                        .await;
                }
            }
        });
    })
}

/// Seed 002's ECS pipeline (examples/seed002-ecs) under `gantry run` with the shell executor,
/// against moto, with the deployment history in moto's S3: a good pipeline in one clone, then
/// a pipeline with a failing keepalive in another clone (another runner); its rollback job
/// finds the good revision in the shared S3 history and returns the service to it.
///
/// Narrow seam, said here: moto never starts a service's tasks, so no rollout would ever
/// complete. The test plays ECS's scheduler beside the pipeline ([`scheduler_stand_in`]) and
/// sets moto's task state machine (its documented /moto-api/state-manager) to keep tasks
/// RUNNING. Gantry's own rollout wait is the real one (DescribeServices, ListTasks,
/// DescribeTasks), as against ECS.
#[test]
fn seed002_ecs_under_gantry_run_rolls_back_to_the_known_good_revision_from_s3() {
    let test = "seed002_ecs";
    let Some(moto) = start_moto(test) else {
        return;
    };
    let set = ureq::post(&format!(
        "{}/moto-api/state-manager/set-transition",
        moto.url
    ))
    .send_string(
        r#"{"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1000000}}"#,
    );
    assert!(set.is_ok(), "moto state manager: {set:?}");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scheduler = scheduler_stand_in(moto.url.clone(), "staging", "seed002-app", stop.clone());

    let tmp = tempfile::tempdir().expect("tmp");
    let example = repo_root().join("examples/seed002-ecs");
    let runner_a = tmp.path().join("a/seed002");
    let runner_b = tmp.path().join("b/seed002");
    copy_dir(&example, &runner_a);
    git(&runner_a, &["init", "-q", "-b", "main"]);
    git(&runner_a, &["add", "-A"]);
    git(&runner_a, &["commit", "-qm", "seed002"]);
    // The second runner: another clone, a later commit, its own .gantry state.
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            runner_a.to_str().expect("utf8"),
            runner_b.to_str().expect("utf8"),
        ],
    );
    std::fs::write(runner_b.join("CHANGE"), "a later commit\n").expect("write");
    git(&runner_b, &["add", "-A"]);
    git(&runner_b, &["commit", "-qm", "later"]);

    let bin_dir = Path::new(env!("CARGO_BIN_EXE_gantry"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}:{}",
        bin_dir.display(),
        venv().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let endpoint = format!("AWS_ENDPOINT_URL={}", moto.url);
    let pipeline = |dir: &Path, extra: &[&str]| {
        let mut args = vec!["run", "-v", &endpoint, "-v", "ROLLOUT_TIMEOUT=90s"];
        args.extend_from_slice(extra);
        let out = gantry(dir, &args, &[("PATH", &path), ("NO_COLOR", "1")])
            .output()
            .expect("gantry run");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (good_code, good) = pipeline(&runner_a, &[]);
    let (bad_code, bad) = pipeline(&runner_b, &["-v", "BREAK_KEEPALIVE=1"]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = scheduler.join();

    assert_eq!(good_code, 0, "{good}");
    assert!(good.contains("tasks of seed002-app:2 RUNNING"), "{good}");
    assert_eq!(bad_code, 1, "{bad}");
    assert!(bad.contains("keepalive: FAILED"), "{bad}");
    assert!(
        bad.contains("rolling back ecs:123456789012:us-east-1:staging/seed002-app"),
        "{bad}"
    );
    assert!(bad.contains("seed002-app:2 is live again"), "{bad}");

    let aws: &[(&str, &str)] = &[("AWS_ENDPOINT_URL", &moto.url), ("AWS_REGION", "us-east-1")];
    let recs = records(
        tmp.path(),
        "ecs:staging/seed002-app",
        "s3://seed002-deploys/staging",
        aws,
    );
    let rows: Vec<(String, String, String, bool)> = recs
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or("").to_string(),
                r["revision"]
                    .as_str()
                    .unwrap_or("")
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_string(),
                r["result"].as_str().unwrap_or("").to_string(),
                r["known_good"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "deploy".into(),
                "seed002-app:2".into(),
                "succeeded".into(),
                true
            ),
            // Deployed fine, but the keepalive failed: "known good" withdrawn by the rollback.
            (
                "deploy".into(),
                "seed002-app:3".into(),
                "succeeded".into(),
                false
            ),
            (
                "rollback".into(),
                "seed002-app:2".into(),
                "succeeded".into(),
                true
            ),
        ],
        "{bad}"
    );
    assert_ne!(recs[0]["commit"], recs[1]["commit"], "two pipelines");
}

/// The live template of stack `app` on moto, through CloudFormation's query API.
fn moto_template(moto: &str) -> String {
    ureq::post(moto)
        .set(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/eu-west-1/cloudformation/aws4_request, SignedHeaders=host, Signature=0",
        )
        .send_form(&[
            ("Action", "GetTemplate"),
            ("StackName", "app"),
            ("Version", "2010-05-15"),
        ])
        .ok()
        .and_then(|r| r.into_string().ok())
        .unwrap_or_default()
}

/// A SIGTERM to `gantry deploy cloudformation` while it probes an executed update: the machine
/// redeploys the known-good template, and no record stays in_progress. The "app" on the health
/// URL answers 200 unless the stack runs template v2 (it asks moto at each request).
#[test]
fn sigterm_during_a_stack_deploy_redeploys_the_known_good_template() {
    use std::io::{BufRead, BufReader, Write};
    let test = "sigterm_cfn";
    let Some(moto) = start_moto(test) else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let health = format!("http://{}/", listener.local_addr().expect("addr"));
    let moto_url = moto.url.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let code = if moto_template(&moto_url).contains("Description: v2") {
                503
            } else {
                200
            };
            let _ = reader.get_mut().write_all(
                format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    let dir = tempfile::tempdir().expect("dir");
    let history = format!("file://{}", dir.path().join("state").display());
    let body = "Resources:\n  Bucket:\n    Type: AWS::S3::Bucket\n";
    for v in ["v1", "v2"] {
        std::fs::write(
            dir.path().join(format!("{v}.yml")),
            format!("Description: {v}\n{body}"),
        )
        .expect("template");
    }
    let aws: &[(&str, &str)] = &[("AWS_ENDPOINT_URL", &moto.url), ("AWS_REGION", "eu-west-1")];
    let deploy = |v: &str, timeout: &str| {
        let t = format!("{v}.yml");
        let args = vec![
            "deploy",
            "cloudformation",
            "app",
            "--template",
            &t,
            "--health-url",
            &health,
            "--health-timeout",
            timeout,
            "--history",
            &history,
        ]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        gantry(dir.path(), &refs, aws)
    };
    let (code, _, err) = run(&mut deploy("v1", "10s"));
    assert_eq!(code, 0, "{err}");

    let child = deploy("v2", "120s")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !moto_template(&moto.url).contains("Description: v2") {
        assert!(Instant::now() < deadline, "v2 never rolled out");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let started = Instant::now();
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(started.elapsed() < Duration::from_secs(60), "{err}");
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    assert!(err.contains("rolled back to sha256:"), "{err}");
    assert!(
        moto_template(&moto.url).contains("Description: v1"),
        "{err}"
    );
    let recs = records(dir.path(), "cloudformation:app", &history, aws);
    let results: Vec<&str> = recs
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["result"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(results, ["succeeded", "rolled_back", "succeeded"], "{err}");
}
