//! Shared set-up of the docker-executor tests: a real engine (Podman's
//! Docker-compatible socket, see scripts/setup-podman.sh), the local test
//! images (scripts/make-test-images.sh) and jobs built from JSON.
//!
//! Without an engine the tests print why and pass, unless
//! GANTRY_REQUIRE_PODMAN=1 (as in `.ci/run`), where a missing engine fails.
#![allow(dead_code)]

use gantry_config::model::Job;
use gantry_engine::docker::{DockerExecutor, LABEL_RUN};
use gantry_engine::executor::{
    ExecError, Executor, JobEnvironment, JobStage, LogReceiver, LogSink, PrepareRequest,
    ScriptOutcome, ScriptRequest, log_channel,
};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const BUSYBOX: &str = "localhost/busybox:latest";
pub const HTTPD: &str = "localhost/gantry-test-httpd:latest";
pub const ENTRYPOINT: &str = "localhost/gantry-test-entrypoint:latest";

fn required() -> bool {
    std::env::var("GANTRY_REQUIRE_PODMAN").is_ok_and(|v| v == "1")
}

/// The executor, or None (after printing why) when no engine answers.
pub async fn engine(test: &str) -> Option<DockerExecutor> {
    match DockerExecutor::connect().await {
        Ok(executor) => {
            ensure_images(&executor).await;
            Some(executor)
        }
        Err(e) if required() => panic!("GANTRY_REQUIRE_PODMAN=1 but no engine: {e}"),
        Err(e) => {
            eprintln!(
                "SKIPPED {test}: no container engine ({e}); set GANTRY_REQUIRE_PODMAN=1 to fail instead"
            );
            None
        }
    }
}

/// Builds the test images once (the script skips images that exist).
async fn ensure_images(executor: &DockerExecutor) {
    let mut missing = false;
    for image in [BUSYBOX, HTTPD, ENTRYPOINT] {
        if executor.client().inspect_image(image).await.is_err() {
            missing = true;
        }
    }
    if !missing {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-test-images.sh");
    let status = std::process::Command::new("sh")
        .arg(&script)
        .env("DOCKER_HOST", executor.host())
        .status()
        .expect("run make-test-images.sh");
    assert!(status.success(), "{} failed", script.display());
}

/// A unique run id per test.
pub fn run_id(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("t{}-{tag}-{nanos:x}", std::process::id())
}

/// A planned job from a few fields; the rest are a plain job's defaults.
pub fn job(name: &str, image: serde_json::Value, services: serde_json::Value) -> Job {
    serde_json::from_value(serde_json::json!({
        "name": name, "definition": name, "stage": "test", "when": "on_success",
        "start_in": null, "allow_failure": false, "allow_failure_exit_codes": [],
        "needs": null, "dependencies": [], "script": ["true"], "before_script": [],
        "after_script": [], "image": image, "services": services, "variables": [],
        "environment": null, "retry": {"max": 0}, "timeout": null, "resource_group": null,
        "interruptible": false, "artifacts": null, "cache": [], "tags": [], "coverage": null,
        "trigger": null, "node_index": null, "node_total": null, "extra": {}
    }))
    .expect("job JSON matches the model")
}

/// The repository key the tests use for a project directory.
pub fn repository_key(project_dir: &Path) -> String {
    gantry_engine::executor::repository_key(project_dir)
}

pub fn request(job: Job, project_dir: &Path, run_id: &str, env: &[(&str, &str)]) -> PrepareRequest {
    PrepareRequest {
        job,
        project_dir: project_dir.to_path_buf(),
        ci_project_dir: "/builds/group/project".to_string(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        run_id: run_id.to_string(),
        state_dir: None,
        repository_key: repository_key(project_dir),
    }
}

/// A log sink and a way to read everything sent to it so far.
pub struct Output {
    pub sink: LogSink,
    rx: LogReceiver,
    text: String,
}

impl Output {
    pub fn new() -> Output {
        let (sink, rx) = log_channel();
        Output {
            sink,
            rx,
            text: String::new(),
        }
    }
    pub fn text(&mut self) -> &str {
        while let Some(chunk) = self.rx.try_recv() {
            self.text.push_str(&String::from_utf8_lossy(&chunk));
        }
        &self.text
    }
}

pub fn script(stage: JobStage, text: &str, timeout: Option<Duration>) -> ScriptRequest {
    ScriptRequest {
        stage,
        script: text.to_string(),
        env: Vec::new(),
        timeout,
    }
}

pub async fn prepare(
    executor: &DockerExecutor,
    request: PrepareRequest,
    out: &Output,
) -> Result<Box<dyn JobEnvironment>, ExecError> {
    executor
        .prepare(request, out.sink.clone(), CancellationToken::new())
        .await
}

pub async fn run_step(
    env: &mut Box<dyn JobEnvironment>,
    text: &str,
    out: &Output,
) -> Result<ScriptOutcome, ExecError> {
    env.run_script(
        script(JobStage::StepScript, text, None),
        out.sink.clone(),
        CancellationToken::new(),
    )
    .await
}

/// Containers (all states) and networks labelled for `run_id`, plus the
/// run's network by name.
pub async fn count_run_objects(executor: &DockerExecutor, run_id: &str) -> (usize, usize) {
    use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder};
    let mut filters = HashMap::new();
    filters.insert("label".to_string(), vec![format!("{LABEL_RUN}={run_id}")]);
    let containers = executor
        .client()
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("list containers")
        .len();
    let labelled = executor
        .client()
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("list networks");
    let all = executor
        .client()
        .list_networks(None)
        .await
        .expect("list networks");
    let named = all
        .iter()
        .filter(|n| n.name.as_deref().is_some_and(|name| name.contains(run_id)))
        .count();
    (containers, labelled.len().max(named))
}
