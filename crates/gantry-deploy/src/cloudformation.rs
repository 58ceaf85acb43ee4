//! CloudFormation as a [`Target`] of the one deploy state machine ([`crate::machine`]):
//! `gantry deploy cloudformation STACK` and `gantry rollback cloudformation STACK`.
//!
//! - revision: the template (`--template FILE`, else the stack's current one) and the
//!   parameters (given values, the previous value of every other), recorded in the history
//!   store; its id is a digest of both (`sha256:...`);
//! - make revision: a change set (CREATE for a new stack, else UPDATE), printed as the preview;
//! - roll out: ExecuteChangeSet; observe: stack events and status until settled, any ROLLBACK
//!   or FAILED status a failure; probe: `--health-url` if given;
//! - roll back: a change set of the last known-good template and parameters, executed and
//!   awaited the same way (a running update is cancelled first).
//!
//! So leases, `--notify`, SIGINT/SIGTERM and "live now / next" work as for every target.
//! Previous values are read and passed explicitly (not `UsePreviousValue`, which moto answers
//! with HTTP 500), except NoEcho parameters whose value DescribeStacks masks; those are
//! recorded as "use the previous value", never their value.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use aws_sdk_cloudformation::primitives::DateTime;
use aws_sdk_cloudformation::types::{
    Capability, ChangeSetType, Parameter, Stack, Tag, TemplateStage,
};

use crate::history::{DeploymentRecord, HistoryStore, short_revision};
use crate::machine::{
    self, Failure, LiveAfterFailure, MachineOptions, Report, Revision, RollbackPlan, RolledBack,
    Target,
};
use crate::{DeployError, Log};

/// What `gantry deploy cloudformation` was asked to do.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub stack: String,
    pub template_file: Option<PathBuf>,
    pub parameters: Vec<(String, String)>,
    pub capabilities: Vec<String>,
    pub tags: Vec<(String, String)>,
    /// Print the change set before executing it.
    pub preview: bool,
    pub timeout: Duration,
    pub poll_interval: Duration,
    pub outputs_dotenv: Option<PathBuf>,
    /// After the stack settles, probe this URL until it answers 2xx.
    pub health_url: Option<String>,
    pub health_timeout: Duration,
    /// Rollback, lease and notification options of the state machine.
    pub machine: MachineOptions,
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
            timeout: Duration::from_secs(1800),
            poll_interval: Duration::from_secs(2),
            outputs_dotenv: None,
            health_url: None,
            health_timeout: Duration::from_secs(60),
            machine: MachineOptions::default(),
            account: None,
        }
    }
}

/// The result of `gantry deploy cloudformation`: the machine's report and, after a success,
/// the stack's outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct StackDeploy {
    pub report: Report,
    pub outputs: Vec<(String, String)>,
    /// The stack's status at the end (`CREATE_COMPLETE`, ...), when known.
    pub status: Option<String>,
    /// Whether a change set was executed (false when there was nothing to change, or when
    /// nothing was started).
    pub changed: bool,
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

/// What a stack revision is recorded as: a digest of template and parameters.
fn revision_of(template: &str, parameters: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(template.as_bytes());
    h.update([0u8]);
    h.update(parameters.as_bytes());
    format!("sha256:{}", &hex::encode(h.finalize())[..16])
}

/// Parameters as recorded, sorted by key: values, except NoEcho ones (secrets, masked as
/// `****` by DescribeStacks), recorded as "use previous".
fn recorded_parameters(parameters: &[Parameter], no_echo: &HashSet<String>) -> String {
    let sorted: BTreeMap<String, serde_json::Value> = parameters
        .iter()
        .filter_map(|p| {
            let k = p.parameter_key()?.to_string();
            let masked = matches!(p.parameter_value(), Some("****"));
            let v = if no_echo.contains(&k) || masked || p.use_previous_value == Some(true) {
                serde_json::json!({"use_previous_value": true})
            } else {
                serde_json::Value::String(p.parameter_value().unwrap_or_default().to_string())
            };
            Some((k, v))
        })
        .collect();
    serde_json::Value::Object(sorted.into_iter().collect()).to_string()
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

fn status_of(s: &Stack) -> &str {
    s.stack_status().map(|x| x.as_str()).unwrap_or("")
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

/// Whether CloudFormation's message says there is nothing to change.
fn no_changes(message: &str) -> bool {
    message.contains("didn't contain changes") || message.contains("No updates are to be performed")
}

/// A change set made and described: its name, and whether it changes anything.
struct ChangeSet {
    name: String,
    kind: ChangeSetType,
    /// CloudFormation found nothing to change (the change set is already deleted).
    empty: bool,
}

/// One stack as a [`Target`].
pub struct StackTarget<'a> {
    client: &'a Client,
    opts: &'a StackOptions,
    log: Log,
    key: String,
    stack_id: Option<String>,
    /// Revision, template and recorded parameters of what the stack runs now.
    live: Option<(String, String, String)>,
    records: Vec<DeploymentRecord>,
    template: String,
    parameters: Vec<Parameter>,
    recorded: String,
    change_set: Option<ChangeSet>,
    /// Set once ExecuteChangeSet was sent: from then on the stack may have changed.
    executed: bool,
    /// When the change set was executed.
    since: Option<DateTime>,
    outputs: Vec<(String, String)>,
    status: Option<String>,
}

impl<'a> StackTarget<'a> {
    /// Describes the stack once to learn its account and region (the history key).
    pub async fn new(
        client: &'a Client,
        opts: &'a StackOptions,
        log: Log,
    ) -> Result<Self, DeployError> {
        let existing = describe_stack(client, &opts.stack).await?;
        // A record under "unknown-account" would never meet the stack's later records (keyed
        // by its ARN's account): refuse rather than split the history.
        if existing.is_none() && opts.account.is_none() {
            return Err(DeployError::Usage(format!(
                "cannot tell the caller's AWS account (STS GetCallerIdentity failed), which the history key of the new stack {} names; check the credentials",
                opts.stack
            )));
        }
        let key = target_key(
            existing.as_ref().and_then(|s| s.stack_id()),
            opts.account.as_deref(),
            client.config().region().map(|r| r.as_ref()),
            &opts.stack,
        );
        Ok(StackTarget {
            client,
            opts,
            log,
            key,
            stack_id: existing
                .as_ref()
                .and_then(|s| s.stack_id())
                .map(str::to_string),
            live: None,
            records: Vec::new(),
            template: String::new(),
            parameters: Vec::new(),
            recorded: String::new(),
            change_set: None,
            executed: false,
            since: None,
            outputs: Vec::new(),
            status: None,
        })
    }

    fn stack(&self) -> &str {
        &self.opts.stack
    }

    fn capabilities(&self) -> Vec<Capability> {
        self.opts
            .capabilities
            .iter()
            .map(|c| Capability::from(c.as_str()))
            .collect()
    }

    async fn template_of_stack(&self) -> Result<String, DeployError> {
        let stack = self.stack();
        let r = self
            .client
            .get_template()
            .stack_name(stack)
            .template_stage(TemplateStage::Original)
            .send()
            .await
            .map_err(|e| DeployError::aws(&format!("GetTemplate {stack}"), e))?;
        Ok(r.template_body().unwrap_or_default().to_string())
    }

    /// Creates a change set of `template` and `parameters` and waits until CloudFormation has
    /// described it; prints it when `print`. An empty one is deleted at once.
    async fn make_change_set(
        &self,
        kind: ChangeSetType,
        template: &str,
        parameters: &[Parameter],
        print: bool,
    ) -> Result<ChangeSet, DeployError> {
        let stack = self.stack();
        let name = format!(
            "gantry-{}-{:08x}",
            chrono::Utc::now().format("%Y%m%d%H%M%S"),
            crate::history::rand_u32()
        );
        let tags: Vec<Tag> = self
            .opts
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let mut cs = ChangeSet {
            name,
            kind,
            empty: false,
        };
        if let Err(e) = self
            .client
            .create_change_set()
            .stack_name(stack)
            .change_set_name(&cs.name)
            .change_set_type(cs.kind.clone())
            .template_body(template)
            .set_parameters(Some(parameters.to_vec()))
            .set_capabilities(Some(self.capabilities()))
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
        {
            // Some implementations (moto) refuse an empty change set outright.
            if e.message().is_some_and(no_changes) {
                cs.empty = true;
                return Ok(cs);
            }
            return Err(DeployError::aws(&format!("CreateChangeSet {stack}"), e));
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let d = match self
                .client
                .describe_change_set()
                .stack_name(stack)
                .change_set_name(&cs.name)
                .send()
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    self.discard(&cs).await;
                    return Err(DeployError::aws("DescribeChangeSet", e));
                }
            };
            let status = d.status().map(|s| s.as_str()).unwrap_or_default();
            if status == "CREATE_COMPLETE" {
                if print {
                    self.log
                        .line(format!("change set ({} change(s)):", d.changes().len()));
                    if d.changes().is_empty() {
                        self.log.line("  (no resource changes listed)");
                    }
                    for c in d.changes() {
                        if let Some(rc) = c.resource_change() {
                            self.log.line(format!(
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
                }
                return Ok(cs);
            }
            if status == "FAILED" {
                let reason = d.status_reason().unwrap_or("no reason").to_string();
                if no_changes(&reason) {
                    cs.empty = true;
                    self.discard(&cs).await;
                    return Ok(cs);
                }
                self.discard(&cs).await;
                return Err(DeployError::Aws(format!(
                    "the change set of {stack} failed: {reason}"
                )));
            }
            if Instant::now() >= deadline {
                self.discard(&cs).await;
                return Err(DeployError::Aws(format!(
                    "the change set of {stack} was not ready within 300s ({status})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Deletes a change set that will not be executed, and the placeholder stack
    /// (REVIEW_IN_PROGRESS) a CREATE change set makes.
    async fn discard(&self, cs: &ChangeSet) {
        let stack = self.stack();
        let _ = self
            .client
            .delete_change_set()
            .stack_name(stack)
            .change_set_name(&cs.name)
            .send()
            .await;
        if cs.kind == ChangeSetType::Create
            && let Ok(Some(s)) = describe_stack(self.client, stack).await
            && status_of(&s) == "REVIEW_IN_PROGRESS"
        {
            let _ = self.client.delete_stack().stack_name(stack).send().await;
            let gone = Instant::now() + Duration::from_secs(60);
            while Instant::now() < gone {
                match describe_stack(self.client, stack).await {
                    Ok(None) => break,
                    _ => tokio::time::sleep(Duration::from_millis(300)).await,
                }
            }
        }
    }

    /// Sends ExecuteChangeSet; returns when it was sent (events from then on are shown).
    async fn execute(&self, cs: &ChangeSet) -> Result<DateTime, DeployError> {
        let stack = self.stack();
        let since = DateTime::from(std::time::SystemTime::now());
        self.client
            .execute_change_set()
            .stack_name(stack)
            .change_set_name(&cs.name)
            .send()
            .await
            .map_err(|e| DeployError::aws(&format!("ExecuteChangeSet {stack}"), e))?;
        self.log.line(format!(
            "{} {stack}",
            if cs.kind == ChangeSetType::Create {
                "creating"
            } else {
                "updating"
            }
        ));
        Ok(since)
    }

    async fn wait(&mut self, since: DateTime) -> Result<Stack, DeployError> {
        let id = self
            .stack_id
            .clone()
            .unwrap_or_else(|| self.opts.stack.clone());
        let s = wait_for_stack(
            self.client,
            &id,
            since,
            self.opts.timeout,
            self.opts.poll_interval,
            &self.log,
        )
        .await?;
        self.status = Some(status_of(&s).to_string());
        self.outputs = s
            .outputs()
            .iter()
            .map(|o| {
                (
                    o.output_key().unwrap_or_default().to_string(),
                    o.output_value().unwrap_or_default().to_string(),
                )
            })
            .collect();
        Ok(s)
    }

    async fn health(&self) -> Result<String, DeployError> {
        match &self.opts.health_url {
            Some(url) => crate::health::wait_http_healthy(
                url,
                self.opts.health_timeout,
                Duration::from_millis(500)
                    .min(self.opts.poll_interval.max(Duration::from_millis(100))),
                &self.log,
            )
            .await
            .map(|_| format!("{url} answered 2xx")),
            None => Ok(format!(
                "stack is {}",
                self.status.as_deref().unwrap_or("settled")
            )),
        }
    }

    /// The template and recorded parameters of `revision`: from the plan's record, another
    /// record of it, or the stack itself when it runs that revision now.
    fn revision_inputs(&self, plan: &RollbackPlan) -> Option<(String, String)> {
        let from = |r: &DeploymentRecord| {
            Some((
                r.details.get("template")?.clone(),
                r.details.get("parameters")?.clone(),
            ))
        };
        plan.record
            .as_ref()
            .and_then(from)
            .or_else(|| {
                self.records
                    .iter()
                    .rev()
                    .filter(|r| r.revision == plan.revision)
                    .find_map(from)
            })
            .or_else(|| {
                self.live
                    .as_ref()
                    .filter(|(rev, _, _)| *rev == plan.revision)
                    .map(|(_, t, p)| (t.clone(), p.clone()))
            })
    }

    /// Lets an update in flight settle first (cancelling it: CloudFormation rolls it back).
    async fn settle(&mut self) -> Result<(), DeployError> {
        let stack = self.opts.stack.clone();
        let Some(s) = describe_stack(self.client, &stack).await? else {
            return Ok(());
        };
        let status = status_of(&s).to_string();
        if !status.ends_with("_IN_PROGRESS") || status == "REVIEW_IN_PROGRESS" {
            return Ok(());
        }
        if status == "UPDATE_IN_PROGRESS" {
            self.log
                .line(format!("cancelling the update of {stack} in flight"));
            if let Err(e) = self
                .client
                .cancel_update_stack()
                .stack_name(&stack)
                .send()
                .await
            {
                self.log.line(format!(
                    "warning: CancelUpdateStack {stack}: {}",
                    DeployError::aws("", e)
                ));
            }
        }
        let since = DateTime::from(std::time::SystemTime::now());
        // A failed or rolled-back end is expected here; only a settled stack matters.
        let _ = self.wait(since).await;
        Ok(())
    }
}

impl Target for StackTarget<'_> {
    fn key(&self) -> String {
        self.key.clone()
    }

    fn rollback_command(&self) -> String {
        format!("gantry rollback cloudformation {}", self.opts.stack)
    }

    fn live_revision(&self) -> Option<String> {
        self.live.as_ref().map(|(r, _, _)| r.clone())
    }

    async fn prepare(&mut self, store: &dyn HistoryStore) -> Result<(), DeployError> {
        let stack = self.opts.stack.clone();
        // Read again under the lease.
        let existing = describe_stack(self.client, &stack)
            .await?
            .filter(|s| status_of(s) != "REVIEW_IN_PROGRESS");
        if let Some(s) = &existing {
            let status = status_of(s);
            if status == "ROLLBACK_COMPLETE" || status == "ROLLBACK_FAILED" {
                return Err(DeployError::Usage(format!(
                    "stack {stack} is {status} (its creation failed); delete it (aws cloudformation delete-stack --stack-name {stack}) before deploying again"
                )));
            }
            if status.ends_with("_IN_PROGRESS") {
                return Err(DeployError::Usage(format!(
                    "stack {stack} is busy ({status}); try again when it settles"
                )));
            }
            self.stack_id = s.stack_id().map(str::to_string);
        }
        self.records = store.records(&self.key).await?;
        let previous = existing
            .as_ref()
            .map(|s| s.parameters().to_vec())
            .unwrap_or_default();
        self.live = match &existing {
            Some(_) => {
                let t = self.template_of_stack().await?;
                let p = recorded_parameters(&previous, &HashSet::new());
                Some((revision_of(&t, &p), t, p))
            }
            None => None,
        };
        self.template = match (&self.opts.template_file, &self.live) {
            (Some(path), _) => std::fs::read_to_string(path).map_err(|e| {
                DeployError::Usage(format!("cannot read template {}: {e}", path.display()))
            })?,
            (None, Some((_, t, _))) => {
                self.log.line("using the stack's current template");
                t.clone()
            }
            (None, None) => {
                return Err(DeployError::Usage(format!(
                    "stack {stack} does not exist: pass --template FILE to create it"
                )));
            }
        };
        let summary = self
            .client
            .get_template_summary()
            .template_body(&self.template)
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
        self.parameters = merge_parameters(&self.opts.parameters, &previous, declared.as_ref());
        for p in &self.parameters {
            let key = p.parameter_key().unwrap_or("?");
            let given = p.use_previous_value != Some(true)
                && self.opts.parameters.iter().any(|(k, _)| k == key);
            self.log.line(format!(
                "parameter {key} {}",
                if given { "(given)" } else { "(previous value)" }
            ));
        }
        // DescribeStacks reports every parameter, defaults included: so does the record, or
        // the live stack's digest would never equal the revision that made it.
        let mut all = self.parameters.clone();
        if let Some(summary) = &summary {
            for p in summary.parameters() {
                if let (Some(k), Some(v)) = (p.parameter_key(), p.default_value())
                    && !all.iter().any(|q| q.parameter_key() == Some(k))
                {
                    all.push(param(k, v));
                }
            }
        }
        self.recorded = recorded_parameters(&all, &no_echo);
        Ok(())
    }

    async fn make_revision(&mut self) -> Result<Revision, DeployError> {
        let kind = if self.live.is_some() {
            ChangeSetType::Update
        } else {
            self.log.line(format!(
                "stack {} does not exist: it will be created",
                self.stack()
            ));
            ChangeSetType::Create
        };
        let cs = self
            .make_change_set(kind, &self.template, &self.parameters, self.opts.preview)
            .await?;
        if cs.empty {
            self.log.line("change set: no changes");
        }
        self.change_set = Some(cs);
        let id = revision_of(&self.template, &self.recorded);
        let mut details = BTreeMap::new();
        details.insert("template".into(), self.template.clone());
        details.insert("parameters".into(), self.recorded.clone());
        Ok(Revision { id, details })
    }

    async fn roll_out(&mut self, _rev: &Revision) -> Result<(), Failure> {
        let Some(cs) = self.change_set.take() else {
            return Err(Failure::unchanged("no change set was made"));
        };
        if cs.empty {
            self.change_set = Some(cs);
            return Ok(());
        }
        // Set before sending: a signal while the request is in flight may still change it.
        self.executed = true;
        let since = match self.execute(&cs).await {
            Ok(t) => t,
            Err(e) => {
                self.executed = false;
                self.change_set = Some(cs);
                return Err(Failure::unchanged(e.to_string()));
            }
        };
        self.since = Some(since);
        self.change_set = Some(cs);
        Ok(())
    }

    async fn observe(&mut self, _rev: &Revision) -> Result<String, Failure> {
        if self.change_set.as_ref().is_some_and(|c| c.empty) {
            self.status = describe_stack(self.client, self.stack())
                .await
                .ok()
                .flatten()
                .map(|s| status_of(&s).to_string());
            return Ok("no changes: the stack is up to date".into());
        }
        let since = self
            .since
            .unwrap_or_else(|| DateTime::from(std::time::SystemTime::now()));
        match self.wait(since).await {
            Ok(s) => Ok(format!("stack is {}", status_of(&s))),
            Err(e) => {
                // Typed: the stack's own settled status, not the error text.
                let status = describe_stack(self.client, self.stack())
                    .await
                    .ok()
                    .flatten()
                    .map(|s| status_of(&s).to_string())
                    .unwrap_or_default();
                let stack = self.stack().to_string();
                Err(match (status.as_str(), &self.live) {
                    // CloudFormation put the stack back on what ran before.
                    ("UPDATE_ROLLBACK_COMPLETE", Some((live, _, _))) => Failure {
                        reason: e.to_string(),
                        live: LiveAfterFailure::ReplacedBy(live.clone()),
                    },
                    // A failed creation never served anything.
                    ("ROLLBACK_COMPLETE", None) => Failure::unchanged(format!(
                        "{e}\nthe stack is ROLLBACK_COMPLETE: delete it (aws cloudformation delete-stack --stack-name {stack}) before deploying again"
                    )),
                    _ => Failure::changed(e.to_string()),
                })
            }
        }
    }

    async fn probe(&mut self, _rev: &Revision) -> Result<String, Failure> {
        self.health()
            .await
            .map_err(|e| Failure::changed(e.to_string()))
    }

    async fn roll_back(&mut self, plan: &RollbackPlan) -> Result<RolledBack, DeployError> {
        let (template, recorded) = self.revision_inputs(plan).ok_or_else(|| {
            DeployError::History(format!(
                "no template recorded for {} of {}",
                short_revision(&plan.revision),
                self.key
            ))
        })?;
        let parameters = parameters_from_record(&recorded)?;
        self.settle().await?;
        let cs = self
            .make_change_set(
                ChangeSetType::Update,
                &template,
                &parameters,
                self.opts.preview,
            )
            .await?;
        let note = if cs.empty {
            "the stack already had its template and parameters".to_string()
        } else {
            let since = self.execute(&cs).await?;
            let s = self.wait(since).await?;
            format!("stack is {}", status_of(&s))
        };
        let health = self.health().await?;
        self.live = Some((plan.revision.clone(), template, recorded));
        Ok(RolledBack {
            revision: plan.revision.clone(),
            awaited: true,
            note: if self.opts.health_url.is_some() {
                format!("{note}; {health}")
            } else {
                note
            },
        })
    }

    fn live_after_interrupt(&self) -> LiveAfterFailure {
        if self.executed {
            LiveAfterFailure::Changed
        } else {
            LiveAfterFailure::Unchanged
        }
    }

    async fn abandon(&mut self, _rev: &Revision) {
        if !self.executed
            && let Some(cs) = self.change_set.take()
            && !cs.empty
        {
            self.discard(&cs).await;
        }
    }

    async fn after_success(&mut self, _rev: &Revision, _store: &dyn HistoryStore) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.outputs.is_empty() {
            self.log.line("outputs:");
            for (k, v) in &self.outputs {
                self.log.line(format!("  {k} = {v}"));
            }
        }
        if let Some(path) = &self.opts.outputs_dotenv {
            match std::fs::write(path, dotenv(&self.outputs)) {
                Ok(()) => self.log.line(format!(
                    "wrote {} output(s) to {}",
                    self.outputs.len(),
                    path.display()
                )),
                Err(e) => notes.push(format!("warning: cannot write {}: {e}", path.display())),
            }
        }
        notes
    }

    async fn resolve(&mut self, to: &str) -> Result<String, DeployError> {
        let want = to.trim_start_matches("sha256:");
        let mut found: Vec<&str> = self
            .records
            .iter()
            .filter(|r| r.details.contains_key("template"))
            .map(|r| r.revision.as_str())
            .filter(|r| !want.is_empty() && r.trim_start_matches("sha256:").starts_with(want))
            .collect();
        found.sort();
        found.dedup();
        match found.as_slice() {
            [one] => Ok(one.to_string()),
            [] => Err(DeployError::Usage(format!(
                "no recorded revision of {} starts with {to:?} (see gantry deployments {})",
                self.key,
                self.stack()
            ))),
            many => Err(DeployError::Usage(format!(
                "{to:?} matches {} revisions of {}; give more of it",
                many.len(),
                self.key
            ))),
        }
    }
}

/// Creates or updates the stack through the deploy state machine; see the module docs.
pub async fn deploy_stack(
    client: &Client,
    opts: &StackOptions,
    history: &dyn HistoryStore,
    log: &Log,
) -> StackDeploy {
    let mut target = match StackTarget::new(client, opts, log.clone()).await {
        Ok(t) => t,
        Err(e) => return StackDeploy::not_started(e),
    };
    let report = machine::deploy(&mut target, history, &opts.machine, log).await;
    let ok = report.ok();
    StackDeploy {
        changed: target.executed,
        outputs: if ok { target.outputs } else { Vec::new() },
        status: target.status,
        report,
    }
}

/// `--preview-only`: makes the change set, prints it and deletes it again (with the
/// placeholder stack of a CREATE change set). Nothing is changed, no lease is taken.
pub async fn preview_stack(
    client: &Client,
    opts: &StackOptions,
    history: &dyn HistoryStore,
    log: &Log,
) -> Result<(), DeployError> {
    let mut target = StackTarget::new(client, opts, log.clone()).await?;
    target.prepare(history).await?;
    target.make_revision().await?;
    if let Some(cs) = target.change_set.take() {
        if cs.empty {
            log.line("no changes: the stack is up to date");
        } else {
            target.discard(&cs).await;
        }
    }
    Ok(())
}

/// `gantry rollback cloudformation STACK [--to REV]`: redeploys the template and parameters of
/// `to`, else of the last known-good revision other than the live one, awaited and probed;
/// only then is it known good and "known good" withdrawn from the revision left.
pub async fn rollback_stack(
    client: &Client,
    opts: &StackOptions,
    to: Option<&str>,
    history: &dyn HistoryStore,
    log: &Log,
) -> Report {
    let mut target = match StackTarget::new(client, opts, log.clone()).await {
        Ok(t) => t,
        Err(e) => return StackDeploy::not_started(e).report,
    };
    if target.stack_id.is_none() {
        return StackDeploy::not_started(DeployError::Usage(format!(
            "stack {} does not exist: nothing to roll back",
            opts.stack
        )))
        .report;
    }
    machine::rollback(&mut target, history, to, &opts.machine, log).await
}

impl StackDeploy {
    fn not_started(e: DeployError) -> Self {
        StackDeploy {
            report: Report::not_started(e.to_string()),
            outputs: Vec::new(),
            status: None,
            changed: false,
        }
    }
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
