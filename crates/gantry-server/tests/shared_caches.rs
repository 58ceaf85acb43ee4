//! Shared caches on the server. `gantry serve --cache-max-age`: caches neither saved nor
//! restored within the maximum age are deleted by the sweeper, on local
//! disk and in S3 (moto); a cache restored lately is kept, and goes once
//! it too has been unused for the age. The kept cache is larger than one
//! upload part, so it reaches the store as a multipart upload.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::*;

const PIPELINE: &str = r#"
save:
  rules: [{if: '$STEP == "save"'}]
  cache:
    - key: old
      paths: [a/]
      policy: push
    - key: kept
      paths: [b/]
      policy: push
  script:
    - mkdir -p a b && echo stale > a/x && echo "kept value" > b/y
    - head -c 12000000 /dev/urandom > b/big && sha256sum b/big | cut -c1-64 > b/big.sum
restore:
  rules: [{if: '$STEP == "restore"'}]
  cache:
    key: kept
    paths: [b/]
    policy: pull
  script:
    - cat b/y
    - test "$(sha256sum b/big | cut -c1-64)" = "$(cat b/big.sum)" && echo "big cache intact"
"#;

/// The maximum age in the test: long enough that a loaded machine runs
/// the restoring pipeline well within it.
const MAX_AGE: Duration = Duration::from_secs(8);

async fn run(api: &Client, project: i64, step: &str) -> String {
    let (s, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main", "variables": [{"key": "STEP", "value": step}]}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
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
    trace
}

async fn caches(app: &gantry_server::app::App) -> Vec<String> {
    app.objects
        .list("caches/")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

async fn unused_caches_expire(objects: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", PIPELINE)]);
    let mut cfg = config(&dir.path().join("data"), None);
    cfg.objects = objects;
    cfg.cache_max_age = Some(MAX_AGE);
    cfg.sweep_interval = Duration::from_millis(200);
    let running = gantry_server::start(cfg).await.unwrap();
    let app = running.app.clone();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("caches", &repo_dir).await;

    // Before the save: no archive is older than this.
    let saved_at = Instant::now();
    let trace = run(&api, project, "save").await;
    assert!(trace.contains("Saved cache \"kept\""), "{trace}");
    assert_eq!(caches(&app).await.len(), 2, "{trace}");

    tokio::time::sleep(MAX_AGE / 3).await;
    let trace = run(&api, project, "restore").await;
    assert!(trace.contains("kept value"), "{trace}");
    assert!(trace.contains("big cache intact"), "{trace}");
    // The restore was noted: that names the kept archive.
    let noted: Vec<(String,)> = sqlx::query_as("SELECT object FROM cache_uses")
        .fetch_all(&app.store.db.pool)
        .await
        .unwrap();
    assert_eq!(noted.len(), 1, "{noted:?}");
    let kept = noted[0].0.clone();
    let listed = caches(&app).await;
    assert!(
        saved_at.elapsed() < MAX_AGE,
        "the machine is too slow for this test's maximum age"
    );
    assert_eq!(listed.len(), 2, "nothing expires before the maximum age");
    assert!(listed.contains(&kept), "{listed:?}");

    // The unused one goes at the maximum age; the restored one stays.
    let deadline = Instant::now() + MAX_AGE + Duration::from_secs(20);
    loop {
        let listed = caches(&app).await;
        if listed.len() == 1 {
            assert_eq!(
                listed,
                std::slice::from_ref(&kept),
                "the restored cache was deleted"
            );
            assert!(saved_at.elapsed() >= MAX_AGE - Duration::from_secs(1));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unused cache stayed: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then the restored one, once unused for the age; its note goes too.
    loop {
        if caches(&app).await.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restored cache never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The sweep deletes the archives first, then the notes.
    loop {
        let left: Vec<(String,)> = sqlx::query_as("SELECT object FROM cache_uses")
            .fetch_all(&app.store.db.pool)
            .await
            .unwrap();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "notes left: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unused_caches_expire_on_local_disk() {
    unused_caches_expire(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unused_caches_expire_in_s3() {
    let Some((_moto, _endpoint)) = start_moto("gantry-caches").await else {
        return;
    };
    unused_caches_expire(Some("s3://gantry-caches/ci".into())).await;
}

/// Uploads are checked after they are spooled: an archive with an entry
/// outside the job's directory, or no zip at all, is refused (sent here
/// by the job itself, with its own token, as a hostile job would).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_cache_upload_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(
        &repo_dir,
        &[(
            ".gitlab-ci.yml",
            r#"
evil:
  script:
    - python3 -c "import zipfile; z = zipfile.ZipFile('evil.zip', 'w'); z.writestr('../escape.txt', 'x'); z.close()"
    - echo plain > plain.txt
    - |
      for f in evil.zip plain.txt; do curl -s -o answer.txt -w "HTTP %{http_code} " -X PUT -H "JOB-TOKEN: $CI_JOB_TOKEN" --data-binary @$f "$CI_API_V4_URL/jobs/$CI_JOB_ID/cache/k-$f"; cat answer.txt; echo; done
"#,
        )],
    );
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("hostile", &repo_dir).await;
    let trace = run(&api, project, "any").await;
    assert!(
        trace.contains("HTTP 400") && trace.contains("outside the job's directory"),
        "{trace}"
    );
    assert!(trace.contains("not a zip archive"), "{trace}");
    assert!(caches(&running.app).await.is_empty());
    let uploads = dir.path().join("data/uploads");
    let left = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        left,
        0,
        "spooled uploads were left in {}",
        uploads.display()
    );
    running.server.abort();
}
