//! Benchmark (ignored by default; run through bench/container/run.sh):
//! the per-job overhead of a container job through the docker executor
//! (prepare + one `true` script + cleanup) against
//! `podman run --rm IMAGE true`. Target: a ratio of at most 1.3.

mod docker_common;

use docker_common::*;
use gantry_engine::executor::ScriptOutcome;
use serde_json::json;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mean(v: &[Duration]) -> Duration {
    v.iter().sum::<Duration>() / v.len() as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/container/run.sh"]
async fn container_job_overhead_against_podman_run() {
    let Some(executor) = engine("container_job_overhead_against_podman_run").await else {
        return;
    };
    let rounds: usize = std::env::var("GANTRY_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let run = run_id("bench");
    let dir = tempfile::tempdir().expect("tempdir");
    let podman_args = ["run", "--rm", BUSYBOX, "true"];
    let podman = || {
        let started = Instant::now();
        let status = std::process::Command::new("podman")
            .args(podman_args)
            .status()
            .expect("podman run");
        assert!(status.success());
        started.elapsed()
    };
    // Warm both paths (image metadata, page cache).
    podman();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..=rounds {
        let started = Instant::now();
        let out = Output::new();
        let mut env = prepare(
            &executor,
            request(
                job("bench", json!({"name": BUSYBOX}), json!([])),
                dir.path(),
                &run,
                &[],
            ),
            &out,
        )
        .await
        .expect("prepare");
        assert_eq!(
            run_step(&mut env, "true", &out).await.expect("run"),
            ScriptOutcome::Exited(0)
        );
        env.cleanup().await.expect("cleanup");
        let elapsed = started.elapsed();
        if i > 0 {
            ours.push(elapsed);
            theirs.push(podman());
        }
    }
    gantry_engine::executor::Executor::shutdown(&executor)
        .await
        .expect("shutdown");
    let (m_ours, m_theirs) = (median(ours.clone()), median(theirs.clone()));
    println!("container job overhead, {rounds} rounds (image {BUSYBOX}):");
    println!(
        "  gantry docker executor (prepare + `true` + cleanup): median {:>7.1} ms  mean {:>7.1} ms",
        m_ours.as_secs_f64() * 1e3,
        mean(&ours).as_secs_f64() * 1e3
    );
    println!(
        "  podman run --rm {BUSYBOX} true:            median {:>7.1} ms  mean {:>7.1} ms",
        m_theirs.as_secs_f64() * 1e3,
        mean(&theirs).as_secs_f64() * 1e3
    );
    let ratio = m_ours.as_secs_f64() / m_theirs.as_secs_f64();
    println!("  ratio (median): {ratio:.2}x  (target <= 1.30x)");
    if std::env::var("GANTRY_BENCH_ENFORCE").is_ok_and(|v| v == "1") {
        assert!(ratio <= 1.3, "ratio {ratio:.2} above 1.3");
    }
}
