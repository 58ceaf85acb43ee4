//! `gantry run`'s docker options on real Podman: --privileged, --volume,
//! --network, --pull-policy and --default-image.

mod docker_common;

use docker_common::*;
use gantry_engine::docker::{DockerOptions, LABEL_RUN, OptionError, PullPolicy};
use gantry_engine::executor::{ExecError, Executor, ScriptOutcome};
use serde_json::json;

/// Runs `script` in a fresh job of `image` (None: no `image:`) and returns
/// its exit code and output.
async fn run_job(
    executor: &gantry_engine::docker::DockerExecutor,
    image: serde_json::Value,
    script: &str,
) -> Result<(ScriptOutcome, String), ExecError> {
    let run = run_id("opts");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Output::new();
    let mut env = prepare(
        executor,
        request(job("options", image, json!([])), dir.path(), &run, &[]),
        &out,
    )
    .await?;
    let mut script_out = Output::new();
    let outcome = run_step(&mut env, script, &script_out).await;
    env.cleanup().await.expect("cleanup");
    executor.shutdown().await.expect("shutdown");
    assert_eq!(count_run_objects(executor, &run).await, (0, 0));
    Ok((outcome?, script_out.text().to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_grants_every_capability() {
    let Some(mut executor) = engine("privileged_grants_every_capability").await else {
        return;
    };
    let script = "grep CapEff /proc/self/status";
    let (_, plain) = run_job(&executor, json!({"name": BUSYBOX}), script)
        .await
        .expect("plain");
    executor.options.privileged = true;
    let (_, privileged) = run_job(&executor, json!({"name": BUSYBOX}), script)
        .await
        .expect("privileged");
    let caps = |text: &str| {
        text.split_whitespace()
            .last()
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .unwrap_or(0)
    };
    // CAP_SYS_ADMIN (bit 21): what docker:dind needs, only when privileged.
    let sys_admin = 1u64 << 21;
    assert_eq!(caps(&plain) & sys_admin, 0, "{plain}");
    assert_ne!(caps(&privileged) & sys_admin, 0, "{privileged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_networks_and_the_default_image_apply() {
    let Some(mut executor) = engine("volumes_networks_and_the_default_image_apply").await else {
        return;
    };
    let shared = tempfile::tempdir().expect("tempdir");
    std::fs::write(shared.path().join("seed.txt"), "from the host").expect("write");
    let network = format!("gantry-test-extra-{}", std::process::id());
    executor
        .client()
        .create_network(bollard::models::NetworkCreateRequest {
            name: network.clone(),
            labels: Some(std::collections::HashMap::from([(
                LABEL_RUN.to_string(),
                "docker-options-test".to_string(),
            )])),
            ..Default::default()
        })
        .await
        .expect("create network");
    executor.options = DockerOptions {
        volumes: vec![format!("{}:/extra:ro", shared.path().display())],
        networks: vec![network.clone()],
        default_image: Some(BUSYBOX.to_string()),
        ..DockerOptions::default()
    };
    // No `image:`: the default image runs it. Two interfaces besides lo:
    // the extra network's and the default one's.
    let result = run_job(
        &executor,
        serde_json::Value::Null,
        "cat /extra/seed.txt; echo; ls /sys/class/net | grep -vc '^lo$'",
    )
    .await;
    let _ = executor.client().remove_network(&network).await;
    let (outcome, text) = result.expect("job");
    assert_eq!(outcome, ScriptOutcome::Exited(0), "{text}");
    assert!(text.contains("from the host"), "{text}");
    let interfaces: usize = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert_eq!(interfaces, 2, "the extra network was not joined: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_policy_never_refuses_a_missing_image() {
    let Some(mut executor) = engine("pull_policy_never_refuses_a_missing_image").await else {
        return;
    };
    executor.options.pull_policy = Some(PullPolicy::Never);
    let missing = "localhost/gantry-no-such-image:never";
    let Err(ExecError::Image { image, reason }) =
        run_job(&executor, json!({"name": missing}), "true").await
    else {
        panic!("a missing image with pull policy never must fail");
    };
    assert_eq!(image, missing);
    assert!(reason.contains("never"), "{reason}");
    // An image's own policy wins over the option.
    let (outcome, _) = run_job(
        &executor,
        json!({"name": BUSYBOX, "pull_policy": ["if-not-present"]}),
        "true",
    )
    .await
    .expect("own policy");
    assert_eq!(outcome, ScriptOutcome::Exited(0));
}

#[test]
fn bad_options_are_refused_before_any_job() {
    let bad = |volume: &str| DockerOptions {
        volumes: vec![volume.to_string()],
        ..DockerOptions::default()
    };
    assert!(matches!(
        bad("relative:inside").check(),
        Err(OptionError::Volume(_))
    ));
    assert!(matches!(
        bad("/a:/b:xx").check(),
        Err(OptionError::Volume(_))
    ));
    assert!(bad("/a:/b:ro").check().is_ok());
    assert!(bad("named-volume:/cache").check().is_ok());
    let network = DockerOptions {
        networks: vec!["has space".into()],
        ..DockerOptions::default()
    };
    assert!(matches!(network.check(), Err(OptionError::Network(_))));
}
