//! Job logs. Runners send chunks with the byte offset of their (already
//! masked) stream; each chunk is masked again here with the job's secrets
//! and stored as one object `logs/JOB/OFFSET-LEN`, so a resent chunk is
//! recognised and nothing is written to the database per line. When the
//! job ends the chunks are joined into `logs/JOB/full`. Followers read from
//! any byte offset of the stored log and are woken on every new chunk.

use crate::error::ObjectError;
use crate::objects::Objects;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// What an append did.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// Stored (or already stored); the runner's next offset.
    Next(u64),
    /// A gap: the server has the log up to this offset only.
    Gap(u64),
}

pub struct Logs {
    objects: Objects,
    /// Next expected runner offset per running job (a cache of the listing).
    next: Mutex<HashMap<i64, u64>>,
    followers: Mutex<HashMap<i64, broadcast::Sender<()>>>,
}

/// Replaces every secret in `data` with `[MASKED]`.
pub fn mask(data: &[u8], secrets: &[String]) -> Vec<u8> {
    let mut out = data.to_vec();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        let needle = s.as_bytes();
        let mut result = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(needle) {
                result.extend_from_slice(b"[MASKED]");
                i += needle.len();
            } else {
                result.push(out[i]);
                i += 1;
            }
        }
        out = result;
    }
    out
}

fn chunk_key(job: i64, offset: u64, len: u64) -> String {
    format!("logs/{job}/{offset:016}-{len:010}")
}

/// Appends the part of `chunk` (stored at byte `offset`) that lies past
/// the end of `buf`. Two servers may store overlapping chunks of one log
/// (each knew the log only up to its own last write); they hold the same
/// bytes where they overlap. A gap (no chunk for some bytes) is closed as
/// before: the chunk's bytes follow.
fn extend_at(buf: &mut Vec<u8>, offset: u64, chunk: &[u8]) {
    let skip = (buf.len() as u64).saturating_sub(offset) as usize;
    if skip < chunk.len() {
        buf.extend_from_slice(&chunk[skip..]);
    }
}

fn parse_chunk_key(key: &str) -> Option<(u64, u64)> {
    let name = key.rsplit('/').next()?;
    let (o, l) = name.split_once('-')?;
    Some((o.parse().ok()?, l.parse().ok()?))
}

impl Logs {
    pub fn new(objects: Objects) -> Logs {
        Logs {
            objects,
            next: Mutex::new(HashMap::new()),
            followers: Mutex::new(HashMap::new()),
        }
    }

    /// The end of the stored log: this server's last write when it is
    /// past `offset`, else the listing (another server behind the same
    /// load balancer may have stored the chunks in between).
    async fn expected(&self, job: i64, offset: u64) -> Result<u64, ObjectError> {
        if let Some(n) = self.next.lock().expect("log offsets").get(&job)
            && *n >= offset
        {
            return Ok(*n);
        }
        let chunks = self.objects.list(&format!("logs/{job}/")).await?;
        let n = chunks
            .iter()
            .filter_map(|(k, _)| parse_chunk_key(k))
            .map(|(o, l)| o + l)
            .max()
            .unwrap_or(0);
        Ok(n)
    }

    /// Stores a chunk the runner sent at `offset` of its stream.
    pub async fn append(
        &self,
        job: i64,
        offset: u64,
        data: &[u8],
        secrets: &[String],
    ) -> Result<Appended, ObjectError> {
        let expected = self.expected(job, offset).await?;
        if offset > expected {
            return Ok(Appended::Gap(expected));
        }
        let end = offset + data.len() as u64;
        if end <= expected {
            return Ok(Appended::Next(expected));
        }
        // Overlaps what is stored: keep only the new bytes.
        let fresh = &data[(expected - offset) as usize..];
        let masked = mask(fresh, secrets);
        self.objects
            .put(
                &chunk_key(job, expected, fresh.len() as u64),
                Bytes::from(masked),
            )
            .await?;
        self.next.lock().expect("log offsets").insert(job, end);
        if let Some(tx) = self.followers.lock().expect("log followers").get(&job) {
            let _ = tx.send(());
        }
        Ok(Appended::Next(end))
    }

    /// The stored log from byte `from` on.
    ///
    /// Safe against [`Logs::finish`] running at the same time (on this
    /// server or another): finish writes `full` before it deletes any chunk,
    /// so when `full` is still missing after the chunks were read, no chunk
    /// had been deleted and the joined chunks are the log so far.
    pub async fn read(&self, job: i64, from: u64) -> Result<Bytes, ObjectError> {
        let full_key = format!("logs/{job}/full");
        let mut attempts = 0;
        let all = loop {
            if let Some(full) = self.objects.get(&full_key).await? {
                break full;
            }
            let (joined, whole) = self.joined_chunks(job).await?;
            if let Some(full) = self.objects.get(&full_key).await? {
                break full;
            }
            attempts += 1;
            // Not whole without `full`: a chunk is missing for another reason;
            // serve the contiguous part rather than spin.
            if whole || attempts == 3 {
                break joined;
            }
        };
        let from = (from as usize).min(all.len());
        Ok(all.slice(from..))
    }

    /// The chunks of a running job joined, as far as they are contiguous
    /// from byte 0, and whether that is all of them (not when a concurrent
    /// finish deleted some after they were listed, or before).
    async fn joined_chunks(&self, job: i64) -> Result<(Bytes, bool), ObjectError> {
        let mut chunks: Vec<(u64, u64, String)> = self
            .objects
            .list(&format!("logs/{job}/"))
            .await?
            .into_iter()
            .filter_map(|(k, _)| parse_chunk_key(&k).map(|(o, l)| (o, l, k)))
            .collect();
        chunks.sort();
        let mut buf = Vec::new();
        for (offset, len, key) in &chunks {
            if *offset > buf.len() as u64 {
                return Ok((Bytes::from(buf), false));
            }
            if offset + len <= buf.len() as u64 {
                continue;
            }
            match self.objects.get(key).await? {
                Some(b) => extend_at(&mut buf, *offset, &b),
                None => return Ok((Bytes::from(buf), false)),
            }
        }
        Ok((Bytes::from(buf), true))
    }

    /// Joins a finished job's chunks into one object.
    pub async fn finish(&self, job: i64) -> Result<(), ObjectError> {
        let chunks = self.objects.list(&format!("logs/{job}/")).await?;
        let mut parts: Vec<(u64, u64, &String)> = chunks
            .iter()
            .filter_map(|(k, _)| parse_chunk_key(k).map(|(o, l)| (o, l, k)))
            .collect();
        parts.sort();
        if !parts.is_empty() {
            let mut buf = match self.objects.get(&format!("logs/{job}/full")).await? {
                Some(b) => b.to_vec(),
                None => Vec::new(),
            };
            for (offset, _, key) in &parts {
                if let Some(b) = self.objects.get(key).await? {
                    extend_at(&mut buf, *offset, &b);
                }
            }
            let parts = parts.into_iter().map(|(_, _, k)| k);
            self.objects
                .put(&format!("logs/{job}/full"), Bytes::from(buf))
                .await?;
            for key in parts {
                self.objects.delete(key).await?;
            }
        }
        self.next.lock().expect("log offsets").remove(&job);
        if let Some(tx) = self.followers.lock().expect("log followers").remove(&job) {
            let _ = tx.send(());
        }
        Ok(())
    }

    /// Woken on every chunk of `job` (and when it finishes).
    pub fn subscribe(&self, job: i64) -> broadcast::Receiver<()> {
        self.followers
            .lock()
            .expect("log followers")
            .entry(job)
            .or_insert_with(|| broadcast::channel(16).0)
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_replaces_every_occurrence() {
        let out = mask(b"a s3cr3tvalue b s3cr3tvalue", &["s3cr3tvalue".into()]);
        assert_eq!(out, b"a [MASKED] b [MASKED]");
    }

    #[tokio::test]
    async fn chunks_are_idempotent_and_gaps_refused() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(Objects::open(None, dir.path()).unwrap());
        assert_eq!(
            logs.append(1, 0, b"hello ", &[]).await.unwrap(),
            Appended::Next(6)
        );
        // The same chunk again (a runner retry) changes nothing.
        assert_eq!(
            logs.append(1, 0, b"hello ", &[]).await.unwrap(),
            Appended::Next(6)
        );
        assert_eq!(
            logs.append(1, 10, b"x", &[]).await.unwrap(),
            Appended::Gap(6)
        );
        assert_eq!(
            logs.append(1, 6, b"world", &[]).await.unwrap(),
            Appended::Next(11)
        );
        assert_eq!(&logs.read(1, 0).await.unwrap()[..], b"hello world");
        logs.finish(1).await.unwrap();
        assert_eq!(&logs.read(1, 6).await.unwrap()[..], b"world");
    }
}
