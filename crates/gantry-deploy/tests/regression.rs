//! Regression tests of the deploy library, one per behaviour fixed, named after it. AWS calls go
//! to a real moto server started per test (skipped without one unless GANTRY_REQUIRE_MOTO=1).
//! moto never completes or fails an ECS rollout, so rollout states come through the
//! ScriptedObserver seam and say so; everything else (task definitions, services, S3
//! conditional writes, STS) is moto's.

mod common;

use std::time::Duration;

use aws_sdk_ecs::Client;
use gantry_deploy::ecs::rollout::{ScriptedObserver, script};
use gantry_deploy::ecs::{EcsDeployOptions, EcsDeployer};
use gantry_deploy::history::{
    DeploymentRecord, HistoryStore, LeaseAttempt, LeaseHolder, MemoryHistoryStore, RecordKind,
};
use gantry_deploy::machine::Outcome;
use gantry_deploy::{DeployError, DeployResult, Log};

async fn service_state(client: &Client) -> (String, i32) {
    let r = client
        .describe_services()
        .cluster("c1")
        .services("web")
        .send()
        .await
        .expect("describe");
    let s = &r.services()[0];
    (
        s.task_definition().unwrap_or_default().to_string(),
        s.desired_count,
    )
}

fn opts(tag: &str) -> EcsDeployOptions {
    let mut o = EcsDeployOptions::new("c1", &["web"]);
    o.poll_interval = Duration::from_millis(1);
    o.rollback_timeout = Duration::from_secs(5);
    o.changes.tag = Some(tag.into());
    o
}

#[tokio::test]
async fn history_keys_name_account_and_region_so_another_regions_revision_is_never_the_rollback_target()
 {
    let Some(moto) = common::start_moto("keys_account_region") else {
        return;
    };
    let eu = common::ecs_client_in(&moto, "eu-west-1", None).await;
    let us = common::ecs_client_in(&moto, "us-west-2", None).await;
    let other_account = common::ecs_client_in(
        &moto,
        "us-west-2",
        Some("arn:aws:iam::222222222222:role/deployer"),
    )
    .await;
    common::ecs_fixture(&eu, "web", 1).await;
    let us_web1 = common::ecs_fixture(&us, "web", 1).await;
    common::ecs_fixture(&other_account, "web", 1).await;
    let history = MemoryHistoryStore::default();
    // Scripted rollout states: a good deploy in eu-west-1 and in the other account.
    for client in [&eu, &other_account] {
        let good = ScriptedObserver::new().then(|c| script::primary(c, "COMPLETED"));
        let d = EcsDeployer::new(client.clone(), good, &history, Log::silent());
        let out = d.deploy(&opts("good")).await;
        assert!(out[0].ok, "{}", out[0].message);
    }
    // A failing deploy in us-west-2 of the same cluster and service names.
    let bad = ScriptedObserver::new()
        .then(|c| script::primary(c, "FAILED"))
        .then(|c| script::primary(c, "COMPLETED"));
    let d = EcsDeployer::new(us.clone(), bad, &history, Log::silent());
    let out = d.deploy(&opts("bad")).await;
    assert!(!out[0].ok);
    assert_eq!(
        out[0].rolled_back_to.as_deref(),
        Some(us_web1.as_str()),
        "{}",
        out[0].message
    );
    assert!(
        out[0].message.contains("revision that ran before"),
        "{}",
        out[0].message
    );
    let targets: std::collections::BTreeSet<String> = history
        .list(None)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.target)
        .collect();
    assert_eq!(
        targets.into_iter().collect::<Vec<_>>(),
        [
            "ecs:123456789012:eu-west-1:c1/web",
            "ecs:123456789012:us-west-2:c1/web",
            "ecs:222222222222:us-west-2:c1/web",
        ]
    );
}

#[tokio::test]
async fn inactive_known_good_revision_is_reregistered_and_rolled_to() {
    let Some(moto) = common::start_moto("inactive_target") else {
        return;
    };
    let client = common::ecs_client_in(&moto, "eu-west-1", None).await;
    common::ecs_fixture(&client, "web", 1).await;
    let history = MemoryHistoryStore::default();
    // Scripted: web:2 completes (known good), web:3 FAILS, the rollback completes.
    let observer = ScriptedObserver::new()
        .then(|c| script::primary(c, "COMPLETED"))
        .then(|c| script::primary(c, "FAILED"))
        .then(|c| script::primary(c, "COMPLETED"));
    let d = EcsDeployer::new(client.clone(), observer, &history, Log::silent());
    let web2 = d.deploy(&opts("v2")).await[0]
        .revision
        .clone()
        .expect("web:2");
    client
        .deregister_task_definition()
        .task_definition(&web2)
        .send()
        .await
        .expect("deregister web:2");
    let out = d.deploy(&opts("v3")).await;
    assert!(!out[0].ok);
    let to = out[0].rolled_back_to.clone().expect("rolled back");
    assert!(to.ends_with("web:4"), "re-registered as web:4, got {to}");
    assert!(
        out[0].message.contains("web:2 was INACTIVE"),
        "{}",
        out[0].message
    );
    assert_eq!(service_state(&client).await.0, to);
    let images = client
        .describe_task_definition()
        .task_definition(&to)
        .send()
        .await
        .expect("web:4");
    assert_eq!(
        images
            .task_definition()
            .expect("td")
            .container_definitions()[0]
            .image(),
        Some("registry.local/app:v2")
    );
}

#[tokio::test]
async fn rollback_restores_the_desired_count_the_good_revision_ran_with() {
    let Some(moto) = common::start_moto("desired_count") else {
        return;
    };
    let client = common::ecs_client_in(&moto, "eu-west-1", None).await;
    common::ecs_fixture(&client, "web", 2).await;
    let history = MemoryHistoryStore::default();
    let observer = ScriptedObserver::new()
        .then(|c| script::primary(c, "COMPLETED"))
        .then(|c| script::primary(c, "FAILED"))
        .then(|c| script::primary(c, "COMPLETED"));
    let d = EcsDeployer::new(client.clone(), observer, &history, Log::silent());
    assert!(d.deploy(&opts("v2")).await[0].ok);
    let mut scaled = opts("v3");
    scaled.scale = Some(5);
    let out = d.deploy(&scaled).await;
    assert!(matches!(out[0].report.outcome, Outcome::RolledBack { .. }));
    let (td, desired) = service_state(&client).await;
    assert!(td.ends_with("web:2"), "{td}");
    assert_eq!(desired, 2, "the good revision ran with 2 tasks");
}

/// A store whose writes start failing once armed: the seam for "S3 went away mid-deploy".
struct FailingWrites {
    inner: MemoryHistoryStore,
    fail: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl HistoryStore for FailingWrites {
    fn location(&self) -> String {
        "failing://test".into()
    }
    async fn save(&self, r: &DeploymentRecord) -> Result<(), DeployError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(DeployError::History("store unreachable".into()));
        }
        self.inner.save(r).await
    }
    async fn records(&self, t: &str) -> Result<Vec<DeploymentRecord>, DeployError> {
        self.inner.records(t).await
    }
    async fn list(&self, f: Option<&str>) -> Result<Vec<DeploymentRecord>, DeployError> {
        self.inner.list(f).await
    }
    async fn acquire_lease(&self, t: &str, h: &LeaseHolder) -> Result<LeaseAttempt, DeployError> {
        self.inner.acquire_lease(t, h).await
    }
    async fn release_lease(&self, t: &str, id: &str) -> Result<(), DeployError> {
        self.inner.release_lease(t, id).await
    }
}

/// An observer that arms the store's failure on its first read, then replays a script.
struct ArmingObserver<'a> {
    store: &'a FailingWrites,
    script: ScriptedObserver,
}

impl gantry_deploy::ecs::rollout::RolloutObserver for ArmingObserver<'_> {
    async fn snapshot(
        &self,
        ctx: &gantry_deploy::ecs::rollout::WaitContext,
    ) -> Result<gantry_deploy::ecs::rollout::ServiceSnapshot, DeployError> {
        self.store
            .fail
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.script.snapshot(ctx).await
    }
}

#[tokio::test]
async fn a_failed_history_write_never_prevents_the_rollback() {
    let Some(moto) = common::start_moto("history_write_fails") else {
        return;
    };
    let client = common::ecs_client_in(&moto, "eu-west-1", None).await;
    let web1 = common::ecs_fixture(&client, "web", 1).await;
    let store = FailingWrites {
        inner: MemoryHistoryStore::default(),
        fail: false.into(),
    };
    // Scripted: the deploy FAILS; the rollback completes. The store breaks during the rollout.
    let observer = ArmingObserver {
        store: &store,
        script: ScriptedObserver::new()
            .then(|c| script::primary(c, "FAILED"))
            .then(|c| script::primary(c, "COMPLETED")),
    };
    let d = EcsDeployer::new(client.clone(), observer, &store, Log::silent());
    let out = d.deploy(&opts("v2")).await;
    assert!(matches!(out[0].report.outcome, Outcome::RolledBack { .. }));
    assert_eq!(service_state(&client).await.0, web1);
    assert!(
        out[0].message.contains("could not be written"),
        "{}",
        out[0].message
    );
}

#[tokio::test]
async fn manual_rollback_withdraws_known_good_from_every_record_of_the_bad_revision_only_after_success()
 {
    let Some(moto) = common::start_moto("withdraw_after_success") else {
        return;
    };
    let client = common::ecs_client_in(&moto, "eu-west-1", None).await;
    common::ecs_fixture(&client, "web", 1).await;
    let history = MemoryHistoryStore::default();
    // Scripted: web:2 completes twice (two known-good records), then a rollback to web:1 times
    // out (IN_PROGRESS), then a second rollback completes.
    let observer = ScriptedObserver::new()
        .then(|c| script::primary(c, "COMPLETED"))
        .then(|c| script::primary(c, "COMPLETED"))
        .then(|c| script::primary(c, "IN_PROGRESS"))
        .then(|c| script::primary(c, "IN_PROGRESS"))
        .then(|c| script::primary(c, "COMPLETED"));
    let d = EcsDeployer::new(client.clone(), observer, &history, Log::silent());
    let web2 = d.deploy(&opts("v2")).await[0]
        .revision
        .clone()
        .expect("web:2");
    let mut again = opts("v2");
    again.task = Some(web2.clone());
    again.changes = Default::default();
    assert!(d.deploy(&again).await[0].ok);
    let key = "ecs:123456789012:eu-west-1:c1/web";
    let good_web2 = |rs: &[DeploymentRecord]| {
        rs.iter()
            .filter(|r| r.revision == web2 && r.known_good)
            .count()
    };
    assert_eq!(good_web2(&history.records(key).await.expect("r")), 2);

    let mut rb = EcsDeployOptions::new("c1", &["web"]);
    rb.poll_interval = Duration::from_millis(50);
    rb.timeout = Some(Duration::from_millis(20));
    rb.rollback_timeout = Duration::from_millis(20);
    let failed = d.rollback(&rb, "web", Some("1")).await;
    assert!(!failed.ok(), "{}", failed.message());
    assert!(failed.next.is_some(), "a failure says what to run next");
    assert_eq!(
        good_web2(&history.records(key).await.expect("r")),
        2,
        "not withdrawn before the rollback succeeded"
    );
    // Re-running the rollback finishes it (the service already points at web:1).
    rb.rollback_timeout = Duration::from_secs(5);
    rb.poll_interval = Duration::from_millis(1);
    let ok = d.rollback(&rb, "web", Some("1")).await;
    assert!(ok.ok(), "{}", ok.message());
    let records = history.records(key).await.expect("r");
    assert_eq!(
        good_web2(&records),
        0,
        "withdrawn from every record of web:2"
    );
    let last = records.last().expect("rollback record");
    assert_eq!(
        (last.kind, last.result),
        (RecordKind::Rollback, DeployResult::Succeeded)
    );
    assert!(last.known_good, "the awaited rollback is known good");
}

#[tokio::test]
async fn s3_history_concurrent_writers_lose_no_record() {
    let Some(moto) = common::start_moto("s3_concurrent") else {
        return;
    };
    let target = "ecs:1:eu-west-1:c1/web";
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = common::s3_store(&moto, "history").await;
        tasks.push(tokio::spawn(async move {
            for i in 0..8 {
                let r =
                    DeploymentRecord::start(target, RecordKind::Deploy, &format!("{w}.{i}"), None);
                store.save(&r).await.expect("save");
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    let store = common::s3_store(&moto, "history").await;
    assert_eq!(store.records(target).await.expect("records").len(), 32);
    assert_eq!(store.list(Some("web")).await.expect("list").len(), 32);
}

#[tokio::test]
async fn a_second_deploy_of_one_service_fails_naming_the_holder_or_waits_for_the_lease() {
    let Some(moto) = common::start_moto("lease_holder") else {
        return;
    };
    let client = common::ecs_client_in(&moto, "eu-west-1", None).await;
    common::ecs_fixture(&client, "web", 1).await;
    let store = common::s3_store(&moto, "leases").await;
    let key = "ecs:123456789012:eu-west-1:c1/web";
    let mut holder = LeaseHolder::for_this_process(Duration::from_secs(60));
    holder.pipeline = Some("4711".into());
    holder.job_id = Some("42".into());
    assert_eq!(
        store.acquire_lease(key, &holder).await.expect("lease"),
        LeaseAttempt::Acquired
    );
    // Fails at once, naming the holder; nothing changed.
    let observer = ScriptedObserver::new().then(|c| script::primary(c, "COMPLETED"));
    let d = EcsDeployer::new(client.clone(), observer, store.as_ref(), Log::silent());
    let out = d.deploy(&opts("v2")).await;
    assert!(
        matches!(
            out[0].report.outcome,
            Outcome::NotStarted { locked: true, .. }
        ),
        "{}",
        out[0].message
    );
    assert!(
        out[0].message.contains("pipeline 4711 job 42"),
        "{}",
        out[0].message
    );
    assert!(service_state(&client).await.0.ends_with("web:1"));
    // With --wait-lock it waits until the holder releases, then deploys.
    let release = {
        let store = common::s3_store(&moto, "leases").await;
        let id = holder.id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            store.release_lease(key, &id).await.expect("release");
        })
    };
    let mut waiting = opts("v2");
    waiting.machine.wait_lock = Duration::from_secs(20);
    let out = d.deploy(&waiting).await;
    release.await.expect("join");
    assert!(out[0].ok, "{}", out[0].message);
    // An expired lease is taken over.
    let mut stale = LeaseHolder::for_this_process(Duration::from_secs(60));
    stale.expires_at = "2001-01-01T00:00:00Z".into();
    store.acquire_lease(key, &stale).await.expect("stale");
    let fresh = LeaseHolder::for_this_process(Duration::from_secs(60));
    assert_eq!(
        store.acquire_lease(key, &fresh).await.expect("take over"),
        LeaseAttempt::Acquired
    );
}

/// Issue 9: the history key of a stack not created yet said `unknown-account` when the
/// caller's account was unknown (STS failed, or a library caller passed none), so its first
/// record never met the later ones, keyed by the stack ARN's account. Now such a deploy is
/// refused before anything changes.
#[tokio::test]
async fn a_new_stack_without_a_known_account_is_refused_instead_of_keyed_unknown_account() {
    let Some(moto) = common::start_moto("cfn_unknown_account") else {
        return;
    };
    let client = common::cfn_client(&moto).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let template = dir.path().join("t.yml");
    std::fs::write(
        &template,
        "Resources:\n  Bucket:\n    Type: AWS::S3::Bucket\n",
    )
    .expect("write");
    let history = gantry_deploy::history::MemoryHistoryStore::default();
    let mut opts = gantry_deploy::cloudformation::StackOptions::new("fresh");
    opts.template_file = Some(template);
    let done =
        gantry_deploy::cloudformation::deploy_stack(&client, &opts, &history, &Log::silent()).await;
    assert!(!done.report.changed_anything(), "{}", done.report.message());
    assert!(
        done.report.message().contains("caller's AWS account"),
        "{}",
        done.report.message()
    );
    assert!(history.list(None).await.expect("list").is_empty());
    assert!(
        gantry_deploy::cloudformation::describe_stack(&client, "fresh")
            .await
            .expect("describe")
            .is_none()
    );
}
