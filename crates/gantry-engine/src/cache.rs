//! Caches (`cache:`), kept between runs in `.gantry/cache/<key>.zip`.
//!
//! Keys as GitLab computes them: a literal key expanded with the job's
//! variables (runner-side), or `key:files` → `prefix-` + SHA1 of the sorted,
//! unique ids of the last commits that touched those files, joined by `-`
//! (`default` when none of the files exist).

use crate::vars::expand_runner;
use gantry_config::model::{Cache, CacheKey};
use indexmap::IndexMap;
use sha1::{Digest, Sha1};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The cache key of `cache` for a job.
pub fn cache_key(
    cache: &Cache,
    vars: &IndexMap<String, String>,
    repo_dir: &Path,
    sha: &str,
) -> String {
    match &cache.key {
        CacheKey::Literal(k) => {
            let k = expand_runner(k, vars);
            if k.trim().is_empty() {
                "default".into()
            } else {
                k
            }
        }
        CacheKey::Files { files, prefix } => {
            let digest = files_digest(files, repo_dir, sha).unwrap_or_else(|| "default".into());
            match prefix.as_deref().map(|p| expand_runner(p, vars)) {
                Some(p) if !p.is_empty() => format!("{p}-{digest}"),
                _ => digest,
            }
        }
    }
}

/// SHA1 of the sorted unique last-commit ids touching `files` at `sha`.
fn files_digest(files: &[String], repo_dir: &Path, sha: &str) -> Option<String> {
    let mut ids: Vec<String> = Vec::new();
    for f in files {
        let out = Command::new("git")
            .arg("-C")
            .arg(repo_dir)
            .args(["log", "-1", "--format=%H", sha, "--"])
            .arg(f)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !id.is_empty() {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return None;
    }
    ids.sort();
    ids.dedup();
    Some(hex::encode(Sha1::digest(ids.join("-").as_bytes())))
}

/// The archive path of a key: unsafe characters are percent-encoded.
pub fn cache_path(cache_dir: &Path, key: &str) -> PathBuf {
    let mut name = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    if name.starts_with('.') {
        name.insert(0, '_');
    }
    cache_dir.join(format!("{name}.zip"))
}

/// Restores a cache archive into a job's directory. Symlinks are restored
/// whatever they point to (a cache holds what this repository's jobs made,
/// such as a virtualenv whose `bin/python` is absolute); nothing is written
/// through a link that leaves the directory. A failed restore must not be
/// followed by saving the same key: the job's files are then incomplete
/// and saving them would shrink the cache.
pub fn restore(archive: &Path, build_dir: &Path) -> std::io::Result<usize> {
    crate::archive::extract_zip_with(archive, build_dir, crate::archive::Links::Any)
}

/// Keys to try on restore: the key, `fallback_keys`, then `CACHE_FALLBACK_KEY`.
pub fn restore_keys(cache: &Cache, key: &str, vars: &IndexMap<String, String>) -> Vec<String> {
    let mut keys = vec![key.to_string()];
    for k in &cache.fallback_keys {
        keys.push(expand_runner(k, vars));
    }
    if let Some(k) = vars.get("CACHE_FALLBACK_KEY").filter(|k| !k.is_empty()) {
        keys.push(k.clone());
    }
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_key_is_expanded() {
        let cache = Cache {
            key: CacheKey::Literal("deps-$CI_COMMIT_REF_SLUG".into()),
            ..Cache::default()
        };
        let vars: IndexMap<String, String> =
            [("CI_COMMIT_REF_SLUG".to_string(), "main".to_string())].into();
        assert_eq!(
            cache_key(&cache, &vars, Path::new("."), "HEAD"),
            "deps-main"
        );
    }

    #[test]
    fn paths_are_safe() {
        let p = cache_path(Path::new("/c"), "../x y");
        assert_eq!(p, PathBuf::from("/c/_..%2Fx%20y.zip"));
    }
}
