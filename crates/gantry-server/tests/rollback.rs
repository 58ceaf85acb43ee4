//! Rollback from the dashboard's Environments page, on the local container
//! target (Podman's Docker API): two revisions are deployed with
//! gantry-deploy's own deployer keeping its history on the server
//! (`--history http://SERVER`); a developer may not roll back, a form
//! without the CSRF token is refused, a maintainer's click rolls the target
//! back through the deploy state machine, and the record names who did it.
//! Skipped without an engine unless GANTRY_REQUIRE_PODMAN=1.

mod support;

use gantry_deploy::history::{DeployResult, HistoryStore, RecordKind};
use gantry_deploy::http_history::HttpHistoryStore;
use gantry_deploy::local::{LocalDeployOptions, LocalDeployer, connect};
use std::time::Duration;
use support::*;

const IMAGE: &str = "localhost/busybox:latest";

async fn engine() -> Option<gantry_deploy::sdk::bollard::Docker> {
    let docker = match connect() {
        Ok(d) => d,
        Err(e) => {
            skip_or_fail(
                "GANTRY_REQUIRE_PODMAN",
                &format!("no container engine: {e}"),
            );
            return None;
        }
    };
    if docker.ping().await.is_err() || docker.inspect_image(IMAGE).await.is_err() {
        skip_or_fail(
            "GANTRY_REQUIRE_PODMAN",
            &format!(
                "the engine does not answer or {IMAGE} is missing (scripts/make-test-images.sh)"
            ),
        );
        return None;
    }
    Some(docker)
}

fn revision(name: &str, label: &str) -> LocalDeployOptions {
    let mut o = LocalDeployOptions::new(name, IMAGE);
    o.spec.command = Some(vec![
        "sh".into(),
        "-c".into(),
        format!("echo {label}; exec sleep 600"),
    ]);
    o.grace = Duration::from_millis(500);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_maintainer_rolls_a_container_back_from_the_environments_page() {
    let Some(docker) = engine().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("data"), None);
    cfg.builtin_runner = false;
    let running = gantry_server::start(cfg).await.unwrap();
    let url = running.url.clone();
    let name = format!("gantry-dash-rb-{}", std::process::id());

    // Two good revisions, recorded on the server.
    let history = HttpHistoryStore::with_user_token(&url, ADMIN_TOKEN).unwrap();
    let deployer = LocalDeployer::new(docker.clone(), &history, gantry_deploy::Log::silent());
    for label in ["one", "two"] {
        let out = deployer.deploy(&revision(&name, label)).await.unwrap();
        assert!(out.ok, "deploy {label}: {out:?}");
    }
    let target = deployer.target_key(&name).await;
    let before = history.records(&target).await.unwrap();
    assert_eq!(before.len(), 2);
    assert!(before.iter().all(|r| r.known_good));

    let mut root = Web::new(&url);
    assert_eq!(root.login("root", ADMIN_TOKEN).await, 303);
    let csrf = root.csrf().await;
    for (user, role) in [("dev", "developer"), ("mia", "maintainer")] {
        let (s, body, _) = root
            .post(
                "/dash/users",
                &[
                    ("csrf", csrf.as_str()),
                    ("username", user),
                    ("role", role),
                    ("password", "correct horse battery"),
                ],
            )
            .await;
        assert!(s == 200 || s == 303, "{s} {body}");
    }

    // A developer sees the offer but no button, and the action is refused.
    let mut dev = Web::new(&url);
    assert_eq!(dev.login("dev", "correct horse battery").await, 303);
    let (_, page, _) = dev.get("/dash/environments").await;
    assert!(page.contains(&target), "the target is listed");
    assert!(!page.contains("Roll back to r1"));
    let csrf = dev.csrf().await;
    let (status, _, _) = dev
        .post(
            "/dash/environments/rollback",
            &[("csrf", csrf.as_str()), ("target", target.as_str())],
        )
        .await;
    assert_eq!(status, 403, "a developer may not roll back");

    // A maintainer: without the CSRF token refused, with it rolled back.
    let mut mia = Web::new(&url);
    assert_eq!(mia.login("mia", "correct horse battery").await, 303);
    let (_, page, _) = mia.get("/dash/environments").await;
    assert!(page.contains("Roll back to r1"), "the button is offered");
    let (status, _, _) = mia
        .post(
            "/dash/environments/rollback",
            &[("target", target.as_str())],
        )
        .await;
    assert_eq!(status, 403, "no CSRF token");
    let csrf = mia.csrf().await;
    let (status, body, _) = mia
        .post(
            "/dash/environments/rollback",
            &[("csrf", csrf.as_str()), ("target", target.as_str())],
        )
        .await;
    assert_eq!(status, 303, "{body}");

    let after = history.records(&target).await.unwrap();
    let rollback = after.last().unwrap();
    assert_eq!(rollback.kind, RecordKind::Rollback);
    assert_eq!(rollback.revision, "r1");
    assert_eq!(rollback.result, DeployResult::Succeeded);
    let stored = gantry_server::deploy_history::HistoryRows(&running.app.store)
        .of_target(&target)
        .await
        .unwrap();
    let mia_id = running
        .app
        .store
        .user_by_token(ADMIN_TOKEN)
        .await
        .unwrap()
        .unwrap()
        .id;
    let by = stored.last().unwrap().user_id;
    assert!(
        by.is_some() && by != Some(mia_id),
        "recorded as the maintainer, not root"
    );
    let (_, page, _) = mia.get("/dash/environments").await;
    assert!(
        page.contains(">rollback<"),
        "the history shows the rollback"
    );
    assert!(page.contains(">mia<"), "and who ran it");

    deployer.destroy(&name).await.unwrap();
    running.server.abort();
}
