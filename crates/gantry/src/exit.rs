//! The exit codes of every command, in one place (documented in
//! ARCHITECTURE.md and `gantry --help`).

/// What a `gantry` process exits with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Exit {
    /// The command did what was asked (a pipeline succeeded, or is blocked
    /// on a manual job; a configuration is valid).
    Success = 0,
    /// A failed pipeline, deploy or rollback, or an invalid configuration.
    Failed = 1,
    /// A usage error (bad flag, unknown job) or an I/O error (unreadable
    /// file, no repository, no commit).
    Usage = 2,
    /// Interrupted by Ctrl-C or SIGTERM (128 + SIGINT).
    Interrupted = 130,
}

impl Exit {
    pub const fn code(self) -> i32 {
        self as i32
    }
}

const _: () = assert!(Exit::Interrupted.code() == gantry_engine::EXIT_INTERRUPTED);
