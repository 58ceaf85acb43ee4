//! Regressions of gantry-source, each named after the behaviour it keeps.

use gantry_config::load::FileSource;
use gantry_source::WorkingTree;
use std::sync::Mutex;

/// `GANTRY_PROJECTS_DIR` is process-wide: tests that set it take turns.
static ENV: Mutex<()> = Mutex::new(());

#[test]
fn include_project_finds_a_clone_whatever_the_case_of_the_path() {
    let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let base = tempfile::tempdir().unwrap();
    let clone = base.path().join("GNOME/citemplates/templates");
    std::fs::create_dir_all(&clone).unwrap();
    std::fs::write(clone.join("a.yml"), "x: {script: a}\n").unwrap();
    let me = base.path().join("me");
    std::fs::create_dir_all(&me).unwrap();
    // SAFETY: the guard above serialises the tests that touch the environment.
    unsafe { std::env::set_var("GANTRY_PROJECTS_DIR", base.path()) };
    let tree = WorkingTree::new(me);
    // The loader lowercases project paths, as GitLab matches them.
    for project in [
        "gnome/citemplates",
        "GNOME/citemplates",
        "Gnome/CITemplates",
    ] {
        assert_eq!(
            tree.read_project(project, None, "templates/a.yml").unwrap(),
            "x: {script: a}\n",
            "{project}"
        );
    }
    let err = tree
        .read_project("gnome/missing", None, "a.yml")
        .unwrap_err()
        .to_string();
    let full = base.path().join("gnome/missing");
    let short = base.path().join("missing");
    assert!(
        err.contains(&full.display().to_string()) && err.contains(&short.display().to_string()),
        "the error lists the directories tried: {err}"
    );
    unsafe { std::env::remove_var("GANTRY_PROJECTS_DIR") };
}
