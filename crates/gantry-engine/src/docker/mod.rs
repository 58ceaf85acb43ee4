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
//! - Output: stdout and stderr arrive as separate chunks; each stream has
//!   its own line buffer and only whole lines reach the log
//!   ([`crate::executor::LineBuffers`]), so masking sees every secret whole.
//! - `cleanup` force-removes the service containers, always, and the build
//!   container unless it is kept for `gantry shell` ([`KeepContainers`]: by
//!   default only when the job's script failed; one kept container per job
//!   and repository, the older one is removed).
//!
//! Networks: services share one network per pipeline run (`gantry-<run>`,
//! created on first use, removed by `shutdown`). Two jobs running at the same
//! time with a service alias in common would see each other's service
//! through DNS, so such a job gets a network of its own instead.
//!
//! Every container and network carries the labels of [`labels`]: the run
//! id, a hash of the repository's path and the owning process. Objects are
//! selected by those labels only. The first job of a run in a repository
//! removes what dead runs of that repository left (after `kill -9`, a
//! second Ctrl-C or a crash); [`DockerExecutor::clean_repository`] removes
//! everything of a repository (`gantry clean`).

pub mod discover;
pub mod labels;
mod names;
mod ownership;

pub use labels::{LABEL_INSTANCE, LABEL_JOB, LABEL_OWNER, LABEL_REPO, LABEL_ROLE, LABEL_RUN};
pub use names::{default_service_aliases, expand_runner_env, user_aliases};

use crate::executor::{
    ExecError, Executor, JobEnvironment, JobStage, LineBuffers, LogSink, PrepareRequest,
    STATE_DIR_IN_CONTAINER, ScriptOutcome, ScriptRequest,
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

/// Label: the job's `CI_PROJECT_DIR` (informative; it does not tell
/// repositories apart, [`LABEL_REPO`] does).
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

/// When a job's build container is kept (stopped) after the job, for
/// `gantry shell JOB`, which restarts it and opens a shell in it with the
/// job's variables, files and any packages the job installed. Service
/// networks are detached from a kept container (the services are gone). A
/// cancelled job (Ctrl-C) keeps nothing. At most one container is kept per
/// job and repository: keeping one, or running the job again, removes the
/// one kept before (unless its run is still going).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeepContainers {
    #[default]
    Never,
    /// When the job's script failed or timed out (`gantry run`'s default).
    OnFailure,
    /// Always (`gantry run --keep`).
    Always,
}

/// A pull policy for images whose job does not set `pull_policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "always",
            PullPolicy::IfNotPresent => "if-not-present",
            PullPolicy::Never => "never",
        }
    }
}

/// How the docker executor runs containers (`gantry run`'s docker options).
#[derive(Clone, Debug)]
pub struct DockerOptions {
    pub keep: KeepContainers,
    /// Run build and service containers privileged (e.g. `docker:dind`).
    pub privileged: bool,
    /// Extra mounts of build and service containers, as `docker run -v`
    /// takes them: `HOST_PATH:CONTAINER_PATH[:ro|rw]` or
    /// `VOLUME:CONTAINER_PATH[:ro|rw]`. Checked by [`DockerOptions::check`].
    pub volumes: Vec<String>,
    /// Existing networks the build and service containers also join.
    pub networks: Vec<String>,
    /// The pull policy of images whose job sets none (default:
    /// `if-not-present`).
    pub pull_policy: Option<PullPolicy>,
    /// The image of jobs without `image:`.
    pub default_image: Option<String>,
    /// How long to wait for a service's ports (GitLab: 30 s).
    pub service_wait_timeout: Duration,
}

impl Default for DockerOptions {
    fn default() -> Self {
        DockerOptions {
            keep: KeepContainers::Never,
            privileged: false,
            volumes: Vec::new(),
            networks: Vec::new(),
            pull_policy: None,
            default_image: None,
            service_wait_timeout: DEFAULT_SERVICE_WAIT,
        }
    }
}

/// A docker option that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    #[error(
        "--volume `{0}`: expected HOST_PATH:CONTAINER_PATH[:ro|rw] or VOLUME:CONTAINER_PATH[:ro|rw], with an absolute CONTAINER_PATH"
    )]
    Volume(String),
    #[error("--network `{0}`: a network name cannot be empty or contain spaces")]
    Network(String),
    #[error("--default-image: the image name is empty")]
    DefaultImage,
}

impl DockerOptions {
    /// Refuses options the engine would reject only when a job starts.
    pub fn check(&self) -> Result<(), OptionError> {
        for volume in &self.volumes {
            let parts: Vec<&str> = volume.split(':').collect();
            let ok = match parts.as_slice() {
                [source, target] => !source.is_empty() && target.starts_with('/'),
                [source, target, mode] => {
                    !source.is_empty()
                        && target.starts_with('/')
                        && mode.split(',').all(|m| {
                            matches!(m, "ro" | "rw" | "z" | "Z" | "shared" | "slave" | "private")
                        })
                }
                _ => false,
            };
            if !ok {
                return Err(OptionError::Volume(volume.clone()));
            }
        }
        for network in &self.networks {
            if network.trim().is_empty() || network.contains(char::is_whitespace) {
                return Err(OptionError::Network(network.clone()));
            }
        }
        if self
            .default_image
            .as_deref()
            .is_some_and(|i| i.trim().is_empty())
        {
            return Err(OptionError::DefaultImage);
        }
        Ok(())
    }
}

/// Runs jobs in containers. One value serves any number of pipeline runs.
pub struct DockerExecutor {
    docker: Docker,
    /// The engine address, e.g. `unix:///run/podman/podman.sock`.
    host: String,
    pub options: DockerOptions,
    shared: Arc<Shared>,
}

/// State shared by the executor and its job environments.
struct Shared {
    /// Per run id: the run's service network and the aliases on it.
    networks: tokio::sync::Mutex<HashMap<String, RunNetwork>>,
    /// Run ids seen, for `shutdown`.
    runs: std::sync::Mutex<HashSet<String>>,
    /// Build containers kept for `gantry shell`, spared by `shutdown`.
    kept: std::sync::Mutex<HashSet<String>>,
    /// Repositories whose dead runs were already swept by this process.
    swept: tokio::sync::Mutex<HashSet<String>>,
    /// This process as an owner label.
    owner: String,
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

async fn connect_host(host: &str) -> Result<Docker, String> {
    let docker = discover::client_for(host).map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(3), docker.ping()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("no answer within 3 s".into()),
    }
    // Podman speaks an older API version than bollard's default.
    docker.negotiate_version().await.map_err(|e| e.to_string())
}

impl DockerExecutor {
    /// Connects to the engine [`discover::discover_engine`] finds (the one
    /// order every command uses).
    pub async fn connect() -> Result<DockerExecutor, ExecError> {
        let host = tokio::task::spawn_blocking(discover::discover_engine)
            .await
            .map_err(|e| ExecError::Setup(format!("looking for the container engine: {e}")))?
            .map_err(|e| ExecError::Setup(e.to_string()))?;
        Self::connect_to(&host).await
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
            options: DockerOptions::default(),
            shared: Arc::new(Shared {
                networks: tokio::sync::Mutex::new(HashMap::new()),
                runs: std::sync::Mutex::new(HashSet::new()),
                kept: std::sync::Mutex::new(HashSet::new()),
                swept: tokio::sync::Mutex::new(HashSet::new()),
                owner: labels::this_process(),
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
    /// build containers this process kept for `gantry shell`. Returns how
    /// many objects were removed.
    pub async fn remove_leftovers(&self, run_id: &str) -> Result<usize, ExecError> {
        let kept = self.kept_ids();
        let mut removed = 0;
        let filter = format!("{LABEL_RUN}={run_id}");
        for found in list_containers(&self.docker, vec![filter.clone()]).await? {
            if kept.contains(&found.id) {
                continue;
            }
            if force_remove(&self.docker, &found.id).await? {
                removed += 1;
            }
        }
        removed += remove_networks(&self.docker, vec![filter], |_| true).await?;
        Ok(removed)
    }

    /// Removes what dead runs of a repository left: their service
    /// containers, unfinished build containers and networks. Stopped build
    /// containers stay: they are kept for `gantry shell` (until the job runs
    /// again or `gantry clean`). A run is dead when the process named by its
    /// owner label is gone. Returns how many objects were removed.
    pub async fn remove_dead_runs(&self, repository_key: &str) -> Result<usize, ExecError> {
        let filter = format!("{LABEL_REPO}={repository_key}");
        let mut removed = 0;
        for found in list_containers(&self.docker, vec![filter.clone()]).await? {
            if !labels::owner_dead(&found.labels) || found.is_kept_build() {
                continue;
            }
            if force_remove(&self.docker, &found.id).await? {
                removed += 1;
            }
        }
        removed += remove_networks(&self.docker, vec![filter], labels::owner_dead).await?;
        Ok(removed)
    }

    /// `gantry clean`: removes every container and network Gantry made for a
    /// repository, kept ones included, except those of runs still going
    /// (another process's, or this one's), which are counted instead.
    pub async fn clean_repository(&self, repository_key: &str) -> Result<CleanCount, ExecError> {
        let filter = format!("{LABEL_REPO}={repository_key}");
        let mut count = CleanCount::default();
        let mine = |labels: &HashMap<String, String>| {
            labels
                .get(LABEL_OWNER)
                .is_some_and(|o| *o == self.shared.owner)
        };
        for found in list_containers(&self.docker, vec![filter.clone()]).await? {
            let live = !labels::owner_dead(&found.labels) || mine(&found.labels);
            // A kept container outlives its run: its owner is gone.
            if live && !found.is_kept_build() {
                count.left_running += 1;
                if let Some(run) = found.labels.get(LABEL_RUN) {
                    count.live_runs.insert(run.clone());
                }
                continue;
            }
            if force_remove(&self.docker, &found.id).await? {
                count.containers += 1;
            }
        }
        count.networks = remove_networks(&self.docker, vec![filter], |labels| {
            labels::owner_dead(labels) && !mine(labels)
        })
        .await?;
        Ok(count)
    }

    /// Removes build containers kept for `gantry shell` (stopped ones),
    /// optionally only those of one repository and job.
    pub async fn remove_kept(
        &self,
        repository_key: Option<&str>,
        job: Option<&str>,
    ) -> Result<usize, ExecError> {
        let mut filters = vec![format!("{LABEL_ROLE}=build")];
        if let Some(r) = repository_key {
            filters.push(format!("{LABEL_REPO}={r}"));
        }
        if let Some(j) = job {
            filters.push(format!("{LABEL_JOB}={j}"));
        }
        let mut removed = 0;
        for found in list_containers(&self.docker, filters).await? {
            if found.is_kept_build() && force_remove(&self.docker, &found.id).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn kept_ids(&self) -> HashSet<String> {
        self.shared
            .kept
            .lock()
            .map(|k| k.clone())
            .unwrap_or_default()
    }

    /// Once per repository and process: removes what dead runs left.
    async fn sweep_once(&self, repository_key: &str, output: &LogSink) {
        let mut swept = self.shared.swept.lock().await;
        if !swept.insert(repository_key.to_string()) {
            return;
        }
        match self.remove_dead_runs(repository_key).await {
            Ok(0) => {}
            Ok(n) => {
                let _ = output.send(
                    format!("Removed {n} container(s)/network(s) left by runs that died\n")
                        .into_bytes(),
                );
            }
            Err(e) => {
                let _ = output.send(
                    format!("WARNING: could not remove what dead runs left: {e}\n").into_bytes(),
                );
            }
        }
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
        labels: HashMap<String, String>,
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
            create_network(&self.docker, &entry.name, labels).await?;
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
        let default_image =
            self.options
                .default_image
                .as_ref()
                .map(|name| gantry_config::model::Image {
                    name: name.clone(),
                    entrypoint: None,
                    pull_policy: Vec::new(),
                    docker: None,
                });
        let image = job
            .image
            .as_ref()
            .or(default_image.as_ref())
            .ok_or_else(|| {
                ExecError::Setup(format!(
                    "job `{}` has no `image:`; the docker executor needs one (or --default-image)",
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
            .ensure_image(&image_name, &self.pull_policy(&image.pull_policy), output)
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
        // The project's state (a deploy's history) outlives the container.
        let state_bind = match &req.state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let dir = std::fs::canonicalize(dir).map_err(|e| {
                    ExecError::Setup(format!("state directory {}: {e}", dir.display()))
                })?;
                job_env.state_dir = Some(dir.clone());
                Some(format!("{}:{STATE_DIR_IN_CONTAINER}", dir.display()))
            }
            None => None,
        };

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
            labels: Some(job_env.labels("build")),
            host_config: Some(HostConfig {
                binds: Some(
                    std::iter::once(format!("{}:{}", project_dir.display(), req.ci_project_dir))
                        .chain(state_bind)
                        .chain(self.options.volumes.iter().cloned())
                        .collect(),
                ),
                network_mode: network.clone(),
                privileged: Some(self.options.privileged),
                ..Default::default()
            }),
            networking_config: network.as_ref().map(|_| NetworkingConfig {
                endpoints_config: Some(endpoints),
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .map_err(|e| {
                engine_error(&format!("creating the job container from {image_name}"), e)
            })?;
        // By id: labels select containers by id, never by name.
        job_env.build = Some(created.id);
        self.upload_tmp_dir(&name, &project_dir, &req.ci_project_dir)
            .await?;
        self.connect_extra_networks(&name).await?;
        self.docker
            .start_container(&name, None)
            .await
            .map_err(|e| engine_error(&format!("starting the job container {name}"), e))?;
        Ok(())
    }

    /// The pull policy of an image: its own, else `--pull-policy`.
    fn pull_policy(&self, own: &[String]) -> Vec<String> {
        match (own.is_empty(), self.options.pull_policy) {
            (true, Some(policy)) => vec![policy.as_str().to_string()],
            _ => own.to_vec(),
        }
    }

    /// Joins a created container to the `--network` networks.
    async fn connect_extra_networks(&self, container: &str) -> Result<(), ExecError> {
        for network in &self.options.networks {
            let request = bollard::models::NetworkConnectRequest {
                container: container.to_string(),
                ..Default::default()
            };
            self.docker
                .connect_network(network, request)
                .await
                .map_err(|e| engine_error(&format!("joining network {network}"), e))?;
        }
        Ok(())
    }

    /// Copies the job's `.tmp` directory (file-type variables) into the
    /// container at `CI_PROJECT_DIR.tmp`. A copy, not a bind mount: the
    /// engine deletes the host directory at cleanup, and a kept container
    /// must still start for `gantry shell`.
    async fn upload_tmp_dir(
        &self,
        container: &str,
        project_dir: &std::path::Path,
        ci_project_dir: &str,
    ) -> Result<(), ExecError> {
        let host_tmp = PathBuf::from(format!("{}.tmp", project_dir.display()));
        let archive_root = format!("{}.tmp", ci_project_dir.trim_start_matches('/'));
        let bytes = tokio::task::spawn_blocking(move || tmp_archive(&host_tmp, &archive_root))
            .await
            .map_err(|e| ExecError::Setup(format!("packing the job's files: {e}")))??;
        let options = bollard::query_parameters::UploadToContainerOptionsBuilder::default()
            .path("/")
            .build();
        self.docker
            .upload_to_container(container, Some(options), bollard::body_full(bytes.into()))
            .await
            .map_err(|e| engine_error("copying the job's file variables into the container", e))
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
                .ensure_image(&image, &self.pull_policy(&service.pull_policy), output)
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
        let (mut network, private) = self
            .network_for(&req.run_id, job_env.network_labels(), &all_aliases)
            .await?;
        if private {
            network = format!("{}-net", job_env.instance);
            create_network(&self.docker, &network, job_env.network_labels()).await?;
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
                labels: Some(job_env.labels("service")),
                host_config: Some(HostConfig {
                    network_mode: Some(network.clone()),
                    binds: Some(self.options.volumes.clone()),
                    privileged: Some(self.options.privileged),
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
            self.connect_extra_networks(&name).await?;
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
                    self.options.service_wait_timeout.as_secs()
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
                    self.options.service_wait_timeout,
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

async fn create_network(
    docker: &Docker,
    name: &str,
    labels: HashMap<String, String>,
) -> Result<(), ExecError> {
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

/// [`DockerExecutor::clean_repository`] on the discovered engine, for
/// callers without an async runtime (`gantry clean`).
pub fn clean_repository_blocking(repository_key: &str) -> Result<CleanCount, ExecError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let executor = DockerExecutor::connect().await?;
        executor.clean_repository(repository_key).await
    })
}

/// A container found by its labels.
#[derive(Debug)]
struct Found {
    id: String,
    names: Vec<String>,
    labels: HashMap<String, String>,
}

impl Found {
    /// A build container kept for `gantry shell`: renamed with
    /// [`KEPT_SUFFIX`] when kept (labels cannot change after creation; the
    /// name only marks the state, selection is by labels). It may be
    /// running while a `gantry shell` session uses it.
    fn is_kept_build(&self) -> bool {
        self.labels.get(LABEL_ROLE).is_some_and(|r| r == "build")
            && self.names.iter().any(|n| n.ends_with(KEPT_SUFFIX))
    }
}

/// The name suffix of a build container kept for `gantry shell`.
const KEPT_SUFFIX: &str = "-kept";

/// What [`DockerExecutor::clean_repository`] did.
#[derive(Debug, Default)]
pub struct CleanCount {
    pub containers: usize,
    pub networks: usize,
    /// Containers of runs still going, left alone.
    pub left_running: usize,
    /// Those runs' ids.
    pub live_runs: std::collections::BTreeSet<String>,
}

/// Containers matching all label filters.
async fn list_containers(
    docker: &Docker,
    label_filters: Vec<String>,
) -> Result<Vec<Found>, ExecError> {
    let mut filters = HashMap::new();
    filters.insert("label".to_string(), label_filters);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    // Podman reports a container it is stopping as `stopped`, a state the
    // Docker API (and bollard) does not know: the whole listing then fails
    // to parse. The state lasts a moment, so list again.
    let mut attempts = 0;
    let list = loop {
        match docker.list_containers(Some(options.clone())).await {
            Ok(list) => break list,
            Err(e) if attempts < 100 && e.to_string().contains("unknown variant `stopped`") => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(engine_error("listing containers", e)),
        }
    };
    Ok(list
        .into_iter()
        .filter_map(|c| {
            Some(Found {
                id: c.id?,
                names: c.names.unwrap_or_default(),
                labels: c.labels.unwrap_or_default(),
            })
        })
        .collect())
}

/// Removes the networks matching all label filters whose labels pass
/// `select`; a network still in use is left (it goes with its last
/// container's run). Returns how many were removed.
async fn remove_networks(
    docker: &Docker,
    label_filters: Vec<String>,
    select: impl Fn(&HashMap<String, String>) -> bool,
) -> Result<usize, ExecError> {
    let mut filters = HashMap::new();
    filters.insert("label".to_string(), label_filters);
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| engine_error("listing networks", e))?;
    let mut removed = 0;
    for network in networks {
        if !select(&network.labels.clone().unwrap_or_default()) {
            continue;
        }
        let Some(name) = network.name else { continue };
        match docker.remove_network(&name).await {
            Ok(()) => removed += 1,
            // Gone already, or still used by a container.
            Err(e) if is_status(&e, &[404, 409]) || e.to_string().contains(" in use") => {}
            Err(e) => return Err(engine_error(&format!("removing network {name}"), e)),
        }
    }
    Ok(removed)
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
        self.sweep_once(&request.repository_key, &output).await;
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
            repository_key: request.repository_key.clone(),
            keep: self.options.keep,
            failed: false,
            cancelled: false,
            owner: None,
            state_dir: None,
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
                job_env.keep = KeepContainers::Never;
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
    /// Id of the build container, once created.
    build: Option<String>,
    /// Names of service containers created.
    services: Vec<String>,
    /// A network of this job only (alias clash on the run network).
    private_network: Option<String>,
    /// (run id, aliases) registered on the run network.
    shared_aliases: Option<(String, Vec<String>)>,
    repository_key: String,
    keep: KeepContainers,
    /// The step script failed, timed out or could not run.
    failed: bool,
    /// The job was cancelled (Ctrl-C): nothing is kept.
    cancelled: bool,
    /// Owner of the project directory before the job ran.
    owner: Option<Owner>,
    /// The project's state directory on the host, mounted at
    /// [`STATE_DIR_IN_CONTAINER`].
    state_dir: Option<PathBuf>,
    /// The build container was killed (timeout, cancel) and must be started
    /// again before the next script.
    needs_start: bool,
}

impl DockerJob {
    /// Labels of a network this job creates.
    fn network_labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_RUN.to_string(), self.run_id.clone()),
            (LABEL_REPO.to_string(), self.repository_key.clone()),
            (LABEL_OWNER.to_string(), self.shared.owner.clone()),
        ])
    }

    /// Labels of a container of this job (`role`: build or service).
    fn labels(&self, role: &str) -> HashMap<String, String> {
        let mut labels = self.network_labels();
        labels.insert(LABEL_JOB.to_string(), self.job.name.clone());
        labels.insert(LABEL_ROLE.to_string(), role.to_string());
        labels.insert(LABEL_INSTANCE.to_string(), self.instance.clone());
        labels.insert(LABEL_PROJECT.to_string(), self.ci_project_dir.clone());
        labels
    }

    /// Whether the build container stays after the job.
    fn keeps(&self) -> bool {
        !self.cancelled
            && match self.keep {
                KeepContainers::Never => false,
                KeepContainers::OnFailure => self.failed,
                KeepContainers::Always => true,
            }
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
        self.give_back_under(
            self.project_dir.clone(),
            self.ci_project_dir.clone(),
            output,
        )
        .await;
        if let Some(state) = self.state_dir.clone() {
            self.give_back_under(state, STATE_DIR_IN_CONTAINER.to_string(), output)
                .await;
        }
    }

    /// Gives back what the job wrote under `root` (seen as `in_container`).
    async fn give_back_under(&mut self, root: PathBuf, in_container: String, output: &LogSink) {
        let Some(owner) = self.owner else { return };
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
            in_container,
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
        let keep = self.keeps();
        if let Err(e) = self.remove_older_kept().await {
            first_error.get_or_insert(e);
        }
        if let Some(build) = self.build.take() {
            if keep {
                if let Ok(mut kept) = self.shared.kept.lock() {
                    kept.insert(build.clone());
                }
                kill(&self.docker, &build).await;
                let renamed = self
                    .docker
                    .rename_container(
                        &build,
                        bollard::query_parameters::RenameContainerOptionsBuilder::default()
                            .name(&format!("{}{KEPT_SUFFIX}", self.instance))
                            .build(),
                    )
                    .await;
                if let Err(e) = renamed {
                    first_error.get_or_insert(engine_error("marking the kept container", e));
                }
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
                for found in found {
                    if keep && found.labels.get(LABEL_ROLE).is_some_and(|r| r == "build") {
                        continue;
                    }
                    if let Err(e) = force_remove(&self.docker, &found.id).await {
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

    /// Removes the containers kept before for this job and repository (one
    /// per job): those of dead runs and of this process, never those of a
    /// run still going in another process.
    async fn remove_older_kept(&self) -> Result<(), ExecError> {
        let filters = vec![
            format!("{LABEL_REPO}={}", self.repository_key),
            format!("{LABEL_JOB}={}", self.job.name),
            format!("{LABEL_ROLE}=build"),
        ];
        for found in list_containers(&self.docker, filters).await? {
            if Some(&found.id) == self.build.as_ref()
                || found.labels.get(LABEL_INSTANCE) == Some(&self.instance)
                || !found.is_kept_build()
            {
                continue;
            }
            let mine = found.labels.get(LABEL_OWNER) == Some(&self.shared.owner);
            if mine || labels::owner_dead(&found.labels) {
                force_remove(&self.docker, &found.id).await?;
                if let Ok(mut kept) = self.shared.kept.lock() {
                    kept.remove(&found.id);
                }
            }
        }
        Ok(())
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
        // One line buffer per stream: whole lines only reach the log.
        let mut lines = LineBuffers::new();
        let pump = async {
            while let Some(item) = stream.next().await {
                let ready = match item {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        lines.push_pieces(0, &message)
                    }
                    Ok(LogOutput::StdErr { message }) => lines.push_pieces(1, &message),
                    Ok(LogOutput::StdIn { .. }) => continue,
                    Err(e) => return Err(e),
                };
                // Waits while the log is behind: backpressure on the engine.
                let _ = output.send_pieces(ready).await;
            }
            Ok(())
        };
        let interrupted = tokio::select! {
            r = pump => {
                let _ = output.send_pieces(lines.finish_pieces()).await;
                if let Err(e) = r {
                    self.failed |= request.stage == JobStage::StepScript;
                    return Err(engine_error("reading the script's output", e));
                }
                None
            }
            _ = sleep_until => Some(ScriptOutcome::TimedOut),
            _ = cancel.cancelled() => Some(ScriptOutcome::Cancelled),
        };
        if interrupted.is_some() {
            let _ = output.send_pieces(lines.finish_pieces()).await;
        }
        if let Some(outcome) = interrupted {
            // The whole container, so nothing the script started survives.
            kill(&self.docker, &container).await;
            self.needs_start = true;
            if outcome == ScriptOutcome::Cancelled {
                // Ctrl-C leaves nothing behind, not even a container kept
                // for `gantry shell`.
                self.cancelled = true;
            } else if request.stage == JobStage::StepScript {
                self.failed = true;
            }
            self.give_files_back(&output).await;
            return Ok(outcome);
        }
        let code = exec_exit_code(&self.docker, &exec.id).await;
        self.give_files_back(&output).await;
        let step = request.stage == JobStage::StepScript;
        match code {
            Some(code) => {
                self.failed |= step && code != 0;
                Ok(ScriptOutcome::Exited(i32::try_from(code).unwrap_or(1)))
            }
            None => {
                self.failed |= step;
                Err(self
                    .not_running_error(&container, "the script's exit code is unknown".into())
                    .await)
            }
        }
    }

    /// The command of `gantry shell` when the container will be kept. It
    /// says so plainly when the container or the job's files are gone, and
    /// asks for a terminal only when it has one.
    fn shell_command(&self) -> Option<Vec<String>> {
        if !self.keeps() {
            return None;
        }
        let container = self.build.as_ref()?;
        let cli = self.cli();
        Some(vec![
            "sh".to_string(),
            "-c".to_string(),
            format!(
                "if ! {cli} container inspect {c} >/dev/null 2>&1; then \
                   echo 'gantry: the container of this job is gone (one is kept per job: the last failed run, or --keep); run the job again' >&2; exit 1; fi; \
                 if [ ! -d {host_dir} ]; then \
                   echo 'gantry: the files of this run were removed; run the job again' >&2; exit 1; fi; \
                 {cli} start {c} >/dev/null || exit 1; \
                 if [ -t 0 ]; then t=-t; else t=; fi; \
                 {cli} exec -i $t -w {dir} {c} sh -c {detect}; rc=$?; \
                 {cli} kill {c} >/dev/null 2>&1; exit $rc",
                c = shell_quote(container),
                host_dir = shell_quote(&self.project_dir.to_string_lossy()),
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

/// A tar of the job's `.tmp` directory under `root` (the directory itself,
/// world-writable as a temporary directory, even when the host has none).
fn tmp_archive(host_tmp: &std::path::Path, root: &str) -> Result<Vec<u8>, ExecError> {
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(0o1777);
    archive.append_data(&mut header, format!("{root}/"), std::io::empty())?;
    if let Ok(entries) = std::fs::read_dir(host_tmp) {
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_file() {
                continue;
            }
            let content = std::fs::read(&path)?;
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            // The job's user may not be root; the container is the job's own.
            header.set_mode(0o644);
            let name = format!("{root}/{}", entry.file_name().to_string_lossy());
            archive.append_data(&mut header, name, content.as_slice())?;
        }
    }
    Ok(archive.into_inner()?)
}
