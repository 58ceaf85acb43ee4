//! # gantry-source
//!
//! The repository a pipeline is planned for, and every place its
//! configuration files come from. `gantry-config` does no I/O; this crate
//! does it for the CLI and the server:
//!
//! - [`locate`]: find the configuration file and its repository root.
//! - [`git`]: the facts GitLab derives its `CI_*` variables from, either
//!   for the checked-out working tree ([`git::working_tree_facts`]) or for
//!   any commit of a repository ([`git::commit_facts`], what a server needs
//!   when a push arrives), plus the file list and the diff for `exists:` and
//!   `changes:`.
//! - [`files`]: [`gantry_config::load::FileSource`] implementations: the
//!   working tree ([`files::WorkingTree`]) or one commit
//!   ([`files::CommitTree`]); both resolve `include:project` from local
//!   clones and `include:remote` through [`remote`].
//! - [`remote`]: HTTP fetches with an on-disk cache that serves stale
//!   copies when offline.
//! - [`gitlab`]: `include:template` and `include:component` from a GitLab
//!   instance, with a token when one is set, cached like remote files.
//!
//! - [`fake_gitlab`]: a stand-in GitLab instance for tests.
//!
//! Errors are [`SourceError`]; the loader's `FileSource` trait carries their
//! text.

pub mod error;
pub mod fake_gitlab;
pub mod files;
pub mod git;
pub mod gitlab;
pub mod locate;
pub mod remote;

pub use error::SourceError;
pub use files::{CommitTree, WorkingTree};
pub use git::{Revision, commit_facts, working_tree_facts};
pub use gitlab::GitlabInstance;
pub use locate::{Located, locate};
