//! `gantry clean`: removes everything Gantry made for this repository: its
//! containers and networks (kept `gantry shell` containers included) and the
//! build folders of finished runs, and what runs that died left half-made.
//! What belongs to a run still going is left alone and named. Logs,
//! artifacts, caches and run records stay.

use crate::project::{EXIT_FAILURE, EXIT_USAGE};
use gantry_engine::executor::repository_key;
use gantry_engine::state::{StateDir, run_is_live, run_owner_alive};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct CleanArgs {}

/// What one run's folder is, for cleaning.
enum RunState {
    /// `run.json` has a final status.
    Finished,
    /// Its recorded owner process is gone (killed, crashed).
    Dead,
    /// Its owner runs, or nothing says it ended.
    Going(&'static str),
}

pub fn clean(_args: CleanArgs) -> i32 {
    let repo = match repo_root() {
        Some(root) => root,
        None => {
            eprintln!(
                "error: gantry clean works in a git repository; cd into one (nothing was removed)"
            );
            return EXIT_USAGE;
        }
    };
    println!("Cleaning what Gantry made for {}", repo.display());
    let mut failed = false;

    // Containers and networks, by the repository's label.
    let key = repository_key(&repo);
    let engine = gantry_engine::docker::clean_repository_blocking(&key);
    match engine {
        Ok(count) => {
            println!(
                "  containers removed: {}, networks removed: {}",
                count.containers, count.networks
            );
            if count.left_running > 0 {
                let runs: Vec<&str> = count.live_runs.iter().map(String::as_str).collect();
                println!(
                    "  left alone: {} container(s) of run(s) still going: {} (run `gantry clean` again when they end)",
                    count.left_running,
                    runs.join(", ")
                );
            }
        }
        Err(e) => {
            println!("  containers and networks: not checked ({e})");
        }
    }

    // Build folders of finished runs.
    let state = StateDir::for_repo(&repo);
    remove_leftovers(&state, &mut failed);
    let Ok(entries) = std::fs::read_dir(state.runs_dir()) else {
        println!("  no runs in {}", state.runs_dir().display());
        return if failed { EXIT_FAILURE } else { 0 };
    };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    let mut removed = 0usize;
    let mut bytes = 0u64;
    for id in ids {
        let run_dir = state.run_dir(&id);
        let builds = run_dir.join("builds");
        if !builds.exists() {
            continue;
        }
        match run_state(&run_dir) {
            RunState::Going(why) => {
                println!("  left alone: the build folders of run {id} ({why})");
                continue;
            }
            RunState::Finished | RunState::Dead => {}
        }
        let size = dir_size(&builds);
        match std::fs::remove_dir_all(&builds) {
            Ok(()) => {
                removed += 1;
                bytes += size;
            }
            Err(e) => {
                failed = true;
                eprintln!(
                    "error: {}: {e} (a container may have written files you cannot delete; `sudo rm -rf` it)",
                    builds.display()
                );
            }
        }
    }
    println!(
        "  build folders removed: {removed} run(s), {}",
        human_bytes(bytes)
    );
    if failed { EXIT_FAILURE } else { 0 }
}

/// Half-made run folders and snapshot temporaries of runs that died.
fn remove_leftovers(state: &StateDir, failed: &mut bool) {
    let leftovers = state.leftovers();
    if leftovers.is_empty() {
        return;
    }
    let mut removed = 0usize;
    let mut bytes = 0u64;
    for path in leftovers {
        let size = dir_size(&path);
        match std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path)) {
            Ok(()) => {
                removed += 1;
                bytes += size;
            }
            Err(e) => {
                *failed = true;
                eprintln!("error: {}: {e}", path.display());
            }
        }
    }
    println!(
        "  left by runs that died: {removed} folder(s), {}",
        human_bytes(bytes)
    );
}

/// Going while its lock is held; finished when its record has a final
/// status (`run.json` exists from the start, saying `running`); dead when
/// its owner file names a process that is gone (`owner`: `host/pid/start`,
/// as the engine's labels).
fn run_state(run_dir: &Path) -> RunState {
    if run_is_live(run_dir) {
        return RunState::Going("its gantry process is still running");
    }
    let status = std::fs::read_to_string(run_dir.join("run.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v["status"].as_str().map(str::to_string));
    if status.as_deref().is_some_and(|s| s != "running") {
        return RunState::Finished;
    }
    match run_owner_alive(run_dir) {
        Some(false) => RunState::Dead,
        Some(true) => RunState::Going("its gantry process is still running"),
        None => RunState::Going("it has no record that it ended"),
    }
}

fn repo_root() -> Option<PathBuf> {
    std::process::Command::new("git")
        .args(["rev-parse", "--show-toplevel"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(_) => total += entry.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
