//! Task-definition changes, applied in memory to a copy of the current revision while keeping a
//! readable diff (ecs-deploy's model): images, environment, secrets, command, cpu/memory, ports,
//! health check, log configuration, docker labels, roles.

use std::collections::HashMap;
use std::path::Path;

use aws_sdk_ecs::types::{
    ContainerDefinition, HealthCheck, KeyValuePair, LogConfiguration, LogDriver, PortMapping,
    Secret, TaskDefinition, TransportProtocol,
};

use crate::DeployError;

/// A container health check, as ecs-deploy's `--health-check C CMD INTERVAL TIMEOUT RETRIES START`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckSpec {
    pub command: String,
    pub interval: i32,
    pub timeout: i32,
    pub retries: i32,
    pub start_period: i32,
}

/// Everything a deploy may change. Tuples start with the container name.
#[derive(Debug, Clone, Default)]
pub struct TaskChanges {
    /// New tag for every container's image.
    pub tag: Option<String>,
    pub images: Vec<(String, String)>,
    pub env: Vec<(String, String, String)>,
    pub secrets: Vec<(String, String, String)>,
    /// Drop environment variables not given, in the containers that got some.
    pub exclusive_env: bool,
    /// Drop secrets not given, in the containers that got some.
    pub exclusive_secrets: bool,
    pub commands: Vec<(String, String)>,
    pub cpu: Vec<(String, i32)>,
    pub memory: Vec<(String, i32)>,
    pub memory_reservation: Vec<(String, i32)>,
    /// Task-level cpu and memory (Fargate).
    pub task_cpu: Option<String>,
    pub task_memory: Option<String>,
    /// (container, `[HOST:]CONTAINER[/udp]`).
    pub ports: Vec<(String, String)>,
    pub health_checks: Vec<(String, HealthCheckSpec)>,
    /// (container, driver, option, value); several options for one container accumulate.
    pub log_configs: Vec<(String, String, String, String)>,
    pub docker_labels: Vec<(String, String, String)>,
    pub task_role: Option<String>,
    pub execution_role: Option<String>,
    /// (container, S3 object ARN): the container's environment files (`--s3-env-file`).
    pub s3_env_files: Vec<(String, String)>,
}

/// `s3://BUCKET/KEY` or `arn:aws:s3:::BUCKET/KEY` -> the object ARN ECS wants.
pub fn s3_object_arn(object: &str) -> Result<String, DeployError> {
    let arn = match object.strip_prefix("s3://") {
        Some(rest) => format!("arn:aws:s3:::{rest}"),
        None => object.to_string(),
    };
    let ok = arn
        .strip_prefix("arn:")
        .and_then(|r| r.split_once(":s3:::"))
        .is_some_and(|(partition, path)| {
            partition.starts_with("aws")
                && path
                    .split_once('/')
                    .is_some_and(|(b, k)| !b.is_empty() && !k.is_empty())
        });
    if ok {
        Ok(arn)
    } else {
        Err(DeployError::Usage(format!(
            "--s3-env-file {object:?}: expected s3://BUCKET/KEY or arn:aws:s3:::BUCKET/KEY"
        )))
    }
}

impl TaskChanges {
    /// Adds `--secrets-env-file C FILE`: dotenv lines `NAME=PARAMETER_ARN` (SSM parameter or
    /// Secrets Manager ARN), like ecs-deploy's secrets file.
    pub fn add_secrets_file(&mut self, container: &str, path: &Path) -> Result<(), DeployError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            DeployError::Usage(format!("cannot read secrets file {}: {e}", path.display()))
        })?;
        for (k, v) in parse_dotenv(&text).map_err(|(line, msg)| {
            DeployError::Usage(format!("{}:{line}: {msg}", path.display()))
        })? {
            if v.is_empty() {
                return Err(DeployError::Usage(format!(
                    "{}: secret {k} has no parameter ARN",
                    path.display()
                )));
            }
            self.secrets.push((container.to_string(), k, v));
        }
        Ok(())
    }

    /// Adds `--env-file C FILE`: dotenv lines `KEY=value`, `#` comments, optional quotes.
    pub fn add_env_file(&mut self, container: &str, path: &Path) -> Result<(), DeployError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            DeployError::Usage(format!("cannot read env file {}: {e}", path.display()))
        })?;
        for (k, v) in parse_dotenv(&text).map_err(|(line, msg)| {
            DeployError::Usage(format!("{}:{line}: {msg}", path.display()))
        })? {
            self.env.push((container.to_string(), k, v));
        }
        Ok(())
    }

    /// True when nothing would change.
    pub fn is_empty(&self) -> bool {
        self.tag.is_none()
            && self.images.is_empty()
            && self.env.is_empty()
            && self.secrets.is_empty()
            && self.commands.is_empty()
            && self.cpu.is_empty()
            && self.memory.is_empty()
            && self.memory_reservation.is_empty()
            && self.task_cpu.is_none()
            && self.task_memory.is_none()
            && self.ports.is_empty()
            && self.health_checks.is_empty()
            && self.log_configs.is_empty()
            && self.docker_labels.is_empty()
            && self.task_role.is_none()
            && self.execution_role.is_none()
            && self.s3_env_files.is_empty()
    }

    fn containers_named(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        names.extend(self.images.iter().map(|x| x.0.as_str()));
        names.extend(self.env.iter().map(|x| x.0.as_str()));
        names.extend(self.secrets.iter().map(|x| x.0.as_str()));
        names.extend(self.commands.iter().map(|x| x.0.as_str()));
        names.extend(self.cpu.iter().map(|x| x.0.as_str()));
        names.extend(self.memory.iter().map(|x| x.0.as_str()));
        names.extend(self.memory_reservation.iter().map(|x| x.0.as_str()));
        names.extend(self.ports.iter().map(|x| x.0.as_str()));
        names.extend(self.health_checks.iter().map(|x| x.0.as_str()));
        names.extend(self.log_configs.iter().map(|x| x.0.as_str()));
        names.extend(self.docker_labels.iter().map(|x| x.0.as_str()));
        names.extend(self.s3_env_files.iter().map(|x| x.0.as_str()));
        names
    }
}

/// Parses dotenv text. Errors carry the 1-based line number.
pub fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err((i + 1, format!("expected KEY=value, got {line:?}")));
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err((i + 1, format!("invalid variable name {k:?}")));
        }
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// One field that changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Container name, or `task` for task-level fields.
    pub scope: String,
    pub field: String,
    pub old: String,
    pub new: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: {} -> {}",
            self.scope,
            self.field,
            show(&self.old),
            show(&self.new)
        )
    }
}

fn show(v: &str) -> &str {
    if v.is_empty() { "(none)" } else { v }
}

/// Formats changes for `--diff`, one per line.
pub fn format_diff(changes: &[Change]) -> String {
    changes.iter().map(|c| format!("  {c}\n")).collect()
}

/// Splits a command like a shell would (quotes, backslashes); a JSON array is taken as is.
pub fn split_command(cmd: &str) -> Result<Vec<String>, DeployError> {
    let trimmed = cmd.trim();
    if trimmed.starts_with('[') {
        return serde_json::from_str(trimmed).map_err(|e| {
            DeployError::Usage(format!("--command {cmd:?}: invalid JSON array: {e}"))
        });
    }
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = trimmed.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(DeployError::Usage(format!(
            "--command {cmd:?}: unclosed quote"
        )));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Replaces the tag of `image` (keeps registry host ports and digests apart).
pub fn retag(image: &str, tag: &str) -> String {
    let base = image.split('@').next().unwrap_or(image);
    let slash = base.rfind('/').map(|i| i + 1).unwrap_or(0);
    let name_end = base[slash..]
        .find(':')
        .map(|i| slash + i)
        .unwrap_or(base.len());
    format!("{}:{tag}", &base[..name_end])
}

fn parse_port(spec: &str) -> Result<PortMapping, DeployError> {
    let bad = || {
        DeployError::Usage(format!(
            "--port {spec:?}: expected [HOST:]CONTAINER[/tcp|/udp]"
        ))
    };
    let (ports, proto) = match spec.split_once('/') {
        Some((p, "udp")) => (p, TransportProtocol::Udp),
        Some((p, "tcp")) => (p, TransportProtocol::Tcp),
        Some(_) => return Err(bad()),
        None => (spec, TransportProtocol::Tcp),
    };
    let (host, container) = match ports.split_once(':') {
        Some((h, c)) => (
            Some(h.parse::<i32>().map_err(|_| bad())?),
            c.parse::<i32>().map_err(|_| bad())?,
        ),
        None => (None, ports.parse::<i32>().map_err(|_| bad())?),
    };
    Ok(PortMapping::builder()
        .container_port(container)
        .set_host_port(host)
        .protocol(proto)
        .build())
}

fn env_text(c: &ContainerDefinition) -> String {
    let mut v: Vec<String> = c
        .environment()
        .iter()
        .map(|kv| format!("{}={}", kv.name().unwrap_or(""), kv.value().unwrap_or("")))
        .collect();
    v.sort();
    v.join(",")
}

/// Applies `changes` to a copy of `td`. Unknown container names are an error that lists the
/// containers the task definition has.
pub fn apply(
    td: &TaskDefinition,
    changes: &TaskChanges,
) -> Result<(TaskDefinition, Vec<Change>), DeployError> {
    let mut out = td.clone();
    let mut diff = Vec::new();
    let containers = out.container_definitions.get_or_insert_with(Vec::new);
    let known: Vec<String> = containers.iter().filter_map(|c| c.name.clone()).collect();
    for name in changes.containers_named() {
        if !known.iter().any(|k| k == name) {
            return Err(DeployError::Usage(format!(
                "task definition {} has no container {name:?} (containers: {})",
                td.family().unwrap_or("?"),
                known.join(", ")
            )));
        }
    }
    for c in containers.iter_mut() {
        let name = c.name.clone().unwrap_or_default();
        let mut change = |field: &str, old: String, new: String| {
            if old != new {
                diff.push(Change {
                    scope: name.clone(),
                    field: field.to_string(),
                    old,
                    new,
                });
            }
        };
        // Images: --image wins over --tag for that container.
        let old_image = c.image.clone().unwrap_or_default();
        let mut new_image = old_image.clone();
        if let Some(tag) = &changes.tag {
            new_image = retag(&old_image, tag);
        }
        if let Some((_, img)) = changes.images.iter().rev().find(|(n, _)| *n == name) {
            new_image = img.clone();
        }
        change("image", old_image, new_image.clone());
        c.image = Some(new_image);

        // Environment.
        let given: Vec<&(String, String, String)> =
            changes.env.iter().filter(|e| e.0 == name).collect();
        if !given.is_empty() {
            let before = env_text(c);
            let mut env: Vec<KeyValuePair> = if changes.exclusive_env {
                Vec::new()
            } else {
                c.environment.clone().unwrap_or_default()
            };
            for (_, k, v) in given {
                match env.iter_mut().find(|kv| kv.name() == Some(k.as_str())) {
                    Some(kv) => kv.value = Some(v.clone()),
                    None => env.push(KeyValuePair::builder().name(k).value(v).build()),
                }
            }
            c.environment = Some(env);
            change("environment", before, env_text(c));
        }

        // Secrets.
        let given: Vec<&(String, String, String)> =
            changes.secrets.iter().filter(|e| e.0 == name).collect();
        if !given.is_empty() {
            let text = |s: &[Secret]| {
                let mut v: Vec<String> = s
                    .iter()
                    .map(|s| format!("{}={}", s.name, s.value_from))
                    .collect();
                v.sort();
                v.join(",")
            };
            let before = text(c.secrets());
            let mut secrets: Vec<Secret> = if changes.exclusive_secrets {
                Vec::new()
            } else {
                c.secrets.clone().unwrap_or_default()
            };
            for (_, k, param) in given {
                match secrets.iter_mut().find(|s| s.name == *k) {
                    Some(s) => s.value_from = param.clone(),
                    None => secrets.push(
                        Secret::builder()
                            .name(k)
                            .value_from(param)
                            .build()
                            .map_err(|e| DeployError::Usage(format!("--secret {name} {k}: {e}")))?,
                    ),
                }
            }
            c.secrets = Some(secrets);
            change("secrets", before, text(c.secrets()));
        }

        // Environment files from S3: the given ones replace the container's list.
        let files: Vec<&String> = changes
            .s3_env_files
            .iter()
            .filter(|f| f.0 == name)
            .map(|f| &f.1)
            .collect();
        if !files.is_empty() {
            let text = |c: &aws_sdk_ecs::types::ContainerDefinition| {
                c.environment_files()
                    .iter()
                    .map(|f| f.value().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let before = text(c);
            let mut list = Vec::new();
            for f in files {
                list.push(
                    aws_sdk_ecs::types::EnvironmentFile::builder()
                        .value(f)
                        .r#type(aws_sdk_ecs::types::EnvironmentFileType::S3)
                        .build()
                        .map_err(|e| DeployError::Usage(format!("--s3-env-file {name}: {e}")))?,
                );
            }
            c.environment_files = Some(list);
            change("environment files", before, text(c));
        }

        if let Some((_, cmd)) = changes.commands.iter().rev().find(|x| x.0 == name) {
            let before = serde_json::to_string(c.command()).unwrap_or_default();
            c.command = Some(split_command(cmd)?);
            change(
                "command",
                before,
                serde_json::to_string(c.command()).unwrap_or_default(),
            );
        }
        if let Some((_, v)) = changes.cpu.iter().rev().find(|x| x.0 == name) {
            change("cpu", c.cpu.to_string(), v.to_string());
            c.cpu = *v;
        }
        if let Some((_, v)) = changes.memory.iter().rev().find(|x| x.0 == name) {
            change(
                "memory",
                c.memory.map(|m| m.to_string()).unwrap_or_default(),
                v.to_string(),
            );
            c.memory = Some(*v);
        }
        if let Some((_, v)) = changes
            .memory_reservation
            .iter()
            .rev()
            .find(|x| x.0 == name)
        {
            change(
                "memoryReservation",
                c.memory_reservation
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
                v.to_string(),
            );
            c.memory_reservation = Some(*v);
        }
        let ports: Vec<&(String, String)> = changes.ports.iter().filter(|p| p.0 == name).collect();
        if !ports.is_empty() {
            let text = |p: &[PortMapping]| {
                p.iter()
                    .map(|m| match m.host_port {
                        Some(h) => format!("{h}:{}", m.container_port.unwrap_or(0)),
                        None => m.container_port.unwrap_or(0).to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let before = text(c.port_mappings());
            let mut mappings = Vec::new();
            for (_, spec) in ports {
                mappings.push(parse_port(spec)?);
            }
            c.port_mappings = Some(mappings);
            change("portMappings", before, text(c.port_mappings()));
        }
        if let Some((_, hc)) = changes.health_checks.iter().rev().find(|x| x.0 == name) {
            let text = |h: Option<&HealthCheck>| {
                h.map(|h| {
                    format!(
                        "{} every {}s timeout {}s retries {} start {}s",
                        h.command.join(" "),
                        h.interval.unwrap_or(30),
                        h.timeout.unwrap_or(5),
                        h.retries.unwrap_or(3),
                        h.start_period.unwrap_or(0)
                    )
                })
                .unwrap_or_default()
            };
            let before = text(c.health_check.as_ref());
            c.health_check = Some(
                HealthCheck::builder()
                    .command("CMD-SHELL")
                    .command(&hc.command)
                    .interval(hc.interval)
                    .timeout(hc.timeout)
                    .retries(hc.retries)
                    .start_period(hc.start_period)
                    .build()
                    .map_err(|e| DeployError::Usage(format!("--health-check {name}: {e}")))?,
            );
            change("healthCheck", before, text(c.health_check.as_ref()));
        }
        let logs: Vec<&(String, String, String, String)> =
            changes.log_configs.iter().filter(|x| x.0 == name).collect();
        if !logs.is_empty() {
            let text = |l: Option<&LogConfiguration>| {
                l.map(|l| {
                    let mut opts: Vec<String> = l
                        .options
                        .iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    opts.sort();
                    format!("{} {}", l.log_driver.as_str(), opts.join(","))
                })
                .unwrap_or_default()
            };
            let before = text(c.log_configuration.as_ref());
            let driver = logs[logs.len() - 1].1.clone();
            let mut options = HashMap::new();
            for (_, _, k, v) in &logs {
                options.insert(k.clone(), v.clone());
            }
            c.log_configuration = Some(
                LogConfiguration::builder()
                    .log_driver(LogDriver::from(driver.as_str()))
                    .set_options(Some(options))
                    .build()
                    .map_err(|e| DeployError::Usage(format!("--log {name}: {e}")))?,
            );
            change(
                "logConfiguration",
                before,
                text(c.log_configuration.as_ref()),
            );
        }
        let labels: Vec<&(String, String, String)> = changes
            .docker_labels
            .iter()
            .filter(|x| x.0 == name)
            .collect();
        for (_, k, v) in labels {
            let map = c.docker_labels.get_or_insert_with(HashMap::new);
            let old = map.insert(k.clone(), v.clone()).unwrap_or_default();
            change(&format!("dockerLabels.{k}"), old, v.clone());
        }
    }
    let mut task_change = |field: &str, old: Option<&str>, new: &str| {
        if old.unwrap_or("") != new {
            diff.push(Change {
                scope: "task".into(),
                field: field.into(),
                old: old.unwrap_or("").into(),
                new: new.into(),
            });
        }
    };
    if let Some(v) = &changes.task_cpu {
        task_change("cpu", out.cpu.as_deref(), v);
        out.cpu = Some(v.clone());
    }
    if let Some(v) = &changes.task_memory {
        task_change("memory", out.memory.as_deref(), v);
        out.memory = Some(v.clone());
    }
    if let Some(v) = &changes.task_role {
        task_change("taskRoleArn", out.task_role_arn.as_deref(), v);
        out.task_role_arn = Some(v.clone());
    }
    if let Some(v) = &changes.execution_role {
        task_change("executionRoleArn", out.execution_role_arn.as_deref(), v);
        out.execution_role_arn = Some(v.clone());
    }
    Ok((out, diff))
}

/// `arn:...:task-definition/web:7` or `web:7` → (`web`, 7).
pub fn family_and_revision(arn_or_name: &str) -> Option<(String, i32)> {
    let tail = arn_or_name
        .rsplit_once("task-definition/")
        .map(|(_, t)| t)
        .unwrap_or(arn_or_name);
    let (family, rev) = tail.rsplit_once(':')?;
    Some((family.to_string(), rev.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TaskDefinition {
        TaskDefinition::builder()
            .family("web")
            .container_definitions(
                ContainerDefinition::builder()
                    .name("app")
                    .image("123.dkr.ecr.eu-west-1.amazonaws.com/app:1")
                    .environment(KeyValuePair::builder().name("A").value("1").build())
                    .environment(KeyValuePair::builder().name("B").value("2").build())
                    .build(),
            )
            .container_definitions(
                ContainerDefinition::builder()
                    .name("sidecar")
                    .image("localhost:5000/proxy")
                    .build(),
            )
            .build()
    }

    #[test]
    fn tag_image_env_secret_and_diff() {
        let changes = TaskChanges {
            tag: Some("abc123".into()),
            images: vec![("sidecar".into(), "proxy:2".into())],
            env: vec![
                ("app".into(), "A".into(), "9".into()),
                ("app".into(), "C".into(), "3".into()),
            ],
            secrets: vec![(
                "app".into(),
                "DB".into(),
                "arn:aws:ssm:::parameter/db".into(),
            )],
            ..Default::default()
        };
        let (new, diff) = apply(&td(), &changes).expect("apply");
        let c = &new.container_definitions.as_ref().expect("containers")[0];
        assert_eq!(
            c.image(),
            Some("123.dkr.ecr.eu-west-1.amazonaws.com/app:abc123")
        );
        assert_eq!(env_text(c), "A=9,B=2,C=3");
        assert_eq!(c.secrets()[0].value_from, "arn:aws:ssm:::parameter/db");
        let text = format_diff(&diff);
        assert!(text.contains("app: image: 123.dkr.ecr.eu-west-1.amazonaws.com/app:1 -> 123.dkr.ecr.eu-west-1.amazonaws.com/app:abc123"), "{text}");
        assert!(
            text.contains("sidecar: image: localhost:5000/proxy -> proxy:2"),
            "{text}"
        );
        assert!(
            text.contains("app: environment: A=1,B=2 -> A=9,B=2,C=3"),
            "{text}"
        );
        assert!(
            text.contains("app: secrets: (none) -> DB=arn:aws:ssm:::parameter/db"),
            "{text}"
        );
    }

    #[test]
    fn exclusive_env_drops_unlisted_variables() {
        let changes = TaskChanges {
            env: vec![("app".into(), "C".into(), "3".into())],
            exclusive_env: true,
            ..Default::default()
        };
        let (new, _) = apply(&td(), &changes).expect("apply");
        assert_eq!(env_text(&new.container_definitions.expect("c")[0]), "C=3");
    }

    #[test]
    fn unknown_container_is_a_usage_error() {
        let changes = TaskChanges {
            images: vec![("nope".into(), "x".into())],
            ..Default::default()
        };
        let err = apply(&td(), &changes).expect_err("unknown container");
        assert!(
            err.to_string().contains("containers: app, sidecar"),
            "{err}"
        );
    }

    #[test]
    fn no_changes_no_diff() {
        let (_, diff) = apply(&td(), &TaskChanges::default()).expect("apply");
        assert!(diff.is_empty());
    }

    #[test]
    fn command_ports_health_log() {
        let changes = TaskChanges {
            commands: vec![("app".into(), "sh -c 'echo hi there'".into())],
            ports: vec![
                ("app".into(), "8080:80".into()),
                ("app".into(), "53/udp".into()),
            ],
            health_checks: vec![(
                "app".into(),
                HealthCheckSpec {
                    command: "wget -q localhost".into(),
                    interval: 10,
                    timeout: 3,
                    retries: 2,
                    start_period: 5,
                },
            )],
            log_configs: vec![
                (
                    "app".into(),
                    "awslogs".into(),
                    "awslogs-group".into(),
                    "g".into(),
                ),
                (
                    "app".into(),
                    "awslogs".into(),
                    "awslogs-region".into(),
                    "eu-west-1".into(),
                ),
            ],
            ..Default::default()
        };
        let (new, diff) = apply(&td(), &changes).expect("apply");
        let c = &new.container_definitions.expect("c")[0];
        assert_eq!(c.command(), ["sh", "-c", "echo hi there"]);
        assert_eq!(c.port_mappings()[0].host_port, Some(8080));
        assert_eq!(c.port_mappings()[1].protocol, Some(TransportProtocol::Udp));
        assert_eq!(
            c.health_check.as_ref().map(|h| h.command.clone()),
            Some(vec![
                "CMD-SHELL".to_string(),
                "wget -q localhost".to_string()
            ])
        );
        assert_eq!(
            c.log_configuration
                .as_ref()
                .map(|l| l.options.as_ref().map(|o| o.len())),
            Some(Some(2))
        );
        assert_eq!(diff.len(), 4);
    }

    #[test]
    fn helpers() {
        assert_eq!(retag("localhost:5000/app", "v2"), "localhost:5000/app:v2");
        assert_eq!(retag("app:1@sha256:ab", "v2"), "app:v2");
        assert_eq!(
            split_command(r#"a "b c" d\ e"#).expect("split"),
            ["a", "b c", "d e"]
        );
        assert_eq!(split_command(r#"["x","y z"]"#).expect("json"), ["x", "y z"]);
        assert!(split_command("a 'b").is_err());
        assert_eq!(
            family_and_revision("arn:aws:ecs:r:1:task-definition/web:7"),
            Some(("web".into(), 7))
        );
        assert_eq!(family_and_revision("web:3"), Some(("web".into(), 3)));
        assert_eq!(family_and_revision("web"), None);
        assert_eq!(
            parse_dotenv("# c\nA=1\nexport B=\"two words\"\n\nC='x'\n").expect("parse"),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x".into())
            ]
        );
        assert_eq!(parse_dotenv("A=1\nnope\n").expect_err("bad").0, 2);
        assert!(parse_port("x:80").is_err());
    }
}
