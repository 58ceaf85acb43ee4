//! Rows of the triggers that are not webhooks or the API: the heads each
//! polled remote had ([`crate::poller`]), the links from a trigger job to
//! its downstream pipeline and who played it ([`crate::children`]). Kept apart from
//! [`crate::store`]; the tables come from the server's migrations.

use crate::error::StoreError;
use crate::now_ms;
use crate::store::Store;

/// Links a new child pipeline to its parent inside the transaction that
/// creates it (a trigger job has at most one child).
pub(crate) async fn link_child(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    child_pipeline_id: i64,
    parent_pipeline_id: i64,
    trigger_job_id: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO pipeline_links (child_pipeline_id, parent_pipeline_id, trigger_job_id) \
         VALUES ($1, $2, $3)",
    )
    .bind(child_pipeline_id)
    .bind(parent_pipeline_id)
    .bind(trigger_job_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A parent's link to one child pipeline.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PipelineLink {
    pub child_pipeline_id: i64,
    pub parent_pipeline_id: i64,
    pub trigger_job_id: i64,
}

impl Store {
    /// Records who played a trigger job: its downstream pipeline is created
    /// as that user (GitLab's `PlayBridgeService`).
    pub async fn set_trigger_job_user(&self, job_id: i64, user_id: i64) -> Result<(), StoreError> {
        let _w = self.db.write_lock().await;
        sqlx::query("UPDATE jobs SET user_id = $1 WHERE id = $2")
            .bind(user_id)
            .bind(job_id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// The parent of a child pipeline.
    pub async fn parent_link(
        &self,
        child_pipeline_id: i64,
    ) -> Result<Option<PipelineLink>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT child_pipeline_id, parent_pipeline_id, trigger_job_id FROM pipeline_links \
             WHERE child_pipeline_id = $1",
        )
        .bind(child_pipeline_id)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    /// The child pipelines a pipeline's trigger jobs created.
    pub async fn child_links(
        &self,
        parent_pipeline_id: i64,
    ) -> Result<Vec<PipelineLink>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT child_pipeline_id, parent_pipeline_id, trigger_job_id FROM pipeline_links \
             WHERE parent_pipeline_id = $1 ORDER BY child_pipeline_id",
        )
        .bind(parent_pipeline_id)
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// The heads (JSON) a project's remote had at the last poll, and the
    /// row's version; `None` before the first poll.
    pub async fn poll_heads(&self, project_id: i64) -> Result<Option<(String, i64)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT heads, version FROM poll_heads WHERE project_id = $1")
                .bind(project_id)
                .fetch_optional(&self.db.pool)
                .await?,
        )
    }

    /// Stores the heads of a poll if the row is still at `version` (`None`:
    /// no row yet). False when another server polled meanwhile: that one
    /// creates the pipelines.
    pub async fn claim_poll_heads(
        &self,
        project_id: i64,
        version: Option<i64>,
        heads: &str,
    ) -> Result<bool, StoreError> {
        let _w = self.db.write_lock().await;
        let now = now_ms();
        let r = match version {
            Some(v) => {
                sqlx::query(
                    "UPDATE poll_heads SET heads = $1, version = version + 1, polled_at = $2 \
                     WHERE project_id = $3 AND version = $4",
                )
                .bind(heads)
                .bind(now)
                .bind(project_id)
                .bind(v)
                .execute(&self.db.pool)
                .await
            }
            None => {
                sqlx::query(
                    "INSERT INTO poll_heads (project_id, heads, version, polled_at) \
                     VALUES ($1, $2, 1, $3) ON CONFLICT (project_id) DO NOTHING",
                )
                .bind(project_id)
                .bind(heads)
                .bind(now)
                .execute(&self.db.pool)
                .await
            }
        }?;
        Ok(r.rows_affected() == 1)
    }
}
