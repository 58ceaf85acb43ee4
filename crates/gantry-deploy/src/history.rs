//! Deployment history: what was deployed where, when, by which commit and job, the result, and
//! whether a rollback happened. It is also where "known good" comes from: a revision is known
//! good once a Gantry deploy of it passed its rollout and health check.
//!
//! [`HistoryStore`] is a trait so the server can keep the records in its database; the default
//! [`FileHistoryStore`] keeps them in `$GANTRY_STATE_DIR/deployments.json`
//! (`.gantry/deployments.json` in the working directory when the variable is unset).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::DeployError;

/// The result of one deployment attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployResult {
    /// Started, no result yet (or the process died before recording one).
    InProgress,
    /// Submitted with `--timeout -1`: nobody waited, so it is not known good.
    Submitted,
    /// Rolled out and healthy: known good.
    Succeeded,
    /// Failed and left as is (rollback disabled or impossible).
    Failed,
    /// Failed, then the target was returned to an earlier revision.
    RolledBack,
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
    /// `ecs:CLUSTER/SERVICE`, `docker:NAME` or `cloudformation:STACK`.
    pub target: String,
    pub kind: RecordKind,
    /// What was deployed: a task-definition ARN, a container revision, a stack id.
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
    /// Target-specific facts (image, ports, ...), enough to recreate a revision.
    #[serde(default)]
    pub details: BTreeMap<String, String>,
}

impl DeploymentRecord {
    /// A new in-progress record stamped with the pipeline's commit and job from the environment.
    pub fn start(target: &str, kind: RecordKind, revision: &str, previous: Option<&str>) -> Self {
        let now = chrono::Utc::now();
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        DeploymentRecord {
            id: format!("{}-{:08x}", now.format("%Y%m%dT%H%M%S%.3fZ"), rand_u32()),
            target: target.to_string(),
            kind,
            revision: revision.to_string(),
            previous_revision: previous.map(str::to_string),
            started_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            finished_at: None,
            commit: env("CI_COMMIT_SHA"),
            job: env("CI_JOB_NAME"),
            pipeline: env("CI_PIPELINE_ID"),
            result: DeployResult::InProgress,
            known_good: false,
            rolled_back_to: None,
            message: None,
            details: BTreeMap::new(),
        }
    }

    /// Sets the result and the finish time.
    pub fn finish(&mut self, result: DeployResult, message: Option<String>) {
        self.result = result;
        self.known_good = result == DeployResult::Succeeded;
        self.message = message;
        self.finished_at =
            Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
}

/// Cheap uniqueness for record ids; not security relevant.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}

/// Where deployment records live.
pub trait HistoryStore: Send + Sync {
    /// Inserts the record, or replaces the one with the same id.
    fn save(&self, record: &DeploymentRecord) -> Result<(), DeployError>;

    /// All records, oldest first, optionally only those matching `target` (see [`target_matches`]).
    fn list(&self, target: Option<&str>) -> Result<Vec<DeploymentRecord>, DeployError>;

    /// The newest known-good revision of exactly `target`, skipping `except` (the revision
    /// that just failed).
    fn last_known_good(
        &self,
        target: &str,
        except: Option<&str>,
    ) -> Result<Option<DeploymentRecord>, DeployError> {
        Ok(self
            .list(None)?
            .into_iter()
            .rev()
            .find(|r| r.target == target && r.known_good && Some(r.revision.as_str()) != except))
    }
}

/// Withdraws "known good" from the newest record of `revision` on `target` (a manual rollback
/// away from it says it is not good after all), so later rollbacks skip it.
pub fn withdraw_known_good(
    store: &dyn HistoryStore,
    target: &str,
    revision: &str,
    why: &str,
) -> Result<(), DeployError> {
    let newest = store
        .list(Some(target))?
        .into_iter()
        .rev()
        .find(|r| r.target == target && r.revision == revision && r.known_good);
    if let Some(mut r) = newest {
        r.known_good = false;
        r.message = Some(match r.message.take() {
            Some(m) => format!("{m}; {why}"),
            None => why.to_string(),
        });
        store.save(&r)?;
    }
    Ok(())
}

/// A filter matches a target when equal, or when it is its kind (`ecs`), a prefix ending at a
/// separator (`ecs:prod`), or the last name (`web` for `ecs:prod/web`).
pub fn target_matches(target: &str, filter: &str) -> bool {
    if target == filter {
        return true;
    }
    if let Some(rest) = target.strip_prefix(filter) {
        return rest.starts_with(':') || rest.starts_with('/');
    }
    let last = target.rsplit(['/', ':']).next().unwrap_or(target);
    last == filter
}

/// The default store: a JSON file, rewritten atomically (temp file + rename) on each save.
#[derive(Debug)]
pub struct FileHistoryStore {
    path: PathBuf,
    lock: Mutex<()>,
}

#[derive(Serialize, Deserialize, Default)]
struct HistoryFile {
    version: u32,
    deployments: Vec<DeploymentRecord>,
}

impl FileHistoryStore {
    /// A store at an explicit path.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        FileHistoryStore {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    /// `$GANTRY_STATE_DIR/deployments.json`, else `.gantry/deployments.json`.
    pub fn from_env() -> Self {
        let dir = std::env::var_os("GANTRY_STATE_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".gantry"));
        FileHistoryStore::at(dir.join("deployments.json"))
    }

    /// The file this store reads and writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<HistoryFile, DeployError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                DeployError::History(format!("{} is not valid: {e}", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HistoryFile::default()),
            Err(e) => Err(DeployError::History(format!(
                "cannot read {}: {e}",
                self.path.display()
            ))),
        }
    }

    fn write(&self, file: &HistoryFile) -> Result<(), DeployError> {
        let err = |e: std::io::Error| {
            DeployError::History(format!("cannot write {}: {e}", self.path.display()))
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = self
            .path
            .with_extension(format!("json.tmp{}", std::process::id()));
        let body = serde_json::to_vec_pretty(file)
            .map_err(|e| DeployError::History(format!("cannot encode history: {e}")))?;
        std::fs::write(&tmp, body).map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }
}

/// A lock file beside the history, so parallel jobs (one per service, say) do not lose each
/// other's records in the read-modify-write. A lock older than 30 s is a crashed writer's.
struct FileLock(PathBuf);

impl FileLock {
    fn acquire(history: &Path) -> Result<FileLock, DeployError> {
        let path = history.with_extension("json.lock");
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                DeployError::History(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Ok(FileLock(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > std::time::Duration::from_secs(30));
                    if stale {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if std::time::Instant::now() >= deadline {
                        return Err(DeployError::History(format!(
                            "{} is held by another gantry process",
                            path.display()
                        )));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(DeployError::History(format!(
                        "cannot create {}: {e}",
                        path.display()
                    )));
                }
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl HistoryStore for FileHistoryStore {
    fn save(&self, record: &DeploymentRecord) -> Result<(), DeployError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let _file_lock = FileLock::acquire(&self.path)?;
        let mut file = self.read()?;
        file.version = 1;
        match file.deployments.iter_mut().find(|r| r.id == record.id) {
            Some(existing) => *existing = record.clone(),
            None => file.deployments.push(record.clone()),
        }
        self.write(&file)
    }

    fn list(&self, target: Option<&str>) -> Result<Vec<DeploymentRecord>, DeployError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let file = self.read()?;
        Ok(file
            .deployments
            .into_iter()
            .filter(|r| target.is_none_or(|t| target_matches(&r.target, t)))
            .collect())
    }
}

/// An in-memory store for tests and for callers that keep history elsewhere.
#[derive(Debug, Default)]
pub struct MemoryHistoryStore {
    records: Mutex<Vec<DeploymentRecord>>,
}

impl HistoryStore for MemoryHistoryStore {
    fn save(&self, record: &DeploymentRecord) -> Result<(), DeployError> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        match records.iter_mut().find(|r| r.id == record.id) {
            Some(existing) => *existing = record.clone(),
            None => records.push(record.clone()),
        }
        Ok(())
    }

    fn list(&self, target: Option<&str>) -> Result<Vec<DeploymentRecord>, DeployError> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        Ok(records
            .iter()
            .filter(|r| target.is_none_or(|t| target_matches(&r.target, t)))
            .cloned()
            .collect())
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
        "ROLLED BACK TO".to_string(),
        "COMMIT".to_string(),
        "JOB".to_string(),
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
            r.rolled_back_to
                .as_deref()
                .map(short_revision)
                .unwrap_or_else(|| "-".into()),
            r.commit
                .as_deref()
                .map(|c| c.chars().take(8).collect())
                .unwrap_or_else(|| "-".into()),
            r.job.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut widths = [0usize; 8];
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

    #[test]
    fn file_store_round_trips_and_finds_known_good() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileHistoryStore::at(dir.path().join("state/deployments.json"));
        let mut good = DeploymentRecord::start("ecs:c/web", RecordKind::Deploy, "web:1", None);
        good.finish(DeployResult::Succeeded, None);
        store.save(&good).expect("save");
        let mut bad =
            DeploymentRecord::start("ecs:c/web", RecordKind::Deploy, "web:2", Some("web:1"));
        store.save(&bad).expect("save");
        bad.finish(DeployResult::RolledBack, Some("unhealthy".into()));
        store.save(&bad).expect("save again replaces");
        let other = DeploymentRecord::start("ecs:c/api", RecordKind::Deploy, "api:9", None);
        store.save(&other).expect("save");

        let all = store.list(None).expect("list");
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].result, DeployResult::RolledBack);
        assert_eq!(store.list(Some("web")).expect("list").len(), 2);
        assert_eq!(store.list(Some("ecs:c")).expect("list").len(), 3);
        assert_eq!(store.list(Some("ecs:c/w")).expect("list").len(), 0);
        let kg = store
            .last_known_good("ecs:c/web", Some("web:2"))
            .expect("kg");
        assert_eq!(kg.map(|r| r.revision), Some("web:1".to_string()));
        withdraw_known_good(&store, "ecs:c/web", "web:1", "rolled back by hand").expect("withdraw");
        assert!(
            store
                .last_known_good("ecs:c/web", None)
                .expect("kg")
                .is_none()
        );
        let rec = store.list(Some("ecs:c/web")).expect("list").remove(0);
        assert_eq!(rec.message.as_deref(), Some("rolled back by hand"));
        good.known_good = true;
        store.save(&good).expect("restore");
        assert!(
            store
                .last_known_good("ecs:c/web", Some("web:1"))
                .expect("kg")
                .is_none()
        );
        let table = format_table(&all);
        assert!(table.contains("rolled_back"), "{table}");
    }

    #[test]
    fn parallel_writers_in_separate_stores_lose_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deployments.json");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    // A store per thread, as separate processes would have.
                    let store = FileHistoryStore::at(&path);
                    for i in 0..10 {
                        let r = DeploymentRecord::start(
                            &format!("docker:s{t}"),
                            RecordKind::Deploy,
                            &format!("r{i}"),
                            None,
                        );
                        store.save(&r).expect("save");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("join");
        }
        assert_eq!(
            FileHistoryStore::at(&path).list(None).expect("list").len(),
            40
        );
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deployments.json");
        std::fs::write(&path, "{nope").expect("write");
        let store = FileHistoryStore::at(&path);
        assert!(matches!(store.list(None), Err(DeployError::History(_))));
    }
}
