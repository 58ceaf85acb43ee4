//! # gantry-config
//!
//! Reads a `.gitlab-ci.yml` the way GitLab does and produces the pipeline
//! GitLab would create. The steps run in GitLab's order
//! (`lib/gitlab/ci/config.rb`):
//!
//! 1. [`yaml`]: parse each file (YAML 1.1 scalars, anchors, `<<` merge keys,
//!    limits against hostile input) into a [`node::Node`] tree with positions.
//! 2. [`include`]: includes, deep-merged (the including file last).
//! 3. [`extends`], then [`reference`] (`!reference`), then [`normalize`]
//!    (empty values mean "not set", composed lists are flattened).
//! 4. [`compose`]: validation of every keyword, `default:` and `inherit:`
//!    → [`model::Config`].
//! 5. [`plan`]: for a [`context::Context`]: workflow rules, rules,
//!    only/except ([`expr`], [`fnmatch`]), parallel expansion, needs
//!    → [`model::Pipeline`].
//!
//! [`child`] plans the child pipelines of trigger jobs.
//!
//! The crate does no I/O of its own: files come through [`load::FileSource`].

pub mod child;
pub mod compose;
pub mod context;
pub mod diag;
pub mod emit;
pub mod expand;
pub mod expr;
pub mod extends;
pub mod fnmatch;
pub mod include;
pub mod load;
pub mod model;
pub mod node;
pub mod normalize;
pub mod output;
pub mod plan;
pub mod reference;
pub mod source;
pub mod yaml;

pub use diag::{ConfigError, Diagnostic};
pub use source::{FileId, Sources, Span};
