//! The engine's typed errors: callers decide on the kind (a bad selection,
//! a missing commit, an unusable state directory), never on message text.

use std::path::PathBuf;

/// Why a pipeline run could not start or could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A selection or option names something the pipeline does not have.
    #[error(transparent)]
    Selection(#[from] SelectionError),
    /// The commit's sources could not be provided.
    #[error(transparent)]
    Sources(#[from] SourceError),
    /// The run store (`.gantry/`, or a database) failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl EngineError {
    /// Whether the error is the caller's input (a usage error) rather than
    /// a failure of the machine (I/O, git).
    pub fn is_usage(&self) -> bool {
        matches!(self, EngineError::Selection(_))
    }
}

/// A job or stage selection that does not match the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("no job named `{name}` in this pipeline{}", did_you_mean(suggestion.as_deref(), known))]
    UnknownJob {
        name: String,
        /// The closest job name, if one is close.
        suggestion: Option<String>,
        /// Every job of the pipeline (shown when no name is close).
        known: Vec<String>,
    },
    #[error("no stage `{name}` in this pipeline (stages: {})", stages.join(", "))]
    UnknownStage { name: String, stages: Vec<String> },
    #[error("no job selected")]
    NothingSelected,
    #[error("concurrency must be at least 1")]
    ZeroConcurrency,
}

fn did_you_mean(suggestion: Option<&str>, known: &[String]) -> String {
    match suggestion {
        Some(s) => format!("; did you mean `{s}`?"),
        None if known.len() <= 12 => format!(" (jobs: {})", known.join(", ")),
        None => format!(
            " (jobs: {}, and {} more; `gantry plan` lists them)",
            known[..12].join(", "),
            known.len() - 12
        ),
    }
}

/// Why the sources of a commit could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "{repo} has no commit yet: gantry run runs a commit (git commit first, or use --working-tree)"
    )]
    NoCommit { repo: PathBuf },
    #[error("`{rev}` is not a commit of {repo}")]
    UnknownCommit { repo: PathBuf, rev: String },
    #[error(
        "{path} is outside the repository {repo}: gantry run works on the repository that holds the configuration"
    )]
    OutsideRepository { path: PathBuf, repo: PathBuf },
    #[error("cannot run git: {0}")]
    Git(#[source] std::io::Error),
    #[error("git {command} failed: {stderr}")]
    GitFailed { command: String, stderr: String },
    #[error("cannot copy the sources to {path}: {source}")]
    Copy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A failure of the run store.
#[derive(Debug, thiserror::Error)]
#[error("{what} ({path}): {source}")]
pub struct StoreError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl StoreError {
    pub fn new(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError {
            what,
            path: path.into(),
            source,
        }
    }
}

/// The closest of `candidates` to `name` (edit distance at most a third of
/// its length, at least 2), for "did you mean".
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let names = ["build", "test", "deploy-prod"];
        assert_eq!(
            closest("biuld", names.iter().copied()).as_deref(),
            Some("build")
        );
        assert_eq!(closest("zzzzzz", names.iter().copied()), None);
    }
}

/// Why a trigger job's child pipeline could not be created (GitLab fails
/// the trigger job then).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChildPipelineError {
    /// The child's configuration is invalid (the diagnostics, rendered).
    #[error("the child pipeline's configuration is invalid: {0}")]
    Invalid(String),
    /// The artifact a dynamic child pipeline reads is not there.
    #[error(
        "the child pipeline's configuration `{path}` is not in the artifacts of `{job}`: {reason}"
    )]
    MissingArtifact {
        job: String,
        path: String,
        reason: String,
    },
    /// The child pipeline has no jobs (GitLab does not create it).
    #[error("the child pipeline has no jobs for this context")]
    Empty,
}
