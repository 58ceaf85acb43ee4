//! Giving files a container wrote back to the user.
//!
//! Jobs run as root in their container (as on GitLab: images expect it), so
//! with a rootful engine the files they write into the bind-mounted project
//! directory belong to root. After each script the executor hands every
//! entry that is not owned by the user ([`owner_for`]: the repository's
//! owner, recorded before the job ran) back to that user: on the host when Gantry runs as
//! root, else from inside the container (`chown -R`). Rootless engines map
//! container root to the user already, so nothing differs and nothing runs.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Owner of a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    pub fn of(path: &Path) -> io::Result<Owner> {
        let meta = std::fs::metadata(path)?;
        Ok(Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }
}

/// Whose files the job's files become: the owner of the repository that
/// holds Gantry's state directory (`<repo>/.gantry/...`), i.e. the user who
/// checked it out even when Gantry runs under sudo; else the owner of the
/// project directory itself.
pub fn owner_for(project_dir: &Path) -> Option<Owner> {
    let repo = project_dir
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|n| n == ".gantry"))
        .and_then(Path::parent);
    repo.and_then(|r| Owner::of(r).ok())
        .or_else(|| Owner::of(project_dir).ok())
}

/// Whether any entry under `root` (itself included) has another owner.
pub fn has_foreign_entries(root: &Path, owner: Owner) -> bool {
    let mut found = false;
    let _ = walk(root, &mut |_, meta| {
        found = meta.uid() != owner.uid || meta.gid() != owner.gid;
        Ok(!found)
    });
    found
}

/// `chown -R` without following symlinks, touching only foreign entries.
/// Returns how many entries changed.
pub fn give_back(root: &Path, owner: Owner) -> io::Result<usize> {
    let mut changed = 0;
    walk(root, &mut |path, meta| {
        if meta.uid() != owner.uid || meta.gid() != owner.gid {
            std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid))?;
            changed += 1;
        }
        Ok(true)
    })?;
    Ok(changed)
}

/// Depth-first walk with `lstat`; `visit` returns false to stop early.
fn walk(
    path: &Path,
    visit: &mut dyn FnMut(&Path, &std::fs::Metadata) -> io::Result<bool>,
) -> io::Result<bool> {
    let meta = std::fs::symlink_metadata(path)?;
    if !visit(path, &meta)? {
        return Ok(false);
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if !walk(&entry.path(), visit)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_fixes_foreign_entries_when_root() {
        // Changing ownership needs root; elsewhere only the scan is checked.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/f"), b"x").expect("write");
        let me = Owner::of(dir.path()).expect("owner");
        assert!(!has_foreign_entries(dir.path(), me));
        assert_eq!(owner_for(&dir.path().join("sub")), Some(me));
        let nested = dir.path().join("repo/.gantry/runs/1/builds/job");
        std::fs::create_dir_all(&nested).expect("mkdir");
        assert_eq!(owner_for(&nested), Some(me));
        if nix::unistd::geteuid().is_root() {
            let other = Owner {
                uid: 4242,
                gid: 4242,
            };
            std::os::unix::fs::lchown(dir.path().join("sub/f"), Some(4242), Some(4242))
                .expect("chown");
            assert!(has_foreign_entries(dir.path(), me));
            assert_eq!(give_back(dir.path(), me).expect("give back"), 1);
            assert!(!has_foreign_entries(dir.path(), me));
            assert!(has_foreign_entries(dir.path(), other));
            // The repository's owner wins over the state directory's.
            std::os::unix::fs::chown(dir.path().join("repo"), Some(4242), Some(4242))
                .expect("chown");
            assert_eq!(owner_for(&nested), Some(other));
        }
    }
}
