//! CloudFormation: `gantry deploy cloudformation STACK` creates or updates a stack from
//! `--template FILE` or the stack's current template, keeps the previous value of every
//! parameter not given, previews the change set, waits while tailing stack events, fails loudly
//! on any ROLLBACK or FAILED state, prints the outputs and writes them as a dotenv file.
//!
//! Previous values are read and passed explicitly (not `UsePreviousValue`, which moto answers
//! with HTTP 500), except NoEcho parameters whose value DescribeStacks masks.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use aws_sdk_cloudformation::types::{
    Capability, ChangeSetType, Parameter, Stack, Tag, TemplateStage,
};

use crate::history::{DeployResult, DeploymentRecord, HistoryStore, RecordKind};
use crate::{DeployError, Log};

/// What `gantry deploy cloudformation` was asked to do.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub stack: String,
    pub template_file: Option<PathBuf>,
    pub parameters: Vec<(String, String)>,
    pub capabilities: Vec<String>,
    pub tags: Vec<(String, String)>,
    /// Create a change set and print it before applying.
    pub preview: bool,
    /// Only preview, do not apply.
    pub preview_only: bool,
    pub timeout: Duration,
    pub poll_interval: Duration,
    pub outputs_dotenv: Option<PathBuf>,
    /// Lease and notification options (rollback is CloudFormation's own on a failed update).
    pub machine: crate::machine::MachineOptions,
    /// The caller's account, for the history key of a stack not created yet.
    pub account: Option<String>,
}

impl StackOptions {
    pub fn new(stack: &str) -> Self {
        StackOptions {
            stack: stack.into(),
            template_file: None,
            parameters: Vec::new(),
            capabilities: vec![
                "CAPABILITY_IAM".into(),
                "CAPABILITY_NAMED_IAM".into(),
                "CAPABILITY_AUTO_EXPAND".into(),
            ],
            tags: Vec::new(),
            preview: true,
            preview_only: false,
            timeout: Duration::from_secs(1800),
            poll_interval: Duration::from_secs(2),
            outputs_dotenv: None,
            machine: crate::machine::MachineOptions::default(),
            account: None,
        }
    }
}

/// The result of a stack deploy.
#[derive(Debug, Clone, PartialEq)]
pub struct StackOutcome {
    pub stack_id: String,
    pub status: String,
    pub created: bool,
    /// False when CloudFormation had nothing to update.
    pub changed: bool,
    pub outputs: Vec<(String, String)>,
}

/// `cloudformation:ACCOUNT:REGION:STACK`, the history key: from the stack's ARN when it
/// exists, else from the caller's account and the client's region.
pub fn target_key(
    stack_arn: Option<&str>,
    account: Option<&str>,
    region: Option<&str>,
    stack: &str,
) -> String {
    let from_arn = stack_arn.and_then(|a| {
        let p: Vec<&str> = a.splitn(6, ':').collect();
        (p.len() == 6 && !p[3].is_empty() && !p[4].is_empty()).then(|| (p[4], p[3]))
    });
    let (account, region) = from_arn.unwrap_or((
        account.unwrap_or("unknown-account"),
        region.unwrap_or("unknown-region"),
    ));
    format!("cloudformation:{account}:{region}:{stack}")
}

fn key_for(client: &Client, opts: &StackOptions, existing: Option<&Stack>) -> String {
    target_key(
        existing.and_then(|s| s.stack_id()),
        opts.account.as_deref(),
        client.config().region().map(|r| r.as_ref()),
        &opts.stack,
    )
}

/// What a stack update is recorded as: a digest of template and parameters.
fn revision_of(template: &str, parameters: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(template.as_bytes());
    h.update([0u8]);
    h.update(parameters.as_bytes());
    format!("sha256:{}", &hex::encode(h.finalize())[..16])
}

/// Parameters as recorded: values, except NoEcho ones (secrets), recorded as "use previous".
fn recorded_parameters(parameters: &[Parameter], no_echo: &HashSet<String>) -> String {
    let map: serde_json::Map<String, serde_json::Value> = parameters
        .iter()
        .filter_map(|p| {
            let k = p.parameter_key()?.to_string();
            let v = if no_echo.contains(&k) || p.use_previous_value == Some(true) {
                serde_json::json!({"use_previous_value": true})
            } else {
                serde_json::Value::String(p.parameter_value().unwrap_or_default().to_string())
            };
            Some((k, v))
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn parameters_from_record(recorded: &str) -> Result<Vec<Parameter>, DeployError> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(recorded)
        .map_err(|e| DeployError::History(format!("recorded parameters are not valid: {e}")))?;
    Ok(map
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => param(&k, &s),
            _ => Parameter::builder()
                .parameter_key(k)
                .use_previous_value(true)
                .build(),
        })
        .collect())
}

/// DescribeStacks for one stack; `None` when it does not exist (or only a deleted one does).
pub async fn describe_stack(client: &Client, stack: &str) -> Result<Option<Stack>, DeployError> {
    match client.describe_stacks().stack_name(stack).send().await {
        Ok(r) => Ok(r
            .stacks()
            .first()
            .cloned()
            .filter(|s| s.stack_status().map(|st| st.as_str()) != Some("DELETE_COMPLETE"))),
        Err(e) if e.message().is_some_and(|m| m.contains("does not exist")) => Ok(None),
        Err(e) => Err(DeployError::aws(&format!("DescribeStacks {stack}"), e)),
    }
}

fn param(k: &str, v: &str) -> Parameter {
    Parameter::builder()
        .parameter_key(k)
        .parameter_value(v)
        .build()
}

/// Parameters for the call: given values, then the stack's previous values for the rest.
/// `declared` (when known) drops previous parameters the new template no longer has.
pub fn merge_parameters(
    given: &[(String, String)],
    previous: &[Parameter],
    declared: Option<&HashSet<String>>,
) -> Vec<Parameter> {
    let mut out: Vec<Parameter> = given.iter().map(|(k, v)| param(k, v)).collect();
    for p in previous {
        let Some(key) = p.parameter_key() else {
            continue;
        };
        if given.iter().any(|(k, _)| k == key) || declared.is_some_and(|d| !d.contains(key)) {
            continue;
        }
        match p.parameter_value() {
            // NoEcho values come back masked; only CloudFormation itself knows them.
            Some("****") | None => out.push(
                Parameter::builder()
                    .parameter_key(key)
                    .use_previous_value(true)
                    .build(),
            ),
            Some(v) => out.push(param(key, v)),
        }
    }
    out
}

/// Creates or updates the stack under the target's lease; see the module docs.
pub async fn deploy_stack(
    client: &Client,
    opts: &StackOptions,
    history: &dyn HistoryStore,
    log: &Log,
) -> Result<StackOutcome, DeployError> {
    let existing = describe_stack(client, &opts.stack).await?;
    let key = key_for(client, opts, existing.as_ref());
    let holder = crate::history::acquire_lease_waiting(
        history,
        &key,
        opts.machine.lease_ttl,
        opts.machine.wait_lock,
        log,
    )
    .await?;
    let result = deploy_stack_leased(client, opts, history, log, &key).await;
    if let Err(e) = history.release_lease(&key, &holder.id).await {
        log.line(format!("warning: could not release the lease on {key}: {e}"));
    }
    result
}

async fn deploy_stack_leased(
    client: &Client,
    opts: &StackOptions,
    history: &dyn HistoryStore,
    log: &Log,
    key: &str,
) -> Result<StackOutcome, DeployError> {
    let stack = &opts.stack;
    // Read again under the lease.
    let existing = describe_stack(client, stack).await?;
    if let Some(s) = &existing {
        let status = s.stack_status().map(|x| x.as_str()).unwrap_or("");
        if status == "ROLLBACK_COMPLETE" || status == "ROLLBACK_FAILED" {
            return Err(DeployError::Usage(format!(
                "stack {stack} is {status} (its creation failed); delete it before deploying again"
            )));
        }
        if status.ends_with("_IN_PROGRESS") {
            return Err(DeployError::Usage(format!(
                "stack {stack} is busy ({status}); try again when it settles"
            )));
        }
    }
    let template = match &opts.template_file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            DeployError::Usage(format!("cannot read template {}: {e}", path.display()))
        })?,
        None => {
            if existing.is_none() {
                return Err(DeployError::Usage(format!(
                    "stack {stack} does not exist: pass --template FILE to create it"
                )));
            }
            let r = client
                .get_template()
                .stack_name(stack)
                .template_stage(TemplateStage::Original)
                .send()
                .await
                .map_err(|e| DeployError::aws(&format!("GetTemplate {stack}"), e))?;
            log.line("using the stack's current template");
            r.template_body().unwrap_or_default().to_string()
        }
    };
    let summary = client
        .get_template_summary()
        .template_body(&template)
        .send()
        .await
        .ok();
    let declared = summary.as_ref().map(|s| {
        s.parameters()
            .iter()
            .filter_map(|p| p.parameter_key().map(str::to_string))
            .collect::<HashSet<_>>()
    });
    let no_echo: HashSet<String> = summary
        .as_ref()
        .map(|s| {
            s.parameters()
                .iter()
                .filter(|p| p.no_echo() == Some(true))
                .filter_map(|p| p.parameter_key().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let previous = existing
        .as_ref()
        .map(|s| s.parameters().to_vec())
        .unwrap_or_default();
    let parameters = merge_parameters(&opts.parameters, &previous, declared.as_ref());
    for p in &parameters {
        let key = p.parameter_key().unwrap_or("?");
        let how = if p.use_previous_value == Some(true) {
            "(previous value)".to_string()
        } else if opts.parameters.iter().any(|(k, _)| k == key) {
            "(given)".to_string()
        } else {
            "(previous value)".to_string()
        };
        log.line(format!("parameter {key} {how}"));
    }
    let capabilities: Vec<Capability> = opts
        .capabilities
        .iter()
        .map(|c| Capability::from(c.as_str()))
        .collect();
    let tags: Vec<Tag> = opts
        .tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    let tags = if tags.is_empty() { None } else { Some(tags) };

    if opts.preview && existing.is_some() {
        if let Err(e) =
            preview_change_set(client, stack, &template, &parameters, &capabilities, log).await
        {
            log.line(format!("warning: no change-set preview: {e}"));
        }
    } else if opts.preview {
        log.line(format!("stack {stack} does not exist: it will be created"));
        if let Err(e) = preview_create(client, stack, &template, &parameters, &capabilities, log)
            .await
        {
            log.line(format!("warning: no change-set preview: {e}"));
        }
    }
    if opts.preview_only {
        let status = existing
            .as_ref()
            .and_then(|s| s.stack_status().map(|x| x.as_str().to_string()))
            .unwrap_or_else(|| "NOT_CREATED".into());
        return Ok(StackOutcome {
            stack_id: String::new(),
            status,
            created: false,
            changed: false,
            outputs: Vec::new(),
        });
    }

    let recorded = recorded_parameters(&parameters, &no_echo);
    let revision = revision_of(&template, &recorded);
    let previous = history
        .records(key)
        .await?
        .into_iter()
        .rev()
        .find(|r| r.kind == RecordKind::Deploy && r.result == DeployResult::Succeeded)
        .map(|r| r.revision);
    let mut record =
        DeploymentRecord::start(key, RecordKind::Deploy, &revision, previous.as_deref());
    record.details.insert("template".into(), template.clone());
    record.details.insert("parameters".into(), recorded);
    history.save(&record).await?;
    let since = aws_sdk_cloudformation::primitives::DateTime::from(std::time::SystemTime::now());
    let created = existing.is_none();
    let sent = if created {
        client
            .create_stack()
            .stack_name(stack)
            .template_body(&template)
            .set_parameters(Some(parameters))
            .set_capabilities(Some(capabilities))
            .set_tags(tags)
            .send()
            .await
            .map(|r| r.stack_id().map(str::to_string))
            .map_err(|e| DeployError::aws(&format!("CreateStack {stack}"), e))
    } else {
        match client
            .update_stack()
            .stack_name(stack)
            .template_body(&template)
            .set_parameters(Some(parameters))
            .set_capabilities(Some(capabilities))
            .set_tags(tags)
            .send()
            .await
        {
            Ok(r) => Ok(r.stack_id().map(str::to_string)),
            Err(e)
                if e.message()
                    .is_some_and(|m| m.contains("No updates are to be performed")) =>
            {
                log.line("no changes: the stack is up to date");
                let s = describe_stack(client, stack)
                    .await?
                    .unwrap_or_else(|| Stack::builder().build());
                let outcome = finish(&s, false, false, opts, log)?;
                record.details.insert("stack_id".into(), outcome.stack_id.clone());
                record.finish(DeployResult::Succeeded, Some("no changes".into()));
                history.save(&record).await?;
                return Ok(outcome);
            }
            Err(e) => Err(DeployError::aws(&format!("UpdateStack {stack}"), e)),
        }
    };
    let stack_id = match sent {
        Ok(id) => id.unwrap_or_else(|| stack.clone()),
        Err(e) => {
            record.finish(DeployResult::Failed, Some(e.to_string()));
            history.save(&record).await?;
            return Err(e);
        }
    };
    record.details.insert("stack_id".into(), stack_id.clone());
    history.save(&record).await?;
    log.line(format!(
        "{} {stack_id}",
        if created { "creating" } else { "updating" }
    ));
    match wait_for_stack(
        client,
        &stack_id,
        since,
        opts.timeout,
        opts.poll_interval,
        log,
    )
    .await
    {
        Ok(s) => {
            let outcome = finish(&s, created, true, opts, log)?;
            record.finish(DeployResult::Succeeded, None);
            history.save(&record).await?;
            Ok(outcome)
        }
        Err(e) => {
            // Typed: the stack's own settled status, not the error text.
            let rolled = describe_stack(client, &stack_id)
                .await
                .ok()
                .flatten()
                .and_then(|s| s.stack_status().map(|x| x.as_str().to_string()))
                .is_some_and(|st| st == "UPDATE_ROLLBACK_COMPLETE");
            if rolled {
                record.rolled_back_to = previous.clone();
            }
            record.finish(
                if rolled {
                    DeployResult::RolledBack
                } else {
                    DeployResult::Failed
                },
                Some(e.to_string()),
            );
            history.save(&record).await?;
            Err(e)
        }
    }
}

/// `gantry rollback cloudformation STACK`: updates the stack with the template and parameters
/// of its last known-good update other than the newest successful one, waits, and only then
/// records the rollback as known good and withdraws "known good" from the revision left.
pub async fn rollback_stack(
    client: &Client,
    opts: &StackOptions,
    history: &dyn HistoryStore,
    log: &Log,
) -> Result<String, DeployError> {
    let stack = &opts.stack;
    let existing = describe_stack(client, stack).await?.ok_or_else(|| {
        DeployError::Usage(format!("stack {stack} does not exist: nothing to roll back"))
    })?;
    let key = key_for(client, opts, Some(&existing));
    let holder = crate::history::acquire_lease_waiting(
        history,
        &key,
        opts.machine.lease_ttl,
        opts.machine.wait_lock,
        log,
    )
    .await?;
    let result = rollback_stack_leased(client, opts, history, log, &key).await;
    if let Err(e) = history.release_lease(&key, &holder.id).await {
        log.line(format!("warning: could not release the lease on {key}: {e}"));
    }
    result
}

async fn rollback_stack_leased(
    client: &Client,
    opts: &StackOptions,
    history: &dyn HistoryStore,
    log: &Log,
    key: &str,
) -> Result<String, DeployError> {
    let stack = &opts.stack;
    let records = history.records(key).await?;
    let live = records
        .iter()
        .rev()
        .find(|r| r.result == DeployResult::Succeeded)
        .map(|r| r.revision.clone());
    let good = records
        .iter()
        .rev()
        .find(|r| {
            r.known_good
                && Some(&r.revision) != live.as_ref()
                && r.details.contains_key("template")
        })
        .cloned()
        .ok_or_else(|| {
            DeployError::Usage(format!(
                "no earlier known-good template of {key} in {}; deploy one with gantry deploy cloudformation {stack} --template FILE",
                history.location()
            ))
        })?;
    let template = good.details.get("template").cloned().unwrap_or_default();
    let parameters = parameters_from_record(
        good.details
            .get("parameters")
            .map(String::as_str)
            .unwrap_or("{}"),
    )?;
    log.line(format!(
        "rolling back {stack}: {} -> {} (last known-good, deployed {})",
        live.as_deref().unwrap_or("?"),
        good.revision,
        good.started_at
    ));
    let mut record =
        DeploymentRecord::start(key, RecordKind::Rollback, &good.revision, live.as_deref());
    record.details = good.details.clone();
    if let Err(e) = history.save(&record).await {
        log.line(format!(
            "warning: the rollback record could not be written ({e}); rolling back anyway"
        ));
    }
    let capabilities: Vec<Capability> = opts
        .capabilities
        .iter()
        .map(|c| Capability::from(c.as_str()))
        .collect();
    let since = aws_sdk_cloudformation::primitives::DateTime::from(std::time::SystemTime::now());
    let sent = client
        .update_stack()
        .stack_name(stack)
        .template_body(&template)
        .set_parameters(Some(parameters))
        .set_capabilities(Some(capabilities))
        .send()
        .await;
    let stack_id = match sent {
        Ok(r) => r.stack_id().unwrap_or(stack).to_string(),
        Err(e) if e.message().is_some_and(|m| m.contains("No updates are to be performed")) => {
            stack.clone()
        }
        Err(e) => {
            let err = DeployError::aws(&format!("UpdateStack {stack} (rollback)"), e);
            record.finish(DeployResult::Failed, Some(err.to_string()));
            let _ = history.save(&record).await;
            return Err(err);
        }
    };
    match wait_for_stack(client, &stack_id, since, opts.timeout, opts.poll_interval, log).await {
        Ok(s) => {
            record.finish(DeployResult::Succeeded, None);
            let mut warn = String::new();
            if let Err(e) = history.save(&record).await {
                warn = format!(" (warning: the rollback record could not be written: {e})");
            } else if let Some(bad) = &live {
                let _ = crate::history::withdraw_known_good(
                    history,
                    key,
                    bad,
                    &format!("rolled back to {} by hand", good.revision),
                )
                .await;
            }
            Ok(format!(
                "stack {stack} is back on {} ({}){warn}",
                good.revision,
                s.stack_status().map(|x| x.as_str()).unwrap_or("?")
            ))
        }
        Err(e) => {
            record.finish(DeployResult::Failed, Some(e.to_string()));
            let _ = history.save(&record).await;
            Err(e)
        }
    }
}

fn finish(
    s: &Stack,
    created: bool,
    changed: bool,
    opts: &StackOptions,
    log: &Log,
) -> Result<StackOutcome, DeployError> {
    let outputs: Vec<(String, String)> = s
        .outputs()
        .iter()
        .map(|o| {
            (
                o.output_key().unwrap_or_default().to_string(),
                o.output_value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    if !outputs.is_empty() {
        log.line("outputs:");
        for (k, v) in &outputs {
            log.line(format!("  {k} = {v}"));
        }
    }
    if let Some(path) = &opts.outputs_dotenv {
        std::fs::write(path, dotenv(&outputs))
            .map_err(|e| DeployError::Usage(format!("cannot write {}: {e}", path.display())))?;
        log.line(format!(
            "wrote {} output(s) to {}",
            outputs.len(),
            path.display()
        ));
    }
    Ok(StackOutcome {
        stack_id: s.stack_id().unwrap_or_default().into(),
        status: s
            .stack_status()
            .map(|x| x.as_str().to_string())
            .unwrap_or_default(),
        created,
        changed,
        outputs,
    })
}

/// `KEY=value` lines (GitLab's `artifacts:reports:dotenv` format): one line per output,
/// newlines in values escaped.
pub fn dotenv(outputs: &[(String, String)]) -> String {
    outputs
        .iter()
        .map(|(k, v)| {
            let key: String = k
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("{key}={}\n", v.replace('\n', "\\n"))
        })
        .collect()
}

async fn preview_change_set(
    client: &Client,
    stack: &str,
    template: &str,
    parameters: &[Parameter],
    capabilities: &[Capability],
    log: &Log,
) -> Result<(), DeployError> {
    let name = format!(
        "gantry-preview-{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S")
    );
    client
        .create_change_set()
        .stack_name(stack)
        .change_set_name(&name)
        .change_set_type(ChangeSetType::Update)
        .template_body(template)
        .set_parameters(Some(parameters.to_vec()))
        .set_capabilities(Some(capabilities.to_vec()))
        .send()
        .await
        .map_err(|e| DeployError::aws("CreateChangeSet", e))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let result = loop {
        let d = client
            .describe_change_set()
            .stack_name(stack)
            .change_set_name(&name)
            .send()
            .await
            .map_err(|e| DeployError::aws("DescribeChangeSet", e))?;
        let status = d
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if status == "CREATE_COMPLETE" {
            log.line(format!(
                "change set preview ({} change(s)):",
                d.changes().len()
            ));
            if d.changes().is_empty() {
                log.line("  (no resource changes listed)");
            }
            for c in d.changes() {
                if let Some(rc) = c.resource_change() {
                    log.line(format!(
                        "  {:<8} {} ({}){}",
                        rc.action().map(|a| a.as_str()).unwrap_or("?"),
                        rc.logical_resource_id().unwrap_or("?"),
                        rc.resource_type().unwrap_or("?"),
                        rc.replacement()
                            .map(|r| format!(" replacement: {}", r.as_str()))
                            .unwrap_or_default()
                    ));
                }
            }
            break Ok(());
        }
        if status == "FAILED" {
            let reason = d.status_reason().unwrap_or("no reason").to_string();
            if reason.contains("didn't contain changes") || reason.contains("No updates") {
                log.line("change set preview: no changes");
                break Ok(());
            }
            break Err(DeployError::Aws(format!("change set failed: {reason}")));
        }
        if Instant::now() >= deadline {
            break Err(DeployError::Aws(
                "change set was not ready within 120s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The preview is only a preview: the stack is then updated with the same inputs.
    let _ = client
        .delete_change_set()
        .stack_name(stack)
        .change_set_name(&name)
        .send()
        .await;
    result
}

/// A change-set preview for a stack that does not exist yet: CloudFormation can only describe
/// a CREATE change set through a placeholder stack (REVIEW_IN_PROGRESS), which is deleted
/// again so the creation itself goes through CreateStack like before.
async fn preview_create(
    client: &Client,
    stack: &str,
    template: &str,
    parameters: &[Parameter],
    capabilities: &[Capability],
    log: &Log,
) -> Result<(), DeployError> {
    let name = format!(
        "gantry-preview-{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S")
    );
    client
        .create_change_set()
        .stack_name(stack)
        .change_set_name(&name)
        .change_set_type(ChangeSetType::Create)
        .template_body(template)
        .set_parameters(Some(parameters.to_vec()))
        .set_capabilities(Some(capabilities.to_vec()))
        .send()
        .await
        .map_err(|e| DeployError::aws("CreateChangeSet (create preview)", e))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let result = loop {
        let d = client
            .describe_change_set()
            .stack_name(stack)
            .change_set_name(&name)
            .send()
            .await
            .map_err(|e| DeployError::aws("DescribeChangeSet", e))?;
        let status = d.status().map(|s| s.as_str().to_string()).unwrap_or_default();
        if status == "CREATE_COMPLETE" {
            log.line(format!("change set preview ({} change(s)):", d.changes().len()));
            for c in d.changes() {
                if let Some(rc) = c.resource_change() {
                    log.line(format!(
                        "  {:<8} {} ({})",
                        rc.action().map(|a| a.as_str()).unwrap_or("?"),
                        rc.logical_resource_id().unwrap_or("?"),
                        rc.resource_type().unwrap_or("?"),
                    ));
                }
            }
            break Ok(());
        }
        if status == "FAILED" {
            break Err(DeployError::Aws(format!(
                "change set failed: {}",
                d.status_reason().unwrap_or("no reason")
            )));
        }
        if Instant::now() >= deadline {
            break Err(DeployError::Aws("change set was not ready within 120s".into()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let _ = client
        .delete_change_set()
        .stack_name(stack)
        .change_set_name(&name)
        .send()
        .await;
    // The placeholder stack of a CREATE change set stays in REVIEW_IN_PROGRESS: remove it.
    if let Ok(Some(s)) = describe_stack(client, stack).await
        && s.stack_status().map(|x| x.as_str()) == Some("REVIEW_IN_PROGRESS")
    {
        let _ = client.delete_stack().stack_name(stack).send().await;
        let gone = Instant::now() + Duration::from_secs(60);
        while Instant::now() < gone {
            match describe_stack(client, stack).await {
                Ok(None) => break,
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }
    result
}

/// Polls the stack, printing new events oldest first, until it leaves *_IN_PROGRESS.
/// Any ROLLBACK or FAILED status is an error carrying the failed resources' reasons.
pub async fn wait_for_stack(
    client: &Client,
    stack_id: &str,
    since: aws_sdk_cloudformation::primitives::DateTime,
    timeout: Duration,
    poll: Duration,
    log: &Log,
) -> Result<Stack, DeployError> {
    let deadline = Instant::now() + timeout;
    let mut seen: HashSet<String> = HashSet::new();
    let mut failures: Vec<String> = Vec::new();
    let since_secs = since.as_secs_f64() - 5.0;
    let mut warned_rollback = false;
    loop {
        if let Ok(ev) = client
            .describe_stack_events()
            .stack_name(stack_id)
            .send()
            .await
        {
            let mut fresh: Vec<_> = ev
                .stack_events()
                .iter()
                .filter(|e| e.timestamp().is_none_or(|t| t.as_secs_f64() >= since_secs))
                .filter(|e| e.event_id().is_some_and(|id| !seen.contains(id)))
                .cloned()
                .collect();
            fresh.reverse();
            for e in fresh {
                seen.insert(e.event_id().unwrap_or_default().to_string());
                let status = e.resource_status().map(|s| s.as_str()).unwrap_or("?");
                let reason = e
                    .resource_status_reason()
                    .filter(|r| !r.is_empty() && *r != "None");
                let line = format!(
                    "{} {} {}{}",
                    status,
                    e.logical_resource_id().unwrap_or("?"),
                    e.resource_type().unwrap_or(""),
                    reason.map(|r| format!(": {r}")).unwrap_or_default()
                );
                if status.ends_with("_FAILED") {
                    failures.push(line.clone());
                }
                log.line(format!("event: {line}"));
            }
        }
        let s = client
            .describe_stacks()
            .stack_name(stack_id)
            .send()
            .await
            .map_err(|e| DeployError::aws("DescribeStacks", e))?
            .stacks()
            .first()
            .cloned()
            .ok_or_else(|| DeployError::Aws(format!("stack {stack_id} disappeared")))?;
        let status = s
            .stack_status()
            .map(|x| x.as_str().to_string())
            .unwrap_or_default();
        let state = stack_state(&status);
        if state == StackState::RollingBack && !warned_rollback {
            warned_rollback = true;
            log.line(format!(
                "STACK IS ROLLING BACK ({status}){}",
                s.stack_status_reason()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ));
        }
        if state == StackState::Succeeded || state == StackState::Failed {
            if state == StackState::Failed {
                let mut msg = format!(
                    "stack {} ended in {status}{}",
                    s.stack_name().unwrap_or(stack_id),
                    s.stack_status_reason()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
                for f in &failures {
                    msg.push_str(&format!("\n  {f}"));
                }
                return Err(DeployError::Rollout(msg));
            }
            log.line(format!("stack is {status}"));
            return Ok(s);
        }
        if Instant::now() >= deadline {
            return Err(DeployError::Rollout(format!(
                "stack still {status} after {}s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(poll).await;
    }
}

/// Where a stack status stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackState {
    InProgress,
    /// Still moving, but towards a rollback: already a failure.
    RollingBack,
    Succeeded,
    /// Any settled ROLLBACK or FAILED state.
    Failed,
}

/// Classifies a CloudFormation stack status.
pub fn stack_state(status: &str) -> StackState {
    let rollback = status.contains("ROLLBACK");
    if status.ends_with("_IN_PROGRESS") {
        if rollback {
            StackState::RollingBack
        } else {
            StackState::InProgress
        }
    } else if rollback || status.contains("FAILED") || status.is_empty() {
        StackState::Failed
    } else {
        StackState::Succeeded
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_rollback_or_failed_status_is_a_failure() {
        use super::StackState::*;
        for (status, want) in [
            ("CREATE_COMPLETE", Succeeded),
            ("UPDATE_COMPLETE", Succeeded),
            ("IMPORT_COMPLETE", Succeeded),
            ("CREATE_IN_PROGRESS", InProgress),
            ("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", InProgress),
            ("UPDATE_ROLLBACK_IN_PROGRESS", RollingBack),
            ("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", RollingBack),
            ("ROLLBACK_IN_PROGRESS", RollingBack),
            ("ROLLBACK_COMPLETE", Failed),
            ("UPDATE_ROLLBACK_COMPLETE", Failed),
            ("UPDATE_ROLLBACK_FAILED", Failed),
            ("IMPORT_ROLLBACK_COMPLETE", Failed),
            ("CREATE_FAILED", Failed),
            ("UPDATE_FAILED", Failed),
        ] {
            assert_eq!(super::stack_state(status), want, "{status}");
        }
    }

    use super::*;

    #[test]
    fn previous_values_fill_the_gaps_and_noecho_uses_previous() {
        let previous = vec![
            param("Name", "a"),
            param("Env", "dev"),
            param("Secret", "****"),
            param("Gone", "x"),
        ];
        let declared: HashSet<String> = ["Name", "Env", "Secret"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let merged = merge_parameters(&[("Env".into(), "prod".into())], &previous, Some(&declared));
        let shown: Vec<String> = merged
            .iter()
            .map(|p| {
                format!(
                    "{}={}{}",
                    p.parameter_key().unwrap_or(""),
                    p.parameter_value().unwrap_or(""),
                    if p.use_previous_value == Some(true) {
                        "(prev)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        assert_eq!(shown, ["Env=prod", "Name=a", "Secret=(prev)"]);
    }

    #[test]
    fn dotenv_format() {
        assert_eq!(
            dotenv(&[
                ("BucketName".into(), "b-1".into()),
                ("Odd-Key".into(), "a\nb".into())
            ]),
            "BucketName=b-1\nOdd_Key=a\\nb\n"
        );
    }
}
