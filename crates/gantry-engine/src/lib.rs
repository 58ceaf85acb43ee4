//! # gantry-engine
//!
//! Runs a planned [`gantry_config::model::Pipeline`] on this machine.
//! A single dispatcher ([`run`]) owns the run's state; jobs go through
//! gitlab-runner's named stages ([`executor::JobStage`], [`job`]) on an
//! [`executor::Executor`]: the host shell ([`shell`]) or containers through
//! the Docker Engine API.

pub mod archive;
pub mod cache;
pub mod docker;
pub mod executor;
pub mod glob;
pub mod job;
pub mod mask;
pub mod report;
pub mod run;
pub mod script;
pub mod shell;
pub mod sources;
pub mod state;
pub mod vars;
