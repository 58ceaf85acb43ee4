//! What a run shows: the event stream (`--json`, one object per line) and
//! the human view (log lines prefixed by the job name in a stable colour,
//! then a summary table).

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
    JobStage {
        job: String,
        stage: String,
    },
    Log {
        job: String,
        line: String,
    },
    /// A message from Gantry about the run, not from a job.
    Note {
        message: String,
    },
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
    pub stage: String,
    pub status: String,
    pub duration_ms: Option<u64>,
    pub allow_failure: bool,
    pub reason: Option<String>,
    pub junit_failures: Vec<String>,
}

pub struct Reporter {
    mode: OutputMode,
    width: usize,
    out: Box<dyn Write + Send>,
}

const PALETTE: [u8; 12] = [36, 33, 35, 32, 34, 31, 96, 93, 95, 92, 94, 91];

/// A stable colour for a job name (FNV-1a of the name).
pub fn job_color(name: &str) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    PALETTE[(h as usize) % PALETTE.len()]
}

impl Reporter {
    pub fn new(mode: OutputMode, out: Box<dyn Write + Send>) -> Reporter {
        Reporter {
            mode,
            width: 12,
            out,
        }
    }

    pub fn stdout(mode: OutputMode) -> Reporter {
        Reporter::new(mode, Box::new(std::io::stdout()))
    }

    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    /// Sets the name column width from the jobs of the run.
    pub fn set_names<'a>(&mut self, names: impl Iterator<Item = &'a str>) {
        self.width = names
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(8)
            .clamp(4, 28);
    }

    fn prefix(&self, job: &str) -> String {
        let shown: String = if job.chars().count() > self.width {
            let mut s: String = job.chars().take(self.width - 1).collect();
            s.push('~');
            s
        } else {
            job.to_string()
        };
        let pad = self.width - shown.chars().count();
        match self.mode {
            OutputMode::Human { color: true } => format!(
                "\x1b[{}m{shown}{}\x1b[0m \x1b[2m|\x1b[0m ",
                job_color(job),
                " ".repeat(pad)
            ),
            _ => format!("{shown}{} | ", " ".repeat(pad)),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        match self.mode {
            OutputMode::Human { color: true } => format!("\x1b[{code}m{text}\x1b[0m"),
            _ => text.to_string(),
        }
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
                    run_id, sha, jobs, ..
                } => {
                    let short = sha.get(..8).unwrap_or(sha);
                    self.paint(
                        "1",
                        &format!("gantry run {run_id}: {} job(s) at {short}", jobs.len()),
                    )
                }
                Event::JobStarted {
                    job,
                    stage,
                    attempt,
                    executor,
                    ..
                } => {
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
                Event::Log { job, line } => format!("{}{line}", self.prefix(job)),
                Event::Note { message } => self.paint("2", message),
                Event::JobFinished {
                    job,
                    status,
                    duration_ms,
                    exit_code,
                    reason,
                    ..
                } => {
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

    /// The final table (human mode only).
    fn summary(&mut self, rows: &[SummaryRow], status: &str, total: Duration) {
        if !matches!(self.mode, OutputMode::Human { .. }) {
            return;
        }
        let w_job = rows
            .iter()
            .map(|r| r.job.chars().count())
            .max()
            .unwrap_or(3)
            .max(3);
        let w_stage = rows
            .iter()
            .map(|r| r.stage.chars().count())
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
            "{:<w_job$}  {:<w_stage$}  {:<w_status$}  {:>8}  {}\n",
            "job", "stage", "status", "duration", "allow_failure"
        ));
        for r in rows {
            let duration = r
                .duration_ms
                .map(|ms| fmt_duration(Duration::from_millis(ms)))
                .unwrap_or_else(|| "-".into());
            let status = format!("{:<w_status$}", r.status);
            let mut line = format!(
                "{:<w_job$}  {:<w_stage$}  {}  {:>8}  {}",
                r.job,
                r.stage,
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
        text.push_str(&format!(
            "\npipeline {} in {}\n",
            self.paint(status_colour(status), status),
            fmt_duration(total)
        ));
        let _ = write!(self.out, "{text}");
        let _ = self.out.flush();
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
        "warning" => "33",
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
    fn colours_are_stable() {
        assert_eq!(job_color("build"), job_color("build"));
    }

    #[test]
    fn json_event_shape() {
        let e = Event::Log {
            job: "a".into(),
            line: "hi".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"log","job":"a","line":"hi"}"#
        );
    }
}
