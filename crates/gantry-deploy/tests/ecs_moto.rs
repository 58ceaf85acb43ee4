//! ECS deploys against a real moto server: revisions, service updates, deregistration,
//! assume-role, rollback and one-off tasks. moto never moves a deployment out of IN_PROGRESS,
//! so tests that need COMPLETED / FAILED / circuit-breaker / "unable" states feed them through
//! the deployer's RolloutObserver seam (ScriptedObserver) and say so; every other call goes to
//! moto.

mod common;

use std::time::Duration;

use aws_sdk_ecs::Client;
use gantry_deploy::DeployResult;
use gantry_deploy::ecs::rollout::{ScriptedObserver, script};
use gantry_deploy::ecs::{EcsDeployOptions, EcsDeployer, RunTaskOptions, SdkObserver};
use gantry_deploy::history::{HistoryStore, MemoryHistoryStore, RecordKind};
use gantry_deploy::{Log, aws};

async fn service_task_definition(client: &Client, service: &str) -> String {
    let r = client
        .describe_services()
        .cluster("c1")
        .services(service)
        .send()
        .await
        .expect("describe");
    r.services()[0]
        .task_definition()
        .unwrap_or_default()
        .to_string()
}

async fn td_status(client: &Client, td: &str) -> String {
    let r = client
        .describe_task_definition()
        .task_definition(td)
        .send()
        .await
        .expect("describe td");
    r.task_definition()
        .and_then(|t| t.status())
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

/// Options for `gantry rollback ecs c1 SERVICE` that do not wait (moto never completes).
fn rollback_no_wait(service: &str) -> EcsDeployOptions {
    let mut o = EcsDeployOptions::new("c1", &[service]);
    o.timeout = None;
    o
}

fn no_wait(services: &[&str]) -> EcsDeployOptions {
    let mut o = EcsDeployOptions::new("c1", services);
    o.timeout = None;
    o
}

#[tokio::test]
async fn deploy_registers_revision_with_image_env_secrets_and_updates_service() {
    let Some(moto) = common::start_moto("deploy_registers_revision") else {
        return;
    };
    let client = common::ecs_client(&moto).await;
    let web1 = common::ecs_fixture(&client, "web", 2).await;
    let history = MemoryHistoryStore::default();
    let deployer = EcsDeployer::new(
        client.clone(),
        SdkObserver::new(client.clone()),
        &history,
        Log::silent(),
    );
    let mut opts = no_wait(&["web"]);
    opts.changes.tag = Some("abc123".into());
    opts.changes
        .env
        .push(("app".into(), "B".into(), "2".into()));
    opts.changes.secrets.push((
        "app".into(),
        "DB_PASSWORD".into(),
        "arn:aws:ssm:eu-west-1:123456789012:parameter/db".into(),
    ));
    let out = deployer.deploy(&opts).await;
    assert!(out[0].ok, "{}", out[0].message);
    let web2 = out[0].revision.clone().expect("revision");
    assert!(web2.ends_with("task-definition/web:2"), "{web2}");
    assert_eq!(out[0].previous.as_deref(), Some(web1.as_str()));

    let td = client
        .describe_task_definition()
        .task_definition(&web2)
        .send()
        .await
        .expect("describe");
    let c = &td.task_definition().expect("td").container_definitions()[0];
    assert_eq!(c.image(), Some("registry.local/app:abc123"));
    let env: Vec<String> = c
        .environment()
        .iter()
        .map(|kv| format!("{}={}", kv.name().unwrap_or(""), kv.value().unwrap_or("")))
        .collect();
    assert!(
        env.contains(&"A=1".to_string()) && env.contains(&"B=2".to_string()),
        "{env:?}"
    );
    assert_eq!(c.secrets()[0].name, "DB_PASSWORD");
    assert_eq!(service_task_definition(&client, "web").await, web2);

    let recs = history.list(None).await.expect("history");
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].result, DeployResult::Submitted);
    assert!(
        !recs[0].known_good,
        "a deploy nobody waited for is not known good"
    );
    assert_eq!(
        recs[0].details.get("image.app").map(String::as_str),
        Some("registry.local/app:abc123")
    );
}

#[tokio::test]
async fn keep_revisions_deregisters_older_ones_but_not_the_running_one() {
    let Some(moto) = common::start_moto("keep_revisions") else {
        return;
    };
    let client = common::ecs_client(&moto).await;
    let web1 = common::ecs_fixture(&client, "web", 2).await;
    let (td, _) = gantry_deploy::ecs::describe_task_definition(&client, &web1)
        .await
        .expect("td");
    for _ in 0..3 {
        gantry_deploy::ecs::register_task_definition(&client, &td, &[])
            .await
            .expect("register");
    }
    // web:1 runs, web:2..4 registered; the deploy adds web:5 and keeps the newest 2.
    let history = MemoryHistoryStore::default();
    let deployer = EcsDeployer::new(
        client.clone(),
        SdkObserver::new(client.clone()),
        &history,
        Log::silent(),
    );
    let mut opts = no_wait(&["web"]);
    opts.changes
        .images
        .push(("app".into(), "registry.local/app:5".into()));
    opts.keep_revisions = Some(2);
    let out = deployer.deploy(&opts).await;
    assert!(out[0].ok, "{}", out[0].message);
    let dereg: Vec<String> = out[0]
        .deregistered
        .iter()
        .map(|a| gantry_deploy::history::short_revision(a))
        .collect();
    assert_eq!(dereg, ["web:3", "web:2"]);
    assert_eq!(td_status(&client, "web:2").await, "INACTIVE");
    assert_eq!(td_status(&client, "web:3").await, "INACTIVE");
    assert_eq!(td_status(&client, "web:4").await, "ACTIVE");
    assert_eq!(
        td_status(&client, "web:1").await,
        "ACTIVE",
        "the revision that ran before stays for rollback"
    );
    assert_eq!(td_status(&client, "web:5").await, "ACTIVE");
    // ECS refuses a deregistered (INACTIVE) revision: the rollback re-registers its
    // definition as a new revision and rolls to that.
    let report = deployer
        .rollback(&rollback_no_wait("web"), "web", Some("2"))
        .await;
    assert!(report.ok(), "{}", report.message());
    assert!(
        report.message().contains("web:2 was INACTIVE"),
        "{}",
        report.message()
    );
    let now = service_task_definition(&client, "web").await;
    assert!(now.ends_with("web:6"), "{now}");
    assert_eq!(td_status(&client, "web:6").await, "ACTIVE");
}

#[tokio::test]
async fn several_services_in_one_run() {
    let Some(moto) = common::start_moto("several_services") else {
        return;
    };
    let client = common::ecs_client(&moto).await;
    let web1 = common::ecs_fixture(&client, "web", 2).await;
    client
        .create_service()
        .cluster("c1")
        .service_name("worker")
        .task_definition(&web1)
        .desired_count(1)
        .send()
        .await
        .expect("svc");
    let history = MemoryHistoryStore::default();
    let deployer = EcsDeployer::new(
        client.clone(),
        SdkObserver::new(client.clone()),
        &history,
        Log::silent(),
    );
    let mut opts = no_wait(&["web", "worker"]);
    opts.changes.tag = Some("v2".into());
    let out = deployer.deploy(&opts).await;
    assert!(out.iter().all(|o| o.ok), "{out:?}");
    assert_ne!(
        out[0].revision, out[1].revision,
        "each service gets its own revision"
    );
    for (o, svc) in out.iter().zip(["web", "worker"]) {
        assert_eq!(
            service_task_definition(&client, svc).await,
            o.revision.clone().expect("rev")
        );
    }
    assert_eq!(
        history.list(Some("ecs:c1")).await.expect("history").len(),
        2
    );
}

#[tokio::test]
async fn rollback_goes_to_the_last_known_good_revision() {
    let Some(moto) = common::start_moto("rollback_known_good") else {
        return;
    };
    let client = common::ecs_client(&moto).await;
    common::ecs_fixture(&client, "web", 2).await;
    let history = MemoryHistoryStore::default();
    // Scripted: moto never reports COMPLETED or FAILED. Deploy 1 completes (web:2 becomes
    // known good); deploy 2 (web:3) FAILS; the rollback's rollout then completes.
    let observer = ScriptedObserver::new()
        .then(|c| script::primary(c, "COMPLETED"))
        .then(|c| script::primary(c, "IN_PROGRESS"))
        .then(|c| script::primary(c, "FAILED"))
        .then(|c| script::primary(c, "COMPLETED"));
    let deployer = EcsDeployer::new(client.clone(), observer, &history, Log::silent());
    let mut opts = EcsDeployOptions::new("c1", &["web"]);
    opts.poll_interval = Duration::from_millis(5);
    opts.changes.tag = Some("v2".into());
    let first = deployer.deploy(&opts).await;
    assert!(first[0].ok, "{}", first[0].message);
    let web2 = first[0].revision.clone().expect("web:2");

    opts.changes.tag = Some("v3-broken".into());
    let second = deployer.deploy(&opts).await;
    assert!(!second[0].ok);
    assert!(
        second[0].message.contains("FAILED"),
        "{}",
        second[0].message
    );
    assert!(
        second[0]
            .message
            .contains("rolled back to web:2 (last known-good revision)"),
        "{}",
        second[0].message
    );
    assert_eq!(second[0].rolled_back_to.as_deref(), Some(web2.as_str()));
    assert_eq!(
        service_task_definition(&client, "web").await,
        web2,
        "moto's service is back on web:2"
    );

    let recs = history.list(Some("web")).await.expect("history");
    let kinds: Vec<(RecordKind, DeployResult)> = recs.iter().map(|r| (r.kind, r.result)).collect();
    assert_eq!(
        kinds,
        [
            (RecordKind::Deploy, DeployResult::Succeeded),
            (RecordKind::Deploy, DeployResult::RolledBack),
            (RecordKind::Rollback, DeployResult::Succeeded)
        ]
    );
    // The waits tracked the new revision, then the rollback target.
    let ctxs = deployer.observer().contexts();
    assert!(ctxs[1].task_definition.ends_with("web:3"));
    assert!(ctxs[3].task_definition.ends_with("web:2"));
}

#[tokio::test]
async fn timeout_without_history_rolls_back_to_the_revision_that_ran_before() {
    let Some(moto) = common::start_moto("timeout_rollback") else {
        return;
    };
    let client = common::ecs_client(&moto).await;
    let web1 = common::ecs_fixture(&client, "web", 2).await;
    let history = MemoryHistoryStore::default();
    // Scripted: IN_PROGRESS forever until the timeout (what moto would also do), then the
    // rollback completes.
    let observer = ScriptedObserver::new()
        .then(|c| script::primary(c, "IN_PROGRESS"))
        .then(|c| script::primary(c, "IN_PROGRESS"))
        .then(|c| script::primary(c, "COMPLETED"));
    let deployer = EcsDeployer::new(client.clone(), observer, &history, Log::silent());
    let mut opts = EcsDeployOptions::new("c1", &["web"]);
    opts.timeout = Some(Duration::from_millis(1));
    opts.poll_interval = Duration::from_millis(1);
    opts.changes.tag = Some("slow".into());
    let out = deployer.deploy(&opts).await;
    assert!(!out[0].ok);
    assert!(out[0].message.contains("timed out"), "{}", out[0].message);
    assert!(
        out[0].message.contains("(revision that ran before)"),
        "{}",
        out[0].message
    );
    assert_eq!(service_task_definition(&client, "web").await, web1);
}

#[tokio::test]
async fn circuit_breaker_rollback_is_reported_and_followed() {
    let Some(moto) = common::start_moto("circuit_breaker") else {
        return;
    };
    let client = common::ecs_client(&moto).await;
    let web1 = common::ecs_fixture(&client, "web", 2).await;
    let history = MemoryHistoryStore::default();
    // Scripted: moto has no circuit breaker. ECS replaces our PRIMARY deployment with a
    // rollback deployment (new id) on web:1, which then completes.
    let old = web1.clone();
    let observer = ScriptedObserver::new()
        .then(move |c| script::circuit_breaker_rollback(c, &old))
        .then(|c| script::primary(c, "COMPLETED"));
    let deployer = EcsDeployer::new(client.clone(), observer, &history, Log::silent());
    let mut opts = EcsDeployOptions::new("c1", &["web"]);
    opts.poll_interval = Duration::from_millis(1);
    opts.changes.tag = Some("crashy".into());
    let out = deployer.deploy(&opts).await;
    assert!(!out[0].ok, "a circuit-breaker rollback is never a success");
    assert!(
        out[0].message.contains("circuit breaker rolled back"),
        "{}",
        out[0].message
    );
    assert!(
        out[0].message.contains("service events:"),
        "{}",
        out[0].message
    );
    let ctxs = deployer.observer().contexts();
    assert_eq!(ctxs.len(), 2);
    assert_eq!(
        ctxs[1].deployment_id.as_deref(),
        Some("ecs-svc/circuit-breaker-rollback"),
        "the rollback wait follows ECS's own rollback deployment"
    );
    // No second UpdateService: moto still shows the literal revision gantry sent.
    assert!(
        service_task_definition(&client, "web")
            .await
            .ends_with("web:2")
    );
}

#[tokio::test]
async fn unable_event_fails_and_no_rollback_leaves_the_service() {
    let Some(moto) = common::start_moto("unable_event") else {
        return;
    };
    let client = common::ecs_client(&moto).await;
    common::ecs_fixture(&client, "web", 2).await;
    let history = MemoryHistoryStore::default();
    // Scripted: moto's service events list is always empty.
    let observer = ScriptedObserver::new().then(script::unable_event);
    let deployer = EcsDeployer::new(client.clone(), observer, &history, Log::silent());
    let mut opts = EcsDeployOptions::new("c1", &["web"]);
    opts.machine.rollback = false;
    opts.poll_interval = Duration::from_millis(1);
    opts.changes.tag = Some("big".into());
    let out = deployer.deploy(&opts).await;
    assert!(!out[0].ok);
    assert!(
        out[0].message.contains("unable to place a task"),
        "{}",
        out[0].message
    );
    assert!(
        out[0].message.contains("rollback disabled"),
        "{}",
        out[0].message
    );
    assert!(
        service_task_definition(&client, "web")
            .await
            .ends_with("web:2")
    );
    assert_eq!(
        history.list(None).await.expect("h")[0].result,
        DeployResult::Failed
    );
}

#[tokio::test]
async fn failed_health_check_after_rollout_rolls_back() {
    let Some(moto) = common::start_moto("health_rollback") else {
        return;
    };
    let client = common::ecs_client(&moto).await;
    let web1 = common::ecs_fixture(&client, "web", 2).await;
    let history = MemoryHistoryStore::default();
    // Scripted rollout states (moto never completes); the health probe is real HTTP.
    let observer = ScriptedObserver::new()
        .then(|c| script::running_tasks(c, 2))
        .then(|c| script::primary(c, "COMPLETED"));
    let deployer = EcsDeployer::new(client.clone(), observer, &history, Log::silent());
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mut opts = EcsDeployOptions::new("c1", &["web"]);
    opts.poll_interval = Duration::from_millis(1);
    opts.health_url = Some(format!("http://{closed}/keepalive"));
    opts.health_timeout = Duration::from_millis(300);
    opts.changes.tag = Some("v2".into());
    let out = deployer.deploy(&opts).await;
    assert!(!out[0].ok);
    assert!(
        out[0].message.contains("health check failed"),
        "{}",
        out[0].message
    );
    assert_eq!(service_task_definition(&client, "web").await, web1);
}

#[tokio::test]
async fn manual_rollback_to_a_revision() {
    let Some(moto) = common::start_moto("manual_rollback") else {
        return;
    };
    let client = common::ecs_client(&moto).await;
    let web1 = common::ecs_fixture(&client, "web", 2).await;
    let history = MemoryHistoryStore::default();
    let deployer = EcsDeployer::new(
        client.clone(),
        SdkObserver::new(client.clone()),
        &history,
        Log::silent(),
    );
    let mut opts = no_wait(&["web"]);
    opts.changes.tag = Some("v2".into());
    assert!(deployer.deploy(&opts).await[0].ok);
    let report = deployer
        .rollback(&rollback_no_wait("web"), "web", Some("1"))
        .await;
    assert!(report.ok(), "{}", report.message());
    let msg = report.message();
    assert!(msg.contains("web:1"), "{msg}");
    assert_eq!(service_task_definition(&client, "web").await, web1);
    // Without --to and without a known-good record, the history's previous revision is used.
    assert!(deployer.deploy(&opts).await[0].ok);
    let report = deployer
        .rollback(&rollback_no_wait("web"), "web", None)
        .await;
    assert!(report.ok(), "{}", report.message());
    assert_eq!(report.live_now.as_deref(), Some(web1.as_str()));
    assert_eq!(service_task_definition(&client, "web").await, web1);
    // Already there: a clear refusal, not a no-op deployment.
    let again = deployer
        .rollback(&rollback_no_wait("web"), "web", Some("web:1"))
        .await;
    assert!(!again.ok() && !again.changed_anything());
    assert!(
        again.message().contains("already runs web:1"),
        "{}",
        again.message()
    );
}

#[tokio::test]
async fn assume_role_acts_in_the_second_account() {
    let Some(moto) = common::start_moto("assume_role") else {
        return;
    };
    let mut opts = common::aws_options(&moto);
    opts.assume_role = Some("arn:aws:iam::222222222222:role/deployer".into());
    let cfg = aws::load_config(&opts).await.expect("assume role");
    let client = Client::new(&cfg);
    let web1 = common::ecs_fixture(&client, "web", 2).await;
    assert_eq!(aws::arn_account(&web1), Some("222222222222"), "{web1}");
    let history = MemoryHistoryStore::default();
    let deployer = EcsDeployer::new(
        client.clone(),
        SdkObserver::new(client.clone()),
        &history,
        Log::silent(),
    );
    let mut d = no_wait(&["web"]);
    d.changes.tag = Some("v2".into());
    let out = deployer.deploy(&d).await;
    assert!(out[0].ok, "{}", out[0].message);
    assert_eq!(
        aws::arn_account(out[0].revision.as_deref().unwrap_or("")),
        Some("222222222222")
    );
    // The base account does not see the cluster.
    let base = Client::new(
        &aws::load_config(&common::aws_options(&moto))
            .await
            .expect("base"),
    );
    let r = base
        .describe_services()
        .cluster("c1")
        .services("web")
        .send()
        .await;
    assert!(r.map(|r| r.services().is_empty()).unwrap_or(true));
}

#[tokio::test]
async fn one_off_task_waits_for_stopped_and_returns_the_exit_code() {
    let Some(moto) = common::start_moto("run_task") else {
        return;
    };
    let client = common::ecs_client(&moto).await;
    common::ecs_fixture(&client, "web", 2).await;
    let opts = RunTaskOptions {
        cluster: "c1".into(),
        task: "web:1".into(),
        count: 1,
        launch_type: Some("FARGATE".into()),
        commands: vec![("app".into(), "./migrate --yes".into())],
        timeout: Duration::from_secs(30),
        poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let log = Log::new(move |l| sink.lock().expect("lock").push(l.to_string()));
    let code = gantry_deploy::ecs::run_task(&client, &opts, &log)
        .await
        .expect("run");
    assert_eq!(code, 0);
    let text = lines.lock().expect("lock").join("\n");
    assert!(text.contains("task status: STOPPED"), "{text}");
    assert!(text.contains("container app exited 0"), "{text}");
}

#[tokio::test]
async fn missing_service_and_unknown_container_are_clear_errors() {
    let Some(moto) = common::start_moto("errors") else {
        return;
    };
    let client = common::ecs_client(&moto).await;
    common::ecs_fixture(&client, "web", 2).await;
    let history = MemoryHistoryStore::default();
    let deployer = EcsDeployer::new(
        client.clone(),
        SdkObserver::new(client.clone()),
        &history,
        Log::silent(),
    );
    let out = deployer.deploy(&no_wait(&["nope"])).await;
    assert!(!out[0].ok);
    assert!(
        out[0]
            .message
            .contains("service nope not found in cluster c1"),
        "{}",
        out[0].message
    );
    let mut opts = no_wait(&["web"]);
    opts.changes.images.push(("db".into(), "x".into()));
    let out = deployer.deploy(&opts).await;
    assert!(
        out[0].message.contains("has no container \"db\""),
        "{}",
        out[0].message
    );
}

#[tokio::test]
async fn scale_sets_the_desired_count_with_the_deploy() {
    let Some(moto) = common::start_moto("scale") else {
        return;
    };
    let client = common::ecs_client(&moto).await;
    common::ecs_fixture(&client, "web", 2).await;
    let history = MemoryHistoryStore::default();
    let deployer = EcsDeployer::new(
        client.clone(),
        SdkObserver::new(client.clone()),
        &history,
        Log::silent(),
    );
    let mut opts = no_wait(&["web"]);
    opts.scale = Some(5);
    let out = deployer.deploy(&opts).await;
    assert!(out[0].ok, "{}", out[0].message);
    assert!(
        out[0]
            .revision
            .as_deref()
            .is_some_and(|r| r.ends_with("web:1")),
        "no changes: same revision"
    );
    let r = client
        .describe_services()
        .cluster("c1")
        .services("web")
        .send()
        .await
        .expect("describe");
    assert_eq!(r.services()[0].desired_count, 5);
}
