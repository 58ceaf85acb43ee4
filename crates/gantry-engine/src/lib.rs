//! # gantry-engine
//!
//! Runs a planned [`gantry_config::model::Pipeline`] on this machine.
//! A single dispatcher owns the run's state; jobs go through gitlab-runner's
//! named stages ([`executor::JobStage`]) on an [`executor::Executor`]:
//! the host shell or containers through the Docker Engine API.

pub mod executor;
