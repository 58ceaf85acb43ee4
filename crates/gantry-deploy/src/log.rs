//! Progress output. Deploys print to a sink rather than to stderr directly so the pipeline
//! engine and the server can capture the lines into a job log.

use std::sync::Arc;

/// A line sink with an optional prefix (e.g. the service name when several deploy at once).
#[derive(Clone)]
pub struct Log {
    sink: Arc<dyn Fn(&str) + Send + Sync>,
    prefix: String,
}

impl Default for Log {
    fn default() -> Self {
        Log::stderr()
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("prefix", &self.prefix).finish()
    }
}

impl Log {
    /// Lines go to stderr; stdout stays free for machine-readable output.
    pub fn stderr() -> Self {
        Log::new(|line| eprintln!("{line}"))
    }

    /// Lines are dropped (tests that only look at results).
    pub fn silent() -> Self {
        Log::new(|_| {})
    }

    /// Lines go to `sink`.
    pub fn new(sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Log {
            sink: Arc::new(sink),
            prefix: String::new(),
        }
    }

    /// The same sink with `[name] ` before every line.
    pub fn with_prefix(&self, name: &str) -> Self {
        Log {
            sink: self.sink.clone(),
            prefix: format!("{}[{name}] ", self.prefix),
        }
    }

    /// Writes one line (or several, each prefixed).
    pub fn line(&self, text: impl AsRef<str>) {
        for l in text.as_ref().lines() {
            (self.sink)(&format!("{}{l}", self.prefix));
        }
    }
}
