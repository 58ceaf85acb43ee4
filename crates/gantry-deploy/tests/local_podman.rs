//! The local container target end to end on a real engine (Podman's Docker-compatible socket):
//! a good revision goes live and serves; a bad one fails its health check, is rolled back, and
//! the old revision still serves. Skipped without an engine unless GANTRY_REQUIRE_PODMAN=1.

use std::time::Duration;

use gantry_deploy::history::{FileHistoryStore, HistoryStore};
use gantry_deploy::local::{LocalDeployOptions, LocalDeployer, connect};
use gantry_deploy::{DeployResult, Log};

const IMAGE: &str = "localhost/busybox:latest";

async fn engine(test: &str) -> Option<bollard::Docker> {
    let required = std::env::var("GANTRY_REQUIRE_PODMAN").as_deref() == Ok("1");
    let docker = match connect() {
        Ok(d) => d,
        Err(e) if !required => {
            eprintln!("SKIPPED {test}: {e} (run scripts/setup-podman.sh)");
            return None;
        }
        Err(e) => panic!("{test}: GANTRY_REQUIRE_PODMAN=1 but {e}"),
    };
    let ready = docker.ping().await.is_ok() && docker.inspect_image(IMAGE).await.is_ok();
    if !ready {
        assert!(
            !required,
            "{test}: engine or {IMAGE} missing (scripts/setup-podman.sh, scripts/make-test-images.sh)"
        );
        eprintln!(
            "SKIPPED {test}: engine not answering or {IMAGE} missing (run scripts/make-test-images.sh)"
        );
        return None;
    }
    Some(docker)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn get(url: &str) -> Result<String, String> {
    ureq::get(url)
        .timeout(Duration::from_secs(2))
        .call()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|e| e.to_string())
}

/// A revision that serves `body` on port 80.
fn serving(name: &str, port: u16, body: &str) -> LocalDeployOptions {
    let mut o = LocalDeployOptions::new(name, IMAGE);
    o.spec.command = Some(vec![
        "sh".into(),
        "-c".into(),
        format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www"),
    ]);
    o.spec.ports = vec![format!("127.0.0.1:{port}:80")];
    o.health_url = Some(format!("http://127.0.0.1:{port}/index.html"));
    o.health_timeout = Duration::from_secs(15);
    o
}

#[tokio::test]
async fn good_revision_serves_bad_revision_is_rolled_back_and_old_one_keeps_serving() {
    let Some(docker) = engine("local_deploy").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let history = FileHistoryStore::at(dir.path());
    let deployer = LocalDeployer::new(docker, &history, Log::stderr());
    let name = format!("gantry-test-{}", std::process::id());
    let port = free_port();

    let v1 = deployer
        .deploy(&serving(&name, port, "v1"))
        .await
        .expect("deploy v1");
    assert!(v1.ok, "{}", v1.message);
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/"))
            .expect("v1 serves")
            .trim(),
        "v1"
    );

    let v2 = deployer
        .deploy(&serving(&name, port, "v2"))
        .await
        .expect("deploy v2");
    assert!(v2.ok, "{}", v2.message);
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/"))
            .expect("v2 serves")
            .trim(),
        "v2"
    );

    // Bad revision: runs, but never listens.
    let mut bad = serving(&name, port, "bad");
    bad.spec.command = Some(vec!["sleep".into(), "600".into()]);
    bad.health_timeout = Duration::from_secs(3);
    let v3 = deployer.deploy(&bad).await.expect("deploy bad");
    assert!(!v3.ok);
    assert!(v3.message.contains("unhealthy"), "{}", v3.message);
    assert_eq!(v3.rolled_back_to, Some(2));
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/"))
            .expect("old still serves")
            .trim(),
        "v2"
    );

    // Bad revision that exits at once, without published ports, so the check happens after
    // the cut-over and the previous container is started again.
    let mut crash = LocalDeployOptions::new(&name, IMAGE);
    crash.spec.command = Some(vec!["sh".into(), "-c".into(), "exit 3".into()]);
    crash.health_timeout = Duration::from_secs(5);
    let v4 = deployer.deploy(&crash).await.expect("deploy crash");
    assert!(!v4.ok);
    assert!(v4.message.contains("exit code 3"), "{}", v4.message);
    assert_eq!(v4.rolled_back_to, Some(2));
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/"))
            .expect("restored")
            .trim(),
        "v2"
    );

    // Manual rollback to v1 (kept stopped as NAME-r1).
    let opts = serving(&name, port, "unused");
    assert_eq!(
        deployer
            .rollback(&name, Some(1), &opts)
            .await
            .expect("rollback"),
        1
    );
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/"))
            .expect("v1 again")
            .trim(),
        "v1"
    );

    let results: Vec<(String, DeployResult)> = history
        .list(None)
        .await
        .expect("history")
        .into_iter()
        .map(|r| (r.revision, r.result))
        .collect();
    assert_eq!(
        results,
        [
            ("r1".to_string(), DeployResult::Succeeded),
            ("r2".to_string(), DeployResult::Succeeded),
            ("r3".to_string(), DeployResult::RolledBack),
            ("r4".to_string(), DeployResult::RolledBack),
            ("r1".to_string(), DeployResult::Succeeded),
        ]
    );
    // Rolling back by hand withdrew r2's "known good": the next automatic rollback skips it.
    let r2 = history
        .list(None)
        .await
        .expect("history")
        .into_iter()
        .find(|r| r.revision == "r2")
        .expect("r2");
    assert!(!r2.known_good, "{r2:?}");
    deployer.destroy(&name).await.expect("cleanup");
}
