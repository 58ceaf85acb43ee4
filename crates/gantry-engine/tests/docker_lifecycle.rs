//! Timeout, cancellation and cleanup on real Podman: the container is
//! killed (not only the script), and nothing labelled for the run is left.

mod docker_common;

use docker_common::*;
use gantry_engine::executor::{Executor, JobStage, ScriptOutcome};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Whether the run's build container is running.
async fn any_running(executor: &gantry_engine::docker::DockerExecutor, run: &str) -> bool {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let mut filters = std::collections::HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("gantry.run={run}"), "gantry.role=build".to_string()],
    );
    filters.insert("status".to_string(), vec!["running".to_string()]);
    !executor
        .client()
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("list")
        .is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_container_and_after_script_still_runs() {
    let Some(executor) = engine("a_timeout_kills_the_container").await else {
        return;
    };
    let run = run_id("timeout");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Output::new();
    let mut env = prepare(
        &executor,
        request(
            job("slow", json!({"name": BUSYBOX}), json!([])),
            dir.path(),
            &run,
            &[],
        ),
        &out,
    )
    .await
    .expect("prepare");
    let started = Instant::now();
    let mut script_out = Output::new();
    // A background child too: killing only the exec would leave it.
    let outcome = env
        .run_script(
            script(
                JobStage::StepScript,
                "sleep 300 &\necho started\nsleep 300\necho never",
                Some(Duration::from_secs(2)),
            ),
            script_out.sink.clone(),
            CancellationToken::new(),
        )
        .await
        .expect("run");
    let elapsed = started.elapsed();
    assert_eq!(outcome, ScriptOutcome::TimedOut);
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    assert!(script_out.text().contains("started"));
    assert!(!script_out.text().contains("never"));
    assert!(
        !any_running(&executor, &run).await,
        "the container must be killed"
    );

    // after_script runs in the same (restarted) container, without the
    // old processes.
    let mut after_out = Output::new();
    let outcome = env
        .run_script(
            script(
                JobStage::AfterScript,
                "ps | grep -c '[s]leep 300' || true",
                None,
            ),
            after_out.sink.clone(),
            CancellationToken::new(),
        )
        .await
        .expect("after_script");
    assert_eq!(outcome, ScriptOutcome::Exited(0));
    let after_text = after_out.text().to_string();
    assert_eq!(after_text.trim(), "0", "{after_text}");
    env.cleanup().await.expect("cleanup");
    executor.shutdown().await.expect("shutdown");
    assert_eq!(count_run_objects(&executor, &run).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_leaves_no_container_or_network() {
    let Some(executor) = engine("cancellation_leaves_no_container_or_network").await else {
        return;
    };
    let run = run_id("cancel");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Output::new();
    let services = json!([{"name": HTTPD, "alias": "web"}]);
    let mut env = prepare(
        &executor,
        request(
            job("cancelled", json!({"name": BUSYBOX}), services),
            dir.path(),
            &run,
            &[],
        ),
        &out,
    )
    .await
    .expect("prepare");
    let (containers, networks) = count_run_objects(&executor, &run).await;
    assert_eq!(
        (containers, networks),
        (2, 1),
        "build + service container, one network"
    );

    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let script_out = Output::new();
    let outcome = env
        .run_script(
            script(JobStage::StepScript, "sleep 300", None),
            script_out.sink.clone(),
            cancel,
        )
        .await
        .expect("run");
    assert_eq!(outcome, ScriptOutcome::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        !any_running(&executor, &run).await,
        "the build container is killed"
    );
    env.cleanup().await.expect("cleanup");
    executor.shutdown().await.expect("shutdown");
    assert_eq!(
        count_run_objects(&executor, &run).await,
        (0, 0),
        "leftovers after cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_prepare_and_remove_leftovers_leave_nothing() {
    let Some(executor) = engine("cancelling_prepare").await else {
        return;
    };
    let run = run_id("prepcancel");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Output::new();
    // A service that never listens keeps prepare waiting; cancel it then.
    let services = json!([{"name": HTTPD, "alias": "deaf", "command": ["sleep", "600"]}]);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        trigger.cancel();
    });
    let result = executor
        .prepare(
            request(
                job("p", json!({"name": BUSYBOX}), services),
                dir.path(),
                &run,
                &[],
            ),
            out.sink.clone(),
            cancel,
        )
        .await;
    assert!(result.is_err(), "a cancelled prepare fails");
    assert_eq!(
        count_run_objects(&executor, &run).await.0,
        0,
        "prepare removed its containers"
    );
    executor.shutdown().await.expect("shutdown");
    assert_eq!(count_run_objects(&executor, &run).await, (0, 0));

    // A crashed run's leftovers are found by label.
    let out = Output::new();
    let env = prepare(
        &executor,
        request(
            job("crash", json!({"name": BUSYBOX}), json!([{"name": HTTPD}])),
            dir.path(),
            &run,
            &[],
        ),
        &out,
    )
    .await
    .expect("prepare");
    std::mem::forget(env); // as if the process died
    assert_eq!(count_run_objects(&executor, &run).await, (2, 1));
    let removed = executor
        .remove_leftovers(&run)
        .await
        .expect("remove leftovers");
    assert_eq!(removed, 3);
    assert_eq!(count_run_objects(&executor, &run).await, (0, 0));
}
