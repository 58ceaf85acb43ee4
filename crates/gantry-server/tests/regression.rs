//! One test per bug fixed in the server, named after the behaviour.

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

/// A pipeline whose jobs were canceled was reported "failed": the state
/// machine restored from rows has no cancel flag, so the server must map
/// canceled jobs (and no failed one) to GitLab's "canceled".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canceled_pipeline_is_canceled_not_failed() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(
            ".gitlab-ci.yml",
            "stages: [a, b]\nslow:\n  stage: a\n  script: sleep 30\nnext:\n  stage: b\n  script: 'true'\n",
        )],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("cancel", &repo_dir).await;
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    for _ in 0..100 {
        if api.jobs(project, id).await[0]["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, _) = api
        .post(
            &format!("/api/v4/projects/{project}/pipelines/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(s, 201);
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "canceled");
    let jobs = api.jobs(project, id).await;
    assert!(jobs.iter().all(|j| j["status"] == "canceled"), "{jobs:#?}");
    running.server.abort();
}

/// The API's `play` ignored approvals: a developer could deploy to
/// production through python-gitlab while the dashboard refused. Playing a
/// manual job of a protected environment needs a maintainer on both doors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn playing_a_production_deploy_through_the_api_needs_a_maintainer() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(
            ".gitlab-ci.yml",
            "deploy:\n  script: 'true'\n  when: manual\n  environment:\n    name: production\n",
        )],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let url = running.url.clone();
    let api = Client::new(&url, Some(ADMIN_TOKEN));
    let project = api.project("approve", &repo_dir).await;
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    let mut job = None;
    for _ in 0..100 {
        let jobs = api.jobs(project, id).await;
        if jobs.first().is_some_and(|j| j["status"] == "manual") {
            job = jobs[0]["id"].as_i64();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = job.expect("the deploy job waits as manual");
    let play = format!("/api/v4/projects/{project}/jobs/{job}/play");
    let (_, dev) = api
        .post(
            "/api/v4/users",
            json!({"username": "dev", "role": "developer"}),
        )
        .await;
    let dev = Client::new(&url, dev["token"].as_str());
    assert_eq!(dev.post(&play, json!({})).await.0, 403);
    let (_, maint) = api
        .post(
            "/api/v4/users",
            json!({"username": "mia", "role": "maintainer"}),
        )
        .await;
    let maint = Client::new(&url, maint["token"].as_str());
    let (s, body) = maint.post(&play, json!({})).await;
    assert!(s == 200 || s == 201, "{s} {body}");
    // The approval is recorded whichever door it came through.
    let approvals = gantry_server::store_dashboard::DashboardStore(&running.app.store)
        .approvals(&[job])
        .await
        .unwrap();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].username, "mia");
    running.server.abort();
}

/// The dashboard's tables were created on the first dashboard page served,
/// outside the migrations: a server that had served only the API had no
/// `dashboard_approvals`, so an approval through the API could not be
/// recorded. They are now made by the migrations, on both databases.
async fn dashboard_tables_exist_before_any_page(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("data"), database);
    cfg.builtin_runner = false;
    let running = gantry_server::start(cfg).await.unwrap();
    for table in ["dashboard_sessions", "dashboard_approvals"] {
        let n: (i64,) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&running.app.store.db.pool)
                .await
                .unwrap_or_else(|e| panic!("{table} is missing before any page: {e}"));
        assert_eq!(n.0, 0);
    }
    running.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_tables_come_from_the_migrations_on_sqlite() {
    dashboard_tables_exist_before_any_page(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_tables_come_from_the_migrations_on_postgres() {
    let Some(pg) = PgCluster::start() else { return };
    dashboard_tables_exist_before_any_page(Some(pg.database("dashtables"))).await;
}

/// A 1,000-job pipeline took ~100 s: the queue rebuilt the pipeline's
/// schedule from every job row on every event (each job's end), so an
/// event cost grew with the pipeline. The schedule now stays in memory
/// while the pipeline lives; it is rebuilt only when rows changed behind
/// the queue's back. Counted, not timed: 300 jobs through runner-protocol
/// clients cause a handful of rebuilds, not one per event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_pipeline_does_not_rebuild_its_schedule_per_event() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(
            ".gitlab-ci.yml",
            "stages: [a, b]\nwide:\n  stage: a\n  parallel: 200\n  script: 'true'\n\
             next:\n  stage: b\n  parallel: 100\n  script: 'true'\n",
        )],
    );
    let mut cfg = config(&dir.path().join("data"), None);
    cfg.builtin_runner = false;
    let running = gantry_server::start(cfg).await.unwrap();
    let url = running.url.clone();
    let api = Client::new(&url, Some(ADMIN_TOKEN));
    let project = api.project("wide", &repo_dir).await;
    let registration = running.app.store.key.registration_token();
    let mut runners = Vec::new();
    for n in 0..4 {
        let url = url.clone();
        let registration = registration.clone();
        runners.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let r: serde_json::Value = http
                .post(format!("{url}/api/v4/runners"))
                .json(&json!({"token": registration, "description": format!("fake{n}")}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let token = r["token"].as_str().unwrap().to_string();
            loop {
                let resp = http
                    .post(format!("{url}/api/v4/jobs/request"))
                    .json(&json!({"token": token}))
                    .send()
                    .await
                    .unwrap();
                if resp.status().as_u16() != 201 {
                    continue;
                }
                let job: serde_json::Value = resp.json().await.unwrap();
                let s = http
                    .put(format!("{url}/api/v4/jobs/{}", job["id"]))
                    .header("JOB-TOKEN", job["token"].as_str().unwrap())
                    .json(&json!({"state": "success"}))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert!(s.is_success(), "finishing a job: {s}");
            }
        }));
    }
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(120))
        .await;
    assert_eq!(done["status"], "success");
    let jobs = api.jobs(project, id).await;
    assert!(jobs.iter().all(|j| j["status"] == "success"));
    let restores = running.app.metrics.schedule_restores.load(Relaxed);
    assert!(
        restores <= 5,
        "the schedule was rebuilt {restores} times for 300 job ends"
    );
    for r in runners {
        r.abort();
    }
    running.server.abort();
}

/// `scripts/serve-demo.sh` failed at its deploy job: a job of the server
/// named no deploy history, so `gantry deploy` refused to run ("this is a
/// CI job and no deployment history was named"). The server's jobs get
/// `GANTRY_HISTORY` = the server's URL: deploys record into its history.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_job_names_the_server_as_its_deploy_history() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(
            ".gitlab-ci.yml",
            "show:\n  script: echo \"history=[$GANTRY_HISTORY]\"\n",
        )],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("history", &repo_dir).await;
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "success");
    let job = &api.jobs(project, id).await[0];
    let (_, log) = api
        .text(&format!(
            "/api/v4/projects/{project}/jobs/{}/trace",
            job["id"]
        ))
        .await;
    assert!(log.contains(&format!("history=[{}]", running.url)), "{log}");
    running.server.abort();
}

/// A log read while the job finished could come back truncated or empty:
/// the finish deleted chunks between the reader's listing and its reads.
/// A browser following the live log then got `end` before the job's last
/// lines, which never arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_read_while_the_job_finishes_is_never_truncated() {
    use gantry_server::logs::Logs;
    use gantry_server::objects::Objects;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let logs = Arc::new(Logs::new(Objects::open(None, dir.path()).unwrap()));
    let mut bad = Vec::new();
    for job in 1..=60 {
        let mut want = Vec::new();
        for i in 0..30 {
            let line = format!("job {job} line {i}\n");
            logs.append(job, want.len() as u64, line.as_bytes(), &[])
                .await
                .unwrap();
            want.extend_from_slice(line.as_bytes());
        }
        let finished = Arc::new(AtomicBool::new(false));
        let reader = {
            let (logs, finished) = (logs.clone(), finished.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let done = finished.load(Ordering::SeqCst);
                    seen.push(logs.read(job, 0).await.unwrap().len());
                    if done {
                        return seen;
                    }
                }
            })
        };
        tokio::task::yield_now().await;
        logs.finish(job).await.unwrap();
        finished.store(true, Ordering::SeqCst);
        let seen = reader.await.unwrap();
        bad.extend(seen.into_iter().filter(|&n| n != want.len()));
    }
    assert!(bad.is_empty(), "reads came back short: {bad:?}");
}

/// The deploy history's result badges (`succeeded`, `rolled_back`, …) had
/// no colour rule, so their white text sat on no background and could not
/// be read: every result `gantry deploy` records has a rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_deploy_result_badge_has_a_colour() {
    use gantry_deploy::history::DeployResult;
    let dir = tempfile::tempdir().unwrap();
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let (s, css) = Client::new(&running.url, None)
        .text("/dash/assets/dashboard.css")
        .await;
    assert_eq!(s, 200);
    for result in [
        DeployResult::InProgress,
        DeployResult::Submitted,
        DeployResult::Succeeded,
        DeployResult::Failed,
        DeployResult::RolledBack,
        DeployResult::Interrupted,
    ] {
        let rule = format!(".s-{} {{ --c:", result.as_str());
        assert!(css.contains(&rule), "no colour for {rule}");
    }
    running.server.abort();
}

/// A runner left each job's environment record (`builds/<job>.env.json`,
/// written by the engine for `gantry shell`) on its disk after the job:
/// the job token and every masked variable's value, in plain text. A
/// runner has no `gantry shell`, so nothing of a finished job's
/// environment may stay behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_keeps_no_secret_of_a_finished_job_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(
            ".gitlab-ci.yml",
            "job:\n  script: echo \"$DEPLOY_PASSWORD\"\n",
        )],
    );
    let data = dir.path().join("data");
    let running = gantry_server::start(config(&data, None)).await.unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("secrets", &repo_dir).await;
    let secret = "hunter2-on-the-runner-disk";
    let (s, v) = api
        .post(
            &format!("/api/v4/projects/{project}/variables"),
            json!({"key": "DEPLOY_PASSWORD", "value": secret, "masked": true}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "success");
    let mut stack = vec![data.join("runner")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} holds the masked value",
                    path.display()
                );
            }
        }
    }
    running.server.abort();
}

/// `gantry runner --work-dir DIR` with a relative DIR (the default,
/// `gantry-runner`, is one) failed every shell job: the script's path was
/// relative to the runner's directory, and the shell ran it from the job's
/// build directory ("step_script.sh: No such file or directory").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_with_a_relative_work_dir_runs_shell_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(".gitlab-ci.yml", "job:\n  script: echo relative-ok\n")],
    );
    let mut cfg = config(&dir.path().join("data"), None);
    cfg.builtin_runner = false;
    let running = gantry_server::start(cfg).await.unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("relative", &repo_dir).await;
    // The temporary directory, relative to this test's working directory.
    let cwd = std::env::current_dir().unwrap();
    let mut relative = std::path::PathBuf::new();
    for _ in 0..cwd.components().count() - 1 {
        relative.push("..");
    }
    let work = relative.join(dir.path().join("work").strip_prefix("/").unwrap());
    assert!(work.is_relative());
    let runner = tokio::spawn(gantry_server::runner::run(
        gantry_server::runner::RunnerConfig {
            url: running.url.clone(),
            registration_token: running.app.store.key.registration_token(),
            description: "relative".into(),
            tags: Vec::new(),
            run_untagged: true,
            executor: gantry_server::runner::ExecutorChoice::Shell,
            concurrency: 1,
            work_dir: work,
        },
    ));
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(60))
        .await;
    let jobs = api.jobs(project, id).await;
    let (_, trace) = api
        .text(&format!(
            "/api/v4/projects/{project}/jobs/{}/trace",
            jobs[0]["id"]
        ))
        .await;
    assert_eq!(done["status"], "success", "{trace}");
    assert!(trace.contains("relative-ok"), "{trace}");
    runner.abort();
    running.server.abort();
}

/// A trigger job whose child pipeline could not be created (its file is
/// missing) failed with no failure reason: GitLab's bridge says
/// `downstream_pipeline_creation_failed`, which API clients read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_that_cannot_be_created_fails_its_trigger_job_with_gitlabs_reason() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(
            ".gitlab-ci.yml",
            "broken:\n  trigger:\n    include: ci/missing.yml\n",
        )],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("missing-child", &repo_dir).await;
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "failed");
    let (_, bridges) = api
        .get(&format!(
            "/api/v4/projects/{project}/pipelines/{id}/bridges"
        ))
        .await;
    assert_eq!(
        bridges[0]["failure_reason"], "downstream_pipeline_creation_failed",
        "{bridges:#}"
    );
    running.server.abort();
}

/// `strategy: mirror` (GitLab's schema: `depend` or `mirror`) was taken as
/// no strategy: the trigger job succeeded at once though its child failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strategy_mirror_waits_for_the_downstream_pipeline_like_depend() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[
            (
                ".gitlab-ci.yml",
                "mirrored:\n  trigger:\n    include: ci/failing.yml\n    strategy: mirror\n",
            ),
            ("ci/failing.yml", "fails:\n  script: exit 3\n"),
        ],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("mirror", &repo_dir).await;
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(60))
        .await;
    let (_, bridges) = api
        .get(&format!(
            "/api/v4/projects/{project}/pipelines/{id}/bridges"
        ))
        .await;
    assert_eq!(done["status"], "failed", "{bridges:#}");
    assert_eq!(bridges[0]["status"], "failed", "{bridges:#}");
    assert_eq!(bridges[0]["downstream_pipeline"]["status"], "failed");
    running.server.abort();
}

/// A child pipeline got its trigger job's variables as written and
/// expanded them itself: `PARENT_PIPELINE_ID: $CI_PIPELINE_ID` (GitLab's
/// documented way to fetch the parent's artifacts) gave the child's own id,
/// and a value from a needed job's dotenv report was empty. GitLab expands
/// them in the parent; a masked variable still reaches the child masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_gets_its_trigger_jobs_variables_expanded_in_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[
            (
                ".gitlab-ci.yml",
                "build:\n  script: echo VERSION=4.5.6 > build.env\n  artifacts:\n    reports:\n      dotenv: build.env\nchild:\n  needs: [build]\n  variables:\n    PARENT_PIPELINE_ID: $CI_PIPELINE_ID\n    DOWN_VERSION: v$VERSION\n    SECRET_COPY: $TOKEN\n  trigger:\n    include: ci/child.yml\n    strategy: depend\n",
            ),
            (
                "ci/child.yml",
                "show:\n  script: echo \"parent=$PARENT_PIPELINE_ID own=$CI_PIPELINE_ID version=$DOWN_VERSION secret=$SECRET_COPY\"\n",
            ),
        ],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("expand-upstream", &repo_dir).await;
    let (status, body) = api
        .post(
            &format!("/api/v4/projects/{project}/variables"),
            json!({"key": "TOKEN", "value": "very-secret-token", "masked": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(60))
        .await;
    let (_, bridges) = api
        .get(&format!(
            "/api/v4/projects/{project}/pipelines/{id}/bridges"
        ))
        .await;
    assert_eq!(done["status"], "success", "{bridges:#}");
    let child = bridges[0]["downstream_pipeline"]["id"].as_i64().unwrap();
    let jobs = api.jobs(project, child).await;
    let (_, log) = api
        .text(&format!(
            "/api/v4/projects/{project}/jobs/{}/trace",
            jobs[0]["id"]
        ))
        .await;
    assert!(
        log.contains(&format!(
            "parent={id} own={child} version=v4.5.6 secret=[MASKED]"
        )),
        "{log}"
    );
    assert!(!log.contains("very-secret-token"), "{log}");
    running.server.abort();
}

/// A child pipeline whose jobs were all skipped ended its `strategy:
/// depend` trigger job as a success; GitLab's dependent bridge fails when
/// its downstream pipeline is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strategy_depend_fails_on_a_skipped_downstream_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[
            (
                ".gitlab-ci.yml",
                "child:\n  trigger:\n    include: ci/skipped.yml\n    strategy: depend\n",
            ),
            (
                "ci/skipped.yml",
                "only-on-failure:\n  when: on_failure\n  script: echo never\n",
            ),
        ],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("skipped-child", &repo_dir).await;
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(60))
        .await;
    let (_, bridges) = api
        .get(&format!(
            "/api/v4/projects/{project}/pipelines/{id}/bridges"
        ))
        .await;
    assert_eq!(
        bridges[0]["downstream_pipeline"]["status"], "skipped",
        "{bridges:#}"
    );
    assert_eq!(bridges[0]["status"], "failed", "{bridges:#}");
    assert_eq!(done["status"], "failed");
    running.server.abort();
}

/// Playing a manual trigger job did not record who played it, so its
/// multi-project pipeline was checked against (and run as) the user who
/// started the upstream pipeline; GitLab's bridge becomes the player's.
/// The upstream pipeline is a viewer's, made through the library (a viewer
/// cannot start one through the API).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_played_trigger_job_creates_its_downstream_pipeline_as_the_player() {
    let dir = tempfile::tempdir().unwrap();
    let down_dir = dir.path().join("downstream");
    repo(&down_dir, &[(".gitlab-ci.yml", "ok:\n  script: echo ok\n")]);
    let up_dir = dir.path().join("upstream");
    repo(
        &up_dir,
        &[(
            ".gitlab-ci.yml",
            "deploy:\n  when: manual\n  trigger:\n    project: root/downstream\n",
        )],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let downstream = api.project("downstream", &down_dir).await;
    let upstream = api.project("upstream", &up_dir).await;
    let (_, viewer) = api
        .post(
            "/api/v4/users",
            json!({"username": "vic", "role": "viewer"}),
        )
        .await;
    let (_, developer) = api
        .post(
            "/api/v4/users",
            json!({"username": "dev", "role": "developer"}),
        )
        .await;
    let project = running.app.store.project(upstream).await.unwrap().unwrap();
    let req = gantry_server::pipelines::Request {
        git_ref: "main".into(),
        source: "api".into(),
        user_id: viewer["id"].as_i64(),
        ..Default::default()
    };
    let up = gantry_server::pipelines::create(&running.app, &project, req)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let bridge = loop {
        assert!(std::time::Instant::now() < deadline, "no manual bridge");
        let (_, list) = api
            .get(&format!(
                "/api/v4/projects/{upstream}/pipelines/{}/bridges",
                up.id
            ))
            .await;
        if list[0]["status"] == "manual" {
            break list[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dev = Client::new(&running.url, developer["token"].as_str());
    let (status, body) = dev
        .post(
            &format!("/api/v4/projects/{upstream}/jobs/{}/play", bridge["id"]),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = api
        .wait_pipeline(upstream, up.id, Duration::from_secs(60))
        .await;
    let (_, list) = api
        .get(&format!(
            "/api/v4/projects/{upstream}/pipelines/{}/bridges",
            up.id
        ))
        .await;
    assert_eq!(list[0]["status"], "success", "{list:#}");
    assert_eq!(done["status"], "success");
    let down_id = list[0]["downstream_pipeline"]["id"].as_i64().unwrap();
    let (_, down) = api
        .get(&format!(
            "/api/v4/projects/{downstream}/pipelines/{down_id}"
        ))
        .await;
    assert_eq!(down["user"]["id"], developer["id"], "{down:#}");
    running.server.abort();
}

/// `--listen 0.0.0.0:PORT` without `--url` told jobs and runners
/// `http://0.0.0.0:PORT`, which no other machine (nor a container) can
/// reach: the URL is now the machine's name or address, and it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listening_on_every_interface_gives_jobs_a_reachable_url() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(
            ".gitlab-ci.yml",
            "show:\n  script: echo \"server at $CI_SERVER_URL\"\n",
        )],
    );
    let mut cfg = config(&dir.path().join("data"), None);
    cfg.listen = "0.0.0.0:0".into();
    let running = gantry_server::start(cfg).await.unwrap();
    let host = url::Url::parse(&running.url)
        .unwrap()
        .host_str()
        .unwrap()
        .to_string();
    assert!(
        !matches!(host.as_str(), "0.0.0.0" | "[::]" | "::"),
        "{}",
        running.url
    );
    assert!(running.app.url_guessed);
    let health = reqwest::get(format!("{}/healthz", running.url))
        .await
        .unwrap();
    assert!(health.status().is_success(), "{}", running.url);
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("anywhere", &repo_dir).await;
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(60))
        .await;
    let job = &api.jobs(project, id).await[0];
    let (_, trace) = api
        .text(&format!(
            "/api/v4/projects/{project}/jobs/{}/trace",
            job["id"]
        ))
        .await;
    assert_eq!(done["status"], "success", "{trace}");
    assert!(
        trace.contains(&format!("server at {}", running.url)),
        "{trace}"
    );
    running.server.abort();
}

/// A server whose repository mirrors were wiped (or a second server that
/// never had them) answered a runner's git fetch with "no repository on
/// this server": git over HTTP now fetches the mirror on demand.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn git_over_http_fetches_a_missing_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(".gitlab-ci.yml", "read:\n  script: cat README.md\n")],
    );
    commit(&repo_dir, &[("README.md", "fetched again\n")], "readme");
    let mut cfg = config(&dir.path().join("data"), None);
    cfg.builtin_runner = false;
    let running = gantry_server::start(cfg).await.unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("wiped", &repo_dir).await;
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    std::fs::remove_dir_all(dir.path().join("data/repos")).unwrap();
    let runner = gantry_server::runner::RunnerConfig {
        url: running.url.clone(),
        registration_token: running.app.store.key.registration_token(),
        description: "remote".into(),
        tags: Vec::new(),
        run_untagged: true,
        executor: gantry_server::runner::ExecutorChoice::Shell,
        concurrency: 1,
        work_dir: dir.path().join("runner"),
    };
    let runner = tokio::spawn(async move {
        let _ = gantry_server::runner::run(runner).await;
    });
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(60))
        .await;
    let job = &api.jobs(project, id).await[0];
    let (_, trace) = api
        .text(&format!(
            "/api/v4/projects/{project}/jobs/{}/trace",
            job["id"]
        ))
        .await;
    assert_eq!(done["status"], "success", "{trace}");
    assert!(trace.contains("fetched again"), "{trace}");
    runner.abort();
    running.server.abort();
}

/// A second server started on the same database with a key of its own
/// (no GANTRY_SERVER_KEY, so a fresh DATA/server.key) came up, handed
/// runners a registration token the first server refuses and read stored
/// variables as garbage: it is now refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_key_than_its_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cfg = config(&data, None);
    cfg.builtin_runner = false;
    let first = gantry_server::start(cfg.clone()).await.unwrap();
    first.server.abort();
    // Its locks go with it (a second server on one data directory is
    // refused for that alone: a_second_server_on_one_data_directory…).
    drop(first);
    std::fs::remove_file(data.join("server.key")).unwrap();
    let err = gantry_server::start(cfg.clone())
        .await
        .err()
        .expect("a new key is refused");
    assert!(err.to_string().contains("another server key"), "{err}");
    cfg.server_key = Some("ab".repeat(32));
    assert!(gantry_server::start(cfg).await.is_err());
}

/// Behind a load balancer a runner's log chunks reach the servers in
/// turn. A server trusted its own last write as the end of the log: a
/// chunk past it was refused as a gap, and the resend was stored again
/// over what the other server had stored, so the log read back truncated
/// and was finished with lines twice. Two servers' logs over one store:
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_chunks_sent_to_two_servers_in_turn_make_one_log() {
    use gantry_server::logs::{Appended, Logs};
    use gantry_server::objects::Objects;
    let dir = tempfile::tempdir().unwrap();
    let a = Logs::new(Objects::open(None, dir.path()).unwrap());
    let b = Logs::new(Objects::open(None, dir.path()).unwrap());
    assert_eq!(
        a.append(7, 0, b"one\n", &[]).await.unwrap(),
        Appended::Next(4)
    );
    assert_eq!(
        b.append(7, 4, b"two\n", &[]).await.unwrap(),
        Appended::Next(8)
    );
    // A last wrote up to 4; the log is at 8 since B's chunk.
    assert_eq!(
        a.append(7, 8, b"three\n", &[]).await.unwrap(),
        Appended::Next(14)
    );
    // A resend that overlaps what B stored adds only the new bytes.
    assert_eq!(
        b.append(7, 8, b"three\nfour\n", &[]).await.unwrap(),
        Appended::Next(19)
    );
    assert_eq!(&a.read(7, 0).await.unwrap()[..], b"one\ntwo\nthree\nfour\n");
    b.finish(7).await.unwrap();
    assert_eq!(&a.read(7, 0).await.unwrap()[..], b"one\ntwo\nthree\nfour\n");
}

/// A runner's work directory stayed "in use by another runner" after its
/// lock was dropped while a child forked by the process (not yet exec'd)
/// held a copy of the descriptor: the lock was only closed, not unlocked
/// (fresh-clone CI, runner_remote.rs).
#[test]
fn a_released_work_dir_is_free_while_a_forked_child_holds_its_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let lock = gantry_server::runner::claim_work_dir(&work).unwrap();
    // SAFETY: the child only sleeps and exits (async-signal-safe calls).
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        unsafe {
            libc::sleep(5);
            libc::_exit(0);
        }
    }
    drop(lock);
    let again = gantry_server::runner::claim_work_dir(&work);
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    assert!(
        again.is_ok(),
        "a released work dir is still busy: {again:?}"
    );
}

/// A server whose mirror of a project was fetched before another server
/// fetched that project kept reading the old copy for `include:project`
/// (multi_server.rs has the whole case: two servers on one database).
#[test]
fn a_mirror_is_behind_once_any_server_fetched_its_project_again() {
    let dir = tempfile::tempdir().unwrap();
    let repos = gantry_server::repos::Repos::new(dir.path().to_path_buf());
    // A server that has not fetched since it started knows nothing.
    assert!(repos.is_behind(7, 1));
    assert!(!repos.is_behind(7, 0));
    repos.mark_synced(7, 3);
    assert!(!repos.is_behind(7, 3));
    assert!(repos.is_behind(7, 4), "another server's fetch is newer");
    // A late note of an older fetch does not hide a newer one.
    repos.mark_synced(7, 2);
    assert!(!repos.is_behind(7, 3));
    assert!(!repos.is_behind(8, 0));
}

/// A runner looked only at the 64 oldest pending jobs: with more than 64
/// older jobs for other runners' tags waiting, a job with its own tag was
/// never handed to it. The tags are matched in the claim's query now.
async fn a_tagged_job_behind_many_jobs_for_other_tags_is_claimed(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(
            ".gitlab-ci.yml",
            "elsewhere:\n  parallel: 70\n  tags: [other]\n  script: 'true'\n\
             zz-mine:\n  tags: [mine]\n  script: 'true'\n",
        )],
    );
    let mut cfg = config(&dir.path().join("data"), database);
    cfg.builtin_runner = false;
    let running = gantry_server::start(cfg).await.unwrap();
    let url = running.url.clone();
    let api = Client::new(&url, Some(ADMIN_TOKEN));
    let project = api.project("tagged", &repo_dir).await;
    let (s, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let registration = running.app.store.key.registration_token();
    let http = reqwest::Client::new();
    let r: serde_json::Value = http
        .post(format!("{url}/api/v4/runners"))
        .json(&json!({"token": registration, "description": "mine", "tag_list": ["mine"], "run_untagged": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = r["token"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let job: serde_json::Value = loop {
        let resp = http
            .post(format!("{url}/api/v4/jobs/request"))
            .json(&json!({"token": token}))
            .send()
            .await
            .unwrap();
        if resp.status().as_u16() == 201 {
            break resp.json().await.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the runner tagged `mine` was never given its job"
        );
    };
    assert_eq!(job["name"], "zz-mine");
    running.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tagged_job_behind_many_jobs_for_other_tags_is_claimed_on_sqlite() {
    a_tagged_job_behind_many_jobs_for_other_tags_is_claimed(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tagged_job_behind_many_jobs_for_other_tags_is_claimed_on_postgres() {
    let Some(pg) = PgCluster::start() else { return };
    a_tagged_job_behind_many_jobs_for_other_tags_is_claimed(Some(pg.database("tagged"))).await;
}

/// A second `gantry serve` on a data directory (or a SQLite database)
/// another one was serving started as well: it cleaned the first one's
/// uploads in progress, and two processes wrote one SQLite file, each
/// thinking it was the only writer. It is refused now, naming the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_server_on_one_data_directory_or_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cfg = config(&data, None);
    cfg.builtin_runner = false;
    let first = gantry_server::start(cfg.clone()).await.unwrap();
    let again = gantry_server::start(cfg).await;
    let message = again.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("is using the data directory")
            && message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    let database = format!("sqlite://{}?mode=rwc", data.join("gantry.db").display());
    let mut other = config(&dir.path().join("other"), Some(database));
    other.builtin_runner = false;
    let message = gantry_server::start(other)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.contains("is using the SQLite database") && message.contains("postgres://"),
        "{message}"
    );
    first.server.abort();
}

/// A child of a merge-request pipeline lost the merge request: its jobs
/// had no `CI_MERGE_REQUEST_*` variables, so `rules: if:
/// $CI_MERGE_REQUEST_IID` left the child empty and the trigger job
/// failed. GitLab hands a child its parent's merge request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_of_a_merge_request_pipeline_keeps_the_merge_requests_variables() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[
            (
                ".gitlab-ci.yml",
                "child:\n  trigger:\n    include: child.yml\n    strategy: depend\n\
                 \x20 rules:\n    - if: $CI_PIPELINE_SOURCE == \"merge_request_event\"\n",
            ),
            (
                "child.yml",
                "mr-job:\n  rules:\n    - if: $CI_MERGE_REQUEST_IID\n  script: echo \
                 \"merge request !$CI_MERGE_REQUEST_IID into $CI_MERGE_REQUEST_TARGET_BRANCH_NAME\"\n",
            ),
        ],
    );
    git(&repo_dir, &["checkout", "-q", "-b", "feature"]);
    let sha = commit(&repo_dir, &[("feature.txt", "new\n")], "a feature");
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("mr-child", &repo_dir).await;
    let secret = api.webhook_secret(project).await;
    let body = json!({
        "object_kind": "merge_request",
        "object_attributes": {
            "iid": 7, "action": "open", "title": "A feature",
            "source_branch": "feature", "target_branch": "main",
            "last_commit": {"id": sha},
        },
    });
    let r = reqwest::Client::new()
        .post(format!(
            "{}/api/v4/projects/{project}/webhooks/gitlab",
            running.url
        ))
        .header("X-Gitlab-Token", secret)
        .header("X-Gitlab-Event", "Merge Request Hook")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    let parent_id = created["pipeline_id"].as_i64().unwrap();
    let parent = api
        .wait_pipeline(project, parent_id, Duration::from_secs(60))
        .await;
    let (_, bridges) = api
        .get(&format!(
            "/api/v4/projects/{project}/pipelines/{parent_id}/bridges"
        ))
        .await;
    assert_eq!(parent["status"], "success", "{bridges:#}");
    let child = bridges[0]["downstream_pipeline"]["id"].as_i64().unwrap();
    let jobs = api.jobs(project, child).await;
    let job = jobs.iter().find(|j| j["name"] == "mr-job").unwrap();
    let (_, trace) = api
        .text(&format!(
            "/api/v4/projects/{project}/jobs/{}/trace",
            job["id"]
        ))
        .await;
    assert!(trace.contains("merge request !7 into main"), "{trace}");
    running.server.abort();
}
