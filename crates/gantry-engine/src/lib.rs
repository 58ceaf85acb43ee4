//! # gantry-engine
//!
//! Runs a planned [`gantry_config::model::Pipeline`]. A pure state machine
//! ([`schedule`]) decides which jobs start; a dispatcher ([`run`]) drives it
//! with the ports its caller gives ([`ports`]: run store, event sink,
//! source provider, executor registry); each attempt is a serializable
//! [`payload`] run through gitlab-runner's named stages ([`job`]) on an
//! [`executor::Executor`]: the host shell ([`shell`]) or containers through
//! the Docker Engine API. [`local`] fills the ports for `gantry run`.

pub mod archive;
pub mod cache;
pub mod child_planner;
pub mod docker;
pub mod error;
pub mod executor;
pub mod glob;
pub mod job;
pub mod local;
pub mod mask;
pub mod payload;
pub mod ports;
pub mod report;
pub mod run;
pub mod schedule;
pub mod script;
pub mod shell;
pub mod sources;
pub mod state;
pub mod vars;

/// The exit code of a run interrupted by Ctrl-C or SIGTERM (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;
