//! Diagnostics: an error with a position, rendered like a compiler error
//! with the offending source line and a caret under the column.

use crate::source::{Sources, Span};
use std::fmt::Write as _;

/// Whether a diagnostic stops the load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Severity {
    #[default]
    Error,
    /// GitLab accepts the file; the user probably did not mean it (a
    /// duplicate key). `--strict` makes these errors.
    Warning,
}

/// One configuration error or warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Where the problem is; `None` for errors about the whole pipeline.
    pub span: Option<Span>,
    /// What is wrong, e.g. "unknown key `scirpt` in job `build`".
    pub message: String,
    /// What would have been accepted, e.g. "a string or an array of strings".
    pub expected: Option<String>,
}

impl Diagnostic {
    pub fn new(span: Option<Span>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            span,
            message: message.into(),
            expected: None,
        }
    }

    pub fn at(span: Span, message: impl Into<String>) -> Self {
        Self::new(Some(span), message)
    }

    /// The same diagnostic as a warning.
    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    pub fn is_warning(&self) -> bool {
        self.severity == Severity::Warning
    }

    pub fn expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }

    /// Renders as:
    ///
    /// ```text
    /// error: unknown key `scirpt` in job `build`
    ///   --> .gitlab-ci.yml:4:3
    ///    |
    ///  4 |   scirpt: make
    ///    |   ^ expected one of: script, stage, ...
    /// ```
    pub fn render(&self, sources: &Sources) -> String {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = format!("{level}: {}\n", self.message);
        match self.span {
            Some(span) => {
                let name = sources.name(span.file);
                let _ = writeln!(out, "  --> {}:{}:{}", name, span.line, span.col);
                // An error at the end of the file (an unclosed bracket) points
                // past the last line: show the last line, caret after its end.
                let shown = match sources.line(span.file, span.line) {
                    Some(line) => Some((span.line, line, span.col)),
                    None => span.line.checked_sub(1).filter(|l| *l > 0).and_then(|l| {
                        sources
                            .line(span.file, l)
                            .map(|line| (l, line, line.chars().count() as u32 + 1))
                    }),
                };
                if let Some((line_no, line, col)) = shown {
                    let num = line_no.to_string();
                    let pad = " ".repeat(num.len());
                    let _ = writeln!(out, " {pad} |");
                    let _ = writeln!(out, " {num} | {line}");
                    // Columns count characters; keep tabs so the caret lines up.
                    let lead: String = line
                        .chars()
                        .chain(std::iter::repeat(' '))
                        .take(col.saturating_sub(1) as usize)
                        .map(|c| if c == '\t' { '\t' } else { ' ' })
                        .collect();
                    let label = self
                        .expected
                        .as_deref()
                        .map(|e| format!(" expected {e}"))
                        .unwrap_or_default();
                    let _ = writeln!(out, " {pad} | {lead}^{label}");
                } else if let Some(e) = &self.expected {
                    let _ = writeln!(out, "  = expected {e}");
                }
            }
            None => {
                if let Some(e) = &self.expected {
                    let _ = writeln!(out, "  = expected {e}");
                }
            }
        }
        out
    }

    /// `file:line:col: message` on one line, for logs and JSON.
    pub fn short(&self, sources: &Sources) -> String {
        match self.span {
            Some(s) => format!(
                "{}:{}:{}: {}",
                sources.name(s.file),
                s.line,
                s.col,
                self.message
            ),
            None => self.message.clone(),
        }
    }
}

/// All errors found in one run, with the sources needed to render them.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics {
    pub errors: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.errors.push(d);
    }
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
    pub fn render(&self, sources: &Sources) -> String {
        self.errors
            .iter()
            .map(|d| d.render(sources))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The error type of the configuration engine: every diagnostic, plus the
/// sources they point into.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
    pub sources: Sources,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", d.render(&self.sources))?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
