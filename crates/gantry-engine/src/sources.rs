//! `get_sources`: a clean copy of the repository at the pipeline's commit,
//! never the user's working tree.
//!
//! The commit is extracted once per run (`git archive` streamed into the
//! tar reader) into a snapshot directory; each job then gets a plain copy
//! of the snapshot (reflinked where the filesystem can). `GIT_STRATEGY:
//! clone|fetch` gives the job a real git clone instead (sharing objects with
//! the repository), `none`/`empty` an empty directory.

use crate::error::SourceError;
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The commit's tree, extracted once per run.
#[derive(Debug)]
pub struct Snapshot {
    pub dir: PathBuf,
    pub repo_dir: PathBuf,
    pub sha: String,
    /// Paths in the commit (files and symlinks), for `untracked:`.
    pub tracked: HashSet<PathBuf>,
}

impl Snapshot {
    /// Extracts `sha` of the repository at `repo_dir` into `dest`.
    pub fn extract(repo_dir: &Path, sha: &str, dest: &Path) -> Result<Snapshot, SourceError> {
        let copy_err = |source| SourceError::Copy {
            path: dest.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dest).map_err(copy_err)?;
        let mut child = Command::new("git")
            .arg("-C")
            .arg(repo_dir)
            .args(["archive", "--format=tar", sha])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(SourceError::Git)?;
        let mut tracked = HashSet::new();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| SourceError::Git(io::Error::other("git archive: no output")))?;
        let mut archive = tar::Archive::new(stdout);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        let unpack_result = (|| -> io::Result<()> {
            for entry in archive.entries()? {
                let mut entry = entry?;
                let path = entry.path()?.into_owned();
                if !entry.header().entry_type().is_dir()
                    && !entry.header().entry_type().is_pax_global_extensions()
                {
                    tracked.insert(path.clone());
                }
                entry.unpack_in(dest)?;
            }
            Ok(())
        })();
        let output = child.wait_with_output().map_err(SourceError::Git)?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            if stderr.contains("not a tree object") || stderr.contains("not a valid object name") {
                return Err(SourceError::UnknownCommit {
                    repo: repo_dir.to_path_buf(),
                    rev: sha.to_string(),
                });
            }
            return Err(SourceError::GitFailed {
                command: format!("archive {sha}"),
                stderr,
            });
        }
        unpack_result.map_err(copy_err)?;
        Ok(Snapshot {
            dir: dest.to_path_buf(),
            repo_dir: repo_dir.to_path_buf(),
            sha: sha.to_string(),
            tracked,
        })
    }

    /// The snapshot of `sha` kept in `cache_dir/<sha>/`, extracted on first
    /// use. Jobs only ever copy from it, so it can serve every later run of
    /// the same commit. At most `keep` snapshots are kept.
    pub fn cached(
        repo_dir: &Path,
        sha: &str,
        cache_dir: &Path,
        keep: usize,
    ) -> Result<Snapshot, SourceError> {
        let copy_err = |source| SourceError::Copy {
            path: cache_dir.to_path_buf(),
            source,
        };
        let dir = cache_dir.join(sha);
        let list = cache_dir.join(format!("{sha}.files"));
        if dir.is_dir()
            && let Ok(text) = std::fs::read_to_string(&list)
        {
            let _ = std::fs::File::open(&list)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            return Ok(Snapshot {
                dir,
                repo_dir: repo_dir.to_path_buf(),
                sha: sha.to_string(),
                tracked: text.lines().map(PathBuf::from).collect(),
            });
        }
        std::fs::create_dir_all(cache_dir).map_err(copy_err)?;
        let tmp = cache_dir.join(format!("{sha}.tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let mut snap = Snapshot::extract(repo_dir, sha, &tmp)?;
        let mut files: Vec<String> = snap
            .tracked
            .iter()
            .filter_map(|p| p.to_str().map(str::to_string))
            .collect();
        files.sort();
        // The list is written before the folder appears, and a folder that
        // is there is never replaced: a concurrent run of the same commit
        // may be copying from it (it was complete when renamed in).
        let list_tmp = cache_dir.join(format!("{sha}.files.tmp{}", std::process::id()));
        std::fs::write(&list_tmp, files.join("\n")).map_err(copy_err)?;
        std::fs::rename(&list_tmp, &list).map_err(copy_err)?;
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            let _ = std::fs::remove_dir_all(&tmp);
            if !dir.is_dir() {
                return Err(copy_err(e));
            }
        }
        snap.dir = dir;
        prune_snapshots(cache_dir, keep);
        Ok(snap)
    }

    /// Fills `dest` (missing or empty; an executor may have mounted it
    /// already, so it is not replaced) for one job.
    pub fn checkout(&self, dest: &Path, strategy: GitStrategy) -> Result<(), SourceError> {
        let copy_err = |source| SourceError::Copy {
            path: dest.to_path_buf(),
            source,
        };
        match strategy {
            GitStrategy::Copy => copy_tree(&self.dir, dest).map_err(copy_err),
            GitStrategy::Empty => std::fs::create_dir_all(dest).map_err(copy_err),
            GitStrategy::Clone => {
                let out = Command::new("git")
                    .args(["clone", "--quiet", "--shared", "--no-checkout"])
                    .arg(&self.repo_dir)
                    .arg(dest)
                    .stdin(Stdio::null())
                    .output()
                    .map_err(SourceError::Git)?;
                if !out.status.success() {
                    return Err(SourceError::GitFailed {
                        command: "clone".into(),
                        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    });
                }
                let out = Command::new("git")
                    .arg("-C")
                    .arg(dest)
                    .args(["checkout", "--quiet", "--detach", &self.sha])
                    .stdin(Stdio::null())
                    .output()
                    .map_err(SourceError::Git)?;
                if !out.status.success() {
                    return Err(SourceError::GitFailed {
                        command: format!("checkout {}", self.sha),
                        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    });
                }
                Ok(())
            }
        }
    }
}

impl Snapshot {
    /// The working tree as it is (`--working-tree`): every tracked file and
    /// every untracked file git does not ignore, copied into `dest`.
    pub fn from_working_tree(repo_dir: &Path, dest: &Path) -> Result<Snapshot, SourceError> {
        let copy_err = |path: &Path, source| SourceError::Copy {
            path: path.to_path_buf(),
            source,
        };
        let out = Command::new("git")
            .arg("-C")
            .arg(repo_dir)
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(SourceError::Git)?;
        if !out.status.success() {
            return Err(SourceError::GitFailed {
                command: "ls-files".into(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        std::fs::create_dir_all(dest).map_err(|e| copy_err(dest, e))?;
        let mut tracked = HashSet::new();
        for name in out.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let rel = PathBuf::from(String::from_utf8_lossy(name).into_owned());
            if rel.starts_with(".gantry") {
                continue;
            }
            let from = repo_dir.join(&rel);
            let to = dest.join(&rel);
            let Ok(meta) = std::fs::symlink_metadata(&from) else {
                // Deleted in the working tree: not part of it.
                continue;
            };
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| copy_err(parent, e))?;
            }
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&from).map_err(|e| copy_err(&from, e))?;
                std::os::unix::fs::symlink(target, &to).map_err(|e| copy_err(&to, e))?;
            } else if meta.is_file() {
                std::fs::copy(&from, &to).map_err(|e| copy_err(&to, e))?;
            } else {
                continue;
            }
            tracked.insert(rel);
        }
        Ok(Snapshot {
            dir: dest.to_path_buf(),
            repo_dir: repo_dir.to_path_buf(),
            sha: head_sha(repo_dir).unwrap_or_default(),
            tracked,
        })
    }
}

/// `GIT_STRATEGY`, as the job's variables set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GitStrategy {
    /// Default: a plain copy of the commit's tree (fast, no `.git`).
    Copy,
    /// `clone`/`fetch`: a real git checkout of the commit.
    Clone,
    /// `none`/`empty`: an empty directory.
    Empty,
}

impl GitStrategy {
    pub fn from_variable(value: Option<&str>) -> GitStrategy {
        match value {
            Some("clone") | Some("fetch") => GitStrategy::Clone,
            Some("none") | Some("empty") => GitStrategy::Empty,
            _ => GitStrategy::Copy,
        }
    }
}

/// How a job's copy of the snapshot shares unchanged files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ShareMode {
    /// Not tried yet: reflinks first.
    Unknown = 0,
    /// Copy-on-write clones (btrfs, XFS): shared until written.
    Reflink = 1,
    /// Hard links to the read-only snapshot (ext4): shared inodes; a job
    /// that writes a file in place is detected afterwards (see
    /// [`SharedFiles::tainted`]) and the snapshot is extracted again.
    Hardlink = 2,
    /// Plain copies.
    Copy = 3,
}

/// The share mode found to work on this filesystem, for one snapshot.
#[derive(Debug, Default)]
pub struct SharedFiles {
    mode: std::sync::atomic::AtomicU8,
}

impl SharedFiles {
    pub fn mode(&self) -> ShareMode {
        match self.mode.load(std::sync::atomic::Ordering::Relaxed) {
            1 => ShareMode::Reflink,
            2 => ShareMode::Hardlink,
            3 => ShareMode::Copy,
            _ => ShareMode::Unknown,
        }
    }

    fn set(&self, mode: ShareMode) {
        self.mode
            .store(mode as u8, std::sync::atomic::Ordering::Relaxed);
    }

    /// Fills `dst` from `src`, sharing file contents where it can.
    pub fn link_tree(&self, src: &Path, dst: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dst)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            let from = entry.path();
            let to = dst.join(entry.file_name());
            let ty = entry.file_type()?;
            if ty.is_dir() {
                self.link_tree(&from, &to)?;
            } else if ty.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            } else {
                self.link_file(&from, &to)?;
            }
        }
        Ok(())
    }

    fn link_file(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mode = self.mode();
        if matches!(mode, ShareMode::Unknown | ShareMode::Reflink) {
            match reflink(from, to) {
                Ok(()) => {
                    self.set(ShareMode::Reflink);
                    return Ok(());
                }
                Err(e) if mode == ShareMode::Unknown && cannot_share(&e) => {
                    let _ = std::fs::remove_file(to);
                    self.set(ShareMode::Hardlink);
                }
                Err(e) => return Err(e),
            }
        }
        if self.mode() == ShareMode::Hardlink {
            match std::fs::hard_link(from, to) {
                Ok(()) => return Ok(()),
                // Too many links to one inode, or another filesystem.
                Err(e) if cannot_share(&e) || e.raw_os_error() == Some(libc::EMLINK) => {}
                Err(e) => return Err(e),
            }
        }
        std::fs::copy(from, to).map(|_| ())
    }

    /// Files of a job's copy (`dst`) that share an inode with the snapshot
    /// (`src`) and were written in place: the shared snapshot changed.
    pub fn tainted(&self, src: &Path, snapshot_stamps: &SnapshotStamps) -> bool {
        if self.mode() != ShareMode::Hardlink {
            return false;
        }
        snapshot_stamps.changed(src)
    }
}

/// Modification stamps of a snapshot's files, taken when it was made.
#[derive(Debug, Default)]
pub struct SnapshotStamps {
    stamps: Vec<(PathBuf, i64, i64, u64)>,
}

impl SnapshotStamps {
    pub fn take(dir: &Path) -> SnapshotStamps {
        use std::os::unix::fs::MetadataExt;
        let mut stamps = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(ty) = e.file_type() else { continue };
                if ty.is_dir() {
                    stack.push(e.path());
                } else if ty.is_file()
                    && let Ok(m) = e.metadata()
                {
                    stamps.push((e.path(), m.mtime(), m.mtime_nsec(), m.size()));
                }
            }
        }
        SnapshotStamps { stamps }
    }

    /// Whether any file was written since the stamps were taken.
    pub fn changed(&self, _dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.stamps.iter().any(|(p, s, ns, size)| {
            std::fs::metadata(p)
                .map(|m| m.mtime() != *s || m.mtime_nsec() != *ns || m.size() != *size)
                .unwrap_or(true)
        })
    }
}

fn cannot_share(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP)
            | Some(libc::EXDEV)
            | Some(libc::EINVAL)
            | Some(libc::ENOTTY)
            | Some(libc::ENOSYS)
            | Some(libc::EPERM)
    )
}

/// A copy-on-write clone of `from` at `to` (FICLONE), keeping the mode.
fn reflink(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let src = std::fs::File::open(from)?;
    let mode = src.metadata()?.permissions().mode();
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o7777)
        .open(to)?;
    // SAFETY: two valid descriptors; FICLONE takes the source fd by value.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copies a directory tree, keeping symlinks as symlinks and file modes.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ty = entry.file_type()?;
        if ty.is_dir() {
            copy_tree(&from, &to)?;
        } else if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else {
            // std::fs::copy uses copy_file_range: a reflink where supported.
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// Whether the working tree differs from `HEAD`: changed tracked files or
/// untracked files git does not ignore (neither is in the commit).
pub fn working_tree_dirty(repo_dir: &Path) -> bool {
    Command::new("git")
        .arg("-C")
        .arg(repo_dir)
        // No optional locks: never write the user's index behind their back.
        .args([
            "--no-optional-locks",
            "status",
            "--porcelain",
            "--untracked-files=normal",
            "--",
            ".",
            ":(exclude).gantry",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| o.status.success() && !o.stdout.is_empty())
        .unwrap_or(false)
}

/// The commit `HEAD` points at, if any.
pub fn head_sha(repo_dir: &Path) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo_dir)
        .args(["rev-parse", "HEAD"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Keeps the `keep` most recently used snapshots in `cache_dir`.
fn prune_snapshots(cache_dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    let mut lists: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "files"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    lists.sort_by_key(|b| std::cmp::Reverse(b.0));
    for (_, list) in lists.into_iter().skip(keep) {
        let _ = std::fs::remove_dir_all(list.with_extension(""));
        let _ = std::fs::remove_file(list);
    }
}
