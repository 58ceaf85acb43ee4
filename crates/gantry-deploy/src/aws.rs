//! AWS credentials and endpoints: the default provider chain, `--profile`, `--region`,
//! `--assume-role ARN` (one STS call, replacing the hand-written STS block seen in pipelines),
//! and `AWS_ENDPOINT_URL` (honoured by the SDK itself; `--endpoint-url` overrides it).

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;

use crate::DeployError;

/// How to reach AWS. Everything optional: the SDK's default chain fills the gaps.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    pub profile: Option<String>,
    pub region: Option<String>,
    /// Role to assume with the base credentials before any other call.
    pub assume_role: Option<String>,
    pub role_session_name: Option<String>,
    pub external_id: Option<String>,
    /// Overrides `AWS_ENDPOINT_URL`.
    pub endpoint_url: Option<String>,
    /// Static keys (ecs-deploy's `--access-key-id`/`--secret-access-key`); the chain otherwise.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// Resolves the configuration all AWS clients of one command share.
pub async fn load_config(opts: &AwsOptions) -> Result<SdkConfig, DeployError> {
    load_config_inner(opts, None).await
}

/// Like [`load_config`], with `region` when neither the options nor the SDK chain name one
/// (S3 answers from any region).
pub async fn load_config_with_default_region(
    opts: &AwsOptions,
    region: &str,
) -> Result<SdkConfig, DeployError> {
    load_config_inner(opts, Some(region)).await
}

async fn load_config_inner(
    opts: &AwsOptions,
    default_region: Option<&str>,
) -> Result<SdkConfig, DeployError> {
    validate(opts)?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(profile) = &opts.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &opts.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &opts.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let (Some(id), Some(secret)) = (&opts.access_key_id, &opts.secret_access_key) {
        loader =
            loader.credentials_provider(Credentials::new(id, secret, None, None, "gantry-static"));
    }
    let mut base = loader.load().await;
    if base.region().is_none()
        && let Some(r) = default_region
    {
        base = base
            .into_builder()
            .region(Region::new(r.to_string()))
            .build();
    }
    if base.region().is_none() {
        return Err(DeployError::Usage(
            "no AWS region: pass --region or set AWS_REGION / AWS_DEFAULT_REGION".into(),
        ));
    }
    let Some(role_arn) = &opts.assume_role else {
        return Ok(base);
    };
    let sts = aws_sdk_sts::Client::new(&base);
    let session = opts
        .role_session_name
        .clone()
        .unwrap_or_else(default_session_name);
    let mut req = sts
        .assume_role()
        .role_arn(role_arn)
        .role_session_name(session);
    if let Some(ext) = &opts.external_id {
        req = req.external_id(ext);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| DeployError::aws(&format!("AssumeRole {role_arn}"), e))?;
    let creds = resp.credentials().ok_or_else(|| {
        DeployError::Aws(format!("AssumeRole {role_arn} returned no credentials"))
    })?;
    let expiry = std::time::SystemTime::try_from(*creds.expiration()).ok();
    let assumed = Credentials::new(
        creds.access_key_id(),
        creds.secret_access_key(),
        Some(creds.session_token().to_string()),
        expiry,
        "gantry-assume-role",
    );
    Ok(base
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(assumed))
        .build())
}

/// Rejects malformed values before any AWS call: a role ARN must be an IAM role ARN, a region
/// a region name, an endpoint an http(s) URL.
pub fn validate(opts: &AwsOptions) -> Result<(), DeployError> {
    if let Some(arn) = &opts.assume_role {
        validate_role_arn(arn)?;
    }
    if let Some(r) = &opts.region
        && (r.is_empty()
            || !r
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    {
        return Err(DeployError::Usage(format!(
            "--region {r:?} is not a region name (e.g. eu-west-1)"
        )));
    }
    if let Some(u) = &opts.endpoint_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        return Err(DeployError::Usage(format!(
            "--endpoint-url {u:?}: expected an http:// or https:// URL"
        )));
    }
    if let Some(p) = &opts.profile
        && p.trim().is_empty()
    {
        return Err(DeployError::Usage("--profile is empty".into()));
    }
    Ok(())
}

/// `arn:PARTITION:iam::ACCOUNT:role/NAME`, with a 12-digit account.
pub fn validate_role_arn(arn: &str) -> Result<(), DeployError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && parts[5].strip_prefix("role/").is_some_and(|n| !n.is_empty());
    if ok {
        Ok(())
    } else {
        Err(DeployError::Usage(format!(
            "{arn:?} is not an IAM role ARN (expected arn:aws:iam::123456789012:role/NAME)"
        )))
    }
}

/// `gantry-<job>-<pipeline>` in a pipeline, `gantry-deploy` otherwise; STS allows [\w+=,.@-]{2,64}.
fn default_session_name() -> String {
    let job = std::env::var("CI_JOB_ID").unwrap_or_default();
    let raw = if job.is_empty() {
        "gantry-deploy".to_string()
    } else {
        format!("gantry-job-{job}")
    };
    raw.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(*c))
        .take(64)
        .collect()
}

/// The caller's account id (STS GetCallerIdentity).
pub async fn caller_account(cfg: &SdkConfig) -> Result<String, DeployError> {
    let resp = aws_sdk_sts::Client::new(cfg)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| DeployError::aws("GetCallerIdentity", e))?;
    resp.account()
        .map(str::to_string)
        .ok_or_else(|| DeployError::Aws("GetCallerIdentity returned no account".into()))
}

/// The account id an ARN belongs to (`arn:aws:ecs:REGION:ACCOUNT:...`).
pub fn arn_account(arn: &str) -> Option<&str> {
    arn.split(':').nth(4).filter(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_from_arn() {
        assert_eq!(
            arn_account("arn:aws:ecs:eu-west-1:222222222222:task-definition/web:3"),
            Some("222222222222")
        );
        assert_eq!(arn_account("web:3"), None);
        let name = default_session_name();
        assert!(name.len() >= 2 && name.len() <= 64);
    }
}
