//! Faults, each checking that nothing is lost: a runner killed mid-job
//! (the job fails "runner lost" and its retry runs on the other runner), a
//! server killed with SIGKILL mid-pipeline and restarted (the pipeline
//! finishes with every log line and artifact), and many queued jobs claimed
//! by four runners at once (each exactly once), on SQLite and PostgreSQL.
//!
//! Servers and runners that must die by SIGKILL run as child processes:
//! this test binary re-run with `GANTRY_TEST_CHILD` set (the same code as
//! `gantry serve` and `gantry runner`).

mod support;

use gantry_server::runner::{ExecutorChoice, RunnerConfig};
use serde_json::json;
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// The child process entry: a server or a runner, configured by env vars.
#[test]
#[ignore = "started by the other tests as a child process"]
fn child_process() {
    let Ok(role) = std::env::var("GANTRY_TEST_CHILD") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        match role.as_str() {
            "serve" => {
                let mut cfg = config(
                    std::path::Path::new(&std::env::var("CHILD_DATA").unwrap()),
                    std::env::var("CHILD_DATABASE").ok(),
                );
                cfg.listen = std::env::var("CHILD_LISTEN").unwrap();
                cfg.builtin_runner = false;
                cfg.runner_timeout = Duration::from_secs(5);
                let running = gantry_server::start(cfg).await.unwrap();
                let _ = running.server.await;
            }
            "runner" => {
                let cfg = RunnerConfig {
                    url: std::env::var("CHILD_URL").unwrap(),
                    registration_token: std::env::var("CHILD_TOKEN").unwrap(),
                    description: std::env::var("CHILD_NAME").unwrap(),
                    tags: Vec::new(),
                    run_untagged: true,
                    executor: ExecutorChoice::Shell,
                    concurrency: 1,
                    work_dir: std::env::var("CHILD_WORK").unwrap().into(),
                };
                gantry_server::runner::run(cfg).await.unwrap();
            }
            other => panic!("unknown child role {other}"),
        }
    });
}

struct ChildGuard(Child);

impl ChildGuard {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn child(role: &str, env: &[(&str, String)]) -> ChildGuard {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_process",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("GANTRY_TEST_CHILD", role)
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    ChildGuard(cmd.spawn().unwrap())
}

fn runner_child(url: &str, token: &str, name: &str, work: &std::path::Path) -> ChildGuard {
    child(
        "runner",
        &[
            ("CHILD_URL", url.to_string()),
            ("CHILD_TOKEN", token.to_string()),
            ("CHILD_NAME", name.to_string()),
            ("CHILD_WORK", work.display().to_string()),
        ],
    )
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const LOST_PIPELINE: &str = r#"
work:
  retry:
    max: 1
    when: [runner_system_failure]
  script:
    - echo "attempt on $CI_RUNNER_ID"
    - if [ "$CI_RUNNER_ID" = "$FIRST_RUNNER" ]; then sleep 6; fi
    - echo finished
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_runner_fails_its_job_as_lost_and_the_retry_runs_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", LOST_PIPELINE)]);
    let mut cfg = config(&dir.path().join("data"), None);
    cfg.builtin_runner = false;
    let running = gantry_server::start(cfg).await.unwrap();
    let token = running.app.store.key.registration_token();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("lost", &repo_dir).await;

    let mut first = runner_child(&running.url, &token, "first", &dir.path().join("r1"));
    wait_for("the first runner", Duration::from_secs(30), || async {
        running.app.store.runners().await.unwrap().len() == 1
    })
    .await;
    let first_id = running.app.store.runners().await.unwrap()[0].id;
    let (s, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main", "variables": [{"key": "FIRST_RUNNER", "value": first_id.to_string()}]}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let pipeline = p["id"].as_i64().unwrap();
    wait_for(
        "the job to run on the first runner",
        Duration::from_secs(30),
        || async {
            let jobs = api.jobs(project, pipeline).await;
            jobs.first().is_some_and(|j| j["status"] == "running")
        },
    )
    .await;
    let _second = runner_child(&running.url, &token, "second", &dir.path().join("r2"));
    first.kill();

    let done = api
        .wait_pipeline(project, pipeline, Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "success", "{done}");
    let all = running
        .app
        .store
        .pipeline_jobs(pipeline, true)
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0].status, "failed");
    assert_eq!(all[0].failure_reason.as_deref(), Some("runner lost"));
    assert_eq!(all[0].runner_id, Some(first_id));
    assert_eq!(all[1].status, "success");
    assert_ne!(all[1].runner_id, Some(first_id));
    assert_eq!(all[1].attempt, 2);
    let (_, trace) = api
        .text(&format!(
            "/api/v4/projects/{project}/jobs/{}/trace",
            all[1].id
        ))
        .await;
    assert!(trace.contains("finished"), "{trace}");
    running.server.abort();
}

const RESTART_PIPELINE: &str = r#"
stages: [one, two]
long:
  stage: one
  script:
    - for i in 1 2 3 4 5 6 7 8 9 10; do echo "line $i"; sleep 0.3; done
    - mkdir -p out && echo kept > out/file.txt
  artifacts:
    paths: [out/]
after:
  stage: two
  script:
    - cat out/file.txt
"#;

async fn server_restart(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", RESTART_PIPELINE)]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("data");
    let mut env = vec![
        ("CHILD_DATA", data.display().to_string()),
        ("CHILD_LISTEN", format!("127.0.0.1:{port}")),
    ];
    if let Some(db) = &database {
        env.push(("CHILD_DATABASE", db.clone()));
    }
    let mut server = child("serve", &env);
    let api = Client::new(&url, Some(ADMIN_TOKEN));
    wait_for("the server", Duration::from_secs(30), || async {
        reqwest::get(format!("{url}/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let project = api.project("restart", &repo_dir).await;
    // The runner is in this process: it outlives the server.
    let key = gantry_server::crypto::ServerKey::load(None, &data).unwrap();
    let runner_cfg = RunnerConfig {
        url: url.clone(),
        registration_token: key.registration_token(),
        description: "survivor".into(),
        tags: Vec::new(),
        run_untagged: true,
        executor: ExecutorChoice::Shell,
        concurrency: 1,
        work_dir: dir.path().join("runner"),
    };
    let runner = tokio::spawn(gantry_server::runner::run(runner_cfg));
    let (s, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let pipeline = p["id"].as_i64().unwrap();
    wait_for("the long job to log", Duration::from_secs(30), || async {
        let jobs = api.jobs(project, pipeline).await;
        let Some(long) = jobs.iter().find(|j| j["name"] == "long") else {
            return false;
        };
        let (_, t) = api
            .text(&format!(
                "/api/v4/projects/{project}/jobs/{}/trace",
                long["id"]
            ))
            .await;
        t.contains("line 2")
    })
    .await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _server = child("serve", &env);
    wait_for("the restarted server", Duration::from_secs(30), || async {
        reqwest::get(format!("{url}/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let done = api
        .wait_pipeline(project, pipeline, Duration::from_secs(60))
        .await;
    let jobs = api.jobs(project, pipeline).await;
    assert_eq!(done["status"], "success", "{jobs:#?}");
    let long = jobs.iter().find(|j| j["name"] == "long").unwrap();
    let (_, trace) = api
        .text(&format!(
            "/api/v4/projects/{project}/jobs/{}/trace",
            long["id"]
        ))
        .await;
    let mut last = 0;
    for i in 1..=10 {
        let at = trace
            .find(&format!("line {i}\n"))
            .unwrap_or_else(|| panic!("line {i} lost: {trace}"));
        assert!(at >= last, "line {i} out of order: {trace}");
        last = at;
        assert_eq!(
            trace.matches(&format!("line {i}\n")).count(),
            1,
            "line {i} twice: {trace}"
        );
    }
    let after = jobs.iter().find(|j| j["name"] == "after").unwrap();
    let (_, trace) = api
        .text(&format!(
            "/api/v4/projects/{project}/jobs/{}/trace",
            after["id"]
        ))
        .await;
    assert!(trace.contains("kept"), "the artifact was lost: {trace}");
    runner.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_mid_pipeline_restarts_and_loses_nothing_on_sqlite() {
    server_restart(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_mid_pipeline_restarts_and_loses_nothing_on_postgres() {
    let Some(pg) = PgCluster::start() else { return };
    server_restart(Some(pg.database("restart"))).await;
}

/// 1,000 queued jobs (20 pipelines of `parallel: 50`) claimed through the runner protocol by
/// four concurrent runners that report success at once: each job is handed
/// out exactly once. (The runners skip execution: this is the queue's
/// guarantee, measured without the cost of 1,000 shells.)
async fn exactly_once(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(
            ".gitlab-ci.yml",
            "job:\n  parallel: 50\n  script: [\"true\"]\n",
        )],
    );
    let mut cfg = config(&dir.path().join("data"), database);
    cfg.builtin_runner = false;
    let running = gantry_server::start(cfg).await.unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("many", &repo_dir).await;
    let registration = running.app.store.key.registration_token();
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for i in 0..4 {
        let r: serde_json::Value = http
            .post(format!("{}/api/v4/runners", running.url))
            .json(&json!({"token": registration, "description": format!("r{i}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens.push(r["token"].as_str().unwrap().to_string());
    }
    let mut pipelines = Vec::new();
    for _ in 0..20 {
        let (s, p) = api
            .post(
                &format!("/api/v4/projects/{project}/pipeline"),
                json!({"ref": "main"}),
            )
            .await;
        assert_eq!(s, 201, "{p}");
        pipelines.push(p["id"].as_i64().unwrap());
    }
    let mut tasks = Vec::new();
    for token in tokens {
        let http = http.clone();
        let url = running.url.clone();
        tasks.push(tokio::spawn(async move {
            let mut claimed = Vec::new();
            loop {
                let r = http
                    .post(format!("{url}/api/v4/jobs/request"))
                    .json(&json!({"token": token}))
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                    .unwrap();
                if r.status().as_u16() == 204 {
                    return claimed;
                }
                assert_eq!(r.status().as_u16(), 201);
                let job: serde_json::Value = r.json().await.unwrap();
                let id = job["id"].as_i64().unwrap();
                let jt = job["token"].as_str().unwrap().to_string();
                let done = http
                    .put(format!("{url}/api/v4/jobs/{id}"))
                    .header("JOB-TOKEN", jt)
                    .json(&json!({"state": "success"}))
                    .send()
                    .await
                    .unwrap();
                assert!(done.status().is_success());
                claimed.push(id);
            }
        }));
    }
    // Runners stop at their first empty poll (20 s): wait for the pipelines instead.
    let mut all = Vec::new();
    for &pipeline in &pipelines {
        let done = api
            .wait_pipeline(project, pipeline, Duration::from_secs(120))
            .await;
        assert_eq!(done["status"], "success");
        all.extend(
            running
                .app
                .store
                .pipeline_jobs(pipeline, true)
                .await
                .unwrap(),
        );
    }
    for t in &tasks {
        t.abort();
    }
    assert_eq!(all.len(), 1000);
    let mut seen = HashSet::new();
    for job in &all {
        assert_eq!(job.status, "success");
        let transitions = running.app.store.job_transitions(job.id).await.unwrap();
        let runs = transitions.iter().filter(|t| t.1 == "running").count();
        assert_eq!(runs, 1, "job {} claimed {runs} times", job.id);
        assert!(seen.insert(job.id));
    }
    running.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_queued_jobs_run_exactly_once_on_four_runners_on_sqlite() {
    exactly_once(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_queued_jobs_run_exactly_once_on_four_runners_on_postgres() {
    let Some(pg) = PgCluster::start() else { return };
    exactly_once(Some(pg.database("many"))).await;
}
