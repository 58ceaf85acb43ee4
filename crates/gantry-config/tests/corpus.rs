//! Real public `.gitlab-ci.yml` files (the corpus in `tests/corpus/`, listed
//! with repository and commit in `tests/corpus/MANIFEST.tsv`) are linted and
//! planned for a push to the default branch. Every project whose
//! configuration needs no include gantry cannot reach offline (another
//! project without a clone, a remote URL, a template or component without a
//! GitLab instance) must load and plan without errors.
//!
//! The files themselves are not committed (they are other projects' code):
//! `scripts/fetch-ci-corpus.sh` downloads them at the recorded commits into
//! `tests/corpus/`, or a copy is kept in the shared directory
//! (`$GANTRY_SHARED/ci-corpus`, default `../shared/ci-corpus` beside the
//! repository). The test skips with a reason when they are absent, unless
//! `GANTRY_REQUIRE_CORPUS` is set.

use gantry_config::context::{Context, GitFacts};
use gantry_config::load::{FileSource, LoadOptions, ReadError, load};
use std::path::{Path, PathBuf};

/// The project's files from a directory; other projects (for
/// `include:project` and `include:component`) from `_projects/OWNER+NAME`
/// when the corpus has them, at the one commit recorded for them.
struct DirSource {
    root: PathBuf,
    projects: PathBuf,
    files: Vec<String>,
}

impl DirSource {
    fn new(root: PathBuf, projects: PathBuf) -> Self {
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        files.sort();
        DirSource {
            root,
            projects,
            files,
        }
    }

    fn project_dir(&self, project: &str) -> Option<PathBuf> {
        let wanted = project.replace('/', "+");
        std::fs::read_dir(&self.projects)
            .ok()?
            .flatten()
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .eq_ignore_ascii_case(&wanted)
            })
            .map(|e| e.path())
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}

impl FileSource for DirSource {
    fn read_local(&self, path: &str) -> Result<String, ReadError> {
        std::fs::read_to_string(self.root.join(path.trim_start_matches('/'))).map_err(io_error)
    }
    fn local_files(&self) -> Vec<String> {
        self.files.clone()
    }
    fn read_project(
        &self,
        project: &str,
        _: Option<&str>,
        path: &str,
    ) -> Result<String, ReadError> {
        let dir = self
            .project_dir(project)
            .ok_or_else(|| ReadError::Unavailable(format!("UNAVAILABLE: no clone of {project}")))?;
        std::fs::read_to_string(dir.join(path.trim_start_matches('/'))).map_err(io_error)
    }
    fn read_template(&self, name: &str) -> Result<String, ReadError> {
        Err(ReadError::Unavailable(format!(
            "UNAVAILABLE: GitLab's template {name}"
        )))
    }
    fn read_component(&self, c: &gantry_config::load::ComponentRef) -> Result<String, ReadError> {
        let dir = self.project_dir(&c.project).ok_or_else(|| {
            ReadError::Unavailable(format!("UNAVAILABLE: no copy of {}", c.project))
        })?;
        let [a, b] = c.template_paths();
        std::fs::read_to_string(dir.join(a))
            .or_else(|_| std::fs::read_to_string(dir.join(b)))
            .map_err(io_error)
    }
    fn read_remote(&self, url: &str) -> Result<String, ReadError> {
        Err(ReadError::Unavailable(format!(
            "UNAVAILABLE: offline ({url})"
        )))
    }
}

fn io_error(e: std::io::Error) -> ReadError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ReadError::NotFound(e.to_string()),
        _ => ReadError::Failed(e.to_string()),
    }
}

/// An error caused by an include that cannot be had offline.
fn unavailable(message: &str) -> bool {
    message.contains("UNAVAILABLE")
}

struct Entry {
    name: String,
    repository: String,
    commit: String,
}

fn manifest(dir: &Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(dir.join("MANIFEST.tsv")).expect("MANIFEST.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Entry {
                name: cols[0].to_string(),
                repository: cols[1].to_string(),
                commit: cols[2].to_string(),
            }
        })
        .collect()
}

fn facts(entry: &Entry) -> GitFacts {
    GitFacts {
        sha: entry.commit.clone(),
        before_sha: "0".repeat(40),
        ref_name: "main".into(),
        default_branch: "main".into(),
        author: "Ada <ada@example.com>".into(),
        author_name: "Ada".into(),
        author_email: "ada@example.com".into(),
        message: "corpus".into(),
        timestamp: "2026-01-01T00:00:00+00:00".into(),
        project_path: entry.repository.clone(),
        project_dir: "/builds/project".into(),
        project_url: Some(format!("https://gitlab.com/{}", entry.repository)),
        ..GitFacts::default()
    }
}

/// The outcome of one project: `Ok(true)` passed, `Ok(false)` needs an
/// unavailable include, `Err` the errors.
fn check(dir: &Path, entry: &Entry) -> Result<bool, String> {
    let fs = DirSource::new(dir.join(&entry.name), dir.join("_projects"));
    let facts = GitFacts {
        files: fs.local_files(),
        ..facts(entry)
    };
    let ctx = Context::new(&facts, "push", &[]);
    let opts = LoadOptions {
        variables: ctx.variables.clone(),
        ..LoadOptions::new(".gitlab-ci.yml")
    };
    let loaded = match load(&fs, &opts) {
        Ok(l) => l,
        Err(e) => {
            if let Some(d) = e.diagnostics.iter().find(|d| unavailable(&d.message)) {
                eprintln!("  {}: {}", entry.name, d.message);
                return Ok(false);
            }
            return Err(e
                .diagnostics
                .iter()
                .map(|d| d.render(&e.sources))
                .collect::<Vec<_>>()
                .join(""));
        }
    };
    gantry_config::plan::plan(&loaded.config, &ctx).map_err(|d| {
        d.iter()
            .map(|d| d.render(&loaded.sources))
            .collect::<Vec<_>>()
            .join("")
    })?;
    Ok(true)
}

/// Where the corpus files are: beside the manifest, else the shared copy.
fn corpus_dir(manifest_dir: &Path, entries: &[Entry]) -> PathBuf {
    let has_files = |d: &Path| {
        entries
            .iter()
            .any(|e| d.join(&e.name).join(".gitlab-ci.yml").is_file())
    };
    if has_files(manifest_dir) {
        return manifest_dir.to_path_buf();
    }
    std::env::var_os("GANTRY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
        .join("ci-corpus")
}

#[test]
fn real_projects_lint_and_plan() {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let entries = manifest(&manifest_dir);
    let dir = corpus_dir(&manifest_dir, &entries);
    let present: Vec<&Entry> = entries
        .iter()
        .filter(|e| !e.name.starts_with('_'))
        .filter(|e| dir.join(&e.name).join(".gitlab-ci.yml").is_file())
        .collect();
    if present.is_empty() {
        let why = format!(
            "the corpus files are absent from {} and {} (run scripts/fetch-ci-corpus.sh)",
            manifest_dir.display(),
            dir.display()
        );
        if std::env::var_os("GANTRY_REQUIRE_CORPUS").is_some() {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let (mut passed, mut skipped, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for entry in present {
        match check(&dir, entry) {
            Ok(true) => passed.push(entry.name.clone()),
            Ok(false) => skipped.push(entry.name.clone()),
            Err(e) => failed.push(format!("== {}\n{e}", entry.name)),
        }
    }
    eprintln!(
        "corpus: {} passed, {} need an unavailable include ({}), {} failed",
        passed.len(),
        skipped.len(),
        skipped.join(", "),
        failed.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
