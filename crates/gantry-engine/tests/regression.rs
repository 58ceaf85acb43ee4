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
}
// ---- end engine ----
