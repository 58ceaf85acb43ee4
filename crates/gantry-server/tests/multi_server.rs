//! Several servers behind one load balancer: two `gantry serve` processes
//! (here two servers in this process, each with its OWN data directory)
//! on one PostgreSQL database and one S3 bucket (moto) work as one. A
//! webhook sent to server A runs jobs that a runner connected only to
//! server B claims (B has no mirror: it fetches one on demand for git over
//! HTTP); logs are followed on A while B receives them; artifacts are
//! downloaded from either; a server whose mirrors were wiped fetches them
//! again; a schedule fires once although both servers' queues see it due;
//! a server with another server key is refused; runners waiting on B are
//! woken by jobs made on A; B plans an `include:project` of a project whose
//! mirror only A had, and fetches it again once A has fetched a change.

mod support;

use gantry_server::runner::{ExecutorChoice, RunnerConfig};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

const SERVER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

const PIPELINE: &str = r#"
stages: [build, test]
build:
  stage: build
  cache:
    key: deps
    paths: [deps/]
  script:
    - echo "first half from $CI_JOB_NAME"
    - sleep 2
    - mkdir -p out deps && echo "built $CI_COMMIT_SHORT_SHA" > out/result.txt && echo dep > deps/d.txt
    - echo "second half"
  artifacts:
    paths: [out/]
test:
  stage: test
  cache:
    key: deps
    paths: [deps/]
    policy: pull
  script:
    - cat out/result.txt
    - cat deps/d.txt
"#;

fn server_config(data: &Path, database: &str, key: &str) -> gantry_server::ServeConfig {
    let mut cfg = config(data, Some(database.to_string()));
    cfg.objects = Some("s3://gantry-multi/ci".into());
    cfg.server_key = Some(key.into());
    cfg.builtin_runner = false;
    cfg
}

/// Reads the SSE log stream of `job` on `url` until its `end` event;
/// answers the text of every `log` event and the final status.
async fn follow(url: &str, project: i64, job: i64) -> (String, String) {
    let mut resp = reqwest::Client::new()
        .get(format!(
            "{url}/api/v4/projects/{project}/jobs/{job}/trace/stream"
        ))
        .header("PRIVATE-TOKEN", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut raw = String::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !raw.contains("event: end") {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no end event; stream so far: {raw}");
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => raw.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the stream stopped ({other:?}); so far: {raw}"),
        }
    }
    let mut log = String::new();
    let mut status = String::new();
    let mut event = "";
    for line in raw.lines() {
        if let Some(e) = line.strip_prefix("event: ") {
            event = if e == "log" { "log" } else { "end" };
        } else if let Some(data) = line.strip_prefix("data: ") {
            if event == "log" {
                log.push_str(&serde_json::from_str::<String>(data).unwrap_or_default());
            } else {
                status = data.to_string();
            }
        }
    }
    (log, status)
}

async fn artifact_file(url: &str, project: i64, job: i64) -> Vec<u8> {
    let r = reqwest::Client::new()
        .get(format!(
            "{url}/api/v4/projects/{project}/jobs/{job}/artifacts"
        ))
        .header("PRIVATE-TOKEN", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "artifacts of job {job} from {url}");
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_database_and_bucket_work_as_one() {
    let Some(pg) = PgCluster::start() else { return };
    let Some((_moto, _endpoint)) = start_moto("gantry-multi").await else {
        return;
    };
    let database = pg.database("multi");
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let first = repo(&repo_dir, &[(".gitlab-ci.yml", PIPELINE)]);

    let a = gantry_server::start(server_config(&dir.path().join("a"), &database, SERVER_KEY))
        .await
        .unwrap();
    let b = gantry_server::start(server_config(&dir.path().join("b"), &database, SERVER_KEY))
        .await
        .unwrap();
    // A third server with a key of its own would fail every runner and
    // read stored variables as garbage: it is refused.
    let other_key = "ff".repeat(32);
    let refused = gantry_server::start(server_config(&dir.path().join("c"), &database, &other_key))
        .await
        .err()
        .expect("a server with another key is refused");
    assert!(
        refused.to_string().contains("GANTRY_SERVER_KEY"),
        "{refused}"
    );

    // New jobs on A wake the runners waiting on B at once (PostgreSQL's
    // NOTIFY), not at their next look at the table. The listener may still
    // be connecting: try a few times.
    let mut heard = false;
    for _ in 0..20 {
        let notified = b.app.queue.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        a.app.queue.notify_waiters();
        if tokio::time::timeout(Duration::from_millis(500), notified)
            .await
            .is_ok()
        {
            heard = true;
            break;
        }
    }
    assert!(heard, "B never heard of A's new jobs");

    // The only runner talks to B.
    let runner = RunnerConfig {
        url: b.url.clone(),
        registration_token: b.app.store.key.registration_token(),
        description: "on-b".into(),
        tags: Vec::new(),
        run_untagged: true,
        executor: ExecutorChoice::Shell,
        concurrency: 2,
        work_dir: dir.path().join("runner"),
    };
    let runner = tokio::spawn(async move {
        gantry_server::runner::run(runner).await.unwrap();
    });

    let api_a = Client::new(&a.url, Some(ADMIN_TOKEN));
    let api_b = Client::new(&b.url, Some(ADMIN_TOKEN));
    let project = api_a.project("multi", &repo_dir).await;
    assert!(
        !dir.path()
            .join("b/repos")
            .join(format!("{project}.git"))
            .exists(),
        "B has no mirror before its first request"
    );

    // A push, sent to A.
    let second = commit(&repo_dir, &[("README.md", "two servers\n")], "second");
    let secret = api_a.webhook_secret(project).await;
    let (s, body) = send_gitlab_hook(
        &a.url,
        project,
        &secret,
        &gitlab_push("main", &first, &second),
    )
    .await;
    assert!(s == 200 || s == 201, "webhook: {s} {body}");
    let pipeline = wait_for_pipeline(&api_b, project, 1).await;
    let jobs = api_b.jobs(project, pipeline).await;
    let build = jobs.iter().find(|j| j["name"] == "build").unwrap()["id"]
        .as_i64()
        .unwrap();
    // Followed on A while the runner sends its chunks to B.
    let (log, status) = follow(&a.url, project, build).await;
    assert_eq!(status, "success", "{log}");
    assert!(log.contains("first half from build"), "{log}");
    assert!(log.contains("second half"), "{log}");

    let done = api_a
        .wait_pipeline(project, pipeline, Duration::from_secs(90))
        .await;
    let jobs = api_a.jobs(project, pipeline).await;
    assert_eq!(done["status"], "success", "{jobs:#?}");
    assert_eq!(done["sha"], second.as_str());
    let test = jobs.iter().find(|j| j["name"] == "test").unwrap()["id"]
        .as_i64()
        .unwrap();
    for api in [&api_a, &api_b] {
        let (_, trace) = api
            .text(&format!("/api/v4/projects/{project}/jobs/{test}/trace"))
            .await;
        assert!(
            trace.contains(&format!("built {}", &second[..8])),
            "{trace}"
        );
        assert!(trace.contains("dep"), "{trace}");
    }
    let from_a = artifact_file(&a.url, project, build).await;
    let from_b = artifact_file(&b.url, project, build).await;
    assert!(from_a.starts_with(b"PK"), "not a zip");
    assert_eq!(from_a, from_b);
    assert!(
        dir.path()
            .join("b/repos")
            .join(format!("{project}.git/HEAD"))
            .exists(),
        "B fetched its mirror on demand"
    );

    // B's disk is wiped (its mirrors are a cache): a retried job fetches
    // the mirror again through B.
    std::fs::remove_dir_all(dir.path().join("b/repos")).unwrap();
    let (s, retried) = api_a
        .post(
            &format!("/api/v4/projects/{project}/jobs/{test}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{retried}");
    let retried = retried["id"].as_i64().unwrap();
    let (log, status) = follow(&b.url, project, retried).await;
    assert_eq!(status, "success", "{log}");
    assert!(log.contains(&format!("built {}", &second[..8])), "{log}");

    // A schedule that is due: both servers' queues see it, one pipeline runs.
    let (s, schedule) = api_b
        .post(
            &format!("/api/v4/projects/{project}/pipeline_schedules"),
            json!({"description": "nightly", "ref": "main", "cron": "0 3 * * *"}),
        )
        .await;
    assert_eq!(s, 201, "{schedule}");
    let id = schedule["id"].as_i64().unwrap();
    let stored = a
        .app
        .store
        .schedules(Some(project))
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.id == id)
        .unwrap();
    // Seam: cron cannot be made due now without waiting for the clock, so
    // the next run is moved to now through the store.
    let now = gantry_server::now_ms();
    assert!(
        a.app
            .store
            .advance_schedule(id, stored.next_run_at, now, None)
            .await
            .unwrap()
    );
    let scheduled = wait_for_pipeline(&api_a, project, 2).await;
    // Both queues tick twice a second: give the other one time to err.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, all) = api_a
        .get(&format!(
            "/api/v4/projects/{project}/pipelines?per_page=100"
        ))
        .await;
    let from_schedule: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"] == "schedule")
        .collect();
    assert_eq!(from_schedule.len(), 1, "{all:#}");
    let done = api_b
        .wait_pipeline(project, scheduled, Duration::from_secs(90))
        .await;
    assert_eq!(done["status"], "success");

    // `include:project` of a project whose mirror only A has: B, planning
    // a pipeline that includes it, fetches that mirror too.
    let shared_dir = dir.path().join("shared");
    repo(
        &shared_dir,
        &[
            (".gitlab-ci.yml", "noop:\n  script: 'true'\n"),
            (
                "templates/check.yml",
                "included-check:\n  script: echo from-the-shared-project\n",
            ),
        ],
    );
    let shared = api_a.project("shared", &shared_dir).await;
    let (_, shared_json) = api_a.get(&format!("/api/v4/projects/{shared}")).await;
    let shared_path = shared_json["path_with_namespace"].as_str().unwrap();
    let consumer_dir = dir.path().join("consumer");
    let consumer_ci =
        format!("include:\n  - project: {shared_path}\n    file: templates/check.yml\n");
    repo(&consumer_dir, &[(".gitlab-ci.yml", consumer_ci.as_str())]);
    let consumer = api_a.project("consumer", &consumer_dir).await;
    assert!(
        !dir.path()
            .join("b/repos")
            .join(format!("{shared}.git"))
            .exists(),
        "B has no mirror of the included project"
    );
    let trace = included_check_trace(&api_b, consumer).await;
    assert!(trace.contains("from-the-shared-project"), "{trace}");

    // The included project changes and A fetches it (a pipeline of its
    // own): B's mirror of it is behind now, and B's next plan reads the
    // new file, not its old copy.
    commit(
        &shared_dir,
        &[(
            "templates/check.yml",
            "included-check:\n  script: echo changed-in-the-shared-project\n",
        )],
        "change the shared template",
    );
    let (s, created) = api_a
        .post(
            &format!("/api/v4/projects/{shared}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let trace = included_check_trace(&api_b, consumer).await;
    assert!(trace.contains("changed-in-the-shared-project"), "{trace}");

    runner.abort();
    a.server.abort();
    b.server.abort();
}

/// Runs the consumer's pipeline on `api`'s server; answers the trace of
/// its job from the included project.
async fn included_check_trace(api: &Client, consumer: i64) -> String {
    let (s, created) = api
        .post(
            &format!("/api/v4/projects/{consumer}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let done = api
        .wait_pipeline(consumer, id, Duration::from_secs(90))
        .await;
    assert_eq!(done["status"], "success", "{done}");
    let jobs = api.jobs(consumer, id).await;
    let check = jobs.iter().find(|j| j["name"] == "included-check").unwrap()["id"]
        .as_i64()
        .unwrap();
    api.text(&format!("/api/v4/projects/{consumer}/jobs/{check}/trace"))
        .await
        .1
}

/// Waits until the project has `count` pipelines; answers the newest id.
async fn wait_for_pipeline(api: &Client, project: i64, count: usize) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list) = api
            .get(&format!(
                "/api/v4/projects/{project}/pipelines?per_page=100"
            ))
            .await;
        let list = list.as_array().cloned().unwrap_or_default();
        if list.len() >= count {
            return list.iter().filter_map(|p| p["id"].as_i64()).max().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{count} pipeline(s) expected: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
