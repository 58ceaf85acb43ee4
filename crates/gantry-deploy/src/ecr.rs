//! `gantry registry login ecr`: an ECR authorization token, stored for the local container
//! engine's clients (the Docker/Podman `auths` file) or printed on request. The token never
//! appears in log lines.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::DeployError;

/// Credentials for one registry. `Debug` masks the password.
#[derive(Clone, PartialEq)]
pub struct RegistryCredentials {
    /// Host name, without scheme.
    pub registry: String,
    pub username: String,
    pub password: String,
    pub expires_at: Option<String>,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// GetAuthorizationToken, decoded (`base64("AWS:password")`).
pub async fn ecr_credentials(
    client: &aws_sdk_ecr::Client,
    registry_ids: &[String],
) -> Result<Vec<RegistryCredentials>, DeployError> {
    let mut req = client.get_authorization_token();
    if !registry_ids.is_empty() {
        #[allow(deprecated)]
        {
            req = req.set_registry_ids(Some(registry_ids.to_vec()));
        }
    }
    let resp = req
        .send()
        .await
        .map_err(|e| DeployError::aws("ECR GetAuthorizationToken", e))?;
    let mut out = Vec::new();
    for d in resp.authorization_data() {
        let token = d.authorization_token().unwrap_or_default();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                DeployError::Aws(
                    "ECR returned an authorization token that is not base64 user:password".into(),
                )
            })?;
        let (user, pass) = decoded.split_once(':').ok_or_else(|| {
            DeployError::Aws("ECR authorization token has no user:password".into())
        })?;
        let endpoint = d.proxy_endpoint().unwrap_or_default();
        let registry = endpoint
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        out.push(RegistryCredentials {
            registry,
            username: user.to_string(),
            password: pass.to_string(),
            expires_at: d.expires_at().map(|t| t.to_string()),
        });
    }
    if out.is_empty() {
        return Err(DeployError::Aws(
            "ECR GetAuthorizationToken returned no authorization data".into(),
        ));
    }
    Ok(out)
}

/// The auth file to write: `--auth-file`, else `REGISTRY_AUTH_FILE` (Podman), else
/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (read by Docker and Podman).
pub fn default_auth_file() -> PathBuf {
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("config.json");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".docker").join("config.json")
}

/// Merges the credentials into the `auths` map of a Docker/Podman auth file, keeping all other
/// content. The file is created with mode 0600.
pub fn store_credentials(path: &Path, creds: &RegistryCredentials) -> Result<(), DeployError> {
    let err = |what: &str, e: &dyn std::fmt::Display| {
        DeployError::Usage(format!("{what} {}: {e}", path.display()))
    };
    let mut doc: serde_json::Value = match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            serde_json::from_str(&text).map_err(|e| err("invalid JSON in", &e))?
        }
        Ok(_) => serde_json::json!({}),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(err("cannot read", &e)),
    };
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| err("not a JSON object:", &"auth file"))?;
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    let auths = auths
        .as_object_mut()
        .ok_or_else(|| err("`auths` is not an object in", &"auth file"))?;
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", creds.username, creds.password));
    auths.insert(creds.registry.clone(), serde_json::json!({ "auth": auth }));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err("cannot create the directory of", &e))?;
    }
    let body = serde_json::to_vec_pretty(&doc).map_err(|e| err("cannot encode", &e))?;
    write_private(path, &body).map_err(|e| err("cannot write", &e))
}

fn write_private(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(body)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_merges_and_debug_hides_the_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cfg/config.json");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(
            &path,
            r#"{"auths":{"other.io":{"auth":"eA=="}},"credsStore":"x"}"#,
        )
        .expect("write");
        let creds = RegistryCredentials {
            registry: "1.dkr.ecr.eu-west-1.amazonaws.com".into(),
            username: "AWS".into(),
            password: "s3cret-token".into(),
            expires_at: None,
        };
        store_credentials(&path, &creds).expect("store");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(doc["credsStore"], "x");
        assert_eq!(doc["auths"]["other.io"]["auth"], "eA==");
        let auth = doc["auths"]["1.dkr.ecr.eu-west-1.amazonaws.com"]["auth"]
            .as_str()
            .expect("auth");
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(auth)
                .expect("b64"),
            b"AWS:s3cret-token"
        );
        assert!(!format!("{creds:?}").contains("s3cret"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }
}
