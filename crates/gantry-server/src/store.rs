//! Every row the server keeps, and the queries over them. One code path for
//! SQLite and PostgreSQL (runtime queries, `$N` placeholders). Job status
//! changes are conditional updates (`… WHERE status = $old`) and each is
//! recorded in `job_transitions`, so two servers or two runners racing for
//! one row cannot both win.

use crate::crypto::{self, ServerKey};
use crate::db::{Backend, Db};
use crate::error::StoreError;
use crate::now_ms;
use serde::Serialize;
use sqlx::Row;

/// User roles, most powerful first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Maintainer,
    Developer,
    Viewer,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "maintainer" => Role::Maintainer,
            "developer" => Role::Developer,
            "viewer" => Role::Viewer,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Maintainer => "maintainer",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }
    /// Whether this role includes `needed` (admin ⊇ maintainer ⊇ developer ⊇ viewer).
    pub fn allows(self, needed: Role) -> bool {
        self <= needed
    }
}

#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub email: String,
    pub role: String,
    pub created_at: i64,
}

impl User {
    /// The system bot acts as a developer (it stops environments whose
    /// deployer is unknown); it has no password and no token.
    pub fn role(&self) -> Role {
        if self.is_bot() {
            return Role::Developer;
        }
        Role::parse(&self.role).unwrap_or(Role::Viewer)
    }

    /// The internal system user (`role = 'bot'`), which cannot log in.
    pub fn is_bot(&self) -> bool {
        self.role == BOT_ROLE
    }
}

/// The stored role of the internal system user.
pub const BOT_ROLE: &str = "bot";

#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct Project {
    pub id: i64,
    pub path: String,
    pub name: String,
    pub source_url: String,
    pub default_branch: String,
    #[serde(skip)]
    pub webhook_secret: String,
    pub ci_config_path: String,
    pub created_at: i64,
    pub creator_id: Option<i64>,
    /// Bumped by every fetch of the project's remote on any server: a
    /// server whose mirror followed an older one fetches before reading
    /// the project for another's `include:project`.
    #[serde(skip)]
    pub mirror_version: i64,
}

#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct Pipeline {
    pub id: i64,
    pub project_id: i64,
    pub iid: i64,
    #[sqlx(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub before_sha: String,
    pub tag: i64,
    pub source: String,
    pub status: String,
    pub protected: i64,
    pub user_id: Option<i64>,
    /// JSON `[{"key":…,"value":…}]` given when the pipeline was created.
    #[serde(skip)]
    pub variables: String,
    pub name: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct Job {
    pub id: i64,
    pub pipeline_id: i64,
    pub project_id: i64,
    pub name: String,
    pub stage: String,
    pub stage_idx: i64,
    pub status: String,
    pub when_: String,
    pub allow_failure: i64,
    pub tags: String,
    pub resource_group: Option<String>,
    pub interruptible: i64,
    pub attempt: i64,
    pub retried: i64,
    /// The planned job (`gantry_config::model::Job`) as JSON.
    #[serde(skip)]
    pub spec: String,
    pub runner_id: Option<i64>,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i64>,
    pub environment: Option<String>,
    #[serde(skip)]
    pub dotenv: Option<String>,
    pub artifact_size: Option<i64>,
    pub user_id: Option<i64>,
    pub created_at: i64,
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub heartbeat_at: Option<i64>,
    pub scheduled_at: Option<i64>,
}

impl Job {
    pub fn tag_list(&self) -> Vec<String> {
        serde_json::from_str(&self.tags).unwrap_or_default()
    }
    pub fn is_finished(&self) -> bool {
        is_finished(&self.status)
    }
}

/// Statuses after which a job never changes again (a retry is a new row).
pub fn is_finished(status: &str) -> bool {
    matches!(status, "success" | "failed" | "canceled" | "skipped")
}

#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct Runner {
    pub id: i64,
    pub description: String,
    pub tags: String,
    pub run_untagged: i64,
    pub executor: String,
    pub concurrency: i64,
    pub contacted_at: i64,
    pub created_at: i64,
    pub active: i64,
}

impl Runner {
    pub fn tag_list(&self) -> Vec<String> {
        serde_json::from_str(&self.tags).unwrap_or_default()
    }
    /// GitLab's matching: every job tag is a runner tag; an untagged job
    /// needs a runner that takes untagged jobs.
    pub fn can_run(&self, job_tags: &[String]) -> bool {
        if job_tags.is_empty() {
            return self.run_untagged != 0;
        }
        let mine = self.tag_list();
        job_tags.iter().all(|t| mine.contains(t))
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct VariableRow {
    pub id: i64,
    pub project_id: i64,
    pub key: String,
    pub value_enc: String,
    pub variable_type: String,
    pub masked: i64,
    pub protected: i64,
    pub raw: i64,
    pub environment_scope: String,
}

/// A variable with its value decrypted.
#[derive(Clone, Debug, Serialize)]
pub struct Variable {
    pub key: String,
    pub value: String,
    pub variable_type: String,
    pub masked: bool,
    pub protected: bool,
    pub raw: bool,
    pub environment_scope: String,
}

#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct Schedule {
    pub id: i64,
    pub project_id: i64,
    pub description: String,
    #[sqlx(rename = "ref")]
    pub git_ref: String,
    pub cron: String,
    pub cron_timezone: String,
    pub active: i64,
    #[serde(skip)]
    pub variables: String,
    pub next_run_at: i64,
    pub last_pipeline_id: Option<i64>,
    pub owner_id: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct Environment {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub url: Option<String>,
    pub tier: String,
    pub state: String,
    pub created_at: i64,
    /// The `environment:on_stop` job of the last successful deploy.
    pub stop_job_id: Option<i64>,
    /// When the sweeper stops it (`environment:auto_stop_in`), ms.
    pub auto_stop_at: Option<i64>,
}

#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct Deployment {
    pub id: i64,
    pub project_id: i64,
    pub environment_id: i64,
    pub job_id: Option<i64>,
    pub pipeline_id: Option<i64>,
    #[sqlx(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub status: String,
    pub user_id: Option<i64>,
    pub revision: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// A job to insert with its pipeline.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub name: String,
    pub stage: String,
    pub stage_idx: i64,
    pub when: String,
    pub allow_failure: bool,
    pub tags: Vec<String>,
    pub resource_group: Option<String>,
    pub interruptible: bool,
    pub environment: Option<String>,
    pub spec: String,
}

/// A pipeline to insert.
#[derive(Clone, Debug)]
pub struct NewPipeline {
    pub project_id: i64,
    pub git_ref: String,
    pub sha: String,
    pub before_sha: String,
    pub tag: bool,
    pub source: String,
    pub protected: bool,
    pub user_id: Option<i64>,
    pub variables: String,
    pub spec: String,
    pub name: Option<String>,
    pub jobs: Vec<NewJob>,
    /// A child pipeline: its parent pipeline and trigger job.
    pub parent: Option<(i64, i64)>,
}

/// One conditional status change of a job row.
#[derive(Clone, Debug)]
pub struct Transition<'a> {
    pub job_id: i64,
    pub from: &'a str,
    pub to: &'a str,
    pub reason: Option<&'a str>,
    /// For `scheduled`: when the delayed job starts.
    pub scheduled_at: Option<i64>,
}

/// What a claim hands a runner.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub job: Job,
    pub token: String,
}

const JOB_COLUMNS: &str = "id, pipeline_id, project_id, name, stage, stage_idx, status, when_, \
    allow_failure, tags, resource_group, interruptible, attempt, retried, spec, runner_id, \
    failure_reason, exit_code, environment, dotenv, artifact_size, user_id, created_at, \
    queued_at, started_at, finished_at, heartbeat_at, scheduled_at";
/// The job columns without the large ones (spec, dotenv): what the
/// scheduler reads on every event.
const JOB_STATE_COLUMNS: &str = "id, pipeline_id, project_id, name, stage, stage_idx, status, when_, \
    allow_failure, tags, resource_group, interruptible, attempt, retried, '' AS spec, runner_id, \
    failure_reason, exit_code, environment, NULL AS dotenv, artifact_size, user_id, created_at, \
    queued_at, started_at, finished_at, heartbeat_at, scheduled_at";
const PIPELINE_COLUMNS: &str = "id, project_id, iid, ref, sha, before_sha, tag, source, status, \
    protected, user_id, variables, name, error, created_at, updated_at, started_at, finished_at";
const PROJECT_COLUMNS: &str = "id, path, name, source_url, default_branch, webhook_secret, \
    ci_config_path, created_at, creator_id, mirror_version";
const RUNNER_COLUMNS: &str = "id, description, tags, run_untagged, executor, concurrency, \
    contacted_at, created_at, active";

/// The store: the database and the key secrets are encrypted with.
pub struct Store {
    pub db: Db,
    pub key: ServerKey,
}

fn b(v: bool) -> i64 {
    v as i64
}

impl Store {
    pub fn backend(&self) -> Backend {
        self.db.backend
    }

    // ---- users and tokens ----

    /// On first start with `GANTRY_ADMIN_TOKEN`: an administrator `root`
    /// whose API token is that value. Later starts leave users alone.
    pub async fn bootstrap_admin(&self, token: &str) -> Result<bool, StoreError> {
        let _w = self.db.write_lock().await;
        let mut tx = self.db.pool.begin().await?;
        // The system bot does not count: it may exist before the first admin.
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users WHERE role <> 'bot'")
            .fetch_one(&mut *tx)
            .await?;
        if count > 0 {
            return Ok(false);
        }
        let now = now_ms();
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO users (username, name, email, role, password_hash, created_at) \
             VALUES ('root', 'Administrator', 'admin@localhost', 'admin', NULL, $1) RETURNING id",
        )
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO api_tokens (user_id, name, token_hash, created_at, revoked) VALUES ($1, 'bootstrap', $2, $3, 0)",
        )
        .bind(id)
        .bind(crypto::token_hash(token))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A user and a new API token for them.
    pub async fn create_user(
        &self,
        username: &str,
        name: &str,
        email: &str,
        role: Role,
    ) -> Result<(User, String), StoreError> {
        let _w = self.db.write_lock().await;
        let now = now_ms();
        let mut tx = self.db.pool.begin().await?;
        let user: User = sqlx::query_as(
            "INSERT INTO users (username, name, email, role, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, NULL, $5) RETURNING id, username, name, email, role, created_at",
        )
        .bind(username)
        .bind(name)
        .bind(email)
        .bind(role.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let token = crypto::new_token(crypto::USER_TOKEN_PREFIX);
        sqlx::query(
            "INSERT INTO api_tokens (user_id, name, token_hash, created_at, revoked) VALUES ($1, 'api', $2, $3, 0)",
        )
        .bind(user.id)
        .bind(crypto::token_hash(&token))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((user, token))
    }

    pub async fn user_by_token(&self, token: &str) -> Result<Option<User>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT u.id, u.username, u.name, u.email, u.role, u.created_at FROM users u \
             JOIN api_tokens t ON t.user_id = u.id WHERE t.token_hash = $1 AND t.revoked = 0",
        )
        .bind(crypto::token_hash(token))
        .fetch_optional(&self.db.pool)
        .await?)
    }

    pub async fn user(&self, id: i64) -> Result<Option<User>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, username, name, email, role, created_at FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    // ---- runners ----

    pub async fn register_runner(
        &self,
        description: &str,
        tags: &[String],
        run_untagged: bool,
        executor: &str,
        concurrency: i64,
    ) -> Result<(Runner, String), StoreError> {
        let _w = self.db.write_lock().await;
        let token = crypto::new_token(crypto::RUNNER_TOKEN_PREFIX);
        let now = now_ms();
        let runner: Runner = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO runners (token_hash, description, tags, run_untagged, executor, concurrency, \
             contacted_at, created_at, active) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 1) RETURNING {RUNNER_COLUMNS}"
        )))
        .bind(crypto::token_hash(&token))
        .bind(description)
        .bind(serde_json::to_string(tags).unwrap_or_else(|_| "[]".into()))
        .bind(b(run_untagged))
        .bind(executor)
        .bind(concurrency)
        .bind(now)
        .fetch_one(&self.db.pool)
        .await?;
        Ok((runner, token))
    }

    pub async fn runner_by_token(&self, token: &str) -> Result<Option<Runner>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RUNNER_COLUMNS} FROM runners WHERE token_hash = $1 AND active = 1"
        )))
        .bind(crypto::token_hash(token))
        .fetch_optional(&self.db.pool)
        .await?)
    }

    pub async fn runners(&self) -> Result<Vec<Runner>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RUNNER_COLUMNS} FROM runners ORDER BY id"
        )))
        .fetch_all(&self.db.pool)
        .await?)
    }

    pub async fn touch_runner(&self, id: i64) -> Result<(), StoreError> {
        let _w = self.db.write_lock().await;
        sqlx::query("UPDATE runners SET contacted_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn unregister_runner(&self, id: i64) -> Result<(), StoreError> {
        let _w = self.db.write_lock().await;
        sqlx::query("UPDATE runners SET active = 0 WHERE id = $1")
            .bind(id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    // ---- projects ----

    pub async fn create_project(
        &self,
        path: &str,
        name: &str,
        source_url: &str,
        default_branch: &str,
        creator_id: Option<i64>,
    ) -> Result<Project, StoreError> {
        let _w = self.db.write_lock().await;
        let secret = crypto::new_token("");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO projects (path, name, source_url, default_branch, webhook_secret, ci_config_path, \
             created_at, creator_id) VALUES ($1, $2, $3, $4, $5, '.gitlab-ci.yml', $6, $7) RETURNING {PROJECT_COLUMNS}"
        )))
        .bind(path)
        .bind(name)
        .bind(source_url)
        .bind(default_branch)
        .bind(secret)
        .bind(now_ms())
        .bind(creator_id)
        .fetch_one(&self.db.pool)
        .await?)
    }

    pub async fn set_project_webhook_secret(
        &self,
        id: i64,
        secret: &str,
    ) -> Result<(), StoreError> {
        let _w = self.db.write_lock().await;
        sqlx::query("UPDATE projects SET webhook_secret = $1 WHERE id = $2")
            .bind(secret)
            .bind(id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn set_project_default_branch(
        &self,
        id: i64,
        branch: &str,
    ) -> Result<(), StoreError> {
        let _w = self.db.write_lock().await;
        sqlx::query("UPDATE projects SET default_branch = $1 WHERE id = $2")
            .bind(branch)
            .bind(id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn project(&self, id: i64) -> Result<Option<Project>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    /// Notes a fetch of the project's remote; answers the new version.
    pub async fn bump_mirror_version(&self, project_id: i64) -> Result<i64, StoreError> {
        let _w = self.db.write_lock().await;
        let (version,): (i64,) = sqlx::query_as(
            "UPDATE projects SET mirror_version = mirror_version + 1 WHERE id = $1 \
             RETURNING mirror_version",
        )
        .bind(project_id)
        .fetch_one(&self.db.pool)
        .await?;
        Ok(version)
    }

    pub async fn project_by_path(&self, path: &str) -> Result<Option<Project>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE path = $1"
        )))
        .bind(path)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    pub async fn projects(&self) -> Result<Vec<Project>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PROJECT_COLUMNS} FROM projects ORDER BY id"
        )))
        .fetch_all(&self.db.pool)
        .await?)
    }

    // ---- pipelines ----

    /// Inserts a pipeline and its jobs (status `created`) in one transaction.
    pub async fn create_pipeline(&self, new: &NewPipeline) -> Result<Pipeline, StoreError> {
        let _w = self.db.write_lock().await;
        let now = now_ms();
        let mut tx = self.db.pool.begin().await?;
        let (iid,): (i64,) =
            sqlx::query_as("SELECT COALESCE(MAX(iid), 0) + 1 FROM pipelines WHERE project_id = $1")
                .bind(new.project_id)
                .fetch_one(&mut *tx)
                .await?;
        let status = if new.jobs.is_empty() {
            "skipped"
        } else {
            "created"
        };
        let pipeline: Pipeline = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO pipelines (project_id, iid, ref, sha, before_sha, tag, source, status, protected, \
             user_id, variables, spec, name, error, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL, $14, $14) RETURNING {PIPELINE_COLUMNS}"
        )))
        .bind(new.project_id)
        .bind(iid)
        .bind(&new.git_ref)
        .bind(&new.sha)
        .bind(&new.before_sha)
        .bind(b(new.tag))
        .bind(&new.source)
        .bind(status)
        .bind(b(new.protected))
        .bind(new.user_id)
        .bind(&new.variables)
        .bind(&new.spec)
        .bind(&new.name)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if let Some((parent_pipeline_id, trigger_job_id)) = new.parent {
            crate::store_triggers::link_child(
                &mut tx,
                pipeline.id,
                parent_pipeline_id,
                trigger_job_id,
            )
            .await?;
        }
        for job in &new.jobs {
            insert_job(
                &mut tx,
                pipeline.id,
                new.project_id,
                job,
                1,
                new.user_id,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(pipeline)
    }

    pub async fn pipeline(&self, id: i64) -> Result<Option<Pipeline>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    /// The planned pipeline (`gantry_config::model::Pipeline`) as JSON: the
    /// one large column, read only when the plan is not in memory.
    pub async fn pipeline_spec(&self, id: i64) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT spec FROM pipelines WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.map(|(spec,)| spec))
    }

    /// A project's pipelines, newest first, optionally for one ref or status.
    pub async fn pipelines(
        &self,
        project_id: i64,
        git_ref: Option<&str>,
        status: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Pipeline>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE project_id = $1 \
             AND ($2 = '' OR ref = $2) AND ($3 = '' OR status = $3) ORDER BY id DESC LIMIT $4 OFFSET $5"
        )))
        .bind(project_id)
        .bind(git_ref.unwrap_or(""))
        .bind(status.unwrap_or(""))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// The newest pipeline of every project and ref (the dashboard's overview).
    pub async fn latest_pipelines(&self) -> Result<Vec<Pipeline>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipelines p WHERE id = \
             (SELECT MAX(id) FROM pipelines q WHERE q.project_id = p.project_id AND q.ref = p.ref) \
             ORDER BY project_id, ref"
        )))
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// Pipelines that are not finished (the queue advances these).
    pub async fn active_pipeline_ids(&self) -> Result<Vec<i64>, StoreError> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT id FROM pipelines WHERE status IN ('created', 'pending', 'running', 'waiting_for_resource', 'manual', 'scheduled') ORDER BY id",
        )
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// A pipeline's `state_version` and status (cheap: no spec).
    pub async fn pipeline_state(&self, id: i64) -> Result<Option<(i64, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT state_version, status FROM pipelines WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.db.pool)
                .await?,
        )
    }

    /// Whether a current job of the pipeline has been claimed or has ended.
    pub async fn pipeline_started(&self, id: i64) -> Result<bool, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT id FROM jobs WHERE pipeline_id = $1 AND retried = 0 \
             AND status NOT IN ('created', 'pending', 'waiting_for_resource') LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Several conditional transitions of one pipeline's jobs in one
    /// transaction (the queue's decisions after one event). Answers which
    /// were made, and the pipeline's `state_version` after them.
    pub async fn apply_transitions(
        &self,
        pipeline_id: i64,
        writes: &[Transition<'_>],
    ) -> Result<(Vec<bool>, i64), StoreError> {
        let _w = self.db.write_lock().await;
        let mut tx = self.db.pool.begin().await?;
        let mut made = Vec::with_capacity(writes.len());
        for w in writes {
            let changed = transition_unbumped(&mut tx, w.job_id, w.from, w.to, w.reason).await?;
            if changed && let Some(at) = w.scheduled_at {
                sqlx::query("UPDATE jobs SET scheduled_at = $1 WHERE id = $2")
                    .bind(at)
                    .bind(w.job_id)
                    .execute(&mut *tx)
                    .await?;
            }
            made.push(changed);
        }
        let count = made.iter().filter(|m| **m).count() as i64;
        if count > 0 {
            sqlx::query("UPDATE pipelines SET state_version = state_version + $1 WHERE id = $2")
                .bind(count)
                .bind(pipeline_id)
                .execute(&mut *tx)
                .await?;
        }
        let (version,): (i64,) =
            sqlx::query_as("SELECT state_version FROM pipelines WHERE id = $1")
                .bind(pipeline_id)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok((made, version))
    }

    /// Sets a pipeline's status; start and finish times follow.
    pub async fn set_pipeline_status(&self, id: i64, status: &str) -> Result<(), StoreError> {
        let _w = self.db.write_lock().await;
        let now = now_ms();
        let finished = is_finished(status) || status == "manual";
        sqlx::query(
            "UPDATE pipelines SET status = $1, updated_at = $2, \
             started_at = CASE WHEN started_at IS NULL AND $1 = 'running' THEN $2 ELSE started_at END, \
             finished_at = CASE WHEN $3 = 1 THEN $2 ELSE NULL END WHERE id = $4 AND status <> $1",
        )
        .bind(status)
        .bind(now)
        .bind(b(finished))
        .bind(id)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    // ---- jobs ----

    pub async fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    /// The jobs with these ids (in one query), by id.
    pub async fn jobs_by_id(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, Job>, StoreError> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let rows: Vec<Job> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id IN ({list})"
        )))
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.into_iter().map(|j| (j.id, j)).collect())
    }

    /// A pipeline's jobs in creation order; `include_retried` adds the
    /// superseded attempts.
    pub async fn pipeline_jobs(
        &self,
        pipeline_id: i64,
        include_retried: bool,
    ) -> Result<Vec<Job>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE pipeline_id = $1 AND ($2 = 1 OR retried = 0) ORDER BY id"
        )))
        .bind(pipeline_id)
        .bind(b(include_retried))
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// A pipeline's current jobs without their specs (for scheduling).
    pub async fn pipeline_job_states(&self, pipeline_id: i64) -> Result<Vec<Job>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_STATE_COLUMNS} FROM jobs WHERE pipeline_id = $1 AND retried = 0 ORDER BY id"
        )))
        .bind(pipeline_id)
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// A project's jobs, newest first, optionally with one of `statuses`.
    pub async fn project_jobs(
        &self,
        project_id: i64,
        statuses: &[String],
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Job>, StoreError> {
        let all: Vec<Job> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE project_id = $1 ORDER BY id DESC"
        )))
        .bind(project_id)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(all
            .into_iter()
            .filter(|j| statuses.is_empty() || statuses.contains(&j.status))
            .skip(offset as usize)
            .take(limit as usize)
            .collect())
    }

    /// The running job a job token belongs to.
    pub async fn job_by_token(&self, token: &str) -> Result<Option<Job>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE token_hash = $1"
        )))
        .bind(crypto::token_hash(token))
        .fetch_optional(&self.db.pool)
        .await?)
    }

    pub async fn jobs_with_status(&self, status: &str) -> Result<Vec<Job>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = $1 ORDER BY id"
        )))
        .bind(status)
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// Moves a job from `from` to `to` if it is still in `from`; records
    /// the transition. Returns whether this call made the change.
    pub async fn transition(
        &self,
        job_id: i64,
        from: &str,
        to: &str,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let _w = self.db.write_lock().await;
        let mut tx = self.db.pool.begin().await?;
        let changed = transition_in(&mut tx, job_id, from, to, reason, None).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// [`Store::transition`] of a job a user plays: the job becomes theirs
    /// (GitLab's play sets the job's user).
    pub async fn transition_played(
        &self,
        job_id: i64,
        from: &str,
        to: &str,
        reason: &str,
        user_id: i64,
    ) -> Result<bool, StoreError> {
        let _w = self.db.write_lock().await;
        let mut tx = self.db.pool.begin().await?;
        let changed = transition_in(&mut tx, job_id, from, to, Some(reason), None).await?;
        if changed {
            sqlx::query("UPDATE jobs SET user_id = $1 WHERE id = $2")
                .bind(user_id)
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Sets a delayed job's start time and moves it to `scheduled`.
    pub async fn schedule_job(&self, job_id: i64, at: i64) -> Result<bool, StoreError> {
        let _w = self.db.write_lock().await;
        let mut tx = self.db.pool.begin().await?;
        let changed = transition_in(&mut tx, job_id, "created", "scheduled", None, None).await?;
        if changed {
            sqlx::query("UPDATE jobs SET scheduled_at = $1 WHERE id = $2")
                .bind(at)
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Claims the oldest pending job `runner` can run: exactly once, with
    /// `FOR UPDATE SKIP LOCKED` on PostgreSQL and the single writer on
    /// SQLite; the final conditional update is the guarantee on both.
    pub async fn claim(&self, runner: &Runner) -> Result<Option<Claimed>, StoreError> {
        let _w = self.db.write_lock().await;
        let mut tx = self.db.pool.begin().await?;
        // The oldest pending job whose tags are all the runner's (an
        // untagged one only for a runner that takes them), matched in SQL:
        // one row comes back, and on PostgreSQL one row is locked (each
        // lock is a write there). `can_run` below stays the final word.
        let tags = serde_json::to_string(&runner.tag_list())
            .map_err(|e| StoreError::Corrupt(format!("runner tags: {e}")))?;
        let matching = match self.db.backend {
            Backend::Postgres => {
                "SELECT id, tags FROM jobs WHERE status = 'pending' \
                 AND tags::jsonb <@ $1::jsonb \
                 AND (jsonb_array_length(tags::jsonb) > 0 OR $2 <> 0) \
                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
            }
            Backend::Sqlite => {
                "SELECT id, tags FROM jobs WHERE status = 'pending' \
                 AND NOT EXISTS (SELECT 1 FROM json_each(jobs.tags) AS t \
                   WHERE t.value NOT IN (SELECT value FROM json_each($1))) \
                 AND (json_array_length(jobs.tags) > 0 OR $2 <> 0) \
                 ORDER BY id LIMIT 1"
            }
        };
        let candidates: Vec<(i64, String)> = sqlx::query_as(matching)
            .bind(tags)
            .bind(runner.run_untagged)
            .fetch_all(&mut *tx)
            .await?;
        let Some(id) = candidates.into_iter().find_map(|(id, tags)| {
            let tags: Vec<String> = serde_json::from_str(&tags).unwrap_or_default();
            runner.can_run(&tags).then_some(id)
        }) else {
            return Ok(None);
        };
        let token = crypto::new_token(crypto::JOB_TOKEN_PREFIX);
        let now = now_ms();
        // One statement moves the job and answers it: every statement is a
        // round trip to the database (on SQLite, to its thread).
        let job: Option<Job> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET status = 'running', runner_id = $1, token_hash = $2, \
             started_at = $3, heartbeat_at = $3 WHERE id = $4 AND status = 'pending' \
             RETURNING {JOB_COLUMNS}"
        )))
        .bind(runner.id)
        .bind(crypto::token_hash(&token))
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(job) = job else {
            return Ok(None);
        };
        // A runner claiming a pending job changes nothing the schedule sees:
        // no `state_version` bump (as `transition_in`).
        record_transition(&mut tx, id, "pending", "running", None, now).await?;
        tx.commit().await?;
        Ok(Some(Claimed { job, token }))
    }

    pub async fn heartbeat(&self, job_id: i64) -> Result<(), StoreError> {
        let _w = self.db.write_lock().await;
        sqlx::query("UPDATE jobs SET heartbeat_at = $1 WHERE id = $2 AND status = 'running'")
            .bind(now_ms())
            .bind(job_id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Records a running job's end. Returns its pipeline's state (version
    /// and status) after the write, or `None` when the job was no longer
    /// running (canceled, or already failed as lost).
    pub async fn finish_job(
        &self,
        job_id: i64,
        status: &str,
        failure_reason: Option<&str>,
        exit_code: Option<i64>,
        dotenv: Option<&str>,
    ) -> Result<Option<(i64, String)>, StoreError> {
        let _w = self.db.write_lock().await;
        let mut tx = self.db.pool.begin().await?;
        let now = now_ms();
        // The status and the end's fields in one statement (a job's end is
        // the hot path of dispatch); the transition is recorded as always.
        let changed = sqlx::query(
            "UPDATE jobs SET status = $1, failure_reason = $2, exit_code = $3, dotenv = $4, \
             finished_at = $5, token_hash = NULL WHERE id = $6 AND status = 'running'",
        )
        .bind(status)
        .bind(failure_reason)
        .bind(exit_code)
        .bind(dotenv)
        .bind(now)
        .bind(job_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let mut state = None;
        if changed {
            record_transition(&mut tx, job_id, "running", status, failure_reason, now).await?;
            state = bump_state_version(&mut tx, job_id).await?;
        }
        tx.commit().await?;
        Ok(state)
    }

    /// A job that never ran fails at once with `failure_reason` (GitLab's
    /// `protected_environment_failure`). False when it was not in `from`.
    pub async fn fail_unstarted(
        &self,
        job_id: i64,
        from: &str,
        failure_reason: &str,
    ) -> Result<bool, StoreError> {
        let _w = self.db.write_lock().await;
        let mut tx = self.db.pool.begin().await?;
        let changed =
            transition_in(&mut tx, job_id, from, "failed", Some(failure_reason), None).await?;
        if changed {
            sqlx::query("UPDATE jobs SET failure_reason = $1, finished_at = $2 WHERE id = $3")
                .bind(failure_reason)
                .bind(now_ms())
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Cancels a job that has not finished. Returns the status it had.
    pub async fn cancel_job(
        &self,
        job_id: i64,
        reason: &str,
    ) -> Result<Option<String>, StoreError> {
        let _w = self.db.write_lock().await;
        let mut tx = self.db.pool.begin().await?;
        let Some((status,)): Option<(String,)> =
            sqlx::query_as("SELECT status FROM jobs WHERE id = $1")
                .bind(job_id)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(None);
        };
        if is_finished(&status) {
            return Ok(None);
        }
        if transition_in(&mut tx, job_id, &status, "canceled", Some(reason), None).await? {
            sqlx::query("UPDATE jobs SET finished_at = $1 WHERE id = $2")
                .bind(now_ms())
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(status))
        } else {
            Ok(None)
        }
    }

    /// A new attempt of a finished job (GitLab's retry: a new job row; the
    /// old one is marked retried). The new one starts in `status`.
    pub async fn retry_job(
        &self,
        job: &Job,
        status: &str,
        user_id: Option<i64>,
    ) -> Result<Job, StoreError> {
        let _w = self.db.write_lock().await;
        let now = now_ms();
        let mut tx = self.db.pool.begin().await?;
        let updated = sqlx::query("UPDATE jobs SET retried = 1 WHERE id = $1 AND retried = 0")
            .bind(job.id)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::Config(format!(
                "job {} was already retried",
                job.id
            )));
        }
        bump_state_version(&mut tx, job.id).await?;
        let new = NewJob {
            name: job.name.clone(),
            stage: job.stage.clone(),
            stage_idx: job.stage_idx,
            when: job.when_.clone(),
            allow_failure: job.allow_failure != 0,
            tags: job.tag_list(),
            resource_group: job.resource_group.clone(),
            interruptible: job.interruptible != 0,
            environment: job.environment.clone(),
            spec: job.spec.clone(),
        };
        let id = insert_job(
            &mut tx,
            job.pipeline_id,
            job.project_id,
            &new,
            job.attempt + 1,
            user_id.or(job.user_id),
            now,
        )
        .await?;
        if status != "created" {
            transition_in(&mut tx, id, "created", status, Some("retry"), None).await?;
        }
        let row: Job = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Running jobs whose runner has not been heard from since `before`.
    pub async fn lost_jobs(&self, before: i64) -> Result<Vec<Job>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'running' AND heartbeat_at < $1 ORDER BY id"
        )))
        .bind(before)
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// Whether a job of `project_id` in `group` is pending or running
    /// (a `resource_group` admits one at a time, across pipelines).
    pub async fn resource_group_busy(
        &self,
        project_id: i64,
        group: &str,
    ) -> Result<bool, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM jobs WHERE project_id = $1 AND resource_group = $2 AND status IN ('pending', 'running')",
        )
        .bind(project_id)
        .bind(group)
        .fetch_one(&self.db.pool)
        .await?;
        Ok(n > 0)
    }

    /// Records a job's uploaded artifacts: their size and, from
    /// `artifacts:expire_in`, when the sweeper deletes them.
    pub async fn set_artifact_size(
        &self,
        job_id: i64,
        size: i64,
        expire_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let _w = self.db.write_lock().await;
        sqlx::query("UPDATE jobs SET artifact_size = $1, artifacts_expire_at = $2 WHERE id = $3")
            .bind(size)
            .bind(expire_at)
            .bind(job_id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Records the failed test cases of a job's JUnit reports.
    pub async fn set_junit_failures(
        &self,
        job_id: i64,
        cases: &[String],
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(cases).unwrap_or_else(|_| "[]".into());
        let _w = self.db.write_lock().await;
        sqlx::query("UPDATE jobs SET junit_failures = $1 WHERE id = $2")
            .bind(text)
            .bind(job_id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// The failed test cases of a job's JUnit reports (empty: none reported).
    pub async fn junit_failures(&self, job_id: i64) -> Result<Vec<String>, StoreError> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT junit_failures FROM jobs WHERE id = $1")
                .bind(job_id)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(row
            .and_then(|(t,)| t)
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    }

    /// Jobs whose artifacts expired by `now` (oldest first, at most `limit`).
    pub async fn expired_artifacts(&self, now: i64, limit: i64) -> Result<Vec<i64>, StoreError> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT id FROM jobs WHERE artifacts_expire_at IS NOT NULL AND artifacts_expire_at <= $1 \
             ORDER BY artifacts_expire_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// The job's artifacts are gone (their archive was deleted).
    pub async fn forget_artifacts(&self, job_id: i64) -> Result<(), StoreError> {
        let _w = self.db.write_lock().await;
        sqlx::query(
            "UPDATE jobs SET artifact_size = NULL, artifacts_expire_at = NULL WHERE id = $1",
        )
        .bind(job_id)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Every stored status change of a job, oldest first.
    pub async fn job_transitions(
        &self,
        job_id: i64,
    ) -> Result<Vec<(String, String, Option<String>, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT from_status, to_status, reason, at FROM job_transitions WHERE job_id = $1 ORDER BY id",
        )
        .bind(job_id)
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// Counts of jobs by status (for `/metrics`).
    pub async fn job_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status")
                .fetch_all(&self.db.pool)
                .await?,
        )
    }

    // ---- variables ----

    /// Instance variables have `project_id` 0.
    pub async fn variables(&self, project_id: i64) -> Result<Vec<Variable>, StoreError> {
        let rows: Vec<VariableRow> = sqlx::query_as(
            "SELECT id, project_id, key, value_enc, variable_type, masked, protected, raw, environment_scope \
             FROM variables WHERE project_id = $1 ORDER BY key",
        )
        .bind(project_id)
        .fetch_all(&self.db.pool)
        .await?;
        self.decrypt_variables(rows)
    }

    /// The instance's variables, then the project's (which override them):
    /// what a job of the project gets, in one query.
    pub async fn instance_and_project_variables(
        &self,
        project_id: i64,
    ) -> Result<Vec<Variable>, StoreError> {
        let rows: Vec<VariableRow> = sqlx::query_as(
            "SELECT id, project_id, key, value_enc, variable_type, masked, protected, raw, environment_scope \
             FROM variables WHERE project_id = 0 OR project_id = $1 ORDER BY project_id, key",
        )
        .bind(project_id)
        .fetch_all(&self.db.pool)
        .await?;
        self.decrypt_variables(rows)
    }

    fn decrypt_variables(&self, rows: Vec<VariableRow>) -> Result<Vec<Variable>, StoreError> {
        rows.into_iter()
            .map(|r| {
                Ok(Variable {
                    value: self.key.decrypt(&r.value_enc)?,
                    key: r.key,
                    variable_type: r.variable_type,
                    masked: r.masked != 0,
                    protected: r.protected != 0,
                    raw: r.raw != 0,
                    environment_scope: r.environment_scope,
                })
            })
            .collect()
    }

    /// Creates or replaces a variable (value encrypted with the server key).
    pub async fn put_variable(&self, project_id: i64, v: &Variable) -> Result<(), StoreError> {
        let _w = self.db.write_lock().await;
        let mut tx = self.db.pool.begin().await?;
        sqlx::query(
            "DELETE FROM variables WHERE project_id = $1 AND key = $2 AND environment_scope = $3",
        )
        .bind(project_id)
        .bind(&v.key)
        .bind(&v.environment_scope)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO variables (project_id, key, value_enc, variable_type, masked, protected, raw, \
             environment_scope, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(project_id)
        .bind(&v.key)
        .bind(self.key.encrypt(&v.value))
        .bind(&v.variable_type)
        .bind(b(v.masked))
        .bind(b(v.protected))
        .bind(b(v.raw))
        .bind(&v.environment_scope)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_variable(&self, project_id: i64, key: &str) -> Result<bool, StoreError> {
        let _w = self.db.write_lock().await;
        let r = sqlx::query("DELETE FROM variables WHERE project_id = $1 AND key = $2")
            .bind(project_id)
            .bind(key)
            .execute(&self.db.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- schedules ----

    #[allow(clippy::too_many_arguments)]
    pub async fn create_schedule(
        &self,
        project_id: i64,
        description: &str,
        git_ref: &str,
        cron: &str,
        timezone: &str,
        active: bool,
        next_run_at: i64,
        owner_id: Option<i64>,
    ) -> Result<Schedule, StoreError> {
        let _w = self.db.write_lock().await;
        let now = now_ms();
        Ok(sqlx::query_as(
            "INSERT INTO schedules (project_id, description, ref, cron, cron_timezone, active, variables, \
             next_run_at, last_pipeline_id, owner_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, '[]', $7, NULL, $8, $9, $9) RETURNING id, project_id, description, ref, \
             cron, cron_timezone, active, variables, next_run_at, last_pipeline_id, owner_id, created_at, updated_at",
        )
        .bind(project_id)
        .bind(description)
        .bind(git_ref)
        .bind(cron)
        .bind(timezone)
        .bind(b(active))
        .bind(next_run_at)
        .bind(owner_id)
        .bind(now)
        .fetch_one(&self.db.pool)
        .await?)
    }

    pub async fn schedules(&self, project_id: Option<i64>) -> Result<Vec<Schedule>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, project_id, description, ref, cron, cron_timezone, active, variables, next_run_at, \
             last_pipeline_id, owner_id, created_at, updated_at FROM schedules \
             WHERE ($1 = 0 OR project_id = $1) ORDER BY id",
        )
        .bind(project_id.unwrap_or(0))
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// Moves a due schedule to its next run; false when another server did.
    pub async fn advance_schedule(
        &self,
        id: i64,
        expected_next: i64,
        next: i64,
        pipeline_id: Option<i64>,
    ) -> Result<bool, StoreError> {
        let _w = self.db.write_lock().await;
        let r = sqlx::query(
            "UPDATE schedules SET next_run_at = $1, last_pipeline_id = COALESCE($2, last_pipeline_id), updated_at = $3 \
             WHERE id = $4 AND next_run_at = $5",
        )
        .bind(next)
        .bind(pipeline_id)
        .bind(now_ms())
        .bind(id)
        .bind(expected_next)
        .execute(&self.db.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    // ---- environments and deployments ----

    /// Records a deployment of a job to its environment (created on first use).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_deployment(
        &self,
        project_id: i64,
        environment: &str,
        url: Option<&str>,
        tier: &str,
        job_id: i64,
        pipeline: &Pipeline,
        status: &str,
        user_id: Option<i64>,
    ) -> Result<(), StoreError> {
        let _w = self.db.write_lock().await;
        let now = now_ms();
        let mut tx = self.db.pool.begin().await?;
        let existing: Option<(i64,)> =
            sqlx::query_as("SELECT id FROM environments WHERE project_id = $1 AND name = $2")
                .bind(project_id)
                .bind(environment)
                .fetch_optional(&mut *tx)
                .await?;
        let env_id = match existing {
            Some((id,)) => {
                sqlx::query("UPDATE environments SET url = COALESCE($1, url), state = 'available' WHERE id = $2")
                    .bind(url)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                id
            }
            None => {
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO environments (project_id, name, url, tier, state, created_at) \
                     VALUES ($1, $2, $3, $4, 'available', $5) RETURNING id",
                )
                .bind(project_id)
                .bind(environment)
                .bind(url)
                .bind(tier)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                id
            }
        };
        sqlx::query(
            "INSERT INTO deployments (project_id, environment_id, job_id, pipeline_id, ref, sha, status, user_id, \
             revision, created_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $9)",
        )
        .bind(project_id)
        .bind(env_id)
        .bind(job_id)
        .bind(pipeline.id)
        .bind(&pipeline.git_ref)
        .bind(&pipeline.sha)
        .bind(status)
        .bind(user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn environments(&self, project_id: i64) -> Result<Vec<Environment>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, project_id, name, url, tier, state, created_at, stop_job_id, auto_stop_at FROM environments WHERE project_id = $1 ORDER BY name",
        )
        .bind(project_id)
        .fetch_all(&self.db.pool)
        .await?)
    }

    pub async fn deployments(&self, project_id: i64) -> Result<Vec<Deployment>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, project_id, environment_id, job_id, pipeline_id, ref, sha, status, user_id, revision, \
             created_at, finished_at FROM deployments WHERE project_id = $1 ORDER BY id DESC",
        )
        .bind(project_id)
        .fetch_all(&self.db.pool)
        .await?)
    }

    // ---- settings ----

    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }
}

async fn insert_job(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    pipeline_id: i64,
    project_id: i64,
    job: &NewJob,
    attempt: i64,
    user_id: Option<i64>,
    now: i64,
) -> Result<i64, StoreError> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO jobs (pipeline_id, project_id, name, stage, stage_idx, status, when_, allow_failure, tags, \
         resource_group, interruptible, attempt, retried, spec, environment, user_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'created', $6, $7, $8, $9, $10, $11, 0, $12, $13, $14, $15) RETURNING id",
    )
    .bind(pipeline_id)
    .bind(project_id)
    .bind(&job.name)
    .bind(&job.stage)
    .bind(job.stage_idx)
    .bind(&job.when)
    .bind(b(job.allow_failure))
    .bind(serde_json::to_string(&job.tags).unwrap_or_else(|_| "[]".into()))
    .bind(&job.resource_group)
    .bind(b(job.interruptible))
    .bind(attempt)
    .bind(&job.spec)
    .bind(&job.environment)
    .bind(user_id)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    Ok(id)
}

/// Counts a change of a job row the schedule sees in its pipeline's
/// `state_version`: a live schedule kept in memory (see [`crate::queue`])
/// is current only while that number is what its own writes made it.
async fn bump_state_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job_id: i64,
) -> Result<Option<(i64, String)>, StoreError> {
    Ok(sqlx::query_as(
        "UPDATE pipelines SET state_version = state_version + 1 \
         WHERE id = (SELECT pipeline_id FROM jobs WHERE id = $1) \
         RETURNING state_version, status",
    )
    .bind(job_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// The conditional status update every transition goes through.
async fn transition_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job_id: i64,
    from: &str,
    to: &str,
    reason: Option<&str>,
    _runner: Option<i64>,
) -> Result<bool, StoreError> {
    let changed = transition_unbumped(tx, job_id, from, to, reason).await?;
    // A runner claiming a pending job changes nothing the schedule sees.
    if changed && !(from == "pending" && to == "running") {
        bump_state_version(tx, job_id).await?;
    }
    Ok(changed)
}

/// [`transition_in`] without counting it in `state_version` (the caller
/// counts a batch at once).
async fn transition_unbumped(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job_id: i64,
    from: &str,
    to: &str,
    reason: Option<&str>,
) -> Result<bool, StoreError> {
    let now = now_ms();
    let r = sqlx::query(
        "UPDATE jobs SET status = $1, queued_at = CASE WHEN $1 = 'pending' THEN $2 ELSE queued_at END \
         WHERE id = $3 AND status = $4",
    )
    .bind(to)
    .bind(now)
    .bind(job_id)
    .bind(from)
    .execute(&mut **tx)
    .await?;
    if r.rows_affected() != 1 {
        return Ok(false);
    }
    record_transition(tx, job_id, from, to, reason, now).await?;
    Ok(true)
}

/// The row that stores one state transition of a job.
async fn record_transition(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job_id: i64,
    from: &str,
    to: &str,
    reason: Option<&str>,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO job_transitions (job_id, from_status, to_status, reason, at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(job_id)
    .bind(from)
    .bind(to)
    .bind(reason)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
