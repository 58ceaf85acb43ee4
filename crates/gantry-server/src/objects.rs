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

/// The part size of multipart uploads (S3's minimum is 5 MiB).
pub const PART: usize = 8 << 20;

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

    /// Stores the file at `file` as `key` without holding it in memory:
    /// a multipart upload of [`PART`]-sized parts (S3's parts, or a
    /// temporary file renamed into place on local disk); small files in
    /// one request.
    pub async fn put_file(&self, key: &str, file: &Path) -> Result<(), ObjectError> {
        use tokio::io::AsyncReadExt as _;
        let io = |e: std::io::Error| {
            ObjectError::from(object_store::Error::Generic {
                store: "upload",
                source: Box::new(e),
            })
        };
        let mut reader = tokio::fs::File::open(file).await.map_err(io)?;
        let len = reader.metadata().await.map_err(io)?.len();
        if len <= PART as u64 {
            let mut bytes = Vec::with_capacity(len as usize);
            reader.read_to_end(&mut bytes).await.map_err(io)?;
            return self.put(key, Bytes::from(bytes)).await;
        }
        let upload = self.store.put_multipart(&self.path(key)).await?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io(e));
                }
            };
            if n == 0 {
                break;
            }
            // At most two parts in flight: memory stays a few parts.
            if let Err(e) = writer.wait_for_capacity(2).await {
                let _ = writer.abort().await;
                return Err(e.into());
            }
            writer.write(&buf[..n]);
        }
        writer.finish().await?;
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
