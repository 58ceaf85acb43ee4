//! Pipeline schedules: GitLab's five-field cron in a time zone (`croner`,
//! `chrono-tz`). Due schedules create a pipeline with
//! `CI_PIPELINE_SOURCE=schedule`; the move to the next run is a
//! conditional update, so one server of several creates it.

use crate::app::Shared;
use crate::now_ms;
use chrono::{TimeZone, Utc};
use croner::Cron;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron syntax `{cron}`: {reason}")]
    Cron { cron: String, reason: String },
    #[error("unknown time zone `{0}` (use an IANA name such as Europe/Berlin or UTC)")]
    TimeZone(String),
}

/// The first run strictly after `after_ms`, in milliseconds.
pub fn next_run(cron: &str, timezone: &str, after_ms: i64) -> Result<i64, ScheduleError> {
    let parsed = Cron::from_str(cron).map_err(|e| ScheduleError::Cron {
        cron: cron.into(),
        reason: e.to_string(),
    })?;
    let tz: chrono_tz::Tz = timezone
        .parse()
        .map_err(|_| ScheduleError::TimeZone(timezone.into()))?;
    let after = Utc
        .timestamp_millis_opt(after_ms)
        .single()
        .unwrap_or_else(Utc::now)
        .with_timezone(&tz);
    let next = parsed
        .find_next_occurrence(&after, false)
        .map_err(|e| ScheduleError::Cron {
            cron: cron.into(),
            reason: e.to_string(),
        })?;
    Ok(next.timestamp_millis())
}

/// Creates the pipelines of every due, active schedule.
pub async fn run_due(app: &Shared) {
    let Ok(schedules) = app.store.schedules(None).await else {
        return;
    };
    let now = now_ms();
    for s in schedules
        .iter()
        .filter(|s| s.active != 0 && s.next_run_at <= now)
    {
        let Ok(next) = next_run(&s.cron, &s.cron_timezone, now) else {
            continue;
        };
        // Claim this run first: another server may be here too.
        if !matches!(
            app.store
                .advance_schedule(s.id, s.next_run_at, next, None)
                .await,
            Ok(true)
        ) {
            continue;
        }
        let Ok(Some(project)) = app.store.project(s.project_id).await else {
            continue;
        };
        let variables: Vec<(String, String)> =
            serde_json::from_str(&s.variables).unwrap_or_default();
        let req = crate::pipelines::Request {
            git_ref: s.git_ref.clone(),
            source: "schedule".into(),
            variables,
            user_id: s.owner_id,
            fetch: true,
            ..Default::default()
        };
        match crate::pipelines::create(app, &project, req).await {
            Ok(p) => {
                let _ = app
                    .store
                    .advance_schedule(s.id, next, next, Some(p.id))
                    .await;
            }
            Err(e) => eprintln!("gantry serve: schedule {} ({}): {e}", s.id, s.description),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_run_honours_the_time_zone() {
        // 2026-01-01T00:00:00Z; "0 9 * * *" in Berlin (UTC+1 in winter) is 08:00Z.
        let start = 1_767_225_600_000;
        let next = next_run("0 9 * * *", "Europe/Berlin", start).unwrap();
        assert_eq!(next - start, 8 * 3600 * 1000);
        let utc = next_run("0 9 * * *", "UTC", start).unwrap();
        assert_eq!(utc - start, 9 * 3600 * 1000);
        assert!(next_run("61 * * * *", "UTC", start).is_err());
        assert!(next_run("0 9 * * *", "Mars/Olympus", start).is_err());
    }
}
