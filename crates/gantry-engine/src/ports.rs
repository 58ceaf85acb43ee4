//! The engine's ports: what the caller provides to the dispatcher
//! ([`crate::run::Dispatcher`]) and to one job attempt ([`crate::job::run_job`]).
//! `gantry run` plugs in `.gantry/` files, the terminal and the local
//! repository; `gantry serve` plugs in a database, an object store, its
//! web clients and a fetched commit. Nothing in the engine knows which.

use crate::error::{SourceError, StoreError};
use crate::executor::{ExecError, Executor};
use crate::payload::ArtifactRef;
use crate::report::Event;
use crate::sources::GitStrategy;
use crate::state::{JobRecord, RunManifest};
use futures_util::future::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Facts about a new run, allocated by the store.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// Unique on this machine (names containers, networks, labels).
    pub run_id: String,
    /// `CI_PIPELINE_ID`: increases per project.
    pub pipeline_id: u64,
    /// Where the run's jobs get their build directories (host side).
    pub builds_dir: PathBuf,
    /// The project's state location, for `GANTRY_STATE_DIR` (state that
    /// must outlive a job, such as a deploy's history).
    pub state_dir: Option<PathBuf>,
}

/// Run and job records, logs, artifacts and caches.
pub trait RunStore: Send + Sync {
    /// Starts a run of `sha`: allocates its id and `CI_PIPELINE_ID`.
    fn create_run(&self, sha: &str) -> Result<RunInfo, StoreError>;
    /// `count` fresh `CI_JOB_ID`s (increasing per project, never reused,
    /// also between concurrent runs).
    fn allocate_job_ids(&self, count: u64) -> Result<std::ops::Range<u64>, StoreError>;
    /// The log of one job (retries append to it), written as lines arrive.
    fn open_log(&self, run_id: &str, slug: &str) -> Result<Box<dyn LogWriter>, StoreError>;
    /// Where the log is (for messages such as `gantry logs JOB`).
    fn log_location(&self, run_id: &str, slug: &str) -> PathBuf;
    /// Artifacts and caches.
    fn blobs(&self) -> Arc<dyn BlobStore>;
    /// A job reached a final status (the record is replaced if present).
    fn record_job(&self, run_id: &str, record: &JobRecord) -> Result<(), StoreError>;
    /// The run ended; `manifest` is its final record.
    fn finish_run(&self, manifest: &RunManifest) -> Result<(), StoreError>;
    /// The last finished run's record of a job, for dependencies on jobs
    /// that are not part of this run.
    fn previous_job(&self, name: &str) -> Option<JobRecord>;
}

/// One job's log.
pub trait LogWriter: Send {
    /// One masked line (without its newline). Used only when
    /// [`LogWriter::takes_bytes`] is false: the engine then holds a whole
    /// line in memory before passing it on.
    fn write_line(&mut self, line: &str) -> std::io::Result<()>;
    /// Whether the writer takes the log as bytes in pieces
    /// ([`LogWriter::write_bytes`]): memory stays bounded whatever a
    /// line's length.
    fn takes_bytes(&self) -> bool {
        false
    }
    /// Masked log bytes in order, lines ended by `\n`; a long line may come
    /// in many pieces. Called only when [`LogWriter::takes_bytes`] is true.
    fn write_bytes(&mut self, _bytes: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this log takes whole lines only",
        ))
    }
    /// Makes what was written visible to readers (`tail -f`).
    fn flush(&mut self) -> std::io::Result<()>;
}

/// Artifact archives and caches. A job writes a zip to a staging path,
/// then commits it; reading gives a local path.
pub trait BlobStore: Send + Sync {
    /// Where to write the artifact archive of a job.
    fn artifact_staging(&self, run_id: &str, slug: &str) -> PathBuf;
    /// Stores the written archive.
    fn commit_artifact(
        &self,
        run_id: &str,
        job: &str,
        staged: &Path,
    ) -> Result<ArtifactRef, StoreError>;
    /// A local path to read an artifact archive from.
    fn artifact_path(&self, artifact: &ArtifactRef) -> Result<PathBuf, StoreError>;
    /// A local path to the cache archive `key`, if it exists.
    fn cache_path(&self, key: &str) -> Option<PathBuf>;
    /// Where to write the cache archive `key`.
    fn cache_staging(&self, key: &str) -> PathBuf;
    /// Stores a written cache archive.
    fn commit_cache(&self, key: &str, staged: &Path) -> Result<(), StoreError>;
}

/// Plans the child pipeline of a `trigger:include` job (the caller knows
/// the project's files and the parent's context; a server plans from its
/// stored commit).
pub trait ChildPlanner: Send + Sync {
    /// The child pipeline of `trigger_job`: from its `trigger:include`
    /// files, or from `generated` (`(name, YAML text)`: an artifact an
    /// earlier job of the run made, for a dynamic child pipeline).
    fn plan_child(
        &self,
        trigger_job: &gantry_config::model::Job,
        generated: Option<(&str, &str)>,
    ) -> Result<gantry_config::model::Pipeline, crate::error::ChildPipelineError>;
}

/// Where the events of a run go: the terminal, JSON lines, a web client.
pub trait EventSink: Send {
    fn emit(&mut self, event: &Event);
}

/// The sources of the commit a pipeline runs.
pub trait SourceProvider: Send + Sync {
    /// The commit.
    fn sha(&self) -> &str;
    /// Paths in the commit (files and symlinks), for `untracked:`.
    fn tracked(&self) -> &HashSet<PathBuf>;
    /// Fills `dest` (missing or empty) with the job's copy of the sources.
    fn checkout(&self, dest: &Path, strategy: GitStrategy) -> Result<(), SourceError>;
    /// The job that used `dest` ended (a provider sharing files between
    /// copies checks that none was written in place).
    fn release(&self, _dest: &Path) -> Result<(), SourceError> {
        Ok(())
    }
    /// A git repository holding the commit, for `cache:key:files` (the
    /// last commit touching a file).
    fn git_dir(&self) -> &Path;
}

/// Connects an executor the first time a job needs it.
pub type ConnectExecutor =
    Box<dyn FnOnce() -> BoxFuture<'static, Result<Arc<dyn Executor>, ExecError>> + Send>;

enum Slot {
    Pending(ConnectExecutor),
    Ready(Arc<dyn Executor>),
    Unavailable(String),
    Connecting,
}

/// Executors by name, connected lazily (a run of shell jobs never talks
/// to the container engine). Clones share their executors: a child
/// pipeline uses its parent's.
#[derive(Clone, Default)]
pub struct ExecutorRegistry {
    slots: Arc<tokio::sync::Mutex<HashMap<String, Slot>>>,
}

impl ExecutorRegistry {
    pub fn new() -> ExecutorRegistry {
        ExecutorRegistry::default()
    }

    /// An executor that is ready now.
    pub fn insert(&mut self, name: &str, executor: Arc<dyn Executor>) {
        self.slots
            .try_lock()
            .expect("a registry being filled is not shared yet")
            .insert(name.into(), Slot::Ready(executor));
    }

    /// An executor connected on first use.
    pub fn insert_lazy(&mut self, name: &str, connect: ConnectExecutor) {
        self.slots
            .try_lock()
            .expect("a registry being filled is not shared yet")
            .insert(name.into(), Slot::Pending(connect));
    }

    pub async fn names(&self) -> Vec<String> {
        self.slots.lock().await.keys().cloned().collect()
    }

    /// The executor `name`, connecting it if needed (one connection, also
    /// when a child pipeline asks at the same time). A failed connection is
    /// remembered: every job on it fails with the same message.
    pub async fn get(&mut self, name: &str) -> Result<Arc<dyn Executor>, String> {
        let mut slots = self.slots.lock().await;
        let Some(slot) = slots.get_mut(name) else {
            return Err(format!("no executor named `{name}`"));
        };
        match std::mem::replace(slot, Slot::Connecting) {
            Slot::Ready(e) => {
                *slot = Slot::Ready(e.clone());
                Ok(e)
            }
            Slot::Unavailable(m) => {
                *slot = Slot::Unavailable(m.clone());
                Err(m)
            }
            Slot::Connecting => Err(format!("executor `{name}` is connecting")),
            Slot::Pending(connect) => {
                let result = connect().await;
                let slot = slots.get_mut(name).expect("slot exists");
                match result {
                    Ok(e) => {
                        *slot = Slot::Ready(e.clone());
                        Ok(e)
                    }
                    Err(err) => {
                        let m = err.to_string();
                        *slot = Slot::Unavailable(m.clone());
                        Err(m)
                    }
                }
            }
        }
    }

    /// Shuts down every connected executor (run-wide resources such as
    /// networks); errors are returned by executor name.
    pub async fn shutdown(&self) -> Vec<(String, ExecError)> {
        let ready: Vec<(String, Arc<dyn Executor>)> = {
            let slots = self.slots.lock().await;
            slots
                .iter()
                .filter_map(|(name, slot)| match slot {
                    Slot::Ready(e) => Some((name.clone(), e.clone())),
                    _ => None,
                })
                .collect()
        };
        let mut errors = Vec::new();
        for (name, executor) in ready {
            if let Err(err) = executor.shutdown().await {
                errors.push((name, err));
            }
        }
        errors
    }
}
