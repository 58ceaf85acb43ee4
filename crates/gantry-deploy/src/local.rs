//! The local container host: `gantry deploy docker NAME --image IMAGE`, through the Docker
//! Engine API (Docker, or Podman's compatible socket).
//!
//! A deploy makes a new revision container, checks its health (an HTTP URL, else the image's
//! HEALTHCHECK, else "still running after a grace period"), then cuts over: the live container
//! `NAME` is stopped and kept as `NAME-rN` for rollback, and the new revision becomes `NAME`.
//!
//! With published ports the new revision is first started as a *candidate* on ephemeral host
//! ports, so the old revision keeps serving while the candidate is checked; an unhealthy
//! candidate is removed and the old revision never stops. A revision that fails its check after
//! the cut-over is removed and the previous container is started again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HealthStatusEnum, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use serde::{Deserialize, Serialize};

use crate::history::{DeployResult, DeploymentRecord, HistoryStore, RecordKind};
use crate::{DeployError, Log};

const LABEL_NAME: &str = "io.gantry.deploy";
const LABEL_REVISION: &str = "io.gantry.revision";

/// Connects to the container engine `gantry run` uses, found in the one
/// documented order ([`gantry_engine::docker::discover`]): `DOCKER_HOST`,
/// `/var/run/docker.sock`, `/run/podman/podman.sock`, then
/// `$XDG_RUNTIME_DIR/podman/podman.sock`; the first that answers.
pub fn connect() -> Result<Docker, DeployError> {
    use gantry_engine::docker::discover;
    let host = discover::discover_engine().map_err(|e| DeployError::Engine(e.to_string()))?;
    discover::client_for(&host).map_err(|e| DeployError::Engine(e.to_string()))
}

/// Everything needed to (re)create one revision; stored in the history so a rollback can
/// recreate a pruned revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub image: String,
    /// `[IP:]HOST:CONTAINER[/proto]`.
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub network: Option<String>,
}

/// What `gantry deploy docker` was asked to do.
#[derive(Debug, Clone)]
pub struct LocalDeployOptions {
    pub name: String,
    pub spec: ContainerSpec,
    pub health_url: Option<String>,
    pub health_timeout: Duration,
    /// With no URL and no HEALTHCHECK: how long the container must stay up.
    pub grace: Duration,
    pub rollback: bool,
    /// Stopped revisions kept for rollback.
    pub keep: usize,
}

impl LocalDeployOptions {
    pub fn new(name: &str, image: &str) -> Self {
        LocalDeployOptions {
            name: name.into(),
            spec: ContainerSpec {
                image: image.into(),
                ..Default::default()
            },
            health_url: None,
            health_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(2),
            rollback: true,
            keep: 3,
        }
    }
}

/// The result of a local deploy.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalOutcome {
    pub ok: bool,
    pub revision: u32,
    pub rolled_back_to: Option<u32>,
    pub message: String,
}

/// One port publication.
#[derive(Debug, Clone, PartialEq)]
struct PortSpec {
    ip: Option<String>,
    host: String,
    container: String,
}

fn parse_port(spec: &str) -> Result<PortSpec, DeployError> {
    let bad = || {
        DeployError::Usage(format!(
            "--port {spec:?}: expected [IP:]HOST:CONTAINER[/tcp|/udp]"
        ))
    };
    let (ports, proto) = match spec.rsplit_once('/') {
        Some((p, proto @ ("tcp" | "udp"))) => (p, proto),
        Some(_) => return Err(bad()),
        None => (spec, "tcp"),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [h, c] => (None, *h, *c),
        [ip, h, c] => (Some(ip.to_string()), *h, *c),
        _ => return Err(bad()),
    };
    if host.parse::<u16>().is_err() || container.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(PortSpec {
        ip,
        host: host.into(),
        container: format!("{container}/{proto}"),
    })
}

/// `docker:NAME`, the history key.
pub fn target_key(name: &str) -> String {
    format!("docker:{name}")
}

/// A container of this deploy name.
#[derive(Debug, Clone)]
struct Revision {
    id: String,
    name: String,
    revision: u32,
    running: bool,
}

/// Deploys to, and rolls back on, a local container engine.
pub struct LocalDeployer<'a> {
    docker: Docker,
    history: &'a dyn HistoryStore,
    log: Log,
}

impl<'a> LocalDeployer<'a> {
    pub fn new(docker: Docker, history: &'a dyn HistoryStore, log: Log) -> Self {
        LocalDeployer {
            docker,
            history,
            log,
        }
    }

    async fn revisions(&self, name: &str) -> Result<Vec<Revision>, DeployError> {
        let filters: HashMap<&str, Vec<String>> =
            HashMap::from([("label", vec![format!("{LABEL_NAME}={name}")])]);
        let list = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| DeployError::engine("listing containers", e))?;
        let mut out: Vec<Revision> = list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let revision = labels.get(LABEL_REVISION)?.parse().ok()?;
                Some(Revision {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .unwrap_or_default()
                        .first()
                        .map(|n| n.trim_start_matches('/').to_string())
                        .unwrap_or_default(),
                    revision,
                    running: c.state.map(|s| s.to_string() == "running").unwrap_or(false),
                })
            })
            .collect();
        out.sort_by_key(|r| r.revision);
        Ok(out)
    }

    async fn create(
        &self,
        container_name: &str,
        deploy_name: &str,
        revision: u32,
        spec: &ContainerSpec,
        ephemeral_ports: bool,
    ) -> Result<String, DeployError> {
        let ports = spec
            .ports
            .iter()
            .map(|p| parse_port(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for p in &ports {
            let binding = PortBinding {
                host_ip: if ephemeral_ports {
                    Some("127.0.0.1".into())
                } else {
                    p.ip.clone()
                },
                host_port: Some(if ephemeral_ports {
                    String::new()
                } else {
                    p.host.clone()
                }),
            };
            bindings
                .entry(p.container.clone())
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(binding);
        }
        let labels = HashMap::from([
            (LABEL_NAME.to_string(), deploy_name.to_string()),
            (LABEL_REVISION.to_string(), revision.to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.command.clone(),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            exposed_ports: Some(ports.iter().map(|p| p.container.clone()).collect()),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                network_mode: spec.network.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(
                    CreateContainerOptionsBuilder::new()
                        .name(container_name)
                        .build(),
                ),
                body,
            )
            .await
            .map_err(|e| {
                DeployError::engine(&format!("creating {container_name} from {}", spec.image), e)
            })?;
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| DeployError::engine(&format!("starting {container_name}"), e))?;
        Ok(created.id)
    }

    async fn remove(&self, id: &str) {
        let opts = RemoveContainerOptionsBuilder::new().force(true).build();
        if let Err(e) = self.docker.remove_container(id, Some(opts)).await {
            self.log
                .line(format!("warning: removing container {id}: {e}"));
        }
    }

    async fn stop(&self, id: &str) -> Result<(), DeployError> {
        self.docker
            .stop_container(id, Some(StopContainerOptionsBuilder::new().t(5).build()))
            .await
            .map_err(|e| DeployError::engine(&format!("stopping {id}"), e))
    }

    async fn rename(&self, id: &str, to: &str) -> Result<(), DeployError> {
        self.docker
            .rename_container(id, RenameContainerOptionsBuilder::new().name(to).build())
            .await
            .map_err(|e| DeployError::engine(&format!("renaming {id} to {to}"), e))
    }

    /// The host port the engine gave `container_port` (e.g. `80/tcp`).
    async fn mapped_port(&self, id: &str, container_port: &str) -> Option<String> {
        let info = self.docker.inspect_container(id, None).await.ok()?;
        let ports = info.network_settings?.ports?;
        ports
            .get(container_port)?
            .as_ref()?
            .iter()
            .find_map(|b| b.host_port.clone().filter(|p| !p.is_empty()))
    }

    /// Health of a started container, by URL, HEALTHCHECK, or staying up for the grace period.
    async fn check_health(
        &self,
        id: &str,
        url: Option<&str>,
        timeout: Duration,
        grace: Duration,
    ) -> Result<String, DeployError> {
        let deadline = Instant::now() + timeout;
        let mut last: String;
        let started = Instant::now();
        loop {
            let info = self
                .docker
                .inspect_container(id, None)
                .await
                .map_err(|e| DeployError::engine("inspecting the new revision", e))?;
            let state = info.state.unwrap_or_default();
            if state.running != Some(true) {
                return Err(DeployError::Health(format!(
                    "the container is not running (exit code {}){}",
                    state
                        .exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "?".into()),
                    state
                        .error
                        .filter(|e| !e.is_empty())
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )));
            }
            if let Some(url) = url {
                let probe = url.to_string();
                let per_request = Duration::from_secs(2);
                match tokio::task::spawn_blocking(move || {
                    crate::health::probe_once(&probe, per_request)
                })
                .await
                {
                    Ok(Ok(code)) => return Ok(format!("{url} answered {code}")),
                    Ok(Err(e)) => last = e,
                    Err(e) => last = e.to_string(),
                }
            } else {
                match state.health.and_then(|h| h.status) {
                    Some(HealthStatusEnum::HEALTHY) => {
                        return Ok("HEALTHCHECK reports healthy".into());
                    }
                    Some(HealthStatusEnum::UNHEALTHY) => {
                        return Err(DeployError::Health(
                            "the container's HEALTHCHECK reports unhealthy".into(),
                        ));
                    }
                    Some(HealthStatusEnum::STARTING) => last = "HEALTHCHECK still starting".into(),
                    _ => {
                        if started.elapsed() >= grace {
                            return Ok(format!(
                                "still running after {}s (no health URL or HEALTHCHECK)",
                                grace.as_secs()
                            ));
                        }
                        last = "waiting out the grace period".into();
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(DeployError::Health(format!(
                    "not healthy within {}s: {last}",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Deploys a new revision; see the module docs for the cut-over and rollback rules.
    pub async fn deploy(&self, opts: &LocalDeployOptions) -> Result<LocalOutcome, DeployError> {
        let name = &opts.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(DeployError::Usage(format!(
                "invalid deploy name {name:?}: use [a-zA-Z0-9_.-]"
            )));
        }
        let ports = opts
            .spec
            .ports
            .iter()
            .map(|p| parse_port(p))
            .collect::<Result<Vec<_>, _>>()?;
        let revisions = self.revisions(name).await?;
        let live = revisions.iter().find(|r| r.name == *name).cloned();
        let target = target_key(name);
        // Failed revisions leave no container; the history keeps their numbers taken.
        let recorded = self
            .history
            .list(Some(&target))?
            .iter()
            .filter(|r| r.target == target)
            .filter_map(|r| r.revision.trim_start_matches('r').parse::<u32>().ok())
            .max()
            .unwrap_or(0);
        let revision = revisions
            .iter()
            .map(|r| r.revision)
            .max()
            .unwrap_or(0)
            .max(recorded)
            + 1;
        let mut record = DeploymentRecord::start(
            &target,
            RecordKind::Deploy,
            &format!("r{revision}"),
            live.as_ref().map(|l| format!("r{}", l.revision)).as_deref(),
        );
        record
            .details
            .insert("image".into(), opts.spec.image.clone());
        record.details.insert(
            "spec".into(),
            serde_json::to_string(&opts.spec).map_err(|e| DeployError::Usage(e.to_string()))?,
        );
        self.history.save(&record)?;
        let rev_name = format!("{name}-r{revision}");
        self.log.line(format!(
            "deploying {} as revision {revision}",
            opts.spec.image
        ));

        // Phase 1: a candidate on ephemeral ports while the live revision keeps serving.
        let candidate_phase = live.as_ref().is_some_and(|l| l.running) && !ports.is_empty();
        let id = match self
            .create(&rev_name, name, revision, &opts.spec, candidate_phase)
            .await
        {
            Ok(id) => id,
            Err(e) => {
                record.finish(DeployResult::Failed, Some(e.to_string()));
                self.history.save(&record)?;
                return Err(e);
            }
        };
        if candidate_phase {
            let url = match &opts.health_url {
                Some(url) => self.rewrite_url_for_candidate(url, &ports, &id).await,
                None => None,
            };
            let checked = if opts.health_url.is_some() && url.is_none() {
                // The URL does not name a published port: it can only be probed after cut-over.
                self.check_health(&id, None, opts.health_timeout, opts.grace)
                    .await
            } else {
                self.check_health(&id, url.as_deref(), opts.health_timeout, opts.grace)
                    .await
            };
            match checked {
                Ok(why) => self.log.line(format!("candidate healthy: {why}")),
                Err(e) => {
                    self.remove(&id).await;
                    let live_rev = live.as_ref().map(|l| l.revision).unwrap_or(0);
                    let msg = format!(
                        "revision {revision} is unhealthy: {e}; it never took traffic, r{live_rev} keeps serving"
                    );
                    self.log.line(format!("error: {msg}"));
                    record.rolled_back_to = Some(format!("r{live_rev}"));
                    record.finish(DeployResult::RolledBack, Some(msg.clone()));
                    self.history.save(&record)?;
                    return Ok(LocalOutcome {
                        ok: false,
                        revision,
                        rolled_back_to: Some(live_rev),
                        message: msg,
                    });
                }
            }
            // The candidate passed; recreate it on the real ports after stopping the old one.
            self.remove(&id).await;
        }

        // Phase 2: cut over.
        if let Some(l) = &live {
            if l.running {
                self.stop(&l.id).await?;
            }
            self.rename(&l.id, &format!("{name}-r{}", l.revision))
                .await?;
        }
        let final_id = if candidate_phase {
            self.create(name, name, revision, &opts.spec, false).await
        } else {
            self.rename(&id, name).await.map(|_| id.clone())
        };
        let checked = match &final_id {
            Ok(fid) => {
                self.check_health(
                    fid,
                    opts.health_url.as_deref(),
                    opts.health_timeout,
                    opts.grace,
                )
                .await
            }
            Err(e) => Err(DeployError::Engine(e.to_string())),
        };
        match checked {
            Ok(why) => {
                self.log.line(format!("revision {revision} is live: {why}"));
                record.finish(DeployResult::Succeeded, None);
                self.history.save(&record)?;
                self.prune(name, opts.keep).await;
                Ok(LocalOutcome {
                    ok: true,
                    revision,
                    rolled_back_to: None,
                    message: why,
                })
            }
            Err(e) => {
                let reason = format!("revision {revision} is unhealthy after the cut-over: {e}");
                self.log.line(format!("error: {reason}"));
                if let Ok(fid) = &final_id {
                    self.remove(fid).await;
                }
                if !opts.rollback {
                    record.finish(
                        DeployResult::Failed,
                        Some(format!("{reason} (rollback disabled)")),
                    );
                    self.history.save(&record)?;
                    return Ok(LocalOutcome {
                        ok: false,
                        revision,
                        rolled_back_to: None,
                        message: reason,
                    });
                }
                let back = self.restore(name, live.as_ref(), revision, opts).await;
                match back {
                    Ok(rev) => {
                        let msg = format!("{reason}; rolled back to r{rev}");
                        record.rolled_back_to = Some(format!("r{rev}"));
                        record.finish(DeployResult::RolledBack, Some(msg.clone()));
                        self.history.save(&record)?;
                        Ok(LocalOutcome {
                            ok: false,
                            revision,
                            rolled_back_to: Some(rev),
                            message: msg,
                        })
                    }
                    Err(e2) => {
                        let msg = format!("{reason}; rollback failed: {e2}");
                        record.finish(DeployResult::Failed, Some(msg.clone()));
                        self.history.save(&record)?;
                        Ok(LocalOutcome {
                            ok: false,
                            revision,
                            rolled_back_to: None,
                            message: msg,
                        })
                    }
                }
            }
        }
    }

    /// Maps a health URL on a published host port to the candidate's ephemeral port.
    async fn rewrite_url_for_candidate(
        &self,
        url: &str,
        ports: &[PortSpec],
        id: &str,
    ) -> Option<String> {
        let (scheme, rest) = url.split_once("://")?;
        let (authority, path) = rest
            .split_once('/')
            .map(|(a, p)| (a, format!("/{p}")))
            .unwrap_or((rest, String::new()));
        let (host, port) = authority.rsplit_once(':')?;
        let spec = ports.iter().find(|p| p.host == port)?;
        let mapped = self.mapped_port(id, &spec.container).await?;
        let host = if host == "localhost" || host.starts_with("127.") || host == "0.0.0.0" {
            "127.0.0.1"
        } else {
            host
        };
        Some(format!("{scheme}://{host}:{mapped}{path}"))
    }

    /// Brings back the previous live container, or recreates the last known-good revision.
    async fn restore(
        &self,
        name: &str,
        previous: Option<&Revision>,
        failed: u32,
        opts: &LocalDeployOptions,
    ) -> Result<u32, DeployError> {
        if let Some(p) = previous {
            self.rename(&p.id, name).await?;
            self.docker
                .start_container(&p.id, None)
                .await
                .map_err(|e| DeployError::engine(&format!("restarting r{}", p.revision), e))?;
            let why = self
                .check_health(
                    &p.id,
                    opts.health_url.as_deref(),
                    opts.health_timeout,
                    opts.grace,
                )
                .await?;
            self.log
                .line(format!("r{} is serving again: {why}", p.revision));
            return Ok(p.revision);
        }
        let good = self
            .history
            .last_known_good(&target_key(name), Some(&format!("r{failed}")))?
            .ok_or_else(|| DeployError::Usage("no earlier revision to roll back to".into()))?;
        self.recreate(name, &good, opts).await
    }

    async fn recreate(
        &self,
        name: &str,
        good: &DeploymentRecord,
        opts: &LocalDeployOptions,
    ) -> Result<u32, DeployError> {
        let spec: ContainerSpec = good
            .details
            .get("spec")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| {
                DeployError::History(format!("record {} has no container spec", good.id))
            })?;
        let rev: u32 = good.revision.trim_start_matches('r').parse().unwrap_or(0);
        let id = self.create(name, name, rev, &spec, false).await?;
        self.check_health(
            &id,
            opts.health_url.as_deref(),
            opts.health_timeout,
            opts.grace,
        )
        .await?;
        Ok(rev)
    }

    /// `gantry rollback docker NAME [--to REV]`: to REV, else the newest known-good revision
    /// other than the live one.
    pub async fn rollback(
        &self,
        name: &str,
        to: Option<u32>,
        opts: &LocalDeployOptions,
    ) -> Result<u32, DeployError> {
        let revisions = self.revisions(name).await?;
        let live = revisions.iter().find(|r| r.name == name).cloned();
        let wanted = match to {
            Some(r) => r,
            None => {
                let live_rev = live.as_ref().map(|l| format!("r{}", l.revision));
                let good = self
                    .history
                    .last_known_good(&target_key(name), live_rev.as_deref())?
                    .ok_or_else(|| {
                        DeployError::Usage(format!(
                            "no known-good revision of {name} in the history; pass --to REV"
                        ))
                    })?;
                good.revision
                    .trim_start_matches('r')
                    .parse()
                    .map_err(|_| DeployError::History(format!("bad revision {}", good.revision)))?
            }
        };
        if live.as_ref().is_some_and(|l| l.revision == wanted) {
            return Err(DeployError::Usage(format!("{name} already runs r{wanted}")));
        }
        let mut record = DeploymentRecord::start(
            &target_key(name),
            RecordKind::Rollback,
            &format!("r{wanted}"),
            live.as_ref().map(|l| format!("r{}", l.revision)).as_deref(),
        );
        self.history.save(&record)?;
        if let Some(l) = &live {
            crate::history::withdraw_known_good(
                self.history,
                &target_key(name),
                &format!("r{}", l.revision),
                &format!("rolled back to r{wanted} by hand"),
            )?;
            if l.running {
                self.stop(&l.id).await?;
            }
            self.rename(&l.id, &format!("{name}-r{}", l.revision))
                .await?;
        }
        let result = match revisions.iter().find(|r| r.revision == wanted) {
            Some(kept) => {
                self.rename(&kept.id, name).await?;
                self.docker
                    .start_container(&kept.id, None)
                    .await
                    .map_err(|e| DeployError::engine(&format!("starting r{wanted}"), e))?;
                self.check_health(
                    &kept.id,
                    opts.health_url.as_deref(),
                    opts.health_timeout,
                    opts.grace,
                )
                .await
                .map(|_| wanted)
            }
            None => {
                let rec = self
                    .history
                    .list(Some(&target_key(name)))?
                    .into_iter()
                    .rev()
                    .find(|r| r.revision == format!("r{wanted}") && r.details.contains_key("spec"))
                    .ok_or_else(|| {
                        DeployError::Usage(format!(
                            "revision r{wanted} of {name} is neither kept nor recorded"
                        ))
                    })?;
                self.recreate(name, &rec, opts).await
            }
        };
        match &result {
            Ok(_) => record.finish(DeployResult::Succeeded, None),
            Err(e) => record.finish(DeployResult::Failed, Some(e.to_string())),
        }
        self.history.save(&record)?;
        result
    }

    /// Removes stopped revisions beyond the newest `keep`.
    async fn prune(&self, name: &str, keep: usize) {
        let Ok(revisions) = self.revisions(name).await else {
            return;
        };
        let stopped: Vec<&Revision> = revisions
            .iter()
            .filter(|r| r.name != name && !r.running)
            .collect();
        if stopped.len() > keep {
            for r in &stopped[..stopped.len() - keep] {
                self.log.line(format!("removing old revision {}", r.name));
                self.remove(&r.id).await;
            }
        }
    }

    /// Stops and removes every container of `name` (tests and `--destroy`).
    pub async fn destroy(&self, name: &str) -> Result<usize, DeployError> {
        let revisions = self.revisions(name).await?;
        for r in &revisions {
            self.remove(&r.id).await;
        }
        Ok(revisions.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs() {
        assert_eq!(
            parse_port("8080:80").expect("port"),
            PortSpec {
                ip: None,
                host: "8080".into(),
                container: "80/tcp".into()
            }
        );
        assert_eq!(
            parse_port("127.0.0.1:53:53/udp").expect("port").container,
            "53/udp"
        );
        assert!(parse_port("80").is_err());
        assert!(parse_port("a:80").is_err());
        assert!(parse_port("1:2/sctp").is_err());
    }
}
