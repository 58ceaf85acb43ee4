//! Caches shared by every runner through the server: the cache half of the
//! engine's [`gantry_engine::ports::BlobStore`] for a runner. The engine
//! decides everything about `cache:` (keys, `key:files`, `fallback_keys`,
//! `policy`, `when`, what to archive); this only moves archives: downloaded
//! from the server when the engine asks for a key, uploaded when it commits
//! one (`GET`/`PUT /api/v4/jobs/:id/cache/:key` with the job token). The
//! server keeps them in its one object store (local disk or S3).
//!
//! Expiry (`gantry serve --cache-max-age`): a save rewrites the archive, so
//! its modification time is its last save; a restore is noted in
//! `cache_uses` by [`CacheUses::restored`], at most once per key in a
//! twentieth of the maximum age (and at most hourly), so a busy key costs
//! one small write now and then rather than one per job. The sweeper
//! ([`crate::sweeper`]) deletes archives whose last save and last noted
//! restore are both older than the maximum age.
//!
//! Uploads are spooled to a file in `DATA/uploads` (checked there as a zip
//! archive) and sent on to the object store in parts, never held in the
//! server's memory ([`receive`]).

use crate::app::Shared;
use gantry_engine::error::StoreError;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::io::AsyncWriteExt;

/// Restores noted lately by this server (so most restores write nothing),
/// and when it last swept caches.
#[derive(Default)]
pub struct CacheUses {
    noted: Mutex<HashMap<String, i64>>,
    last_sweep: AtomicI64,
}

/// How far apart (milliseconds) the uses of one cache are noted, and
/// caches are swept, for a maximum age.
pub fn resolution_ms(max_age: std::time::Duration) -> i64 {
    (max_age.as_millis() as i64 / 20).clamp(1, 3_600_000)
}

impl CacheUses {
    /// Notes that the archive `object` was restored at `now` (in
    /// milliseconds); a store error is only printed (expiry then errs
    /// towards deleting a cache early, which costs one rebuild).
    pub async fn restored(&self, app: &Shared, object: &str, now: i64) {
        let Some(max_age) = app.config.cache_max_age else {
            return;
        };
        let resolution = resolution_ms(max_age);
        {
            let mut noted = self.noted.lock().expect("cache uses");
            if noted.get(object).is_some_and(|&at| now - at < resolution) {
                return;
            }
            if noted.len() > 100_000 {
                noted.clear();
            }
            noted.insert(object.to_string(), now);
        }
        let _w = app.store.db.write_lock().await;
        let written = sqlx::query(
            "INSERT INTO cache_uses (object, used_at) VALUES ($1, $2) \
             ON CONFLICT (object) DO UPDATE SET used_at = excluded.used_at \
             WHERE cache_uses.used_at < excluded.used_at",
        )
        .bind(object)
        .bind(now)
        .execute(&app.store.db.pool)
        .await;
        if let Err(e) = written {
            self.noted.lock().expect("cache uses").remove(object);
            eprintln!("gantry serve: cannot note a cache restore: {e}");
        }
    }

    /// Whether a cache sweep is due at `now` (and, if so, claims it).
    pub fn sweep_due(&self, max_age: std::time::Duration, now: i64) -> bool {
        let last = self.last_sweep.load(Ordering::Relaxed);
        now - last >= resolution_ms(max_age)
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// A spooled upload, deleted when dropped (a crash leaves it to the
/// clean-up at the next start, [`clean_uploads`]).
struct Spooled(PathBuf);

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn uploads_dir(app: &Shared) -> PathBuf {
    app.config.data_dir.join("uploads")
}

/// Deletes uploads a killed server left half-received.
pub fn clean_uploads(data_dir: &Path) {
    let _ = std::fs::remove_dir_all(data_dir.join("uploads"));
}

/// Stores the cache archive a job uploads in `body` as `object`: spooled
/// to disk, refused unless it is a zip archive whose entries stay inside
/// the job's directory (or larger than [`crate::api::MAX_BODY`]), then
/// streamed to the object store.
pub async fn receive(
    app: &Shared,
    object: &str,
    body: axum::body::Body,
) -> Result<(), crate::error::ApiError> {
    use crate::error::ApiError;
    use futures_util::StreamExt as _;
    let internal = |what: &str, e: std::io::Error| {
        ApiError::Objects(crate::error::ObjectError::from(
            object_store::Error::Generic {
                store: "upload spool",
                source: format!("{what}: {e}").into(),
            },
        ))
    };
    let dir = uploads_dir(app);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| internal("cannot create the upload directory", e))?;
    let mut name = [0u8; 16];
    crate::crypto::fill_random(&mut name);
    let spooled = Spooled(dir.join(format!("{}.zip", hex::encode(name))));
    let mut file = tokio::fs::File::create(&spooled.0)
        .await
        .map_err(|e| internal("cannot spool the upload", e))?;
    let mut stream = body.into_data_stream();
    let mut size = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::BadRequest(format!("the cache archive was not received whole: {e}"))
        })?;
        size += chunk.len();
        if size > crate::api::MAX_BODY {
            return Err(ApiError::BadRequest(format!(
                "cache archive refused: larger than {} MiB",
                crate::api::MAX_BODY >> 20
            )));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| internal("cannot spool the upload", e))?;
    }
    file.flush()
        .await
        .map_err(|e| internal("cannot spool the upload", e))?;
    drop(file);
    let path = spooled.0.clone();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        crate::api::runner::check_archive_in(std::io::BufReader::new(file))
    })
    .await
    .map_err(|e| internal("the archive check stopped", std::io::Error::other(e)))?
    .map_err(|e| ApiError::BadRequest(format!("cache archive refused: {e}")))?;
    app.objects.put_file(object, &spooled.0).await?;
    Ok(())
}

/// One job attempt's view of the shared caches.
pub struct ServerCaches {
    pub(crate) http: reqwest::Client,
    /// The server's URL, without a trailing `/`.
    pub(crate) url: String,
    pub(crate) job_id: i64,
    pub(crate) job_token: String,
    /// This attempt's own directory for downloaded and staged archives.
    pub(crate) dir: PathBuf,
    /// Warnings for the job's log (they name no key: a key may hold a secret).
    pub(crate) notes: tokio::sync::mpsc::UnboundedSender<String>,
}

/// A cache key as one URL path segment: everything but letters, digits,
/// `-` and `_` percent-encoded (`.` too, so `..` is no path step).
pub fn key_segment(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs `fut` to completion from the engine's synchronous port, without
/// stalling the runtime's other tasks.
fn wait<T: Send>(fut: impl Future<Output = T> + Send) -> Result<T, String> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(fut)))
        }
        // A single-threaded runtime cannot lend its thread: use another one.
        _ => std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| rt.block_on(fut))
                    .map_err(|e| format!("cannot start a runtime: {e}"))
            })
            .join()
            .unwrap_or_else(|_| Err("the cache transfer thread stopped".into()))
        }),
    }
}

impl ServerCaches {
    fn endpoint(&self, key: &str) -> String {
        format!(
            "{}/api/v4/jobs/{}/cache/{}",
            self.url,
            self.job_id,
            key_segment(key)
        )
    }

    /// Named by the key's digest: a key may hold a secret, a path is shown.
    fn local(&self, key: &str) -> PathBuf {
        use sha2::Digest as _;
        self.dir
            .join(format!("{}.zip", hex::encode(sha2::Sha256::digest(key))))
    }

    fn note(&self, line: String) {
        let _ = self.notes.send(line);
    }

    /// A fresh client for a thread of its own (a pooled connection belongs
    /// to the runtime that opened it).
    fn client(&self) -> reqwest::Client {
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                self.http.clone()
            }
            _ => reqwest::Client::new(),
        }
    }

    /// The archive of `key` downloaded from the server, or `None` when the
    /// server has none (or cannot be read: the job goes on without it).
    pub fn path(&self, key: &str) -> Option<PathBuf> {
        let dest = self.local(key);
        let url = self.endpoint(key);
        let http = self.client();
        let token = self.job_token.clone();
        let got = wait(async {
            let mut resp = http
                .get(&url)
                .header("JOB-TOKEN", &token)
                .send()
                .await
                .map_err(|e| e.without_url().to_string())?;
            match resp.status().as_u16() {
                200 => {}
                404 => return Ok(false),
                status => return Err(format!("HTTP {status}")),
            }
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let mut file = tokio::fs::File::create(&dest)
                .await
                .map_err(|e| e.to_string())?;
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| e.without_url().to_string())?
            {
                file.write_all(&chunk).await.map_err(|e| e.to_string())?;
            }
            file.flush().await.map_err(|e| e.to_string())?;
            Ok(true)
        })
        .and_then(|r| r);
        match got {
            Ok(true) => Some(dest),
            Ok(false) => None,
            Err(e) => {
                let _ = std::fs::remove_file(&dest);
                self.note(format!(
                    "WARNING: a cache could not be downloaded from the server: {e}"
                ));
                None
            }
        }
    }

    /// Where the engine writes the archive of `key`.
    pub fn staging(&self, key: &str) -> PathBuf {
        let path = self.local(key);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        path
    }

    /// Uploads the written archive of `key` to the server.
    pub fn commit(&self, key: &str, staged: &Path) -> Result<(), StoreError> {
        let url = self.endpoint(key);
        let http = self.client();
        let token = self.job_token.clone();
        let path = staged.to_path_buf();
        let sent = wait(async {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| e.to_string())?;
            let len = file.metadata().await.map_err(|e| e.to_string())?.len();
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
            let resp = http
                .put(&url)
                .header("JOB-TOKEN", &token)
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(body)
                .send()
                .await
                .map_err(|e| e.without_url().to_string())?;
            if resp.status().is_success() {
                Ok(())
            } else {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                Err(format!(
                    "the server answered HTTP {status}: {}",
                    text.trim()
                ))
            }
        })
        .and_then(|r| r);
        sent.map_err(|e| {
            StoreError::new(
                "cannot upload the cache archive to the server",
                staged,
                std::io::Error::other(e),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::key_segment;

    #[test]
    fn a_key_is_one_path_segment_that_cannot_step_up() {
        assert_eq!(key_segment("deps-main_1"), "deps-main_1");
        assert_eq!(key_segment(".."), "%2E%2E");
        assert_eq!(key_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(key_segment("é"), "%C3%A9");
    }
}
