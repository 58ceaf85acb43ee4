//! Masking of secret values in job output.
//!
//! Output arrives in arbitrary chunks, so a secret can be split across two
//! writes. [`StreamMasker`] holds back the longest tail of what it has seen
//! that could still be the start of a secret, and only releases bytes that
//! can no longer become part of one.

/// What a masked value is replaced with, as on GitLab.
pub const MASK: &str = "[MASKED]";

/// A streaming replacer of secret byte strings by [`MASK`].
#[derive(Clone, Debug, Default)]
pub struct StreamMasker {
    /// Secrets, longest first so that a longer secret wins over its prefix.
    secrets: Vec<Vec<u8>>,
    pending: Vec<u8>,
}

impl StreamMasker {
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|s| s.as_ref().as_bytes().to_vec())
            .filter(|s| !s.is_empty())
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        StreamMasker {
            secrets,
            pending: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Feeds a chunk; returns the bytes that are now safe to show.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return chunk.to_vec();
        }
        self.pending.extend_from_slice(chunk);
        let (out, keep_from) = self.scan(false);
        self.pending.drain(..keep_from);
        out
    }

    /// Flushes everything held back (end of stream).
    pub fn finish(&mut self) -> Vec<u8> {
        if self.secrets.is_empty() {
            return std::mem::take(&mut self.pending);
        }
        let (out, keep_from) = self.scan(true);
        debug_assert_eq!(keep_from, self.pending.len());
        self.pending.clear();
        out
    }

    /// Masks one complete string (no streaming).
    pub fn mask_str(&self, text: &str) -> String {
        let mut masker = StreamMasker {
            secrets: self.secrets.clone(),
            pending: Vec::new(),
        };
        let mut out = masker.push(text.as_bytes());
        out.extend(masker.finish());
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Walks `pending`, replacing complete secrets. Returns the output and
    /// the index from which bytes must be kept (a possible secret prefix).
    fn scan(&self, at_end: bool) -> (Vec<u8>, usize) {
        let buf = &self.pending;
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        'outer: while i < buf.len() {
            let rest = &buf[i..];
            for secret in &self.secrets {
                if rest.starts_with(secret) {
                    out.extend_from_slice(MASK.as_bytes());
                    i += secret.len();
                    continue 'outer;
                }
            }
            if !at_end
                && self
                    .secrets
                    .iter()
                    .any(|s| s.len() > rest.len() && s.starts_with(rest))
            {
                // The tail could still grow into a secret: hold it back.
                return (out, i);
            }
            out.push(buf[i]);
            i += 1;
        }
        (out, buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(secrets: &[&str], chunks: &[&str]) -> String {
        let mut m = StreamMasker::new(secrets.iter().copied());
        let mut out = Vec::new();
        for c in chunks {
            out.extend(m.push(c.as_bytes()));
        }
        out.extend(m.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn masks_whole_value() {
        assert_eq!(run(&["hunter22"], &["pw=hunter22!"]), "pw=[MASKED]!");
    }

    #[test]
    fn masks_value_split_across_writes() {
        assert_eq!(
            run(&["s3cr3tvalue"], &["token: s3c", "r3tv", "alue done\n"]),
            "token: [MASKED] done\n"
        );
    }

    #[test]
    fn split_at_every_position() {
        let text = "a s3cr3tvalue b s3cr3tvalue";
        for cut in 0..=text.len() {
            let (a, b) = text.split_at(cut);
            assert_eq!(
                run(&["s3cr3tvalue"], &[a, b]),
                "a [MASKED] b [MASKED]",
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn releases_held_prefix_that_did_not_complete() {
        let mut m = StreamMasker::new(["password1"]);
        assert_eq!(m.push(b"x pass"), b"x ");
        assert_eq!(m.push(b"port"), b"passport");
        assert_eq!(m.finish(), b"");
    }

    #[test]
    fn incomplete_prefix_flushed_at_end() {
        assert_eq!(run(&["password1"], &["ends with passw"]), "ends with passw");
    }

    #[test]
    fn longer_secret_wins() {
        assert_eq!(
            run(&["abc", "abcdef"], &["abcdef abc"]),
            "[MASKED] [MASKED]"
        );
    }

    #[test]
    fn no_secrets_is_passthrough() {
        let mut m = StreamMasker::new(Vec::<String>::new());
        assert_eq!(m.push(b"hello"), b"hello");
        assert_eq!(m.finish(), b"");
    }
}
