//! The server as `gantry deploy`'s history store (`--history http://SERVER`):
//! gantry-deploy's own HTTP client against a running server, on SQLite and
//! PostgreSQL. Concurrent writers lose nothing, a lease blocks a second
//! deployer, and a job's records (written with its `CI_JOB_TOKEN`) show on
//! the dashboard's Environments page.

mod support;

use gantry_deploy::history::{
    DeployResult, DeploymentRecord, HistoryStore, LeaseAttempt, LeaseHolder, RecordKind,
};
use gantry_deploy::http_history::HttpHistoryStore;
use serde_json::json;
use std::time::Duration;
use support::*;

const TARGET: &str = "docker:unix:///run/podman/podman.sock/web";

async fn concurrent_writers_and_leases(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("data"), database);
    cfg.builtin_runner = false;
    let running = gantry_server::start(cfg).await.unwrap();
    let url = running.url.clone();

    // Two clients, as two runners would have, each saving 20 records and
    // updating each one once (a deploy saves "in progress", then its result).
    let mut writers = Vec::new();
    for w in 0..2 {
        let url = url.clone();
        writers.push(tokio::spawn(async move {
            let store = HttpHistoryStore::with_user_token(&url, ADMIN_TOKEN).unwrap();
            for i in 0..20 {
                let mut r = DeploymentRecord::start(
                    TARGET,
                    RecordKind::Deploy,
                    &format!("web:{w}.{i}"),
                    None,
                );
                r.id = format!("w{w}-r{i}");
                store.save(&r).await.unwrap();
                r.finish(DeployResult::Succeeded, None);
                store.save(&r).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let reader = HttpHistoryStore::with_user_token(&url, ADMIN_TOKEN).unwrap();
    let records = reader.records(TARGET).await.unwrap();
    assert_eq!(records.len(), 40, "every record of both writers is kept");
    assert!(
        records
            .iter()
            .all(|r| r.result == DeployResult::Succeeded && r.known_good)
    );
    assert_eq!(reader.list(Some("docker:web")).await.unwrap().len(), 40);
    assert_eq!(reader.list(Some("ecs")).await.unwrap().len(), 0);
    assert!(
        reader
            .last_known_good(TARGET, None)
            .await
            .unwrap()
            .is_some()
    );

    // A lease blocks the second deployer until the first releases it.
    let a = HttpHistoryStore::with_user_token(&url, ADMIN_TOKEN).unwrap();
    let b = HttpHistoryStore::with_user_token(&url, ADMIN_TOKEN).unwrap();
    let mut holder_a = LeaseHolder::for_this_process(Duration::from_secs(600));
    holder_a.job = Some("deploy-a".into());
    let holder_b = LeaseHolder::for_this_process(Duration::from_secs(600));
    let (ra, rb) = tokio::join!(
        a.acquire_lease(TARGET, &holder_a),
        b.acquire_lease(TARGET, &holder_b)
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(
        matches!(
            (&ra, &rb),
            (LeaseAttempt::Acquired, LeaseAttempt::Held(_))
                | (LeaseAttempt::Held(_), LeaseAttempt::Acquired)
        ),
        "exactly one of two concurrent deployers holds the lease: {ra:?} {rb:?}"
    );
    let (first, first_holder, second, second_holder) = if ra == LeaseAttempt::Acquired {
        (&a, &holder_a, &b, &holder_b)
    } else {
        (&b, &holder_b, &a, &holder_a)
    };
    match second.acquire_lease(TARGET, second_holder).await.unwrap() {
        LeaseAttempt::Held(h) => assert_eq!(h.id, first_holder.id, "the holder is named"),
        other => panic!("the second deployer got {other:?}"),
    }
    // Another holder's id does not release it; the holder's does.
    second
        .release_lease(TARGET, &second_holder.id)
        .await
        .unwrap();
    assert!(matches!(
        second.acquire_lease(TARGET, second_holder).await.unwrap(),
        LeaseAttempt::Held(_)
    ));
    first.release_lease(TARGET, &first_holder.id).await.unwrap();
    assert_eq!(
        second.acquire_lease(TARGET, second_holder).await.unwrap(),
        LeaseAttempt::Acquired
    );
    // An expired lease is taken over.
    second
        .release_lease(TARGET, &second_holder.id)
        .await
        .unwrap();
    let mut stale = LeaseHolder::for_this_process(Duration::from_secs(600));
    stale.expires_at = "2000-01-01T00:00:00Z".into();
    assert_eq!(
        first.acquire_lease(TARGET, &stale).await.unwrap(),
        LeaseAttempt::Acquired
    );
    assert_eq!(
        second.acquire_lease(TARGET, second_holder).await.unwrap(),
        LeaseAttempt::Acquired
    );

    // A wrong token is refused with a message that does not repeat it.
    let bad = HttpHistoryStore::with_user_token(&url, "gpat-wrong-token-secret").unwrap();
    let err = bad.records(TARGET).await.unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("gpat-wrong-token-secret"), "{err}");
    running.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_history_clients_lose_nothing_and_a_lease_blocks_the_second_on_sqlite() {
    concurrent_writers_and_leases(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_history_clients_lose_nothing_and_a_lease_blocks_the_second_on_postgres() {
    let Some(pg) = PgCluster::start() else { return };
    concurrent_writers_and_leases(Some(pg.database("history"))).await;
}

const DEPLOY_PIPELINE: &str = r#"
deploy:
  script:
    - |
      cat > record.json <<JSON
      {"id": "rec-$CI_JOB_ID", "target": "docker:local/shop", "kind": "deploy", "revision": "shop-rev-7",
       "started_at": "2026-11-26T03:00:00Z", "result": "succeeded", "known_good": true, "job_id": "$CI_JOB_ID"}
      JSON
    - >-
      curl -sSf -X PUT -H "JOB-TOKEN: $CI_JOB_TOKEN" -H "Content-Type: application/json"
      --data @record.json "$CI_API_V4_URL/deploy_history/records/rec-$CI_JOB_ID"
  environment:
    name: staging
"#;

/// A job writes a record with its own token (as `gantry deploy --history
/// $CI_SERVER_URL` does inside a job); the server ties it to the job's
/// project and environment and the Environments page lists it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_token_writes_records_that_the_environments_page_shows() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", DEPLOY_PIPELINE)]);
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("shop", &repo_dir).await;
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap_or_else(|| panic!("{p}"));
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(60))
        .await;
    let jobs = api.jobs(project, id).await;
    assert_eq!(done["status"], "success", "{jobs:#?}");

    let stored = gantry_server::deploy_history::HistoryRows(&running.app.store)
        .of_project(project)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].environment.as_deref(), Some("staging"));
    assert_eq!(stored[0].record.revision, "shop-rev-7");

    // A finished job's token no longer writes.
    let r = reqwest::Client::new()
        .get(format!("{}/api/v4/deploy_history/records", running.url))
        .header("JOB-TOKEN", "gjob-not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let mut web = Web::new(&running.url);
    assert_eq!(web.login("root", ADMIN_TOKEN).await, 303);
    let (status, page, _) = web.get("/dash/environments").await;
    assert_eq!(status, 200);
    let staging = page
        .find("shop / staging")
        .expect("the staging environment");
    let rev = page.find("shop-rev-7").expect("the deploy record is shown");
    assert!(rev > staging, "the record is shown under its environment");
    assert!(page.contains("docker:local/shop"));
    running.server.abort();
}
