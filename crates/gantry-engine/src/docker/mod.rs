//! The `docker` executor: jobs run in containers through the Docker Engine
//! API (`bollard`), against Docker or Podman's Docker-compatible socket.
//!
//! Per job (gitlab-runner's docker executor, `executors/docker`):
//! - `prepare`: the job image (name expanded with the job variables, never
//!   pulled when it exists locally), then the services, each on a network
//!   with GitLab's default aliases plus the user's, waited for on their
//!   exposed TCP ports (30 s; a failure only warns, as on GitLab). Then the
//!   build container: the job's project directory bind-mounted at
//!   `CI_PROJECT_DIR`, which is also the working directory.
//! - The build container stays up (its command is a `sh` waiting on an open
//!   stdin, run through the image's entrypoint), and each script runs in it
//!   by `exec`, through the runner's bash-detect (bash if the image has it,
//!   else `sh`). A timeout or a cancellation kills the *container*, so no
//!   process of the job survives; a later script (after_script) starts it
//!   again.
//! - Files the job wrote are given back to the user (the repository's
//!   owner) after each script, instead of running jobs as that user, which
//!   many images do not support (see [`ownership`]).
//! - `cleanup` force-removes the build and service containers, always.
//!
//! Networks: services share one network per pipeline run (`gantry-<run>`,
//! created on first use, removed by `shutdown`). Two jobs running at the same
//! time with a service alias in common would see each other's service
//! through DNS, so such a job gets a network of its own instead.
//!
//! Everything is labelled `gantry.run=<run id>`, so
//! [`DockerExecutor::remove_leftovers`] finds what a crashed run left.

mod names;
mod ownership;

pub use names::{default_service_aliases, expand_runner_env, user_aliases};

use crate::executor::{
    ExecError, Executor, JobEnvironment, LogSink, PrepareRequest, ScriptOutcome, ScriptRequest,
};
use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, ImageInspect, NetworkCreateRequest,
    NetworkDisconnectRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use gantry_config::model::{Job, Json, Service};
use indexmap::IndexMap;
use ownership::Owner;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Label on every container and network: the pipeline run's id.
pub const LABEL_RUN: &str = "gantry.run";
/// Label: the job's name.
pub const LABEL_JOB: &str = "gantry.job";
/// Label: `build` or `service`.
pub const LABEL_ROLE: &str = "gantry.role";
/// Label: one job attempt (`<run>-<n>`), to sweep a half-done `prepare`.
pub const LABEL_INSTANCE: &str = "gantry.instance";
/// Label: `true` on build containers kept for `gantry shell`.
pub const LABEL_KEEP: &str = "gantry.keep";
/// Label: the job's `CI_PROJECT_DIR`, which tells projects apart.
pub const LABEL_PROJECT: &str = "gantry.project";

/// gitlab-runner's default `wait_for_services_timeout`.
pub const DEFAULT_SERVICE_WAIT: Duration = Duration::from_secs(30);

/// The runner's bash-detect (shells/bash.go), with its arguments quoted:
/// the script runs in bash when the image has it, else in `sh`.
const BASH_DETECT: &str = "if [ -x /usr/local/bin/bash ]; then exec /usr/local/bin/bash \"$@\"; \
elif [ -x /usr/bin/bash ]; then exec /usr/bin/bash \"$@\"; \
elif [ -x /bin/bash ]; then exec /bin/bash \"$@\"; \
elif [ -x /usr/local/bin/sh ]; then exec /usr/local/bin/sh \"$@\"; \
elif [ -x /usr/bin/sh ]; then exec /usr/bin/sh \"$@\"; \
elif [ -x /bin/sh ]; then exec /bin/sh \"$@\"; \
elif [ -x /busybox/sh ]; then exec /busybox/sh \"$@\"; \
else echo shell not found; exit 1; fi";

/// Longest script passed as an argument; Linux caps one argument at 128 KiB.
const MAX_SCRIPT_ARG: usize = 120 * 1024;

/// Runs jobs in containers. One value serves any number of pipeline runs.
pub struct DockerExecutor {
    docker: Docker,
    /// The engine address, e.g. `unix:///run/podman/podman.sock`.
    host: String,
    /// Keep each job's build container (stopped) after the job, for
    /// `gantry shell JOB`: `shell_command` then restarts it and opens a
    /// shell in it, with the job's variables, files and any packages the
    /// job installed. The previous kept container of the same job and
    /// project is removed when the job runs again. Service networks are
    /// detached from a kept container (the services are gone). A cancelled
    /// job (Ctrl-C) keeps nothing.
    pub keep_for_shell: bool,
    /// How long to wait for a service's ports (GitLab: 30 s).
    pub service_wait_timeout: Duration,
    shared: Arc<Shared>,
}

/// State shared by the executor and its job environments.
struct Shared {
    /// Per run id: the run's service network and the aliases on it.
    networks: tokio::sync::Mutex<HashMap<String, RunNetwork>>,
    /// Run ids seen, for `shutdown`.
    runs: std::sync::Mutex<HashSet<String>>,
    seq: AtomicU64,
}

struct RunNetwork {
    name: String,
    created: bool,
    /// Alias → number of live services using it on this network.
    aliases: HashMap<String, usize>,
}

fn engine_error(what: &str, err: bollard::errors::Error) -> ExecError {
    ExecError::Setup(format!("container engine: {what}: {err}"))
}

fn is_status(err: &bollard::errors::Error, codes: &[u16]) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code, .. } if codes.contains(status_code))
}

/// Quote for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The job's environment with later duplicates winning, as `K=V` strings.
fn env_list<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let mut map: IndexMap<&str, &str> = IndexMap::new();
    for (k, v) in pairs {
        map.insert(k, v);
    }
    map.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// `docker: {user: ...}` of an image or service.
fn docker_user(docker: Option<&Json>) -> Option<String> {
    docker
        .and_then(|d| d.get("user"))
        .and_then(|u| u.as_str())
        .map(str::to_string)
}

async fn answers(docker: &Docker) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(3), docker.ping()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 3 s".into()),
    }
}

async fn connect_host(host: &str) -> Result<Docker, String> {
    let docker = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
    } else if host.starts_with('/') {
        Docker::connect_with_unix(host, 120, bollard::API_DEFAULT_VERSION)
    } else if let Some(rest) = host.strip_prefix("tcp://") {
        Docker::connect_with_http(&format!("http://{rest}"), 120, bollard::API_DEFAULT_VERSION)
    } else if host.starts_with("http://") {
        Docker::connect_with_http(host, 120, bollard::API_DEFAULT_VERSION)
    } else {
        return Err("unsupported address (use unix:// or tcp://)".into());
    }
    .map_err(|e| e.to_string())?;
    answers(&docker).await?;
    // Podman speaks an older API version than bollard's default.
    docker.negotiate_version().await.map_err(|e| e.to_string())
}

impl DockerExecutor {
    /// Connects to the engine at DOCKER_HOST, else at the first socket that
    /// answers among /var/run/docker.sock, /run/podman/podman.sock and
    /// $XDG_RUNTIME_DIR/podman/podman.sock.
    pub async fn connect() -> Result<DockerExecutor, ExecError> {
        if let Ok(host) = std::env::var("DOCKER_HOST")
            && !host.trim().is_empty()
        {
            return Self::connect_to(host.trim()).await;
        }
        let mut candidates = vec![
            "/var/run/docker.sock".to_string(),
            "/run/podman/podman.sock".to_string(),
        ];
        if let Ok(runtime) = std::env::var("XDG_RUNTIME_DIR")
            && !runtime.is_empty()
        {
            candidates.push(format!("{runtime}/podman/podman.sock"));
        } else {
            candidates.push("$XDG_RUNTIME_DIR/podman/podman.sock (XDG_RUNTIME_DIR unset)".into());
        }
        let mut tried = Vec::new();
        for path in &candidates {
            if !path.starts_with('/') {
                tried.push(path.clone());
                continue;
            }
            if !std::path::Path::new(path).exists() {
                tried.push(format!("{path} (no such socket)"));
                continue;
            }
            let host = format!("unix://{path}");
            match connect_host(&host).await {
                Ok(docker) => return Ok(Self::with_docker(docker, host)),
                Err(e) => tried.push(format!("{path} ({e})")),
            }
        }
        Err(ExecError::Setup(format!(
            "no container engine answers. DOCKER_HOST is not set; tried {}. \
             Start Podman's API with scripts/setup-podman.sh, or set DOCKER_HOST",
            tried.join(", ")
        )))
    }

    /// Connects to one engine address (`unix:///path`, `tcp://host:port`).
    pub async fn connect_to(host: &str) -> Result<DockerExecutor, ExecError> {
        match connect_host(host).await {
            Ok(docker) => Ok(Self::with_docker(docker, host.to_string())),
            Err(e) => Err(ExecError::Setup(format!(
                "the container engine at {host} does not answer: {e}"
            ))),
        }
    }

    fn with_docker(docker: Docker, host: String) -> DockerExecutor {
        DockerExecutor {
            docker,
            host,
            keep_for_shell: false,
            service_wait_timeout: DEFAULT_SERVICE_WAIT,
            shared: Arc::new(Shared {
                networks: tokio::sync::Mutex::new(HashMap::new()),
                runs: std::sync::Mutex::new(HashSet::new()),
                seq: AtomicU64::new(1),
            }),
        }
    }

    /// The engine address in use.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The `bollard` client, for callers that need the engine directly.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Removes every container and network labelled with `run_id`, except
    /// build containers deliberately kept (stopped) for `gantry shell`.
    /// Returns how many objects were removed.
    pub async fn remove_leftovers(&self, run_id: &str) -> Result<usize, ExecError> {
        remove_labelled(&self.docker, &format!("{LABEL_RUN}={run_id}"), true).await
    }

    /// Removes build containers kept for `gantry shell`, optionally only
    /// those of one project (`CI_PROJECT_DIR`) and job.
    pub async fn remove_kept(
        &self,
        project: Option<&str>,
        job: Option<&str>,
    ) -> Result<usize, ExecError> {
        let mut filters = vec![format!("{LABEL_KEEP}=true")];
        if let Some(p) = project {
            filters.push(format!("{LABEL_PROJECT}={p}"));
        }
        if let Some(j) = job {
            filters.push(format!("{LABEL_JOB}={j}"));
        }
        let ids = list_containers(&self.docker, filters).await?;
        let mut removed = 0;
        for (id, _, _) in ids {
            if force_remove(&self.docker, &id).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Makes sure `image` exists locally: never pulls one that does
    /// (unless `pull_policy: always`), pulls a missing one.
    pub async fn ensure_image(
        &self,
        image: &str,
        pull_policy: &[String],
        output: &LogSink,
    ) -> Result<ImageInspect, ExecError> {
        let always = pull_policy.iter().any(|p| p == "always");
        let if_not_present =
            pull_policy.is_empty() || pull_policy.iter().any(|p| p == "if-not-present");
        let never_only = !pull_policy.is_empty() && pull_policy.iter().all(|p| p == "never");
        if !always && let Ok(found) = self.docker.inspect_image(image).await {
            return Ok(found);
        }
        if never_only {
            return Err(ExecError::Image {
                image: image.to_string(),
                reason: "it is not present and pull_policy is `never`".into(),
            });
        }
        let _ = output.send(format!("Pulling docker image {image} ...\n").into_bytes());
        match self.pull(image).await {
            Ok(()) => {}
            Err(reason) => {
                if always
                    && if_not_present
                    && let Ok(found) = self.docker.inspect_image(image).await
                {
                    let _ = output.send(
                        format!(
                            "WARNING: pulling {image} failed ({reason}); using the local image\n"
                        )
                        .into_bytes(),
                    );
                    return Ok(found);
                }
                return Err(ExecError::Image {
                    image: image.to_string(),
                    reason,
                });
            }
        }
        self.docker
            .inspect_image(image)
            .await
            .map_err(|e| ExecError::Image {
                image: image.to_string(),
                reason: format!("pulled, but it cannot be inspected: {e}"),
            })
    }

    async fn pull(&self, image: &str) -> Result<(), String> {
        let (name, tag) = split_tag(image);
        let mut options = CreateImageOptionsBuilder::default().from_image(name);
        if let Some(tag) = tag {
            options = options.tag(tag);
        }
        let mut stream = self.docker.create_image(Some(options.build()), None, None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail {
                        return Err(detail.message.unwrap_or_else(|| "pull failed".into()));
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// The run's service network, created on first use. Returns the network
    /// and whether the job must use a private one (an alias is taken).
    async fn network_for(
        &self,
        run_id: &str,
        aliases: &[String],
    ) -> Result<(String, bool), ExecError> {
        let mut networks = self.shared.networks.lock().await;
        let entry = networks
            .entry(run_id.to_string())
            .or_insert_with(|| RunNetwork {
                name: format!("gantry-{}", names::slug(run_id, 40)),
                created: false,
                aliases: HashMap::new(),
            });
        if !entry.created {
            create_network(&self.docker, &entry.name, run_id).await?;
            entry.created = true;
        }
        if aliases.iter().any(|a| entry.aliases.contains_key(a)) {
            return Ok((entry.name.clone(), true));
        }
        for alias in aliases {
            *entry.aliases.entry(alias.clone()).or_insert(0) += 1;
        }
        Ok((entry.name.clone(), false))
    }

    async fn prepare_into(
        &self,
        job_env: &mut DockerJob,
        req: &PrepareRequest,
        output: &LogSink,
    ) -> Result<(), ExecError> {
        let job = &req.job;
        let image = job.image.as_ref().ok_or_else(|| {
            ExecError::Setup(format!(
                "job `{}` has no `image:`; the docker executor needs one",
                job.name
            ))
        })?;
        let image_name = expand_runner_env(&image.name, &req.env);
        if image_name.trim().is_empty() {
            return Err(ExecError::Setup(format!(
                "the image name `{}` of job `{}` is empty after variable expansion",
                image.name, job.name
            )));
        }
        let found = self
            .ensure_image(&image_name, &image.pull_policy, output)
            .await?;
        let short_id = found
            .id
            .as_deref()
            .map(|id| id.trim_start_matches("sha256:").chars().take(12).collect())
            .unwrap_or_else(String::new);
        let _ = output.send(
            format!(
                "Using docker image {image_name} ({short_id}) for job `{}`\n",
                job.name
            )
            .into_bytes(),
        );
        job_env.image = image_name.clone();

        if self.keep_for_shell {
            self.remove_kept(Some(&req.ci_project_dir), Some(&job.name))
                .await?;
        }

        let network = if job.services.is_empty() {
            None
        } else {
            Some(self.start_services(job_env, req, output).await?)
        };

        let project_dir = std::fs::canonicalize(&req.project_dir).map_err(|e| {
            ExecError::Setup(format!(
                "project directory {}: {e}",
                req.project_dir.display()
            ))
        })?;
        job_env.owner = ownership::owner_for(&project_dir);
        job_env.project_dir = project_dir.clone();

        let name = format!("{}-build", job_env.instance);
        let env = env_list(req.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut endpoints = HashMap::new();
        if let Some(net) = &network {
            endpoints.insert(net.clone(), EndpointSettings::default());
        }
        let body = ContainerCreateBody {
            image: Some(image_name.clone()),
            entrypoint: image.entrypoint.clone(),
            // A shell on an open stdin keeps the container up between execs,
            // through the image's entrypoint like the runner's build shell.
            cmd: Some(vec!["sh".into()]),
            open_stdin: Some(true),
            stdin_once: Some(false),
            // `sh` as PID 1 ignores SIGTERM: a graceful stop would only wait.
            stop_signal: Some("SIGKILL".into()),
            tty: Some(false),
            env: Some(env),
            working_dir: Some(req.ci_project_dir.clone()),
            user: docker_user(image.docker.as_ref()),
            labels: Some(job_env.labels("build", self.keep_for_shell)),
            host_config: Some(HostConfig {
                binds: Some(job_binds(&project_dir, &req.ci_project_dir)),
                network_mode: network.clone(),
                ..Default::default()
            }),
            networking_config: network.as_ref().map(|_| NetworkingConfig {
                endpoints_config: Some(endpoints),
            }),
            ..Default::default()
        };
        self.docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .map_err(|e| {
                engine_error(&format!("creating the job container from {image_name}"), e)
            })?;
        job_env.build = Some(name.clone());
        self.docker
            .start_container(&name, None)
            .await
            .map_err(|e| engine_error(&format!("starting the job container {name}"), e))?;
        Ok(())
    }

    /// Creates, starts and waits for the job's services; returns the network.
    async fn start_services(
        &self,
        job_env: &mut DockerJob,
        req: &PrepareRequest,
        output: &LogSink,
    ) -> Result<String, ExecError> {
        let job = &req.job;
        struct Planned<'a> {
            service: &'a Service,
            image: String,
            aliases: Vec<String>,
            inspect: ImageInspect,
        }
        let mut planned = Vec::new();
        let mut used: HashSet<String> = HashSet::new();
        for service in &job.services {
            let image = expand_runner_env(&service.name, &req.env);
            let inspect = self
                .ensure_image(&image, &service.pull_policy, output)
                .await?;
            let user = expand_runner_env(service.alias.as_deref().unwrap_or(""), &req.env);
            let mut aliases = Vec::new();
            for alias in default_service_aliases(&image)
                .into_iter()
                .chain(user_aliases(Some(&user)))
            {
                if aliases.contains(&alias) {
                    continue;
                }
                if !used.insert(alias.clone()) {
                    let _ = output.send(
                        format!("WARNING: service alias `{alias}` is already used by another service of this job; skipped\n")
                            .into_bytes(),
                    );
                    continue;
                }
                aliases.push(alias);
            }
            planned.push(Planned {
                service,
                image,
                aliases,
                inspect,
            });
        }

        let all_aliases: Vec<String> = used.into_iter().collect();
        let (mut network, private) = self.network_for(&req.run_id, &all_aliases).await?;
        if private {
            network = format!("{}-net", job_env.instance);
            create_network(&self.docker, &network, &req.run_id).await?;
            job_env.private_network = Some(network.clone());
        } else {
            job_env.shared_aliases = Some((req.run_id.clone(), all_aliases));
        }

        let mut started = Vec::new();
        for (i, p) in planned.iter().enumerate() {
            let name = format!("{}-svc-{i}", job_env.instance);
            let env = service_env(&req.env, p.service);
            let _ = output.send(
                format!(
                    "Starting service {} as {} ...\n",
                    p.image,
                    if p.aliases.is_empty() {
                        name.clone()
                    } else {
                        p.aliases.join(", ")
                    }
                )
                .into_bytes(),
            );
            let mut endpoints = HashMap::new();
            endpoints.insert(
                network.clone(),
                EndpointSettings {
                    aliases: Some(p.aliases.clone()),
                    ..Default::default()
                },
            );
            let body = ContainerCreateBody {
                image: Some(p.image.clone()),
                entrypoint: p.service.entrypoint.clone(),
                cmd: p.service.command.clone(),
                env: Some(env),
                user: docker_user(p.service.docker.as_ref()),
                labels: Some(job_env.labels("service", false)),
                host_config: Some(HostConfig {
                    network_mode: Some(network.clone()),
                    ..Default::default()
                }),
                networking_config: Some(NetworkingConfig {
                    endpoints_config: Some(endpoints),
                }),
                ..Default::default()
            };
            self.docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                    body,
                )
                .await
                .map_err(|e| engine_error(&format!("creating service {}", p.image), e))?;
            job_env.services.push(name.clone());
            self.docker
                .start_container(&name, None)
                .await
                .map_err(|e| engine_error(&format!("starting service {}", p.image), e))?;
            let ports: Vec<u16> = p
                .inspect
                .config
                .as_ref()
                .and_then(|c| c.exposed_ports.clone())
                .unwrap_or_default()
                .iter()
                .filter_map(|port| {
                    let (number, proto) = port.split_once('/').unwrap_or((port, "tcp"));
                    (proto == "tcp").then(|| number.parse().ok()).flatten()
                })
                .collect();
            started.push((name, p.image.clone(), ports));
        }

        if started.iter().any(|(_, _, ports)| !ports.is_empty()) {
            let _ = output.send(
                format!(
                    "Waiting for services to be up and running (timeout {} seconds)...\n",
                    self.service_wait_timeout.as_secs()
                )
                .into_bytes(),
            );
            let waits = started.iter().map(|(name, image, ports)| {
                wait_for_service(
                    &self.docker,
                    name,
                    image,
                    &network,
                    ports,
                    self.service_wait_timeout,
                    output,
                )
            });
            futures_util::future::join_all(waits).await;
        }
        Ok(network)
    }
}

/// Service variables: the job's variables, then the service's own,
/// expanded against the job's (GetServiceVariables).
fn service_env(job_env: &[(String, String)], service: &Service) -> Vec<String> {
    let own: Vec<(String, String)> = service
        .variables
        .iter()
        .map(|v| {
            let value = if v.expand {
                expand_runner_env(&v.value, job_env)
            } else {
                v.value.clone()
            };
            (v.name.clone(), value)
        })
        .collect();
    env_list(
        job_env
            .iter()
            .chain(own.iter())
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

/// `name[:tag]` of a reference (a digest stays in the name).
fn split_tag(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], Some(&image[i + 1..])),
        _ => (image, Some("latest")),
    }
}

async fn create_network(docker: &Docker, name: &str, run_id: &str) -> Result<(), ExecError> {
    let mut labels = HashMap::new();
    labels.insert(LABEL_RUN.to_string(), run_id.to_string());
    let request = NetworkCreateRequest {
        name: name.to_string(),
        labels: Some(labels),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, &[409]) => Ok(()),
        Err(e) => Err(engine_error(&format!("creating network {name}"), e)),
    }
}

/// Waits until every port of a service accepts TCP connections; warns (as
/// GitLab does) when it does not within `timeout` or the service exits.
async fn wait_for_service(
    docker: &Docker,
    container: &str,
    image: &str,
    network: &str,
    ports: &[u16],
    timeout: Duration,
    output: &LogSink,
) {
    let deadline = Instant::now() + timeout;
    let problem = 'wait: loop {
        let inspect = match docker.inspect_container(container, None).await {
            Ok(i) => i,
            Err(e) => break 'wait Some(format!("cannot inspect the service container: {e}")),
        };
        let state = inspect.state.as_ref();
        if !state.and_then(|s| s.running).unwrap_or(false) {
            let code = state.and_then(|s| s.exit_code).unwrap_or(-1);
            break 'wait Some(format!("the service container exited with code {code}"));
        }
        let ip = inspect
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|n| n.get(network))
            .and_then(|e| e.ip_address.clone())
            .filter(|ip| !ip.is_empty());
        if let Some(ip) = ip {
            let mut all = true;
            for port in ports {
                let connect = tokio::net::TcpStream::connect((ip.as_str(), *port));
                if !matches!(
                    tokio::time::timeout(Duration::from_secs(1), connect).await,
                    Ok(Ok(_))
                ) {
                    all = false;
                    break;
                }
            }
            if all {
                break 'wait None;
            }
        }
        if Instant::now() >= deadline {
            break 'wait Some(format!(
                "service ports {ports:?} did not accept connections within {} s",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if let Some(problem) = problem {
        let logs = container_logs(docker, container, 20).await;
        let _ = output.send(
            format!(
                "*** WARNING: Service {image} probably didn't start properly.\n\n\
                 Health check error:\n{problem}\n\nService container logs:\n{logs}\n*********\n"
            )
            .into_bytes(),
        );
    }
}

async fn container_logs(docker: &Docker, container: &str, tail: usize) -> String {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&tail.to_string())
        .build();
    let mut stream = docker.logs(container, Some(options));
    let mut text = Vec::new();
    while let Some(Ok(item)) = stream.next().await {
        text.extend_from_slice(&item.into_bytes());
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// Containers matching all label filters: (id, running, labels).
async fn list_containers(
    docker: &Docker,
    label_filters: Vec<String>,
) -> Result<Vec<(String, bool, HashMap<String, String>)>, ExecError> {
    let mut filters = HashMap::new();
    filters.insert("label".to_string(), label_filters);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let list = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| engine_error("listing containers", e))?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let running = c
                .state
                .as_ref()
                .is_some_and(|s| s.to_string().eq_ignore_ascii_case("running"));
            Some((c.id?, running, c.labels.unwrap_or_default()))
        })
        .collect())
}

/// Force-removes a container (the engine kills it with SIGKILL first; a
/// separate kill call would cost another ~100 ms). Ok(false) if it was gone.
async fn force_remove(docker: &Docker, container: &str) -> Result<bool, ExecError> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(container, Some(options)).await {
        Ok(()) => Ok(true),
        Err(e) if is_status(&e, &[404]) => Ok(false),
        Err(e) => Err(engine_error(&format!("removing container {container}"), e)),
    }
}

/// SIGKILL, ignoring "not running" and "no such container".
async fn kill(docker: &Docker, container: &str) {
    let options = KillContainerOptionsBuilder::default()
        .signal("KILL")
        .build();
    let _ = docker.kill_container(container, Some(options)).await;
}

/// Removes containers and networks with a label filter (`k=v`).
async fn remove_labelled(
    docker: &Docker,
    label: &str,
    spare_kept: bool,
) -> Result<usize, ExecError> {
    let mut removed = 0;
    for (id, running, labels) in list_containers(docker, vec![label.to_string()]).await? {
        let kept = labels.get(LABEL_KEEP).is_some_and(|v| v == "true");
        if spare_kept && kept && !running {
            continue;
        }
        if force_remove(docker, &id).await? {
            removed += 1;
        }
    }
    let mut filters = HashMap::new();
    filters.insert("label".to_string(), vec![label.to_string()]);
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| engine_error("listing networks", e))?;
    for network in networks {
        let Some(name) = network.name else { continue };
        match docker.remove_network(&name).await {
            Ok(()) => removed += 1,
            Err(e) if is_status(&e, &[404]) => {}
            Err(e) => return Err(engine_error(&format!("removing network {name}"), e)),
        }
    }
    Ok(removed)
}

#[async_trait]
impl Executor for DockerExecutor {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn prepare(
        &self,
        request: PrepareRequest,
        output: LogSink,
        cancel: CancellationToken,
    ) -> Result<Box<dyn JobEnvironment>, ExecError> {
        if let Ok(mut runs) = self.shared.runs.lock() {
            runs.insert(request.run_id.clone());
        }
        let seq = self.shared.seq.fetch_add(1, Ordering::Relaxed);
        let instance = format!(
            "gantry-{}-{}-{seq}",
            names::slug(&request.run_id, 24),
            names::slug(&request.job.name, 40)
        );
        let mut job_env = DockerJob {
            docker: self.docker.clone(),
            shared: self.shared.clone(),
            host: self.host.clone(),
            instance,
            run_id: request.run_id.clone(),
            job: request.job.clone(),
            ci_project_dir: request.ci_project_dir.clone(),
            project_dir: request.project_dir.clone(),
            image: String::new(),
            build: None,
            services: Vec::new(),
            private_network: None,
            shared_aliases: None,
            keep_for_shell: self.keep_for_shell,
            owner: None,
            needs_start: false,
        };
        let result = tokio::select! {
            r = self.prepare_into(&mut job_env, &request, &output) => r,
            _ = cancel.cancelled() => Err(ExecError::Setup("cancelled while preparing the job's containers".into())),
        };
        match result {
            Ok(()) => Ok(Box::new(job_env)),
            Err(e) => {
                // Nothing of a failed prepare may stay behind, kept or not.
                job_env.keep_for_shell = false;
                let _ = job_env.remove_everything().await;
                Err(e)
            }
        }
    }

    async fn shutdown(&self) -> Result<(), ExecError> {
        let runs: Vec<String> = match self.shared.runs.lock() {
            Ok(mut runs) => runs.drain().collect(),
            Err(_) => Vec::new(),
        };
        let mut first_error = None;
        for run in runs {
            if let Err(e) = self.remove_leftovers(&run).await {
                first_error.get_or_insert(e);
            }
            self.shared.networks.lock().await.remove(&run);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// One job's containers.
struct DockerJob {
    docker: Docker,
    shared: Arc<Shared>,
    host: String,
    /// Unique name prefix of this job attempt's containers.
    instance: String,
    run_id: String,
    job: Job,
    ci_project_dir: String,
    /// Canonical host project directory (after prepare).
    project_dir: PathBuf,
    image: String,
    /// Name of the build container, once created.
    build: Option<String>,
    /// Names of service containers created.
    services: Vec<String>,
    /// A network of this job only (alias clash on the run network).
    private_network: Option<String>,
    /// (run id, aliases) registered on the run network.
    shared_aliases: Option<(String, Vec<String>)>,
    keep_for_shell: bool,
    /// Owner of the project directory before the job ran.
    owner: Option<Owner>,
    /// The build container was killed (timeout, cancel) and must be started
    /// again before the next script.
    needs_start: bool,
}

impl DockerJob {
    fn labels(&self, role: &str, keep: bool) -> HashMap<String, String> {
        let mut labels = HashMap::new();
        labels.insert(LABEL_RUN.to_string(), self.run_id.clone());
        labels.insert(LABEL_JOB.to_string(), self.job.name.clone());
        labels.insert(LABEL_ROLE.to_string(), role.to_string());
        labels.insert(LABEL_INSTANCE.to_string(), self.instance.clone());
        labels.insert(LABEL_PROJECT.to_string(), self.ci_project_dir.clone());
        if keep {
            labels.insert(LABEL_KEEP.to_string(), "true".to_string());
        }
        labels
    }

    /// The error for a build container that is not running: usually an
    /// entrypoint that does not run the command it is given.
    async fn not_running_error(&self, container: &str, cause: String) -> ExecError {
        let state = self
            .docker
            .inspect_container(container, None)
            .await
            .ok()
            .and_then(|i| i.state);
        let running = state.as_ref().and_then(|s| s.running).unwrap_or(true);
        if running {
            return ExecError::Setup(format!("container engine: running the script: {cause}"));
        }
        let code = state.and_then(|s| s.exit_code).unwrap_or(-1);
        let logs = container_logs(&self.docker, container, 20).await;
        ExecError::Setup(format!(
            "the job container of image `{}` is not running: it exited with code {code}. \
             If the image's entrypoint does not run the command it is given, override it \
             with `image: {{name: \"{}\", entrypoint: [\"\"]}}`. Container output:\n{}",
            self.image,
            self.image,
            logs.trim_end()
        ))
    }

    async fn start_if_needed(&mut self, container: &str) -> Result<(), ExecError> {
        if self.needs_start {
            match self.docker.start_container(container, None).await {
                Ok(()) => {}
                // 304: already running.
                Err(e) if is_status(&e, &[304]) => {}
                Err(e) => return Err(engine_error("starting the job container again", e)),
            }
            self.needs_start = false;
        }
        Ok(())
    }

    /// Gives files the job wrote back to the project directory's owner.
    async fn give_files_back(&mut self, output: &LogSink) {
        let Some(owner) = self.owner else { return };
        let root = self.project_dir.clone();
        if nix::unistd::geteuid().is_root() {
            let result =
                tokio::task::spawn_blocking(move || ownership::give_back(&root, owner)).await;
            if let Ok(Err(e)) = result {
                let _ = output.send(
                    format!(
                        "WARNING: could not give the job's files back to uid {}: {e}\n",
                        owner.uid
                    )
                    .into_bytes(),
                );
            }
            return;
        }
        let foreign =
            tokio::task::spawn_blocking(move || ownership::has_foreign_entries(&root, owner))
                .await
                .unwrap_or(false);
        if !foreign {
            return;
        }
        // Not root on the host: only root in the container can chown.
        let Some(container) = self.build.clone() else {
            return;
        };
        if self.start_if_needed(&container).await.is_err() {
            return;
        }
        let cmd = vec![
            "chown".to_string(),
            "-R".to_string(),
            format!("{}:{}", owner.uid, owner.gid),
            self.ci_project_dir.clone(),
        ];
        let status = self.exec_collect(&container, cmd).await;
        if status != Some(0) {
            let _ = output.send(
                format!(
                    "WARNING: could not give the job's files back to uid {} (chown in the container failed)\n",
                    owner.uid
                )
                .into_bytes(),
            );
        }
    }

    /// Runs a command as root in the container, discarding its output.
    async fn exec_collect(&self, container: &str, cmd: Vec<String>) -> Option<i64> {
        let exec = self
            .docker
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(cmd),
                    user: Some("0".to_string()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .ok()?;
        if let Ok(StartExecResults::Attached { mut output, .. }) =
            self.docker.start_exec(&exec.id, None).await
        {
            while output.next().await.is_some() {}
        }
        exec_exit_code(&self.docker, &exec.id).await
    }

    /// Removes everything this job created; kept build containers are
    /// stopped and detached instead. Safe to call more than once.
    async fn remove_everything(&mut self) -> Result<(), ExecError> {
        let mut first_error: Option<ExecError> = None;
        if let Some(build) = self.build.take() {
            if self.keep_for_shell {
                kill(&self.docker, &build).await;
                let network = self.private_network.clone().or_else(|| {
                    self.shared_aliases
                        .as_ref()
                        .map(|_| format!("gantry-{}", names::slug(&self.run_id, 40)))
                });
                if let Some(network) = network {
                    let _ = self
                        .docker
                        .disconnect_network(
                            &network,
                            NetworkDisconnectRequest {
                                container: build.clone(),
                                force: Some(true),
                            },
                        )
                        .await;
                }
            } else if let Err(e) = force_remove(&self.docker, &build).await {
                first_error.get_or_insert(e);
            }
        }
        for service in std::mem::take(&mut self.services) {
            if let Err(e) = force_remove(&self.docker, &service).await {
                first_error.get_or_insert(e);
            }
        }
        // Anything created but not yet recorded (a prepare cut short).
        let label = format!("{LABEL_INSTANCE}={}", self.instance);
        match list_containers(&self.docker, vec![label]).await {
            Ok(found) => {
                for (id, _, labels) in found {
                    if self.keep_for_shell && labels.get(LABEL_ROLE).is_some_and(|r| r == "build") {
                        continue;
                    }
                    if let Err(e) = force_remove(&self.docker, &id).await {
                        first_error.get_or_insert(e);
                    }
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
        if let Some(network) = self.private_network.take() {
            match self.docker.remove_network(&network).await {
                Ok(()) => {}
                Err(e) if is_status(&e, &[404]) => {}
                Err(e) => {
                    first_error
                        .get_or_insert(engine_error(&format!("removing network {network}"), e));
                }
            }
        }
        if let Some((run_id, aliases)) = self.shared_aliases.take() {
            let mut networks = self.shared.networks.lock().await;
            if let Some(net) = networks.get_mut(&run_id) {
                for alias in aliases {
                    if let Some(count) = net.aliases.get_mut(&alias) {
                        *count -= 1;
                        if *count == 0 {
                            net.aliases.remove(&alias);
                        }
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The engine's command-line client, pointed at the same engine.
    fn cli(&self) -> String {
        let on_path = |bin: &str| {
            std::env::var_os("PATH").is_some_and(|paths| {
                std::env::split_paths(&paths).any(|dir| dir.join(bin).is_file())
            })
        };
        if self.host.contains("podman") && on_path("podman") || !on_path("docker") {
            format!("podman --url {}", shell_quote(&self.host))
        } else {
            format!("docker -H {}", shell_quote(&self.host))
        }
    }
}

/// The exit code of a finished exec; waits briefly for the engine to
/// record it after the output stream closed.
async fn exec_exit_code(docker: &Docker, exec_id: &str) -> Option<i64> {
    for _ in 0..200 {
        match docker.inspect_exec(exec_id).await {
            Ok(info) if info.running != Some(true) => return info.exit_code,
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) => return None,
        }
    }
    None
}

#[async_trait]
impl JobEnvironment for DockerJob {
    async fn run_script(
        &mut self,
        request: ScriptRequest,
        output: LogSink,
        cancel: CancellationToken,
    ) -> Result<ScriptOutcome, ExecError> {
        let container = self
            .build
            .clone()
            .ok_or_else(|| ExecError::Setup("the job container was not created".into()))?;
        let started_at = Instant::now();
        self.start_if_needed(&container).await?;

        let mut cmd = vec![
            "sh".to_string(),
            "-c".to_string(),
            BASH_DETECT.to_string(),
            "sh".to_string(),
        ];
        if request.script.len() <= MAX_SCRIPT_ARG {
            cmd.push("-c".to_string());
            cmd.push(request.script.clone());
        } else {
            let path = self.upload_script(&container, &request.script).await?;
            cmd.push(path);
        }
        let env = env_list(request.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let exec = match self
            .docker
            .create_exec(
                &container,
                CreateExecOptions {
                    cmd: Some(cmd),
                    env: Some(env),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    working_dir: Some(self.ci_project_dir.clone()),
                    ..Default::default()
                },
            )
            .await
        {
            Ok(exec) => exec,
            Err(e) => return Err(self.not_running_error(&container, e.to_string()).await),
        };
        let mut stream = match self.docker.start_exec(&exec.id, None).await {
            Ok(StartExecResults::Attached { output, .. }) => output,
            Ok(StartExecResults::Detached) => {
                return Err(ExecError::Setup("the engine detached the script".into()));
            }
            Err(e) => return Err(self.not_running_error(&container, e.to_string()).await),
        };

        let sleep_until = async {
            match request.timeout {
                Some(t) => tokio::time::sleep_until(started_at + t).await,
                None => std::future::pending().await,
            }
        };
        let pump = async {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(LogOutput::StdOut { message })
                    | Ok(LogOutput::StdErr { message })
                    | Ok(LogOutput::Console { message }) => {
                        let _ = output.send(message.to_vec());
                    }
                    Ok(LogOutput::StdIn { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        };
        let interrupted = tokio::select! {
            r = pump => {
                r.map_err(|e| engine_error("reading the script's output", e))?;
                None
            }
            _ = sleep_until => Some(ScriptOutcome::TimedOut),
            _ = cancel.cancelled() => Some(ScriptOutcome::Cancelled),
        };
        if let Some(outcome) = interrupted {
            // The whole container, so nothing the script started survives.
            kill(&self.docker, &container).await;
            self.needs_start = true;
            if outcome == ScriptOutcome::Cancelled {
                // Ctrl-C leaves nothing behind, not even a container kept
                // for `gantry shell`.
                self.keep_for_shell = false;
            }
            self.give_files_back(&output).await;
            return Ok(outcome);
        }
        let code = exec_exit_code(&self.docker, &exec.id).await;
        self.give_files_back(&output).await;
        match code {
            Some(code) => Ok(ScriptOutcome::Exited(i32::try_from(code).unwrap_or(1))),
            None => Err(self
                .not_running_error(&container, "the script's exit code is unknown".into())
                .await),
        }
    }

    fn shell_command(&self) -> Option<Vec<String>> {
        if !self.keep_for_shell {
            return None;
        }
        let container = self.build.as_ref()?;
        let cli = self.cli();
        Some(vec![
            "sh".to_string(),
            "-c".to_string(),
            format!(
                "{cli} start {c} >/dev/null && exec {cli} exec -it -w {dir} {c} sh -c {detect}",
                c = shell_quote(container),
                dir = shell_quote(&self.ci_project_dir),
                detect = shell_quote(BASH_DETECT),
            ),
        ])
    }

    async fn cleanup(mut self: Box<Self>) -> Result<(), ExecError> {
        self.remove_everything().await
    }
}

impl DockerJob {
    /// Copies a script too long for an argument into the container, at its
    /// root: the one directory every image has (not all have /tmp).
    async fn upload_script(&self, container: &str, script: &str) -> Result<String, ExecError> {
        let name = format!(
            ".gantry-script-{}.sh",
            self.shared.seq.fetch_add(1, Ordering::Relaxed)
        );
        let mut archive = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(script.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive.append_data(&mut header, &name, script.as_bytes())?;
        let bytes = archive.into_inner()?;
        let options = bollard::query_parameters::UploadToContainerOptionsBuilder::default()
            .path("/")
            .build();
        self.docker
            .upload_to_container(container, Some(options), bollard::body_full(bytes.into()))
            .await
            .map_err(|e| engine_error("copying the script into the container", e))?;
        Ok(format!("/{name}"))
    }
}

/// The project directory, and beside it the job's `.tmp` directory where the
/// engine writes file-type variables (the job sees `$CI_PROJECT_DIR.tmp/NAME`,
/// as on gitlab-runner).
fn job_binds(project_dir: &std::path::Path, ci_project_dir: &str) -> Vec<String> {
    let mut binds = vec![format!("{}:{}", project_dir.display(), ci_project_dir)];
    let tmp = std::path::PathBuf::from(format!("{}.tmp", project_dir.display()));
    if tmp.is_dir() {
        binds.push(format!("{}:{}.tmp", tmp.display(), ci_project_dir));
    }
    binds
}
