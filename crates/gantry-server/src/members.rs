//! Project membership: a user's role in one project. Projects are visible
//! to every user (GitLab's "internal" visibility); a user's server-wide
//! role is their role in every project unless the project names them as
//! a member with another one, higher or lower. Administrators and the
//! system bot are the same everywhere.
//!
//! GitLab's API (`/projects/:id/members`) speaks access levels: 10 guest
//! and 20 reporter read (viewer), 30 developer, 40 maintainer and 50
//! owner (maintainer: administration is server-wide).

use crate::error::StoreError;
use crate::now_ms;
use crate::store::{Role, Store, User};

/// A member row with its user.
#[derive(Clone, Debug)]
pub struct Member {
    pub user: User,
    pub role: Role,
    pub created_at: i64,
}

/// The role an access level gives, or `None` for one GitLab does not have.
pub fn role_of_access_level(level: i64) -> Option<Role> {
    match level {
        10 | 20 => Some(Role::Viewer),
        30 => Some(Role::Developer),
        40 | 50 => Some(Role::Maintainer),
        _ => None,
    }
}

/// The access level GitLab shows for a role in a project.
pub fn access_level_of(role: Role) -> i64 {
    match role {
        Role::Admin => 50,
        Role::Maintainer => 40,
        Role::Developer => 30,
        Role::Viewer => 20,
    }
}

/// Membership rows (the `project_members` table).
pub struct MemberStore<'a>(pub &'a Store);

impl MemberStore<'_> {
    /// The role a membership gives `user_id` in `project_id`, if any.
    pub async fn role(&self, project_id: i64, user_id: i64) -> Result<Option<Role>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2",
        )
        .bind(project_id)
        .bind(user_id)
        .fetch_optional(&self.0.db.pool)
        .await?;
        Ok(row.and_then(|(r,)| Role::parse(&r)))
    }

    /// The project's members, oldest first.
    pub async fn list(&self, project_id: i64) -> Result<Vec<Member>, StoreError> {
        self.rows(project_id, None).await
    }

    /// One member of the project.
    pub async fn get(&self, project_id: i64, user_id: i64) -> Result<Option<Member>, StoreError> {
        Ok(self.rows(project_id, Some(user_id)).await?.pop())
    }

    /// Members with their users in one query; `user_id` narrows to one.
    async fn rows(&self, project_id: i64, user_id: Option<i64>) -> Result<Vec<Member>, StoreError> {
        type Row = (i64, String, String, String, String, i64, String, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT u.id, u.username, u.name, u.email, u.role, u.created_at, m.role, m.created_at \
             FROM project_members m JOIN users u ON u.id = m.user_id \
             WHERE m.project_id = $1 AND ($2 = 0 OR m.user_id = $2) \
             ORDER BY m.created_at, m.user_id",
        )
        .bind(project_id)
        .bind(user_id.unwrap_or(0))
        .fetch_all(&self.0.db.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(
                |(id, username, name, email, role, created, member_role, at)| {
                    Some(Member {
                        user: User {
                            id,
                            username,
                            name,
                            email,
                            role,
                            created_at: created,
                        },
                        role: Role::parse(&member_role)?,
                        created_at: at,
                    })
                },
            )
            .collect())
    }

    /// Adds a member. False when they are one already.
    pub async fn add(&self, project_id: i64, user_id: i64, role: Role) -> Result<bool, StoreError> {
        let _w = self.0.db.write_lock().await;
        let added = sqlx::query(
            "INSERT INTO project_members (project_id, user_id, role, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (project_id, user_id) DO NOTHING",
        )
        .bind(project_id)
        .bind(user_id)
        .bind(role.as_str())
        .bind(now_ms())
        .execute(&self.0.db.pool)
        .await?;
        Ok(added.rows_affected() == 1)
    }

    /// Changes a member's role. False when they are not a member.
    pub async fn update(
        &self,
        project_id: i64,
        user_id: i64,
        role: Role,
    ) -> Result<bool, StoreError> {
        let _w = self.0.db.write_lock().await;
        let changed = sqlx::query(
            "UPDATE project_members SET role = $1 WHERE project_id = $2 AND user_id = $3",
        )
        .bind(role.as_str())
        .bind(project_id)
        .bind(user_id)
        .execute(&self.0.db.pool)
        .await?;
        Ok(changed.rows_affected() == 1)
    }

    /// Removes a member. False when they were not one.
    pub async fn remove(&self, project_id: i64, user_id: i64) -> Result<bool, StoreError> {
        let _w = self.0.db.write_lock().await;
        let removed =
            sqlx::query("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2")
                .bind(project_id)
                .bind(user_id)
                .execute(&self.0.db.pool)
                .await?;
        Ok(removed.rows_affected() == 1)
    }
}

/// The most powerful role `user` has anywhere: server-wide or as a member
/// of some project (what a page listing every project offers buttons for).
pub async fn best_role(store: &Store, user: &User) -> Result<Role, StoreError> {
    let roles: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT role FROM project_members WHERE user_id = $1")
            .bind(user.id)
            .fetch_all(&store.db.pool)
            .await?;
    Ok(roles
        .iter()
        .filter_map(|(r,)| Role::parse(r))
        .fold(user.role(), Ord::min))
}

/// `user` as they act in `project_id`: with their membership's role there,
/// else unchanged. Every check of a project's action takes this user, so
/// the rules elsewhere (`Role::allows`) need not know about projects.
pub async fn in_project(store: &Store, user: User, project_id: i64) -> Result<User, StoreError> {
    if user.is_bot() || user.role() == Role::Admin {
        return Ok(user);
    }
    Ok(match MemberStore(store).role(project_id, user.id).await? {
        Some(role) => User {
            role: role.as_str().to_string(),
            ..user
        },
        None => user,
    })
}
