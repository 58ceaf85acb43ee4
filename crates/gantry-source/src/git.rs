//! Git facts: what GitLab knows about a pipeline's commit and project, read
//! from a repository on disk. Refs and config are read from `.git`
//! directly; `git` runs once for the commit (and again only for the file
//! list or the diff when rules need them).

use crate::error::SourceError;
use gantry_config::context::GitFacts;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A commit to plan for, as a server knows it from a push: the commit, the
/// ref that was pushed and whether that ref is a tag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revision {
    /// Full commit SHA, or anything `git rev-parse` accepts.
    pub sha: String,
    /// Branch or tag name (without `refs/heads/` or `refs/tags/`).
    pub ref_name: String,
    pub is_tag: bool,
    /// The commit before the push (`CI_COMMIT_BEFORE_SHA`); the first
    /// parent when `None`.
    pub before_sha: Option<String>,
}

const ZEROS: &str = "0000000000000000000000000000000000000000";
const LOG_FORMAT: &str = "--format=%H%x00%P%x00%an%x00%ae%x00%cI%x00%B";

/// The repository root: the nearest ancestor holding `.git` (a directory,
/// or a file for worktrees). Found without spawning git, which matters for
/// start-up time.
pub fn toplevel(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf)
}

/// The git directory of a repository root (follows `gitdir:` files); the
/// directory itself for a bare repository.
fn git_dir(root: &Path) -> Option<PathBuf> {
    let dot = root.join(".git");
    if dot.is_dir() {
        return Some(dot);
    }
    if let Ok(text) = std::fs::read_to_string(&dot) {
        let path = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
        return Some(if path.is_absolute() {
            path
        } else {
            root.join(path)
        });
    }
    // A bare repository (what a server keeps).
    (root.join("HEAD").is_file() && root.join("objects").is_dir()).then(|| root.to_path_buf())
}

/// The common git directory (refs and config live there for worktrees).
fn common_dir(git_dir: &Path) -> PathBuf {
    std::fs::read_to_string(git_dir.join("commondir"))
        .ok()
        .map(|c| {
            let p = PathBuf::from(c.trim());
            if p.is_absolute() { p } else { git_dir.join(p) }
        })
        .unwrap_or_else(|| git_dir.to_path_buf())
}

/// Whether `refs/...` exists, loose or packed.
fn ref_exists(common: &Path, full: &str) -> bool {
    common.join(full).is_file()
        || std::fs::read_to_string(common.join("packed-refs"))
            .map(|p| {
                p.lines()
                    .any(|l| l.split_once(' ').is_some_and(|(_, r)| r == full))
            })
            .unwrap_or(false)
}

/// `url` of `[remote "origin"]` in a git config file.
fn origin_url(config: &str) -> Option<String> {
    let mut in_origin = false;
    for line in config.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_origin = t.replace(' ', "") == "[remote\"origin\"]";
        } else if in_origin
            && let Some((k, v)) = t.split_once('=')
            && k.trim() == "url"
        {
            return Some(v.trim().to_string());
        }
    }
    None
}

/// Runs git and returns its stdout as is, or `None` on any failure.
pub(crate) fn git_raw(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs git and returns stdout without trailing newlines.
pub(crate) fn git(dir: &Path, args: &[&str]) -> Option<String> {
    git_raw(dir, args).map(|s| s.trim_end_matches('\n').to_string())
}

/// The text of `path` at commit (or ref) `rev`, exactly as committed.
pub fn show_file(dir: &Path, rev: &str, path: &str) -> Option<String> {
    git_raw(dir, &["show", &format!("{rev}:{path}")])
}

/// What the repository itself says: its default branch and where it lives.
struct RepoFacts {
    common: Option<PathBuf>,
    branch: Option<String>,
    default_branch: String,
    project_path: String,
    project_url: Option<String>,
    has_git: bool,
}

fn repo_facts(dir: &Path) -> RepoFacts {
    let gd = git_dir(dir);
    let common = gd.as_deref().map(common_dir);
    let head = gd
        .as_ref()
        .and_then(|g| std::fs::read_to_string(g.join("HEAD")).ok())
        .unwrap_or_default();
    let branch = head
        .trim()
        .strip_prefix("ref: refs/heads/")
        .map(str::to_string);
    let default_branch = common
        .as_ref()
        .and_then(|c| std::fs::read_to_string(c.join("refs/remotes/origin/HEAD")).ok())
        .and_then(|s| {
            s.trim()
                .strip_prefix("ref: refs/remotes/origin/")
                .map(str::to_string)
        })
        .or_else(|| {
            let c = common.as_deref()?;
            ["main", "master"]
                .into_iter()
                .find(|b| ref_exists(c, &format!("refs/heads/{b}")))
                .map(str::to_string)
        })
        .or_else(|| branch.clone())
        .unwrap_or_else(|| "main".to_string());
    let remote = common
        .as_ref()
        .and_then(|c| std::fs::read_to_string(c.join("config")).ok())
        .and_then(|c| origin_url(&c));
    let project_path = remote
        .as_deref()
        .and_then(project_path_from_remote)
        .unwrap_or_else(|| {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "project".into());
            format!("local/{}", name.trim_end_matches(".git"))
        });
    let project_url = remote.as_deref().and_then(web_url_from_remote);
    RepoFacts {
        has_git: gd.is_some(),
        common,
        branch,
        default_branch,
        project_path,
        project_url,
    }
}

/// Facts about the checked-out repository at `dir`, for `git_ref` or the
/// current branch. Works outside git too, with placeholder values, so a
/// lone file can be linted. The file list and the changed paths are left
/// empty: fill them with [`files_at`]/[`working_tree_files`] and
/// [`changed_paths`] only when the configuration uses `exists:` or
/// `changes:`.
pub fn working_tree_facts(dir: &Path, git_ref: Option<&str>) -> GitFacts {
    let repo = repo_facts(dir);
    let (ref_name, is_tag) = match git_ref {
        Some(r) => {
            let r = r.trim_start_matches("refs/heads/");
            match r.strip_prefix("refs/tags/") {
                Some(t) => (t.to_string(), true),
                None => {
                    let has =
                        |full: String| repo.common.as_deref().is_some_and(|c| ref_exists(c, &full));
                    (
                        r.to_string(),
                        has(format!("refs/tags/{r}")) && !has(format!("refs/heads/{r}")),
                    )
                }
            }
        }
        None => match &repo.branch {
            Some(b) => (b.clone(), false),
            None => (repo.default_branch.clone(), false),
        },
    };
    // The commit: the ref's when it exists here, else HEAD.
    let log = if !repo.has_git {
        None
    } else {
        git_ref
            .and_then(|_| {
                git(
                    dir,
                    &[
                        "log",
                        "-1",
                        LOG_FORMAT,
                        &format!("{ref_name}^{{commit}}"),
                        "--",
                    ],
                )
            })
            .or_else(|| git(dir, &["log", "-1", LOG_FORMAT, "HEAD", "--"]))
    };
    facts_from_log(dir, repo, ref_name, is_tag, &log.unwrap_or_default(), None)
}

/// Facts about one commit of the repository at `dir` (a clone or a bare
/// repository), for the ref that was pushed: what a server computes its
/// `CI_*` variables from. The file list and changed paths are left empty
/// (see [`files_at`] and [`changed_paths`]).
pub fn commit_facts(dir: &Path, revision: &Revision) -> Result<GitFacts, SourceError> {
    let repo = repo_facts(dir);
    let log = git(
        dir,
        &[
            "log",
            "-1",
            LOG_FORMAT,
            &format!("{}^{{commit}}", revision.sha),
            "--",
        ],
    )
    .ok_or_else(|| SourceError::UnknownCommit(revision.sha.clone()))?;
    Ok(facts_from_log(
        dir,
        repo,
        revision.ref_name.clone(),
        revision.is_tag,
        &log,
        revision.before_sha.clone(),
    ))
}

fn facts_from_log(
    dir: &Path,
    repo: RepoFacts,
    ref_name: String,
    is_tag: bool,
    log: &str,
    before_sha: Option<String>,
) -> GitFacts {
    let mut parts = log.splitn(6, '\0');
    let mut next = || parts.next().unwrap_or("").to_string();
    let sha = Some(next())
        .filter(|s| s.len() == 40)
        .unwrap_or_else(|| ZEROS.to_string());
    let parent = next();
    let before_sha = before_sha.unwrap_or_else(|| {
        parent
            .split(' ')
            .next()
            .filter(|s| s.len() == 40)
            .map(str::to_string)
            .unwrap_or_else(|| ZEROS.to_string())
    });
    let author_name = next();
    let author_email = next();
    let timestamp = next();
    let message = next().trim_end().to_string();
    let tag_message = if is_tag {
        git(dir, &["tag", "-l", "--format=%(contents)", &ref_name]).filter(|m| !m.is_empty())
    } else {
        None
    };
    GitFacts {
        sha,
        before_sha,
        ref_name,
        is_tag,
        tag_message,
        default_branch: repo.default_branch,
        author: format!("{author_name} <{author_email}>"),
        author_name,
        author_email,
        message,
        timestamp,
        project_path: repo.project_path,
        project_dir: dir.to_string_lossy().into_owned(),
        project_url: repo.project_url,
        changed_paths: None,
        files: Vec::new(),
    }
}

/// Every file of the working tree: tracked and untracked-but-not-ignored,
/// as the user sees it (a directory walk outside git).
pub fn working_tree_files(dir: &Path) -> Vec<String> {
    git(
        dir,
        &["ls-files", "--cached", "--others", "--exclude-standard"],
    )
    .map(|s| {
        let mut v: Vec<String> = s.lines().map(str::to_string).collect();
        v.sort();
        v.dedup();
        v
    })
    .unwrap_or_else(|| list_dir_files(dir))
}

/// Every file of the repository at commit `sha`, sorted.
pub fn files_at(dir: &Path, sha: &str) -> Result<Vec<String>, SourceError> {
    let listing = git(dir, &["ls-tree", "-r", "--name-only", "-z", sha])
        .ok_or_else(|| SourceError::UnknownCommit(sha.to_string()))?;
    let mut v: Vec<String> = listing
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    Ok(v)
}

/// What `changes:` compares. GitLab has no diff for tags, schedules and
/// manual runs (changes then always match). For merge requests it compares
/// with the target branch; for pushes, the commit with its parent. With
/// `include_local`, uncommitted changes of the working tree count too,
/// since they are what the user is trying.
pub fn changed_paths(
    dir: &Path,
    sha: &str,
    default_branch: &str,
    is_tag: bool,
    source: &str,
    include_local: bool,
) -> Option<Vec<String>> {
    if is_tag || !matches!(source, "push" | "merge_request_event") {
        return None;
    }
    let base = if source == "merge_request_event" {
        git(dir, &["merge-base", default_branch, sha])?
    } else {
        git(dir, &["rev-parse", "-q", "--verify", &format!("{sha}~1")])?
    };
    let mut paths = changed_between(dir, &base, sha)?;
    if include_local
        && let Some(local) = git(dir, &["status", "--porcelain", "--untracked-files=all"])
    {
        paths.extend(
            local
                .lines()
                .filter_map(|l| l.get(3..))
                .map(|p| p.rsplit(" -> ").next().unwrap_or(p).to_string()),
        );
    }
    paths.sort();
    paths.dedup();
    Some(paths)
}

/// Paths that differ between two commits (a push's `before..after`).
pub fn changed_between(dir: &Path, base: &str, sha: &str) -> Option<Vec<String>> {
    Some(
        git(dir, &["diff", "--name-only", base, sha])?
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

fn list_dir_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>, depth: usize) {
        if depth > 20 {
            return;
        }
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name();
            if name == ".git" || name == ".gantry" || name == "target" {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(root, &p, out, depth + 1),
                Ok(t) if t.is_file() => {
                    if let Ok(rel) = p.strip_prefix(root) {
                        out.push(rel.to_string_lossy().into_owned());
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out, 0);
    out.sort();
    out
}

/// `git@host:group/project.git` or `https://host/group/project.git` → `group/project`.
pub fn project_path_from_remote(url: &str) -> Option<String> {
    let rest = if let Some(i) = url.find("://") {
        let after = &url[i + 3..];
        after.split_once('/')?.1
    } else if let Some((_, path)) = url.split_once(':') {
        path
    } else {
        url
    };
    let p = rest
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .trim_matches('/');
    if p.is_empty() {
        None
    } else {
        Some(p.to_string())
    }
}

/// The project's web URL from a clone URL; never carries credentials.
pub fn web_url_from_remote(url: &str) -> Option<String> {
    let path = project_path_from_remote(url)?;
    let host = if let Some(i) = url.find("://") {
        let after = &url[i + 3..];
        let host = after.split('/').next()?;
        host.rsplit('@').next()?.to_string()
    } else {
        let (user_host, _) = url.split_once(':')?;
        user_host.rsplit('@').next()?.to_string()
    };
    if host.is_empty() || host.starts_with('/') {
        None
    } else {
        Some(format!("https://{host}/{path}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_to_project_paths() {
        assert_eq!(
            project_path_from_remote("git@gitlab.com:group/sub/app.git").as_deref(),
            Some("group/sub/app")
        );
        assert_eq!(
            project_path_from_remote("https://gitlab.com/group/app.git").as_deref(),
            Some("group/app")
        );
        assert_eq!(
            project_path_from_remote("https://user:tok@gitlab.com/group/app").as_deref(),
            Some("group/app")
        );
        assert_eq!(
            web_url_from_remote("git@gitlab.com:group/app.git").as_deref(),
            Some("https://gitlab.com/group/app")
        );
        assert_eq!(
            web_url_from_remote("https://user:tok@gitlab.com/group/app").as_deref(),
            Some("https://gitlab.com/group/app")
        );
    }
}
