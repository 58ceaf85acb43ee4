//! `include:remote` over HTTP(S), cached on disk. A fresh copy (younger
//! than `GANTRY_REMOTE_TTL` seconds, default one hour) is used without a
//! request; when the network fails a stale copy is used, with a warning.

use crate::error::SourceError;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// The cache directory: `GANTRY_CACHE_DIR`, else `$XDG_CACHE_HOME/gantry`,
/// else `~/.cache/gantry`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("GANTRY_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("gantry")
}

/// The body at `url`, from the cache when fresh.
pub fn fetch(url: &str) -> Result<String, SourceError> {
    fetch_with(url, &[], &cache_dir())
}

/// [`fetch`] with request headers (an access token: never part of the
/// cache key, a log or an error) and a cache directory.
pub fn fetch_with(
    url: &str,
    headers: &[(&str, &str)],
    cache_root: &std::path::Path,
) -> Result<String, SourceError> {
    use sha2::Digest;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(SourceError::NotHttp(url.to_string()));
    }
    let ttl = std::env::var("GANTRY_REMOTE_TTL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3600u64);
    let path = cache_root
        .join("remote")
        .join(hex::encode(sha2::Sha256::digest(url.as_bytes())));
    let cached = std::fs::read_to_string(&path).ok();
    let fresh = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < Duration::from_secs(ttl));
    if let (true, Some(text)) = (fresh, &cached) {
        return Ok(text.clone());
    }
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let mut request = agent.get(url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let fetched = request
        .call()
        .map_err(|e| match e {
            // The status, not ureq's text (which may quote the response).
            ureq::Error::Status(code, _) => format!("HTTP {code}"),
            ureq::Error::Transport(t) => t.kind().to_string(),
        })
        .and_then(|r| {
            let mut body = String::new();
            std::io::Read::read_to_string(
                &mut std::io::Read::take(r.into_reader(), 1024 * 1024 + 1),
                &mut body,
            )
            .map_err(|e| e.to_string())?;
            Ok(body)
        });
    match fetched {
        Ok(text) => {
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, &text).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
            Ok(text)
        }
        Err(reason) => match cached {
            Some(text) => {
                eprintln!("warning: cannot fetch {url} ({reason}); using the cached copy");
                Ok(text)
            }
            None => Err(SourceError::Fetch {
                url: url.to_string(),
                reason,
            }),
        },
    }
}
