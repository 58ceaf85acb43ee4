//! Deployment history: what was deployed where, when, by which commit and job, the result, and
//! whether a rollback happened. It is also where "known good" comes from: a revision is known
//! good once a Gantry deploy (or rollback) of it passed its rollout and health check.
//!
//! [`HistoryStore`] is the one async trait every store implements. It speaks only of targets,
//! records and leases, never of files or objects, so the server can implement it over HTTP.
//! Two implementations live here, both as one JSON document per target updated with
//! compare-and-swap ([`CasHistoryStore`]):
//! - `file://DIR` ([`FileBackend`]): `DIR/targets/<target>.json`, swapped under a lock file;
//! - `s3://BUCKET/PREFIX` ([`crate::s3_history::S3Backend`]): one object per target, written
//!   with `If-Match` / `If-None-Match: *` and retried on `412 Precondition Failed`.
//!
//! [`open`] turns a `--history` URL into a store; [`default_url`] picks the project's state
//! location when none is given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::DeployError;

/// The result of one deployment attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployResult {
    /// Started, no result yet (or the process was killed with SIGKILL before recording one).
    InProgress,
    /// Submitted with `--timeout -1`: nobody waited, so it is not known good.
    Submitted,
    /// Rolled out and healthy: known good.
    Succeeded,
    /// Failed and left as is (rollback disabled or impossible).
    Failed,
    /// Failed, then the target was returned to an earlier revision.
    RolledBack,
    /// Stopped by SIGINT/SIGTERM with `--no-rollback`: left as it was at that moment.
    Interrupted,
}

impl DeployResult {
    /// The word shown in `gantry deployments`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeployResult::InProgress => "in_progress",
            DeployResult::Submitted => "submitted",
            DeployResult::Succeeded => "succeeded",
            DeployResult::Failed => "failed",
            DeployResult::RolledBack => "rolled_back",
            DeployResult::Interrupted => "interrupted",
        }
    }
}

/// Whether the record is a forward deploy or a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Deploy,
    Rollback,
}

/// One deployment attempt of one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// Unique id of the attempt.
    pub id: String,
    /// The target key: `ecs:ACCOUNT:REGION:CLUSTER/SERVICE`,
    /// `cloudformation:ACCOUNT:REGION:STACK` or `docker:ENGINE/NAME`.
    pub target: String,
    pub kind: RecordKind,
    /// What was deployed: a task-definition ARN, a container revision, a stack template digest.
    pub revision: String,
    /// What ran before.
    #[serde(default)]
    pub previous_revision: Option<String>,
    /// RFC 3339 UTC.
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    /// `CI_COMMIT_SHA` when run in a pipeline.
    #[serde(default)]
    pub commit: Option<String>,
    /// `CI_JOB_NAME` when run in a pipeline.
    #[serde(default)]
    pub job: Option<String>,
    /// `CI_JOB_ID` when run in a pipeline.
    #[serde(default)]
    pub job_id: Option<String>,
    /// `CI_PIPELINE_ID` when run in a pipeline.
    #[serde(default)]
    pub pipeline: Option<String>,
    pub result: DeployResult,
    /// True only when the revision passed its rollout and health check.
    #[serde(default)]
    pub known_good: bool,
    /// The revision the target was returned to after a failure.
    #[serde(default)]
    pub rolled_back_to: Option<String>,
    /// Failure reason or a short note.
    #[serde(default)]
    pub message: Option<String>,
    /// Target-specific facts (image, ports, desired count, ...), enough to recreate a revision.
    #[serde(default)]
    pub details: BTreeMap<String, String>,
}

fn ci_env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl DeploymentRecord {
    /// A new in-progress record stamped with the pipeline's commit and job from the environment.
    pub fn start(target: &str, kind: RecordKind, revision: &str, previous: Option<&str>) -> Self {
        let now = chrono::Utc::now();
        DeploymentRecord {
            id: format!("{}-{:08x}", now.format("%Y%m%dT%H%M%S%.3fZ"), rand_u32()),
            target: target.to_string(),
            kind,
            revision: revision.to_string(),
            previous_revision: previous.map(str::to_string),
            started_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            finished_at: None,
            commit: ci_env("CI_COMMIT_SHA"),
            job: ci_env("CI_JOB_NAME"),
            job_id: ci_env("CI_JOB_ID"),
            pipeline: ci_env("CI_PIPELINE_ID"),
            result: DeployResult::InProgress,
            known_good: false,
            rolled_back_to: None,
            message: None,
            details: BTreeMap::new(),
        }
    }

    /// Sets the result and the finish time; only `Succeeded` makes the revision known good.
    pub fn finish(&mut self, result: DeployResult, message: Option<String>) {
        self.result = result;
        self.known_good = result == DeployResult::Succeeded;
        self.message = message;
        self.finished_at = Some(now_rfc3339());
    }
}

/// Cheap uniqueness for record and lease ids; not security relevant.
pub(crate) fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// Who holds a target's lease, and until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseHolder {
    /// Unique per deploy attempt; only this id may renew or release the lease.
    pub id: String,
    #[serde(default)]
    pub pipeline: Option<String>,
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    pub job: Option<String>,
    /// The machine the holder runs on.
    #[serde(default)]
    pub host: Option<String>,
    pub acquired_at: String,
    /// RFC 3339 UTC; after this anyone may take the lease over.
    pub expires_at: String,
}

impl LeaseHolder {
    /// A holder for this process, stamped from the CI environment, valid for `ttl`.
    pub fn for_this_process(ttl: Duration) -> Self {
        let now = chrono::Utc::now();
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(24));
        LeaseHolder {
            id: format!("{}-{:08x}", std::process::id(), rand_u32()),
            pipeline: ci_env("CI_PIPELINE_ID"),
            job_id: ci_env("CI_JOB_ID"),
            job: ci_env("CI_JOB_NAME"),
            host: ci_env("HOSTNAME").or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            }),
            acquired_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            expires_at: (now + ttl).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    /// Whether the lease has run out (an unparsable expiry counts as expired).
    pub fn expired(&self) -> bool {
        chrono::DateTime::parse_from_rfc3339(&self.expires_at)
            .map(|t| t < chrono::Utc::now())
            .unwrap_or(true)
    }

    /// "pipeline 12 job 34 (deploy) on host-a, since ..., until ...", for error messages.
    pub fn describe(&self) -> String {
        let mut s = match (&self.pipeline, &self.job_id) {
            (Some(p), Some(j)) => format!("pipeline {p} job {j}"),
            (Some(p), None) => format!("pipeline {p}"),
            (None, Some(j)) => format!("job {j}"),
            (None, None) => "a gantry process outside CI".to_string(),
        };
        if let Some(name) = &self.job {
            s.push_str(&format!(" ({name})"));
        }
        if let Some(h) = &self.host {
            s.push_str(&format!(" on {h}"));
        }
        s.push_str(&format!(
            ", since {} until {}",
            self.acquired_at, self.expires_at
        ));
        s
    }
}

/// The answer to a lease request.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseAttempt {
    /// The caller holds the lease now (new, renewed, or taken over from an expired holder).
    Acquired,
    /// Someone else holds an unexpired lease.
    Held(LeaseHolder),
}

/// Where deployment records and target leases live.
///
/// Implementations must make every method safe against concurrent callers in other processes
/// and on other machines: a record saved is never lost to a concurrent save of another record,
/// and at most one unexpired lease exists per target.
///
/// Targets are opaque strings (see [`DeploymentRecord::target`]); records of one target are
/// returned oldest first.
#[async_trait::async_trait]
pub trait HistoryStore: Send + Sync {
    /// Where the store is, for messages (`file:///…/.gantry`, `s3://bucket/prefix`, a URL).
    fn location(&self) -> String;

    /// Inserts the record under its target, or replaces the record with the same id.
    async fn save(&self, record: &DeploymentRecord) -> Result<(), DeployError>;

    /// All records of exactly `target`, oldest first.
    async fn records(&self, target: &str) -> Result<Vec<DeploymentRecord>, DeployError>;

    /// All records of every target matching `filter` (see [`target_matches`]), oldest first.
    async fn list(&self, filter: Option<&str>) -> Result<Vec<DeploymentRecord>, DeployError>;

    /// Takes the target's lease for `holder` if it is free, expired, or already `holder.id`'s
    /// (then its expiry is renewed); otherwise reports the current holder.
    async fn acquire_lease(
        &self,
        target: &str,
        holder: &LeaseHolder,
    ) -> Result<LeaseAttempt, DeployError>;

    /// Releases the lease if `holder_id` still holds it; otherwise does nothing.
    async fn release_lease(&self, target: &str, holder_id: &str) -> Result<(), DeployError>;

    /// The newest known-good record of exactly `target`, skipping revision `except`.
    async fn last_known_good(
        &self,
        target: &str,
        except: Option<&str>,
    ) -> Result<Option<DeploymentRecord>, DeployError> {
        Ok(self
            .records(target)
            .await?
            .into_iter()
            .rev()
            .find(|r| r.known_good && Some(r.revision.as_str()) != except))
    }
}

/// Withdraws "known good" from every record of `revision` on `target` (a rollback away from it
/// says it is not good after all), so later rollbacks skip it. Returns how many changed.
pub async fn withdraw_known_good(
    store: &dyn HistoryStore,
    target: &str,
    revision: &str,
    why: &str,
) -> Result<usize, DeployError> {
    let mut changed = 0;
    for mut r in store.records(target).await? {
        if r.revision != revision || !r.known_good {
            continue;
        }
        r.known_good = false;
        r.message = Some(match r.message.take() {
            Some(m) => format!("{m}; {why}"),
            None => why.to_string(),
        });
        store.save(&r).await?;
        changed += 1;
    }
    Ok(changed)
}

/// Takes `target`'s lease, waiting up to `wait` (polling) while another holder has it.
/// The error names the holder's pipeline and job.
pub async fn acquire_lease_waiting(
    store: &dyn HistoryStore,
    target: &str,
    ttl: Duration,
    wait: Duration,
    log: &crate::Log,
) -> Result<LeaseHolder, DeployError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut said = false;
    loop {
        let holder = LeaseHolder::for_this_process(ttl);
        match store.acquire_lease(target, &holder).await? {
            LeaseAttempt::Acquired => return Ok(holder),
            LeaseAttempt::Held(other) => {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Err(DeployError::Locked(format!(
                        "{target} is being deployed by {}; nothing was changed. Wait for it, or run again with --wait-lock 10m",
                        other.describe()
                    )));
                }
                if !said {
                    log.line(format!(
                        "waiting for the lease on {target}, held by {}",
                        other.describe()
                    ));
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(500).min(deadline - now)).await;
            }
        }
    }
}

/// A filter matches a target when equal, or when it is its kind (`ecs`), a prefix ending at a
/// separator (`ecs:123456789012`), the last name (`web` for `ecs:…:prod/web`), or
/// `KIND:TAIL` for a target of that kind ending in TAIL (`docker:web` for `docker:host/web`,
/// `ecs:prod/web` for `ecs:ACCOUNT:REGION:prod/web`).
pub fn target_matches(target: &str, filter: &str) -> bool {
    if target == filter {
        return true;
    }
    if let Some(rest) = target.strip_prefix(filter) {
        return rest.starts_with(':') || rest.starts_with('/');
    }
    let last = target.rsplit(['/', ':']).next().unwrap_or(target);
    if last == filter {
        return true;
    }
    match (filter.split_once(':'), target.split_once(':')) {
        (Some((fk, rest)), Some((tk, _))) if fk == tk && !rest.is_empty() => {
            target.ends_with(&format!(":{rest}"))
                || target.ends_with(&format!("/{rest}"))
                || target.contains(&format!(":{rest}/"))
        }
        _ => false,
    }
}

/// The store named by a `--history` URL: `file://PATH`, `s3://BUCKET/PREFIX` or a Gantry
/// server's `https://…` ([`crate::http_history`]).
/// `aws` supplies credentials, region and endpoint for S3.
pub async fn open(
    url: &str,
    aws: &crate::aws::AwsOptions,
) -> Result<Box<dyn HistoryStore>, DeployError> {
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err(DeployError::Usage(format!(
                "--history {url:?}: file:// needs a directory, e.g. file:///var/lib/gantry"
            )));
        }
        return Ok(Box::new(CasHistoryStore::new(FileBackend::new(path))));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(DeployError::Usage(format!(
                "--history {url:?}: expected s3://BUCKET/PREFIX"
            )));
        }
        let backend = crate::s3_history::S3Backend::connect(bucket, prefix, aws).await?;
        return Ok(Box::new(CasHistoryStore::new(backend)));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(Box::new(crate::http_history::HttpHistoryStore::from_env(
            url,
        )?));
    }
    Err(DeployError::Usage(format!(
        "--history {url:?}: expected file://PATH, s3://BUCKET/PREFIX or https://GANTRY_SERVER (or set GANTRY_HISTORY)"
    )))
}

/// The history URL when neither `--history` nor `GANTRY_HISTORY` is given:
/// `file://$GANTRY_STATE_DIR`, else `file://REPO/.gantry` for the git repository around the
/// working directory. Inside a CI job without either, the working directory is the job's build
/// folder, which does not outlive the job: that is an error, not a silent loss of records.
pub fn default_url() -> Result<String, DeployError> {
    if let Some(dir) = ci_env("GANTRY_STATE_DIR") {
        return Ok(format!("file://{}", absolute(Path::new(&dir)).display()));
    }
    if ci_env("CI_JOB_ID").is_some() || ci_env("CI_PROJECT_DIR").is_some() {
        return Err(DeployError::Usage(
            "this is a CI job and no deployment history was named: records kept in the job's build folder would be lost with it. \
             Pass --history s3://BUCKET/PREFIX (or file:///shared/dir), or set GANTRY_HISTORY or GANTRY_STATE_DIR"
                .into(),
        ));
    }
    let cwd = std::env::current_dir()
        .map_err(|e| DeployError::Usage(format!("cannot read the working directory: {e}")))?;
    let root = cwd
        .ancestors()
        .find(|d| d.join(".git").exists())
        .unwrap_or(&cwd);
    Ok(format!("file://{}", root.join(".gantry").display()))
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

// ---------------------------------------------------------------------------------------------
// Compare-and-swap documents: the shared logic of the file and S3 stores.

/// The result of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutResult {
    Written,
    /// The object changed (or appeared) since it was read: read again and retry.
    Conflict,
}

/// A key-value store with conditional writes; one key per target. Internal to the file and S3
/// stores (the HTTP store implements [`HistoryStore`] directly).
#[async_trait::async_trait]
pub trait CasBackend: Send + Sync {
    fn location(&self) -> String;
    /// The object and its version tag, or None.
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, DeployError>;
    /// Writes if the current version tag is `expected` (None: only if absent).
    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        expected: Option<&str>,
    ) -> Result<PutResult, DeployError>;
    /// Every key.
    async fn keys(&self) -> Result<Vec<String>, DeployError>;
}

/// One target's document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TargetDoc {
    version: u32,
    target: String,
    #[serde(default)]
    lease: Option<LeaseHolder>,
    #[serde(default)]
    records: Vec<DeploymentRecord>,
}

/// Records kept per target; known-good records are kept beyond it.
const MAX_RECORDS: usize = 500;

/// Object key of a target: path-safe, reversible enough to read (`:` and `/` become `~`).
pub fn object_key(target: &str) -> String {
    let mut out = String::with_capacity(target.len() + 5);
    for c in target.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => out.push(c),
            ':' | '/' => out.push('~'),
            other => out.push_str(&format!("%{:02X}", other as u32 & 0xff)),
        }
    }
    out.push_str(".json");
    out
}

/// [`HistoryStore`] over any [`CasBackend`]: every change is read, modify, conditional write,
/// retried on conflict.
pub struct CasHistoryStore<B: CasBackend> {
    backend: B,
}

impl<B: CasBackend> CasHistoryStore<B> {
    pub fn new(backend: B) -> Self {
        CasHistoryStore { backend }
    }

    async fn read(&self, key: &str) -> Result<Option<(TargetDoc, String)>, DeployError> {
        match self.backend.get(key).await? {
            None => Ok(None),
            Some((bytes, tag)) => serde_json::from_slice(&bytes)
                .map(|d| Some((d, tag)))
                .map_err(|e| {
                    DeployError::History(format!(
                        "{}/{key} is not a valid history document: {e}",
                        self.backend.location()
                    ))
                }),
        }
    }

    /// Applies `change` to the target's document until a conditional write succeeds.
    async fn update<R: Send>(
        &self,
        target: &str,
        mut change: impl FnMut(&mut TargetDoc) -> R + Send,
    ) -> Result<R, DeployError> {
        let key = object_key(target);
        for attempt in 0..64u32 {
            let current = self.read(&key).await?;
            let (mut doc, tag) = match current {
                Some((d, t)) => (d, Some(t)),
                None => (
                    TargetDoc {
                        version: 2,
                        target: target.to_string(),
                        ..Default::default()
                    },
                    None,
                ),
            };
            let result = change(&mut doc);
            trim(&mut doc.records);
            let body = serde_json::to_vec_pretty(&doc)
                .map_err(|e| DeployError::History(format!("cannot encode history: {e}")))?;
            match self.backend.put(&key, body, tag.as_deref()).await? {
                PutResult::Written => return Ok(result),
                PutResult::Conflict => {
                    // Spread concurrent writers apart.
                    let ms = 5 + (rand_u32() % (10 + 10 * attempt.min(20))) as u64;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
        }
        Err(DeployError::History(format!(
            "{}: {target} kept changing under 64 attempts to write it",
            self.backend.location()
        )))
    }
}

fn trim(records: &mut Vec<DeploymentRecord>) {
    if records.len() <= MAX_RECORDS {
        return;
    }
    let excess = records.len() - MAX_RECORDS;
    let mut dropped = 0;
    records.retain(|r| {
        if dropped < excess && !r.known_good && r.result != DeployResult::InProgress {
            dropped += 1;
            false
        } else {
            true
        }
    });
}

#[async_trait::async_trait]
impl<B: CasBackend> HistoryStore for CasHistoryStore<B> {
    fn location(&self) -> String {
        self.backend.location()
    }

    async fn save(&self, record: &DeploymentRecord) -> Result<(), DeployError> {
        self.update(&record.target, |doc| {
            match doc.records.iter_mut().find(|r| r.id == record.id) {
                Some(existing) => *existing = record.clone(),
                None => doc.records.push(record.clone()),
            }
        })
        .await
    }

    async fn records(&self, target: &str) -> Result<Vec<DeploymentRecord>, DeployError> {
        Ok(self
            .read(&object_key(target))
            .await?
            .map(|(d, _)| d.records)
            .unwrap_or_default())
    }

    async fn list(&self, filter: Option<&str>) -> Result<Vec<DeploymentRecord>, DeployError> {
        let mut out = Vec::new();
        for key in self.backend.keys().await? {
            let Some((doc, _)) = self.read(&key).await? else {
                continue;
            };
            if filter.is_none_or(|f| target_matches(&doc.target, f)) {
                out.extend(doc.records);
            }
        }
        out.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn acquire_lease(
        &self,
        target: &str,
        holder: &LeaseHolder,
    ) -> Result<LeaseAttempt, DeployError> {
        self.update(target, |doc| match &doc.lease {
            Some(l) if l.id != holder.id && !l.expired() => LeaseAttempt::Held(l.clone()),
            _ => {
                doc.lease = Some(holder.clone());
                LeaseAttempt::Acquired
            }
        })
        .await
    }

    async fn release_lease(&self, target: &str, holder_id: &str) -> Result<(), DeployError> {
        self.update(target, |doc| {
            if doc.lease.as_ref().is_some_and(|l| l.id == holder_id) {
                doc.lease = None;
            }
        })
        .await
    }
}

/// `file://DIR`: `DIR/targets/<key>`, each swap done under `<key>.lock` (a lock older than
/// 30 s is a crashed writer's). The version tag is the SHA-256 of the content.
#[derive(Debug, Clone)]
pub struct FileBackend {
    dir: PathBuf,
}

impl FileBackend {
    pub fn new(dir: impl AsRef<Path>) -> Self {
        FileBackend {
            dir: absolute(dir.as_ref()).join("targets"),
        }
    }

    fn tag(bytes: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    }

    fn read_sync(path: &Path) -> Result<Option<(Vec<u8>, String)>, DeployError> {
        match std::fs::read(path) {
            Ok(b) => {
                let t = Self::tag(&b);
                Ok(Some((b, t)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DeployError::History(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    fn put_sync(
        path: &Path,
        body: &[u8],
        expected: Option<&str>,
    ) -> Result<PutResult, DeployError> {
        let err = |p: &Path, e: std::io::Error| {
            DeployError::History(format!("cannot write {}: {e}", p.display()))
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        }
        let lock = path.with_extension("json.lock");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
            {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&lock)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(30));
                    if stale {
                        let _ = std::fs::remove_file(&lock);
                        continue;
                    }
                    if std::time::Instant::now() >= deadline {
                        return Err(DeployError::History(format!(
                            "{} is held by another gantry process",
                            lock.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(err(&lock, e)),
            }
        }
        let result = (|| {
            let current = Self::read_sync(path)?.map(|(_, t)| t);
            if current.as_deref() != expected {
                return Ok(PutResult::Conflict);
            }
            let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
            std::fs::write(&tmp, body).map_err(|e| err(&tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| err(path, e))?;
            Ok(PutResult::Written)
        })();
        let _ = std::fs::remove_file(&lock);
        result
    }
}

#[async_trait::async_trait]
impl CasBackend for FileBackend {
    fn location(&self) -> String {
        format!(
            "file://{}",
            self.dir.parent().unwrap_or(&self.dir).display()
        )
    }

    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, DeployError> {
        let path = self.dir.join(key);
        tokio::task::spawn_blocking(move || Self::read_sync(&path))
            .await
            .map_err(|e| DeployError::History(format!("history read task: {e}")))?
    }

    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        expected: Option<&str>,
    ) -> Result<PutResult, DeployError> {
        let path = self.dir.join(key);
        let expected = expected.map(str::to_string);
        tokio::task::spawn_blocking(move || Self::put_sync(&path, &body, expected.as_deref()))
            .await
            .map_err(|e| DeployError::History(format!("history write task: {e}")))?
    }

    async fn keys(&self) -> Result<Vec<String>, DeployError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(DeployError::History(format!(
                    "cannot list {}: {e}",
                    self.dir.display()
                )));
            }
        };
        let mut keys: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".json"))
            .collect();
        keys.sort();
        Ok(keys)
    }
}

/// The file store at `DIR` (what `file://DIR` opens).
pub type FileHistoryStore = CasHistoryStore<FileBackend>;

impl FileHistoryStore {
    /// A file store rooted at `dir`.
    pub fn at(dir: impl AsRef<Path>) -> Self {
        CasHistoryStore::new(FileBackend::new(dir))
    }
}

/// An in-memory backend for tests and for callers that keep history elsewhere.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    objects: std::sync::Mutex<BTreeMap<String, (Vec<u8>, u64)>>,
}

#[async_trait::async_trait]
impl CasBackend for MemoryBackend {
    fn location(&self) -> String {
        "memory".into()
    }

    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, DeployError> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        Ok(objects.get(key).map(|(b, v)| (b.clone(), v.to_string())))
    }

    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        expected: Option<&str>,
    ) -> Result<PutResult, DeployError> {
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        let current = objects.get(key).map(|(_, v)| v.to_string());
        if current.as_deref() != expected {
            return Ok(PutResult::Conflict);
        }
        let next = current.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
        objects.insert(key.to_string(), (body, next));
        Ok(PutResult::Written)
    }

    async fn keys(&self) -> Result<Vec<String>, DeployError> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        Ok(objects.keys().cloned().collect())
    }
}

/// An in-memory store.
pub type MemoryHistoryStore = CasHistoryStore<MemoryBackend>;

impl Default for MemoryHistoryStore {
    fn default() -> Self {
        CasHistoryStore::new(MemoryBackend::default())
    }
}

/// Formats records as the table `gantry deployments` prints.
pub fn format_table(records: &[DeploymentRecord]) -> String {
    let mut rows = vec![[
        "STARTED".to_string(),
        "TARGET".to_string(),
        "KIND".to_string(),
        "REVISION".to_string(),
        "RESULT".to_string(),
        "GOOD".to_string(),
        "ROLLED BACK TO".to_string(),
        "COMMIT".to_string(),
        "PIPELINE/JOB".to_string(),
    ]];
    for r in records {
        rows.push([
            r.started_at.clone(),
            r.target.clone(),
            match r.kind {
                RecordKind::Deploy => "deploy".into(),
                RecordKind::Rollback => "rollback".into(),
            },
            short_revision(&r.revision),
            r.result.as_str().to_string(),
            if r.known_good { "yes" } else { "-" }.into(),
            r.rolled_back_to
                .as_deref()
                .map(short_revision)
                .unwrap_or_else(|| "-".into()),
            r.commit
                .as_deref()
                .map(|c| c.chars().take(8).collect())
                .unwrap_or_else(|| "-".into()),
            match (&r.pipeline, &r.job_id, &r.job) {
                (Some(p), Some(j), _) => format!("{p}/{j}"),
                (Some(p), None, _) => p.clone(),
                (None, _, Some(name)) => name.clone(),
                _ => "-".into(),
            },
        ]);
    }
    let mut widths = [0usize; 9];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `arn:aws:ecs:...:task-definition/web:7` → `web:7`; other revisions unchanged.
pub fn short_revision(rev: &str) -> String {
    match rev.rsplit_once(":task-definition/") {
        Some((_, tail)) => tail.to_string(),
        None => rev.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "ecs:1:eu-west-1:c/web";

    #[tokio::test]
    async fn file_store_round_trips_and_finds_known_good() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileHistoryStore::at(dir.path().join("state"));
        let mut good = DeploymentRecord::start(WEB, RecordKind::Deploy, "web:1", None);
        good.finish(DeployResult::Succeeded, None);
        store.save(&good).await.expect("save");
        let mut bad = DeploymentRecord::start(WEB, RecordKind::Deploy, "web:2", Some("web:1"));
        store.save(&bad).await.expect("save");
        bad.finish(DeployResult::RolledBack, Some("unhealthy".into()));
        store.save(&bad).await.expect("save again replaces");
        let other = DeploymentRecord::start("ecs:1:eu-west-1:c/api", RecordKind::Deploy, "a", None);
        store.save(&other).await.expect("save");

        let all = store.list(None).await.expect("list");
        assert_eq!(all.len(), 3);
        assert_eq!(store.list(Some("web")).await.expect("list").len(), 2);
        assert_eq!(store.list(Some("ecs:1")).await.expect("list").len(), 3);
        assert_eq!(
            store
                .list(Some("ecs:1:eu-west-1:c/w"))
                .await
                .expect("l")
                .len(),
            0
        );
        let kg = store.last_known_good(WEB, Some("web:2")).await.expect("kg");
        assert_eq!(kg.map(|r| r.revision), Some("web:1".to_string()));
        withdraw_known_good(&store, WEB, "web:1", "rolled back by hand")
            .await
            .expect("withdraw");
        assert!(
            store
                .last_known_good(WEB, None)
                .await
                .expect("kg")
                .is_none()
        );
        let table = format_table(&all);
        assert!(table.contains("rolled_back"), "{table}");
    }

    #[tokio::test]
    async fn leases_exclude_renew_and_expire() {
        let store = MemoryHistoryStore::default();
        let a = LeaseHolder::for_this_process(Duration::from_secs(60));
        let b = LeaseHolder::for_this_process(Duration::from_secs(60));
        assert_eq!(
            store.acquire_lease(WEB, &a).await.expect("a"),
            LeaseAttempt::Acquired
        );
        assert!(matches!(
            store.acquire_lease(WEB, &b).await.expect("b"),
            LeaseAttempt::Held(h) if h.id == a.id
        ));
        assert_eq!(
            store.acquire_lease(WEB, &a).await.expect("renew"),
            LeaseAttempt::Acquired
        );
        store.release_lease(WEB, &b.id).await.expect("not b's");
        assert!(matches!(
            store.acquire_lease(WEB, &b).await.expect("b"),
            LeaseAttempt::Held(_)
        ));
        let mut expired = LeaseHolder::for_this_process(Duration::from_secs(60));
        expired.expires_at = "2000-01-01T00:00:00Z".into();
        store.release_lease(WEB, &a.id).await.expect("release");
        assert_eq!(
            store.acquire_lease(WEB, &expired).await.expect("e"),
            LeaseAttempt::Acquired
        );
        assert_eq!(
            store.acquire_lease(WEB, &b).await.expect("take over"),
            LeaseAttempt::Acquired
        );
    }

    #[test]
    fn filters_and_keys() {
        assert!(target_matches("docker:host1/web", "docker:web"));
        assert!(target_matches(WEB, "ecs:c/web"));
        assert!(!target_matches(WEB, "ecs:b/web"));
        assert!(target_matches(WEB, "ecs:c"), "a cluster");
        assert!(target_matches("docker:host1/web", "web"));
        assert!(!target_matches("docker:host1/web", "ecs:web"));
        assert!(target_matches(WEB, "ecs"));
        assert_eq!(object_key(WEB), "ecs~1~eu-west-1~c~web.json");
    }

    #[tokio::test]
    async fn parallel_writers_in_separate_stores_lose_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut tasks = Vec::new();
        for t in 0..4 {
            let path = dir.path().to_path_buf();
            tasks.push(tokio::spawn(async move {
                // A store per task, as separate processes would have; one shared target.
                let store = FileHistoryStore::at(&path);
                for i in 0..10 {
                    let r =
                        DeploymentRecord::start(WEB, RecordKind::Deploy, &format!("{t}.{i}"), None);
                    store.save(&r).await.expect("save");
                }
            }));
        }
        for t in tasks {
            t.await.expect("join");
        }
        let n = FileHistoryStore::at(dir.path())
            .records(WEB)
            .await
            .expect("list");
        assert_eq!(n.len(), 40);
    }

    #[tokio::test]
    async fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("targets")).expect("mkdir");
        std::fs::write(dir.path().join("targets").join(object_key(WEB)), "{nope").expect("w");
        let store = FileHistoryStore::at(dir.path());
        assert!(matches!(
            store.list(None).await,
            Err(DeployError::History(_))
        ));
    }
}
