//! `include:template` and `include:component` from a GitLab instance:
//! `https://gitlab.com` by default, or the server named by `--gitlab-url`,
//! `GANTRY_GITLAB_URL` or `CI_SERVER_URL` (in that order). An access token
//! (`GANTRY_GITLAB_TOKEN` as `PRIVATE-TOKEN`, else a job's `CI_JOB_TOKEN`
//! as `JOB-TOKEN`) is sent when set. Everything fetched is cached on disk
//! like `include:remote` ([`crate::remote`]), so offline runs use the
//! cached copy; without one the error says what is missing.
//!
//! - Templates: `lib/gitlab/ci/templates/NAME` of the `gitlab-org/gitlab`
//!   project on the instance, at `GANTRY_TEMPLATE_REF` (default `master`).
//! - Components: `templates/NAME.yml` or `templates/NAME/template.yml` of
//!   the component project through the repository files API, at the
//!   version: `~latest` and partial versions (`1`, `1.2`) resolve to the
//!   highest matching release; anything else (a full version, a branch, a
//!   SHA) is used as the ref.

use crate::error::SourceError;
use gantry_config::load::{ComponentFacts, ComponentRef};
use std::path::PathBuf;

/// Where templates and components come from.
#[derive(Clone, Debug)]
pub struct GitlabInstance {
    /// Base URL without a trailing slash.
    pub url: String,
    token: Option<Token>,
    cache_root: PathBuf,
}

#[derive(Clone)]
enum Token {
    Private(String),
    Job(String),
}

impl std::fmt::Debug for Token {
    // Never print a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Private(_) => f.write_str("PRIVATE-TOKEN(..)"),
            Token::Job(_) => f.write_str("JOB-TOKEN(..)"),
        }
    }
}

/// The default instance.
pub const DEFAULT_URL: &str = "https://gitlab.com";

impl GitlabInstance {
    /// The instance named by `explicit` (`--gitlab-url`), else the
    /// environment, else gitlab.com; the token from the environment.
    pub fn from_env(explicit: Option<&str>) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let url = explicit
            .map(str::to_string)
            .or_else(|| env("GANTRY_GITLAB_URL"))
            .or_else(|| env("CI_SERVER_URL"))
            .unwrap_or_else(|| DEFAULT_URL.to_string());
        let token = env("GANTRY_GITLAB_TOKEN")
            .map(Token::Private)
            .or_else(|| env("CI_JOB_TOKEN").map(Token::Job));
        GitlabInstance {
            url: url.trim_end_matches('/').to_string(),
            token,
            cache_root: crate::remote::cache_dir(),
        }
    }

    /// An instance at `url` with no token, caching under `cache_root`.
    pub fn new(url: &str, cache_root: PathBuf) -> Self {
        GitlabInstance {
            url: url.trim_end_matches('/').to_string(),
            token: None,
            cache_root,
        }
    }

    /// Sends `token` as `PRIVATE-TOKEN`.
    pub fn with_private_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Token::Private(token.into()));
        self
    }

    /// Sends `token` as `JOB-TOKEN`.
    pub fn with_job_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Token::Job(token.into()));
        self
    }

    fn get(&self, url: &str) -> Result<String, SourceError> {
        let headers: Vec<(&str, &str)> = match &self.token {
            Some(Token::Private(t)) => vec![("PRIVATE-TOKEN", t.as_str())],
            Some(Token::Job(t)) => vec![("JOB-TOKEN", t.as_str())],
            None => Vec::new(),
        };
        crate::remote::fetch_with(url, &headers, &self.cache_root)
    }

    /// GitLab's CI/CD template `name` (`Jobs/Build.gitlab-ci.yml`).
    pub fn template(&self, name: &str) -> Result<String, SourceError> {
        if name.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(SourceError::LeavesProject(name.to_string()));
        }
        let git_ref = std::env::var("GANTRY_TEMPLATE_REF").unwrap_or_else(|_| "master".into());
        let url = format!(
            "{}/gitlab-org/gitlab/-/raw/{git_ref}/lib/gitlab/ci/templates/{name}",
            self.url
        );
        self.get(&url)
            .map_err(|e| self.unavailable(&format!("template `{name}`"), e))
    }

    /// The template of a component, at its resolved version.
    pub fn component(&self, c: &ComponentRef) -> Result<String, SourceError> {
        let what = format!("component `{}`", c.address());
        let version = self
            .resolve_version(&c.project, &c.version)
            .map_err(|e| self.unavailable(&what, e))?;
        let mut last = None;
        for path in c.template_paths() {
            let url = format!(
                "{}/api/v4/projects/{}/repository/files/{}/raw?ref={}",
                self.url,
                encode(&c.project),
                encode(&path),
                encode(&version)
            );
            match self.get(&url) {
                Ok(text) => return Ok(text),
                Err(e) => last = Some(e),
            }
        }
        Err(self.unavailable(
            &what,
            last.unwrap_or_else(|| SourceError::UnknownCommit(version.clone())),
        ))
    }

    /// `spec:component`'s `version` and `sha`: the release a version
    /// resolves to (`None` for a branch or a SHA) and its commit, from
    /// the commits API.
    pub fn component_facts(&self, c: &ComponentRef) -> Result<ComponentFacts, SourceError> {
        let what = format!("component `{}`", c.address());
        let resolved = self
            .resolve_version(&c.project, &c.version)
            .map_err(|e| self.unavailable(&what, e))?;
        let version = is_release_version(&resolved).then(|| resolved.clone());
        let sha = if is_full_sha(&resolved) {
            resolved
        } else {
            let url = format!(
                "{}/api/v4/projects/{}/repository/commits/{}",
                self.url,
                encode(&c.project),
                encode(&resolved)
            );
            let body = self.get(&url).map_err(|e| self.unavailable(&what, e))?;
            let commit: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| SourceError::Fetch {
                    url: url.clone(),
                    reason: format!("not a commit: {e}"),
                })?;
            commit
                .get("id")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| SourceError::Fetch {
                    url,
                    reason: "the commit has no `id`".into(),
                })?
        };
        Ok(ComponentFacts {
            version,
            sha: Some(sha),
        })
    }

    /// `~latest` and partial versions to the highest matching release tag.
    fn resolve_version(&self, project: &str, version: &str) -> Result<String, SourceError> {
        let wanted: Option<Vec<u64>> = if version == "~latest" {
            Some(Vec::new())
        } else {
            let parts: Option<Vec<u64>> = version.split('.').map(|p| p.parse().ok()).collect();
            parts.filter(|p| p.len() < 3)
        };
        let Some(prefix) = wanted else {
            return Ok(version.to_string());
        };
        let url = format!(
            "{}/api/v4/projects/{}/releases?per_page=100",
            self.url,
            encode(project)
        );
        let body = self.get(&url)?;
        let releases: Vec<serde_json::Value> =
            serde_json::from_str(&body).map_err(|e| SourceError::Fetch {
                url: url.clone(),
                reason: format!("not a list of releases: {e}"),
            })?;
        releases
            .iter()
            .filter_map(|r| r.get("tag_name")?.as_str())
            .filter_map(|tag| {
                let nums: Option<Vec<u64>> = tag
                    .trim_start_matches('v')
                    .split('.')
                    .map(|p| p.parse().ok())
                    .collect();
                nums.filter(|n| n.len() == 3 && n.starts_with(&prefix))
                    .map(|n| (n, tag.to_string()))
            })
            .max()
            .map(|(_, tag)| tag)
            .ok_or_else(|| SourceError::Fetch {
                url,
                reason: format!("no release matches version `{version}`"),
            })
    }

    fn unavailable(&self, what: &str, cause: SourceError) -> SourceError {
        SourceError::Gitlab {
            what: what.to_string(),
            instance: self.url.clone(),
            cause: cause.to_string(),
        }
    }
}

/// A full semantic version (`1.2.3`, optionally `v`-prefixed): what a
/// catalog release is tagged with.
fn is_release_version(tag: &str) -> bool {
    let parts: Vec<&str> = tag.trim_start_matches('v').split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A 40-character commit SHA.
fn is_full_sha(r: &str) -> bool {
    r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Percent-encoding for a path segment or query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
