//! SIGINT/SIGTERM during a deploy: instead of dying with the target half rolled out and the
//! record `in_progress`, the deploy learns of the signal, rolls back (or, with `--no-rollback`,
//! records `interrupted`) and exits. [`install`] is called once by the CLI; deploy code races
//! its waits against [`signalled`].

use std::sync::OnceLock;

use tokio::sync::watch;

static SIGNAL: OnceLock<watch::Sender<Option<&'static str>>> = OnceLock::new();

fn sender() -> &'static watch::Sender<Option<&'static str>> {
    SIGNAL.get_or_init(|| watch::channel(None).0)
}

/// Starts listening for SIGINT and SIGTERM on the current tokio runtime. Idempotent.
/// After the first signal the process keeps running until the deploy has cleaned up; a second
/// signal is ignored (SIGKILL still ends it).
pub fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.set(()).is_err() {
        return;
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        for (kind, name) in [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
        ] {
            if let Ok(mut s) = signal(kind) {
                tokio::spawn(async move {
                    while s.recv().await.is_some() {
                        trigger(name);
                    }
                });
            }
        }
    }
}

/// Marks the process as interrupted (the signal handlers call this; tests may too).
pub fn trigger(name: &'static str) {
    sender().send_if_modified(|v| {
        if v.is_none() {
            *v = Some(name);
            true
        } else {
            false
        }
    });
}

/// The signal received so far, if any.
pub fn received() -> Option<&'static str> {
    *sender().borrow()
}

/// Resolves with the signal's name once one arrives (at once if one already has).
pub async fn signalled() -> &'static str {
    let mut rx = sender().subscribe();
    loop {
        if let Some(name) = *rx.borrow_and_update() {
            return name;
        }
        if rx.changed().await.is_err() {
            // The sender is static and never dropped; park forever to be safe.
            std::future::pending::<()>().await;
        }
    }
}
