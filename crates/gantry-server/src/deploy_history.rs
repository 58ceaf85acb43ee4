//! The server as `gantry deploy`'s history store (`--history https://SERVER`):
//! deployment records and per-target leases in the server's database,
//! behind a small REST API under `/api/v4/deploy_history` that
//! `gantry_deploy::http_history` speaks.
//!
//! One row per record (`deploy_records`) and one per target
//! (`deploy_targets`, holding the lease). Every change is a compare-and-swap
//! on the row's `version` column, retried on conflict, so concurrent writers
//! on any number of server processes never lose a record and at most one
//! unexpired lease exists per target.
//!
//! Callers are users (viewer reads, developer writes) or running jobs with
//! their `JOB-TOKEN`; a job's records are tied to its project and
//! environment, which is how the dashboard's Environments page finds them.

use crate::app::Shared;
use crate::auth::{job_token, require_user};
use crate::error::{ApiError, StoreError};
use crate::now_ms;
use crate::store::{Role, Store};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use gantry_deploy::history::{DeploymentRecord, LeaseAttempt, LeaseHolder, target_matches};
use serde::Deserialize;
use serde_json::json;
use sqlx::Row;

/// How many times a compare-and-swap is retried before giving up.
const CAS_ATTEMPTS: u32 = 64;

/// Who wrote a record: the job's project and environment when a job did.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    pub project_id: Option<i64>,
    pub environment: Option<String>,
    pub job_id: Option<i64>,
    pub user_id: Option<i64>,
}

/// A stored record with what the server knows about its writer.
#[derive(Clone, Debug)]
pub struct StoredRecord {
    pub record: DeploymentRecord,
    pub project_id: Option<i64>,
    pub environment: Option<String>,
    pub user_id: Option<i64>,
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("a deployment record: {e}"))
}

/// The history rows of the store.
pub struct HistoryRows<'a>(pub &'a Store);

impl HistoryRows<'_> {
    /// Inserts the record, or replaces the one with its id (compare-and-swap
    /// on `version`). The writer's project and environment stick to the
    /// record once known.
    pub async fn save(&self, record: &DeploymentRecord, by: &Writer) -> Result<(), StoreError> {
        let db = &self.0.db;
        let body = serde_json::to_string(record).map_err(corrupt)?;
        for _ in 0..CAS_ATTEMPTS {
            let _w = db.write_lock().await;
            let now = now_ms();
            let current: Option<(i64,)> =
                sqlx::query_as("SELECT version FROM deploy_records WHERE record_id = $1")
                    .bind(&record.id)
                    .fetch_optional(&db.pool)
                    .await?;
            let written = match current {
                None => sqlx::query(
                    "INSERT INTO deploy_records (record_id, target, version, started_at, revision, known_good, \
                     record, project_id, environment, job_id, user_id, created_at, updated_at) \
                     VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
                     ON CONFLICT (record_id) DO NOTHING",
                )
                .bind(&record.id)
                .bind(&record.target)
                .bind(&record.started_at)
                .bind(&record.revision)
                .bind(record.known_good as i64)
                .bind(&body)
                .bind(by.project_id)
                .bind(&by.environment)
                .bind(by.job_id)
                .bind(by.user_id)
                .bind(now)
                .execute(&db.pool)
                .await?
                .rows_affected(),
                Some((version,)) => sqlx::query(
                    "UPDATE deploy_records SET version = $1, target = $2, started_at = $3, revision = $4, \
                     known_good = $5, record = $6, project_id = COALESCE(project_id, $7), \
                     environment = COALESCE(environment, $8), job_id = COALESCE(job_id, $9), \
                     user_id = COALESCE(user_id, $10), updated_at = $11 \
                     WHERE record_id = $12 AND version = $13",
                )
                .bind(version + 1)
                .bind(&record.target)
                .bind(&record.started_at)
                .bind(&record.revision)
                .bind(record.known_good as i64)
                .bind(&body)
                .bind(by.project_id)
                .bind(&by.environment)
                .bind(by.job_id)
                .bind(by.user_id)
                .bind(now)
                .bind(&record.id)
                .bind(version)
                .execute(&db.pool)
                .await?
                .rows_affected(),
            };
            if written == 1 {
                return Ok(());
            }
        }
        Err(StoreError::Config(format!(
            "deployment record {} kept changing under {CAS_ATTEMPTS} attempts to write it",
            record.id
        )))
    }

    async fn decode(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<StoredRecord>, StoreError> {
        rows.into_iter()
            .map(|r| {
                let text: String = r.try_get("record")?;
                Ok(StoredRecord {
                    record: serde_json::from_str(&text).map_err(corrupt)?,
                    project_id: r.try_get("project_id")?,
                    environment: r.try_get("environment")?,
                    user_id: r.try_get("user_id")?,
                })
            })
            .collect()
    }

    /// Records of exactly `target`, oldest first.
    pub async fn of_target(&self, target: &str) -> Result<Vec<StoredRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT record, project_id, environment, user_id FROM deploy_records \
             WHERE target = $1 ORDER BY started_at, record_id",
        )
        .bind(target)
        .fetch_all(&self.0.db.pool)
        .await?;
        Self::decode(rows).await
    }

    /// Records of every target matching `filter`, oldest first.
    pub async fn matching(&self, filter: Option<&str>) -> Result<Vec<StoredRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT record, project_id, environment, user_id FROM deploy_records \
             ORDER BY started_at, record_id",
        )
        .fetch_all(&self.0.db.pool)
        .await?;
        let mut all = Self::decode(rows).await?;
        if let Some(f) = filter {
            all.retain(|r| target_matches(&r.record.target, f));
        }
        Ok(all)
    }

    /// Records written by jobs of `project_id`, newest first.
    pub async fn of_project(&self, project_id: i64) -> Result<Vec<StoredRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT record, project_id, environment, user_id FROM deploy_records \
             WHERE project_id = $1 ORDER BY started_at DESC, record_id DESC",
        )
        .bind(project_id)
        .fetch_all(&self.0.db.pool)
        .await?;
        Self::decode(rows).await
    }

    /// Takes `target`'s lease for `holder` when it is free, expired or
    /// already theirs; otherwise names the holder.
    pub async fn acquire_lease(
        &self,
        target: &str,
        holder: &LeaseHolder,
    ) -> Result<LeaseAttempt, StoreError> {
        let db = &self.0.db;
        let text = serde_json::to_string(holder).map_err(corrupt)?;
        for _ in 0..CAS_ATTEMPTS {
            let _w = db.write_lock().await;
            let current: Option<(i64, Option<String>)> =
                sqlx::query_as("SELECT version, lease FROM deploy_targets WHERE target = $1")
                    .bind(target)
                    .fetch_optional(&db.pool)
                    .await?;
            let written = match current {
                None => sqlx::query(
                    "INSERT INTO deploy_targets (target, version, lease, updated_at) VALUES ($1, 1, $2, $3) \
                     ON CONFLICT (target) DO NOTHING",
                )
                .bind(target)
                .bind(&text)
                .bind(now_ms())
                .execute(&db.pool)
                .await?
                .rows_affected(),
                Some((version, lease)) => {
                    if let Some(current) = lease
                        .as_deref()
                        .map(serde_json::from_str::<LeaseHolder>)
                        .transpose()
                        .map_err(corrupt)?
                        && current.id != holder.id
                        && !current.expired()
                    {
                        return Ok(LeaseAttempt::Held(current));
                    }
                    sqlx::query(
                        "UPDATE deploy_targets SET version = $1, lease = $2, updated_at = $3 \
                         WHERE target = $4 AND version = $5",
                    )
                    .bind(version + 1)
                    .bind(&text)
                    .bind(now_ms())
                    .bind(target)
                    .bind(version)
                    .execute(&db.pool)
                    .await?
                    .rows_affected()
                }
            };
            if written == 1 {
                return Ok(LeaseAttempt::Acquired);
            }
        }
        Err(StoreError::Config(format!(
            "the lease of {target} kept changing under {CAS_ATTEMPTS} attempts to take it"
        )))
    }

    /// Releases `target`'s lease if `holder_id` holds it.
    pub async fn release_lease(&self, target: &str, holder_id: &str) -> Result<(), StoreError> {
        let db = &self.0.db;
        for _ in 0..CAS_ATTEMPTS {
            let _w = db.write_lock().await;
            let current: Option<(i64, Option<String>)> =
                sqlx::query_as("SELECT version, lease FROM deploy_targets WHERE target = $1")
                    .bind(target)
                    .fetch_optional(&db.pool)
                    .await?;
            let Some((version, Some(lease))) = current else {
                return Ok(());
            };
            let lease: LeaseHolder = serde_json::from_str(&lease).map_err(corrupt)?;
            if lease.id != holder_id {
                return Ok(());
            }
            let r = sqlx::query(
                "UPDATE deploy_targets SET version = $1, lease = NULL, updated_at = $2 \
                 WHERE target = $3 AND version = $4",
            )
            .bind(version + 1)
            .bind(now_ms())
            .bind(target)
            .bind(version)
            .execute(&db.pool)
            .await?;
            if r.rows_affected() == 1 {
                return Ok(());
            }
        }
        Err(StoreError::Config(format!(
            "the lease of {target} kept changing under {CAS_ATTEMPTS} attempts to release it"
        )))
    }
}

// ---- HTTP ----

/// Who may call: a user with `needed`, or a running job (any project: its
/// records are tied to its own project).
async fn caller(app: &Shared, headers: &HeaderMap, needed: Role) -> Result<Writer, ApiError> {
    if let Some(token) = job_token(headers) {
        let job = app
            .store
            .job_by_token(&token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if job.status != "running" {
            return Err(ApiError::Forbidden);
        }
        return Ok(Writer {
            project_id: Some(job.project_id),
            environment: job.environment.clone(),
            job_id: Some(job.id),
            user_id: job.user_id,
        });
    }
    let user = require_user(app, headers, needed).await?;
    Ok(Writer {
        user_id: Some(user.id),
        ..Writer::default()
    })
}

#[derive(Debug, Deserialize)]
pub struct RecordsQuery {
    /// Exactly this target.
    target: Option<String>,
    /// Targets matching this filter (see `gantry deployments`).
    filter: Option<String>,
}

/// `GET /api/v4/deploy_history/records?target=T` or `?filter=F`.
pub async fn list_records(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<RecordsQuery>,
) -> Result<Json<Vec<DeploymentRecord>>, ApiError> {
    caller(&app, &headers, Role::Viewer).await?;
    let rows = HistoryRows(&app.store);
    let found = match &q.target {
        Some(t) => rows.of_target(t).await?,
        None => rows.matching(q.filter.as_deref()).await?,
    };
    Ok(Json(found.into_iter().map(|r| r.record).collect()))
}

/// `PUT /api/v4/deploy_history/records/{id}`: inserts or replaces a record.
pub async fn put_record(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(record): Json<DeploymentRecord>,
) -> Result<Response, ApiError> {
    let by = caller(&app, &headers, Role::Developer).await?;
    if record.id != id {
        return Err(ApiError::BadRequest(format!(
            "the record's id {:?} differs from the URL's {id:?}",
            record.id
        )));
    }
    if record.target.is_empty() || record.id.is_empty() {
        return Err(ApiError::BadRequest(
            "a record needs an id and a target".into(),
        ));
    }
    HistoryRows(&app.store).save(&record, &by).await?;
    Ok((StatusCode::OK, Json(record)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct LeaseRequest {
    target: String,
    holder: LeaseHolder,
}

/// `POST /api/v4/deploy_history/leases {"target", "holder"}`: answers
/// `{"acquired": true}` or `{"acquired": false, "holder": …}`.
pub async fn acquire_lease(
    State(app): State<Shared>,
    headers: HeaderMap,
    Json(req): Json<LeaseRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller(&app, &headers, Role::Developer).await?;
    if req.target.is_empty() || req.holder.id.is_empty() {
        return Err(ApiError::BadRequest(
            "a lease needs a target and a holder id".into(),
        ));
    }
    Ok(Json(
        match HistoryRows(&app.store)
            .acquire_lease(&req.target, &req.holder)
            .await?
        {
            LeaseAttempt::Acquired => json!({"acquired": true}),
            LeaseAttempt::Held(h) => json!({"acquired": false, "holder": h}),
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct ReleaseQuery {
    target: String,
    holder_id: String,
}

/// `DELETE /api/v4/deploy_history/leases?target=T&holder_id=ID`.
pub async fn release_lease(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ReleaseQuery>,
) -> Result<StatusCode, ApiError> {
    caller(&app, &headers, Role::Developer).await?;
    HistoryRows(&app.store)
        .release_lease(&q.target, &q.holder_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
