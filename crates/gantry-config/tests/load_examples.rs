//! Loads every example pipeline under `examples/` of the workspace (each
//! directory with a `.gitlab-ci.yml`) through the full `load`, with the
//! directory as the project: a directory named `*fragment*` must be
//! rejected with a positioned error, every other one must load and its
//! merged YAML must round-trip. Skips, saying so, when there are none.

use gantry_config::emit::to_yaml;
use gantry_config::load::{FileSource, LoadOptions, ReadError, load};
use std::path::{Path, PathBuf};

/// A project directory on disk; no remote or other projects.
struct DirSource(PathBuf);

impl FileSource for DirSource {
    fn read_local(&self, path: &str) -> Result<String, ReadError> {
        std::fs::read_to_string(self.0.join(path)).map_err(|e| ReadError::NotFound(e.to_string()))
    }
    fn local_files(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else if let Ok(rel) = path.strip_prefix(root) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.0, &self.0, &mut out);
        out.sort();
        out
    }
    fn read_project(
        &self,
        project: &str,
        _git_ref: Option<&str>,
        _path: &str,
    ) -> Result<String, ReadError> {
        Err(ReadError::Unavailable(format!(
            "project `{project}` is not available in this test"
        )))
    }
    fn read_remote(&self, url: &str) -> Result<String, ReadError> {
        Err(ReadError::Unavailable(format!(
            "no network in tests: {url}"
        )))
    }
}

fn example_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut dirs = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        if dir.join(".gitlab-ci.yml").is_file() {
            dirs.push(dir.clone());
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    dirs.sort();
    dirs
}

#[test]
fn examples_load_and_their_merged_yaml_round_trips() {
    let dirs = example_dirs();
    if dirs.is_empty() {
        eprintln!("skipped: no examples/*/.gitlab-ci.yml in the workspace yet");
        return;
    }
    let mut failures = Vec::new();
    for dir in &dirs {
        let src = DirSource(dir.clone());
        let opts = LoadOptions {
            display_name: Some(format!("{}/.gitlab-ci.yml", dir.display())),
            ..LoadOptions::default()
        };
        let must_fail = dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("fragment"));
        match load(&src, &opts) {
            Ok(_) if must_fail => {
                failures.push(format!("{}: a fragment must be rejected", dir.display()))
            }
            Err(e) if must_fail => {
                if e.diagnostics.iter().any(|d| d.span.is_none()) {
                    failures.push(format!("{}: error without a position:\n{e}", dir.display()));
                }
            }
            Ok(loaded) => {
                let text = to_yaml(&loaded.merged);
                let back = gantry_config::yaml::parse(
                    &text,
                    gantry_config::FileId(0),
                    &Default::default(),
                );
                match back {
                    Ok(back) if back.to_json() == loaded.merged.to_json() => {}
                    _ => failures.push(format!(
                        "{}: merged YAML does not round-trip",
                        dir.display()
                    )),
                }
            }
            Err(e) => failures.push(format!("{}:\n{e}", dir.display())),
        }
    }
    eprintln!("loaded {} example(s)", dirs.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
