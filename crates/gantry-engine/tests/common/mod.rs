//! Shared helpers: real git repositories in temp dirs, hand-built
//! pipelines, and a quiet run.

#![allow(dead_code)]

use gantry_config::model::{
    Artifacts, Job, JobNeed, Pipeline, PipelineStatus, Retry, Variable, When,
};
use gantry_engine::report::{OutputMode, Reporter};
use gantry_engine::run::{RunOptions, RunReport, run_pipeline};
use indexmap::IndexMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tokio_util::sync::CancellationToken;

pub struct Repo {
    pub dir: tempfile::TempDir,
    pub sha: String,
}

impl Repo {
    /// A git repository with `files` committed.
    pub fn new(files: &[(&str, &str)]) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        for (name, content) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        git(dir.path(), &["add", "-A"]);
        git(
            dir.path(),
            &[
                "-c",
                "user.name=T",
                "-c",
                "user.email=t@example.com",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                "init",
            ],
        );
        let sha = git(dir.path(), &["rev-parse", "HEAD"]);
        Repo { dir, sha }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn options(&self) -> RunOptions {
        RunOptions {
            repo_dir: self.path().to_path_buf(),
            sha: self.sha.clone(),
            concurrency: 4,
            ..RunOptions::default()
        }
    }

    pub async fn run(&self, pipeline: &Pipeline) -> RunReport {
        self.run_with(pipeline, self.options()).await
    }

    pub async fn run_with(&self, pipeline: &Pipeline, opts: RunOptions) -> RunReport {
        let mut reporter = Reporter::new(OutputMode::Quiet, Box::new(std::io::sink()));
        run_pipeline(
            pipeline,
            opts,
            None,
            &mut reporter,
            CancellationToken::new(),
        )
        .await
        .expect("run starts")
    }
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn job(name: &str, stage: &str, script: &[&str]) -> Job {
    Job {
        name: name.into(),
        definition: name.into(),
        stage: stage.into(),
        when: When::OnSuccess,
        start_in: None,
        allow_failure: false,
        allow_failure_exit_codes: vec![],
        needs: None,
        dependencies: vec![],
        script: script.iter().map(|s| s.to_string()).collect(),
        before_script: vec![],
        after_script: vec![],
        image: None,
        services: vec![],
        variables: vec![],
        environment: None,
        retry: Retry::default(),
        timeout: None,
        resource_group: None,
        interruptible: false,
        artifacts: None,
        cache: vec![],
        tags: vec![],
        coverage: None,
        trigger: None,
        node_index: None,
        node_total: None,
        extra: IndexMap::new(),
    }
}

pub fn needs(names: &[&str]) -> Option<Vec<JobNeed>> {
    Some(
        names
            .iter()
            .map(|n| JobNeed {
                job: n.to_string(),
                artifacts: true,
                optional: false,
            })
            .collect(),
    )
}

pub fn artifacts(paths: &[&str]) -> Option<Artifacts> {
    Some(Artifacts {
        paths: paths.iter().map(|s| s.to_string()).collect(),
        ..Artifacts::default()
    })
}

pub fn pipeline(stages: &[&str], jobs: Vec<Job>) -> Pipeline {
    Pipeline {
        status: PipelineStatus::Created,
        filtered_reason: None,
        name: None,
        stages: stages.iter().map(|s| s.to_string()).collect(),
        jobs,
        skipped: vec![],
        variables: vec![],
        context_variables: vec![
            Variable::new("CI_PIPELINE_SOURCE", "push"),
            Variable::new("CI_PROJECT_PATH", "group/project"),
            Variable::new("CI_COMMIT_REF_NAME", "main"),
            Variable::new("CI_COMMIT_REF_SLUG", "main"),
        ],
    }
}

pub fn log(report: &RunReport, job: &str) -> String {
    let j = report
        .job(job)
        .unwrap_or_else(|| panic!("no job {job} in report"));
    std::fs::read_to_string(&j.log).unwrap_or_default()
}

pub fn status(report: &RunReport, job: &str) -> &'static str {
    report.job(job).unwrap().status.as_str()
}

pub fn var(name: &str, value: &str) -> Variable {
    Variable::new(name, value)
}

pub fn scratch() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    (d, p)
}
