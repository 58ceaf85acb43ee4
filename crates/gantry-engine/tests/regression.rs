//! Regression tests of the engine, one per fixed defect, named after the
//! behaviour. Each failed before its fix.

mod common;

use common::*;

// ---- engine: dispatcher, schedule, state (issue 8) ----
mod engine {
    use super::*;
    use gantry_config::model::When;
    use gantry_engine::payload::{AttemptStatus, Failure, JobOutcome, JobPayload};
    use gantry_engine::run::RunStatus;
    use gantry_engine::schedule::{Decision, JobStatus, PipelineState, Schedule, Selection};

    fn selection() -> Selection {
        Selection {
            concurrency: 4,
            ..Selection::default()
        }
    }

    /// Defect 10: `start_in: "1:30"` passed lint and then ran at once (the
    /// engine had its own duration parser).
    #[test]
    fn start_in_in_clock_form_delays_by_its_seconds() {
        let mut j = job("later", "test", &["true"]);
        j.when = When::Delayed;
        j.start_in = Some("1:30".into());
        let p = pipeline(&["test"], vec![j]);
        let mut s = Schedule::plan(&p, &selection()).unwrap();
        assert_eq!(
            s.step(),
            vec![Decision::Delay {
                job: 0,
                seconds: 90
            }]
        );
    }

    /// A pipeline waiting on a blocking manual job is `blocked`, not
    /// `success`.
    #[test]
    fn a_blocking_manual_job_blocks_the_pipeline() {
        let mut gate = job("approve", "build", &["true"]);
        gate.when = When::Manual;
        let after = job("deploy", "deploy", &["true"]);
        let p = pipeline(&["build", "deploy"], vec![gate, after]);
        let mut s = Schedule::plan(&p, &selection()).unwrap();
        let decisions = s.step();
        assert!(decisions.iter().any(|d| matches!(
            d,
            Decision::Finished {
                job: 0,
                status: JobStatus::Manual,
                ..
            }
        )));
        assert!(s.is_finished());
        assert_eq!(s.status(), PipelineState::Blocked);
    }

    /// The scheduler is rebuilt from stored progress (a server's rows) and
    /// goes on where it was; its serialized form round-trips.
    #[test]
    fn a_schedule_restored_from_progress_goes_on() {
        let a = job("a", "build", &["true"]);
        let b = job("b", "test", &["true"]);
        let p = pipeline(&["build", "test"], vec![a, b]);
        let mut s = Schedule::plan(&p, &selection()).unwrap();
        assert_eq!(s.step(), vec![Decision::Start { job: 0, attempt: 1 }]);
        s.attempt_finished(0, &AttemptStatus::Success, Some(0));
        let restored = Schedule::restore(&p, &selection(), &s.progress()).unwrap();
        let json = serde_json::to_string(&restored).unwrap();
        let mut again: Schedule = serde_json::from_str(&json).unwrap();
        assert_eq!(again.step(), vec![Decision::Start { job: 1, attempt: 1 }]);
        again.attempt_finished(1, &AttemptStatus::Failed(Failure::Script), Some(1));
        assert_eq!(again.status(), PipelineState::Failed);
    }

    /// One resource group runs one job at a time, whatever `-j` says.
    #[test]
    fn a_resource_group_runs_one_job_at_a_time() {
        let mut a = job("a", "deploy", &["true"]);
        a.resource_group = Some("prod".into());
        let mut b = job("b", "deploy", &["true"]);
        b.resource_group = Some("prod".into());
        let p = pipeline(&["deploy"], vec![a, b]);
        let mut s = Schedule::plan(&p, &selection()).unwrap();
        assert_eq!(s.step(), vec![Decision::Start { job: 0, attempt: 1 }]);
        assert_eq!(s.step(), vec![]);
        s.attempt_finished(0, &AttemptStatus::Success, Some(0));
        assert_eq!(s.step(), vec![Decision::Start { job: 1, attempt: 1 }]);
    }

    /// A remote runner gets a payload and returns an outcome: both travel
    /// as JSON.
    #[tokio::test]
    async fn payloads_and_outcomes_are_serializable() {
        let repo = Repo::new(&[]);
        let p = pipeline(&["test"], vec![job("j", "test", &["echo hi"])]);
        let r = repo.run(&p).await;
        assert_eq!(r.status, RunStatus::Success);
        let payload = JobPayload {
            run_id: r.run_id.clone(),
            pipeline_id: r.pipeline_id,
            job_id: 7,
            job: p.jobs[0].clone(),
            slug: "j".into(),
            attempt: 1,
            executor: "shell".into(),
            vars: vec![var("A", "1")].into(),
            ci_project_dir: "/builds/x".into(),
            dependencies: vec![],
        };
        let back: JobPayload =
            serde_json::from_str(&serde_json::to_string(&payload).unwrap()).unwrap();
        assert_eq!(back.vars.get("A").unwrap().value, "1");
        let outcome = JobOutcome::system_failure("lost");
        let back: JobOutcome =
            serde_json::from_str(&serde_json::to_string(&outcome).unwrap()).unwrap();
        assert_eq!(
            back.status,
            AttemptStatus::Failed(Failure::System("lost".into()))
        );
    }

    /// Defect 3: a run starting pruned the build folders of a run that was
    /// still going (in this process or another).
    #[test]
    fn pruning_never_touches_a_live_run() {
        use gantry_engine::state::StateDir;
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::for_repo(dir.path());
        let live = state.new_run().unwrap();
        std::fs::create_dir_all(live.build_dir("job")).unwrap();
        let mut finished = Vec::new();
        for _ in 0..12 {
            let mut run = state.new_run().unwrap();
            run.release();
            finished.push(run);
        }
        state.prune(&finished.last().unwrap().id);
        assert!(live.build_dir("job").is_dir(), "the live run was pruned");
        // Finished runs beyond the limit go, oldest first.
        assert!(!finished[0].dir.exists());
        let left = std::fs::read_dir(state.runs_dir()).unwrap().count();
        assert_eq!(left, gantry_engine::state::RUNS_KEPT + 1);
        drop(live);
    }

    /// Defect 3: two runs at once in one repository both succeed; neither
    /// removes the other's build folders.
    #[tokio::test]
    async fn two_runs_at_once_in_one_repository_both_succeed() {
        let repo = Repo::new(&[("data.txt", "data\n")]);
        let slow = pipeline(
            &["test"],
            vec![job("slow", "test", &["sleep 1.5", "cat data.txt"])],
        );
        let quick = pipeline(&["test"], vec![job("quick", "test", &["true"])]);
        let first = repo.run(&slow);
        let second = async {
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            repo.run(&quick).await
        };
        let (a, b) = tokio::join!(first, second);
        assert_eq!(a.status, RunStatus::Success, "{}", log(&a, "slow"));
        assert_eq!(b.status, RunStatus::Success);
        assert_ne!(a.run_id, b.run_id);
        assert!(log(&a, "slow").contains("data"));
    }

    /// Defect 4: `CI_PIPELINE_ID` and `CI_JOB_ID` were 1 in every run; jobs
    /// did not know where the project's state lives.
    #[tokio::test]
    async fn pipeline_and_job_ids_increase_and_state_dir_is_given() {
        let repo = Repo::new(&[]);
        let p = pipeline(
            &["test"],
            vec![
                job(
                    "a",
                    "test",
                    &["echo ids=$CI_PIPELINE_ID/$CI_JOB_ID state=$GANTRY_STATE_DIR"],
                ),
                job("b", "test", &["echo ids=$CI_PIPELINE_ID/$CI_JOB_ID"]),
            ],
        );
        let first = repo.run(&p).await;
        let second = repo.run(&p).await;
        assert!(second.pipeline_id > first.pipeline_id);
        let ids: Vec<u64> = [&first, &second]
            .iter()
            .flat_map(|r| r.jobs.iter().map(|j| j.job_id))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4, "{ids:?}");
        let a = log(&second, "a");
        let job_id = second.job("a").unwrap().job_id;
        assert!(
            a.contains(&format!("ids={}/{job_id}", second.pipeline_id)),
            "{a}"
        );
        let state = repo.path().join(".gantry").canonicalize().unwrap();
        assert!(
            a.contains(&format!("state={}", state.display()))
                || a.contains(&format!("state={}", repo.path().join(".gantry").display())),
            "{a}"
        );
    }

    /// Defect 4: ids stay unique when runs allocate them at the same time.
    #[test]
    fn concurrent_id_allocations_never_collide() {
        use gantry_engine::state::StateDir;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let root = root.clone();
                std::thread::spawn(move || {
                    let state = StateDir::for_repo(&root);
                    (0..25)
                        .map(|_| state.allocate_ids(1, 3).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<(u64, u64)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let mut pipelines: Vec<u64> = all.iter().map(|a| a.0).collect();
        pipelines.sort();
        pipelines.dedup();
        assert_eq!(pipelines.len(), 200);
        let mut jobs: Vec<u64> = all.iter().flat_map(|a| a.1..a.1 + 3).collect();
        jobs.sort();
        jobs.dedup();
        assert_eq!(jobs.len(), 600);
    }

    /// Defect 6: logs reached disk only when a job ended (no `tail -f`, and
    /// nothing after `kill -9`).
    #[tokio::test]
    async fn logs_reach_disk_while_the_job_runs() {
        let repo = Repo::new(&[]);
        let marker = repo.path().join("go");
        let script = format!(
            "echo first-line; while [ ! -e {} ]; do sleep 0.05; done; echo done",
            marker.display()
        );
        let p = pipeline(&["test"], vec![job("j", "test", &[script.as_str()])]);
        let runs = repo.path().join(".gantry/runs");
        let watcher = async {
            let started = std::time::Instant::now();
            loop {
                let found = std::fs::read_dir(&runs).ok().and_then(|d| {
                    d.flatten()
                        .find_map(|e| std::fs::read_to_string(e.path().join("logs/j.log")).ok())
                });
                if found.is_some_and(|l| l.contains("first-line")) {
                    break true;
                }
                if started.elapsed() > std::time::Duration::from_secs(10) {
                    break false;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        let run = repo.run(&p);
        let watched = async {
            let seen = watcher.await;
            std::fs::write(&marker, "").unwrap();
            seen
        };
        let (seen, report) = tokio::join!(watched, run);
        assert!(seen, "the first line was not on disk while the job ran");
        assert_eq!(report.status, RunStatus::Success);
    }
}
// ---- end engine ----
