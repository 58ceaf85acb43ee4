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

/// A job's output as it reaches the log file and the live view: masked,
/// cut into lines (a `\r\n` ending counts as `\n`), in time linear in the
/// output and memory bounded whatever a line's length. The log file gets
/// every line whole, written as it arrives; the live view gets each line cut
/// to `live_cap` bytes, with a note of how much was left out.
#[derive(Debug)]
pub struct LogLines {
    masker: StreamMasker,
    /// The start of the current line, up to `live_cap` bytes.
    live: Vec<u8>,
    /// Bytes of the current line so far.
    line_len: usize,
    /// A `\r` that ended the last piece: dropped if a `\n` follows.
    cr_pending: bool,
    live_cap: usize,
}

impl LogLines {
    /// The live view's default cut: long enough for any human-read line.
    pub const LIVE_CAP: usize = 4096;

    pub fn new<I, S>(secrets: I, live_cap: usize) -> LogLines
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        LogLines {
            masker: StreamMasker::new(secrets),
            live: Vec::new(),
            line_len: 0,
            cr_pending: false,
            live_cap: live_cap.max(1),
        }
    }

    /// Feeds raw output; writes masked bytes to `file` and passes each
    /// finished line (cut for the live view) to `on_line`.
    pub fn push(
        &mut self,
        chunk: &[u8],
        file: &mut dyn std::io::Write,
        on_line: &mut dyn FnMut(String),
    ) -> std::io::Result<()> {
        let masked = self.masker.push(chunk);
        self.take(&masked, file, on_line)
    }

    /// The end of the output: releases what the masker held back and ends
    /// an unfinished last line.
    pub fn finish(
        &mut self,
        file: &mut dyn std::io::Write,
        on_line: &mut dyn FnMut(String),
    ) -> std::io::Result<()> {
        let masked = self.masker.finish();
        self.take(&masked, file, on_line)?;
        if self.line_len > 0 || self.cr_pending {
            if self.cr_pending {
                self.piece(b"\r", file)?;
                self.cr_pending = false;
            }
            self.end_line(file, on_line)?;
        }
        Ok(())
    }

    fn take(
        &mut self,
        mut bytes: &[u8],
        file: &mut dyn std::io::Write,
        on_line: &mut dyn FnMut(String),
    ) -> std::io::Result<()> {
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    let mut text = &bytes[..pos];
                    if self.cr_pending && !text.is_empty() {
                        self.piece(b"\r", file)?;
                    }
                    self.cr_pending = false;
                    if text.last() == Some(&b'\r') {
                        text = &text[..text.len() - 1];
                    }
                    self.piece(text, file)?;
                    self.end_line(file, on_line)?;
                    bytes = &bytes[pos + 1..];
                }
                None => {
                    if self.cr_pending {
                        self.piece(b"\r", file)?;
                        self.cr_pending = false;
                    }
                    let mut text = bytes;
                    if text.last() == Some(&b'\r') {
                        text = &text[..text.len() - 1];
                        self.cr_pending = true;
                    }
                    self.piece(text, file)?;
                    bytes = &[];
                }
            }
        }
        Ok(())
    }

    fn piece(&mut self, text: &[u8], file: &mut dyn std::io::Write) -> std::io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        file.write_all(text)?;
        let room = self.live_cap.saturating_sub(self.live.len());
        self.live.extend_from_slice(&text[..text.len().min(room)]);
        self.line_len += text.len();
        Ok(())
    }

    fn end_line(
        &mut self,
        file: &mut dyn std::io::Write,
        on_line: &mut dyn FnMut(String),
    ) -> std::io::Result<()> {
        file.write_all(b"\n")?;
        let mut live = std::mem::take(&mut self.live);
        let mut line = if self.line_len > live.len() {
            // Cut at a character boundary.
            let valid = match std::str::from_utf8(&live) {
                Ok(_) => live.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => live.len(),
            };
            live.truncate(valid);
            let mut text = String::from_utf8_lossy(&live).into_owned();
            text.push_str(&format!(
                " [... {} more bytes of this line are in the log]",
                self.line_len - valid
            ));
            text
        } else {
            String::from_utf8_lossy(&live).into_owned()
        };
        line.shrink_to_fit();
        self.line_len = 0;
        on_line(line);
        Ok(())
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

    fn lines(secrets: &[&str], cap: usize, chunks: &[&[u8]]) -> (Vec<u8>, Vec<String>) {
        let mut l = LogLines::new(secrets.iter().copied(), cap);
        let mut file = Vec::new();
        let mut live = Vec::new();
        for c in chunks {
            l.push(c, &mut file, &mut |s| live.push(s)).unwrap();
        }
        l.finish(&mut file, &mut |s| live.push(s)).unwrap();
        (file, live)
    }

    #[test]
    fn log_lines_split_mask_and_strip_crlf() {
        let (file, live) = lines(
            &["s3cr3t"],
            100,
            &[b"a s3c", b"r3t\r", b"\nb\r\rc\n", b"end"],
        );
        assert_eq!(file, b"a [MASKED]\nb\r\rc\nend\n");
        assert_eq!(live, vec!["a [MASKED]", "b\r\rc", "end"]);
    }

    #[test]
    fn log_lines_cut_long_lines_in_the_live_view_only() {
        let long = vec![b'x'; 10_000];
        let (file, live) = lines(&[], 16, &[&long[..3000], &long[3000..], b"\nshort\n"]);
        assert_eq!(file.len(), 10_000 + 1 + 6);
        assert_eq!(live.len(), 2);
        assert!(live[0].starts_with(&"x".repeat(16)));
        assert!(live[0].contains("9984 more bytes"), "{}", live[0]);
        assert_eq!(live[1], "short");
    }

    #[test]
    fn no_secrets_is_passthrough() {
        let mut m = StreamMasker::new(Vec::<String>::new());
        assert_eq!(m.push(b"hello"), b"hello");
        assert_eq!(m.finish(), b"");
    }
}
