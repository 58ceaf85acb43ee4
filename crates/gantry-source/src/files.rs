//! Configuration files for the loader: [`WorkingTree`] reads the checked-out
//! files (what `gantry lint` sees), [`CommitTree`] reads one commit of a
//! repository (what a server plans a push from). Both find `include:project`
//! in local clones and fetch `include:remote` through [`crate::remote`].

use crate::error::SourceError;
use crate::git::{files_at, show_file, working_tree_files};
use crate::gitlab::GitlabInstance;
use gantry_config::load::{ComponentFacts, ComponentRef, FileSource, ReadError};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The working tree of a project at `root`.
pub struct WorkingTree {
    root: PathBuf,
    files: OnceLock<Vec<String>>,
    gitlab: GitlabInstance,
}

impl WorkingTree {
    /// The tree at `root`; templates and components from the instance the
    /// environment names ([`GitlabInstance::from_env`]).
    pub fn new(root: PathBuf) -> Self {
        WorkingTree {
            root,
            files: OnceLock::new(),
            gitlab: GitlabInstance::from_env(None),
        }
    }

    /// Reads templates and components from `gitlab`.
    pub fn with_gitlab(mut self, gitlab: GitlabInstance) -> Self {
        self.gitlab = gitlab;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// One commit of the repository at `repo` (a clone or a bare repository).
pub struct CommitTree {
    repo: PathBuf,
    sha: String,
    files: OnceLock<Vec<String>>,
    gitlab: GitlabInstance,
}

impl CommitTree {
    /// Files of `repo` at commit `sha`.
    pub fn new(repo: PathBuf, sha: impl Into<String>) -> Self {
        CommitTree {
            repo,
            sha: sha.into(),
            files: OnceLock::new(),
            gitlab: GitlabInstance::from_env(None),
        }
    }

    /// Reads templates and components from `gitlab`.
    pub fn with_gitlab(mut self, gitlab: GitlabInstance) -> Self {
        self.gitlab = gitlab;
        self
    }
}

/// `path` relative to the project root; `..` is refused.
pub(crate) fn safe_relative(path: &str) -> Result<&str, SourceError> {
    let p = path.trim_start_matches('/');
    if p.split('/').any(|c| c == "..") {
        return Err(SourceError::LeavesProject(path.to_string()));
    }
    Ok(p)
}

/// The directory holding clones of other projects: `GANTRY_PROJECTS_DIR`,
/// else the parent of this project.
fn projects_dir(this_project: &Path) -> Option<PathBuf> {
    std::env::var_os("GANTRY_PROJECTS_DIR")
        .map(PathBuf::from)
        .or_else(|| this_project.parent().map(Path::to_path_buf))
}

/// The local clone of `project` (`group/name`): `BASE/group/name`, else
/// `BASE/name`, each matched without regard to case as GitLab matches
/// project paths (`GNOME/citemplates` is `gnome/citemplates`). The error
/// lists every directory tried.
pub fn find_clone(this_project: &Path, project: &str) -> Result<PathBuf, SourceError> {
    let mut tried = Vec::new();
    if let Some(base) = projects_dir(this_project) {
        let last = project.rsplit('/').next().unwrap_or(project);
        for candidate in [project, last] {
            if let Some(found) = find_dir_ignoring_case(&base, candidate) {
                return Ok(found);
            }
            let path = base.join(candidate);
            if !tried.contains(&path) {
                tried.push(path);
            }
        }
    }
    Err(SourceError::NoClone {
        project: project.to_string(),
        tried,
    })
}

/// `base/rel`, each component of `rel` matched exactly first, then without
/// regard to ASCII case.
fn find_dir_ignoring_case(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut dir = base.to_path_buf();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        let exact = dir.join(part);
        dir = if exact.is_dir() {
            exact
        } else {
            std::fs::read_dir(&dir)
                .ok()?
                .flatten()
                .find(|e| {
                    e.file_name().to_string_lossy().eq_ignore_ascii_case(part) && e.path().is_dir()
                })?
                .path()
        };
    }
    Some(dir)
}

/// `include:project`: the file at `git_ref` of the clone, or its working
/// tree when no ref is given.
fn read_project(
    this_project: &Path,
    project: &str,
    git_ref: Option<&str>,
    path: &str,
) -> Result<String, SourceError> {
    let rel = safe_relative(path)?;
    let dir = find_clone(this_project, project)?;
    match git_ref {
        Some(r) => show_file(&dir, r, rel).ok_or_else(|| SourceError::NotAtRef {
            project: project.to_string(),
            git_ref: r.to_string(),
            path: rel.to_string(),
        }),
        None => std::fs::read_to_string(dir.join(rel)).map_err(|source| SourceError::ReadProject {
            project: project.to_string(),
            path: rel.to_string(),
            source,
        }),
    }
}

impl FileSource for WorkingTree {
    fn read_local(&self, path: &str) -> Result<String, ReadError> {
        let rel = safe_relative(path).map_err(ReadError::from)?;
        std::fs::read_to_string(self.root.join(rel)).map_err(|source| {
            SourceError::ReadLocal {
                path: rel.to_string(),
                source,
            }
            .into()
        })
    }

    fn local_files(&self) -> Vec<String> {
        self.files
            .get_or_init(|| working_tree_files(&self.root))
            .clone()
    }

    fn read_project(
        &self,
        project: &str,
        git_ref: Option<&str>,
        path: &str,
    ) -> Result<String, ReadError> {
        read_project(&self.root, project, git_ref, path).map_err(ReadError::from)
    }

    fn read_remote(&self, url: &str) -> Result<String, ReadError> {
        crate::remote::fetch(url).map_err(ReadError::from)
    }

    fn read_template(&self, name: &str) -> Result<String, ReadError> {
        self.gitlab.template(name).map_err(ReadError::from)
    }

    fn read_component(&self, component: &ComponentRef) -> Result<String, ReadError> {
        self.gitlab.component(component).map_err(ReadError::from)
    }

    fn component_facts(&self, component: &ComponentRef) -> Result<ComponentFacts, ReadError> {
        self.gitlab
            .component_facts(component)
            .map_err(ReadError::from)
    }
}

impl FileSource for CommitTree {
    fn read_local(&self, path: &str) -> Result<String, ReadError> {
        let rel = safe_relative(path).map_err(ReadError::from)?;
        show_file(&self.repo, &self.sha, rel).ok_or_else(|| {
            SourceError::NotAtCommit {
                path: rel.to_string(),
                commit: self.sha.clone(),
            }
            .into()
        })
    }

    fn local_files(&self) -> Vec<String> {
        self.files
            .get_or_init(|| files_at(&self.repo, &self.sha).unwrap_or_default())
            .clone()
    }

    fn read_project(
        &self,
        project: &str,
        git_ref: Option<&str>,
        path: &str,
    ) -> Result<String, ReadError> {
        read_project(&self.repo, project, git_ref, path).map_err(ReadError::from)
    }

    fn read_remote(&self, url: &str) -> Result<String, ReadError> {
        crate::remote::fetch(url).map_err(ReadError::from)
    }

    fn read_template(&self, name: &str) -> Result<String, ReadError> {
        self.gitlab.template(name).map_err(ReadError::from)
    }

    fn read_component(&self, component: &ComponentRef) -> Result<String, ReadError> {
        self.gitlab.component(component).map_err(ReadError::from)
    }

    fn component_facts(&self, component: &ComponentRef) -> Result<ComponentFacts, ReadError> {
        self.gitlab
            .component_facts(component)
            .map_err(ReadError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_paths_cannot_escape() {
        assert!(safe_relative("../x.yml").is_err());
        assert_eq!(safe_relative("/ci/a.yml").unwrap(), "ci/a.yml");
    }
}
