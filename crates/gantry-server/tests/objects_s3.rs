//! Logs and artifacts in S3 (moto's server) instead of local disk: a
//! pipeline runs, its trace and artifacts are read back through the API,
//! and the objects are in the bucket, not in the data directory.

mod support;

use std::time::Duration;
use support::*;

const PIPELINE: &str = r#"
stages: [build, test]
build:
  stage: build
  script:
    - echo "made in $CI_JOB_NAME"
    - mkdir -p out && echo from-s3 > out/x.txt
  artifacts:
    paths: [out/]
test:
  stage: test
  script: cat out/x.txt
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_and_artifacts_live_in_s3() {
    // This test binary has one test: the AWS variables start_moto sets
    // are its own.
    let Some((_moto, endpoint)) = start_moto("gantry-ci").await else {
        return;
    };
    let http = reqwest::Client::new();

    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", PIPELINE)]);
    let mut cfg = config(&dir.path().join("data"), None);
    cfg.objects = Some("s3://gantry-ci/server".into());
    let running = gantry_server::start(cfg).await.unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("s3", &repo_dir).await;
    let (s, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            serde_json::json!({"ref": "main"}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let id = p["id"].as_i64().unwrap();
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(60))
        .await;
    let jobs = api.jobs(project, id).await;
    assert_eq!(done["status"], "success", "{jobs:#?}");
    let build = jobs.iter().find(|j| j["name"] == "build").unwrap();
    let test = jobs.iter().find(|j| j["name"] == "test").unwrap();
    let (_, trace) = api
        .text(&format!(
            "/api/v4/projects/{project}/jobs/{}/trace",
            build["id"]
        ))
        .await;
    assert!(trace.contains("made in build"), "{trace}");
    let (_, trace) = api
        .text(&format!(
            "/api/v4/projects/{project}/jobs/{}/trace",
            test["id"]
        ))
        .await;
    assert!(trace.contains("from-s3"), "{trace}");

    let listing = http
        .get(format!("{endpoint}/gantry-ci?list-type=2&prefix=server/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listing.contains(&format!("server/artifacts/{}.zip", build["id"])),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("server/logs/{}/full", build["id"])),
        "{listing}"
    );
    assert!(
        !dir.path().join("data/objects").exists(),
        "objects were written to local disk"
    );
    running.server.abort();
}
