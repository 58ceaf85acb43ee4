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
    let base = loader.load().await;
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
