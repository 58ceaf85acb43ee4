//! The database: SQLite (embedded default) or PostgreSQL behind one sqlx
//! `Any` pool, so every query is written once with `$N` placeholders.
//! Migrations are plain SQL run at start; the few type differences
//! (auto-increment keys, blobs) are filled in per backend.

use crate::error::StoreError;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};

/// Which database the pool talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The pool and what it needs to know about its backend.
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    /// SQLite has one writer: mutating transactions take this first, so
    /// they queue here instead of failing with SQLITE_BUSY.
    writer: Mutex<()>,
}

/// Each migration once, in order. `{ID}` is the auto-increment primary key.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
  id {ID}, username TEXT NOT NULL UNIQUE, name TEXT NOT NULL, email TEXT NOT NULL,
  role TEXT NOT NULL, password_hash TEXT, created_at BIGINT NOT NULL);
CREATE TABLE api_tokens (
  id {ID}, user_id BIGINT NOT NULL REFERENCES users(id), name TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE, created_at BIGINT NOT NULL, revoked BIGINT NOT NULL);
CREATE TABLE runners (
  id {ID}, token_hash TEXT NOT NULL UNIQUE, description TEXT NOT NULL, tags TEXT NOT NULL,
  run_untagged BIGINT NOT NULL, executor TEXT NOT NULL, concurrency BIGINT NOT NULL,
  contacted_at BIGINT NOT NULL, created_at BIGINT NOT NULL, active BIGINT NOT NULL);
CREATE TABLE projects (
  id {ID}, path TEXT NOT NULL UNIQUE, name TEXT NOT NULL, source_url TEXT NOT NULL,
  default_branch TEXT NOT NULL, webhook_secret TEXT NOT NULL, ci_config_path TEXT NOT NULL,
  created_at BIGINT NOT NULL, creator_id BIGINT);
CREATE TABLE pipelines (
  id {ID}, project_id BIGINT NOT NULL REFERENCES projects(id), iid BIGINT NOT NULL,
  ref TEXT NOT NULL, sha TEXT NOT NULL, before_sha TEXT NOT NULL, tag BIGINT NOT NULL,
  source TEXT NOT NULL, status TEXT NOT NULL, protected BIGINT NOT NULL, user_id BIGINT,
  variables TEXT NOT NULL, spec TEXT NOT NULL, name TEXT, error TEXT,
  created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, started_at BIGINT, finished_at BIGINT);
CREATE INDEX pipelines_project_ref ON pipelines(project_id, ref, id);
CREATE INDEX pipelines_status ON pipelines(status, id);
CREATE TABLE jobs (
  id {ID}, pipeline_id BIGINT NOT NULL REFERENCES pipelines(id), project_id BIGINT NOT NULL,
  name TEXT NOT NULL, stage TEXT NOT NULL, stage_idx BIGINT NOT NULL, status TEXT NOT NULL,
  when_ TEXT NOT NULL, allow_failure BIGINT NOT NULL, tags TEXT NOT NULL, resource_group TEXT,
  interruptible BIGINT NOT NULL, attempt BIGINT NOT NULL, retried BIGINT NOT NULL,
  spec TEXT NOT NULL, runner_id BIGINT, token_hash TEXT, failure_reason TEXT, exit_code BIGINT,
  environment TEXT, dotenv TEXT, artifact_size BIGINT, user_id BIGINT,
  created_at BIGINT NOT NULL, queued_at BIGINT, started_at BIGINT, finished_at BIGINT,
  heartbeat_at BIGINT, scheduled_at BIGINT);
CREATE INDEX jobs_status ON jobs(status, id);
CREATE INDEX jobs_pipeline ON jobs(pipeline_id, id);
CREATE INDEX jobs_token ON jobs(token_hash);
CREATE TABLE job_transitions (
  id {ID}, job_id BIGINT NOT NULL, from_status TEXT NOT NULL, to_status TEXT NOT NULL,
  reason TEXT, at BIGINT NOT NULL);
CREATE INDEX job_transitions_job ON job_transitions(job_id, id);
CREATE TABLE variables (
  id {ID}, project_id BIGINT NOT NULL, key TEXT NOT NULL, value_enc TEXT NOT NULL,
  variable_type TEXT NOT NULL, masked BIGINT NOT NULL, protected BIGINT NOT NULL,
  raw BIGINT NOT NULL, environment_scope TEXT NOT NULL, created_at BIGINT NOT NULL,
  UNIQUE(project_id, key, environment_scope));
CREATE TABLE schedules (
  id {ID}, project_id BIGINT NOT NULL REFERENCES projects(id), description TEXT NOT NULL,
  ref TEXT NOT NULL, cron TEXT NOT NULL, cron_timezone TEXT NOT NULL, active BIGINT NOT NULL,
  variables TEXT NOT NULL, next_run_at BIGINT NOT NULL, last_pipeline_id BIGINT,
  owner_id BIGINT, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE environments (
  id {ID}, project_id BIGINT NOT NULL REFERENCES projects(id), name TEXT NOT NULL,
  url TEXT, tier TEXT NOT NULL, state TEXT NOT NULL, created_at BIGINT NOT NULL,
  UNIQUE(project_id, name));
CREATE TABLE deployments (
  id {ID}, project_id BIGINT NOT NULL, environment_id BIGINT NOT NULL, job_id BIGINT,
  pipeline_id BIGINT, ref TEXT NOT NULL, sha TEXT NOT NULL, status TEXT NOT NULL,
  user_id BIGINT, revision TEXT, created_at BIGINT NOT NULL, finished_at BIGINT);
CREATE INDEX deployments_env ON deployments(environment_id, id);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)
"#,
    r#"
CREATE TABLE deploy_targets (
  target TEXT PRIMARY KEY, version BIGINT NOT NULL, lease TEXT, updated_at BIGINT NOT NULL);
CREATE TABLE deploy_records (
  id {ID}, record_id TEXT NOT NULL UNIQUE, target TEXT NOT NULL, version BIGINT NOT NULL,
  started_at TEXT NOT NULL, revision TEXT NOT NULL, known_good BIGINT NOT NULL,
  record TEXT NOT NULL, project_id BIGINT, environment TEXT, job_id BIGINT, user_id BIGINT,
  created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE INDEX deploy_records_target ON deploy_records(target, started_at);
CREATE INDEX deploy_records_project ON deploy_records(project_id, environment)
"#,
    r#"
ALTER TABLE pipelines ADD COLUMN state_version BIGINT NOT NULL DEFAULT 0
"#,
    r#"
ALTER TABLE jobs ADD COLUMN artifacts_expire_at BIGINT;
CREATE INDEX jobs_artifacts_expire ON jobs(artifacts_expire_at)
"#,
    // The dashboard's tables. Servers before this migration created them on
    // the first page served, hence IF NOT EXISTS.
    r#"
CREATE TABLE IF NOT EXISTS dashboard_sessions (
  id {ID}, token_hash TEXT NOT NULL UNIQUE, user_id BIGINT NOT NULL REFERENCES users(id),
  csrf TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS dashboard_approvals (
  id {ID}, job_id BIGINT NOT NULL, user_id BIGINT NOT NULL, username TEXT NOT NULL,
  environment TEXT NOT NULL, at BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS dashboard_approvals_job ON dashboard_approvals(job_id);
CREATE INDEX IF NOT EXISTS pipelines_user ON pipelines(user_id, id);
CREATE INDEX IF NOT EXISTS pipelines_ref_id ON pipelines(ref, id)
"#,
    r#"
ALTER TABLE jobs ADD COLUMN junit_failures TEXT
"#,
    // Polling: the heads each project's remote had at the last poll. Child
    // pipelines: the trigger job that created a pipeline.
    r#"
CREATE TABLE poll_heads (
  project_id BIGINT PRIMARY KEY, heads TEXT NOT NULL, version BIGINT NOT NULL,
  polled_at BIGINT NOT NULL);
CREATE TABLE pipeline_links (
  child_pipeline_id BIGINT PRIMARY KEY, parent_pipeline_id BIGINT NOT NULL,
  trigger_job_id BIGINT NOT NULL UNIQUE)
"#,
    // Protected environments per project (the dashboard's approvals).
    r#"
CREATE TABLE dashboard_protected_environments (
  id {ID}, project_id BIGINT NOT NULL REFERENCES projects(id), name TEXT NOT NULL,
  required_role TEXT NOT NULL, approvers TEXT NOT NULL, created_by TEXT NOT NULL,
  created_at BIGINT NOT NULL, UNIQUE (project_id, name))
"#,
    // `environment:on_stop` (the stop job of the last deploy) and `auto_stop_in`.
    r#"
ALTER TABLE environments ADD COLUMN stop_job_id BIGINT;
ALTER TABLE environments ADD COLUMN auto_stop_at BIGINT
"#,
    // The `spec:inputs` a pipeline was created with (JSON), for re-runs.
    // GitLab's `required_approval_count` of a protected environment.
    r#"
CREATE TABLE pipeline_inputs (pipeline_id BIGINT PRIMARY KEY, inputs TEXT NOT NULL);
ALTER TABLE dashboard_protected_environments ADD COLUMN required_approval_count BIGINT NOT NULL DEFAULT 0
"#,
    // Facts every server of one database must agree on (the server key's
    // fingerprint), and when each shared cache was last restored.
    r#"
CREATE TABLE server_facts (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE cache_uses (object TEXT PRIMARY KEY, used_at BIGINT NOT NULL)
"#,
    // Fetches of a project's remote on any server (stale mirrors, see
    // `Repos::is_behind`).
    r#"
ALTER TABLE projects ADD COLUMN mirror_version BIGINT NOT NULL DEFAULT 0
"#,
    // Project membership: a user's role in one project (see `members.rs`).
    r#"
CREATE TABLE project_members (
  project_id BIGINT NOT NULL REFERENCES projects(id), user_id BIGINT NOT NULL REFERENCES users(id),
  role TEXT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (project_id, user_id))
"#,
];

impl Db {
    /// Opens `url` (`sqlite://…` or `postgres://…`) and runs the migrations.
    pub async fn connect(url: &str) -> Result<Db, StoreError> {
        install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Config(format!(
                "unsupported database URL scheme (use sqlite://PATH or postgres://…): {}",
                redact_url(url)
            )));
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            // Few connections: each one drops its page cache whenever another
            // one has written, and writers take turns anyway. Measured with
            // bench/server (dispatch, 1,000-job pipeline): 2 beat 8 by
            // 1.1-1.3x and 1.5x; 1 was slower (a transaction and a read wait
            // on each other).
            options = options.max_connections(2).after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; \
                             PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON",
                    )
                    .await?;
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(16);
        }
        let pool = options
            .connect(url)
            .await
            .map_err(|e| StoreError::Connect {
                url: redact_url(url),
                source: e,
            })?;
        let db = Db {
            pool,
            backend,
            writer: Mutex::new(()),
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Serialises writers on SQLite; a no-op on PostgreSQL.
    pub async fn write_lock(&self) -> Option<MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.writer.lock().await),
            Backend::Postgres => None,
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // Several servers may start at once against one database.
            sqlx::query("SELECT pg_advisory_xact_lock(727274)")
                .execute(&mut *tx)
                .await?;
        }
        tx.execute("CREATE TABLE IF NOT EXISTS gantry_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .await?;
        let applied: Vec<(i64,)> = sqlx::query_as("SELECT version FROM gantry_schema")
            .fetch_all(&mut *tx)
            .await?;
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if applied.iter().any(|(v,)| *v == version) {
                continue;
            }
            let id = match self.backend {
                Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
                Backend::Postgres => "BIGSERIAL PRIMARY KEY",
            };
            let sql = sql.replace("{ID}", id);
            for statement in sql.split(';') {
                if statement.trim().is_empty() {
                    continue;
                }
                // The migration text is a constant of this file.
                tx.execute(sqlx::AssertSqlSafe(statement.to_string()))
                    .await?;
            }
            sqlx::query("INSERT INTO gantry_schema (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(crate::now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
