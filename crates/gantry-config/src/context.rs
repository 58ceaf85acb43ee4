//! The context a pipeline is planned for: the facts of the git repository,
//! the pipeline source, and the variables that follow from them (`CI_*`).

use indexmap::IndexMap;

/// Facts about the repository and the commit, gathered by the caller (the
/// CLI runs `git`). This crate does no I/O.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GitFacts {
    /// Full commit SHA (40 hex digits).
    pub sha: String,
    /// The commit before the push; all zeros when unknown.
    pub before_sha: String,
    /// Branch or tag name the pipeline runs for.
    pub ref_name: String,
    /// `ref_name` is a tag.
    pub is_tag: bool,
    /// Tag message, for annotated tags.
    pub tag_message: Option<String>,
    pub default_branch: String,
    /// `Name <email>`
    pub author: String,
    pub author_name: String,
    pub author_email: String,
    pub message: String,
    /// ISO 8601 commit time.
    pub timestamp: String,
    /// `group/project`, from the `origin` remote or the directory name.
    pub project_path: String,
    /// Absolute path of the repository root.
    pub project_dir: String,
    /// Web URL of the project derived from the remote, when there is one.
    pub project_url: Option<String>,
    /// Paths changed by the pipeline's commit range; `None` when there is no
    /// diff to compare (new branch, tag, schedule): `changes` then matches.
    pub changed_paths: Option<Vec<String>>,
    /// Every file of the repository at the commit, sorted.
    pub files: Vec<String>,
}

/// Everything rules and expressions are evaluated against.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Predefined pipeline variables, then `-v` overrides (later wins).
    pub variables: IndexMap<String, String>,
    /// See [`GitFacts::changed_paths`].
    pub changed_paths: Option<Vec<String>>,
    /// Repository files, sorted, for `exists:`.
    pub files: Vec<String>,
    /// The pipeline source: push, web, schedule, merge_request_event, ...
    pub source: String,
    /// The `-v KEY=VALUE` variables alone (also in `variables`). Like
    /// GitLab's pipeline variables they outrank YAML variables in rules.
    pub overrides: IndexMap<String, String>,
}

/// The commit SHA GitLab uses when there is no "before" commit.
const BLANK_SHA: &str = "0000000000000000000000000000000000000000";

/// GitLab's `Gitlab::Utils.slugify`: lowercase, everything but `[a-z0-9]`
/// replaced by `-` (one per character), cut to 63 characters, then leading
/// and trailing `-` removed. Used for `CI_COMMIT_REF_SLUG`,
/// `CI_PROJECT_PATH_SLUG` and `CI_JOB_NAME_SLUG`.
pub fn slugify(s: &str) -> String {
    let replaced: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    replaced.trim_matches('-').to_string()
}

/// `CI_COMMIT_TITLE` (Commit#full_title): the first line of the message.
fn commit_title(message: &str) -> &str {
    message.split('\n').next().unwrap_or("")
}

/// `CI_COMMIT_DESCRIPTION` (Commit#description): the message without its
/// first line; when the first line is longer than 100 characters, `…` and
/// the message from character 80 on.
fn commit_description(message: &str) -> String {
    let title_len = message.find('\n').map(|i| message[..i].chars().count());
    let long = match title_len {
        Some(len) => len > 100,
        None => message.chars().count() > 100,
    };
    if long {
        let rest: String = message.chars().skip(80).collect();
        return format!("…{rest}");
    }
    match message.split_once('\n') {
        Some((_, rest)) => rest.strip_suffix('\n').unwrap_or(rest).to_string(),
        None => String::new(),
    }
}

/// Server URL parts derived from the project's web URL, or a local default.
struct Server {
    url: String,
    protocol: String,
    host: String,
    port: String,
}

impl Server {
    fn from_project_url(project_url: Option<&str>) -> Server {
        let parsed = project_url.and_then(|u| {
            let (protocol, rest) = u.split_once("://")?;
            let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
            // Drop any `user@` part: it must never reach a variable.
            let authority = authority.rsplit('@').next().unwrap_or(authority);
            Some((protocol.to_string(), authority.to_string()))
        });
        let (protocol, authority) = parsed.unwrap_or_else(|| ("http".into(), "localhost".into()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                (h.to_string(), p.to_string())
            }
            _ => {
                let port = if protocol == "https" { "443" } else { "80" };
                (authority.clone(), port.to_string())
            }
        };
        Server {
            url: format!("{protocol}://{authority}"),
            protocol,
            host,
            port,
        }
    }

    /// `host` or `host:port` when the port is not the protocol's default.
    fn fqdn(&self) -> String {
        let default = (self.protocol == "https" && self.port == "443")
            || (self.protocol == "http" && self.port == "80");
        if default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn registry(&self) -> String {
        if self.host == "gitlab.com" {
            "registry.gitlab.com".into()
        } else if self.host == "localhost" || self.host.parse::<std::net::IpAddr>().is_ok() {
            format!("{}:5050", self.host)
        } else {
            format!("registry.{}", self.host)
        }
    }
}

/// The GitLab version whose semantics Gantry follows, for `CI_SERVER_VERSION*`.
const SERVER_VERSION: (u32, u32, u32) = (17, 5, 0);

impl Context {
    /// Builds the context of a pipeline from git facts: the predefined
    /// variables GitLab sets before creating a pipeline (see
    /// `gitlab-predefined-variables.md`), the merge-request ones when
    /// `source` is `merge_request_event`, then `overrides` (`-v KEY=VALUE`),
    /// which win. Values GitLab takes from its database (IDs, user) get
    /// fixed local values; an override replaces any of them, and the
    /// `CI_MERGE_REQUEST_*` overrides also feed the variables derived from
    /// them.
    pub fn new(facts: &GitFacts, source: &str, overrides: &[(String, String)]) -> Context {
        let over: IndexMap<String, String> = overrides.iter().cloned().collect();
        let mut vars: IndexMap<String, String> = IndexMap::new();
        let mut set = |k: &str, v: String| {
            vars.insert(k.to_string(), v);
        };
        let is_mr = source == "merge_request_event";
        let server = Server::from_project_url(facts.project_url.as_deref());

        // Project.
        let project_path = if facts.project_path.is_empty() {
            facts
                .project_dir
                .rsplit(['/', '\\'])
                .find(|s| !s.is_empty())
                .unwrap_or("project")
                .to_string()
        } else {
            facts.project_path.trim_matches('/').to_string()
        };
        let (namespace, project_name) = match project_path.rsplit_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (String::new(), project_path.clone()),
        };
        let root_namespace = namespace.split('/').next().unwrap_or("").to_string();
        let project_url = facts
            .project_url
            .clone()
            .unwrap_or_else(|| format!("{}/{}", server.url, project_path));
        let project_id = over
            .get("CI_PROJECT_ID")
            .cloned()
            .unwrap_or_else(|| "1".into());
        let pipeline_id = over
            .get("CI_PIPELINE_ID")
            .cloned()
            .unwrap_or_else(|| "1".into());
        let pipeline_iid = over
            .get("CI_PIPELINE_IID")
            .cloned()
            .unwrap_or_else(|| "1".into());

        set("CI", "true".into());
        set("GITLAB_CI", "true".into());
        set("CI_SERVER", "yes".into());
        set("CI_SERVER_NAME", "GitLab".into());
        set("CI_SERVER_URL", server.url.clone());
        set("CI_SERVER_PROTOCOL", server.protocol.clone());
        set("CI_SERVER_HOST", server.host.clone());
        set("CI_SERVER_PORT", server.port.clone());
        set("CI_SERVER_FQDN", server.fqdn());
        set("CI_SERVER_SHELL_SSH_HOST", server.host.clone());
        set("CI_SERVER_SHELL_SSH_PORT", "22".into());
        let (major, minor, patch) = SERVER_VERSION;
        set("CI_SERVER_VERSION", format!("{major}.{minor}.{patch}"));
        set("CI_SERVER_VERSION_MAJOR", major.to_string());
        set("CI_SERVER_VERSION_MINOR", minor.to_string());
        set("CI_SERVER_VERSION_PATCH", patch.to_string());
        set("CI_SERVER_REVISION", String::new());
        set("CI_API_V4_URL", format!("{}/api/v4", server.url));
        set("CI_API_GRAPHQL_URL", format!("{}/api/graphql", server.url));
        set("CI_TEMPLATE_REGISTRY_HOST", "registry.gitlab.com".into());

        set("CI_PROJECT_ID", project_id.clone());
        set("CI_PROJECT_NAME", project_name.clone());
        set("CI_PROJECT_TITLE", project_name.clone());
        set("CI_PROJECT_PATH", project_path.clone());
        set("CI_PROJECT_PATH_SLUG", slugify(&project_path));
        set("CI_PROJECT_NAMESPACE", namespace.clone());
        set("CI_PROJECT_NAMESPACE_ID", "1".into());
        set("CI_PROJECT_ROOT_NAMESPACE", root_namespace);
        set("CI_PROJECT_URL", project_url.clone());
        set("CI_PROJECT_VISIBILITY", "private".into());
        set("CI_PROJECT_DIR", facts.project_dir.clone());
        set("CI_CONFIG_PATH", ".gitlab-ci.yml".into());
        set("CI_DEFAULT_BRANCH", facts.default_branch.clone());
        let registry = server.registry();
        set(
            "CI_REGISTRY_IMAGE",
            format!("{registry}/{}", project_path.to_lowercase()),
        );
        set("CI_REGISTRY", registry);

        // Commit and ref.
        set("CI_COMMIT_SHA", facts.sha.clone());
        set("CI_COMMIT_SHORT_SHA", facts.sha.chars().take(8).collect());
        let before = if is_mr || facts.before_sha.is_empty() {
            BLANK_SHA.to_string()
        } else {
            facts.before_sha.clone()
        };
        set("CI_COMMIT_BEFORE_SHA", before);
        set("CI_COMMIT_REF_NAME", facts.ref_name.clone());
        set("CI_COMMIT_REF_SLUG", slugify(&facts.ref_name));
        if facts.is_tag {
            set("CI_COMMIT_TAG", facts.ref_name.clone());
            if let Some(msg) = &facts.tag_message {
                set("CI_COMMIT_TAG_MESSAGE", msg.clone());
            }
        } else if !is_mr {
            set("CI_COMMIT_BRANCH", facts.ref_name.clone());
        }
        let protected = !is_mr && !facts.is_tag && facts.ref_name == facts.default_branch;
        set("CI_COMMIT_REF_PROTECTED", protected.to_string());
        set("CI_COMMIT_TITLE", commit_title(&facts.message).to_string());
        set("CI_COMMIT_MESSAGE", facts.message.clone());
        set("CI_COMMIT_DESCRIPTION", commit_description(&facts.message));
        set("CI_COMMIT_AUTHOR", facts.author.clone());
        set("CI_COMMIT_TIMESTAMP", facts.timestamp.clone());

        // Pipeline.
        set("CI_PIPELINE_SOURCE", source.to_string());
        set("CI_PIPELINE_ID", pipeline_id.clone());
        set("CI_PIPELINE_IID", pipeline_iid);
        set(
            "CI_PIPELINE_URL",
            format!("{project_url}/-/pipelines/{pipeline_id}"),
        );
        if source == "trigger" || source == "pipeline" || source == "parent_pipeline" {
            set("CI_PIPELINE_TRIGGERED", "true".into());
        }

        // The user who started the pipeline: locally, the commit author.
        let login = facts
            .author_email
            .split('@')
            .next()
            .unwrap_or("")
            .to_string();
        set("GITLAB_USER_ID", "1".into());
        set("GITLAB_USER_NAME", facts.author_name.clone());
        set("GITLAB_USER_EMAIL", facts.author_email.clone());
        set("GITLAB_USER_LOGIN", login);

        if is_mr {
            let get = |k: &str, default: String| over.get(k).cloned().unwrap_or(default);
            let iid = get("CI_MERGE_REQUEST_IID", "1".into());
            let source_branch = get(
                "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME",
                facts.ref_name.clone(),
            );
            let target_branch = get(
                "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
                facts.default_branch.clone(),
            );
            set(
                "CI_MERGE_REQUEST_ID",
                get("CI_MERGE_REQUEST_ID", iid.clone()),
            );
            set("CI_MERGE_REQUEST_IID", iid.clone());
            set(
                "CI_MERGE_REQUEST_TITLE",
                commit_title(&facts.message).to_string(),
            );
            set(
                "CI_MERGE_REQUEST_DESCRIPTION",
                commit_description(&facts.message),
            );
            set("CI_MERGE_REQUEST_EVENT_TYPE", "detached".into());
            set(
                "CI_MERGE_REQUEST_REF_PATH",
                format!("refs/merge-requests/{iid}/head"),
            );
            set("CI_MERGE_REQUEST_PROJECT_ID", project_id.clone());
            set("CI_MERGE_REQUEST_PROJECT_PATH", project_path.clone());
            set("CI_MERGE_REQUEST_PROJECT_URL", project_url.clone());
            set("CI_MERGE_REQUEST_SOURCE_PROJECT_ID", project_id);
            set("CI_MERGE_REQUEST_SOURCE_PROJECT_PATH", project_path.clone());
            set("CI_MERGE_REQUEST_SOURCE_PROJECT_URL", project_url);
            set(
                "CI_MERGE_REQUEST_SOURCE_BRANCH_PROTECTED",
                (source_branch == facts.default_branch).to_string(),
            );
            set(
                "CI_MERGE_REQUEST_TARGET_BRANCH_PROTECTED",
                (target_branch == facts.default_branch).to_string(),
            );
            set("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", source_branch);
            set("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", target_branch);
            // Empty in (detached) merge request pipelines, as in GitLab.
            set("CI_MERGE_REQUEST_SOURCE_BRANCH_SHA", String::new());
            set("CI_MERGE_REQUEST_TARGET_BRANCH_SHA", String::new());
            let base = if facts.before_sha.is_empty() {
                BLANK_SHA.to_string()
            } else {
                facts.before_sha.clone()
            };
            set("CI_MERGE_REQUEST_DIFF_BASE_SHA", base);
            set("CI_MERGE_REQUEST_SQUASH_ON_MERGE", "false".into());
            set("CI_OPEN_MERGE_REQUESTS", format!("{project_path}!{iid}"));
        }

        for (k, v) in &over {
            set(k, v.clone());
        }

        let mut files = facts.files.clone();
        if !files.is_sorted() {
            files.sort();
        }
        Context {
            variables: vars,
            changed_paths: facts.changed_paths.clone(),
            files,
            source: source.to_string(),
            overrides: over,
        }
    }
}
