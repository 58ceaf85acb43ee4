//! Regression tests of the engine, one per fixed defect, named after the
//! behaviour. Each failed before its fix. Container tests run on the real
//! Podman engine (DOCKER_HOST=unix:///run/podman/podman.sock) and skip with a
//! printed reason without one, unless GANTRY_REQUIRE_PODMAN=1.

mod common;
mod docker_common;

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
    /// engine had its own duration parser). The model parses it once; the
    /// engine reads its seconds (the text is for display only).
    #[test]
    fn start_in_in_clock_form_delays_by_its_seconds() {
        let mut j = job("later", "test", &["true"]);
        j.when = When::Delayed;
        // Text no parser reads: the engine must take the seconds.
        j.start_in = Some(gantry_config::model::StartIn {
            seconds: 90,
            text: "a minute and a half".into(),
        });
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

    /// Two runs of one commit at once: the second saw the first's snapshot
    /// folder before its file list was written, extracted again and
    /// replaced the folder the first was copying from (fresh-clone CI:
    /// "cannot copy the sources … No such file or directory").
    #[test]
    fn a_cached_snapshot_is_never_replaced_under_a_run_reading_it() {
        use gantry_engine::sources::Snapshot;
        let repo = Repo::new(&[("a.txt", "a\n")]);
        let cache = tempfile::tempdir().unwrap();
        let first = Snapshot::cached(repo.path(), &repo.sha, cache.path(), 4).unwrap();
        // The window the race hit: the folder is there, its list is not.
        std::fs::remove_file(cache.path().join(format!("{}.files", repo.sha))).unwrap();
        use std::os::unix::fs::MetadataExt;
        let inode = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
        let being_read = inode(&first.dir);
        let second = Snapshot::cached(repo.path(), &repo.sha, cache.path(), 4).unwrap();
        assert_eq!(second.dir, first.dir);
        assert_eq!(
            inode(&second.dir),
            being_read,
            "the snapshot a run was reading was removed and replaced"
        );
        assert!(second.tracked.contains(std::path::Path::new("a.txt")));
        let names: Vec<String> = std::fs::read_dir(cache.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.contains(".tmp")),
            "temporaries left: {names:?}"
        );
    }

    /// A run killed while being set up left its folder in `staging/`, and
    /// snapshot temporaries named after its process; nothing removed them.
    #[test]
    fn leftovers_of_dead_runs_are_found_and_live_ones_are_not() {
        use gantry_engine::state::StateDir;
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::for_repo(dir.path());
        let live = state.new_run().unwrap();
        let dead_pid = {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            pid
        };
        let half_made = state.root.join("staging/20260101-000000-0000000000-beef");
        std::fs::create_dir_all(half_made.join("builds")).unwrap();
        let snapshots = state.root.join("snapshots");
        let dead_tmp = snapshots.join(format!("abc.tmp{dead_pid}"));
        let dead_worktree = snapshots.join(format!("worktree.{dead_pid}.123"));
        let own_tmp = snapshots.join(format!("abc.tmp{}", std::process::id()));
        let kept = snapshots.join("abc");
        for d in [&dead_tmp, &dead_worktree, &own_tmp, &kept] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut found = state.leftovers();
        found.sort();
        let mut want = vec![half_made, dead_tmp, dead_worktree];
        want.sort();
        assert_eq!(found, want);
        assert!(live.dir.starts_with(state.runs_dir()));
        drop(live);
    }

    /// A finished run looked live (and was never pruned) while any child
    /// process forked by this process still held a copy of its lock file's
    /// descriptor: the lock was only closed, not unlocked.
    #[test]
    fn a_released_run_is_not_live_while_a_forked_child_holds_its_lock() {
        use gantry_engine::state::{StateDir, run_is_live};
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::for_repo(dir.path());
        let mut run = state.new_run().unwrap();
        // SAFETY: the child only sleeps and exits (async-signal-safe calls).
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            unsafe {
                libc::sleep(5);
                libc::_exit(0);
            }
        }
        run.release();
        let live = run_is_live(&run.dir);
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        assert!(!live, "a released run still looks live");
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

// ---- executor (issue 8: docker output, kept containers, labels, leftovers,
// ---- long lines, backpressure, symlinks in artifacts and caches) ----

mod executor_regressions {
    use super::common;
    use super::docker_common::*;
    use gantry_config::model::{Cache, CacheKey, CachePolicy};
    use gantry_engine::docker::{DockerExecutor, KeepContainers, LABEL_REPO};
    use gantry_engine::executor::{Executor, JobStage, LOG_BUDGET, ScriptOutcome, log_channel};
    use gantry_engine::mask::LogLines;
    use gantry_engine::report::{OutputMode, Reporter};
    use serde_json::json;
    use std::io::Write;
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    /// Containers labelled for a repository (all states).
    async fn repo_containers(executor: &DockerExecutor, key: &str) -> Vec<String> {
        use bollard::query_parameters::ListContainersOptionsBuilder;
        let mut filters = std::collections::HashMap::new();
        filters.insert("label".to_string(), vec![format!("{LABEL_REPO}={key}")]);
        executor
            .client()
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .expect("list containers")
            .into_iter()
            .filter_map(|c| c.id)
            .collect()
    }

    async fn container_exists(executor: &DockerExecutor, id: &str) -> bool {
        executor.client().inspect_container(id, None).await.is_ok()
    }

    /// Runs `shell_command` without a terminal, feeding `input`.
    fn run_shell_command(command: &[String], input: &str) -> (i32, String, String) {
        let mut child = std::process::Command::new(&command[0])
            .args(&command[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the shell command");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Issue 8, defect 1: stdout and stderr chunks were forwarded as they
    /// came, so a line of one stream was cut by the other mid-line and the
    /// masker never saw the whole secret (`tok s3cr3tV4lu3Aberr 1`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn docker_stdout_and_stderr_never_splice_so_a_secret_stays_masked() {
        let Some(executor) = engine("docker_stdout_and_stderr_never_splice").await else {
            return;
        };
        let secret = "s3cr3tV4lu3AbCdEfGh12345678";
        let run = run_id("splice");
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Output::new();
        let mut env = prepare(
            &executor,
            request(
                job("splice", json!({"name": BUSYBOX}), json!([])),
                dir.path(),
                &run,
                &[],
            ),
            &out,
        )
        .await
        .expect("prepare");
        let (sink, mut rx) = log_channel();
        let mut request = script(
            JobStage::StepScript,
            "i=0; while [ $i -lt 3000 ]; do echo \"tok $SECRET\"; echo \"err $i\" >&2; i=$((i+1)); done",
            None,
        );
        request.env = vec![("SECRET".into(), secret.into())];
        let reader = tokio::spawn(async move {
            let mut lines = LogLines::new([secret], LogLines::LIVE_CAP);
            let mut file = Vec::new();
            let mut live = Vec::new();
            while let Some(chunk) = rx.recv().await {
                lines
                    .push(&chunk, &mut file, &mut |l| live.push(l))
                    .expect("push");
            }
            lines
                .finish(&mut file, &mut |l| live.push(l))
                .expect("finish");
            (String::from_utf8_lossy(&file).into_owned(), live)
        });
        let outcome = env
            .run_script(request, sink, CancellationToken::new())
            .await
            .expect("run");
        assert_eq!(outcome, ScriptOutcome::Exited(0));
        env.cleanup().await.expect("cleanup");
        executor.shutdown().await.expect("shutdown");
        let (file, live) = reader.await.expect("reader");
        assert!(!file.contains("s3cr3t"), "a part of the secret leaked");
        assert!(!file.contains("12345678"), "a part of the secret leaked");
        assert_eq!(live.len(), 6000, "every line whole");
        for line in &live {
            let whole = line == "tok [MASKED]"
                || line
                    .strip_prefix("err ")
                    .is_some_and(|n| n.parse::<u32>().is_ok());
            assert!(whole, "spliced line: {line:?}");
        }
    }

    /// Issue 8, defect 2: a kept container bind-mounted `<job>.tmp`, which
    /// the engine deletes after the job, so `gantry shell` could not start
    /// it again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kept_docker_container_opens_for_gantry_shell_after_its_tmp_dir_is_gone() {
        let Some(mut executor) = engine("a_kept_docker_container_opens_after_tmp").await else {
            return;
        };
        executor.options.keep = KeepContainers::OnFailure;
        let run = run_id("tmpgone");
        let root = tempfile::tempdir().expect("tempdir");
        let project = root.path().join("build");
        let tmp = root.path().join("build.tmp");
        std::fs::create_dir_all(&project).expect("project");
        std::fs::create_dir_all(&tmp).expect("tmp");
        std::fs::write(tmp.join("KUBECONFIG"), "file-variable-content").expect("file var");
        let out = Output::new();
        let mut env = prepare(
            &executor,
            request(
                job("tmp gone", json!({"name": BUSYBOX}), json!([])),
                &project,
                &run,
                &[],
            ),
            &out,
        )
        .await
        .expect("prepare");
        assert_eq!(
            run_step(
                &mut env,
                "cat /builds/group/project.tmp/KUBECONFIG; exit 3",
                &out
            )
            .await
            .expect("run"),
            ScriptOutcome::Exited(3)
        );
        let command = env.shell_command().expect("a failed job is kept");
        // As the engine does after every job.
        std::fs::remove_dir_all(&tmp).expect("remove tmp");
        env.cleanup().await.expect("cleanup");
        executor.shutdown().await.expect("shutdown");

        let (code, stdout, stderr) = run_shell_command(
            &command,
            "cat /builds/group/project.tmp/KUBECONFIG; echo; pwd; exit 0\n",
        );
        assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
        assert!(stdout.contains("file-variable-content"), "{stdout}");
        assert!(stdout.contains("/builds/group/project"), "{stdout}");
        assert_eq!(
            executor
                .remove_kept(Some(&repository_key(&project)), None)
                .await
                .expect("remove kept"),
            1
        );
    }

    /// Issue 8, defect 3: kept containers were selected by `CI_PROJECT_DIR`
    /// and job name, so running a job in one repository removed the kept
    /// container of the same job in another repository with the same folder
    /// name.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_same_named_folder_in_another_repository_keeps_its_container() {
        let Some(mut executor) = engine("a_same_named_folder_keeps_its_container").await else {
            return;
        };
        executor.options.keep = KeepContainers::Always;
        let first = tempfile::tempdir().expect("tempdir");
        let second = tempfile::tempdir().expect("tempdir");
        let dir_a = first.path().join("project");
        let dir_b = second.path().join("project");
        std::fs::create_dir_all(&dir_a).expect("a");
        std::fs::create_dir_all(&dir_b).expect("b");
        let (key_a, key_b) = (repository_key(&dir_a), repository_key(&dir_b));
        assert_ne!(key_a, key_b);
        let out = Output::new();
        let mut kept = Vec::new();
        for (dir, tag) in [(&dir_a, "sameA"), (&dir_b, "sameB")] {
            let run = run_id(tag);
            let mut env = prepare(
                &executor,
                request(
                    job("build", json!({"name": BUSYBOX}), json!([])),
                    dir,
                    &run,
                    &[],
                ),
                &out,
            )
            .await
            .expect("prepare");
            run_step(&mut env, "true", &out).await.expect("run");
            env.cleanup().await.expect("cleanup");
            executor.shutdown().await.expect("shutdown");
            kept.push(repo_containers(&executor, &repository_key(dir)).await);
        }
        assert_eq!(kept[0].len(), 1);
        assert_eq!(kept[1].len(), 1);
        assert!(
            container_exists(&executor, &kept[0][0]).await,
            "the other repository's kept container was removed"
        );
        for key in [&key_a, &key_b] {
            executor.clean_repository(key).await.expect("clean");
            assert!(repo_containers(&executor, key).await.is_empty());
        }
    }

    /// Issue 8, defect 8: every docker job kept its container, and a job
    /// run again could leave a second one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_a_failed_docker_job_keeps_its_container_and_only_one() {
        let Some(mut executor) = engine("only_a_failed_docker_job_keeps").await else {
            return;
        };
        executor.options.keep = KeepContainers::OnFailure;
        let dir = tempfile::tempdir().expect("tempdir");
        let key = repository_key(dir.path());
        let out = Output::new();
        for (script, kept_after) in [("exit 0", 0), ("exit 1", 1), ("exit 2", 1), ("true", 0)] {
            let run = run_id("keep");
            let mut env = prepare(
                &executor,
                request(
                    job("flaky", json!({"name": BUSYBOX}), json!([])),
                    dir.path(),
                    &run,
                    &[],
                ),
                &out,
            )
            .await
            .expect("prepare");
            run_step(&mut env, script, &out).await.expect("run");
            assert_eq!(env.shell_command().is_some(), kept_after == 1, "{script}");
            env.cleanup().await.expect("cleanup");
            executor.shutdown().await.expect("shutdown");
            assert_eq!(
                repo_containers(&executor, &key).await.len(),
                kept_after,
                "after `{script}`"
            );
        }
    }

    /// The victim of the next test: a run with a service, killed with
    /// SIGKILL by the parent test. Does nothing unless started by it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn victim_run_killed_by_the_sigkill_test() {
        let (Ok(dir), Ok(run)) = (
            std::env::var("GANTRY_VICTIM_DIR"),
            std::env::var("GANTRY_VICTIM_RUN"),
        ) else {
            return;
        };
        let executor = DockerExecutor::connect().await.expect("engine");
        let out = Output::new();
        let _env = prepare(
            &executor,
            request(
                job(
                    "victim",
                    json!({"name": BUSYBOX}),
                    json!([{"name": HTTPD, "alias": "web"}]),
                ),
                Path::new(&dir),
                &run,
                &[],
            ),
            &out,
        )
        .await
        .expect("prepare");
        println!("READY");
        std::io::stdout().flush().expect("flush");
        tokio::time::sleep(Duration::from_secs(300)).await;
    }

    /// Issue 8, defect 8: after `kill -9` the build and service containers
    /// and the network stayed forever. The next run in the repository
    /// removes those of runs whose process is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_next_run_removes_what_a_sigkilled_run_left() {
        let Some(executor) = engine("the_next_run_removes_what_a_sigkilled_run_left").await else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let victim_run = run_id("victim");
        let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args([
                "executor_regressions::victim_run_killed_by_the_sigkill_test",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("GANTRY_VICTIM_DIR", dir.path())
            .env("GANTRY_VICTIM_RUN", &victim_run)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn the victim");
        let stdout = child.stdout.take().expect("stdout");
        let ready = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains("READY"))
        });
        let ready = tokio::time::timeout(Duration::from_secs(120), ready)
            .await
            .map(|r| r.unwrap_or(false))
            .unwrap_or(false);
        // SIGKILL: the victim cannot clean up.
        let _ = child.kill();
        let _ = child.wait();
        assert!(ready, "the victim run did not start its containers");
        let (containers, networks) = count_run_objects(&executor, &victim_run).await;
        assert_eq!(
            (containers, networks),
            (2, 1),
            "the killed run left its build and service containers and its network"
        );

        // The next run in the same repository.
        let run = run_id("next");
        let out = Output::new();
        let env = prepare(
            &executor,
            request(
                job("next", json!({"name": BUSYBOX}), json!([])),
                dir.path(),
                &run,
                &[],
            ),
            &out,
        )
        .await
        .expect("prepare");
        env.cleanup().await.expect("cleanup");
        executor.shutdown().await.expect("shutdown");
        assert_eq!(count_run_objects(&executor, &victim_run).await, (0, 0));
        assert_eq!(count_run_objects(&executor, &run).await, (0, 0));
    }

    /// Issue 8, defect 8: `gantry clean` removes everything Gantry made for
    /// the repository, kept containers included, and nothing of another.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clean_removes_the_repositorys_containers_and_nothing_else() {
        let Some(mut executor) = engine("clean_removes_the_repositorys_containers").await else {
            return;
        };
        executor.options.keep = KeepContainers::Always;
        let mine = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        let out = Output::new();
        for dir in [mine.path(), other.path()] {
            let run = run_id("clean");
            let env = prepare(
                &executor,
                request(
                    job("kept", json!({"name": BUSYBOX}), json!([])),
                    dir,
                    &run,
                    &[],
                ),
                &out,
            )
            .await
            .expect("prepare");
            env.cleanup().await.expect("cleanup");
            executor.shutdown().await.expect("shutdown");
        }
        let count = executor
            .clean_repository(&repository_key(mine.path()))
            .await
            .expect("clean");
        assert_eq!(count.containers, 1);
        assert!(
            repo_containers(&executor, &repository_key(mine.path()))
                .await
                .is_empty()
        );
        let others = repo_containers(&executor, &repository_key(other.path())).await;
        assert_eq!(
            others.len(),
            1,
            "another repository's container was touched"
        );
        executor
            .clean_repository(&repository_key(other.path()))
            .await
            .expect("clean other");
    }

    /// Issue 8, defect 5: script output went through unbounded channels, so
    /// memory grew with output speed. A sender now waits while the log is a
    /// budget behind.
    #[tokio::test]
    async fn script_output_waits_while_the_log_is_behind() {
        let (sink, mut rx) = log_channel();
        sink.send_output(vec![b'x'; LOG_BUDGET])
            .await
            .expect("first chunk");
        let blocked =
            tokio::time::timeout(Duration::from_millis(200), sink.send_output(vec![b'y'; 10]))
                .await;
        assert!(blocked.is_err(), "a full log must make the sender wait");
        // Engine messages never wait.
        sink.send(b"note\n".to_vec()).expect("message");
        assert_eq!(rx.recv().await.map(|c| c.len()), Some(LOG_BUDGET));
        tokio::time::timeout(Duration::from_secs(5), sink.send_output(vec![b'y'; 10]))
            .await
            .expect("room again")
            .expect("sent");
        drop(rx);
        assert!(sink.send_output(vec![b'z'; 10]).await.is_err());
    }

    /// A writer the test can read back (the reporter takes a boxed writer).
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Issue 8, defect 5: a long line without a newline was re-scanned from
    /// its start for every chunk (quadratic: 20 MB took 7.8 s) and sent
    /// whole to the live view. The log keeps it whole; the live view gets it
    /// cut.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_line_is_whole_in_the_log_and_cut_in_the_live_view() {
        let repo = common::Repo::new(&[("README", "x")]);
        let pipeline = common::pipeline(
            &["test"],
            vec![common::job(
                "long",
                "test",
                &["head -c 3000000 /dev/zero | tr '\\0' x", "echo; echo after"],
            )],
        );
        let events = Shared::default();
        let mut reporter = Reporter::new(OutputMode::Json, Box::new(events.clone()));
        let report = gantry_engine::run::run_pipeline(
            &pipeline,
            repo.options(),
            None,
            &mut reporter,
            CancellationToken::new(),
        )
        .await
        .expect("run");
        assert_eq!(common::status(&report, "long"), "success");
        let log = common::log(&report, "long");
        assert!(
            log.contains(&"x".repeat(3_000_000)),
            "the log has the whole line"
        );
        assert!(log.contains("after"));
        let text = String::from_utf8(events.0.lock().expect("lock").clone()).expect("utf-8");
        let longest = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "log")
            .filter_map(|e| e["line"].as_str().map(str::len))
            .max()
            .unwrap_or(0);
        assert!(
            longest < LogLines::LIVE_CAP + 100,
            "a live line of {longest} bytes"
        );
        assert!(text.contains("more bytes of this line are in the log"));
    }

    fn cache(key: &str, paths: &[&str]) -> Cache {
        Cache {
            key: CacheKey::Literal(key.into()),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            policy: CachePolicy::PullPush,
            ..Cache::default()
        }
    }

    fn zip_entries(path: &Path) -> Vec<String> {
        let file = std::fs::File::open(path).expect("open zip");
        let archive = zip::ZipArchive::new(file).expect("zip");
        archive.file_names().map(str::to_string).collect()
    }

    /// Issue 8, defect 7: an absolute symlink (a virtualenv's `bin/python`)
    /// was uploaded silently in artifacts, and in a cache it made every
    /// restore fail. Now: a warning at upload; the cache restores it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn absolute_symlinks_warn_in_artifacts_and_restore_from_a_cache() {
        let repo = common::Repo::new(&[("README", "x")]);
        let mut job = common::job(
            "venv",
            "test",
            &[
                "if [ -L venv/bin/python ]; then echo restored-link; fi",
                "mkdir -p venv/bin && ln -sfn /bin/sh venv/bin/python && echo lib > venv/lib.txt",
            ],
        );
        job.artifacts = common::artifacts(&["venv/"]);
        job.cache = vec![cache("venv-cache", &["venv/"])];
        let pipeline = common::pipeline(&["test"], vec![job]);
        let first = repo.run(&pipeline).await;
        let log = common::log(&first, "venv");
        assert_eq!(common::status(&first, "venv"), "success", "{log}");
        assert!(
            log.contains("WARNING: artifacts: `venv/bin/python` is a symlink to `/bin/sh`"),
            "{log}"
        );
        let second = repo.run(&pipeline).await;
        let log = common::log(&second, "venv");
        assert!(log.contains("Restored cache \"venv-cache\""), "{log}");
        assert!(log.contains("restored-link"), "{log}");
    }

    /// Issue 8, defect 7: a cache whose restore failed was saved again from
    /// the job's incomplete files, so it lost entries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_cache_restore_never_shrinks_the_cache() {
        use zip::write::SimpleFileOptions;
        let repo = common::Repo::new(&[("README", "x")]);
        // A cache the job cannot restore: a file written through a link
        // that leaves the directory is refused.
        let cache_dir = repo.path().join(".gantry/cache");
        std::fs::create_dir_all(&cache_dir).expect("cache dir");
        let zip_path = gantry_engine::cache::cache_path(&cache_dir, "deps");
        {
            let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).expect("zip"));
            let opts = SimpleFileOptions::default();
            for i in 0..5 {
                z.start_file(format!("deps/file{i}.txt"), opts)
                    .expect("entry");
                z.write_all(b"cached").expect("write");
            }
            z.add_symlink("deps/out", "/tmp", opts).expect("link");
            z.start_file("deps/out/escape.txt", opts).expect("entry");
            z.write_all(b"x").expect("write");
            z.finish().expect("finish");
        }
        let before = zip_entries(&zip_path);
        let mut job = common::job(
            "deps",
            "test",
            &["mkdir -p deps && echo only-one > deps/new.txt"],
        );
        job.cache = vec![cache("deps", &["deps/"])];
        let report = repo.run(&common::pipeline(&["test"], vec![job])).await;
        let log = common::log(&report, "deps");
        assert!(log.contains("could not be restored"), "{log}");
        assert!(log.contains("not saved"), "{log}");
        assert_eq!(zip_entries(&zip_path), before, "the cache was rewritten");
    }
}

// ---- run (issue 8: backpressure to the event sink, stderr, state dir,
// ---- owner file; issue 7: child pipelines) ----

mod run_regressions {
    use super::common::{self, Repo};
    use gantry_engine::ports::EventSink;
    use gantry_engine::report::Event;
    use gantry_engine::run::{RunStatus, run_pipeline};
    use std::path::PathBuf;
    use std::time::{Duration, Instant};
    use tokio_util::sync::CancellationToken;

    /// An event sink that stalls at the first log line (a terminal that
    /// does not read) until `marker` exists or `patience` passes, and
    /// records whether the job got to write it meanwhile.
    struct StalledTerminal {
        marker: PathBuf,
        patience: Duration,
        stalled: bool,
        job_finished_while_stalled: bool,
    }

    impl EventSink for StalledTerminal {
        fn emit(&mut self, event: &Event) {
            if self.stalled || !matches!(event, Event::Log { .. }) {
                return;
            }
            self.stalled = true;
            let start = Instant::now();
            while start.elapsed() < self.patience {
                if self.marker.exists() {
                    self.job_finished_while_stalled = true;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Issue 8, defect 5: lines went from a job to the dispatcher through
    /// an unbounded channel, so a job printing faster than the terminal
    /// reads queued all its output in memory. Now a stalled sink makes the
    /// job wait on its pipe, and nothing is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_stalled_terminal_makes_a_fast_job_wait() {
        let repo = Repo::new(&[("README", "x")]);
        let scratch = tempfile::tempdir().expect("tempdir");
        let marker = scratch.path().join("printed-everything");
        // 2,000,000 lines (about 15 MB): far more than what may be in flight.
        let pipeline = common::pipeline(
            &["test"],
            vec![common::job(
                "fast",
                "test",
                &["seq 1 2000000", "touch \"$MARKER\""],
            )],
        );
        let mut opts = repo.options();
        opts.variables = vec![common::var("MARKER", &marker.display().to_string())];
        let mut sink = StalledTerminal {
            marker: marker.clone(),
            patience: Duration::from_secs(3),
            stalled: false,
            job_finished_while_stalled: false,
        };
        let report = run_pipeline(&pipeline, opts, None, &mut sink, CancellationToken::new())
            .await
            .expect("run");
        assert_eq!(report.status, RunStatus::Success);
        assert!(sink.stalled, "the sink saw no line");
        assert!(
            !sink.job_finished_while_stalled,
            "the job printed 15 MB while the terminal read nothing: output was queued in memory"
        );
        let log = common::log(&report, "fast");
        assert!(log.contains("\n1999999\n2000000\n"), "the log lost lines");
    }

    fn in_container(name: &str, stage: &str, script: &[&str]) -> gantry_config::model::Job {
        let mut job = common::job(name, stage, script);
        job.image = Some(gantry_config::model::Image {
            name: super::docker_common::BUSYBOX.to_string(),
            entrypoint: None,
            pull_policy: vec![],
            docker: None,
        });
        job
    }

    fn docker() -> gantry_engine::run::DockerConnect {
        use gantry_engine::executor::Executor;
        Box::new(|| {
            Box::pin(async {
                let executor = gantry_engine::docker::DockerExecutor::connect().await?;
                Ok(std::sync::Arc::new(executor) as std::sync::Arc<dyn Executor>)
            })
        })
    }

    /// Issue 8, defect 4: only the shell executor gave jobs
    /// `GANTRY_STATE_DIR`; a deploy job in a container wrote its history
    /// into the container, and the next job (and pipeline) saw nothing.
    /// Now the repository's `.gantry/` is mounted and named in the variable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_container_job_writes_state_the_next_jobs_and_runs_see() {
        if super::docker_common::engine("a_container_job_writes_state")
            .await
            .is_none()
        {
            return;
        }
        let repo = Repo::new(&[("README", "x")]);
        let pipeline = common::pipeline(
            &["deploy", "check"],
            vec![
                in_container(
                    "deploy",
                    "deploy",
                    &[
                        "mkdir -p \"$GANTRY_STATE_DIR/history\" && echo v1 >> \"$GANTRY_STATE_DIR/history/app\"",
                    ],
                ),
                in_container(
                    "in-container",
                    "check",
                    &["echo \"seen: $(cat \"$GANTRY_STATE_DIR/history/app\")\""],
                ),
                common::job(
                    "on-host",
                    "check",
                    &["echo \"seen: $(cat \"$GANTRY_STATE_DIR/history/app\")\""],
                ),
            ],
        );
        let mut reporter = gantry_engine::report::Reporter::new(
            gantry_engine::report::OutputMode::Quiet,
            Box::new(std::io::sink()),
        );
        let report = run_pipeline(
            &pipeline,
            repo.options(),
            Some(docker()),
            &mut reporter,
            CancellationToken::new(),
        )
        .await
        .expect("run");
        for job in ["deploy", "in-container", "on-host"] {
            assert_eq!(
                common::status(&report, job),
                "success",
                "{job}: {}",
                common::log(&report, job)
            );
        }
        assert!(common::log(&report, "in-container").contains("seen: v1"));
        assert!(common::log(&report, "on-host").contains("seen: v1"));
        let on_disk = repo.path().join(".gantry/history/app");
        assert_eq!(
            std::fs::read_to_string(&on_disk).expect("history in the repository's .gantry/"),
            "v1\n"
        );
        // The next pipeline sees it too.
        let next = common::pipeline(
            &["check"],
            vec![in_container(
                "later",
                "check",
                &["echo \"seen: $(cat \"$GANTRY_STATE_DIR/history/app\")\""],
            )],
        );
        let report = run_pipeline(
            &next,
            repo.options(),
            Some(docker()),
            &mut reporter,
            CancellationToken::new(),
        )
        .await
        .expect("run");
        assert!(common::log(&report, "later").contains("seen: v1"));
    }

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
        }
    }

    /// Issue 8 ("stderr marked"): stdout and stderr shared one pipe on the
    /// shell executor and one look in the terminal. Now stderr lines are red
    /// with colours, after `! ` without, and the log file keeps exactly
    /// what the job printed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stderr_is_marked_in_the_terminal_and_not_in_the_log() {
        use gantry_engine::report::{OutputMode, Reporter};
        let repo = Repo::new(&[("README", "x")]);
        let pipeline = common::pipeline(
            &["test"],
            vec![common::job(
                "mixed",
                "test",
                &["echo to-out; sleep 0.2; echo to-err >&2; sleep 0.2; echo out-again"],
            )],
        );
        for color in [false, true] {
            let terminal = Captured::default();
            let mut reporter =
                Reporter::new(OutputMode::Human { color }, Box::new(terminal.clone()));
            let report = run_pipeline(
                &pipeline,
                repo.options(),
                None,
                &mut reporter,
                CancellationToken::new(),
            )
            .await
            .expect("run");
            assert_eq!(report.status, RunStatus::Success);
            let text = terminal.text();
            let line_of = |needle: &str| {
                text.lines()
                    .find(|l| l.contains(needle) && !l.contains("$ echo"))
                    .unwrap_or_else(|| panic!("no `{needle}` line in:\n{text}"))
                    .to_string()
            };
            if color {
                assert!(line_of("to-err").contains("\x1b[31mto-err\x1b[0m"));
                assert!(!line_of("to-out").contains("\x1b[31m"));
            } else {
                assert!(line_of("to-err").ends_with("! to-err"), "{text}");
                assert!(line_of("to-out").ends_with(" to-out"));
                assert!(!line_of("to-out").contains("! "));
            }
            let log = common::log(&report, "mixed");
            let printed: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("to-") || l.contains("out-again"))
                .filter(|l| !l.starts_with("$ "))
                .collect();
            assert_eq!(printed, ["to-out", "to-err", "out-again"], "{log}");
        }
    }
}
