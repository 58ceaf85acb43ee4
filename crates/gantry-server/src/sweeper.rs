//! The `expire_in` sweeper: a periodic task that deletes artifacts whose
//! `artifacts:expire_in` has passed, from the object store and then from
//! the job's row. The archive goes first, so a crash in between leaves a
//! row that the next pass finishes, never an orphaned archive.
//!
//! The same pass deletes shared caches neither saved nor restored within
//! `--cache-max-age` ([`sweep_caches`]; see [`crate::shared_cache`]), and
//! stops environments whose `auto_stop_in` has passed
//! ([`crate::environments::stop_due`]).
//!
//! Without `expire_in` (or with `never`) artifacts are kept. Several server
//! processes may sweep at once: deleting a missing object is not an error.

use crate::app::Shared;
use crate::error::StoreError;
use crate::store::Job;

/// Rows handled per pass; the next pass continues.
const BATCH: i64 = 500;

/// When a job's artifacts uploaded at `now` expire, from its
/// `artifacts:expire_in` (`None`: kept).
pub fn artifacts_expire_at(job: &Job, now: i64) -> Option<i64> {
    let spec = crate::engine_bridge::spec(job)?;
    let text = spec.artifacts?.expire_in?;
    let text = text.trim();
    if text.eq_ignore_ascii_case("never") {
        return None;
    }
    let seconds = gantry_config::compose::parse_duration(text)?;
    Some(now.saturating_add((seconds as i64).saturating_mul(1000)))
}

/// Starts the periodic sweep.
pub fn spawn(app: Shared) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(app.config.sweep_interval).await;
            match sweep(&app).await {
                Ok(0) => {}
                Ok(n) => eprintln!("gantry serve: deleted the expired artifacts of {n} job(s)"),
                Err(e) => eprintln!("gantry serve: artifact sweeper: {e}"),
            }
            match sweep_caches(&app, crate::now_ms()).await {
                Ok(0) => {}
                Ok(n) => eprintln!("gantry serve: deleted {n} unused cache archive(s)"),
                Err(e) => eprintln!("gantry serve: cache sweeper: {e}"),
            }
            match crate::environments::stop_due(&app, crate::now_ms()).await {
                Ok(0) => {}
                Ok(n) => eprintln!("gantry serve: auto-stopped {n} environment(s)"),
                Err(e) => eprintln!("gantry serve: environment auto-stop: {e}"),
            }
        }
    });
}

/// One pass: deletes every expired archive; answers how many.
pub async fn sweep(app: &Shared) -> Result<usize, StoreError> {
    let mut deleted = 0;
    loop {
        let ids = app.store.expired_artifacts(crate::now_ms(), BATCH).await?;
        let full = ids.len() as i64 == BATCH;
        for id in ids {
            if let Err(e) = app.objects.delete(&format!("artifacts/{id}.zip")).await {
                // Kept in the row: the next pass tries again.
                eprintln!("gantry serve: artifact sweeper: job {id}: {e}");
                return Ok(deleted);
            }
            app.store.forget_artifacts(id).await?;
            deleted += 1;
        }
        if !full {
            return Ok(deleted);
        }
    }
}

/// Why a cache sweep stopped.
#[derive(Debug, thiserror::Error)]
pub enum CacheSweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Objects(#[from] crate::error::ObjectError),
}

/// Deletes every cache archive neither saved nor restored within the
/// maximum age before `now`; answers how many. Runs at most once in the
/// age's resolution ([`crate::shared_cache::resolution_ms`]).
pub async fn sweep_caches(app: &Shared, now: i64) -> Result<usize, CacheSweepError> {
    let Some(max_age) = app.config.cache_max_age else {
        return Ok(0);
    };
    if !app.cache_uses.sweep_due(max_age, now) {
        return Ok(0);
    }
    let cutoff = now - max_age.as_millis() as i64;
    let stale: Vec<String> = app
        .objects
        .list_modified("caches/")
        .await?
        .into_iter()
        .filter(|(_, modified)| *modified < cutoff)
        .map(|(key, _)| key)
        .collect();
    let mut deleted = 0;
    if !stale.is_empty() {
        let used: std::collections::HashSet<String> =
            sqlx::query_as::<_, (String,)>("SELECT object FROM cache_uses WHERE used_at >= $1")
                .bind(cutoff)
                .fetch_all(&app.store.db.pool)
                .await
                .map_err(StoreError::from)?
                .into_iter()
                .map(|(object,)| object)
                .collect();
        for key in stale.iter().filter(|k| !used.contains(*k)) {
            app.objects.delete(key).await?;
            deleted += 1;
        }
    }
    // Notes of archives gone (or saved since) are of no more use.
    let _w = app.store.db.write_lock().await;
    sqlx::query("DELETE FROM cache_uses WHERE used_at < $1")
        .bind(cutoff)
        .execute(&app.store.db.pool)
        .await
        .map_err(StoreError::from)?;
    Ok(deleted)
}
