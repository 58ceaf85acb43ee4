//! Finding the configuration file and the repository it belongs to.

use crate::error::SourceError;
use crate::git::toplevel;
use std::path::{Path, PathBuf};

/// Where the configuration file is, and the project it belongs to.
#[derive(Clone, Debug)]
pub struct Located {
    pub project_dir: PathBuf,
    /// Entry path relative to `project_dir`.
    pub entry: String,
}

/// Finds the configuration file (`file`, or `.gitlab-ci.yml` at the root
/// of the repository holding the current directory) and its repository root.
pub fn locate(file: Option<&Path>) -> Result<Located, SourceError> {
    let cwd = std::env::current_dir().map_err(SourceError::CurrentDir)?;
    let file = match file {
        Some(f) => {
            let abs = if f.is_absolute() {
                f.to_path_buf()
            } else {
                cwd.join(f)
            };
            if !abs.is_file() {
                return Err(SourceError::NoSuchFile(f.to_path_buf()));
            }
            abs
        }
        None => {
            let root = toplevel(&cwd).unwrap_or(cwd.clone());
            let f = root.join(".gitlab-ci.yml");
            if !f.is_file() {
                return Err(SourceError::NoConfig(root));
            }
            f
        }
    };
    let file = file.canonicalize().map_err(|source| SourceError::Io {
        path: file.clone(),
        source,
    })?;
    let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
    let project_dir = toplevel(&dir).unwrap_or(dir);
    let project_dir = project_dir.canonicalize().unwrap_or(project_dir);
    let entry = file
        .strip_prefix(&project_dir)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| file.to_string_lossy().into_owned());
    Ok(Located { project_dir, entry })
}
