//! The server's copies of project repositories: one bare mirror per
//! project under `DATA/repos`, cloned and fetched with the `git` command
//! (as gitlab-runner does). A mirror is a cache: it can be rebuilt from the
//! project's source URL at any time: every reader goes through
//! [`Repos::ensure`], so a server whose data directory is new (a second
//! server behind a load balancer, or one whose disk was wiped) clones or
//! fetches on the first request that needs a commit it lacks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("git {action} failed for {source_url}: {stderr}")]
    Git {
        action: &'static str,
        source_url: String,
        stderr: String,
    },
    #[error("cannot run git: {0}")]
    Spawn(std::io::Error),
    #[error("no branch or tag `{0}` in the repository")]
    UnknownRef(String),
    #[error("commit {0} is not in the repository")]
    UnknownCommit(String),
}

/// Mirrors, one lock per project so fetches do not overlap.
pub struct Repos {
    root: PathBuf,
    locks: std::sync::Mutex<std::collections::HashMap<i64, Arc<Mutex<()>>>>,
    /// Per project, the shared `mirror_version` this server's mirror is
    /// known to be at least as new as (see [`Repos::is_behind`]).
    synced: std::sync::Mutex<std::collections::HashMap<i64, i64>>,
}

fn git(dir: Option<&Path>, args: &[&str]) -> Result<std::process::Output, RepoError> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null());
    cmd.output().map_err(RepoError::Spawn)
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

impl Repos {
    pub fn new(root: PathBuf) -> Repos {
        Repos {
            root,
            locks: Default::default(),
            synced: Default::default(),
        }
    }

    /// Notes that this server's mirror of `project_id` was fetched after
    /// the project's shared `mirror_version` was `version`.
    pub fn mark_synced(&self, project_id: i64, version: i64) {
        let mut synced = self.synced.lock().expect("mirror versions");
        let seen = synced.entry(project_id).or_insert(version);
        *seen = (*seen).max(version);
    }

    /// Whether another server (or this one before a restart) fetched the
    /// project since this server's mirror was: its `mirror_version` in the
    /// database is newer than any this server's fetches followed.
    pub fn is_behind(&self, project_id: i64, version: i64) -> bool {
        let synced = self.synced.lock().expect("mirror versions");
        version > synced.get(&project_id).copied().unwrap_or(0)
    }

    pub fn mirror_dir(&self, project_id: i64) -> PathBuf {
        self.root.join(format!("{project_id}.git"))
    }

    fn lock(&self, project_id: i64) -> Arc<Mutex<()>> {
        self.locks
            .lock()
            .expect("repository lock map")
            .entry(project_id)
            .or_default()
            .clone()
    }

    /// Clones the mirror on first use, else fetches every ref.
    pub async fn sync(&self, project_id: i64, source_url: &str) -> Result<PathBuf, RepoError> {
        let lock = self.lock(project_id);
        let _guard = lock.lock().await;
        let dir = self.mirror_dir(project_id);
        let source = source_url.to_string();
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&root).map_err(RepoError::Spawn)?;
            if dir.join("HEAD").exists() {
                let out = git(Some(&dir), &["fetch", "--prune", "--quiet", "origin"])?;
                if !out.status.success() {
                    return Err(RepoError::Git {
                        action: "fetch",
                        source_url: source,
                        stderr: stderr_of(&out),
                    });
                }
            } else {
                // Clone beside the final name, then rename: no half clone stays.
                let tmp = root.join(format!(
                    ".{}.tmp",
                    dir.file_name().unwrap_or_default().to_string_lossy()
                ));
                let _ = std::fs::remove_dir_all(&tmp);
                let out = git(
                    None,
                    &[
                        "clone",
                        "--mirror",
                        "--quiet",
                        &source,
                        &tmp.to_string_lossy(),
                    ],
                )?;
                if !out.status.success() {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(RepoError::Git {
                        action: "clone",
                        source_url: source,
                        stderr: stderr_of(&out),
                    });
                }
                std::fs::rename(&tmp, &dir).map_err(RepoError::Spawn)?;
            }
            Ok(dir)
        })
        .await
        .map_err(|e| RepoError::Spawn(std::io::Error::other(e)))?
    }

    /// The mirror, cloned when missing and fetched when it lacks `sha`
    /// (another server may have fetched the commit a request names).
    pub async fn ensure(
        &self,
        project_id: i64,
        source_url: &str,
        sha: Option<&str>,
    ) -> Result<PathBuf, RepoError> {
        let dir = self.mirror_dir(project_id);
        if dir.join("HEAD").exists() {
            let present = match sha {
                None => true,
                Some(sha) => {
                    let (dir, sha) = (dir.clone(), sha.to_string());
                    tokio::task::spawn_blocking(move || has_commit_in(&dir, &sha))
                        .await
                        .unwrap_or(false)
                }
            };
            if present {
                return Ok(dir);
            }
        }
        self.sync(project_id, source_url).await
    }

    /// Makes the mirror findable by the project's path (`NAMESPACE/NAME`
    /// beside the mirrors), so that `include:project` of another project's
    /// pipeline reads it. Idempotent.
    pub fn alias(&self, project_id: i64, path: &str) {
        // Never a name a mirror or a clone in progress has (`ID.git`, `.ID.git.tmp`).
        if path
            .split('/')
            .any(|c| c.is_empty() || c.starts_with('.') || c.ends_with(".git"))
        {
            return;
        }
        let link = self.root.join(path);
        if link.symlink_metadata().is_ok() {
            return;
        }
        let depth = path.split('/').count() - 1;
        let target = PathBuf::from("../".repeat(depth)).join(format!("{project_id}.git"));
        if let Some(parent) = link.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = std::os::unix::fs::symlink(&target, &link) {
            eprintln!(
                "gantry serve: cannot link {} to its mirror: {e}",
                link.display()
            );
        }
    }

    /// The default branch of a mirror (its HEAD).
    pub fn default_branch(&self, project_id: i64) -> Option<String> {
        let out = git(
            Some(&self.mirror_dir(project_id)),
            &["symbolic-ref", "--short", "HEAD"],
        )
        .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// A branch or tag to its commit; `(sha, is_tag)`. Branches win, as in GitLab.
    pub fn resolve_ref(&self, project_id: i64, name: &str) -> Result<(String, bool), RepoError> {
        let dir = self.mirror_dir(project_id);
        for (prefix, is_tag) in [("refs/heads/", false), ("refs/tags/", true)] {
            let spec = format!("{prefix}{name}^{{commit}}");
            let out = git(Some(&dir), &["rev-parse", "--verify", "--quiet", &spec])?;
            if out.status.success() {
                return Ok((
                    String::from_utf8_lossy(&out.stdout).trim().to_string(),
                    is_tag,
                ));
            }
        }
        Err(RepoError::UnknownRef(name.to_string()))
    }

    /// Every branch and tag of the mirror (`refs/heads/…`, `refs/tags/…`)
    /// and the commit it names (an annotated tag: the commit it points at).
    pub fn heads(
        &self,
        project_id: i64,
    ) -> Result<std::collections::BTreeMap<String, String>, RepoError> {
        let dir = self.mirror_dir(project_id);
        let out = git(
            Some(&dir),
            &[
                "for-each-ref",
                "--format=%(objectname) %(*objectname) %(refname)",
                "refs/heads",
                "refs/tags",
            ],
        )?;
        if !out.status.success() {
            return Err(RepoError::Git {
                action: "for-each-ref",
                source_url: dir.display().to_string(),
                stderr: stderr_of(&out),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, ' ');
                let object = parts.next()?;
                let peeled = parts.next()?;
                let name = parts.next()?;
                let commit = if peeled.is_empty() { object } else { peeled };
                Some((name.to_string(), commit.to_string()))
            })
            .collect())
    }

    /// Whether a commit is in the mirror.
    pub fn has_commit(&self, project_id: i64, sha: &str) -> bool {
        has_commit_in(&self.mirror_dir(project_id), sha)
    }
}

fn has_commit_in(dir: &Path, sha: &str) -> bool {
    git(Some(dir), &["cat-file", "-e", &format!("{sha}^{{commit}}")])
        .is_ok_and(|o| o.status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_never_take_a_mirrors_name_or_leave_the_root() {
        let root = tempfile::tempdir().unwrap();
        let repos = Repos::new(root.path().to_path_buf());
        repos.alias(1, "group/app");
        assert_eq!(
            std::fs::read_link(root.path().join("group/app")).unwrap(),
            PathBuf::from("../1.git")
        );
        for bad in ["2.git/x", "../x", "a/../../x", ".2.git.tmp/x", "a//b"] {
            repos.alias(3, bad);
        }
        let mut names: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["group"]);
    }
}
