//! The API a server uses: facts and files of one commit of a repository,
//! not of its working tree. Real git repositories in temp directories.

use gantry_config::load::FileSource;
use gantry_source::{CommitTree, Revision, commit_facts, git};
use std::path::Path;
use std::process::Command;

fn run_git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Two commits; the working tree then changes again without a commit.
fn repo() -> (tempfile::TempDir, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run_git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join(".gitlab-ci.yml"), "a:\n  script: [one]\n").unwrap();
    run_git(dir, &["add", "-A"]);
    run_git(dir, &["commit", "-q", "-m", "first"]);
    let first = run_git(dir, &["rev-parse", "HEAD"]);
    std::fs::write(dir.join(".gitlab-ci.yml"), "b:\n  script: [two]\n").unwrap();
    std::fs::write(dir.join("extra.txt"), "x").unwrap();
    run_git(dir, &["add", "-A"]);
    run_git(dir, &["commit", "-q", "-m", "second\n\nbody"]);
    let second = run_git(dir, &["rev-parse", "HEAD"]);
    std::fs::write(dir.join(".gitlab-ci.yml"), "uncommitted:\n  script: [x]\n").unwrap();
    (tmp, first, second)
}

#[test]
fn commit_facts_describe_the_given_commit_and_ref() {
    let (tmp, first, second) = repo();
    let facts = commit_facts(
        tmp.path(),
        &Revision {
            sha: second.clone(),
            ref_name: "feature/x".into(),
            is_tag: false,
            before_sha: None,
        },
    )
    .unwrap();
    assert_eq!(facts.sha, second);
    assert_eq!(facts.before_sha, first, "the parent when no before_sha");
    assert_eq!(facts.ref_name, "feature/x");
    assert_eq!(facts.message, "second\n\nbody");
    assert_eq!(facts.author, "Ada <ada@example.com>");
    let older = commit_facts(
        tmp.path(),
        &Revision {
            sha: first.clone(),
            ref_name: "main".into(),
            ..Revision::default()
        },
    )
    .unwrap();
    assert_eq!(older.sha, first);
    assert_eq!(older.message, "first");
}

#[test]
fn an_unknown_commit_is_a_typed_error() {
    let (tmp, _, _) = repo();
    let err = commit_facts(
        tmp.path(),
        &Revision {
            sha: "deadbeef".into(),
            ref_name: "main".into(),
            ..Revision::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("deadbeef"), "{err}");
}

#[test]
fn commit_tree_reads_files_at_the_commit_not_the_working_tree() {
    let (tmp, first, second) = repo();
    let at_first = CommitTree::new(tmp.path().to_path_buf(), first.clone());
    assert_eq!(
        at_first.read_local(".gitlab-ci.yml").unwrap(),
        "a:\n  script: [one]\n"
    );
    assert_eq!(at_first.local_files(), vec![".gitlab-ci.yml".to_string()]);
    assert!(at_first.read_local("extra.txt").is_err());
    let at_second = CommitTree::new(tmp.path().to_path_buf(), second.clone());
    assert_eq!(
        at_second.local_files(),
        vec![".gitlab-ci.yml".to_string(), "extra.txt".to_string()]
    );
    assert_eq!(
        git::changed_between(tmp.path(), &first, &second).unwrap(),
        vec![".gitlab-ci.yml".to_string(), "extra.txt".to_string()]
    );
    // A plan from the commit: the committed job, not the uncommitted one.
    let loaded = gantry_config::load::load(
        &at_second,
        &gantry_config::load::LoadOptions::new(".gitlab-ci.yml"),
    )
    .unwrap();
    assert!(loaded.config.jobs.contains_key("b"));
}

#[test]
fn a_bare_repository_works_like_a_clone() {
    let (tmp, _, second) = repo();
    let bare = tempfile::tempdir().unwrap();
    let bare_path = bare.path().join("app.git");
    run_git(
        tmp.path(),
        &["clone", "-q", "--bare", ".", bare_path.to_str().unwrap()],
    );
    let facts = commit_facts(
        &bare_path,
        &Revision {
            sha: second.clone(),
            ref_name: "main".into(),
            ..Revision::default()
        },
    )
    .unwrap();
    assert_eq!(facts.sha, second);
    assert_eq!(facts.default_branch, "main");
    let tree = CommitTree::new(bare_path, second);
    assert_eq!(
        tree.read_local(".gitlab-ci.yml").unwrap(),
        "b:\n  script: [two]\n"
    );
}
