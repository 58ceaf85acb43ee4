//! The dashboard in real headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` from tests/browser/drive.mjs; never a downloaded
//! browser) against a `gantry serve` this test starts in-process with its
//! built-in runner. Screenshots of each page land in
//! target/browser-screenshots/. Skips with a reason when Chromium, node or
//! playwright-core is missing, unless GANTRY_REQUIRE_CHROMIUM is set
//! (scripts/setup-chromium.sh installs them).

mod support;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

const SHOP: &str = r#"
variables:
  TARGET:
    value: staging
    description: Where to deploy
    options: [staging, production]
stages: [build, test, deploy]
build:
  stage: build
  script:
    - echo "first half"
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
        return Err(format!("playwright-core is not installed in {}", dir.display()));
    }
    Ok((chromium, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_in_headless_chromium() {
    let (chromium, script_dir) = match browser_tools() {
        Ok(t) => t,
        Err(why) => {
            skip_or_fail("GANTRY_REQUIRE_CHROMIUM", &format!("{why} (run scripts/setup-chromium.sh)"));
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let shop_repo = dir.path().join("shop");
    let tools_repo = dir.path().join("tools");
    repo(&shop_repo, &[(".gitlab-ci.yml", SHOP)]);
    repo(&tools_repo, &[(".gitlab-ci.yml", TOOLS)]);
    let running = gantry_server::start(config(&dir.path().join("data"), None)).await.unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let shop = api.project("shop", &shop_repo).await;
    let tools = api.project("tools", &tools_repo).await;
    for project in [shop, tools] {
        let (s, p) = api
            .post(&format!("/api/v4/projects/{project}/pipeline"), json!({"ref": "main"}))
            .await;
        assert_eq!(s, 201, "{p}");
        api.wait_pipeline(project, p["id"].as_i64().unwrap(), Duration::from_secs(90)).await;
    }

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
            .status()
            .expect("node runs")
    })
    .await
    .unwrap();
    assert!(status.success(), "the browser script failed: {status}");

    // What the browser did is in the store: the maintainer's approval of
    // the production deploy, and nobody else's.
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT username, environment FROM dashboard_approvals")
        .fetch_all(&app.store.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, [("boss".to_string(), "production".to_string())]);
    let shots = workspace().join("target/browser-screenshots");
    for name in ["01-login", "03-overview", "07-pipeline", "08-job-log", "10-job-approved", "11-environments"] {
        assert!(shots.join(format!("{name}.png")).exists(), "screenshot {name}");
    }
    running.server.abort();
}
