//! The dashboard's own rows and read queries: browser sessions (with their
//! CSRF token), approvals of protected deployments, passwords, and the
//! overview's queries. Kept apart from [`crate::store`] so the dashboard
//! does not change the server's queries. Its tables are created by the
//! server's migrations ([`crate::db`]).

use crate::crypto;
use crate::error::StoreError;
use crate::now_ms;
use crate::store::{Job, Store, User};

/// The system bot's username.
pub const BOT_USERNAME: &str = "gantry-bot";

/// How long a browser session lasts.
pub const SESSION_MS: i64 = 12 * 3600 * 1000;

/// A browser session: who, and the CSRF token its forms carry.
#[derive(Clone, Debug)]
pub struct SessionRow {
    pub user: User,
    pub csrf: String,
}

/// An approval of a manual deployment job.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Approval {
    pub job_id: i64,
    pub username: String,
    pub environment: String,
    pub at: i64,
}

/// A protected environment of a project: who may deploy to it (approve
/// its manual jobs). A user may when their role includes `required_role`
/// (empty: no role is enough) or they are named in `approvers`.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ProtectedEnvironment {
    pub project_id: i64,
    pub name: String,
    pub required_role: String,
    /// Usernames, comma-separated (empty: none named).
    pub approvers: String,
    pub created_by: String,
    pub created_at: i64,
    /// GitLab's `required_approval_count`: distinct approvals a manual
    /// deploy needs before it runs (0 or 1: the one who plays it).
    pub required_approval_count: i64,
}

impl ProtectedEnvironment {
    pub fn approver_names(&self) -> Vec<&str> {
        self.approvers
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect()
    }
}

/// The overview's filters (empty: any).
#[derive(Clone, Debug, Default)]
pub struct OverviewFilter {
    pub status: String,
    pub project_id: Option<i64>,
    pub git_ref: String,
    pub username: String,
}

/// A pipeline as the overview shows it (no planned spec or variables).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PipelineSummary {
    pub id: i64,
    pub project_id: i64,
    #[sqlx(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub source: String,
    pub status: String,
    pub user_id: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A job as the overview shows it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct JobSummary {
    pub id: i64,
    pub pipeline_id: i64,
    pub name: String,
    pub stage: String,
    pub status: String,
}

const PIPELINE_COLUMNS: &str = "p.id, p.project_id, p.ref, p.sha, p.source, p.status, p.user_id, p.created_at, p.started_at, p.finished_at";

/// The overview's filters on `pipelines p`: $1 status, $2 project, $3 ref,
/// $4 username (empty or 0: any). The user is looked up once by name
/// rather than joined to every row.
const FILTER: &str = "($1 = '' OR p.status = $1) AND ($2 = 0 OR p.project_id = $2) AND ($3 = '' OR p.ref = $3) \
     AND ($4 = '' OR p.user_id = (SELECT id FROM users WHERE username = $4))";

/// A user's columns (id, username, name, email, role, created_at) and one more.
type UserAnd<T> = (i64, String, String, String, String, i64, T);

/// The dashboard's view of the store.
pub struct DashboardStore<'a>(pub &'a Store);

impl DashboardStore<'_> {
    // ---- users ----

    /// A user and their password hash (`None`: no password set).
    pub async fn user_with_password(
        &self,
        username: &str,
    ) -> Result<Option<(User, Option<String>)>, StoreError> {
        let row: Option<UserAnd<Option<String>>> = sqlx::query_as(
            "SELECT id, username, name, email, role, created_at, password_hash FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.0.db.pool)
        .await?;
        Ok(
            row.map(|(id, username, name, email, role, created_at, hash)| {
                (
                    User {
                        id,
                        username,
                        name,
                        email,
                        role,
                        created_at,
                    },
                    hash,
                )
            }),
        )
    }

    pub async fn set_password_hash(&self, user_id: i64, hash: &str) -> Result<(), StoreError> {
        let _w = self.0.db.write_lock().await;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(user_id)
            .execute(&self.0.db.pool)
            .await?;
        Ok(())
    }

    /// The internal system user that acts when no user did (GitLab's
    /// internal bot): it stops environments whose deploying pipeline had no
    /// user. Created on first use, without a password or token, so it
    /// cannot log in.
    pub async fn bot_user(&self) -> Result<User, StoreError> {
        if let Some(bot) = self.find_bot().await? {
            return Ok(bot);
        }
        {
            let _w = self.0.db.write_lock().await;
            // Two servers may race here: the unique username decides.
            sqlx::query(
                "INSERT INTO users (username, name, email, role, password_hash, created_at) \
                 VALUES ($1, 'Gantry system bot', '', $2, NULL, $3) ON CONFLICT (username) DO NOTHING",
            )
            .bind(BOT_USERNAME)
            .bind(crate::store::BOT_ROLE)
            .bind(now_ms())
            .execute(&self.0.db.pool)
            .await?;
        }
        self.find_bot().await?.ok_or_else(|| {
            StoreError::Config(format!(
                "the username `{BOT_USERNAME}` belongs to a person, so the system bot cannot be created; rename that user"
            ))
        })
    }

    async fn find_bot(&self) -> Result<Option<User>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, username, name, email, role, created_at FROM users WHERE role = $1 ORDER BY id LIMIT 1",
        )
        .bind(crate::store::BOT_ROLE)
        .fetch_optional(&self.0.db.pool)
        .await?)
    }

    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, username, name, email, role, created_at FROM users ORDER BY id",
        )
        .fetch_all(&self.0.db.pool)
        .await?)
    }

    // ---- sessions ----

    /// A new session for `user_id`: the cookie value and its CSRF token.
    pub async fn create_session(&self, user_id: i64) -> Result<(String, String), StoreError> {
        let token = crypto::new_token("gses-");
        let csrf = crypto::new_token("");
        let now = now_ms();
        let _w = self.0.db.write_lock().await;
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at < $1")
            .bind(now)
            .execute(&self.0.db.pool)
            .await?;
        sqlx::query(
            "INSERT INTO dashboard_sessions (token_hash, user_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(crypto::token_hash(&token))
        .bind(user_id)
        .bind(&csrf)
        .bind(now)
        .bind(now + SESSION_MS)
        .execute(&self.0.db.pool)
        .await?;
        Ok((token, csrf))
    }

    pub async fn session(&self, token: &str) -> Result<Option<SessionRow>, StoreError> {
        let row: Option<UserAnd<String>> = sqlx::query_as(
            "SELECT u.id, u.username, u.name, u.email, u.role, u.created_at, s.csrf FROM dashboard_sessions s \
             JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(crypto::token_hash(token))
        .bind(now_ms())
        .fetch_optional(&self.0.db.pool)
        .await?;
        Ok(row.map(
            |(id, username, name, email, role, created_at, csrf)| SessionRow {
                user: User {
                    id,
                    username,
                    name,
                    email,
                    role,
                    created_at,
                },
                csrf,
            },
        ))
    }

    pub async fn delete_session(&self, token: &str) -> Result<(), StoreError> {
        let _w = self.0.db.write_lock().await;
        sqlx::query("DELETE FROM dashboard_sessions WHERE token_hash = $1")
            .bind(crypto::token_hash(token))
            .execute(&self.0.db.pool)
            .await?;
        Ok(())
    }

    // ---- pipeline inputs ----

    /// Keeps the `spec:inputs` pipeline `pipeline_id` was created with.
    pub async fn set_pipeline_inputs(
        &self,
        pipeline_id: i64,
        inputs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), StoreError> {
        let _w = self.0.db.write_lock().await;
        sqlx::query("INSERT INTO pipeline_inputs (pipeline_id, inputs) VALUES ($1, $2)")
            .bind(pipeline_id)
            .bind(serde_json::Value::Object(inputs.clone()).to_string())
            .execute(&self.0.db.pool)
            .await?;
        Ok(())
    }

    /// The inputs a pipeline was created with (empty: none given, or the
    /// pipeline predates this record).
    pub async fn pipeline_inputs(
        &self,
        pipeline_id: i64,
    ) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT inputs FROM pipeline_inputs WHERE pipeline_id = $1")
                .bind(pipeline_id)
                .fetch_optional(&self.0.db.pool)
                .await?;
        Ok(row
            .and_then(|(text,)| serde_json::from_str(&text).ok())
            .unwrap_or_default())
    }

    // ---- approvals ----

    pub async fn record_approval(
        &self,
        job: &Job,
        user: &User,
        environment: &str,
    ) -> Result<(), StoreError> {
        let _w = self.0.db.write_lock().await;
        sqlx::query(
            "INSERT INTO dashboard_approvals (job_id, user_id, username, environment, at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(job.id)
        .bind(user.id)
        .bind(&user.username)
        .bind(environment)
        .bind(now_ms())
        .execute(&self.0.db.pool)
        .await?;
        Ok(())
    }

    /// Approvals of any of `job_ids`.
    pub async fn approvals(&self, job_ids: &[i64]) -> Result<Vec<Approval>, StoreError> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT job_id, username, environment, at FROM dashboard_approvals WHERE job_id IN ({}) ORDER BY id",
            id_list(job_ids)
        )))
        .fetch_all(&self.0.db.pool)
        .await?)
    }

    // ---- protected environments ----

    const PROTECTED_COLUMNS: &'static str = "project_id, name, required_role, approvers, created_by, created_at, required_approval_count";

    pub async fn protected_environment(
        &self,
        project_id: i64,
        name: &str,
    ) -> Result<Option<ProtectedEnvironment>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM dashboard_protected_environments WHERE project_id = $1 AND name = $2",
            Self::PROTECTED_COLUMNS
        )))
        .bind(project_id)
        .bind(name)
        .fetch_optional(&self.0.db.pool)
        .await?)
    }

    pub async fn protected_environments(&self) -> Result<Vec<ProtectedEnvironment>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM dashboard_protected_environments ORDER BY project_id, name",
            Self::PROTECTED_COLUMNS
        )))
        .fetch_all(&self.0.db.pool)
        .await?)
    }

    /// Protects (or changes the rule of) an environment of a project.
    pub async fn protect_environment(&self, rule: &ProtectedEnvironment) -> Result<(), StoreError> {
        let _w = self.0.db.write_lock().await;
        let mut tx = self.0.db.pool.begin().await?;
        sqlx::query(
            "DELETE FROM dashboard_protected_environments WHERE project_id = $1 AND name = $2",
        )
        .bind(rule.project_id)
        .bind(&rule.name)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO dashboard_protected_environments (project_id, name, required_role, approvers, created_by, created_at, \
             required_approval_count) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(rule.project_id)
        .bind(&rule.name)
        .bind(&rule.required_role)
        .bind(&rule.approvers)
        .bind(&rule.created_by)
        .bind(rule.created_at)
        .bind(rule.required_approval_count)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a protection; whether there was one.
    pub async fn unprotect_environment(
        &self,
        project_id: i64,
        name: &str,
    ) -> Result<bool, StoreError> {
        let _w = self.0.db.write_lock().await;
        let done = sqlx::query(
            "DELETE FROM dashboard_protected_environments WHERE project_id = $1 AND name = $2",
        )
        .bind(project_id)
        .bind(name)
        .execute(&self.0.db.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- overview ----

    /// The newest pipeline of every project and ref, filtered, newest
    /// first.
    pub async fn latest_per_ref(
        &self,
        f: &OverviewFilter,
        limit: i64,
    ) -> Result<Vec<PipelineSummary>, StoreError> {
        let unfiltered = f.status.is_empty()
            && f.project_id.is_none()
            && f.git_ref.is_empty()
            && f.username.is_empty();
        let sql = if unfiltered {
            // The landing page: walk pipelines newest first and keep those
            // with no newer one of their project and ref (a probe of the
            // (project_id, ref, id) index); it stops after `limit` winners
            // instead of grouping every pipeline (EXPLAIN before: a scan of
            // all pipelines and an aggregate).
            format!(
                "SELECT {PIPELINE_COLUMNS} FROM pipelines p \
                 WHERE NOT EXISTS (SELECT 1 FROM pipelines newer WHERE newer.project_id = p.project_id \
                 AND newer.ref = p.ref AND newer.id > p.id) AND {FILTER} ORDER BY p.id DESC LIMIT $5"
            )
        } else {
            // Filtered, the walk may visit every pipeline (few winners
            // match): group over the covering index instead, narrowed by
            // the project and ref, which are the group's keys.
            format!(
                "SELECT {PIPELINE_COLUMNS} FROM pipelines p \
                 JOIN (SELECT MAX(id) AS id FROM pipelines WHERE ($2 = 0 OR project_id = $2) \
                 AND ($3 = '' OR ref = $3) GROUP BY project_id, ref) latest ON latest.id = p.id \
                 WHERE {FILTER} ORDER BY p.id DESC LIMIT $5"
            )
        };
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&f.status)
            .bind(f.project_id.unwrap_or(0))
            .bind(&f.git_ref)
            .bind(&f.username)
            .bind(limit)
            .fetch_all(&self.0.db.pool)
            .await?)
    }

    /// The newest pipelines of all projects, filtered.
    pub async fn recent_pipelines(
        &self,
        f: &OverviewFilter,
        limit: i64,
    ) -> Result<Vec<PipelineSummary>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipelines p WHERE {FILTER} ORDER BY p.id DESC LIMIT $5"
        )))
        .bind(&f.status)
        .bind(f.project_id.unwrap_or(0))
        .bind(&f.git_ref)
        .bind(&f.username)
        .bind(limit)
        .fetch_all(&self.0.db.pool)
        .await?)
    }

    /// The current (not retried) jobs of the given pipelines.
    pub async fn jobs_of(&self, pipeline_ids: &[i64]) -> Result<Vec<JobSummary>, StoreError> {
        if pipeline_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, pipeline_id, name, stage, status FROM jobs WHERE pipeline_id IN ({}) AND retried = 0 \
             ORDER BY pipeline_id, stage_idx, id",
            id_list(pipeline_ids)
        )))
        .fetch_all(&self.0.db.pool)
        .await?)
    }

    /// Changes to watch for live refresh: the newest job transition and
    /// pipeline (both primary-key lookups).
    pub async fn change_mark(&self) -> Result<(i64, i64), StoreError> {
        let (t,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM job_transitions")
            .fetch_one(&self.0.db.pool)
            .await?;
        let (p,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM pipelines")
            .fetch_one(&self.0.db.pool)
            .await?;
        Ok((t.unwrap_or(0), p.unwrap_or(0)))
    }

    /// Usernames by id, for the rows shown.
    pub async fn usernames(&self, ids: &[i64]) -> Result<Vec<(i64, String)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, username FROM users WHERE id IN ({})",
            id_list(ids)
        )))
        .fetch_all(&self.0.db.pool)
        .await?)
    }
}

/// `1,2,3`: integers only, so safe to splice into SQL.
fn id_list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}
