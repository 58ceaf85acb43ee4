//! The deploy commands: `gantry deploy ecs|cloudformation|docker`, `gantry rollback`,
//! `gantry deployments`, `gantry registry login ecr`, `gantry ecs run`.
//!
//! Thin: arguments are parsed here (options match ecs-deploy where it has them) and handed to
//! `gantry_deploy`. Each entry point builds its own async runtime and returns an exit code:
//! 0 success, 1 a failed deploy / rollback / task, 2 a usage, credential or I/O error.

use std::path::PathBuf;
use std::time::Duration;

use gantry_deploy::aws::AwsOptions;
use gantry_deploy::cloudformation::StackOptions;
use gantry_deploy::ecs::taskdef::{HealthCheckSpec, TaskChanges};
use gantry_deploy::ecs::{EcsDeployOptions, EcsDeployer, RunTaskOptions, SdkObserver};
use gantry_deploy::history::{HistoryStore, format_table};
use gantry_deploy::local::{LocalDeployOptions, LocalDeployer};
use gantry_deploy::machine::MachineOptions;
use gantry_deploy::sdk;
use gantry_deploy::{DeployError, Log};

use crate::exit::Exit;

const EXIT_OK: i32 = Exit::Success.code();
const EXIT_FAILED: i32 = Exit::Failed.code();
const EXIT_USAGE: i32 = Exit::Usage.code();
/// A deploy that a signal ended (rolled back, or left with `--no-rollback`).
const EXIT_INTERRUPTED: i32 = Exit::Interrupted.code();

/// Credentials and endpoint, shared by the AWS commands.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AwsArgs {
    /// AWS region (default: the SDK chain, e.g. AWS_REGION).
    #[arg(long)]
    pub region: Option<String>,
    /// Named profile from ~/.aws/config.
    #[arg(long)]
    pub profile: Option<String>,
    /// Assume this IAM role before any call (e.g. a deploy role in another account).
    #[arg(long, value_name = "ARN", value_parser = parse_role_arn)]
    pub assume_role: Option<String>,
    /// Session name for --assume-role.
    #[arg(long, requires = "assume_role")]
    pub role_session_name: Option<String>,
    /// External id for --assume-role.
    #[arg(long, requires = "assume_role")]
    pub external_id: Option<String>,
    /// Endpoint override (default: AWS_ENDPOINT_URL when set).
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Static access key id (default: the SDK chain).
    #[arg(long, requires = "secret_access_key")]
    pub access_key_id: Option<String>,
    /// Static secret access key.
    #[arg(long, requires = "access_key_id")]
    pub secret_access_key: Option<String>,
}

impl AwsArgs {
    fn options(&self) -> AwsOptions {
        AwsOptions {
            profile: self.profile.clone(),
            region: self.region.clone(),
            assume_role: self.assume_role.clone(),
            role_session_name: self.role_session_name.clone(),
            external_id: self.external_id.clone(),
            endpoint_url: self.endpoint_url.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
        }
    }
}

/// Where the deployment history lives, and how deploys of one target take turns.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct HistoryArgs {
    /// Deployment history: file://DIR, s3://BUCKET/PREFIX or https://GANTRY-SERVER (token: $GANTRY_HISTORY_TOKEN, else $CI_JOB_TOKEN); default: $GANTRY_STATE_DIR, else the repository's .gantry/.
    #[arg(long, value_name = "URL")]
    pub history: Option<String>,
}

/// What every deploy, rollback and scale command takes: the history, the state machine's
/// options and AWS credentials (for the target, or for an s3:// history).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CommonArgs {
    #[command(flatten)]
    pub history: HistoryArgs,
    #[command(flatten)]
    pub machine: MachineArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
}

impl CommonArgs {
    async fn history_store(&self) -> Result<Box<dyn HistoryStore>, DeployError> {
        open_history(&self.history, &self.aws).await
    }

    async fn aws_config(&self) -> Result<sdk::aws_config::SdkConfig, DeployError> {
        gantry_deploy::aws::load_config(&self.aws.options()).await
    }

    /// The AWS configuration and the history, as every AWS deploy or rollback needs them.
    async fn connect(
        &self,
    ) -> Result<(sdk::aws_config::SdkConfig, Box<dyn HistoryStore>), DeployError> {
        Ok((self.aws_config().await?, self.history_store().await?))
    }
}

/// The health probe after a rollout, shared by every deploy and rollback.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct HealthArgs {
    /// After the rollout, probe this URL until it answers 2xx (docker: on a published port; default there: the image's HEALTHCHECK, else staying up for --grace).
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    pub health_url: Option<String>,
    /// How long --health-url may take (default: 60s; docker: 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub health_timeout: Option<Duration>,
}

impl HealthArgs {
    /// ECS and CloudFormation wait up to a minute for the probe.
    fn timeout(&self) -> Duration {
        self.health_timeout.unwrap_or(Duration::from_secs(60))
    }

    /// A local container answers sooner.
    fn docker_timeout(&self) -> Duration {
        self.health_timeout.unwrap_or(Duration::from_secs(30))
    }
}

/// Options of the deploy state machine shared by every target.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MachineArgs {
    /// Wait up to this long (e.g. 10m) while another deploy of the same target holds its lease; default: fail at once naming the holder.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait_lock: Option<Duration>,
    /// POST a JSON event (started, succeeded, rolled_back, failed) to this webhook; repeatable.
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    pub notify: Vec<String>,
}

impl MachineArgs {
    fn options(&self, rollback: bool, budget: Duration) -> MachineOptions {
        MachineOptions {
            rollback,
            wait_lock: self.wait_lock.unwrap_or(Duration::ZERO),
            // If we die without releasing it, the lease lasts as long as a deploy may.
            lease_ttl: budget + Duration::from_secs(300),
            notify: self.notify.clone(),
        }
    }
}

/// The longest duration any flag accepts: a week. Keeps `Instant + Duration` from overflowing.
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// `90`, `90s`, `1.5m`, `2h`, `500ms` -> a duration from 0 to a week. Never panics.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let factor = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" => 60.0,
        "h" | "hr" | "hrs" => 3600.0,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use ms, s, m or h)")),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 90, 90s, 5m, 1h)"))?;
    let secs = value * factor;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    if secs > MAX_DURATION.as_secs_f64() {
        return Err(format!("{s:?} is longer than a week"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `--timeout`: a duration, or -1 for "do not wait".
pub fn parse_timeout(s: &str) -> Result<Timeout, String> {
    if s.trim() == "-1" {
        return Ok(Timeout(None));
    }
    parse_duration(s).map(|d| Timeout(Some(d)))
}

/// A `--timeout` value: None = do not wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeout(pub Option<Duration>);

/// A poll interval: 50 ms to a minute.
fn parse_poll(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(50) || d > Duration::from_secs(60) {
        return Err(format!("{s:?}: must be between 50ms and 60s"));
    }
    Ok(d)
}

fn parse_url(s: &str) -> Result<String, String> {
    gantry_deploy::health::validate_url(s, "URL")
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn parse_role_arn(s: &str) -> Result<String, String> {
    gantry_deploy::aws::validate_role_arn(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// Environment variable names: a letter or `_`, then letters, digits, `_`.
fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_env_name(flag: &str, name: &str) -> Result<(), DeployError> {
    if valid_env_name(name) {
        Ok(())
    } else {
        Err(DeployError::Usage(format!(
            "{flag}: {name:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
        )))
    }
}

/// `gantry deploy`.
#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    #[command(subcommand)]
    pub target: DeployTarget,
}

#[derive(clap::Subcommand, Debug)]
pub enum DeployTarget {
    /// Deploy ECS services: new task-definition revision, UpdateService, wait, health check, roll back on failure.
    Ecs(Box<EcsDeployArgs>),
    /// Create or update a CloudFormation stack, wait tailing events, print outputs.
    #[command(name = "cloudformation", alias = "cfn")]
    CloudFormation(Box<CfnDeployArgs>),
    /// Deploy a container on the local engine (Docker or Podman) with health check and rollback.
    Docker(Box<DockerDeployArgs>),
}

/// `gantry deploy ecs CLUSTER SERVICE [SERVICE...]`.
#[derive(clap::Args, Debug)]
pub struct EcsDeployArgs {
    pub cluster: String,
    #[arg(required = true)]
    pub services: Vec<String>,
    /// New tag for every container image.
    #[arg(short = 't', long)]
    pub tag: Option<String>,
    /// Set a container's image.
    #[arg(short = 'i', long, num_args = 2, value_names = ["CONTAINER", "IMAGE"], action = clap::ArgAction::Append)]
    pub image: Vec<String>,
    /// Set an environment variable.
    #[arg(short = 'e', long, num_args = 3, value_names = ["CONTAINER", "NAME", "VALUE"], action = clap::ArgAction::Append)]
    pub env: Vec<String>,
    /// Load environment variables from a dotenv file.
    #[arg(long, num_args = 2, value_names = ["CONTAINER", "FILE"], action = clap::ArgAction::Append)]
    pub env_file: Vec<String>,
    /// Set a secret (SSM parameter or Secrets Manager ARN).
    #[arg(short = 's', long, num_args = 3, value_names = ["CONTAINER", "NAME", "PARAMETER"], action = clap::ArgAction::Append)]
    pub secret: Vec<String>,
    /// Drop environment variables not given, in the containers that got some.
    #[arg(long)]
    pub exclusive_env: bool,
    /// Drop secrets not given, in the containers that got some.
    #[arg(long)]
    pub exclusive_secrets: bool,
    /// Set a container's command (shell words, or a JSON array).
    #[arg(short = 'c', long, num_args = 2, value_names = ["CONTAINER", "COMMAND"], action = clap::ArgAction::Append)]
    pub command: Vec<String>,
    /// Container cpu units.
    #[arg(long, num_args = 2, value_names = ["CONTAINER", "UNITS"], action = clap::ArgAction::Append)]
    pub cpu: Vec<String>,
    /// Container hard memory limit (MiB).
    #[arg(long, num_args = 2, value_names = ["CONTAINER", "MIB"], action = clap::ArgAction::Append)]
    pub memory: Vec<String>,
    /// Container soft memory limit (MiB).
    #[arg(long, num_args = 2, value_names = ["CONTAINER", "MIB"], action = clap::ArgAction::Append)]
    pub memory_reservation: Vec<String>,
    /// Task-level cpu (Fargate), e.g. 256 or "1 vCPU".
    #[arg(long)]
    pub task_cpu: Option<String>,
    /// Task-level memory (Fargate), e.g. 512.
    #[arg(long)]
    pub task_memory: Option<String>,
    /// Port mapping; replaces the container's mappings. SPEC is [HOST:]CONTAINER[/udp].
    #[arg(short = 'p', long, num_args = 2, value_names = ["CONTAINER", "SPEC"], action = clap::ArgAction::Append)]
    pub port: Vec<String>,
    /// Container health check (CMD-SHELL).
    #[arg(long, num_args = 6, value_names = ["CONTAINER", "COMMAND", "INTERVAL", "TIMEOUT", "RETRIES", "START_PERIOD"], action = clap::ArgAction::Append)]
    pub health_check: Vec<String>,
    /// Log configuration option; repeat for more options of one driver.
    #[arg(long, num_args = 4, value_names = ["CONTAINER", "DRIVER", "OPTION", "VALUE"], action = clap::ArgAction::Append)]
    pub log: Vec<String>,
    /// Docker label.
    #[arg(long, num_args = 3, value_names = ["CONTAINER", "KEY", "VALUE"], action = clap::ArgAction::Append)]
    pub docker_label: Vec<String>,
    /// Task role ARN.
    #[arg(short = 'r', long, value_name = "ARN", value_parser = parse_role_arn)]
    pub role: Option<String>,
    /// Task execution role ARN.
    #[arg(long, value_name = "ARN", value_parser = parse_role_arn)]
    pub execution_role: Option<String>,
    /// Deploy this revision (FAMILY:REV or ARN) instead of copying the current one.
    #[arg(long, value_name = "FAMILY:REV")]
    pub task: Option<String>,
    /// How long to wait for the rollout (90, 90s, 5m); -1 = do not wait (not known good then).
    #[arg(long, default_value = "300", allow_hyphen_values = true, value_parser = parse_timeout)]
    pub timeout: Timeout,
    /// Time between rollout polls (50ms to 60s).
    #[arg(long, default_value = "2s", value_parser = parse_poll)]
    pub poll_interval: Duration,
    /// How long to wait for a rollback's rollout.
    #[arg(long, default_value = "600", value_parser = parse_duration)]
    pub rollback_timeout: Duration,
    /// Print the task-definition changes field by field.
    #[arg(long)]
    pub diff: bool,
    /// Deregister older revisions of the family, keeping the newest N (the running, previous and known-good ones are always kept).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub keep_revisions: Option<u16>,
    /// Deregister the revisions older than the previous one (ecs-deploy's default; never the running, previous or a known-good one).
    #[arg(long)]
    pub deregister: bool,
    /// Set the desired count.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..=5000))]
    pub scale: Option<i32>,
    #[command(flatten)]
    pub health: HealthArgs,
    /// Do not roll back on failure (or on SIGINT/SIGTERM, recorded as interrupted).
    #[arg(long)]
    pub no_rollback: bool,
    /// Do not fail on "unable" service events.
    #[arg(long)]
    pub ignore_warnings: bool,
    /// Set a container's environment files from S3 (ARN or s3://BUCKET/KEY); repeatable.
    #[arg(long, num_args = 2, value_names = ["CONTAINER", "S3_OBJECT"], action = clap::ArgAction::Append)]
    pub s3_env_file: Vec<String>,
    /// Load secrets from a file of NAME=PARAMETER_ARN lines.
    #[arg(long, num_args = 2, value_names = ["CONTAINER", "FILE"], action = clap::ArgAction::Append)]
    pub secrets_env_file: Vec<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `gantry deploy cloudformation STACK`.
#[derive(clap::Args, Debug)]
pub struct CfnDeployArgs {
    pub stack: String,
    /// Template file (default: the stack's current template).
    #[arg(long, value_name = "FILE")]
    pub template: Option<PathBuf>,
    /// Parameter value; parameters not given keep their previous value.
    #[arg(long = "parameter", value_name = "KEY=VALUE")]
    pub parameters: Vec<String>,
    /// Stack tag.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Capabilities to acknowledge (default: IAM, NAMED_IAM, AUTO_EXPAND).
    #[arg(long = "capability", value_name = "CAPABILITY")]
    pub capabilities: Vec<String>,
    /// Skip the change-set preview.
    #[arg(long)]
    pub no_preview: bool,
    /// Only show the change-set preview.
    #[arg(long)]
    pub preview_only: bool,
    /// Write the stack outputs as KEY=value lines (GitLab dotenv report).
    #[arg(long, value_name = "FILE")]
    pub outputs_dotenv: Option<PathBuf>,
    /// How long to wait for the stack.
    #[arg(long, default_value = "1800", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub health: HealthArgs,
    /// Do not redeploy the last known-good template on failure (CloudFormation still rolls back a failed update by itself); SIGINT/SIGTERM is recorded as interrupted.
    #[arg(long)]
    pub no_rollback: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `gantry deploy docker NAME --image IMAGE`.
#[derive(clap::Args, Debug)]
pub struct DockerDeployArgs {
    /// Deploy name: the live container is NAME, earlier revisions NAME-rN.
    pub name: String,
    #[arg(long)]
    pub image: String,
    /// Published port, [IP:]HOST:CONTAINER[/udp].
    #[arg(short = 'p', long = "port", value_name = "SPEC")]
    pub ports: Vec<String>,
    /// Environment variable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Dotenv file of environment variables.
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Command (shell words or a JSON array) instead of the image's.
    #[arg(long)]
    pub command: Option<String>,
    /// Network to attach to.
    #[arg(long)]
    pub network: Option<String>,
    #[command(flatten)]
    pub health: HealthArgs,
    /// How long a revision without health check must stay up.
    #[arg(long, default_value = "2", value_parser = parse_duration)]
    pub grace: Duration,
    /// Stopped revisions kept for rollback.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub keep: u16,
    /// Do not roll back on failure (or on SIGINT/SIGTERM, recorded as interrupted); a new revision that fails before the cut-over never takes traffic either way.
    #[arg(long)]
    pub no_rollback: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `gantry rollback`.
#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    #[command(subcommand)]
    pub target: RollbackTarget,
}

#[derive(clap::Subcommand, Debug)]
pub enum RollbackTarget {
    /// Return an ECS service to a revision (default: the last known-good one).
    Ecs(Box<EcsRollbackArgs>),
    /// Return a local deploy to a revision (default: the last known-good one).
    Docker(Box<DockerRollbackArgs>),
    /// Redeploy a stack's last known-good template and parameters.
    #[command(name = "cloudformation", alias = "cfn")]
    CloudFormation(Box<CfnRollbackArgs>),
}

#[derive(clap::Args, Debug)]
pub struct CfnRollbackArgs {
    pub stack: String,
    /// A recorded revision (its sha256 digest or a prefix of it, see `gantry deployments`).
    #[arg(long, value_name = "REV")]
    pub to: Option<String>,
    /// How long to wait for the stack.
    #[arg(long, default_value = "1800", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub health: HealthArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(clap::Args, Debug)]
pub struct EcsRollbackArgs {
    pub cluster: String,
    pub service: String,
    /// REV, FAMILY:REV or ARN.
    #[arg(long, value_name = "REV")]
    pub to: Option<String>,
    /// How long to wait for the rollout; -1 = do not wait (then not known good).
    #[arg(long, default_value = "600", allow_hyphen_values = true, value_parser = parse_timeout)]
    pub timeout: Timeout,
    /// Time between rollout polls (50ms to 60s).
    #[arg(long, default_value = "2s", value_parser = parse_poll)]
    pub poll_interval: Duration,
    #[command(flatten)]
    pub health: HealthArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(clap::Args, Debug)]
pub struct DockerRollbackArgs {
    pub name: String,
    /// Revision number (as in NAME-rN).
    #[arg(long, value_name = "REV", value_parser = parse_revision)]
    pub to: Option<u32>,
    #[command(flatten)]
    pub health: HealthArgs,
    /// How long a revision without health check must stay up.
    #[arg(long, default_value = "2", value_parser = parse_duration)]
    pub grace: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

fn parse_revision(s: &str) -> Result<u32, String> {
    s.trim_start_matches('r')
        .parse()
        .map_err(|_| format!("{s:?} is not a revision number"))
}

/// `gantry deployments [TARGET]`.
#[derive(clap::Args, Debug)]
pub struct DeploymentsArgs {
    /// Filter: `ecs`, `ecs:CLUSTER`, `ecs:CLUSTER/SERVICE`, a service/container/stack name, ...
    pub target: Option<String>,
    /// Only the newest N.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Credentials for an s3:// history.
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// `gantry registry`.
#[derive(clap::Args, Debug)]
pub struct RegistryArgs {
    #[command(subcommand)]
    pub command: RegistryCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum RegistryCommand {
    /// Log in to a registry.
    Login(Box<RegistryLoginArgs>),
}

#[derive(clap::Args, Debug)]
pub struct RegistryLoginArgs {
    /// Registry kind; only `ecr`.
    #[arg(value_parser = ["ecr"])]
    pub kind: String,
    /// Print the password on stdout (for `docker login --password-stdin`) instead of storing it.
    #[arg(long)]
    pub print: bool,
    /// Registry (account) ids; default: the caller's account.
    #[arg(long = "registry-id", value_name = "ID")]
    pub registry_ids: Vec<String>,
    /// Auth file to update (default: REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json or ~/.docker/config.json).
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// `gantry ecs`.
#[derive(clap::Args, Debug)]
pub struct EcsArgs {
    #[command(subcommand)]
    pub command: EcsCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum EcsCommand {
    /// Run a one-off task, wait until it stops, exit with its container's exit code.
    Run(Box<EcsRunArgs>),
    /// Set a service's desired count (ecs-deploy's `scale`), waited for and recorded like a deploy.
    Scale(Box<EcsScaleArgs>),
    /// Show what a deploy with these options would change, without changing anything.
    Diff(Box<EcsDeployArgs>),
}

#[derive(clap::Args, Debug)]
pub struct EcsScaleArgs {
    pub cluster: String,
    pub service: String,
    /// The desired count.
    #[arg(value_parser = clap::value_parser!(i32).range(0..=5000))]
    pub count: i32,
    /// How long to wait; -1 = do not wait.
    #[arg(long, default_value = "300", allow_hyphen_values = true, value_parser = parse_timeout)]
    pub timeout: Timeout,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(clap::Args, Debug)]
pub struct EcsRunArgs {
    pub cluster: String,
    /// FAMILY, FAMILY:REV or ARN.
    pub task: String,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=10))]
    pub count: i32,
    /// EC2, FARGATE or EXTERNAL.
    #[arg(long)]
    pub launch_type: Option<String>,
    #[arg(long = "subnet", value_name = "ID")]
    pub subnets: Vec<String>,
    #[arg(long = "security-group", value_name = "ID")]
    pub security_groups: Vec<String>,
    #[arg(long)]
    pub public_ip: bool,
    /// Override a container's command.
    #[arg(short = 'c', long, num_args = 2, value_names = ["CONTAINER", "COMMAND"], action = clap::ArgAction::Append)]
    pub command: Vec<String>,
    /// Override an environment variable.
    #[arg(short = 'e', long, num_args = 3, value_names = ["CONTAINER", "NAME", "VALUE"], action = clap::ArgAction::Append)]
    pub env: Vec<String>,
    /// How long to wait for the task to stop.
    #[arg(long, default_value = "3600", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub aws: AwsArgs,
}

fn pairs(v: &[String]) -> Vec<(String, String)> {
    v.chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect()
}

fn triples(v: &[String]) -> Vec<(String, String, String)> {
    v.chunks(3)
        .filter(|c| c.len() == 3)
        .map(|c| (c[0].clone(), c[1].clone(), c[2].clone()))
        .collect()
}

fn int_pairs(v: &[String], flag: &str) -> Result<Vec<(String, i32)>, DeployError> {
    pairs(v)
        .into_iter()
        .map(|(c, n)| {
            n.parse()
                .map(|n| (c.clone(), n))
                .map_err(|_| DeployError::Usage(format!("--{flag} {c} {n}: not a number")))
        })
        .collect()
}

fn key_values(v: &[String], flag: &str) -> Result<Vec<(String, String)>, DeployError> {
    v.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| DeployError::Usage(format!("--{flag} {kv:?}: expected KEY=VALUE")))
        })
        .collect()
}

fn task_changes(a: &EcsDeployArgs) -> Result<TaskChanges, DeployError> {
    let mut ch = TaskChanges {
        tag: a.tag.clone(),
        images: pairs(&a.image),
        env: triples(&a.env),
        secrets: triples(&a.secret),
        exclusive_env: a.exclusive_env,
        exclusive_secrets: a.exclusive_secrets,
        commands: pairs(&a.command),
        cpu: int_pairs(&a.cpu, "cpu")?,
        memory: int_pairs(&a.memory, "memory")?,
        memory_reservation: int_pairs(&a.memory_reservation, "memory-reservation")?,
        task_cpu: a.task_cpu.clone(),
        task_memory: a.task_memory.clone(),
        ports: pairs(&a.port),
        docker_labels: triples(&a.docker_label),
        task_role: a.role.clone(),
        execution_role: a.execution_role.clone(),
        ..Default::default()
    };
    for (container, file) in pairs(&a.env_file) {
        ch.add_env_file(&container, std::path::Path::new(&file))?;
    }
    for (container, file) in pairs(&a.secrets_env_file) {
        ch.add_secrets_file(&container, std::path::Path::new(&file))?;
    }
    for (container, object) in pairs(&a.s3_env_file) {
        ch.s3_env_files.push((
            container,
            gantry_deploy::ecs::taskdef::s3_object_arn(&object)?,
        ));
    }
    for (_, name, _) in &ch.env {
        check_env_name("--env", name)?;
    }
    for (_, name, _) in &ch.secrets {
        check_env_name("--secret", name)?;
    }
    for c in a.health_check.chunks(6).filter(|c| c.len() == 6) {
        let num = |i: usize| {
            c[i].parse::<i32>().map_err(|_| {
                DeployError::Usage(format!(
                    "--health-check {}: {:?} is not a number",
                    c[0], c[i]
                ))
            })
        };
        ch.health_checks.push((
            c[0].clone(),
            HealthCheckSpec {
                command: c[1].clone(),
                interval: num(2)?,
                timeout: num(3)?,
                retries: num(4)?,
                start_period: num(5)?,
            },
        ));
    }
    for c in a.log.chunks(4).filter(|c| c.len() == 4) {
        ch.log_configs
            .push((c[0].clone(), c[1].clone(), c[2].clone(), c[3].clone()));
    }
    Ok(ch)
}

fn exit_for(e: &DeployError) -> i32 {
    match e {
        DeployError::Interrupted(_) => EXIT_INTERRUPTED,
        DeployError::Rollout(_) | DeployError::Health(_) => EXIT_FAILED,
        _ => EXIT_USAGE,
    }
}

fn report(e: &DeployError) -> i32 {
    eprintln!("error: {e}");
    exit_for(e)
}

/// Prints a machine report; 0 ok, 130 ended by SIGINT/SIGTERM, 1 something
/// was changed and failed, 2 nothing was changed.
fn print_report(r: &gantry_deploy::machine::Report) -> i32 {
    if r.ok() {
        eprintln!("ok: {}", r.message());
        EXIT_OK
    } else {
        eprintln!("FAILED: {}", r.message());
        if gantry_deploy::interrupt::received().is_some() {
            EXIT_INTERRUPTED
        } else if r.changed_anything() {
            EXIT_FAILED
        } else {
            EXIT_USAGE
        }
    }
}

fn run<F: std::future::Future<Output = i32>>(fut: F) -> i32 {
    match gantry_deploy::runtime() {
        Ok(rt) => rt.block_on(async {
            gantry_deploy::interrupt::install();
            fut.await
        }),
        Err(e) => report(&e),
    }
}

/// Opens the history named by `--history` / `GANTRY_HISTORY`, else the project's default.
async fn open_history(
    h: &HistoryArgs,
    aws: &AwsArgs,
) -> Result<Box<dyn HistoryStore>, DeployError> {
    let from_env = std::env::var("GANTRY_HISTORY")
        .ok()
        .filter(|v| !v.is_empty());
    let url = match h.history.clone().filter(|u| !u.is_empty()).or(from_env) {
        Some(u) => u,
        None => gantry_deploy::history::default_url()?,
    };
    gantry_deploy::history::open(&url, &aws.options()).await
}

/// `gantry deploy`: returns the exit code.
pub fn deploy(a: DeployArgs) -> i32 {
    run(async move {
        match a.target {
            DeployTarget::Ecs(args) => deploy_ecs(*args).await,
            DeployTarget::CloudFormation(args) => deploy_cfn(*args).await,
            DeployTarget::Docker(args) => deploy_docker(*args).await,
        }
    })
}

fn ecs_options(a: &EcsDeployArgs) -> Result<EcsDeployOptions, DeployError> {
    let changes = task_changes(a)?;
    let services: Vec<&str> = a.services.iter().map(String::as_str).collect();
    let mut opts = EcsDeployOptions::new(&a.cluster, &services);
    opts.changes = changes;
    opts.task = a.task.clone();
    opts.timeout = a.timeout.0;
    opts.poll_interval = a.poll_interval;
    opts.rollback_timeout = a.rollback_timeout;
    opts.show_diff = a.diff;
    opts.keep_revisions = a
        .keep_revisions
        .map(usize::from)
        .or(a.deregister.then_some(2));
    opts.scale = a.scale;
    opts.health_url = a.health.health_url.clone();
    opts.health_timeout = a.health.timeout();
    opts.ignore_warnings = a.ignore_warnings;
    let budget = a.timeout.0.unwrap_or_default() + a.rollback_timeout + opts.health_timeout * 2;
    opts.machine = a.common.machine.options(!a.no_rollback, budget);
    Ok(opts)
}

async fn deploy_ecs(a: EcsDeployArgs) -> i32 {
    let opts = match ecs_options(&a) {
        Ok(o) => o,
        Err(e) => return report(&e),
    };
    let (cfg, history) = match a.common.connect().await {
        Ok(c) => c,
        Err(e) => return report(&e),
    };
    run_ecs_deploy(&cfg, &opts, history.as_ref()).await
}

async fn run_ecs_deploy(
    cfg: &sdk::aws_config::SdkConfig,
    opts: &EcsDeployOptions,
    history: &dyn HistoryStore,
) -> i32 {
    let client = sdk::ecs::Client::new(cfg);
    let deployer = EcsDeployer::new(
        client.clone(),
        SdkObserver::new(client),
        history,
        Log::stderr(),
    );
    let outcomes = deployer.deploy(opts).await;
    let multi = outcomes.len() > 1;
    let mut code = EXIT_OK;
    for o in &outcomes {
        if multi {
            eprintln!("== {}", o.service);
        }
        code = code.max(print_report(&o.report));
    }
    code
}

async fn deploy_cfn(a: CfnDeployArgs) -> i32 {
    let params = match key_values(&a.parameters, "parameter") {
        Ok(p) => p,
        Err(e) => return report(&e),
    };
    let tags = match key_values(&a.tags, "tag") {
        Ok(t) => t,
        Err(e) => return report(&e),
    };
    let (cfg, history) = match a.common.connect().await {
        Ok(c) => c,
        Err(e) => return report(&e),
    };
    let client = sdk::cloudformation::Client::new(&cfg);
    let mut opts = StackOptions::new(&a.stack);
    opts.template_file = a.template.clone();
    opts.parameters = params;
    opts.tags = tags;
    if !a.capabilities.is_empty() {
        opts.capabilities = a.capabilities.clone();
    }
    opts.preview = !a.no_preview;
    opts.timeout = a.timeout;
    opts.outputs_dotenv = a.outputs_dotenv.clone();
    opts.health_url = a.health.health_url.clone();
    opts.health_timeout = a.health.timeout();
    opts.machine = a
        .common
        .machine
        .options(!a.no_rollback, a.timeout * 2 + opts.health_timeout * 2);
    opts.account = account_of(&cfg).await;
    let log = Log::stderr();
    if a.preview_only {
        return match gantry_deploy::cloudformation::preview_stack(
            &client,
            &opts,
            history.as_ref(),
            &log,
        )
        .await
        {
            Ok(()) => EXIT_OK,
            Err(e) => report(&e),
        };
    }
    let done =
        gantry_deploy::cloudformation::deploy_stack(&client, &opts, history.as_ref(), &log).await;
    for (k, v) in &done.outputs {
        println!("{k}={v}");
    }
    print_report(&done.report)
}

/// The caller's account (one STS call), for history keys of stacks not created yet.
async fn account_of(cfg: &sdk::aws_config::SdkConfig) -> Option<String> {
    gantry_deploy::aws::caller_account(cfg).await.ok()
}

fn docker_options(a: &DockerDeployArgs) -> Result<LocalDeployOptions, DeployError> {
    let mut o = LocalDeployOptions::new(&a.name, &a.image);
    o.spec.ports = a.ports.clone();
    o.spec.env = key_values(&a.env, "env")?;
    for f in &a.env_file {
        let text = std::fs::read_to_string(f).map_err(|e| {
            DeployError::Usage(format!("cannot read env file {}: {e}", f.display()))
        })?;
        let vars = gantry_deploy::ecs::taskdef::parse_dotenv(&text)
            .map_err(|(line, msg)| DeployError::Usage(format!("{}:{line}: {msg}", f.display())))?;
        o.spec.env.extend(vars);
    }
    for (k, _) in &o.spec.env {
        check_env_name("--env", k)?;
    }
    o.spec.command = a
        .command
        .as_deref()
        .map(gantry_deploy::ecs::taskdef::split_command)
        .transpose()?;
    o.spec.network = a.network.clone();
    o.health_url = a.health.health_url.clone();
    o.health_timeout = a.health.docker_timeout();
    o.grace = a.grace;
    o.keep = usize::from(a.keep);
    o.machine = a
        .common
        .machine
        .options(!a.no_rollback, o.health_timeout * 3 + a.grace * 2);
    Ok(o)
}

fn engine() -> Result<sdk::bollard::Docker, DeployError> {
    gantry_deploy::local::connect()
}

async fn deploy_docker(a: DockerDeployArgs) -> i32 {
    let opts = match docker_options(&a) {
        Ok(o) => o,
        Err(e) => return report(&e),
    };
    let history = match a.common.history_store().await {
        Ok(h) => h,
        Err(e) => return report(&e),
    };
    let docker = match engine() {
        Ok(d) => d,
        Err(e) => return report(&e),
    };
    let deployer = LocalDeployer::new(docker, history.as_ref(), Log::stderr());
    match deployer.deploy(&opts).await {
        Ok(o) => print_report(&o.report),
        Err(e) => report(&e),
    }
}

/// `gantry rollback`: returns the exit code.
pub fn rollback(a: RollbackArgs) -> i32 {
    run(async move {
        match a.target {
            RollbackTarget::Ecs(r) => {
                let (cfg, history) = match r.common.connect().await {
                    Ok(c) => c,
                    Err(e) => return report(&e),
                };
                let client = sdk::ecs::Client::new(&cfg);
                let deployer = EcsDeployer::new(
                    client.clone(),
                    SdkObserver::new(client),
                    history.as_ref(),
                    Log::stderr(),
                );
                let mut opts = EcsDeployOptions::new(&r.cluster, &[r.service.as_str()]);
                opts.timeout = r.timeout.0;
                opts.rollback_timeout = r.timeout.0.unwrap_or_default();
                opts.poll_interval = r.poll_interval;
                opts.health_url = r.health.health_url.clone();
                opts.health_timeout = r.health.timeout();
                opts.machine = r
                    .common
                    .machine
                    .options(true, r.timeout.0.unwrap_or_default() + opts.health_timeout);
                let rep = deployer.rollback(&opts, &r.service, r.to.as_deref()).await;
                print_report(&rep)
            }
            RollbackTarget::Docker(r) => {
                let history = match r.common.history_store().await {
                    Ok(h) => h,
                    Err(e) => return report(&e),
                };
                let docker = match engine() {
                    Ok(d) => d,
                    Err(e) => return report(&e),
                };
                let deployer = LocalDeployer::new(docker, history.as_ref(), Log::stderr());
                let mut opts = LocalDeployOptions::new(&r.name, "");
                opts.health_url = r.health.health_url.clone();
                opts.health_timeout = r.health.docker_timeout();
                opts.grace = r.grace;
                opts.machine = r
                    .common
                    .machine
                    .options(true, opts.health_timeout * 2 + r.grace);
                match deployer.rollback_report(&r.name, r.to, &opts).await {
                    Ok(rep) => print_report(&rep),
                    Err(e) => report(&e),
                }
            }
            RollbackTarget::CloudFormation(r) => {
                let (cfg, history) = match r.common.connect().await {
                    Ok(c) => c,
                    Err(e) => return report(&e),
                };
                let client = sdk::cloudformation::Client::new(&cfg);
                let mut opts = StackOptions::new(&r.stack);
                opts.timeout = r.timeout;
                opts.health_url = r.health.health_url.clone();
                opts.health_timeout = r.health.timeout();
                opts.machine = r
                    .common
                    .machine
                    .options(true, r.timeout * 2 + opts.health_timeout);
                opts.account = account_of(&cfg).await;
                let rep = gantry_deploy::cloudformation::rollback_stack(
                    &client,
                    &opts,
                    r.to.as_deref(),
                    history.as_ref(),
                    &Log::stderr(),
                )
                .await;
                print_report(&rep)
            }
        }
    })
}

/// `gantry deployments`: returns the exit code.
pub fn deployments(a: DeploymentsArgs) -> i32 {
    run(async move {
        let history = match open_history(&a.history, &a.aws).await {
            Ok(h) => h,
            Err(e) => return report(&e),
        };
        let mut records = match history.list(a.target.as_deref()).await {
            Ok(r) => r,
            Err(e) => return report(&e),
        };
        if let Some(n) = a.limit {
            let skip = records.len().saturating_sub(n as usize);
            records.drain(..skip);
        }
        for r in &mut records {
            redact_details(r);
        }
        if a.json {
            match serde_json::to_string_pretty(&records) {
                Ok(s) => println!("{s}"),
                Err(e) => return report(&DeployError::History(e.to_string())),
            }
        } else if records.is_empty() {
            eprintln!("no deployments recorded in {}", history.location());
        } else {
            print!("{}", format_table(&records));
        }
        EXIT_OK
    })
}

/// Environment values of a recorded container spec may be secrets, and so may stack
/// parameters: the history keeps what it needs to recreate a revision, the printed history
/// shows only the names.
fn redact_details(r: &mut gantry_deploy::DeploymentRecord) {
    redact_spec_env(r);
    r.details.remove("template");
    if let Some(p) = r.details.get_mut("parameters")
        && let Ok(serde_json::Value::Object(mut map)) = serde_json::from_str::<serde_json::Value>(p)
    {
        for v in map.values_mut() {
            *v = serde_json::Value::String("<redacted>".into());
        }
        *p = serde_json::Value::Object(map).to_string();
    }
}

/// Environment values of a recorded container spec may be secrets: the history keeps them to
/// recreate a revision, the printed history shows only the names.
fn redact_spec_env(r: &mut gantry_deploy::DeploymentRecord) {
    let Some(spec) = r.details.get_mut("spec") else {
        return;
    };
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(spec) else {
        return;
    };
    if let Some(env) = doc.get_mut("env").and_then(|e| e.as_array_mut()) {
        for pair in env.iter_mut() {
            if let Some(value) = pair.get_mut(1) {
                *value = serde_json::Value::String("<redacted>".into());
            }
        }
    }
    *spec = doc.to_string();
}

/// `gantry registry`: returns the exit code.
pub fn registry(a: RegistryArgs) -> i32 {
    run(async move {
        let RegistryCommand::Login(l) = a.command;
        let cfg = match gantry_deploy::aws::load_config(&l.aws.options()).await {
            Ok(c) => c,
            Err(e) => return report(&e),
        };
        let client = sdk::ecr::Client::new(&cfg);
        let creds = match gantry_deploy::ecr::ecr_credentials(&client, &l.registry_ids).await {
            Ok(c) => c,
            Err(e) => return report(&e),
        };
        if l.print {
            for c in &creds {
                eprintln!(
                    "registry {} user {} (password on stdout)",
                    c.registry, c.username
                );
                println!("{}", c.password);
            }
            return EXIT_OK;
        }
        let path = l
            .auth_file
            .clone()
            .unwrap_or_else(gantry_deploy::ecr::default_auth_file);
        for c in &creds {
            if let Err(e) = gantry_deploy::ecr::store_credentials(&path, c) {
                return report(&e);
            }
            eprintln!(
                "logged in to {} as {} (credentials in {})",
                c.registry,
                c.username,
                path.display()
            );
        }
        EXIT_OK
    })
}

/// `gantry ecs`: returns the exit code (the task's exit code for `run`).
pub fn ecs(a: EcsArgs) -> i32 {
    run(async move {
        let r = match a.command {
            EcsCommand::Run(r) => r,
            EcsCommand::Scale(s) => return ecs_scale(*s).await,
            EcsCommand::Diff(d) => return ecs_diff(*d).await,
        };
        let cfg = match gantry_deploy::aws::load_config(&r.aws.options()).await {
            Ok(c) => c,
            Err(e) => return report(&e),
        };
        let client = sdk::ecs::Client::new(&cfg);
        let opts = RunTaskOptions {
            cluster: r.cluster.clone(),
            task: r.task.clone(),
            count: r.count,
            launch_type: r.launch_type.clone(),
            subnets: r.subnets.clone(),
            security_groups: r.security_groups.clone(),
            public_ip: r.public_ip,
            commands: pairs(&r.command),
            env: triples(&r.env),
            timeout: r.timeout,
            poll_interval: Duration::from_secs(2),
        };
        match gantry_deploy::ecs::run_task(&client, &opts, &Log::stderr()).await {
            Ok(code) => code,
            Err(e) => report(&e),
        }
    })
}

async fn ecs_scale(s: EcsScaleArgs) -> i32 {
    let (cfg, history) = match s.common.connect().await {
        Ok(c) => c,
        Err(e) => return report(&e),
    };
    let mut opts = EcsDeployOptions::new(&s.cluster, &[s.service.as_str()]);
    opts.scale = Some(s.count);
    opts.timeout = s.timeout.0;
    opts.machine = s.common.machine.options(
        true,
        s.timeout.0.unwrap_or_default() + opts.rollback_timeout,
    );
    run_ecs_deploy(&cfg, &opts, history.as_ref()).await
}

async fn ecs_diff(a: EcsDeployArgs) -> i32 {
    let opts = match ecs_options(&a) {
        Ok(o) => o,
        Err(e) => return report(&e),
    };
    let cfg = match a.common.aws_config().await {
        Ok(c) => c,
        Err(e) => return report(&e),
    };
    let client = sdk::ecs::Client::new(&cfg);
    let mut code = EXIT_OK;
    for service in &a.services {
        match gantry_deploy::ecs::diff_service(&client, &opts, service).await {
            Ok((base, changes)) if changes.is_empty() => {
                println!("{service}: no changes to {base}");
            }
            Ok((base, changes)) => {
                println!("{service}: {} change(s) to {base}:", changes.len());
                println!("{}", gantry_deploy::ecs::taskdef::format_diff(&changes));
            }
            Err(e) => code = code.max(report(&e)),
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(clap::Subcommand)]
    enum Cmd {
        Deploy(DeployArgs),
        Rollback(RollbackArgs),
    }

    #[test]
    fn ecs_deploy_arguments_like_ecs_deploy() {
        let cli = Cli::try_parse_from([
            "gantry",
            "deploy",
            "ecs",
            "prod",
            "web",
            "worker",
            "--tag",
            "abc",
            "--image",
            "app",
            "img:2",
            "--env",
            "app",
            "A",
            "1",
            "-e",
            "app",
            "B",
            "2",
            "--secret",
            "app",
            "DB",
            "arn:p",
            "--timeout",
            "-1",
            "--health-check",
            "app",
            "curl -f localhost",
            "10",
            "5",
            "3",
            "0",
            "--keep-revisions",
            "3",
            "--assume-role",
            "arn:aws:iam::222222222222:role/d",
        ])
        .expect("parse");
        let Cmd::Deploy(DeployArgs {
            target: DeployTarget::Ecs(a),
        }) = cli.cmd
        else {
            panic!("ecs")
        };
        assert_eq!(a.services, ["web", "worker"]);
        assert_eq!(a.timeout, Timeout(None));
        let ch = task_changes(&a).expect("changes");
        assert_eq!(ch.images, [("app".to_string(), "img:2".to_string())]);
        assert_eq!(ch.env.len(), 2);
        assert_eq!(ch.secrets[0].2, "arn:p");
        assert_eq!(ch.health_checks[0].1.interval, 10);
        assert_eq!(
            a.common.aws.options().assume_role.as_deref(),
            Some("arn:aws:iam::222222222222:role/d")
        );
    }

    #[test]
    fn printed_history_hides_env_values() {
        let mut r = gantry_deploy::DeploymentRecord::start(
            "docker:web",
            gantry_deploy::history::RecordKind::Deploy,
            "r1",
            None,
        );
        r.details.insert(
            "spec".into(),
            r#"{"image":"x","env":[["TOKEN","s3cret"]]}"#.into(),
        );
        redact_spec_env(&mut r);
        let spec = &r.details["spec"];
        assert!(!spec.contains("s3cret") && spec.contains("TOKEN"), "{spec}");
    }

    #[test]
    fn durations_and_timeouts_parse_and_reject_nan_and_overflow() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("-1"), Ok(Timeout(None)));
        for bad in [
            "NaN",
            "nan",
            "inf",
            "-5",
            "1e400",
            "99999999999999999999",
            "5 parsecs",
            "",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_poll("0").is_err() && parse_poll("1h").is_err());
    }

    proptest::proptest! {
        /// No flag value makes the CLI panic: clap ranges and parsers reject what is bad.
        #[test]
        fn no_flag_value_panics(
            timeout in "(-?[0-9.]{0,25}[a-zA-Z]{0,3}|NaN|inf|-1)",
            poll in "[0-9.eE+-]{0,12}[a-z]{0,2}",
            scale in "-?[0-9]{0,12}",
            keep in "-?[0-9]{0,8}",
            url in "[a-z:/0-9.\\[\\]@?#% -]{0,30}",
            count in proptest::num::i64::ANY,
        ) {
            let count = count.to_string();
            let argv = [
                "gantry", "deploy", "ecs", "c", "s",
                "--timeout", &timeout, "--poll-interval", &poll, "--scale", &scale,
                "--keep-revisions", &keep, "--health-url", &url, "--wait-lock", &poll,
                "--cpu", "app", &count, "--rollback-timeout", &timeout,
            ];
            if let Ok(Cli { cmd: Cmd::Deploy(DeployArgs { target: DeployTarget::Ecs(a) }) }) =
                Cli::try_parse_from(argv)
            {
                let _ = ecs_options(&a);
            }
            let docker = [
                "gantry", "deploy", "docker", "web", "--image", "x", "--health-timeout", &timeout,
                "--grace", &poll, "--keep", &keep, "--health-url", &url, "-e", &url,
            ];
            if let Ok(Cli { cmd: Cmd::Deploy(DeployArgs { target: DeployTarget::Docker(a) }) }) =
                Cli::try_parse_from(docker)
            {
                let _ = docker_options(&a);
            }
        }
    }

    #[test]
    fn bad_numbers_are_usage_errors() {
        let cli =
            Cli::try_parse_from(["gantry", "deploy", "ecs", "c", "s", "--cpu", "app", "lots"])
                .expect("parse");
        let Cmd::Deploy(DeployArgs {
            target: DeployTarget::Ecs(a),
        }) = cli.cmd
        else {
            panic!("ecs")
        };
        assert!(matches!(task_changes(&a), Err(DeployError::Usage(_))));
    }

    #[test]
    fn docker_and_rollback_arguments() {
        let cli = Cli::try_parse_from([
            "gantry",
            "deploy",
            "docker",
            "web",
            "--image",
            "localhost/app:2",
            "-p",
            "8080:80",
            "-e",
            "A=1",
            "--health-url",
            "http://127.0.0.1:8080/keepalive",
        ])
        .expect("parse");
        let Cmd::Deploy(DeployArgs {
            target: DeployTarget::Docker(a),
        }) = cli.cmd
        else {
            panic!("docker")
        };
        let o = docker_options(&a).expect("options");
        assert_eq!(o.spec.env, [("A".to_string(), "1".to_string())]);
        let cli = Cli::try_parse_from(["gantry", "rollback", "docker", "web", "--to", "r3"])
            .expect("parse");
        let Cmd::Rollback(RollbackArgs {
            target: RollbackTarget::Docker(r),
        }) = cli.cmd
        else {
            panic!("docker")
        };
        assert_eq!(r.to, Some(3));
    }
}
