//! # gantry-server
//!
//! `gantry serve` and `gantry runner`: pipelines triggered by pushes
//! (webhooks), the GitLab REST API and schedules, stored in SQLite or
//! PostgreSQL, and run by runners that claim jobs over HTTP.
//!
//! - [`actions`]: play, retry and cancel, for the API and the dashboard.
//! - [`app`]: start-up and shared state; [`api`]: every HTTP route.
//! - [`store`] over [`db`]: rows and queries, one code path for both
//!   databases; [`objects`]: logs, artifacts and caches (local disk or S3).
//! - [`pipelines`] (creation, with [`planning`] and [`repos`]) and [`queue`]
//!   (job states, delayed jobs, lost runners, [`schedules`]); [`poller`]
//!   polls remotes for pushes; [`children`] runs `trigger:include` child
//!   pipelines ([`store_triggers`]: their rows and the poller's).
//! - [`engine_bridge`]: the only door into `gantry-engine`, for scheduling
//!   rules and for running a job on a runner ([`runner`], [`protocol`]).
//! - [`deploy_bridge`]: the dashboard's rollbacks through `gantry-deploy`.
//! - [`deploy_history`]: the server as `gantry deploy`'s history store.
//! - [`git_http`]: projects' repositories, read-only over git's smart HTTP
//!   protocol, for runners on other machines.
//! - [`shared_cache`]: caches shared by every runner through the server.
//! - [`sweeper`]: deletes artifacts whose `expire_in` has passed.
//! - [`logs`]: chunked, masked, followable job logs ([`log_follow`] streams
//!   them over Server-Sent Events); [`crypto`]: keys,
//!   tokens, signatures; [`auth`]: who is calling.

pub mod actions;
pub mod api;
pub mod app;
pub mod auth;
pub mod children;
pub mod crypto;
pub mod dashboard;
pub mod db;
pub mod deploy_bridge;
pub mod deploy_history;
pub mod engine_bridge;
pub mod environments;
pub mod error;
pub mod git_http;
pub mod lock_file;
pub mod log_follow;
pub mod logs;
pub mod members;
pub mod objects;
pub mod pipelines;
pub mod planning;
pub mod poller;
pub mod protocol;
pub mod queue;
pub mod repos;
pub mod runner;
pub mod schedules;
pub mod shared_cache;
pub mod store;
pub mod store_dashboard;
pub mod store_triggers;
pub mod sweeper;

pub use app::{Running, ServeConfig, start};

/// Milliseconds since the Unix epoch: how every time is stored.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
