//! What the server refuses: bad webhook signatures and tokens, missing or
//! wrong API tokens, a runner token used as a user token, roles below what
//! an action needs, a protected variable on an unprotected ref, a masked
//! value sent in a log chunk, an artifact archive with `../` paths.

mod support;

use serde_json::json;
use std::io::Write;
use std::time::Duration;
use support::*;

const PIPELINE: &str = r#"
show:
  script:
    - echo "prod=[$PROD_ONLY]"
    - sleep 2
"#;

struct Env {
    _dir: tempfile::TempDir,
    running: gantry_server::Running,
    api: Client,
    project: i64,
    repo: std::path::PathBuf,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", PIPELINE)]);
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("sec", &repo_dir).await;
    Env {
        _dir: dir,
        running,
        api,
        project,
        repo: repo_dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_with_a_bad_token_or_signature_are_refused() {
    let e = env().await;
    let url = &e.running.url;
    let sha = support::git(&e.repo, &["rev-parse", "HEAD"]);
    let body = gitlab_push("main", "0000000000000000000000000000000000000000", &sha);
    let (s, _) = send_gitlab_hook(url, e.project, "wrong-secret", &body).await;
    assert_eq!(s, 401);
    let http = reqwest::Client::new();
    let r = http
        .post(format!(
            "{url}/api/v4/projects/{}/webhooks/gitlab",
            e.project
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "no token");

    let secret = e.api.webhook_secret(e.project).await;
    let raw = serde_json::to_vec(&body).unwrap();
    for (path, header, sig) in [
        (
            "github",
            "X-Hub-Signature-256",
            gantry_server::crypto::sign_hmac_sha256("not-the-secret", &raw),
        ),
        ("gitea", "X-Gitea-Signature", "00".repeat(32)),
    ] {
        let r = http
            .post(format!(
                "{url}/api/v4/projects/{}/webhooks/{path}",
                e.project
            ))
            .header(header, sig)
            .header("X-GitHub-Event", "push")
            .header("X-Gitea-Event", "push")
            .body(raw.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} with a bad signature");
    }
    // A body changed after signing is refused too.
    let signed = gantry_server::crypto::sign_hmac_sha256(&secret, &raw);
    let mut tampered = raw.clone();
    tampered.push(b' ');
    let r = http
        .post(format!(
            "{url}/api/v4/projects/{}/webhooks/github",
            e.project
        ))
        .header("X-Hub-Signature-256", &signed)
        .header("X-GitHub-Event", "push")
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Nothing was created by any of them; the right signature works.
    let (_, pipelines) = e
        .api
        .get(&format!("/api/v4/projects/{}/pipelines", e.project))
        .await;
    assert_eq!(pipelines.as_array().unwrap().len(), 0);
    let r = http
        .post(format!(
            "{url}/api/v4/projects/{}/webhooks/github",
            e.project
        ))
        .header("X-Hub-Signature-256", &signed)
        .header("X-GitHub-Event", "push")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    e.running.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_tokens_are_checked_and_roles_limit_actions() {
    let e = env().await;
    let url = &e.running.url;
    let path = format!("/api/v4/projects/{}/pipelines", e.project);
    assert_eq!(Client::new(url, None).get(&path).await.0, 401, "no token");
    assert_eq!(
        Client::new(url, Some("gpat-wrong")).get(&path).await.0,
        401,
        "wrong token"
    );
    // Bearer works like PRIVATE-TOKEN.
    let r = reqwest::Client::new()
        .get(format!("{url}{path}"))
        .header("Authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // A runner token is not a user token.
    let (_, reg) = Client::new(url, None)
        .post(
            "/api/v4/runners",
            json!({"token": e.running.app.store.key.registration_token(), "description": "x"}),
        )
        .await;
    let runner_token = reg["token"].as_str().unwrap();
    assert_eq!(Client::new(url, Some(runner_token)).get(&path).await.0, 401);
    // And the registration token is not either; a wrong one registers nothing.
    let (s, _) = Client::new(url, None)
        .post(
            "/api/v4/runners",
            json!({"token": "grrt-wrong", "description": "x"}),
        )
        .await;
    assert_eq!(s, 403);

    // A viewer reads but cannot run or manage; a developer runs but cannot manage variables.
    let (_, viewer) = e
        .api
        .post(
            "/api/v4/users",
            json!({"username": "vera", "role": "viewer"}),
        )
        .await;
    let viewer = Client::new(url, viewer["token"].as_str());
    assert_eq!(viewer.get(&path).await.0, 200);
    let create = format!("/api/v4/projects/{}/pipeline", e.project);
    assert_eq!(viewer.post(&create, json!({"ref": "main"})).await.0, 403);
    let (_, dev) = e
        .api
        .post(
            "/api/v4/users",
            json!({"username": "dev", "role": "developer"}),
        )
        .await;
    let dev = Client::new(url, dev["token"].as_str());
    let vars = format!("/api/v4/projects/{}/variables", e.project);
    assert_eq!(
        dev.post(&vars, json!({"key": "A", "value": "b"})).await.0,
        403
    );
    assert_eq!(dev.get(&vars).await.0, 403);
    assert_eq!(
        dev.post("/api/v4/users", json!({"username": "x"})).await.0,
        403
    );
    assert_eq!(dev.post(&create, json!({"ref": "main"})).await.0, 201);
    e.running.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn protected_variables_reach_only_protected_refs() {
    let e = env().await;
    let (s, _) = e
        .api
        .post(
            &format!("/api/v4/projects/{}/variables", e.project),
            json!({"key": "PROD_ONLY", "value": "prod-credential", "protected": true}),
        )
        .await;
    assert_eq!(s, 201);
    support::git(&e.repo, &["branch", "topic"]);
    let mut traces = Vec::new();
    for git_ref in ["main", "topic"] {
        let (s, p) = e
            .api
            .post(
                &format!("/api/v4/projects/{}/pipeline", e.project),
                json!({"ref": git_ref}),
            )
            .await;
        assert_eq!(s, 201, "{p}");
        let id = p["id"].as_i64().unwrap();
        e.api
            .wait_pipeline(e.project, id, Duration::from_secs(60))
            .await;
        let job = &e.api.jobs(e.project, id).await[0];
        let (_, t) = e
            .api
            .text(&format!(
                "/api/v4/projects/{}/jobs/{}/trace",
                e.project, job["id"]
            ))
            .await;
        traces.push(t);
    }
    assert!(
        traces[0].contains("prod=[prod-credential]"),
        "main is protected: {}",
        traces[0]
    );
    assert!(traces[1].contains("prod=[]"), "topic is not: {}", traces[1]);
    e.running.server.abort();
}

/// Claims the project's next job as a runner; returns (job id, job token).
async fn claim(url: &str, registration: &str) -> (i64, String) {
    let c = Client::new(url, None);
    let (_, reg) = c
        .post(
            "/api/v4/runners",
            json!({"token": registration, "description": "probe"}),
        )
        .await;
    let (s, job) = c
        .post("/api/v4/jobs/request", json!({"token": reg["token"]}))
        .await;
    assert_eq!(s, 201, "{job}");
    (
        job["id"].as_i64().unwrap(),
        job["token"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn masked_values_in_log_chunks_and_escaping_artifacts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", PIPELINE)]);
    let mut cfg = config(&dir.path().join("data"), None);
    cfg.builtin_runner = false;
    let running = gantry_server::start(cfg).await.unwrap();
    let url = running.url.clone();
    let api = Client::new(&url, Some(ADMIN_TOKEN));
    let project = api.project("sec", &repo_dir).await;
    let (s, _) = api
        .post(
            &format!("/api/v4/projects/{project}/variables"),
            json!({"key": "TOKEN", "value": "sup3r-s3cret-value", "masked": true}),
        )
        .await;
    assert_eq!(s, 201);
    // A masked value must be long enough to be found in logs.
    let (s, _) = api
        .post(
            &format!("/api/v4/projects/{project}/variables"),
            json!({"key": "SHORT", "value": "abc", "masked": true}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            json!({"ref": "main"}),
        )
        .await;
    assert_eq!(s, 201);
    let (job, token) = claim(&url, &running.app.store.key.registration_token()).await;
    let http = reqwest::Client::new();

    // A runner that did not mask (or a value split oddly) still stores no secret.
    let chunk = b"connecting with sup3r-s3cret-value now\n";
    let r = http
        .patch(format!("{url}/api/v4/jobs/{job}/trace"))
        .header("JOB-TOKEN", &token)
        .header("Content-Range", format!("0-{}", chunk.len() - 1))
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let (_, trace) = api
        .text(&format!("/api/v4/projects/{project}/jobs/{job}/trace"))
        .await;
    assert_eq!(trace, "connecting with [MASKED] now\n");
    let stored = std::fs::read_dir(dir.path().join("data/objects/logs").join(job.to_string()))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(!stored.contains("sup3r"), "{stored}");

    // A job token from another job, or none, cannot write this log.
    let r = http
        .patch(format!("{url}/api/v4/jobs/{job}/trace"))
        .header("JOB-TOKEN", "gjob-forged")
        .header("Content-Range", "0-1")
        .body("xx")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // An archive whose entries leave the job directory is refused.
    for evil in ["../../etc/cron.d/evil", "/etc/passwd", "ok/../../../x"] {
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut buf);
            zip.start_file(evil, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(b"pwned").unwrap();
            zip.finish().unwrap();
        }
        let r = http
            .post(format!("{url}/api/v4/jobs/{job}/artifacts"))
            .header("JOB-TOKEN", &token)
            .body(buf.into_inner())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{evil} accepted");
    }
    let (_, j) = api
        .get(&format!("/api/v4/projects/{project}/jobs/{job}"))
        .await;
    assert!(j["artifacts_file"].is_null(), "{j}");
    running.server.abort();
}
