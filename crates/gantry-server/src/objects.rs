//! One storage trait for logs, artifacts and caches: the `object_store`
//! crate over a local directory (default, `DATA/objects`) or S3
//! (`--objects s3://BUCKET/PREFIX`; `AWS_ENDPOINT_URL` reaches moto).

use crate::error::ObjectError;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::path::Path;
use std::sync::Arc;

/// Where blobs live.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// For messages: `file:///…` or `s3://bucket/prefix`.
    pub description: String,
}

impl Objects {
    /// `spec` is `s3://BUCKET[/PREFIX]`; `None` keeps objects in `DATA/objects`.
    pub fn open(spec: Option<&str>, data_dir: &Path) -> Result<Objects, ObjectError> {
        match spec {
            None => {
                let dir = data_dir.join("objects");
                std::fs::create_dir_all(&dir).map_err(|e| ObjectError::Url {
                    url: dir.display().to_string(),
                    reason: e.to_string(),
                })?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
                Ok(Objects {
                    store: Arc::new(store),
                    prefix: String::new(),
                    description: format!("file://{}", dir.display()),
                })
            }
            Some(url) if url.starts_with("s3://") => {
                let rest = &url["s3://".len()..];
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(ObjectError::Url {
                        url: url.into(),
                        reason: "no bucket name (use s3://BUCKET/PREFIX)".into(),
                    });
                }
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket);
                if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                    builder = builder
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_endpoint(endpoint)
                        .with_virtual_hosted_style_request(false);
                }
                if std::env::var("AWS_REGION").is_err()
                    && let Ok(region) = std::env::var("AWS_DEFAULT_REGION")
                {
                    builder = builder.with_region(region);
                }
                let store = builder.build()?;
                Ok(Objects {
                    store: Arc::new(store),
                    prefix: prefix.trim_matches('/').to_string(),
                    description: url.to_string(),
                })
            }
            Some(other) => Err(ObjectError::Url {
                url: other.into(),
                reason: "unsupported scheme (use s3://BUCKET/PREFIX, or leave --objects out for local disk)".into(),
            }),
        }
    }

    fn path(&self, key: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{}/{key}", self.prefix))
        }
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        self.store
            .put(&self.path(key), PutPayload::from(bytes))
            .await?;
        Ok(())
    }

    /// The object, or `None` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, ObjectError> {
        match self.store.get(&self.path(key)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The object as a stream of chunks (its size first), or `None` when
    /// there is none: large blobs are sent on without being held in memory.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<Option<(u64, BoxStream<'static, Result<Bytes, ObjectError>>)>, ObjectError> {
        match self.store.get(&self.path(key)).await {
            Ok(r) => {
                let size = r.meta.size;
                Ok(Some((
                    size,
                    r.into_stream().map_err(ObjectError::from).boxed(),
                )))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Keys under `prefix` (relative to this store), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ObjectError> {
        let base = self.path(prefix);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut out: Vec<(String, u64)> = self
            .store
            .list(Some(&base))
            .map_ok(|m| (m.location.as_ref()[strip..].to_string(), m.size))
            .try_collect()
            .await?;
        out.sort();
        Ok(out)
    }

    /// Keys under `prefix` with when each was last written (milliseconds
    /// since the epoch), unsorted.
    pub async fn list_modified(&self, prefix: &str) -> Result<Vec<(String, i64)>, ObjectError> {
        let base = self.path(prefix);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        Ok(self
            .store
            .list(Some(&base))
            .map_ok(|m| {
                (
                    m.location.as_ref()[strip..].to_string(),
                    m.last_modified.timestamp_millis(),
                )
            })
            .try_collect()
            .await?)
    }

    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
