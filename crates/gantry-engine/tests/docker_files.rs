//! Files and `gantry shell` on real Podman: what the job writes belongs to
//! the project directory's owner, not root; a kept container can be opened
//! again with the job's files and variables.

mod docker_common;

use docker_common::*;
use gantry_engine::executor::{Executor, ScriptOutcome};
use serde_json::json;
use std::os::unix::fs::MetadataExt;

fn owners(root: &std::path::Path, found: &mut Vec<(String, u32, u32)>) {
    for entry in std::fs::read_dir(root).expect("read_dir") {
        let entry = entry.expect("entry");
        let meta = entry.path().symlink_metadata().expect("lstat");
        found.push((entry.path().display().to_string(), meta.uid(), meta.gid()));
        if meta.is_dir() {
            owners(&entry.path(), found);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_the_job_writes_belong_to_the_user() {
    let Some(executor) = engine("files_the_job_writes_belong_to_the_user").await else {
        return;
    };
    let run = run_id("owner");
    let dir = tempfile::tempdir().expect("tempdir");
    // As root, play a user (uid 1234) who owns the checkout.
    let (uid, gid) = if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(dir.path(), Some(1234), Some(1234)).expect("chown");
        (1234, 1234)
    } else {
        let meta = std::fs::metadata(dir.path()).expect("meta");
        (meta.uid(), meta.gid())
    };
    let out = Output::new();
    let mut env = prepare(
        &executor,
        request(
            job("w", json!({"name": BUSYBOX}), json!([])),
            dir.path(),
            &run,
            &[],
        ),
        &out,
    )
    .await
    .expect("prepare");
    let o = Output::new();
    let script = "id -u; mkdir -p out/deep; echo x > out/deep/file; touch top; ln -s top link";
    assert_eq!(
        run_step(&mut env, script, &o).await.expect("run"),
        ScriptOutcome::Exited(0)
    );
    env.cleanup().await.expect("cleanup");
    executor.shutdown().await.expect("shutdown");
    let mut found = Vec::new();
    owners(dir.path(), &mut found);
    assert_eq!(found.len(), 5, "{found:?}");
    for (path, u, g) in found {
        assert_eq!((u, g), (uid, gid), "{path} belongs to {u}:{g}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_container_opens_again_for_gantry_shell() {
    let Some(mut executor) = engine("a_kept_container_opens_again_for_gantry_shell").await else {
        return;
    };
    executor.options.keep = gantry_engine::docker::KeepContainers::Always;
    let run = run_id("shell");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Output::new();
    let mut env = prepare(
        &executor,
        request(
            job(
                "debug me",
                json!({"name": BUSYBOX}),
                json!([{"name": HTTPD}]),
            ),
            dir.path(),
            &run,
            &[("JOB_SECRETLESS", "visible")],
        ),
        &out,
    )
    .await
    .expect("prepare");
    let o = Output::new();
    assert_eq!(
        run_step(&mut env, "echo marker > /gantry-marker; exit 1", &o)
            .await
            .expect("run"),
        ScriptOutcome::Exited(1)
    );
    let command = env.shell_command().expect("a shell command when kept");
    env.cleanup().await.expect("cleanup");
    executor.shutdown().await.expect("shutdown");
    // Only the stopped build container is left; services and network are gone.
    assert_eq!(count_run_objects(&executor, &run).await, (1, 0));

    // `-it` needs a terminal: `script` provides one.
    let line = command
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let output = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(b"cat /gantry-marker; echo \"var=$JOB_SECRETLESS\"; pwd; exit\n")?;
            drop(stdin);
            child.wait_with_output()
        });
    match output {
        Ok(output) => {
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(text.contains("marker"), "shell output: {text}");
            assert!(text.contains("var=visible"), "shell output: {text}");
            assert!(
                text.contains("/builds/group/project"),
                "shell output: {text}"
            );
        }
        Err(e) => eprintln!("`script` (util-linux) unavailable, shell not opened: {e}"),
    }
    // Running the job again replaces the kept container.
    let env = prepare(
        &executor,
        request(
            job("debug me", json!({"name": BUSYBOX}), json!([])),
            dir.path(),
            &run,
            &[],
        ),
        &out,
    )
    .await
    .expect("prepare again");
    env.cleanup().await.expect("cleanup");
    assert_eq!(count_run_objects(&executor, &run).await.0, 1);
    assert_eq!(
        executor
            .remove_kept(None, Some("debug me"))
            .await
            .expect("remove kept"),
        1
    );
    assert_eq!(count_run_objects(&executor, &run).await, (0, 0));
}
