//! Amazon ECS: deploy new task-definition revisions to services, wait for a rollout result that
//! can be trusted ([`rollout`]), probe health, roll back to the last known-good revision, prune
//! old revisions, and run one-off tasks.
//!
//! Flow per service: DescribeServices → DescribeTaskDefinition → apply changes keeping a diff
//! ([`taskdef`]) → RegisterTaskDefinition → UpdateService → wait → health check → record.

pub mod rollout;
pub mod taskdef;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{
    DeploymentControllerType, DesiredStatus, Service, SortOrder, TaskDefinition,
    TaskDefinitionField, TaskDefinitionStatus,
};

use crate::history::{HistoryStore, short_revision};
use crate::machine::{
    self, Failure, LiveAfterFailure, MachineOptions, Outcome, Revision, RollbackPlan, RolledBack,
    Target,
};
use crate::{DeployError, Log};
use rollout::{
    DeploymentState, RolloutObserver, ServiceEvent, ServiceSnapshot, TaskState, WaitContext,
};
use taskdef::{TaskChanges, family_and_revision};

/// What `gantry deploy ecs` was asked to do.
#[derive(Debug, Clone)]
pub struct EcsDeployOptions {
    pub cluster: String,
    pub services: Vec<String>,
    pub changes: TaskChanges,
    /// Deploy this revision (`FAMILY:REV` or ARN) instead of copying the service's current one.
    pub task: Option<String>,
    /// None: do not wait (`--timeout -1`).
    pub timeout: Option<Duration>,
    pub poll_interval: Duration,
    /// How long to wait for a rollback's own rollout.
    pub rollback_timeout: Duration,
    pub show_diff: bool,
    /// Deregister older ACTIVE revisions of the family, keeping the newest N.
    pub keep_revisions: Option<usize>,
    pub scale: Option<i32>,
    pub health_url: Option<String>,
    pub health_timeout: Duration,
    pub ignore_warnings: bool,
    /// Rollback, lease and notification options of the state machine.
    pub machine: MachineOptions,
}

impl EcsDeployOptions {
    /// Defaults that match the CLI's.
    pub fn new(cluster: &str, services: &[&str]) -> Self {
        EcsDeployOptions {
            cluster: cluster.to_string(),
            services: services.iter().map(|s| s.to_string()).collect(),
            changes: TaskChanges::default(),
            task: None,
            timeout: Some(Duration::from_secs(300)),
            poll_interval: Duration::from_secs(2),
            rollback_timeout: Duration::from_secs(600),
            show_diff: false,
            keep_revisions: None,
            scale: None,
            health_url: None,
            health_timeout: Duration::from_secs(60),
            ignore_warnings: false,
            machine: MachineOptions::default(),
        }
    }
}

/// The result for one service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceOutcome {
    pub service: String,
    pub ok: bool,
    /// The revision deployed (full ARN), if one was chosen.
    pub revision: Option<String>,
    /// The revision that ran before.
    pub previous: Option<String>,
    pub rolled_back_to: Option<String>,
    pub deregistered: Vec<String>,
    pub message: String,
    pub history_id: Option<String>,
    /// The typed result behind `ok` and `message`.
    pub report: machine::Report,
}

fn last_segment(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn ts(dt: Option<&aws_sdk_ecs::primitives::DateTime>) -> Option<f64> {
    dt.map(|d| d.as_secs_f64())
}

fn primary_deployment(s: &Service) -> Option<(String, String)> {
    s.deployments()
        .iter()
        .find(|d| d.status() == Some("PRIMARY"))
        .map(|d| {
            (
                d.id().unwrap_or_default().to_string(),
                d.task_definition().unwrap_or_default().to_string(),
            )
        })
}

/// Reads rollout state from ECS: DescribeServices, ListTasks (running and stopped), DescribeTasks.
#[derive(Clone, Debug)]
pub struct SdkObserver {
    client: Client,
}

impl SdkObserver {
    pub fn new(client: Client) -> Self {
        SdkObserver { client }
    }
}

impl RolloutObserver for SdkObserver {
    async fn snapshot(&self, ctx: &WaitContext) -> Result<ServiceSnapshot, DeployError> {
        let svc = describe_service(&self.client, &ctx.cluster, &ctx.service).await?;
        let mut snap = ServiceSnapshot {
            desired_count: svc.desired_count,
            running_count: svc.running_count,
            deployments: svc
                .deployments()
                .iter()
                .map(|d| DeploymentState {
                    id: d.id().unwrap_or_default().into(),
                    status: d.status().unwrap_or_default().into(),
                    task_definition: d.task_definition().unwrap_or_default().into(),
                    rollout_state: d.rollout_state().map(|r| r.as_str().to_string()),
                    rollout_state_reason: d.rollout_state_reason().map(str::to_string),
                    desired_count: d.desired_count,
                    running_count: d.running_count,
                    failed_tasks: d.failed_tasks,
                })
                .collect(),
            events: svc
                .events()
                .iter()
                .take(50)
                .map(|e| ServiceEvent {
                    created_at: ts(e.created_at()),
                    message: e.message().unwrap_or_default().into(),
                })
                .collect(),
            tasks: Vec::new(),
        };
        let mut arns = Vec::new();
        for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
            let resp = self
                .client
                .list_tasks()
                .cluster(&ctx.cluster)
                .service_name(&ctx.service)
                .desired_status(status)
                .send()
                .await
                .map_err(|e| DeployError::aws("ListTasks", e))?;
            arns.extend(resp.task_arns().iter().cloned());
        }
        for chunk in arns.chunks(100) {
            let resp = self
                .client
                .describe_tasks()
                .cluster(&ctx.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| DeployError::aws("DescribeTasks", e))?;
            let group = format!("service:{}", ctx.service);
            for t in resp.tasks() {
                // moto ignores the service filter of ListTasks; the group tells them apart.
                if t.group().is_some_and(|g| g != group) {
                    continue;
                }
                snap.tasks.push(TaskState {
                    arn: t.task_arn().unwrap_or_default().into(),
                    task_definition: t.task_definition_arn().unwrap_or_default().into(),
                    last_status: t.last_status().unwrap_or_default().into(),
                    stopped_reason: t.stopped_reason().map(str::to_string),
                    created_at: ts(t.created_at()),
                    containers: t
                        .containers()
                        .iter()
                        .map(|c| {
                            (
                                c.name().unwrap_or_default().to_string(),
                                c.exit_code(),
                                c.reason().map(str::to_string),
                            )
                        })
                        .collect(),
                });
            }
        }
        Ok(snap)
    }
}

/// DescribeServices for one service; missing or INACTIVE services are usage errors.
pub async fn describe_service(
    client: &Client,
    cluster: &str,
    service: &str,
) -> Result<Service, DeployError> {
    let resp = client
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .map_err(|e| DeployError::aws(&format!("DescribeServices {cluster}/{service}"), e))?;
    let svc = resp.services().first().cloned();
    match svc {
        Some(s) if s.status() != Some("INACTIVE") => Ok(s),
        _ => {
            let why = resp
                .failures()
                .first()
                .and_then(|f| f.reason())
                .unwrap_or("MISSING or INACTIVE")
                .to_string();
            Err(DeployError::Usage(format!(
                "service {service} not found in cluster {cluster}: {why}"
            )))
        }
    }
}

/// ECS refuses to point a service at a deregistered (INACTIVE) revision; say so up front.
fn ensure_active(td: &TaskDefinition) -> Result<(), DeployError> {
    if td.status() == Some(&TaskDefinitionStatus::Inactive) {
        return Err(DeployError::Usage(format!(
            "{} is INACTIVE (deregistered): ECS cannot deploy it again",
            short_revision(td.task_definition_arn().unwrap_or("the task definition"))
        )));
    }
    Ok(())
}

/// DescribeTaskDefinition with tags.
pub async fn describe_task_definition(
    client: &Client,
    task: &str,
) -> Result<(TaskDefinition, Vec<aws_sdk_ecs::types::Tag>), DeployError> {
    let resp = client
        .describe_task_definition()
        .task_definition(task)
        .include(TaskDefinitionField::Tags)
        .send()
        .await
        .map_err(|e| DeployError::aws(&format!("DescribeTaskDefinition {task}"), e))?;
    let td = resp
        .task_definition()
        .cloned()
        .ok_or_else(|| DeployError::Usage(format!("task definition {task} not found")))?;
    Ok((td, resp.tags().to_vec()))
}

/// RegisterTaskDefinition from an edited copy; returns the new revision's ARN.
pub async fn register_task_definition(
    client: &Client,
    td: &TaskDefinition,
    tags: &[aws_sdk_ecs::types::Tag],
) -> Result<String, DeployError> {
    let family = td.family().unwrap_or_default();
    let resp = client
        .register_task_definition()
        .family(family)
        .set_task_role_arn(td.task_role_arn.clone())
        .set_execution_role_arn(td.execution_role_arn.clone())
        .set_network_mode(td.network_mode.clone())
        .set_container_definitions(td.container_definitions.clone())
        .set_volumes(td.volumes.clone())
        .set_placement_constraints(td.placement_constraints.clone())
        .set_requires_compatibilities(td.requires_compatibilities.clone())
        .set_cpu(td.cpu.clone())
        .set_memory(td.memory.clone())
        .set_tags(if tags.is_empty() {
            None
        } else {
            Some(tags.to_vec())
        })
        .set_pid_mode(td.pid_mode.clone())
        .set_ipc_mode(td.ipc_mode.clone())
        .set_proxy_configuration(td.proxy_configuration.clone())
        .set_ephemeral_storage(td.ephemeral_storage.clone())
        .set_runtime_platform(td.runtime_platform.clone())
        .send()
        .await
        .map_err(|e| DeployError::aws(&format!("RegisterTaskDefinition {family}"), e))?;
    resp.task_definition()
        .and_then(|t| t.task_definition_arn())
        .map(str::to_string)
        .ok_or_else(|| DeployError::Aws("RegisterTaskDefinition returned no ARN".into()))
}

/// What a deploy with `opts` would change in `service`'s task definition, without registering
/// or updating anything (`gantry ecs diff`): the base revision and the changes.
pub async fn diff_service(
    client: &Client,
    opts: &EcsDeployOptions,
    service: &str,
) -> Result<(String, Vec<taskdef::Change>), DeployError> {
    let svc = describe_service(client, &opts.cluster, service).await?;
    let base = match &opts.task {
        Some(t) => t.clone(),
        None => svc.task_definition().unwrap_or_default().to_string(),
    };
    let (td, _) = describe_task_definition(client, &base).await?;
    let (_, diff) = taskdef::apply(&td, &opts.changes)?;
    Ok((
        short_revision(td.task_definition_arn().unwrap_or(&base)),
        diff,
    ))
}

/// Deploys, waits, checks health and rolls back, for ECS services, through the one state
/// machine ([`crate::machine`]). Rollout reads go through `O`.
pub struct EcsDeployer<'a, O: RolloutObserver> {
    client: Client,
    observer: O,
    history: &'a dyn HistoryStore,
    log: Log,
}

/// One ECS service as a [`Target`].
pub struct EcsTarget<'d, O: RolloutObserver> {
    client: &'d Client,
    observer: &'d O,
    opts: &'d EcsDeployOptions,
    service: String,
    log: Log,
    key: String,
    svc: Option<Service>,
    current_arn: Option<String>,
    /// What ran when the deploy started.
    previous_arn: Option<String>,
    previous_deployment: Option<String>,
    new_deployment: Option<String>,
    desired: i32,
    started_at: f64,
    ecs_rolled_back_to: Option<(String, String)>,
    /// Revisions that must never be deregistered (known good in the history).
    protected: Vec<String>,
}

/// `ecs:ACCOUNT:REGION:CLUSTER/SERVICE` from a service ARN
/// (`arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/SERVICE`); the names when the ARN is short.
pub fn target_key_from_arn(service_arn: &str, cluster: &str, service: &str) -> String {
    let parts: Vec<&str> = service_arn.splitn(6, ':').collect();
    let (region, account) = match parts.as_slice() {
        [_, _, _, region, account, _] if !region.is_empty() && !account.is_empty() => {
            (*region, *account)
        }
        _ => ("unknown-region", "unknown-account"),
    };
    format!(
        "ecs:{account}:{region}:{}/{}",
        last_segment(cluster),
        last_segment(service)
    )
}

impl<'d, O: RolloutObserver> EcsTarget<'d, O> {
    /// Describes the service once to learn its account and region (the history key).
    pub async fn new(
        client: &'d Client,
        observer: &'d O,
        opts: &'d EcsDeployOptions,
        service: &str,
        log: Log,
    ) -> Result<Self, DeployError> {
        let svc = describe_service(client, &opts.cluster, service).await?;
        let key = target_key_from_arn(svc.service_arn().unwrap_or(""), &opts.cluster, service);
        Ok(EcsTarget {
            client,
            observer,
            opts,
            service: service.to_string(),
            log,
            key,
            svc: Some(svc),
            current_arn: None,
            previous_arn: None,
            previous_deployment: None,
            new_deployment: None,
            desired: 0,
            started_at: 0.0,
            ecs_rolled_back_to: None,
            protected: Vec::new(),
        })
    }

    fn cluster(&self) -> &str {
        &self.opts.cluster
    }

    async fn health(&self) -> Result<String, String> {
        match &self.opts.health_url {
            Some(url) => crate::health::wait_http_healthy(
                url,
                self.opts.health_timeout,
                Duration::from_secs(1).min(self.opts.poll_interval.max(Duration::from_millis(100))),
                &self.log,
            )
            .await
            .map(|_| format!("{url} answered 2xx"))
            .map_err(|e| e.to_string()),
            None => Ok("no --health-url to probe".into()),
        }
    }

    /// Re-registers an INACTIVE revision from its own definition; returns the ARN to use.
    async fn active_revision(&self, arn: &str) -> Result<(String, String), DeployError> {
        let (td, tags) = describe_task_definition(self.client, arn).await?;
        let full = td.task_definition_arn().unwrap_or(arn).to_string();
        if td.status() != Some(&TaskDefinitionStatus::Inactive) {
            return Ok((full, String::new()));
        }
        let fresh = register_task_definition(self.client, &td, &tags).await?;
        let note = format!(
            "{} was INACTIVE (deregistered): re-registered its definition as {}",
            short_revision(&full),
            short_revision(&fresh)
        );
        self.log.line(&note);
        Ok((fresh, note))
    }
}

impl<O: RolloutObserver> Target for EcsTarget<'_, O> {
    fn key(&self) -> String {
        self.key.clone()
    }

    fn rollback_command(&self) -> String {
        format!("gantry rollback ecs {} {}", self.opts.cluster, self.service)
    }

    fn live_revision(&self) -> Option<String> {
        self.current_arn.clone()
    }

    fn no_wait(&self) -> bool {
        self.opts.timeout.is_none()
    }

    async fn prepare(&mut self, _store: &dyn HistoryStore) -> Result<(), DeployError> {
        // Read again under the lease: another deploy may have finished while we waited.
        let svc = describe_service(self.client, &self.opts.cluster, &self.service).await?;
        if svc
            .deployment_controller()
            .is_some_and(|c| c.r#type() == &DeploymentControllerType::CodeDeploy)
        {
            return Err(DeployError::Usage(format!(
                "service {} uses the CODE_DEPLOY (blue/green) controller: ECS rejects UpdateService for it; deploy through CodeDeploy",
                self.service
            )));
        }
        let current = svc.task_definition().unwrap_or_default().to_string();
        // moto stores the literal string given to UpdateService; resolve it to a full ARN.
        let (current_td, _) = describe_task_definition(self.client, &current).await?;
        self.current_arn = Some(
            current_td
                .task_definition_arn()
                .unwrap_or(&current)
                .to_string(),
        );
        self.previous_arn = self.current_arn.clone();
        self.previous_deployment = primary_deployment(&svc).map(|p| p.0);
        self.desired = self.opts.scale.unwrap_or(svc.desired_count);
        self.svc = Some(svc);
        Ok(())
    }

    async fn make_revision(&mut self) -> Result<Revision, DeployError> {
        let current = self.current_arn.clone().unwrap_or_default();
        let (base_td, base_tags) =
            describe_task_definition(self.client, self.opts.task.as_deref().unwrap_or(&current))
                .await?;
        if self.opts.task.is_some() && self.opts.changes.is_empty() {
            ensure_active(&base_td)?;
        }
        let base_arn = base_td
            .task_definition_arn()
            .unwrap_or_default()
            .to_string();
        let (new_td, diff) = taskdef::apply(&base_td, &self.opts.changes)?;
        let log = &self.log;
        let id = if diff.is_empty() {
            log.line(format!(
                "deploying {} (no task definition changes)",
                short_revision(&base_arn)
            ));
            base_arn.clone()
        } else {
            if self.opts.show_diff {
                log.line(format!(
                    "{} change(s) to {}:",
                    diff.len(),
                    short_revision(&base_arn)
                ));
                log.line(taskdef::format_diff(&diff));
            } else {
                log.line(format!(
                    "{} change(s) to {} (--diff lists them)",
                    diff.len(),
                    short_revision(&base_arn)
                ));
            }
            let arn = register_task_definition(self.client, &new_td, &base_tags).await?;
            log.line(format!("registered {arn}"));
            arn
        };
        let mut details = std::collections::BTreeMap::new();
        for c in new_td.container_definitions() {
            details.insert(
                format!("image.{}", c.name().unwrap_or("?")),
                c.image().unwrap_or("").into(),
            );
        }
        details.insert("desired_count".into(), self.desired.to_string());
        Ok(Revision { id, details })
    }

    async fn roll_out(&mut self, rev: &Revision) -> Result<(), Failure> {
        let force = Some(&rev.id) == self.current_arn.as_ref();
        let mut update = self
            .client
            .update_service()
            .cluster(self.cluster())
            .service(&self.service)
            .task_definition(&rev.id)
            .force_new_deployment(force && self.opts.scale.is_none());
        if let Some(n) = self.opts.scale {
            update = update.desired_count(n);
        }
        self.log.line(format!(
            "UpdateService {} -> {} at {}",
            self.service,
            short_revision(&rev.id),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ));
        self.started_at = now_secs();
        let updated = update.send().await.map_err(|e| {
            Failure::unchanged(
                DeployError::aws(&format!("UpdateService {}/{}", self.cluster(), self.service), e)
                    .to_string(),
            )
        })?;
        let updated = updated.service().cloned();
        self.new_deployment = updated.as_ref().and_then(primary_deployment).map(|p| p.0);
        if self.new_deployment.is_some() && self.new_deployment == self.previous_deployment && !force
        {
            self.log
                .line("note: the PRIMARY deployment id did not change after UpdateService");
        }
        if self.opts.scale.is_none()
            && let Some(s) = &updated
        {
            self.desired = s.desired_count;
        }
        Ok(())
    }

    async fn observe(&mut self, rev: &Revision) -> Result<String, Failure> {
        let ctx = WaitContext {
            cluster: self.opts.cluster.clone(),
            service: self.service.clone(),
            task_definition: rev.id.clone(),
            deployment_id: self.new_deployment.clone(),
            previous_deployment_id: self.previous_deployment.clone(),
            started_at: self.started_at,
            desired_count: self.desired,
            ignore_warnings: self.opts.ignore_warnings,
        };
        let timeout = self.opts.timeout.unwrap_or(Duration::ZERO);
        match rollout::wait_for_rollout(self.observer, &ctx, timeout, self.opts.poll_interval, &self.log)
            .await
        {
            Ok(why) => Ok(why),
            Err(f) => {
                self.ecs_rolled_back_to = f.ecs_rolled_back_to.clone();
                Err(Failure {
                    reason: f.to_string(),
                    live: match &f.ecs_rolled_back_to {
                        Some((_, td)) => LiveAfterFailure::ReplacedBy(td.clone()),
                        None => LiveAfterFailure::Changed,
                    },
                })
            }
        }
    }

    async fn probe(&mut self, _rev: &Revision) -> Result<String, Failure> {
        self.health().await.map_err(Failure::changed)
    }

    async fn roll_back(&mut self, plan: &RollbackPlan) -> Result<RolledBack, DeployError> {
        let (to, note) = self.active_revision(&plan.revision).await?;
        // The good revision's own desired count, when the history has it.
        let desired = plan
            .record
            .as_ref()
            .and_then(|r| r.details.get("desired_count"))
            .and_then(|d| d.parse::<i32>().ok())
            .filter(|d| *d >= 0);
        let wait_desired = desired.unwrap_or(self.desired);
        let started_at = now_secs();
        let deployment_id = match &self.ecs_rolled_back_to {
            Some((id, td)) if *td == to && desired.is_none_or(|d| d == self.desired) => {
                self.log.line(format!(
                    "ECS already rolled back to {}: waiting for deployment {id}",
                    short_revision(&to)
                ));
                Some(id.clone())
            }
            _ => {
                let mut req = self
                    .client
                    .update_service()
                    .cluster(self.cluster())
                    .service(&self.service)
                    .task_definition(&to);
                if let Some(d) = desired {
                    req = req.desired_count(d);
                }
                let resp = req.send().await.map_err(|e| {
                    DeployError::aws(
                        &format!("UpdateService {}/{} (rollback)", self.cluster(), self.service),
                        e,
                    )
                })?;
                resp.service().and_then(primary_deployment).map(|p| p.0)
            }
        };
        self.current_arn = Some(to.clone());
        let Some(_) = self.opts.timeout else {
            return Ok(RolledBack {
                revision: to,
                awaited: false,
                note,
            });
        };
        let ctx = WaitContext {
            cluster: self.opts.cluster.clone(),
            service: self.service.clone(),
            task_definition: to.clone(),
            deployment_id,
            previous_deployment_id: None,
            started_at,
            desired_count: wait_desired,
            ignore_warnings: true,
        };
        rollout::wait_for_rollout(
            self.observer,
            &ctx,
            self.opts.rollback_timeout,
            self.opts.poll_interval,
            &self.log,
        )
        .await
        .map_err(|f| DeployError::Rollout(f.to_string()))?;
        self.health().await.map_err(DeployError::Health)?;
        Ok(RolledBack {
            revision: to,
            awaited: true,
            note,
        })
    }

    async fn after_success(&mut self, rev: &Revision, store: &dyn HistoryStore) -> Vec<String> {
        self.protected = store
            .records(&self.key)
            .await
            .map(|rs| {
                rs.into_iter()
                    .filter(|r| r.known_good)
                    .map(|r| r.revision)
                    .collect()
            })
            .unwrap_or_default();
        let previous = self.previous_arn.clone().unwrap_or_default();
        prune(
            self.client,
            self.opts.keep_revisions,
            &rev.id,
            &previous,
            &self.protected,
            &self.log,
        )
        .await
        .into_iter()
        .map(|a| format!("deregistered {}", short_revision(&a)))
        .collect()
    }

    async fn resolve(&mut self, to: &str) -> Result<String, DeployError> {
        let current = self.current_arn.clone().unwrap_or_default();
        let family = family_and_revision(&current)
            .map(|(f, _)| f)
            .unwrap_or_default();
        let wanted = if !to.is_empty() && to.chars().all(|c| c.is_ascii_digit()) {
            format!("{family}:{to}")
        } else {
            to.to_string()
        };
        let (td, _) = describe_task_definition(self.client, &wanted).await?;
        Ok(td.task_definition_arn().unwrap_or(&wanted).to_string())
    }
}

impl<'a, O: RolloutObserver> EcsDeployer<'a, O> {
    pub fn new(client: Client, observer: O, history: &'a dyn HistoryStore, log: Log) -> Self {
        EcsDeployer {
            client,
            observer,
            history,
            log,
        }
    }

    /// The observer (tests inspect what was waited for).
    pub fn observer(&self) -> &O {
        &self.observer
    }

    /// Deploys every service of `opts` concurrently; one outcome per service, in order.
    pub async fn deploy(&self, opts: &EcsDeployOptions) -> Vec<ServiceOutcome> {
        let futures = opts.services.iter().map(|s| self.deploy_service(opts, s));
        futures_util::future::join_all(futures).await
    }

    fn service_log(&self, opts: &EcsDeployOptions, service: &str) -> Log {
        if opts.services.len() > 1 {
            self.log.with_prefix(service)
        } else {
            self.log.clone()
        }
    }

    async fn deploy_service(&self, opts: &EcsDeployOptions, service: &str) -> ServiceOutcome {
        let log = self.service_log(opts, service);
        let report = match EcsTarget::new(&self.client, &self.observer, opts, service, log.clone())
            .await
        {
            Ok(mut target) => {
                let report = machine::deploy(&mut target, self.history, &opts.machine, &log).await;
                let mut o = ServiceOutcome::from_report(service, report);
                o.previous = target
                    .previous_arn
                    .clone()
                    .filter(|c| Some(c) != o.revision.as_ref());
                return o;
            }
            Err(e) => machine::Report {
                outcome: Outcome::NotStarted {
                    reason: e.to_string(),
                    locked: false,
                },
                live_now: None,
                next: None,
                history_warnings: Vec::new(),
                record_id: None,
                notes: Vec::new(),
            },
        };
        ServiceOutcome::from_report(service, report)
    }

    /// `gantry rollback ecs`: to `to` (`REV`, `FAMILY:REV` or ARN), else the newest known-good
    /// revision that is not the current one, else the revision the history says ran before.
    /// Awaited and probed like a deploy (unless `opts.timeout` is None).
    pub async fn rollback(
        &self,
        opts: &EcsDeployOptions,
        service: &str,
        to: Option<&str>,
    ) -> machine::Report {
        let mut target =
            match EcsTarget::new(&self.client, &self.observer, opts, service, self.log.clone())
                .await
            {
                Ok(t) => t,
                Err(e) => {
                    return machine::Report {
                        outcome: Outcome::NotStarted {
                            reason: e.to_string(),
                            locked: false,
                        },
                        live_now: None,
                        next: None,
                        history_warnings: Vec::new(),
                        record_id: None,
                        notes: Vec::new(),
                    };
                }
            };
        machine::rollback(&mut target, self.history, to, &opts.machine, &self.log).await
    }
}

impl ServiceOutcome {
    fn from_report(service: &str, report: machine::Report) -> Self {
        let (revision, rolled_back_to) = match &report.outcome {
            Outcome::Succeeded { revision, .. } | Outcome::Submitted { revision } => {
                (Some(revision.clone()), None)
            }
            Outcome::RolledBack { revision, to, .. } => (Some(revision.clone()), Some(to.clone())),
            Outcome::Failed { revision, .. } => (revision.clone(), None),
            Outcome::Interrupted { revision, .. } => (Some(revision.clone()), None),
            Outcome::NotStarted { .. } => (None, None),
        };
        ServiceOutcome {
            service: service.to_string(),
            ok: report.ok(),
            revision,
            previous: None,
            rolled_back_to,
            deregistered: report
                .notes
                .iter()
                .filter_map(|n| n.strip_prefix("deregistered ").map(str::to_string))
                .collect(),
            message: report.message(),
            history_id: report.record_id.clone(),
            report,
        }
    }
}

/// Deregisters ACTIVE revisions of the family beyond the newest `keep`, never the new one, the
/// one that ran before, or any known-good one. Failures are warnings.
async fn prune(
    client: &Client,
    keep: Option<usize>,
    new_arn: &str,
    previous_arn: &str,
    protected: &[String],
    log: &Log,
) -> Vec<String> {
    let Some(keep) = keep else {
        return Vec::new();
    };
    let Some((family, _)) = family_and_revision(new_arn) else {
        return Vec::new();
    };
    let mut arns: Vec<(i32, String)> = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let resp = client
            .list_task_definitions()
            .family_prefix(&family)
            .status(TaskDefinitionStatus::Active)
            .sort(SortOrder::Desc)
            .set_next_token(next.clone())
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                log.line(format!(
                    "warning: {}",
                    DeployError::aws("ListTaskDefinitions", e)
                ));
                return Vec::new();
            }
        };
        for arn in resp.task_definition_arns() {
            if let Some((f, rev)) = family_and_revision(arn)
                && f == family
            {
                arns.push((rev, arn.clone()));
            }
        }
        next = resp.next_token().map(str::to_string);
        if next.is_none() {
            break;
        }
    }
    arns.sort_by_key(|a| std::cmp::Reverse(a.0));
    let mut removed = Vec::new();
    for (_, arn) in arns.into_iter().skip(keep) {
        if arn == new_arn || arn == previous_arn || protected.contains(&arn) {
            continue;
        }
        match client
            .deregister_task_definition()
            .task_definition(&arn)
            .send()
            .await
        {
            Ok(_) => {
                log.line(format!("deregistered {}", short_revision(&arn)));
                removed.push(arn);
            }
            Err(e) => log.line(format!(
                "warning: {}",
                DeployError::aws(&format!("DeregisterTaskDefinition {arn}"), e)
            )),
        }
    }
    removed
}

/// What `gantry ecs run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunTaskOptions {
    pub cluster: String,
    pub task: String,
    pub count: i32,
    pub launch_type: Option<String>,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub public_ip: bool,
    /// (container, command) overrides.
    pub commands: Vec<(String, String)>,
    /// (container, key, value) overrides.
    pub env: Vec<(String, String, String)>,
    pub timeout: Duration,
    pub poll_interval: Duration,
}

/// Runs a one-off task, waits for STOPPED, returns the exit code: the first non-zero container
/// exit code, 1 if a container has none and the task failed to start, else 0.
pub async fn run_task(
    client: &Client,
    opts: &RunTaskOptions,
    log: &Log,
) -> Result<i32, DeployError> {
    use aws_sdk_ecs::types::{
        AssignPublicIp, AwsVpcConfiguration, ContainerOverride, KeyValuePair, LaunchType,
        NetworkConfiguration, TaskOverride,
    };
    let mut req = client
        .run_task()
        .cluster(&opts.cluster)
        .task_definition(&opts.task)
        .count(opts.count.max(1))
        .started_by("gantry");
    if let Some(lt) = &opts.launch_type {
        req = req.launch_type(LaunchType::from(lt.as_str()));
    }
    if !opts.subnets.is_empty() {
        let vpc = AwsVpcConfiguration::builder()
            .set_subnets(Some(opts.subnets.clone()))
            .set_security_groups(if opts.security_groups.is_empty() {
                None
            } else {
                Some(opts.security_groups.clone())
            })
            .assign_public_ip(if opts.public_ip {
                AssignPublicIp::Enabled
            } else {
                AssignPublicIp::Disabled
            })
            .build()
            .map_err(|e| DeployError::Usage(format!("network configuration: {e}")))?;
        req = req.network_configuration(
            NetworkConfiguration::builder()
                .awsvpc_configuration(vpc)
                .build(),
        );
    }
    let mut names: Vec<&str> = opts.commands.iter().map(|c| c.0.as_str()).collect();
    names.extend(opts.env.iter().map(|e| e.0.as_str()));
    names.sort();
    names.dedup();
    if !names.is_empty() {
        let mut overrides = TaskOverride::builder();
        for name in names {
            let mut co = ContainerOverride::builder().name(name);
            if let Some((_, cmd)) = opts.commands.iter().rev().find(|c| c.0 == name) {
                co = co.set_command(Some(taskdef::split_command(cmd)?));
            }
            for (_, k, v) in opts.env.iter().filter(|e| e.0 == name) {
                co = co.environment(KeyValuePair::builder().name(k).value(v).build());
            }
            overrides = overrides.container_overrides(co.build());
        }
        req = req.overrides(overrides.build());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| DeployError::aws(&format!("RunTask {}", opts.task), e))?;
    if let Some(f) = resp.failures().first() {
        return Err(DeployError::Aws(format!(
            "RunTask {}: {} {}",
            opts.task,
            f.arn().unwrap_or(""),
            f.reason().unwrap_or("failed")
        )));
    }
    let arns: Vec<String> = resp
        .tasks()
        .iter()
        .filter_map(|t| t.task_arn().map(str::to_string))
        .collect();
    if arns.is_empty() {
        return Err(DeployError::Aws(format!(
            "RunTask {} started no task",
            opts.task
        )));
    }
    for a in &arns {
        log.line(format!("started task {a}"));
    }
    let deadline = std::time::Instant::now() + opts.timeout;
    let mut last_status = String::new();
    loop {
        let resp = client
            .describe_tasks()
            .cluster(&opts.cluster)
            .set_tasks(Some(arns.clone()))
            .send()
            .await
            .map_err(|e| DeployError::aws("DescribeTasks", e))?;
        let statuses: Vec<String> = resp
            .tasks()
            .iter()
            .map(|t| t.last_status().unwrap_or("?").to_string())
            .collect();
        let joined = statuses.join(",");
        if joined != last_status {
            log.line(format!("task status: {joined}"));
            last_status = joined;
        }
        if !statuses.is_empty() && statuses.iter().all(|s| s == "STOPPED") {
            let mut code = 0;
            for t in resp.tasks() {
                for c in t.containers() {
                    log.line(format!(
                        "container {} exited {}{}",
                        c.name().unwrap_or("?"),
                        c.exit_code()
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "without a code".into()),
                        c.reason().map(|r| format!(" ({r})")).unwrap_or_default()
                    ));
                    match c.exit_code() {
                        Some(x) if x != 0 && code == 0 => code = x,
                        None if code == 0
                            && t.stop_code()
                                .is_some_and(|s| s.as_str() == "TaskFailedToStart") =>
                        {
                            code = 1
                        }
                        _ => {}
                    }
                }
                if let Some(r) = t.stopped_reason().filter(|r| !r.is_empty()) {
                    log.line(format!("stopped: {r}"));
                }
            }
            return Ok(code);
        }
        if std::time::Instant::now() >= deadline {
            return Err(DeployError::Rollout(format!(
                "task did not stop within {}s (status {last_status})",
                opts.timeout.as_secs()
            )));
        }
        tokio::time::sleep(opts.poll_interval).await;
    }
}
