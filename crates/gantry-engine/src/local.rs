//! The ports as `gantry run` fills them: the repository's `.gantry/`
//! directory ([`LocalStore`]) and the local repository's commit
//! ([`LocalSources`]).

use crate::error::{SourceError, StoreError};
use crate::payload::ArtifactRef;
use crate::ports::{BlobStore, LogWriter, RunInfo, RunStore, SourceProvider};
use crate::sources::{GitStrategy, ShareMode, SharedFiles, Snapshot, SnapshotStamps};
use crate::state::{JobRecord, RunDir, RunManifest, StateDir};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// Snapshots of commits kept in `.gantry/snapshots/` for later runs.
pub const SNAPSHOTS_KEPT: usize = 3;

/// `.gantry/` as the run store.
pub struct LocalStore {
    state: StateDir,
    runs: Mutex<HashMap<String, LiveRun>>,
    previous: OnceLock<Option<RunManifest>>,
    blobs: Arc<LocalBlobs>,
}

struct LiveRun {
    dir: RunDir,
    /// Job records by slug, as jobs end (written into run.json at the end).
    jobs: HashMap<String, JobRecord>,
    pruning: Option<std::thread::JoinHandle<()>>,
}

impl LocalStore {
    pub fn new(repo_dir: &Path) -> LocalStore {
        let state = StateDir::for_repo(repo_dir);
        LocalStore {
            blobs: Arc::new(LocalBlobs {
                state: state.clone(),
            }),
            state,
            runs: Mutex::new(HashMap::new()),
            previous: OnceLock::new(),
        }
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    fn live<T>(&self, run_id: &str, f: impl FnOnce(&mut LiveRun) -> T) -> Option<T> {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.get_mut(run_id).map(f)
    }

    fn previous(&self) -> Option<&RunManifest> {
        self.previous
            .get_or_init(|| {
                let id = self.state.last()?;
                self.state.read_manifest(&id).ok()
            })
            .as_ref()
    }
}

impl RunStore for LocalStore {
    fn create_run(&self, _sha: &str) -> Result<RunInfo, StoreError> {
        // Read before this run can become `last`.
        let _ = self.previous();
        let root = self.state.root.clone();
        let run = self
            .state
            .new_run()
            .map_err(|e| StoreError::new("cannot create the run directory", &root, e))?;
        let (pipeline_id, _) = self
            .state
            .allocate_ids(1, 0)
            .map_err(|e| StoreError::new("cannot allocate a pipeline id", &root, e))?;
        // Old runs go while this one runs (removing directories is slow on
        // some filesystems); live runs are never touched.
        let pruning = {
            let state = self.state.clone();
            let current = run.id.clone();
            std::thread::spawn(move || state.prune(&current))
        };
        let info = RunInfo {
            run_id: run.id.clone(),
            pipeline_id,
            builds_dir: run.dir.join("builds"),
            state_dir: Some(self.state.root.clone()),
        };
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.insert(
            run.id.clone(),
            LiveRun {
                dir: run,
                jobs: HashMap::new(),
                pruning: Some(pruning),
            },
        );
        Ok(info)
    }

    fn allocate_job_ids(&self, count: u64) -> Result<std::ops::Range<u64>, StoreError> {
        let (_, first) = self
            .state
            .allocate_ids(0, count)
            .map_err(|e| StoreError::new("cannot allocate job ids", &self.state.root, e))?;
        Ok(first..first + count)
    }

    fn open_log(&self, run_id: &str, slug: &str) -> Result<Box<dyn LogWriter>, StoreError> {
        let path = self.log_location(run_id, slug);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StoreError::new("cannot open the job log", &path, e))?;
        Ok(Box::new(FileLog {
            out: std::io::BufWriter::with_capacity(64 * 1024, file),
        }))
    }

    fn log_location(&self, run_id: &str, slug: &str) -> PathBuf {
        RunDir::open(&self.state, run_id).log_path(slug)
    }

    fn blobs(&self) -> Arc<dyn BlobStore> {
        self.blobs.clone()
    }

    fn record_job(&self, run_id: &str, record: &JobRecord) -> Result<(), StoreError> {
        self.live(run_id, |run| {
            run.jobs.insert(record.slug.clone(), record.clone());
        });
        Ok(())
    }

    fn finish_run(&self, manifest: &RunManifest) -> Result<(), StoreError> {
        let finished = manifest.status != "running";
        let mut manifest = manifest.clone();
        let dir = self.live(&manifest.run_id, |run| {
            for job in &mut manifest.jobs {
                if let Some(r) = run.jobs.get(&job.slug) {
                    *job = r.clone();
                }
            }
            run.dir.clone()
        });
        let dir = dir.unwrap_or_else(|| RunDir::open(&self.state, &manifest.run_id));
        dir.write_manifest(&manifest)
            .map_err(|e| StoreError::new("cannot write the run record", &dir.dir, e))?;
        if finished {
            self.state
                .set_last(&manifest.run_id)
                .map_err(|e| StoreError::new("cannot record the last run", &self.state.root, e))?;
            let live = {
                let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
                runs.remove(&manifest.run_id)
            };
            if let Some(mut live) = live {
                if let Some(p) = live.pruning.take() {
                    let _ = p.join();
                }
                live.dir.release();
            }
        }
        Ok(())
    }

    fn previous_job(&self, name: &str) -> Option<JobRecord> {
        self.previous()?
            .jobs
            .iter()
            .find(|j| j.name == name || j.name.starts_with(&format!("{name} ")))
            .cloned()
    }
}

struct FileLog {
    out: std::io::BufWriter<std::fs::File>,
}

impl LogWriter for FileLog {
    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")
    }
    fn takes_bytes(&self) -> bool {
        true
    }
    fn write_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Artifacts in `.gantry/runs/<id>/artifacts/`, caches in `.gantry/cache/`.
struct LocalBlobs {
    state: StateDir,
}

impl BlobStore for LocalBlobs {
    fn artifact_staging(&self, run_id: &str, slug: &str) -> PathBuf {
        RunDir::open(&self.state, run_id).artifact_path(slug)
    }

    fn commit_artifact(
        &self,
        _run_id: &str,
        job: &str,
        staged: &Path,
    ) -> Result<ArtifactRef, StoreError> {
        Ok(ArtifactRef {
            job: job.to_string(),
            key: staged.display().to_string(),
        })
    }

    fn artifact_path(&self, artifact: &ArtifactRef) -> Result<PathBuf, StoreError> {
        let path = PathBuf::from(&artifact.key);
        if path.is_file() {
            Ok(path)
        } else {
            Err(StoreError::new(
                "the artifacts are gone",
                &path,
                std::io::ErrorKind::NotFound.into(),
            ))
        }
    }

    fn cache_path(&self, key: &str) -> Option<PathBuf> {
        let path = crate::cache::cache_path(&self.state.cache_dir(), key);
        path.is_file().then_some(path)
    }

    fn cache_staging(&self, key: &str) -> PathBuf {
        crate::cache::cache_path(&self.state.cache_dir(), key)
    }

    fn commit_cache(&self, _key: &str, _staged: &Path) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The commit of a local repository, extracted once into
/// `.gantry/snapshots/<sha>/`; each job's copy shares the snapshot's files
/// (reflinks, else hard links with a check after each job).
pub struct LocalSources {
    snapshot: RwLock<Snapshot>,
    tracked: HashSet<PathBuf>,
    sha: String,
    repo_dir: PathBuf,
    shared: SharedFiles,
    stamps: Mutex<SnapshotStamps>,
    /// A snapshot of the working tree is this run's own: removed at the end.
    temporary: bool,
}

impl Drop for LocalSources {
    fn drop(&mut self) {
        if self.temporary {
            let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
            let _ = std::fs::remove_dir_all(&snapshot.dir);
        }
    }
}

impl LocalSources {
    fn new(snapshot: Snapshot, temporary: bool) -> LocalSources {
        LocalSources {
            tracked: snapshot.tracked.clone(),
            sha: snapshot.sha.clone(),
            repo_dir: snapshot.repo_dir.clone(),
            stamps: Mutex::new(SnapshotStamps::take(&snapshot.dir)),
            snapshot: RwLock::new(snapshot),
            shared: SharedFiles::default(),
            temporary,
        }
    }

    /// Extracts (or reuses) the snapshot of `sha`.
    pub fn open(repo_dir: &Path, sha: &str) -> Result<LocalSources, SourceError> {
        let snapshots = StateDir::for_repo(repo_dir).root.join("snapshots");
        let snapshot = Snapshot::cached(repo_dir, sha, &snapshots, SNAPSHOTS_KEPT)?;
        Ok(LocalSources::new(snapshot, false))
    }

    /// A copy of the working tree as it is now (`--working-tree`).
    pub fn working_tree(repo_dir: &Path) -> Result<LocalSources, SourceError> {
        let dest = Self::worktree_dir(repo_dir)?;
        let snapshot = Snapshot::from_working_tree(repo_dir, &dest);
        if snapshot.is_err() {
            let _ = std::fs::remove_dir_all(&dest);
        }
        Ok(LocalSources::new(snapshot?, true))
    }

    fn worktree_dir(repo_dir: &Path) -> Result<PathBuf, SourceError> {
        let state = StateDir::for_repo(repo_dir);
        let snapshots = state.root.join("snapshots");
        state.ensure().map_err(|source| SourceError::Copy {
            path: snapshots.clone(),
            source,
        })?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Ok(snapshots.join(format!("worktree.{}.{nanos}", std::process::id())))
    }

    /// How jobs' copies share files (after the first checkout).
    pub fn share_mode(&self) -> ShareMode {
        self.shared.mode()
    }

    /// A job wrote a shared file in place: later jobs get a fresh snapshot.
    fn replace_snapshot(&self) -> Result<(), SourceError> {
        let snapshot = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        let parent = snapshot
            .dir
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let fresh = parent.join(format!(
            "{}.fresh{}",
            snapshot
                .dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("snapshot"),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&fresh);
        let new = if self.temporary {
            Snapshot::from_working_tree(&self.repo_dir, &fresh)?
        } else {
            Snapshot::extract(&self.repo_dir, &self.sha, &fresh)?
        };
        let old = parent.join(format!("tainted.{}", std::process::id()));
        let copy_err = |source| SourceError::Copy {
            path: snapshot.dir.clone(),
            source,
        };
        std::fs::rename(&snapshot.dir, &old).map_err(copy_err)?;
        std::fs::rename(&new.dir, &snapshot.dir).map_err(copy_err)?;
        let _ = std::fs::remove_dir_all(&old);
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) =
            SnapshotStamps::take(&snapshot.dir);
        Ok(())
    }
}

impl SourceProvider for LocalSources {
    fn sha(&self) -> &str {
        &self.sha
    }
    fn tracked(&self) -> &HashSet<PathBuf> {
        &self.tracked
    }
    fn checkout(&self, dest: &Path, strategy: GitStrategy) -> Result<(), SourceError> {
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        match strategy {
            GitStrategy::Copy => self
                .shared
                .link_tree(&snapshot.dir, dest)
                .map_err(|source| SourceError::Copy {
                    path: dest.to_path_buf(),
                    source,
                }),
            other => snapshot.checkout(dest, other),
        }
    }
    fn release(&self, _dest: &Path) -> Result<(), SourceError> {
        let snapshot_dir = self
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .dir
            .clone();
        let tainted = {
            let stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.tainted(&snapshot_dir, &stamps)
        };
        if tainted {
            self.replace_snapshot()?;
        }
        Ok(())
    }
    fn git_dir(&self) -> &Path {
        &self.repo_dir
    }
}
