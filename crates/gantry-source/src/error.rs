//! Typed errors of this crate. Their `Display` is what the user reads,
//! so each one says what was looked for and where.

use std::path::PathBuf;

/// Anything that went wrong finding or reading a file.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read the current directory: {0}")]
    CurrentDir(std::io::Error),
    #[error("{0}: no such file")]
    NoSuchFile(PathBuf),
    #[error("no .gitlab-ci.yml in {0} (give a file: `gantry lint FILE`)")]
    NoConfig(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{0}` leaves the project directory")]
    LeavesProject(String),
    #[error("cannot read local file `{path}`: {source}")]
    ReadLocal {
        path: String,
        source: std::io::Error,
    },
    #[error("`{path}` not found at commit `{commit}`")]
    NotAtCommit { path: String, commit: String },
    #[error("project `{project}` has no local clone (tried {}; set GANTRY_PROJECTS_DIR to the directory holding your clones)", list_paths(.tried))]
    NoClone {
        project: String,
        tried: Vec<PathBuf>,
    },
    #[error("`{path}` not found at ref `{git_ref}` of project `{project}`")]
    NotAtRef {
        project: String,
        git_ref: String,
        path: String,
    },
    #[error("cannot read `{path}` of project `{project}`: {source}")]
    ReadProject {
        project: String,
        path: String,
        source: std::io::Error,
    },
    #[error("`{0}` is not an http(s) URL")]
    NotHttp(String),
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error(
        "cannot read the {what} from {instance}: {cause} (offline runs use the copy cached by an earlier run; set --gitlab-url, GANTRY_GITLAB_URL or CI_SERVER_URL for another instance, GANTRY_GITLAB_TOKEN for a private project)"
    )]
    Gitlab {
        what: String,
        instance: String,
        cause: String,
    },
    #[error("`{0}` is not a commit of this repository")]
    UnknownCommit(String),
}

/// The kind the configuration loader decides on, with this error's text.
impl From<SourceError> for gantry_config::load::ReadError {
    fn from(e: SourceError) -> Self {
        use gantry_config::load::ReadError;
        let missing = |source: &std::io::Error| source.kind() == std::io::ErrorKind::NotFound;
        match &e {
            SourceError::NoSuchFile(_)
            | SourceError::NoConfig(_)
            | SourceError::NotAtCommit { .. }
            | SourceError::NotAtRef { .. }
            | SourceError::UnknownCommit(_) => ReadError::NotFound(e.to_string()),
            SourceError::Io { source, .. }
            | SourceError::ReadLocal { source, .. }
            | SourceError::ReadProject { source, .. }
                if missing(source) =>
            {
                ReadError::NotFound(e.to_string())
            }
            SourceError::LeavesProject(_) | SourceError::NotHttp(_) => {
                ReadError::Refused(e.to_string())
            }
            SourceError::NoClone { .. } => ReadError::Unavailable(e.to_string()),
            _ => ReadError::Failed(e.to_string()),
        }
    }
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
