//! Services on real Podman: reachable by GitLab's default aliases and the
//! user's, with `command`, `entrypoint` and variables; two concurrent jobs
//! with the same alias each reach their own service.

mod docker_common;

use docker_common::*;
use gantry_engine::executor::{Executor, ScriptOutcome};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_is_reachable_by_its_aliases() {
    let Some(executor) = engine("service_is_reachable_by_its_aliases").await else {
        return;
    };
    let run = run_id("svc");
    let dir = tempfile::tempdir().expect("tempdir");
    let services = json!([
        {"name": HTTPD, "alias": "web, www"},
        {"name": HTTPD, "alias": "custom",
         "entrypoint": ["/bin/sh", "-c"],
         "command": ["mkdir -p /w && echo \"$SVC_MSG from $JOB_VAR\" > /w/index.html && exec httpd -f -p 80 -h /w"],
         "variables": [{"name": "SVC_MSG", "value": "service variable ($JOB_VAR)"}]}
    ]);
    let job = job("svc job", json!({"name": BUSYBOX}), services);
    let out = Output::new();
    let mut env = prepare(
        &executor,
        request(job, dir.path(), &run, &[("JOB_VAR", "job-level")]),
        &out,
    )
    .await
    .expect("prepare");
    let script = "set -e\n\
        wget -q -O - http://web/\n\
        wget -q -O - http://www/\n\
        wget -q -O - http://localhost__gantry-test-httpd/\n\
        wget -q -O - http://localhost-gantry-test-httpd/\n\
        wget -q -O - http://custom/\n";
    let mut out2 = Output::new();
    let outcome = run_step(&mut env, script, &out2).await.expect("run");
    let text = out2.text().to_string();
    env.cleanup().await.expect("cleanup");
    executor.shutdown().await.expect("shutdown");
    assert_eq!(outcome, ScriptOutcome::Exited(0), "output:\n{text}");
    assert_eq!(
        text.matches("hello from the service").count(),
        4,
        "output:\n{text}"
    );
    assert!(
        text.contains("service variable (job-level) from job-level"),
        "service variables expanded against the job's: {text}"
    );
    let mut prep = out;
    let prep_text = prep.text();
    // The default alias of the second service repeats the first's: skipped.
    assert!(
        prep_text.contains("already used"),
        "duplicate alias warning: {prep_text}"
    );
    assert_eq!(count_run_objects(&executor, &run).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_with_the_same_alias_reach_their_own_service() {
    let Some(executor) = engine("concurrent_jobs_with_the_same_alias").await else {
        return;
    };
    let run = run_id("alias");
    let service = |msg: &str| {
        json!([{"name": HTTPD, "alias": "web", "entrypoint": ["/bin/sh", "-c"],
                "command": [format!("mkdir -p /w && echo {msg} > /w/index.html && exec httpd -f -p 80 -h /w")]}])
    };
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let out = Output::new();
    let job_a = job("a", json!({"name": BUSYBOX}), service("service-of-a"));
    let job_b = job("b", json!({"name": BUSYBOX}), service("service-of-b"));
    let mut env_a = prepare(&executor, request(job_a, dir_a.path(), &run, &[]), &out)
        .await
        .expect("prepare a");
    let mut env_b = prepare(&executor, request(job_b, dir_b.path(), &run, &[]), &out)
        .await
        .expect("prepare b");
    let mut out_a = Output::new();
    let mut out_b = Output::new();
    let ra = run_step(&mut env_a, "wget -q -O - http://web/", &out_a)
        .await
        .expect("run a");
    let rb = run_step(&mut env_b, "wget -q -O - http://web/", &out_b)
        .await
        .expect("run b");
    let (ta, tb) = (out_a.text().to_string(), out_b.text().to_string());
    env_a.cleanup().await.expect("cleanup a");
    env_b.cleanup().await.expect("cleanup b");
    executor.shutdown().await.expect("shutdown");
    assert_eq!(
        (ra, rb),
        (ScriptOutcome::Exited(0), ScriptOutcome::Exited(0)),
        "{ta}\n{tb}"
    );
    assert_eq!(ta.trim(), "service-of-a");
    assert_eq!(tb.trim(), "service-of-b");
    assert_eq!(count_run_objects(&executor, &run).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_never_listens_only_warns() {
    let Some(mut executor) = engine("a_service_that_never_listens_only_warns").await else {
        return;
    };
    executor.options.service_wait_timeout = std::time::Duration::from_secs(2);
    let run = run_id("deaf");
    let dir = tempfile::tempdir().expect("tempdir");
    // Exposes 80 but only sleeps.
    let services = json!([{"name": HTTPD, "alias": "deaf", "command": ["sleep", "600"]}]);
    let out = Output::new();
    let mut env = prepare(
        &executor,
        request(
            job("deaf", json!({"name": BUSYBOX}), services),
            dir.path(),
            &run,
            &[],
        ),
        &out,
    )
    .await
    .expect("prepare succeeds: a failed wait only warns");
    let script_out = Output::new();
    let outcome = run_step(&mut env, "echo job ran", &script_out)
        .await
        .expect("run");
    env.cleanup().await.expect("cleanup");
    executor.shutdown().await.expect("shutdown");
    assert_eq!(outcome, ScriptOutcome::Exited(0));
    let mut out = out;
    assert!(
        out.text().contains("probably didn't start properly"),
        "{}",
        out.text()
    );
    assert_eq!(count_run_objects(&executor, &run).await, (0, 0));
}
