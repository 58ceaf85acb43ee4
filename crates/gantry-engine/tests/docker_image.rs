//! Images on real Podman: a missing image names itself in the error, image
//! names are expanded, the entrypoint can be overridden, scripts stream
//! their output and exit codes, and the engine's address is reported.

mod docker_common;

use docker_common::*;
use gantry_engine::docker::DockerExecutor;
use gantry_engine::executor::{ExecError, Executor, ScriptOutcome};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_an_error_naming_it() {
    let Some(executor) = engine("a_missing_image_is_an_error_naming_it").await else {
        return;
    };
    let run = run_id("missing");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Output::new();
    let image = "localhost/gantry-no-such-image:1.0";
    let result = prepare(
        &executor,
        request(
            job("m", json!({"name": image}), json!([])),
            dir.path(),
            &run,
            &[],
        ),
        &out,
    )
    .await;
    match result {
        Err(ExecError::Image {
            image: named,
            reason,
        }) => {
            assert_eq!(named, image);
            assert!(!reason.is_empty());
            let message = ExecError::Image {
                image: named,
                reason,
            }
            .to_string();
            assert!(message.contains(image), "{message}");
        }
        Err(other) => panic!("expected an image error, got {other}"),
        Ok(_) => panic!("a missing image must fail"),
    }
    // A missing *service* image too.
    let result = prepare(
        &executor,
        request(
            job(
                "m2",
                json!({"name": BUSYBOX}),
                json!([{"name": "localhost/gantry-no-such-service"}]),
            ),
            dir.path(),
            &run,
            &[],
        ),
        &out,
    )
    .await;
    assert!(
        matches!(&result, Err(ExecError::Image { image, .. }) if image == "localhost/gantry-no-such-service"),
        "{:?}",
        result.err()
    );
    executor.shutdown().await.expect("shutdown");
    assert_eq!(count_run_objects(&executor, &run).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_stream_output_and_exit_codes_with_the_job_environment() {
    let Some(executor) = engine("scripts_stream_output_and_exit_codes").await else {
        return;
    };
    let run = run_id("script");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("from-host.txt"), "checked out\n").expect("write");
    let out = Output::new();
    // The image name is expanded with the job's variables.
    let env_vars = [
        ("IMAGE_NAME", "busybox"),
        ("GREETING", "hello from the job"),
    ];
    let mut env = prepare(
        &executor,
        request(
            job(
                "s",
                json!({"name": "localhost/$IMAGE_NAME:latest"}),
                json!([]),
            ),
            dir.path(),
            &run,
            &env_vars,
        ),
        &out,
    )
    .await
    .expect("prepare");
    let mut o = Output::new();
    let outcome = run_step(&mut env, "pwd; cat from-host.txt; echo \"$GREETING\"; echo to-stderr >&2; echo made > made.txt; exit 7", &o)
        .await
        .expect("run");
    assert_eq!(outcome, ScriptOutcome::Exited(7));
    let text = o.text().to_string();
    assert!(text.contains("/builds/group/project\n"), "{text}");
    assert!(text.contains("checked out"), "{text}");
    assert!(text.contains("hello from the job"), "{text}");
    assert!(text.contains("to-stderr"), "{text}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("made.txt")).expect("made"),
        "made\n"
    );

    // A script longer than one argument may be.
    let long = format!("x='{}'\necho ${{#x}}", "a".repeat(200_000));
    let mut o = Output::new();
    assert_eq!(
        run_step(&mut env, &long, &o).await.expect("long"),
        ScriptOutcome::Exited(0)
    );
    assert_eq!(o.text().trim(), "200000");
    env.cleanup().await.expect("cleanup");
    executor.shutdown().await.expect("shutdown");
    assert_eq!(count_run_objects(&executor, &run).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_entrypoint_can_be_overridden() {
    let Some(executor) = engine("the_entrypoint_can_be_overridden").await else {
        return;
    };
    let run = run_id("entry");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Output::new();

    // The image's entrypoint does not run its arguments: a clear error.
    let mut env = prepare(
        &executor,
        request(
            job("e1", json!({"name": ENTRYPOINT}), json!([])),
            dir.path(),
            &run,
            &[],
        ),
        &out,
    )
    .await
    .expect("prepare");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let o = Output::new();
    match run_step(&mut env, "echo hi", &o).await {
        Err(ExecError::Setup(message)) => {
            assert!(message.contains("entrypoint"), "{message}");
            assert!(message.contains(ENTRYPOINT), "{message}");
        }
        other => panic!("expected an entrypoint error, got {other:?}"),
    }
    env.cleanup().await.expect("cleanup");

    // entrypoint: [""] clears it.
    let mut env = prepare(
        &executor,
        request(
            job(
                "e2",
                json!({"name": ENTRYPOINT, "entrypoint": [""]}),
                json!([]),
            ),
            dir.path(),
            &run,
            &[],
        ),
        &out,
    )
    .await
    .expect("prepare");
    let mut o = Output::new();
    assert_eq!(
        run_step(&mut env, "echo cleared", &o).await.expect("run"),
        ScriptOutcome::Exited(0)
    );
    assert_eq!(o.text().trim(), "cleared");
    env.cleanup().await.expect("cleanup");

    // A wrapper entrypoint runs before the job's shell, as on GitLab.
    let wrapper = json!({"name": ENTRYPOINT,
        "entrypoint": ["/bin/sh", "-c", "echo wrapped > /entrypoint-ran; exec \"$@\"", "--"]});
    let mut env = prepare(
        &executor,
        request(job("e3", wrapper, json!([])), dir.path(), &run, &[]),
        &out,
    )
    .await
    .expect("prepare");
    let mut o = Output::new();
    assert_eq!(
        run_step(&mut env, "cat /entrypoint-ran", &o)
            .await
            .expect("run"),
        ScriptOutcome::Exited(0)
    );
    assert_eq!(o.text().trim(), "wrapped");
    env.cleanup().await.expect("cleanup");
    executor.shutdown().await.expect("shutdown");
    assert_eq!(count_run_objects(&executor, &run).await, (0, 0));
}

#[tokio::test]
async fn an_engine_that_does_not_answer_is_named() {
    let Err(e) = DockerExecutor::connect_to("unix:///nonexistent/gantry-test.sock").await else {
        panic!("no engine there");
    };
    assert!(
        e.to_string().contains("/nonexistent/gantry-test.sock"),
        "{e}"
    );
}
