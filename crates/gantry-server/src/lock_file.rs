//! A file lock held for a process's life: a server's data directory and
//! SQLite database, a runner's work directory. The kernel drops it with
//! the process (also on kill -9); the holder's pid is written in the file
//! for the next one's message.

use std::io::{Read, Seek, Write};
use std::path::Path;

/// A held lock. Unlocked explicitly on drop: a child forked meanwhile (and
/// not yet exec'd) shares the descriptor, and a plain close would leave
/// the lock held.
#[derive(Debug)]
pub struct HeldLock(std::fs::File);

impl Drop for HeldLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// What [`try_hold`] found.
pub enum Held {
    Taken(HeldLock),
    /// Another process holds it; its pid when it wrote one.
    Busy(Option<u32>),
}

/// Takes the lock of `path` (created when missing) without waiting.
pub fn try_hold(path: &Path) -> std::io::Result<Held> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Ok(Held::Busy(text.trim().parse().ok()));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(Held::Taken(HeldLock(file)))
}
