//! The state directory `.gantry/` in the repository: runs (logs,
//! artifacts, build dirs), caches kept between runs, and `last`.
//!
//! ```text
//! .gantry/.gitignore          "*": the whole directory is git-ignored
//! .gantry/last                id of the last run
//! .gantry/cache/<key>.zip     caches, kept between runs
//! .gantry/runs/<id>/run.json  the run's manifest (jobs, statuses, dirs)
//! .gantry/runs/<id>/logs/<job-slug>.log
//! .gantry/runs/<id>/artifacts/<job-slug>.zip
//! .gantry/runs/<id>/builds/<job-slug>/      the job's clean copy
//! .gantry/runs/<id>/jobs/<job-slug>.json    the job's environment (0600)
//! .gantry/staging/<id>/       a run being set up, renamed into runs/ when ready
//! .gantry/snapshots/<sha>/    the commit's files, which jobs' copies share
//! ```

use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// Runs kept on disk; older ones are removed when a new run starts.
pub const RUNS_KEPT: usize = 10;

#[derive(Clone, Debug)]
pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    pub fn for_repo(repo_dir: &Path) -> StateDir {
        StateDir {
            root: repo_dir.join(".gantry"),
        }
    }

    /// Creates the directory and its `.gitignore`.
    pub fn ensure(&self) -> io::Result<()> {
        std::fs::create_dir_all(self.root.join("runs"))?;
        let ignore = self.root.join(".gitignore");
        if !ignore.exists() {
            std::fs::write(ignore, "*\n")?;
        }
        Ok(())
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.runs_dir().join(run_id)
    }

    /// Creates a new run directory with a sortable, unique id. The id also
    /// names container-engine objects (networks, labels), which are shared by
    /// every repository on the machine, so it carries a tag that differs
    /// between processes and between runs started in the same second.
    pub fn new_run(&self) -> io::Result<RunDir> {
        self.ensure()?;
        let now = chrono::Utc::now();
        let stamp = now.format("%Y%m%d-%H%M%S").to_string();
        static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag =
            (std::process::id() ^ now.timestamp_subsec_nanos() ^ seq.wrapping_mul(0x9e37)) & 0xffff;
        // Microseconds first: ids sort in creation order, across processes.
        let micros = now.timestamp_subsec_micros();
        // Built and locked in `staging/`, then renamed into `runs/`: another
        // run's pruning never sees it half-made (unlocked) and removes it.
        let staging = self.root.join("staging");
        std::fs::create_dir_all(&staging)?;
        for n in 0..10_000u32 {
            let id = format!("{stamp}-{micros:06}{n:04}-{tag:04x}");
            let dir = self.run_dir(&id);
            let made = staging.join(&id);
            if dir.exists() {
                continue;
            }
            match std::fs::create_dir(&made) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
            let lock = std::fs::File::create(made.join(RUN_LOCK))?;
            flock(&lock, libc::LOCK_EX | libc::LOCK_NB)?;
            // Who runs it: after a `kill -9`, `gantry clean` and the
            // next run tell a dead run from a live one by this.
            std::fs::write(
                made.join(RUN_OWNER),
                format!("{}\n", crate::docker::labels::this_process()),
            )?;
            for sub in ["logs", "artifacts", "builds", "jobs"] {
                std::fs::create_dir_all(made.join(sub))?;
            }
            if let Err(e) = std::fs::rename(&made, &dir) {
                let _ = std::fs::remove_dir_all(&made);
                if dir.exists() {
                    continue;
                }
                return Err(e);
            }
            return Ok(RunDir {
                id,
                dir,
                lock: Some(std::sync::Arc::new(lock)),
            });
        }
        Err(io::Error::other("could not allocate a run id"))
    }

    /// What runs that died (`kill -9`, a crash) left half-made: run folders
    /// still in `staging/` and nobody's lock, and snapshot temporaries whose
    /// process is gone. `gantry clean` removes these.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.root.join("staging")) {
            found.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|dir| !run_is_live(dir)),
            );
        }
        if let Ok(entries) = std::fs::read_dir(self.root.join("snapshots")) {
            found.extend(entries.flatten().map(|e| e.path()).filter(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(snapshot_temporary_owner)
                    .is_some_and(|pid| {
                        pid != std::process::id() && !crate::docker::labels::process_exists(pid)
                    })
            }));
        }
        found
    }

    pub fn set_last(&self, run_id: &str) -> io::Result<()> {
        let tmp = self.root.join("last.tmp");
        std::fs::write(&tmp, format!("{run_id}\n"))?;
        std::fs::rename(tmp, self.root.join("last"))
    }

    pub fn last(&self) -> Option<String> {
        let s = std::fs::read_to_string(self.root.join("last")).ok()?;
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_string())
    }

    /// Removes old finished runs (keeping [`RUNS_KEPT`]) and the build dirs
    /// of every finished run but the last one (whose dirs `gantry shell`
    /// uses). A run that is still going holds its lock and is never touched,
    /// whoever started it.
    pub fn prune(&self, current: &str) {
        let Ok(entries) = std::fs::read_dir(self.runs_dir()) else {
            return;
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| id != current && !run_is_live(&self.run_dir(id)))
            .collect();
        ids.sort();
        let last = self.last();
        let drop_count = ids.len().saturating_sub(RUNS_KEPT - 1);
        for (i, id) in ids.iter().enumerate() {
            let dir = self.run_dir(id);
            if i < drop_count {
                let _ = std::fs::remove_dir_all(&dir);
            } else if last.as_deref() != Some(id.as_str()) {
                let _ = std::fs::remove_dir_all(dir.join("builds"));
            }
        }
    }

    /// The next `CI_PIPELINE_ID` and a block of `jobs` `CI_JOB_ID`s for this
    /// project, under an exclusive lock (concurrent runs never share ids).
    pub fn allocate_ids(&self, pipelines: u64, jobs: u64) -> io::Result<(u64, u64)> {
        self.ensure()?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.root.join("ids.lock"))?;
        flock(&lock, libc::LOCK_EX)?;
        let path = self.root.join("ids.json");
        let mut ids: IdCounters = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let first_pipeline = ids.pipeline + 1;
        let first_job = ids.job + 1;
        ids.pipeline += pipelines;
        ids.job += jobs;
        let tmp = self.root.join("ids.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&ids)?)?;
        std::fs::rename(&tmp, &path)?;
        // Unlocked explicitly: a child forked meanwhile shares the descriptor.
        let _ = flock(&lock, libc::LOCK_UN);
        Ok((first_pipeline, first_job))
    }

    pub fn read_manifest(&self, run_id: &str) -> io::Result<RunManifest> {
        let text = std::fs::read_to_string(self.run_dir(run_id).join("run.json"))?;
        serde_json::from_str(&text).map_err(io::Error::other)
    }
}

/// The file a live run holds an exclusive `flock` on: the kernel drops it
/// when the process ends, even after `kill -9`.
pub const RUN_LOCK: &str = "lock";

/// The file naming the process that runs a run (`host/pid/start time`, the
/// value of the `gantry.owner` label on its containers and networks).
pub const RUN_OWNER: &str = "owner";

/// Whether the process recorded in a run's owner file is still running:
/// `None` when there is no owner file.
pub fn run_owner_alive(dir: &Path) -> Option<bool> {
    let owner = std::fs::read_to_string(dir.join(RUN_OWNER)).ok()?;
    Some(crate::docker::labels::owner_alive(owner.trim()))
}

/// Whether the run in `dir` is still going (its lock is held).
/// When it cannot tell (out of file descriptors, a filesystem without
/// locks), the run counts as live: pruning and cleaning leave it alone.
pub fn run_is_live(dir: &Path) -> bool {
    let file = match std::fs::File::open(dir.join(RUN_LOCK)) {
        Ok(file) => file,
        // No lock file: a run of an older version, or a half-made folder.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return false,
        Err(_) => return true,
    };
    match flock(&file, libc::LOCK_SH | libc::LOCK_NB) {
        Ok(()) => false,
        Err(_) => true,
    }
}

/// The process that made a snapshot temporary, from its name:
/// `worktree.<pid>.<nanos>`, `tainted.<pid>`, `<sha>.tmp<pid>`,
/// `<sha>.files.tmp<pid>`, `<name>.fresh<pid>`. `None` for a kept snapshot.
fn snapshot_temporary_owner(name: &str) -> Option<u32> {
    if let Some(rest) = name.strip_prefix("worktree.") {
        return rest.split('.').next()?.parse().ok();
    }
    if let Some(rest) = name.strip_prefix("tainted.") {
        return rest.parse().ok();
    }
    ["tmp", "fresh"].iter().find_map(|marker| {
        let (_, pid) = name.rsplit_once(&format!(".{marker}"))?;
        pid.parse().ok()
    })
}

fn flock(file: &std::fs::File, op: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: a valid open descriptor; flock has no memory effects.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IdCounters {
    pipeline: u64,
    job: u64,
}

/// One run's directory. While a `RunDir` with its lock exists, the run is
/// live and no other process prunes it.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub id: String,
    pub dir: PathBuf,
    lock: Option<std::sync::Arc<std::fs::File>>,
}

impl RunDir {
    /// The directory of an existing run (not locked: for readers).
    pub fn open(state: &StateDir, id: &str) -> RunDir {
        RunDir {
            id: id.to_string(),
            dir: state.run_dir(id),
            lock: None,
        }
    }

    /// Releases the run's lock (the run is finished).
    pub fn release(&mut self) {
        // Unlock explicitly rather than only closing: a child forked elsewhere
        // in this process and not yet exec'd shares the lock's open file
        // description, and would keep the finished run looking live.
        if let Some(lock) = self.lock.take() {
            let _ = flock(&lock, libc::LOCK_UN);
        }
    }
    pub fn log_path(&self, slug: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{slug}.log"))
    }
    pub fn artifact_path(&self, slug: &str) -> PathBuf {
        self.dir.join("artifacts").join(format!("{slug}.zip"))
    }
    pub fn build_dir(&self, slug: &str) -> PathBuf {
        self.dir.join("builds").join(slug)
    }
    /// Where file-type variables and scripts of a job live (removed at cleanup).
    pub fn tmp_dir(&self, slug: &str) -> PathBuf {
        self.dir.join("builds").join(format!("{slug}.tmp"))
    }
    pub fn job_env_path(&self, slug: &str) -> PathBuf {
        self.dir.join("jobs").join(format!("{slug}.json"))
    }
    pub fn write_manifest(&self, manifest: &RunManifest) -> io::Result<()> {
        let tmp = self.dir.join("run.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(manifest)?)?;
        std::fs::rename(tmp, self.dir.join("run.json"))
    }
}

/// `run.json`: what `gantry logs` and `gantry shell` read.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunManifest {
    pub run_id: String,
    /// `CI_PIPELINE_ID`.
    #[serde(default)]
    pub pipeline_id: u64,
    pub sha: String,
    /// `running` until the run ends, then the pipeline's status.
    pub status: String,
    pub jobs: Vec<JobRecord>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobRecord {
    pub name: String,
    pub slug: String,
    pub stage: String,
    /// `pending`, `running`, or the job's final status.
    pub status: String,
    /// `CI_JOB_ID` of the last attempt.
    #[serde(default)]
    pub job_id: u64,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
    pub executor: String,
    pub log: Option<PathBuf>,
    pub build_dir: Option<PathBuf>,
    /// From the environment, for docker jobs that keep their container.
    pub shell_command: Option<Vec<String>>,
    /// The job's artifacts archive, for later runs of its dependents.
    #[serde(default)]
    pub artifact: Option<PathBuf>,
    /// Its `reports:dotenv` variables, likewise.
    #[serde(default)]
    pub dotenv: Vec<(String, String)>,
}

/// The job's environment for `gantry shell` (stored 0600: it holds values).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobEnvRecord {
    pub env: Vec<(String, String)>,
    /// File-type variables: name and content, recreated for the shell.
    pub files: Vec<(String, String)>,
    pub ci_project_dir: String,
}

pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// A filesystem-safe, unique-looking name for a job: lowercase ASCII
/// letters and digits, other runs of characters become `-` (as
/// `CI_JOB_NAME_SLUG`), at most 63 characters.
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed: String = out.trim_matches('-').chars().take(63).collect();
    let trimmed = trimmed.trim_end_matches('-').to_string();
    if trimmed.is_empty() {
        "job".to_string()
    } else {
        trimmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slugify("test 1/3"), "test-1-3");
        assert_eq!(slugify("deploy: [aws, eu]"), "deploy-aws-eu");
        assert_eq!(slugify("///"), "job");
    }

    #[test]
    fn runs_are_unique_and_gitignored() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::for_repo(dir.path());
        let a = state.new_run().unwrap();
        let b = state.new_run().unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".gantry/.gitignore")).unwrap(),
            "*\n"
        );
        state.set_last(&b.id).unwrap();
        assert_eq!(state.last().as_deref(), Some(b.id.as_str()));
    }
}
