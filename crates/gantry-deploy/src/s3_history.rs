//! `s3://BUCKET/PREFIX`: the deployment history as one S3 object per target
//! (`PREFIX/<target>.json`), so every runner of a team sees the same known-good record.
//!
//! Writes are conditional: `If-Match: <etag>` when replacing, `If-None-Match: *` when creating.
//! A `412 Precondition Failed` (or `409 ConditionalRequestConflict`) means another writer got
//! there first; [`crate::history::CasHistoryStore`] then reads again and retries, so concurrent
//! writers never lose a record.
//!
//! Credentials, region and endpoint come from the command's AWS options without
//! `--assume-role`: the history belongs to the team's account, not to the deploy target's.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;

use crate::DeployError;
use crate::history::{CasBackend, PutResult};

/// An S3 bucket and key prefix holding history documents.
#[derive(Debug, Clone)]
pub struct S3Backend {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3Backend {
    /// A backend for `bucket`/`prefix` with the command's credentials (see the module docs).
    pub async fn connect(
        bucket: &str,
        prefix: &str,
        aws: &crate::aws::AwsOptions,
    ) -> Result<Self, DeployError> {
        let mut opts = aws.clone();
        opts.assume_role = None;
        let cfg = crate::aws::load_config_with_default_region(&opts, "us-east-1").await?;
        let mut s3 = aws_sdk_s3::config::Builder::from(&cfg);
        // A custom endpoint (moto, MinIO) does not resolve BUCKET.host names.
        if cfg.endpoint_url().is_some() {
            s3 = s3.force_path_style(true);
        }
        Ok(S3Backend {
            client: Client::from_conf(s3.build()),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }
}

fn s3_error<E>(what: &str, err: aws_sdk_s3::error::SdkError<E>) -> DeployError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    let text = match err.code() {
        Some(code) => format!(
            "{code}{}",
            err.message().map(|m| format!(": {m}")).unwrap_or_default()
        ),
        None => {
            let mut msg = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                let t = s.to_string();
                if !msg.contains(&t) {
                    msg.push_str(&format!(": {t}"));
                }
                source = s.source();
            }
            msg
        }
    };
    DeployError::History(format!("{what} failed: {text}"))
}

#[async_trait::async_trait]
impl CasBackend for S3Backend {
    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, DeployError> {
        let full = self.full_key(key);
        let resp = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await;
        let obj = match resp {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                if e.code() == Some("NoSuchBucket") {
                    return Err(s3_error(&format!("GetObject s3://{}/{full}", self.bucket), e));
                }
                return Ok(None);
            }
            Err(e) => return Err(s3_error(&format!("GetObject s3://{}/{full}", self.bucket), e)),
        };
        let etag = obj.e_tag().unwrap_or_default().to_string();
        let body = obj
            .body
            .collect()
            .await
            .map_err(|e| DeployError::History(format!("reading s3://{}/{full}: {e}", self.bucket)))?
            .into_bytes()
            .to_vec();
        Ok(Some((body, etag)))
    }

    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        expected: Option<&str>,
    ) -> Result<PutResult, DeployError> {
        let full = self.full_key(key);
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&full)
            .content_type("application/json")
            .body(body.into());
        req = match expected {
            Some(tag) => req.if_match(tag),
            None => req.if_none_match("*"),
        };
        match req.send().await {
            Ok(_) => Ok(PutResult::Written),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                let code = e.code();
                if status == Some(412)
                    || status == Some(409)
                    || code == Some("PreconditionFailed")
                    || code == Some("ConditionalRequestConflict")
                {
                    Ok(PutResult::Conflict)
                } else {
                    Err(s3_error(&format!("PutObject s3://{}/{full}", self.bucket), e))
                }
            }
        }
    }

    async fn keys(&self) -> Result<Vec<String>, DeployError> {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| s3_error(&format!("ListObjectsV2 s3://{}/{prefix}", self.bucket), e))?;
            for o in resp.contents() {
                if let Some(k) = o.key().and_then(|k| k.strip_prefix(&prefix))
                    && k.ends_with(".json")
                    && !k.contains('/')
                {
                    keys.push(k.to_string());
                }
            }
            token = resp.next_continuation_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        Ok(keys)
    }
}
