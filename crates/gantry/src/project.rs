//! The project on disk: finding the repository, reading configuration files
//! (local, other local clones, remote over HTTP with a cache), gathering git
//! facts, and turning all of it into a planned pipeline.

use gantry_config::context::{Context, GitFacts};
use gantry_config::load::{FileSource, LoadOptions, Loaded};
use gantry_config::model::Pipeline;
use gantry_config::{Diagnostic, Sources};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Exit code for a usage or I/O error (bad flag, unreadable file).
pub const EXIT_USAGE: i32 = crate::exit::Exit::Usage.code();
/// Exit code for an invalid configuration or a failed pipeline.
pub const EXIT_FAILURE: i32 = crate::exit::Exit::Failed.code();

/// Options shared by every command that plans a pipeline.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PlanArgs {
    /// The configuration file (default: `.gitlab-ci.yml` at the repository root).
    pub file: Option<PathBuf>,
    /// Plan for this branch or tag instead of the checked-out one.
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// Pipeline source: push, web, schedule, merge_request_event, api, trigger, ...
    #[arg(long, default_value = "push")]
    pub source: String,
    /// Set a variable (repeatable); wins over predefined ones.
    #[arg(short = 'v', long = "variable", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub vars: Vec<(String, String)>,
    /// Keep the merged configuration in [`Planned::loaded`] (for `--merged`).
    #[arg(skip)]
    pub keep_merged: bool,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// A planned pipeline and where it came from.
pub struct Planned {
    pub pipeline: Pipeline,
    pub loaded: Loaded,
    pub project_dir: PathBuf,
    pub facts: GitFacts,
}

/// Where the configuration file is, and the project it belongs to.
pub struct Located {
    pub project_dir: PathBuf,
    /// Entry path relative to `project_dir`.
    pub entry: String,
}

/// Finds the configuration file and its repository root.
pub fn locate(file: Option<&Path>) -> Result<Located, String> {
    let cwd =
        std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    let file = match file {
        Some(f) => {
            let abs = if f.is_absolute() {
                f.to_path_buf()
            } else {
                cwd.join(f)
            };
            if !abs.is_file() {
                return Err(format!("{}: no such file", f.display()));
            }
            abs
        }
        None => {
            let root = git_toplevel(&cwd).unwrap_or(cwd.clone());
            let f = root.join(".gitlab-ci.yml");
            if !f.is_file() {
                return Err(format!(
                    "no .gitlab-ci.yml in {} (give a file: `gantry lint FILE`)",
                    root.display()
                ));
            }
            f
        }
    };
    let file = file
        .canonicalize()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
    let project_dir = git_toplevel(&dir).unwrap_or(dir);
    let project_dir = project_dir.canonicalize().unwrap_or(project_dir);
    let entry = file
        .strip_prefix(&project_dir)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| file.to_string_lossy().into_owned());
    Ok(Located { project_dir, entry })
}

/// The repository root: the nearest ancestor holding `.git` (a directory,
/// or a file for worktrees). Found without spawning git, which matters for
/// start-up time.
fn git_toplevel(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf)
}

/// The git directory of a repository root (follows `gitdir:` files).
fn git_dir(root: &Path) -> Option<PathBuf> {
    let dot = root.join(".git");
    if dot.is_dir() {
        return Some(dot);
    }
    let text = std::fs::read_to_string(&dot).ok()?;
    let path = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
    Some(if path.is_absolute() {
        path
    } else {
        root.join(path)
    })
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

/// Runs git and returns trimmed stdout, or `None` on any failure.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
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
    Some(
        String::from_utf8_lossy(&out.stdout)
            .trim_end_matches('\n')
            .to_string(),
    )
}

/// Facts about the repository at `dir`. Works outside git too, with
/// placeholder values, so a lone file can be linted. Reads refs and config
/// from `.git` directly and runs `git` once for the commit; the file list and
/// the changed paths are filled in by [`plan`] only when the
/// configuration uses `exists:` or `changes:`.
pub fn git_facts(dir: &Path, git_ref: Option<&str>) -> GitFacts {
    let zeros = "0".repeat(40);
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
    let (ref_name, is_tag) = match git_ref {
        Some(r) => {
            let r = r.trim_start_matches("refs/heads/");
            match r.strip_prefix("refs/tags/") {
                Some(t) => (t.to_string(), true),
                None => {
                    let has =
                        |full: String| common.as_deref().is_some_and(|c| ref_exists(c, &full));
                    (
                        r.to_string(),
                        has(format!("refs/tags/{r}")) && !has(format!("refs/heads/{r}")),
                    )
                }
            }
        }
        None => match branch {
            Some(b) => (b, false),
            None => (default_branch.clone(), false),
        },
    };
    // The commit: the ref's when it exists here, else HEAD.
    let log_format = "--format=%H%x00%P%x00%an%x00%ae%x00%cI%x00%B";
    let log = if gd.is_none() {
        None
    } else {
        git_ref
            .and_then(|_| {
                git(
                    dir,
                    &[
                        "log",
                        "-1",
                        log_format,
                        &format!("{ref_name}^{{commit}}"),
                        "--",
                    ],
                )
            })
            .or_else(|| git(dir, &["log", "-1", log_format, "HEAD", "--"]))
    };
    let log = log.unwrap_or_default();
    let mut parts = log.splitn(6, '\0');
    let mut next = || parts.next().unwrap_or("").to_string();
    let sha = Some(next())
        .filter(|s| s.len() == 40)
        .unwrap_or_else(|| zeros.clone());
    let before_sha = next()
        .split(' ')
        .next()
        .filter(|s| s.len() == 40)
        .map(str::to_string)
        .unwrap_or_else(|| zeros.clone());
    let author_name = next();
    let author_email = next();
    let timestamp = next();
    let message = next().trim_end().to_string();
    let tag_message = if is_tag {
        git(dir, &["tag", "-l", "--format=%(contents)", &ref_name]).filter(|m| !m.is_empty())
    } else {
        None
    };
    let remote = common
        .as_ref()
        .and_then(|c| std::fs::read_to_string(c.join("config")).ok())
        .and_then(|c| origin_url(&c));
    let project_path = remote
        .as_deref()
        .and_then(project_path_from_remote)
        .unwrap_or_else(|| {
            format!(
                "local/{}",
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "project".into())
            )
        });
    let project_url = remote.as_deref().and_then(web_url_from_remote);
    GitFacts {
        sha,
        before_sha,
        ref_name,
        is_tag,
        tag_message,
        default_branch,
        author: format!("{author_name} <{author_email}>"),
        author_name,
        author_email,
        message,
        timestamp,
        project_path,
        project_dir: dir.to_string_lossy().into_owned(),
        project_url,
        changed_paths: None,
        files: Vec::new(),
    }
}

/// Every file of the project: tracked and untracked-but-not-ignored, as
/// the user sees the working tree.
fn project_files(dir: &Path) -> Vec<String> {
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

/// Whether the configuration uses `exists:` and `changes:` anywhere, in
/// one walk, so the git queries they need run only when they matter.
pub fn uses_exists_and_changes(node: &gantry_config::node::Node) -> (bool, bool) {
    use gantry_config::node::Value;
    fn walk(node: &gantry_config::node::Node, found: &mut (bool, bool)) {
        match &node.value {
            Value::Map(m) => {
                for (k, e) in m.iter() {
                    found.0 |= k == "exists";
                    found.1 |= k == "changes";
                    if let Value::Map(_) | Value::Seq(_) = e.value.value {
                        walk(&e.value, found);
                    }
                }
            }
            Value::Seq(items) => items.iter().for_each(|n| walk(n, found)),
            _ => {}
        }
    }
    let mut found = (false, false);
    walk(node, &mut found);
    found
}

/// What `changes:` compares. GitLab has no diff for tags, schedules and
/// manual runs (changes then always match). For merge requests it compares
/// with the target branch; for pushes, the commit with its parent. Local
/// uncommitted changes are included, since they are what the user is trying.
fn changed_paths(
    dir: &Path,
    sha: &str,
    default_branch: &str,
    is_tag: bool,
    source: &str,
) -> Option<Vec<String>> {
    if is_tag || !matches!(source, "push" | "merge_request_event") {
        return None;
    }
    let base = if source == "merge_request_event" {
        git(dir, &["merge-base", default_branch, sha])?
    } else {
        git(dir, &["rev-parse", "-q", "--verify", &format!("{sha}~1")])?
    };
    let mut paths: Vec<String> = git(dir, &["diff", "--name-only", &base, sha])?
        .lines()
        .map(str::to_string)
        .collect();
    if let Some(local) = git(dir, &["status", "--porcelain", "--untracked-files=all"]) {
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
fn project_path_from_remote(url: &str) -> Option<String> {
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

fn web_url_from_remote(url: &str) -> Option<String> {
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

/// Reads configuration files for the loader: the working tree, sibling
/// clones for `include:project`, and HTTP with an on-disk cache.
pub struct ProjectFiles {
    root: PathBuf,
    files: std::sync::OnceLock<Vec<String>>,
}

impl ProjectFiles {
    pub fn new(root: PathBuf) -> Self {
        ProjectFiles {
            root,
            files: std::sync::OnceLock::new(),
        }
    }

    fn project_clone(&self, project: &str) -> Option<PathBuf> {
        let base = std::env::var_os("GANTRY_PROJECTS_DIR")
            .map(PathBuf::from)
            .or_else(|| self.root.parent().map(Path::to_path_buf))?;
        let full = base.join(project);
        if full.is_dir() {
            return Some(full);
        }
        let last = project.rsplit('/').next()?;
        let short = base.join(last);
        short.is_dir().then_some(short)
    }
}

fn safe_relative(path: &str) -> Result<&str, String> {
    let p = path.trim_start_matches('/');
    if p.split('/').any(|c| c == "..") {
        return Err(format!("`{path}` leaves the project directory"));
    }
    Ok(p)
}

impl FileSource for ProjectFiles {
    fn read_local(&self, path: &str) -> Result<String, String> {
        let rel = safe_relative(path)?;
        std::fs::read_to_string(self.root.join(rel))
            .map_err(|e| format!("cannot read local file `{rel}`: {e}"))
    }

    fn local_files(&self) -> Vec<String> {
        self.files.get_or_init(|| project_files(&self.root)).clone()
    }

    fn read_project(
        &self,
        project: &str,
        git_ref: Option<&str>,
        path: &str,
    ) -> Result<String, String> {
        let rel = safe_relative(path)?;
        let dir = self.project_clone(project).ok_or_else(|| {
            format!("project `{project}` has no local clone (looked in GANTRY_PROJECTS_DIR or beside this project)")
        })?;
        match git_ref {
            Some(r) => git(&dir, &["show", &format!("{r}:{rel}")])
                .ok_or_else(|| format!("`{rel}` not found at ref `{r}` of project `{project}`")),
            None => std::fs::read_to_string(dir.join(rel))
                .map_err(|e| format!("cannot read `{rel}` of project `{project}`: {e}")),
        }
    }

    fn read_remote(&self, url: &str) -> Result<String, String> {
        fetch_remote(url)
    }
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("GANTRY_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("gantry")
}

/// Remote includes are cached for `GANTRY_REMOTE_TTL` seconds (default one
/// hour); a stale copy is used when the network fails, with a warning.
fn fetch_remote(url: &str) -> Result<String, String> {
    use sha2::Digest;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("`{url}` is not an http(s) URL"));
    }
    let ttl = std::env::var("GANTRY_REMOTE_TTL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3600u64);
    let path = cache_dir()
        .join("remote")
        .join(hex::encode(sha2::Sha256::digest(url.as_bytes())));
    let cached = std::fs::read_to_string(&path).ok();
    let fresh = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < Duration::from_secs(ttl));
    if let (true, Some(text)) = (fresh, &cached) {
        return Ok(text.clone());
    }
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let fetched = agent
        .get(url)
        .call()
        .map_err(|e| e.to_string())
        .and_then(|r| {
            let mut body = String::new();
            std::io::Read::read_to_string(
                &mut std::io::Read::take(r.into_reader(), 1024 * 1024 + 1),
                &mut body,
            )
            .map_err(|e| e.to_string())?;
            Ok(body)
        });
    match fetched {
        Ok(text) => {
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, &text).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
            Ok(text)
        }
        Err(e) => match cached {
            Some(text) => {
                eprintln!("warning: cannot fetch {url} ({e}); using the cached copy");
                Ok(text)
            }
            None => Err(format!("cannot fetch {url}: {e}")),
        },
    }
}

/// A loaded configuration and the context it was loaded in.
pub struct LoadedProject {
    pub located: Located,
    pub facts: GitFacts,
    /// Pre-pipeline context: no file list or diff yet (see [`plan`]).
    pub context: Context,
    pub files: ProjectFiles,
    pub loaded: Loaded,
}

/// Finds, reads and validates the configuration (what `gantry lint` does).
/// Prints diagnostics itself; the error is the exit code.
pub fn load(args: &PlanArgs) -> Result<LoadedProject, i32> {
    let located = locate(args.file.as_deref()).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })?;
    let facts = git_facts(&located.project_dir, args.git_ref.as_deref());
    let context = Context::new(&facts, &args.source, &args.vars);
    let files = ProjectFiles::new(located.project_dir.clone());
    let opts = LoadOptions {
        entry: located.entry.clone(),
        variables: context.variables.clone(),
        display_name: None,
    };
    let loaded = gantry_config::load::load(&files, &opts).map_err(|e| {
        print_diagnostics(&e.diagnostics, &e.sources);
        EXIT_FAILURE
    })?;
    Ok(LoadedProject {
        located,
        facts,
        context,
        files,
        loaded,
    })
}

/// Loads and plans. Prints diagnostics itself; the error is the exit code.
pub fn plan(args: &PlanArgs) -> Result<Planned, i32> {
    let LoadedProject {
        located,
        mut facts,
        mut context,
        files,
        mut loaded,
    } = load(args)?;
    // The file list and the diff cost git calls: only when rules use them.
    let (needs_files, needs_changes) = uses_exists_and_changes(&loaded.merged);
    if needs_files {
        facts.files = files.local_files();
        context.files = facts.files.clone();
    }
    if needs_changes {
        facts.changed_paths = changed_paths(
            &located.project_dir,
            &facts.sha,
            &facts.default_branch,
            facts.is_tag,
            &args.source,
        );
        context.changed_paths = facts.changed_paths.clone();
    }
    if !args.keep_merged {
        // Only `plan --merged` reads the merged tree; free it before planning.
        loaded.merged = gantry_config::node::Node::null(loaded.merged.span);
    }
    let pipeline = gantry_config::plan::plan(&loaded.config, &context).map_err(|d| {
        print_diagnostics(&d, &loaded.sources);
        EXIT_FAILURE
    })?;
    Ok(Planned {
        pipeline,
        loaded,
        project_dir: located.project_dir,
        facts,
    })
}

pub fn print_diagnostics(diagnostics: &[Diagnostic], sources: &Sources) {
    for d in diagnostics {
        eprintln!("{}", d.render(sources));
    }
    let n = diagnostics.len();
    eprintln!("{n} error{} found", if n == 1 { "" } else { "s" });
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

    #[test]
    fn include_paths_cannot_escape() {
        assert!(safe_relative("../x.yml").is_err());
        assert_eq!(safe_relative("/ci/a.yml"), Ok("ci/a.yml"));
    }
}
