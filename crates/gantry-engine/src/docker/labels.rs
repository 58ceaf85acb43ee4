//! Labels on every engine object Gantry creates, and the owner check that
//! tells a live run's objects from a dead run's.
//!
//! Objects are selected by these labels only, never by names (names derive
//! from folder and job names, which two repositories can share). The owner
//! label names the process that created the object (host, pid and the
//! process's start time, so a reused pid does not pass for the owner): a
//! run is dead when that process is gone, and the next run in the same
//! repository, or `gantry clean`, removes what it left.

use std::collections::HashMap;

/// The pipeline run's id.
pub const LABEL_RUN: &str = "gantry.run";
/// [`crate::executor::repository_key`] of the repository.
pub const LABEL_REPO: &str = "gantry.repo";
/// The creating process: `<host>/<pid>/<start time>`.
pub const LABEL_OWNER: &str = "gantry.owner";
/// The job's name.
pub const LABEL_JOB: &str = "gantry.job";
/// `build` or `service`.
pub const LABEL_ROLE: &str = "gantry.role";
/// One job attempt (`<run>-<n>`), to sweep a half-done `prepare`.
pub const LABEL_INSTANCE: &str = "gantry.instance";

/// This process as an owner label value.
pub fn this_process() -> String {
    let pid = std::process::id();
    format!(
        "{}/{pid}/{}",
        hostname(),
        start_time(pid).map(|t| t.to_string()).unwrap_or_default()
    )
}

/// Whether the owner named by a label value may still be running: true when
/// it is this process, runs on another host (which cannot be checked), or
/// the label cannot be read; false only when the process is known gone.
pub fn owner_alive(owner: &str) -> bool {
    let mut parts = owner.splitn(3, '/');
    let (Some(host), Some(pid), Some(start)) = (parts.next(), parts.next(), parts.next()) else {
        return true;
    };
    if host != hostname() {
        return true;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return true;
    };
    match start_time(pid) {
        // Same pid, same start: the same process.
        Some(t) => start.is_empty() || t.to_string() == start,
        None => process_exists(pid),
    }
}

/// Whether the owner label of an object says its run is dead.
pub fn owner_dead(labels: &HashMap<String, String>) -> bool {
    labels.get(LABEL_OWNER).is_some_and(|o| !owner_alive(o))
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).replace('/', "_")
}

/// The process's start time in clock ticks after boot (/proc/PID/stat,
/// field 22), if /proc has it.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count after its `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Without /proc: signal 0 checks existence (EPERM: exists, not ours).
pub(crate) fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return true;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(owner_alive(&this_process()));
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        let label = format!("{}/{pid}/{}", hostname(), start_time(pid).unwrap_or(1));
        child.wait().expect("wait");
        assert!(!owner_alive(&label));
        // Another host: cannot tell, so alive.
        assert!(owner_alive(&format!("elsewhere/{pid}/1")));
        assert!(owner_alive("garbage"));
    }

    #[test]
    fn a_reused_pid_with_another_start_time_is_dead() {
        let me = std::process::id();
        assert!(!owner_alive(&format!("{}/{me}/1", hostname())));
    }
}
