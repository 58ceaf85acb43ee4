//! Whole pipelines on the docker executor, through the engine's public run
//! API, on real Podman: artifacts pass between containerised jobs, a service
//! is reachable from a pipeline job, and Ctrl-C leaves no container or
//! network of the run behind.

mod common;
mod docker_common;

use common::{Repo, artifacts, job as shell_job, needs, pipeline};
use gantry_config::model::{Image, Job, Service};
use gantry_engine::docker::DockerExecutor;
use gantry_engine::executor::Executor;
use gantry_engine::report::{OutputMode, Reporter};
use gantry_engine::run::{DockerConnect, RunReport, run_pipeline};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn in_container(name: &str, stage: &str, script: &[&str]) -> Job {
    let mut job = shell_job(name, stage, script);
    job.image = Some(Image {
        name: docker_common::BUSYBOX.to_string(),
        entrypoint: None,
        pull_policy: vec![],
        docker: None,
    });
    job
}

/// The executor as `gantry run` makes it: keeping containers for `gantry shell`.
fn connect() -> DockerConnect {
    Box::new(|| {
        Box::pin(async {
            let mut executor = DockerExecutor::connect().await?;
            executor.options.keep = gantry_engine::docker::KeepContainers::Always;
            Ok(Arc::new(executor) as Arc<dyn Executor>)
        })
    })
}

async fn run(
    repo: &Repo,
    p: &gantry_config::model::Pipeline,
    cancel: CancellationToken,
) -> RunReport {
    let mut reporter = Reporter::new(OutputMode::Quiet, Box::new(std::io::sink()));
    run_pipeline(p, repo.options(), Some(connect()), &mut reporter, cancel)
        .await
        .expect("run starts")
}

fn log(report: &RunReport, job: &str) -> String {
    let j = report.job(job).unwrap_or_else(|| panic!("no job {job}"));
    std::fs::read_to_string(&j.log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_pass_between_containerised_jobs() {
    let Some(executor) = docker_common::engine("artifacts_pass_between_containerised_jobs").await
    else {
        return;
    };
    let repo = Repo::new(&[("src/input.txt", "from the repository\n")]);
    let mut build = in_container(
        "dk build",
        "build",
        &[
            "mkdir -p out",
            "cat src/input.txt > out/result.txt",
            "echo built in $CI_PROJECT_DIR >> out/result.txt",
        ],
    );
    build.artifacts = artifacts(&["out/"]);
    let mut test = in_container(
        "dk test",
        "test",
        &["cat out/result.txt", "test -f out/result.txt"],
    );
    test.needs = needs(&["dk build"]);
    // What the planner derives from `needs`.
    test.dependencies = vec!["dk build".into()];
    let mut with_service = in_container("dk with service", "test", &["wget -q -O - http://web/"]);
    with_service.services = vec![Service {
        name: docker_common::HTTPD.to_string(),
        alias: Some("web".into()),
        entrypoint: None,
        command: None,
        variables: vec![],
        pull_policy: vec![],
        docker: None,
    }];
    let p = pipeline(&["build", "test"], vec![build, test, with_service]);
    let report = run(&repo, &p, CancellationToken::new()).await;
    let test_log = log(&report, "dk test");
    assert_eq!(
        report.job("dk build").map(|j| j.status.as_str()),
        Some("success"),
        "{}",
        log(&report, "dk build")
    );
    assert_eq!(
        report.job("dk test").map(|j| j.status.as_str()),
        Some("success"),
        "{test_log}"
    );
    assert!(test_log.contains("from the repository"), "{test_log}");
    assert!(test_log.contains("built in /"), "{test_log}");
    let service_log = log(&report, "dk with service");
    assert!(
        service_log.contains("hello from the service"),
        "{service_log}"
    );
    // Each job's build container is kept (stopped) for `gantry shell`;
    // services and the network are gone.
    assert_eq!(
        docker_common::count_run_objects(&executor, &report.run_id).await,
        (3, 0)
    );
    for name in ["dk build", "dk test", "dk with service"] {
        assert_eq!(
            executor
                .remove_kept(None, Some(name))
                .await
                .expect("remove kept"),
            1
        );
    }
    assert_eq!(
        docker_common::count_run_objects(&executor, &report.run_id).await,
        (0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_leaves_no_container_or_network() {
    let Some(executor) = docker_common::engine("ctrl_c_leaves_no_container_or_network").await
    else {
        return;
    };
    let repo = Repo::new(&[("README", "x\n")]);
    let mut slow = in_container("slow", "test", &["echo started", "sleep 300"]);
    slow.services = vec![Service {
        name: docker_common::HTTPD.to_string(),
        alias: Some("web".into()),
        entrypoint: None,
        command: None,
        variables: vec![],
        pull_policy: vec![],
        docker: None,
    }];
    let also_slow = in_container("also slow", "test", &["sleep 300"]);
    let p = pipeline(&["test"], vec![slow, also_slow]);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    // Cancel once the run's containers exist (counted by label while running).
    let watcher_executor = DockerExecutor::connect().await.expect("engine");
    let watcher = tokio::spawn(async move {
        let started = Instant::now();
        let mut seen = (0, 0);
        while started.elapsed() < Duration::from_secs(60) {
            let runs = running_runs(&watcher_executor).await;
            if let Some(run) = runs.first() {
                seen = docker_common::count_run_objects(&watcher_executor, run).await;
                if seen.0 >= 3 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        trigger.cancel();
        seen
    });
    let started = Instant::now();
    let report = run(&repo, &p, cancel).await;
    let seen = watcher.await.expect("watcher");
    assert!(
        seen.0 >= 3 && seen.1 >= 1,
        "before: {seen:?} (2 build + 1 service containers, 1 network)"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "cancelled promptly"
    );
    assert_eq!(
        docker_common::count_run_objects(&executor, &report.run_id).await,
        (0, 0),
        "after Ctrl-C"
    );
    assert!(report.jobs.iter().all(|j| j.status.as_str() != "success"));
}

/// Run ids of running build containers of this test's jobs.
async fn running_runs(executor: &DockerExecutor) -> Vec<String> {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let mut filters = std::collections::HashMap::new();
    filters.insert(
        "label".to_string(),
        vec!["gantry.job=also slow".to_string()],
    );
    executor
        .client()
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.labels.and_then(|l| l.get("gantry.run").cloned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_variables_reach_a_containerised_job() {
    let Some(executor) = docker_common::engine("file_variables_reach_a_containerised_job").await
    else {
        return;
    };
    let repo = Repo::new(&[("README", "x\n")]);
    let mut job = in_container(
        "dk file var",
        "test",
        &["test -f \"$KUBECONFIG_FILE\"", "cat \"$KUBECONFIG_FILE\""],
    );
    let mut var = gantry_config::model::Variable::new("KUBECONFIG_FILE", "apiVersion: v1");
    var.file = true;
    job.variables.push(var);
    let p = pipeline(&["test"], vec![job]);
    let report = run(&repo, &p, CancellationToken::new()).await;
    let out = log(&report, "dk file var");
    assert_eq!(
        report.job("dk file var").map(|j| j.status.as_str()),
        Some("success"),
        "{out}"
    );
    assert!(out.contains("apiVersion: v1"), "{out}");
    executor
        .remove_kept(None, Some("dk file var"))
        .await
        .expect("remove kept");
}
