//! Runners on other machines: the project's repository reaches them only
//! through the server (git's smart HTTP protocol, authenticated with the
//! job's token while the job runs), and caches are shared through the
//! server's object storage (local disk, or S3 on moto).
//!
//! The runners here run in this process (the same code as `gantry
//! runner`), each with its own work directory; the server has no built-in
//! runner. The project's source directory is deleted once the server has
//! mirrored it, and the runners' mirrors must come from an `http://` URL.

mod support;

use gantry_server::runner::{ExecutorChoice, RunnerConfig};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::*;

async fn start_server(data: &Path, objects: Option<String>) -> gantry_server::Running {
    let mut cfg = config(data, None);
    cfg.builtin_runner = false;
    cfg.objects = objects;
    gantry_server::start(cfg).await.unwrap()
}

fn start_runner(
    url: &str,
    registration_token: &str,
    name: &str,
    tags: &[&str],
    work: &Path,
) -> tokio::task::JoinHandle<()> {
    let cfg = RunnerConfig {
        url: url.to_string(),
        registration_token: registration_token.to_string(),
        description: name.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        run_untagged: false,
        executor: ExecutorChoice::Shell,
        concurrency: 1,
        work_dir: work.to_path_buf(),
    };
    tokio::spawn(async move {
        gantry_server::runner::run(cfg).await.unwrap();
    })
}

fn registration_token(running: &gantry_server::Running) -> String {
    running.app.store.key.registration_token()
}

async fn create_pipeline(api: &Client, project: i64, variables: serde_json::Value) -> i64 {
    let (s, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main", "variables": variables}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    p["id"].as_i64().unwrap()
}

async fn finish_pipeline(
    api: &Client,
    project: i64,
    id: i64,
) -> (serde_json::Value, Vec<serde_json::Value>) {
    let done = api
        .wait_pipeline(project, id, Duration::from_secs(60))
        .await;
    (done, api.jobs(project, id).await)
}

async fn trace(api: &Client, project: i64, job: &serde_json::Value) -> String {
    api.text(&format!(
        "/api/v4/projects/{project}/jobs/{}/trace",
        job["id"]
    ))
    .await
    .1
}

/// `git ls-remote` of `url` with `token` as the job token, as the runner
/// sends it; returns (success, stderr).
fn ls_remote(url: &str, token: &str) -> (bool, String) {
    use base64::Engine as _;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("gitlab-ci-token:{token}"));
    let out = Command::new("git")
        .args(["ls-remote", url])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "http.extraHeader")
        .env(
            "GIT_CONFIG_VALUE_0",
            format!("Authorization: Basic {basic}"),
        )
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

const GIT_PIPELINE: &str = r#"
build:
  tags: [remote]
  script:
    - cat hello.txt
    - git ls-remote "$CI_REPOSITORY_URL" refs/heads/main
    - echo "url $CI_REPOSITORY_URL"
    - printf '%s' "$CI_JOB_TOKEN" > "$TOKEN_FILE"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_on_another_machine_fetches_the_repository_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("source");
    let sha = repo(
        &repo_dir,
        &[
            (".gitlab-ci.yml", GIT_PIPELINE),
            ("hello.txt", "hello from the repository\n"),
        ],
    );
    let running = start_server(&dir.path().join("data"), None).await;
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("remote", &repo_dir).await;
    let token_file = dir.path().join("token");
    let pipeline = create_pipeline(
        &api,
        project,
        json!([{"key": "TOKEN_FILE", "value": token_file.display().to_string()}]),
    )
    .await;
    // The server has its mirror: the source is out of reach, as on another
    // machine, before the runner starts.
    std::fs::rename(&repo_dir, dir.path().join("moved")).unwrap();
    let work = dir.path().join("runner-work");
    let runner = start_runner(
        &running.url,
        &registration_token(&running),
        "far-away",
        &["remote"],
        &work,
    );
    let (done, jobs) = finish_pipeline(&api, project, pipeline).await;
    let log = trace(&api, project, &jobs[0]).await;
    assert_eq!(done["status"], "success", "{log}");
    assert!(log.contains("hello from the repository"), "{log}");
    // The job itself reads the repository with CI_REPOSITORY_URL.
    assert!(log.contains(&format!("{sha}\trefs/heads/main")), "{log}");
    let repo_url = format!("{}/api/v4/projects/{project}/repository.git", running.url);
    let shown = repo_url.replacen("http://", "http://gitlab-ci-token:[MASKED]@", 1);
    assert!(log.contains(&format!("url {shown}")), "{log}");

    // The runner's mirror came over HTTP; the token is nowhere on its disk.
    let mirror = work
        .join("projects")
        .join(project.to_string())
        .join("mirror.git");
    assert_eq!(git(&mirror, &["config", "remote.origin.url"]), repo_url);
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(token.len() >= 16, "job token {token:?}");
    assert_eq!(files_containing(&work, &token), Vec::<String>::new());
    assert!(!log.contains(&token), "{log}");

    // Served clones made the server give its mirror a reachability bitmap.
    let packs = dir
        .path()
        .join(format!("data/repos/{project}.git/objects/pack"));
    let bitmap = || {
        std::fs::read_dir(&packs)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".bitmap"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !bitmap() {
        assert!(
            std::time::Instant::now() < deadline,
            "no bitmap in {packs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The finished job's token opens nothing any more, and git says why.
    let (ok, stderr) = ls_remote(&repo_url, &token);
    assert!(!ok);
    assert!(
        stderr.contains("403") && stderr.contains("only while its job runs"),
        "{stderr}"
    );
    // A wrong token, and none at all.
    let (ok, stderr) = ls_remote(&repo_url, "not-a-job-token");
    assert!(!ok);
    assert!(
        stderr.contains("403") && stderr.contains("the job token was refused"),
        "{stderr}"
    );
    let plain = reqwest::get(format!("{repo_url}/info/refs?service=git-upload-pack"))
        .await
        .unwrap();
    assert_eq!(plain.status().as_u16(), 401);
    assert!(plain.headers().contains_key("www-authenticate"));
    assert!(plain.text().await.unwrap().contains("gitlab-ci-token"));
    // Pushes are refused whatever the credentials.
    let http = reqwest::Client::new();
    for resp in [
        http.get(format!("{repo_url}/info/refs?service=git-receive-pack"))
            .basic_auth("gitlab-ci-token", Some(&token))
            .send()
            .await
            .unwrap(),
        http.post(format!("{repo_url}/git-receive-pack"))
            .basic_auth("gitlab-ci-token", Some(&token))
            .body("0000")
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(resp.status().as_u16(), 403);
        assert!(resp.text().await.unwrap().contains("read-only"));
    }
    runner.abort();
    running.server.abort();
}

/// The server's external URL (`--external-url`) may not be reachable from
/// a runner's machine (a proxy's name, `0.0.0.0`): the runner fetches from
/// the address it reaches the server by; jobs still see the external URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_fetches_from_the_address_it_registered_with() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("source");
    repo(
        &repo_dir,
        &[(
            ".gitlab-ci.yml",
            "a:\n  tags: [x]\n  script: echo \"server $CI_SERVER_URL\"\n",
        )],
    );
    let mut cfg = config(&dir.path().join("data"), None);
    cfg.builtin_runner = false;
    cfg.external_url = Some("http://gantry.invalid".into());
    let running = gantry_server::start(cfg).await.unwrap();
    let direct = format!("http://{}", running.addr);
    let api = Client::new(&direct, Some(ADMIN_TOKEN));
    let project = api.project("behind-a-proxy", &repo_dir).await;
    let runner = start_runner(
        &direct,
        &registration_token(&running),
        "direct",
        &["x"],
        &dir.path().join("work"),
    );
    let pipeline = create_pipeline(&api, project, json!([])).await;
    let (done, jobs) = finish_pipeline(&api, project, pipeline).await;
    let log = trace(&api, project, &jobs[0]).await;
    assert_eq!(done["status"], "success", "{log}");
    assert!(log.contains("server http://gantry.invalid"), "{log}");
    runner.abort();
    running.server.abort();
}

/// A job whose token is refused while fetching (its job was canceled, or
/// the server was reset) fails with a message that says so, not git's
/// "could not read Username".
#[test]
fn a_refused_job_token_fails_the_fetch_with_a_clear_message() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let repo_dir = dir.path().join("source");
        repo(&repo_dir, &[(".gitlab-ci.yml", "a:\n  script: 'true'\n")]);
        let running = start_server(&dir.path().join("data"), None).await;
        let api = Client::new(&running.url, Some(ADMIN_TOKEN));
        let project = api.project("refused", &repo_dir).await;
        let sha = git(&repo_dir, &["rev-parse", "HEAD"]);
        let url = format!("{}/api/v4/projects/{project}/repository.git", running.url);
        let mirror = dir.path().join("mirror.git");
        let err = tokio::task::spawn_blocking(move || {
            gantry_server::runner::fetch_mirror(&mirror, &url, "stale-token", &sha)
                .unwrap_err()
                .to_string()
        })
        .await
        .unwrap();
        assert!(
            err.contains("the server refused this job's token") && !err.contains("stale-token"),
            "{err}"
        );
        assert!(!dir.path().join("mirror.git").exists());
        assert!(!dir.path().join("mirror.tmp").exists());
        running.server.abort();
    });
}

const CACHE_PIPELINE: &str = r#"
stages: [make, use]
produce:
  stage: make
  tags: [one]
  cache:
    - key: deps-$CI_COMMIT_REF_SLUG
      paths: [vendor/]
      policy: push
    - key: secret-$CACHE_SECRET
      paths: [vendor/]
      policy: pull-push
  script:
    - mkdir -p vendor && echo "made on runner $CI_RUNNER_ID" > vendor/lib.txt
failing:
  stage: make
  tags: [one]
  allow_failure: true
  cache:
    key: only-on-success
    paths: [vendor/]
  script:
    - mkdir -p vendor && echo never > vendor/lib.txt
    - exit 1
consume:
  stage: use
  tags: [two]
  cache:
    - key: not-there-$CI_PIPELINE_ID
      fallback_keys: [deps-$CI_COMMIT_REF_SLUG]
      paths: [vendor/]
      policy: pull
  script:
    - cat vendor/lib.txt
    - echo "running on runner $CI_RUNNER_ID"
probe:
  stage: use
  tags: [two]
  cache:
    key: only-on-success
    paths: [vendor/]
    policy: pull
  script:
    - test ! -e vendor/lib.txt && echo "nothing restored"
"#;

const CACHE_SECRET: &str = "c4che-s3cret-v4lue";

/// Runs [`CACHE_PIPELINE`] on two runners (tags force `produce` onto the
/// first and `consume` onto the second) against the server at `url`;
/// returns the project's id.
async fn caches_cross_runners(url: &str, registration_token: &str, dir: &Path) -> i64 {
    let repo_dir = dir.join("source");
    repo(&repo_dir, &[(".gitlab-ci.yml", CACHE_PIPELINE)]);
    let api = Client::new(url, Some(ADMIN_TOKEN));
    let project = api.project("caches", &repo_dir).await;
    let (s, v) = api
        .post(
            &format!("/api/v4/projects/{project}/variables"),
            json!({"key": "CACHE_SECRET", "value": CACHE_SECRET, "masked": true}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let works: Vec<_> = ["one", "two"]
        .iter()
        .map(|n| dir.join(format!("work-{n}")))
        .collect();
    let runners = [
        start_runner(url, registration_token, "runner-one", &["one"], &works[0]),
        start_runner(url, registration_token, "runner-two", &["two"], &works[1]),
    ];
    let pipeline = create_pipeline(&api, project, json!([])).await;
    let (done, jobs) = finish_pipeline(&api, project, pipeline).await;
    let mut logs = std::collections::HashMap::new();
    for j in &jobs {
        logs.insert(
            j["name"].as_str().unwrap().to_string(),
            trace(&api, project, j).await,
        );
    }
    assert_eq!(done["status"], "success", "{logs:#?}");
    let runner_of =
        |name: &str| jobs.iter().find(|j| j["name"] == name).unwrap()["runner"]["id"].clone();
    assert_ne!(runner_of("produce"), runner_of("consume"), "{jobs:#?}");
    let produce = &logs["produce"];
    assert!(produce.contains("Saved cache \"deps-main\""), "{produce}");
    assert!(
        produce.contains("Saved cache \"secret-[MASKED]\""),
        "{produce}"
    );
    let consume = &logs["consume"];
    assert!(
        consume.contains("Restored cache \"deps-main\""),
        "{consume}"
    );
    assert!(
        consume.contains(&format!("made on runner {}", runner_of("produce"))),
        "{consume}"
    );
    let failing = &logs["failing"];
    assert!(!failing.contains("Saved cache"), "{failing}");
    let probe = &logs["probe"];
    // A line of its own: the command itself is echoed too.
    assert!(probe.lines().any(|l| l == "nothing restored"), "{probe}");
    assert!(
        probe.contains("No cache found for \"only-on-success\""),
        "{probe}"
    );
    for r in runners {
        r.abort();
    }
    // Nothing of the secret stays on the runners' disks.
    for w in &works {
        assert_eq!(files_containing(w, CACHE_SECRET), Vec::<String>::new());
        assert!(
            !w.join("projects")
                .join(project.to_string())
                .join("caches")
                .read_dir()
                .is_ok_and(|mut d| d.next().is_some()),
            "cache transfers left files in {}",
            w.display()
        );
    }
    project
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_pushed_on_one_runner_is_pulled_on_another_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let running = start_server(&data, None).await;
    caches_cross_runners(&running.url, &registration_token(&running), dir.path()).await;
    // Two archives (deps-main, secret-…), in the server's object store,
    // named by digest: the masked value is in no object's name.
    let mut names = Vec::new();
    let mut stack = vec![data.join("objects").join("caches")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                names.push(e.path().display().to_string());
            }
        }
    }
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| !n.contains("c4che")), "{names:?}");
    running.server.abort();
}

const PROTECTED_PIPELINE: &str = r#"
guarded:
  tags: [c]
  cache:
    key: same-key
    paths: [vendor/]
  script:
    - if [ -f vendor/from ]; then echo "guarded from $(cat vendor/from)"; fi
    - mkdir -p vendor && echo "$CI_COMMIT_REF_NAME" > vendor/from
open:
  tags: [c]
  cache:
    key: open-key
    unprotect: true
    paths: [open/]
  script:
    - if [ -f open/from ]; then echo "open from $(cat open/from)"; fi
    - mkdir -p open && echo "$CI_COMMIT_REF_NAME" > open/from
"#;

/// As GitLab keeps them: a protected ref's caches are not readable (or
/// overwritable) from an unprotected branch, unless `cache:unprotect`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unprotected_branch_cannot_read_a_protected_branchs_cache() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("source");
    repo(&repo_dir, &[(".gitlab-ci.yml", PROTECTED_PIPELINE)]);
    git(&repo_dir, &["branch", "feature"]);
    let running = start_server(&dir.path().join("data"), None).await;
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("protected-caches", &repo_dir).await;
    let runner = start_runner(
        &running.url,
        &registration_token(&running),
        "c",
        &["c"],
        &dir.path().join("work"),
    );
    let mut logs = Vec::new();
    for git_ref in ["main", "feature", "main"] {
        let (s, p) = api
            .post(
                &format!("/api/v4/projects/{project}/pipeline"),
                json!({"ref": git_ref}),
            )
            .await;
        assert_eq!(s, 201, "{p}");
        let (done, jobs) = finish_pipeline(&api, project, p["id"].as_i64().unwrap()).await;
        let mut text = String::new();
        for j in &jobs {
            text.push_str(&trace(&api, project, j).await);
        }
        assert_eq!(done["status"], "success", "{text}");
        logs.push(text);
    }
    // (The scripts' own lines are echoed: look for the restored values.)
    assert!(!logs[0].contains("guarded from main"), "{}", logs[0]);
    // The feature branch sees the unprotected cache only.
    assert!(!logs[1].contains("guarded from main"), "{}", logs[1]);
    assert!(
        logs[1].contains("No cache found for \"same-key\""),
        "{}",
        logs[1]
    );
    assert!(logs[1].contains("open from main"), "{}", logs[1]);
    // And its save did not replace main's.
    assert!(logs[2].contains("guarded from main"), "{}", logs[2]);
    assert!(logs[2].contains("open from feature"), "{}", logs[2]);
    runner.abort();
    running.server.abort();
}

/// The child process entry of the S3 variant: a server (no built-in
/// runner) whose AWS settings live in its own environment only.
#[test]
#[ignore = "started by caches_are_shared_through_s3 as a child process"]
fn child_server() {
    let Ok(data) = std::env::var("GANTRY_TEST_CHILD_DATA") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let mut cfg = config(Path::new(&data), None);
        cfg.listen = std::env::var("GANTRY_TEST_CHILD_LISTEN").unwrap();
        cfg.objects = std::env::var("GANTRY_TEST_CHILD_OBJECTS").ok();
        cfg.builtin_runner = false;
        let running = gantry_server::start(cfg).await.unwrap();
        let _ = running.server.await;
    });
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_until_up(url: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !reqwest::get(url)
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(std::time::Instant::now() < deadline, "{url} did not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caches_are_shared_through_s3() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = std::env::var_os("GANTRY_AWS_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".venv-aws"));
    let bin = venv.join("bin/moto_server");
    if !bin.exists() {
        skip_or_fail(
            "GANTRY_REQUIRE_MOTO",
            "moto is not installed (run scripts/setup-moto.sh)",
        );
        return;
    }
    let moto_port = free_port();
    let _moto = Killed(
        Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoint = format!("http://127.0.0.1:{moto_port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", moto_port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "moto did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let http = reqwest::Client::new();
    let made = http
        .put(format!("{endpoint}/runner-caches"))
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
    let data = dir.path().join("data");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _server = Killed(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_server",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("GANTRY_TEST_CHILD_DATA", &data)
            .env("GANTRY_TEST_CHILD_LISTEN", format!("127.0.0.1:{port}"))
            .env("GANTRY_TEST_CHILD_OBJECTS", "s3://runner-caches/ci")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "eu-west-1")
            .env("AWS_ENDPOINT_URL", &endpoint)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until_up(&format!("{url}/healthz")).await;
    let key = gantry_server::crypto::ServerKey::load(None, &data).unwrap();
    let project = caches_cross_runners(&url, &key.registration_token(), dir.path()).await;
    let listing = http
        .get(format!(
            "{endpoint}/runner-caches?list-type=2&prefix=ci/caches/"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        listing
            .matches(&format!("<Key>ci/caches/{project}/"))
            .count(),
        2,
        "{listing}"
    );
    assert!(!listing.contains("c4che"), "{listing}");
    assert!(
        !data.join("objects").exists(),
        "objects were written to local disk"
    );
}

/// A runner killed mid-job (kill -9) leaves the job's files behind, among
/// them its environment record with the job token and masked values: the
/// next runner on that work directory removes them before taking jobs, and
/// a second runner on a directory in use is refused (it would sweep the
/// first one's running jobs).
#[test]
fn a_runner_sweeps_what_a_killed_runner_left_and_refuses_a_shared_work_dir() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let project = work.join("projects/7");
    for stale in [
        "builds/job-12.env.json",
        "builds/job-12/out.txt",
        "caches/12/0123.zip",
        "dependencies/12/11.zip",
        "mirror.tmp/HEAD",
    ] {
        let path = project.join(stale);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "hunter2").unwrap();
    }
    std::fs::create_dir_all(project.join("mirror.git")).unwrap();
    std::fs::write(project.join("mirror.git/HEAD"), "ref: refs/heads/main\n").unwrap();

    let lock = gantry_server::runner::claim_work_dir(&work).unwrap();
    assert_eq!(files_containing(&work, "hunter2"), Vec::<String>::new());
    assert!(
        project.join("mirror.git/HEAD").is_file(),
        "the mirror is kept"
    );

    let err = gantry_server::runner::claim_work_dir(&work)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("in use by another runner") && err.contains("--work-dir"),
        "{err}"
    );
    drop(lock);
    gantry_server::runner::claim_work_dir(&work).unwrap();
}
