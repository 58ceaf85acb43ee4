//! Logs and artifacts in S3 (moto's server) instead of local disk: a
//! pipeline runs, its trace and artifacts are read back through the API,
//! and the objects are in the bucket, not in the data directory.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

struct Moto(std::process::Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = std::env::var_os("GANTRY_AWS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv-aws"));
    let bin = venv.join("bin/moto_server");
    if !bin.exists() {
        skip_or_fail(
            "GANTRY_REQUIRE_MOTO",
            "moto is not installed (run scripts/setup-moto.sh)",
        );
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _moto = Moto(
        Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // This test binary has one test: its environment is its own.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_DEFAULT_REGION", "eu-west-1");
        std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
    }
    let http = reqwest::Client::new();
    let made = http
        .put(format!("{endpoint}/gantry-ci"))
        .body(r#"<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>"#)
        .send()
        .await
        .unwrap();
    assert!(
        made.status().is_success(),
        "create bucket: {}",
        made.text().await.unwrap()
    );

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
