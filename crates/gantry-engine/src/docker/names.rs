//! Pure naming helpers of the docker executor: GitLab's default service
//! aliases, container/network names, and the runner-side `$VAR` expansion
//! of image and service names.

use regex::Regex;
use std::sync::LazyLock;

/// A Docker image reference: `[registry[:port]/]path[:tag][@digest]`,
/// lower-case path components as in docker/distribution's `reference`.
static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    let component = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
    let domain_part = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let domain = format!(r"{domain_part}(?:\.{domain_part})*(?::[0-9]+)?");
    let name = format!(r"(?:{domain}/)?{component}(?:/{component})*");
    let pattern = format!(
        r"^({name})(?::([\w][\w.-]{{0,127}}))?(?:@([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}}))?$"
    );
    Regex::new(&pattern).expect("static reference pattern")
});

/// `registry[:port]` + `/path`: the port is dropped from aliases.
static NO_PORT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(.*?)(|:[0-9]+)(|/.*)$").expect("static pattern"));

/// GitLab's default aliases of a service image (gitlab-runner
/// `helpers/container/services.SplitNameAndVersion`): the name without tag
/// and registry port, with `/` → `__`, and the RFC 1123 variant `/` → `-`.
/// An invalid reference gets no default alias, as in the runner.
pub fn default_service_aliases(image: &str) -> Vec<String> {
    let Some(caps) = REFERENCE.captures(image) else {
        return Vec::new();
    };
    let without_version = caps.get(1).map_or("", |m| m.as_str());
    let Some(parts) = NO_PORT.captures(without_version) else {
        return Vec::new();
    };
    let service = format!(
        "{}{}",
        parts.get(1).map_or("", |m| m.as_str()),
        parts.get(3).map_or("", |m| m.as_str())
    );
    let alias = service.replace('/', "__");
    let alternative = service.replace('/', "-");
    let mut aliases = vec![alias.clone()];
    if alternative != alias {
        aliases.push(alternative);
    }
    aliases
}

/// The user's `alias:` (a comma-separated list is allowed), trimmed.
pub fn user_aliases(alias: Option<&str>) -> Vec<String> {
    alias
        .map(|a| {
            a.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A lower-case `[a-z0-9-]` slug, at most `max` bytes, for container names.
pub fn slug(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() >= max {
            break;
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("job");
    }
    out
}

/// The runner's expansion of image, service and alias names (Go's
/// `os.Expand` over the job variables, the last definition winning).
pub fn expand_runner_env(value: &str, env: &[(String, String)]) -> String {
    gantry_config::expand::expand_runner(value, &|name| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_aliases_follow_the_runner() {
        assert_eq!(
            default_service_aliases("tutum/wordpress:latest"),
            ["tutum__wordpress", "tutum-wordpress"]
        );
        assert_eq!(default_service_aliases("postgres:15"), ["postgres"]);
        assert_eq!(default_service_aliases("redis"), ["redis"]);
        assert_eq!(
            default_service_aliases("registry.example.com:5000/group/db:1.2"),
            [
                "registry.example.com__group__db",
                "registry.example.com-group-db"
            ]
        );
        assert_eq!(
            default_service_aliases("localhost/gantry-test-httpd:latest"),
            [
                "localhost__gantry-test-httpd",
                "localhost-gantry-test-httpd"
            ]
        );
        let digest = format!("mysql@sha256:{}", "a".repeat(64));
        assert_eq!(default_service_aliases(&digest), ["mysql"]);
        assert!(default_service_aliases("Not A Valid Ref").is_empty());
    }

    #[test]
    fn user_aliases_split_on_commas() {
        assert_eq!(user_aliases(Some("db, pg ,")), ["db", "pg"]);
        assert!(user_aliases(None).is_empty());
    }

    #[test]
    fn slug_is_container_name_safe() {
        assert_eq!(slug("deploy: [aws, eu]", 40), "deploy-aws-eu");
        assert_eq!(slug("test 1/3", 40), "test-1-3");
        assert_eq!(slug("!!!", 40), "job");
        assert_eq!(slug("abcdef", 3), "abc");
    }

    #[test]
    fn expand_runner_env_is_os_expand() {
        let env = vec![
            ("TAG".to_string(), "1.2".to_string()),
            ("REG".to_string(), "localhost".to_string()),
        ];
        assert_eq!(
            expand_runner_env("$REG/app:${TAG}", &env),
            "localhost/app:1.2"
        );
        assert_eq!(expand_runner_env("app:$MISSING", &env), "app:");
        assert_eq!(expand_runner_env("$$ and $", &env), "$ and $");
    }
}
