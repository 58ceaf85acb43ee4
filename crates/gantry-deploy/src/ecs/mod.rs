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

use crate::history::{DeployResult, DeploymentRecord, HistoryStore, RecordKind, short_revision};
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
    pub rollback: bool,
    pub ignore_warnings: bool,
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
            rollback: true,
            ignore_warnings: false,
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
}

/// `ecs:CLUSTER/SERVICE`, the history key.
pub fn target_key(cluster: &str, service: &str) -> String {
    format!("ecs:{}/{}", last_segment(cluster), last_segment(service))
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

/// Deploys, waits, checks health and rolls back, for ECS services. Rollout reads go through `O`.
pub struct EcsDeployer<'a, O: RolloutObserver> {
    client: Client,
    observer: O,
    history: &'a dyn HistoryStore,
    log: Log,
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

    async fn deploy_service(&self, opts: &EcsDeployOptions, service: &str) -> ServiceOutcome {
        let log = if opts.services.len() > 1 {
            self.log.with_prefix(service)
        } else {
            self.log.clone()
        };
        let mut outcome = ServiceOutcome {
            service: service.to_string(),
            ok: false,
            revision: None,
            previous: None,
            rolled_back_to: None,
            deregistered: Vec::new(),
            message: String::new(),
            history_id: None,
        };
        match self
            .deploy_service_inner(opts, service, &log, &mut outcome)
            .await
        {
            Ok(msg) => {
                outcome.ok = true;
                outcome.message = msg;
            }
            Err(e) => {
                outcome.ok = false;
                outcome.message = e.to_string();
            }
        }
        outcome
    }

    async fn deploy_service_inner(
        &self,
        opts: &EcsDeployOptions,
        service: &str,
        log: &Log,
        outcome: &mut ServiceOutcome,
    ) -> Result<String, DeployError> {
        let cluster = &opts.cluster;
        let target = target_key(cluster, service);
        let svc = describe_service(&self.client, cluster, service).await?;
        if svc
            .deployment_controller()
            .is_some_and(|c| c.r#type() == &DeploymentControllerType::CodeDeploy)
        {
            return Err(DeployError::Usage(format!(
                "service {service} uses the CODE_DEPLOY (blue/green) controller: ECS rejects UpdateService for it; deploy through CodeDeploy"
            )));
        }
        let current = svc.task_definition().unwrap_or_default().to_string();
        let previous_deployment = primary_deployment(&svc).map(|p| p.0);
        // moto stores the literal string given to UpdateService; resolve it to a full ARN.
        let (current_td, current_tags) = describe_task_definition(&self.client, &current).await?;
        let current_arn = current_td
            .task_definition_arn()
            .unwrap_or(&current)
            .to_string();
        outcome.previous = Some(current_arn.clone());

        let (base_td, base_tags) = match &opts.task {
            Some(task) => {
                let (td, tags) = describe_task_definition(&self.client, task).await?;
                if opts.changes.is_empty() {
                    ensure_active(&td)?;
                }
                (td, tags)
            }
            None => (current_td, current_tags),
        };
        let base_arn = base_td
            .task_definition_arn()
            .unwrap_or_default()
            .to_string();
        let (new_td, diff) = taskdef::apply(&base_td, &opts.changes)?;
        let new_arn = if diff.is_empty() {
            log.line(format!(
                "deploying {} (no task definition changes)",
                short_revision(&base_arn)
            ));
            base_arn.clone()
        } else {
            if opts.show_diff {
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
            let arn = register_task_definition(&self.client, &new_td, &base_tags).await?;
            log.line(format!("registered {arn}"));
            arn
        };
        outcome.revision = Some(new_arn.clone());

        let mut record =
            DeploymentRecord::start(&target, RecordKind::Deploy, &new_arn, Some(&current_arn));
        for c in new_td.container_definitions() {
            record.details.insert(
                format!("image.{}", c.name().unwrap_or("?")),
                c.image().unwrap_or("").into(),
            );
        }
        outcome.history_id = Some(record.id.clone());
        self.history.save(&record)?;

        let started_at = now_secs();
        let force = new_arn == current_arn;
        let mut update = self
            .client
            .update_service()
            .cluster(cluster)
            .service(service)
            .task_definition(&new_arn)
            .force_new_deployment(force && opts.scale.is_none());
        if let Some(n) = opts.scale {
            update = update.desired_count(n);
        }
        log.line(format!(
            "UpdateService {service} -> {} at {}",
            short_revision(&new_arn),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ));
        let updated = match update.send().await {
            Ok(r) => r.service().cloned(),
            Err(e) => {
                let err = DeployError::aws(&format!("UpdateService {cluster}/{service}"), e);
                record.finish(DeployResult::Failed, Some(err.to_string()));
                self.history.save(&record)?;
                return Err(err);
            }
        };
        let new_deployment = updated.as_ref().and_then(primary_deployment).map(|p| p.0);
        if new_deployment.is_some() && new_deployment == previous_deployment && !force {
            log.line("note: the PRIMARY deployment id did not change after UpdateService");
        }
        let desired = opts.scale.unwrap_or_else(|| {
            updated
                .as_ref()
                .map(|s| s.desired_count)
                .unwrap_or(svc.desired_count)
        });

        let Some(timeout) = opts.timeout else {
            record.finish(
                DeployResult::Submitted,
                Some("not waited for (--timeout -1)".into()),
            );
            self.history.save(&record)?;
            outcome.deregistered = self.prune(opts, &new_arn, &current_arn, &target, log).await;
            return Ok(format!(
                "submitted {} to {service} (not waited for)",
                short_revision(&new_arn)
            ));
        };
        let ctx = WaitContext {
            cluster: cluster.clone(),
            service: service.to_string(),
            task_definition: new_arn.clone(),
            deployment_id: new_deployment,
            previous_deployment_id: previous_deployment,
            started_at,
            desired_count: desired,
            ignore_warnings: opts.ignore_warnings,
        };
        let rollout =
            rollout::wait_for_rollout(&self.observer, &ctx, timeout, opts.poll_interval, log).await;
        let failure = match rollout {
            Ok(why) => {
                log.line(format!("rollout succeeded: {why}"));
                match &opts.health_url {
                    Some(url) => crate::health::wait_http_healthy(
                        url,
                        opts.health_timeout,
                        Duration::from_secs(1)
                            .min(opts.poll_interval.max(Duration::from_millis(100))),
                        log,
                    )
                    .await
                    .err()
                    .map(|e| (e.to_string(), None)),
                    None => None,
                }
            }
            Err(f) => Some((f.to_string(), f.ecs_rolled_back_to.clone())),
        };
        let Some((reason, ecs_rollback)) = failure else {
            record.finish(DeployResult::Succeeded, None);
            self.history.save(&record)?;
            outcome.deregistered = self.prune(opts, &new_arn, &current_arn, &target, log).await;
            return Ok(format!("{service} is running {}", short_revision(&new_arn)));
        };
        log.line(format!(
            "deploy of {} failed: {reason}",
            short_revision(&new_arn)
        ));
        if !opts.rollback {
            record.finish(DeployResult::Failed, Some(reason.clone()));
            self.history.save(&record)?;
            return Err(DeployError::Rollout(format!(
                "{service}: {reason} (rollback disabled)"
            )));
        }
        let rollback_to = match self.history.last_known_good(&target, Some(&new_arn))? {
            Some(r) => Some((r.revision, "last known-good revision")),
            None if current_arn != new_arn => {
                Some((current_arn.clone(), "revision that ran before"))
            }
            None => None,
        };
        let Some((to, why)) = rollback_to else {
            record.finish(
                DeployResult::Failed,
                Some(format!("{reason}; nothing to roll back to")),
            );
            self.history.save(&record)?;
            return Err(DeployError::Rollout(format!(
                "{service}: {reason}; no earlier revision to roll back to"
            )));
        };
        log.line(format!(
            "rolling back {service} to {} ({why})",
            short_revision(&to)
        ));
        let rb = self
            .roll_back_to(
                cluster,
                service,
                &to,
                ecs_rollback,
                desired,
                opts.rollback_timeout,
                opts.poll_interval,
                log,
            )
            .await;
        match rb {
            Ok(()) => {
                outcome.rolled_back_to = Some(to.clone());
                record.rolled_back_to = Some(to.clone());
                record.finish(DeployResult::RolledBack, Some(reason.clone()));
                self.history.save(&record)?;
                Err(DeployError::Rollout(format!(
                    "{service}: {reason}\nrolled back to {} ({why})",
                    short_revision(&to)
                )))
            }
            Err(e) => {
                record.finish(
                    DeployResult::Failed,
                    Some(format!("{reason}; rollback failed: {e}")),
                );
                self.history.save(&record)?;
                Err(DeployError::Rollout(format!(
                    "{service}: {reason}\nrollback to {} FAILED too: {e}",
                    short_revision(&to)
                )))
            }
        }
    }

    /// Points the service at `to` (unless ECS's circuit breaker already did), waits, records.
    #[allow(clippy::too_many_arguments)]
    async fn roll_back_to(
        &self,
        cluster: &str,
        service: &str,
        to: &str,
        ecs_rollback: Option<(String, String)>,
        desired: i32,
        timeout: Duration,
        poll: Duration,
        log: &Log,
    ) -> Result<(), DeployError> {
        let target = target_key(cluster, service);
        let mut record = DeploymentRecord::start(&target, RecordKind::Rollback, to, None);
        self.history.save(&record)?;
        let started_at = now_secs();
        let deployment_id = match ecs_rollback {
            Some((id, td)) if td == to => {
                log.line(format!(
                    "ECS already rolled back to {}: waiting for deployment {id}",
                    short_revision(to)
                ));
                Some(id)
            }
            _ => {
                let resp = self
                    .client
                    .update_service()
                    .cluster(cluster)
                    .service(service)
                    .task_definition(to)
                    .send()
                    .await
                    .map_err(|e| {
                        DeployError::aws(
                            &format!("UpdateService {cluster}/{service} (rollback)"),
                            e,
                        )
                    });
                match resp {
                    Ok(r) => r.service().and_then(primary_deployment).map(|p| p.0),
                    Err(e) => {
                        record.finish(DeployResult::Failed, Some(e.to_string()));
                        self.history.save(&record)?;
                        return Err(e);
                    }
                }
            }
        };
        let ctx = WaitContext {
            cluster: cluster.into(),
            service: service.into(),
            task_definition: to.into(),
            deployment_id,
            previous_deployment_id: None,
            started_at,
            desired_count: desired,
            ignore_warnings: true,
        };
        match rollout::wait_for_rollout(&self.observer, &ctx, timeout, poll, log).await {
            Ok(why) => {
                log.line(format!("rollback rolled out: {why}"));
                record.finish(DeployResult::Succeeded, None);
                self.history.save(&record)?;
                Ok(())
            }
            Err(f) => {
                record.finish(DeployResult::Failed, Some(f.to_string()));
                self.history.save(&record)?;
                Err(DeployError::Rollout(f.to_string()))
            }
        }
    }

    /// `gantry rollback ecs`: to `to` (`REV`, `FAMILY:REV` or ARN), else the newest known-good
    /// revision that is not the current one, else the revision the history says ran before.
    pub async fn rollback(
        &self,
        cluster: &str,
        service: &str,
        to: Option<&str>,
        timeout: Option<Duration>,
        poll: Duration,
    ) -> Result<String, DeployError> {
        let svc = describe_service(&self.client, cluster, service).await?;
        let current = svc.task_definition().unwrap_or_default().to_string();
        let (current_td, _) = describe_task_definition(&self.client, &current).await?;
        let current_arn = current_td
            .task_definition_arn()
            .unwrap_or(&current)
            .to_string();
        let family = current_td.family().unwrap_or_default().to_string();
        let target = target_key(cluster, service);
        let wanted = match to {
            Some(rev) if rev.chars().all(|c| c.is_ascii_digit()) => format!("{family}:{rev}"),
            Some(rev) => rev.to_string(),
            None => match self.history.last_known_good(&target, Some(&current_arn))? {
                Some(r) => r.revision,
                None => self
                    .history
                    .list(Some(&target))?
                    .into_iter()
                    .rev()
                    .find(|r| r.revision == current_arn)
                    .and_then(|r| r.previous_revision)
                    .ok_or_else(|| {
                        DeployError::Usage(format!(
                            "no known-good revision of {target} in the history; pass --to REV"
                        ))
                    })?,
            },
        };
        let (td, _) = describe_task_definition(&self.client, &wanted).await?;
        ensure_active(&td)?;
        let to_arn = td.task_definition_arn().unwrap_or(&wanted).to_string();
        if to_arn == current_arn {
            return Err(DeployError::Usage(format!(
                "{service} already runs {}",
                short_revision(&to_arn)
            )));
        }
        self.log.line(format!(
            "rolling back {service}: {} -> {}",
            short_revision(&current_arn),
            short_revision(&to_arn)
        ));
        crate::history::withdraw_known_good(
            self.history,
            &target,
            &current_arn,
            &format!("rolled back to {} by hand", short_revision(&to_arn)),
        )?;
        match timeout {
            Some(t) => {
                self.roll_back_to(
                    cluster,
                    service,
                    &to_arn,
                    None,
                    svc.desired_count,
                    t,
                    poll,
                    &self.log,
                )
                .await?;
            }
            None => {
                self.client
                    .update_service()
                    .cluster(cluster)
                    .service(service)
                    .task_definition(&to_arn)
                    .send()
                    .await
                    .map_err(|e| {
                        DeployError::aws(&format!("UpdateService {cluster}/{service}"), e)
                    })?;
                let mut record = DeploymentRecord::start(
                    &target,
                    RecordKind::Rollback,
                    &to_arn,
                    Some(&current_arn),
                );
                record.finish(DeployResult::Submitted, Some("not waited for".into()));
                self.history.save(&record)?;
            }
        }
        Ok(format!(
            "{service} rolled back to {}",
            short_revision(&to_arn)
        ))
    }

    /// Deregisters ACTIVE revisions of the family beyond the newest `keep`, never the new one,
    /// the one that ran before, or the last known-good one. Failures are warnings.
    async fn prune(
        &self,
        opts: &EcsDeployOptions,
        new_arn: &str,
        previous_arn: &str,
        target: &str,
        log: &Log,
    ) -> Vec<String> {
        let Some(keep) = opts.keep_revisions else {
            return Vec::new();
        };
        let Some((family, _)) = family_and_revision(new_arn) else {
            return Vec::new();
        };
        let known_good = self
            .history
            .last_known_good(target, None)
            .ok()
            .flatten()
            .map(|r| r.revision);
        let mut arns: Vec<(i32, String)> = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let resp = self
                .client
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
            if arn == new_arn || arn == previous_arn || known_good.as_deref() == Some(arn.as_str())
            {
                continue;
            }
            match self
                .client
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
