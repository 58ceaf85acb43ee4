//! The dashboard in real headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` from tests/browser/drive.mjs; never a downloaded
//! browser) against a `gantry serve` this test starts in-process with its
//! built-in runner. Screenshots of each page land in
//! target/browser-screenshots/. Skips with a reason when Chromium, node or
//! playwright-core is missing, unless GANTRY_REQUIRE_CHROMIUM is set
//! (scripts/setup-chromium.sh installs them). The rollback step deploys two
//! revisions of a local container (Podman's Docker API) with the server as
//! its history, and a maintainer rolls it back with the button; without an
//! engine that step is skipped with a reason, unless GANTRY_REQUIRE_PODMAN
//! is set.

mod support;

use gantry_deploy::history::{DeployResult, HistoryStore, RecordKind};
use gantry_deploy::http_history::HttpHistoryStore;
use gantry_deploy::local::{LocalDeployOptions, LocalDeployer, connect};
use gantry_deploy::sdk::bollard::Docker;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

const SHOP: &str = r#"
spec:
  inputs:
    greeting:
      description: Said by the build
      default: hello
---
variables:
  TARGET:
    value: staging
    description: Where to deploy
    options: [staging, production]
stages: [build, test, deploy]
build:
  stage: build
  script:
    - echo "first half, $[[ inputs.greeting ]]"
    - sleep 4
    - printf 'section_start:%s:details\r\033[0KSome details\n' "$(date +%s)"
    - printf '\033[32mgreen text\033[0m\n'
    - echo "target is $TARGET"
    - echo "<img src=x onerror=window.pwned=1>"
    - printf 'section_end:%s:details\r\033[0K\n' "$(date +%s)"
unit:
  stage: test
  needs: [build]
  script: echo unit
deploy:
  stage: deploy
  needs: [unit]
  script: echo "deploying $TARGET"
  when: manual
  environment:
    name: production
"#;

const TOOLS: &str = r#"
"<script>window.pwned=1</script>":
  script: echo tools
lint:
  script: echo lint
"#;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Chromium, node and playwright-core, or why not.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!("{} is not installed", chromium.display()));
    }
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        return Err("node is not installed".into());
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        return Err(format!(
            "playwright-core is not installed in {}",
            dir.display()
        ));
    }
    Ok((chromium, dir))
}

const IMAGE: &str = "localhost/busybox:latest";

fn local_deployer<'a>(docker: &Docker, history: &'a HttpHistoryStore) -> LocalDeployer<'a> {
    LocalDeployer::new(docker.clone(), history, gantry_deploy::Log::silent())
}

/// Deploys two revisions of the container `name` with the server at `url`
/// as its history; the engine and the target's key, or `None` (skipped with
/// a reason) when no engine or test image is available.
async fn local_deploys(url: &str, name: &str) -> Option<(Docker, String)> {
    let docker = match connect() {
        Ok(d) if d.ping().await.is_ok() && d.inspect_image(IMAGE).await.is_ok() => d,
        Ok(_) => {
            skip_or_fail(
                "GANTRY_REQUIRE_PODMAN",
                &format!(
                    "rollback step: the engine does not answer or {IMAGE} is missing (scripts/make-test-images.sh)"
                ),
            );
            return None;
        }
        Err(e) => {
            skip_or_fail(
                "GANTRY_REQUIRE_PODMAN",
                &format!("rollback step: no container engine: {e}"),
            );
            return None;
        }
    };
    let history = HttpHistoryStore::with_user_token(url, ADMIN_TOKEN).unwrap();
    let deployer = local_deployer(&docker, &history);
    for label in ["one", "two"] {
        let mut o = LocalDeployOptions::new(name, IMAGE);
        o.spec.command = Some(vec![
            "sh".into(),
            "-c".into(),
            format!("echo {label}; exec sleep 600"),
        ]);
        o.grace = Duration::from_millis(500);
        let out = deployer.deploy(&o).await.unwrap();
        assert!(out.ok, "deploy {label}: {out:?}");
    }
    let target = deployer.target_key(name).await;
    Some((docker, target))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_in_headless_chromium() {
    let (chromium, script_dir) = match browser_tools() {
        Ok(t) => t,
        Err(why) => {
            skip_or_fail(
                "GANTRY_REQUIRE_CHROMIUM",
                &format!("{why} (run scripts/setup-chromium.sh)"),
            );
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let shop_repo = dir.path().join("shop");
    let tools_repo = dir.path().join("tools");
    repo(&shop_repo, &[(".gitlab-ci.yml", SHOP)]);
    repo(&tools_repo, &[(".gitlab-ci.yml", TOOLS)]);
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let shop = api.project("shop", &shop_repo).await;
    let tools = api.project("tools", &tools_repo).await;
    for project in [shop, tools] {
        let (s, p) = api
            .post(
                &format!("/api/v4/projects/{project}/pipeline"),
                json!({"ref": "main"}),
            )
            .await;
        assert_eq!(s, 201, "{p}");
        api.wait_pipeline(project, p["id"].as_i64().unwrap(), Duration::from_secs(90))
            .await;
    }

    // A local container target with two good revisions, recorded on the
    // server, for the browser's rollback.
    let container = format!("gantry-browser-rb-{}", std::process::id());
    let deploys = local_deploys(&running.url, &container).await;
    let rollback_target = deploys.as_ref().map(|d| d.1.clone()).unwrap_or_default();

    let shots = workspace().join("target/browser-screenshots");
    let app = running.app.clone();
    let url = running.url.clone();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg("drive.mjs")
            .current_dir(&script_dir)
            .env("GANTRY_URL", &url)
            .env("GANTRY_ADMIN_TOKEN_FOR_TEST", ADMIN_TOKEN)
            .env("SCREENSHOT_DIR", &shots)
            .env("CHROMIUM", &chromium)
            .env("PROJECT_A", shop.to_string())
            .env("PROJECT_A_NAME", "shop")
            .env("PROJECT_B_NAME", "tools")
            .env("ROLLBACK_TARGET", &rollback_target)
            .status()
            .expect("node runs")
    })
    .await
    .unwrap();
    let history = HttpHistoryStore::with_user_token(&running.url, ADMIN_TOKEN).unwrap();
    let cleanup = match &deploys {
        Some((docker, _)) => local_deployer(docker, &history)
            .destroy(&container)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        None => Ok(()),
    };
    assert!(status.success(), "the browser script failed: {status}");
    cleanup.expect("the test container is removed");

    // The rollback the browser asked for went through the deploy state
    // machine and is in the server's history under the maintainer's name.
    if let Some((_, target)) = &deploys {
        let records = history.records(target).await.unwrap();
        let last = records.last().unwrap();
        assert_eq!(
            (last.kind, last.revision.as_str(), last.result),
            (RecordKind::Rollback, "r1", DeployResult::Succeeded)
        );
        let rows = gantry_server::deploy_history::HistoryRows(&app.store)
            .of_target(target)
            .await
            .unwrap();
        let boss: (i64,) = sqlx::query_as("SELECT id FROM users WHERE username = 'boss'")
            .fetch_one(&app.store.db.pool)
            .await
            .unwrap();
        assert_eq!(rows.last().unwrap().user_id, Some(boss.0));
    }

    // What the browser did is in the store: the maintainer's approval of
    // the production deploy, and nobody else's.
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT username, environment FROM dashboard_approvals")
            .fetch_all(&app.store.db.pool)
            .await
            .unwrap();
    assert_eq!(rows, [("boss".to_string(), "production".to_string())]);
    let shots = workspace().join("target/browser-screenshots");
    for name in [
        "01-login",
        "03-overview",
        "07-pipeline",
        "08-job-log",
        "10-job-approved",
        "11-environments",
    ]
    .into_iter()
    .chain(deploys.is_some().then_some("13-rollback"))
    {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}"
        );
    }
    running.server.abort();
}
