//! What a run shows: the event stream (`--json`, one object per line) and
//! the human view (log lines prefixed by the job name in a stable colour,
//! then a summary table).

use crate::executor::OutputStream;
use serde::Serialize;
use std::io::Write;
use std::time::Duration;

/// One event of a run. Every line of job output is masked before it
/// becomes an event.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        /// `CI_PIPELINE_ID`.
        pipeline_id: u64,
        sha: String,
        jobs: Vec<String>,
    },
    JobStarted {
        job: String,
        stage: String,
        attempt: u32,
        executor: String,
        /// `CI_JOB_ID` of this attempt.
        job_id: u64,
    },
    /// A job attempt enters one of gitlab-runner's stages.
    JobStage { job: String, stage: String },
    Log {
        job: String,
        line: String,
        /// `stdout` or `stderr` (the engine's own lines are `stdout`).
        stream: OutputStream,
    },
    /// A message from Gantry about the run, not from a job.
    Note { message: String },
    JobFinished {
        job: String,
        stage: String,
        status: String,
        duration_ms: Option<u64>,
        exit_code: Option<i32>,
        allow_failure: bool,
        reason: Option<String>,
        attempt: u32,
        junit_failures: Vec<String>,
    },
    RunFinished {
        run_id: String,
        /// success, failed, canceled, or blocked (a manual job waits).
        status: String,
        duration_ms: u64,
        /// One row per job, in pipeline order.
        jobs: Vec<SummaryRow>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    /// Prefixed log lines and a summary; colours when `color`.
    Human { color: bool },
    /// One JSON event per line.
    Json,
    /// Nothing (tests, embedding).
    Quiet,
}

/// A row of the summary table.
#[derive(Clone, Debug, Serialize)]
pub struct SummaryRow {
    pub job: String,
    /// The trigger job whose child pipeline this job belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_of: Option<String>,
    pub stage: String,
    pub status: String,
    pub duration_ms: Option<u64>,
    pub allow_failure: bool,
    pub reason: Option<String>,
    pub junit_failures: Vec<String>,
}

/// What marks a stderr line in the terminal when colours are off.
pub const STDERR_MARK: &str = "! ";

/// Lines of a failed job shown at the end of the run.
pub const FAILED_TAIL_LINES: usize = 12;

pub struct Reporter {
    mode: OutputMode,
    width: usize,
    out: Box<dyn Write + Send>,
    /// Prefix log lines with the time they were shown.
    timestamps: bool,
    /// The last lines of each running job, for the end of a failed run.
    tails: std::collections::HashMap<String, std::collections::VecDeque<String>>,
    /// Failed jobs and their last lines, in the order they failed.
    failed: Vec<(String, Vec<String>)>,
}

/// Job name colours: none of them is a status colour (red, green, yellow),
/// so a name never reads as a result.
const PALETTE: [u8; 6] = [36, 35, 34, 96, 95, 94];

/// A stable colour for a job name (FNV-1a of the name).
pub fn job_color(name: &str) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    PALETTE[(h as usize) % PALETTE.len()]
}

/// Columns a string takes in a terminal: wide (East Asian, emoji) characters
/// take two, combining marks none.
pub fn display_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

fn char_width(c: char) -> usize {
    let u = c as u32;
    match u {
        0 => 0,
        0x0300..=0x036F | 0x200B..=0x200F | 0x20D0..=0x20FF | 0xFE00..=0xFE0F | 0xFE20..=0xFE2F => {
            0
        }
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

/// `s` padded with spaces to `width` columns.
fn pad(s: &str, width: usize) -> String {
    let w = display_width(s);
    format!("{s}{}", " ".repeat(width.saturating_sub(w)))
}

impl Reporter {
    pub fn new(mode: OutputMode, out: Box<dyn Write + Send>) -> Reporter {
        Reporter {
            mode,
            width: 12,
            out,
            timestamps: false,
            tails: std::collections::HashMap::new(),
            failed: Vec::new(),
        }
    }

    pub fn stdout(mode: OutputMode) -> Reporter {
        Reporter::new(mode, Box::new(std::io::stdout()))
    }

    /// Prefixes log lines with the wall-clock time (`--timestamps`).
    pub fn with_timestamps(mut self, on: bool) -> Reporter {
        self.timestamps = on;
        self
    }

    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    fn color(&self) -> bool {
        matches!(self.mode, OutputMode::Human { color: true })
    }

    /// Sets the name column width from the jobs of the run.
    pub fn set_names<'a>(&mut self, names: impl Iterator<Item = &'a str>) {
        self.width = names.map(display_width).max().unwrap_or(8).clamp(4, 28);
    }

    fn prefix(&self, job: &str) -> String {
        let shown: String = if display_width(job) > self.width {
            let mut s = String::new();
            for c in job.chars() {
                if display_width(&s) + char_width(c) > self.width - 1 {
                    break;
                }
                s.push(c);
            }
            s.push('~');
            s
        } else {
            job.to_string()
        };
        let shown = pad(&shown, self.width);
        let time = if self.timestamps {
            let now = chrono::Local::now().format("%H:%M:%S%.3f ").to_string();
            self.paint("2", &now)
        } else {
            String::new()
        };
        if self.color() {
            format!(
                "{time}\x1b[{}m{shown}\x1b[0m \x1b[2m|\x1b[0m ",
                job_color(job)
            )
        } else {
            format!("{time}{shown} | ")
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A log line: commands (`$ cmd`) in bold green as gitlab-runner shows
    /// them, Gantry's errors and warnings marked, stderr in red (without
    /// colours: after a `!` marker). Only the terminal shows these; the log
    /// file has the line as the job printed it.
    fn log_line(&self, line: &str, stream: OutputStream) -> String {
        if stream == OutputStream::Stderr {
            return if self.color() {
                self.paint("31", line)
            } else {
                format!("{STDERR_MARK}{line}")
            };
        }
        if !self.color() {
            return line.to_string();
        }
        if line.starts_with("$ ") {
            self.paint("1;32", line)
        } else if line.starts_with("ERROR: ") {
            self.paint("1;31", line)
        } else if line.starts_with("WARNING: ") {
            self.paint("33", line)
        } else {
            line.to_string()
        }
    }

    fn remember(&mut self, job: &str, line: &str) {
        let tail = self.tails.entry(job.to_string()).or_default();
        if tail.len() == FAILED_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_string());
    }

    pub fn emit(&mut self, event: &Event) {
        let text = match self.mode {
            OutputMode::Quiet => return,
            OutputMode::Json => match serde_json::to_string(event) {
                Ok(s) => s,
                Err(_) => return,
            },
            OutputMode::Human { .. } => match event {
                Event::RunStarted {
                    run_id,
                    pipeline_id,
                    sha,
                    jobs,
                } => {
                    self.set_names(jobs.iter().map(String::as_str));
                    let short = sha.get(..8).unwrap_or(sha);
                    self.paint(
                        "1",
                        &format!(
                            "gantry run {run_id} (pipeline #{pipeline_id}): {} job(s) at {short}",
                            jobs.len()
                        ),
                    )
                }
                Event::JobStarted {
                    job,
                    stage,
                    attempt,
                    executor,
                    ..
                } => {
                    // A child pipeline's jobs (`trigger > job`) widen the
                    // prefix as they start.
                    self.width = self.width.max(display_width(job).min(28));
                    self.tails.remove(job);
                    let retry = if *attempt > 1 {
                        format!(", attempt {attempt}")
                    } else {
                        String::new()
                    };
                    format!(
                        "{}{}",
                        self.prefix(job),
                        self.paint("1", &format!("started ({stage}, {executor}{retry})"))
                    )
                }
                Event::Log { job, line, stream } => {
                    self.remember(job, line);
                    format!("{}{}", self.prefix(job), self.log_line(line, *stream))
                }
                Event::Note { message } => self.paint("2", message),
                Event::JobFinished {
                    job,
                    status,
                    duration_ms,
                    exit_code,
                    reason,
                    ..
                } => {
                    let tail = self.tails.remove(job);
                    if status == "failed" {
                        self.failed
                            .push((job.clone(), tail.map(Vec::from).unwrap_or_default()));
                    }
                    let mut msg = status.clone();
                    if let Some(ms) = duration_ms {
                        msg.push_str(&format!(" in {}", fmt_duration(Duration::from_millis(*ms))));
                    }
                    if let Some(r) = reason {
                        msg.push_str(&format!(" ({r})"));
                    } else if let Some(code) = exit_code.filter(|c| *c != 0) {
                        msg.push_str(&format!(" (exit code {code})"));
                    }
                    let code = status_colour(status);
                    format!("{}{}", self.prefix(job), self.paint(code, &msg))
                }
                Event::JobStage { .. } => return,
                Event::RunFinished {
                    status,
                    duration_ms,
                    jobs,
                    ..
                } => {
                    let (status, total, rows) = (
                        status.clone(),
                        Duration::from_millis(*duration_ms),
                        jobs.clone(),
                    );
                    self.summary(&rows, &status, total);
                    return;
                }
            },
        };
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    /// The final table (human mode only), then each failed job's last
    /// lines and the command that shows its whole log.
    fn summary(&mut self, rows: &[SummaryRow], status: &str, total: Duration) {
        if !matches!(self.mode, OutputMode::Human { .. }) {
            return;
        }
        // A child pipeline's jobs, indented under their trigger job.
        let shown = |r: &SummaryRow| match &r.child_of {
            Some(_) => format!("  ↳ {}", r.job),
            None => r.job.clone(),
        };
        let w_job = rows
            .iter()
            .map(|r| display_width(&shown(r)))
            .max()
            .unwrap_or(3)
            .max(3);
        let w_stage = rows
            .iter()
            .map(|r| display_width(&r.stage))
            .max()
            .unwrap_or(5)
            .max(5);
        let w_status = rows
            .iter()
            .map(|r| r.status.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let mut text = String::from("\n");
        text.push_str(&format!(
            "{}  {}  {}  {:>8}  {}\n",
            pad("job", w_job),
            pad("stage", w_stage),
            pad("status", w_status),
            "duration",
            "allow_failure"
        ));
        for r in rows {
            let duration = r
                .duration_ms
                .map(|ms| fmt_duration(Duration::from_millis(ms)))
                .unwrap_or_else(|| "-".into());
            let status = pad(&r.status, w_status);
            let mut line = format!(
                "{}  {}  {}  {:>8}  {}",
                pad(&shown(r), w_job),
                pad(&r.stage, w_stage),
                self.paint(status_colour(&r.status), &status),
                duration,
                if r.allow_failure { "yes" } else { "no" }
            );
            if let Some(reason) = &r.reason {
                line.push_str(&format!("  {reason}"));
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        for r in rows.iter().filter(|r| !r.junit_failures.is_empty()) {
            text.push_str(&format!("\nfailed tests in {}:\n", r.job));
            for t in &r.junit_failures {
                text.push_str(&format!("  - {t}\n"));
            }
        }
        for (job, tail) in std::mem::take(&mut self.failed) {
            text.push_str(&format!(
                "\n{} {job} failed; its last lines:\n",
                self.paint("1;31", "✗")
            ));
            for line in &tail {
                text.push_str(&format!("  {line}\n"));
            }
            text.push_str(&format!(
                "  whole log: {}\n",
                self.paint("1", &format!("gantry logs {}", shell_quote(&job)))
            ));
        }
        text.push_str(&format!(
            "\npipeline {} in {}\n",
            self.paint(status_colour(status), status),
            fmt_duration(total)
        ));
        let _ = write!(self.out, "{text}");
        let _ = self.out.flush();
    }
}

/// `name` as one shell word.
fn shell_quote(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'))
    {
        name.to_string()
    } else {
        format!("'{}'", name.replace('\'', "'\\''"))
    }
}

impl crate::ports::EventSink for Reporter {
    fn emit(&mut self, event: &Event) {
        Reporter::emit(self, event)
    }
}

fn status_colour(status: &str) -> &'static str {
    match status {
        "success" => "32",
        "failed" | "canceled" => "31",
        "warning" | "blocked" => "33",
        _ => "2",
    }
}

pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_stable_and_never_status_colours() {
        assert_eq!(job_color("build"), job_color("build"));
        for name in ["build", "test", "deploy", "a", "b", "c", "d", "e"] {
            assert!(![31, 32, 33, 91, 92, 93].contains(&job_color(name)));
        }
    }

    #[test]
    fn wide_characters_take_two_columns() {
        assert_eq!(display_width("ビルド"), 6);
        assert_eq!(display_width("build"), 5);
        assert_eq!(pad("テスト", 8), "テスト  ");
    }

    #[test]
    fn json_event_shape() {
        let e = Event::Log {
            job: "a".into(),
            line: "hi".into(),
            stream: OutputStream::Stderr,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"log","job":"a","line":"hi","stream":"stderr"}"#
        );
    }
}
