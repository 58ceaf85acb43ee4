//! The shell executor end to end: real git repositories, real processes.
//! Assertions are on what the job scripts printed and on final statuses.

mod common;

use common::*;
use gantry_config::model::{
    AllowFailure, ArtifactsWhen, Cache, CacheKey, CachePolicy, Retry, Variable, When,
};
use gantry_engine::run::RunStatus;
use std::time::{Duration, Instant};

#[tokio::test]
async fn stages_run_in_order_on_a_clean_copy_of_the_commit() {
    let repo = Repo::new(&[("hello.txt", "committed\n")]);
    // Uncommitted change: jobs must still see the commit.
    std::fs::write(repo.path().join("hello.txt"), "dirty\n").unwrap();
    let p = pipeline(
        &["build", "test"],
        vec![
            job(
                "build",
                "build",
                &["cat hello.txt", "echo made > out.txt", "pwd"],
            ),
            job("test", "test", &["echo testing; ls out.txt || echo no-out"]),
        ],
    );
    let r = repo.run(&p).await;
    assert_eq!(r.status, RunStatus::Success);
    let build = log(&r, "build");
    assert!(build.contains("$ cat hello.txt"), "{build}");
    assert!(build.contains("committed"), "{build}");
    assert!(!build.contains("dirty"), "{build}");
    // The job ran in its own copy, not in the working tree.
    assert!(!repo.path().join("out.txt").exists());
    assert!(build.contains(".gantry/runs/"), "{build}");
    // Each job has its own clean copy.
    assert!(log(&r, "test").contains("no-out"));
    // State dir is git-ignored, `last` points at the run.
    assert_eq!(
        std::fs::read_to_string(repo.path().join(".gantry/.gitignore")).unwrap(),
        "*\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.path().join(".gantry/last"))
            .unwrap()
            .trim(),
        r.run_id
    );
}

#[tokio::test]
async fn first_failing_command_fails_the_job() {
    let repo = Repo::new(&[]);
    let mut j = job("j", "test", &["echo before", "false", "echo never"]);
    j.before_script = vec!["echo from-before-script".into()];
    let p = pipeline(
        &["test"],
        vec![j, job("pipe", "test", &["false | true", "echo after-pipe"])],
    );
    let r = repo.run(&p).await;
    assert_eq!(status(&r, "j"), "failed");
    assert_eq!(r.job("j").unwrap().exit_code, Some(1));
    let l = log(&r, "j");
    assert!(
        l.contains("from-before-script") && l.contains("before"),
        "{l}"
    );
    assert!(!l.contains("\nnever"), "{l}");
    // pipefail: a failure inside a pipeline fails the job.
    assert_eq!(status(&r, "pipe"), "failed");
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.exit_code(), 1);
}

#[tokio::test]
async fn when_gates_follow_gitlab() {
    let repo = Repo::new(&[]);
    let mut on_failure = job("cleanup", "post", &["echo cleaning"]);
    on_failure.when = When::OnFailure;
    let mut always = job("report", "post", &["echo reporting"]);
    always.when = When::Always;
    let p = pipeline(
        &["build", "test", "post"],
        vec![
            job("build", "build", &["exit 2"]),
            job("test", "test", &["echo should-not-run"]),
            on_failure,
            always,
        ],
    );
    let r = repo.run(&p).await;
    assert_eq!(status(&r, "build"), "failed");
    assert_eq!(status(&r, "test"), "skipped");
    assert_eq!(status(&r, "cleanup"), "success");
    assert!(log(&r, "cleanup").contains("cleaning"));
    assert_eq!(status(&r, "report"), "success");

    // Without a failure, on_failure jobs are skipped.
    let mut on_failure = job("cleanup", "post", &["echo cleaning"]);
    on_failure.when = When::OnFailure;
    let p = pipeline(
        &["build", "post"],
        vec![job("build", "build", &["true"]), on_failure],
    );
    let r = repo.run(&p).await;
    assert_eq!(status(&r, "cleanup"), "skipped");
    assert_eq!(r.status, RunStatus::Success);
}

#[tokio::test]
async fn allow_failure_and_exit_codes() {
    let repo = Repo::new(&[]);
    let mut soft = job("soft", "test", &["exit 1"]);
    soft.allow_failure = true;
    let mut code3 = job("code3", "test", &["exit 3"]);
    code3.allow_failure_exit_codes = vec![3];
    let p = pipeline(
        &["test", "deploy"],
        vec![soft, code3, job("deploy", "deploy", &["echo deploying"])],
    );
    let r = repo.run(&p).await;
    assert_eq!(status(&r, "soft"), "warning");
    assert_eq!(status(&r, "code3"), "warning");
    assert_eq!(status(&r, "deploy"), "success");
    assert_eq!(r.status, RunStatus::Success);

    let mut code4 = job("code4", "test", &["exit 4"]);
    code4.allow_failure_exit_codes = vec![3];
    let p = pipeline(
        &["test", "deploy"],
        vec![code4, job("deploy", "deploy", &["true"])],
    );
    let r = repo.run(&p).await;
    assert_eq!(status(&r, "code4"), "failed");
    assert_eq!(status(&r, "deploy"), "skipped");
    let _ = AllowFailure::Bool(true);
}

#[tokio::test]
async fn manual_jobs_run_only_when_asked() {
    let repo = Repo::new(&[]);
    let mut deploy = job("deploy", "deploy", &["echo deployed"]);
    deploy.when = When::Manual;
    deploy.allow_failure = true;
    let p = pipeline(
        &["build", "deploy"],
        vec![job("build", "build", &["true"]), deploy],
    );
    let r = repo.run(&p).await;
    assert_eq!(status(&r, "deploy"), "manual");
    assert!(!log(&r, "deploy").contains("deployed"));
    assert_eq!(r.status, RunStatus::Success);

    let mut opts = repo.options();
    opts.manual = vec!["deploy".into()];
    let r = repo.run_with(&p, opts).await;
    assert_eq!(status(&r, "deploy"), "success");
    assert!(log(&r, "deploy").contains("deployed"));
}

#[tokio::test]
async fn blocking_manual_job_blocks_later_stages() {
    let repo = Repo::new(&[]);
    let mut gate = job("approve", "gate", &["true"]);
    gate.when = When::Manual;
    gate.allow_failure = false;
    let p = pipeline(
        &["gate", "deploy"],
        vec![gate, job("deploy", "deploy", &["true"])],
    );
    let r = repo.run(&p).await;
    assert_eq!(status(&r, "approve"), "manual");
    assert_eq!(status(&r, "deploy"), "skipped");
    assert!(
        r.job("deploy")
            .unwrap()
            .reason
            .as_deref()
            .unwrap()
            .contains("approve")
    );
}

#[tokio::test]
async fn delayed_jobs_wait_unless_no_delay() {
    let repo = Repo::new(&[]);
    let mut later = job("later", "test", &["echo later"]);
    later.when = When::Delayed;
    later.start_in = Some(gantry_config::model::StartIn::from_seconds(1));
    let p = pipeline(&["test"], vec![later]);
    let t = Instant::now();
    let r = repo.run(&p).await;
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(status(&r, "later"), "success");

    let mut opts = repo.options();
    opts.no_delay = true;
    let t = Instant::now();
    let r = repo.run_with(&p, opts).await;
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(status(&r, "later"), "success");
}

#[tokio::test]
async fn retry_with_when_and_exit_codes() {
    let repo = Repo::new(&[]);
    let (_keep, dir) = scratch();
    let counter = dir.join("count");
    // Fails on the first attempt, succeeds on the second.
    let script = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo attempt-$n; [ $n -ge 2 ]",
        c = counter.display()
    );
    let mut flaky = job("flaky", "test", &[&script]);
    flaky.retry = Retry {
        max: 2,
        when: vec!["script_failure".into()],
        exit_codes: vec![],
    };
    let mut wrong_code = job("wrong-code", "test", &["exit 5"]);
    wrong_code.retry = Retry {
        max: 2,
        when: vec![],
        exit_codes: vec![137],
    };
    let p = pipeline(&["test"], vec![flaky, wrong_code]);
    let r = repo.run(&p).await;
    assert_eq!(status(&r, "flaky"), "success");
    assert_eq!(r.job("flaky").unwrap().attempts, 2);
    let l = log(&r, "flaky");
    assert!(l.contains("attempt-1") && l.contains("attempt-2"), "{l}");
    assert_eq!(status(&r, "wrong-code"), "failed");
    assert_eq!(r.job("wrong-code").unwrap().attempts, 1);
}

/// Whether `pid` is a live process (a zombie waiting for init to reap it
/// is dead).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn timeout_kills_the_process_tree() {
    let repo = Repo::new(&[]);
    let (_keep, dir) = scratch();
    let pidfile = dir.join("pid");
    let script = format!(
        "sleep 300 & echo $! > {}; echo started; sleep 300",
        pidfile.display()
    );
    let mut slow = job("slow", "test", &[&script]);
    slow.timeout = Some(1);
    let p = pipeline(&["test"], vec![slow]);
    let t = Instant::now();
    let r = repo.run(&p).await;
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let j = r.job("slow").unwrap();
    assert_eq!(j.status.as_str(), "failed");
    assert_eq!(j.reason.as_deref(), Some("timeout"));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "background process {pid} survived the timeout");
}

#[tokio::test]
async fn cancel_stops_everything_cleanly() {
    let repo = Repo::new(&[]);
    let (_keep, dir) = scratch();
    let pidfile = dir.join("pid");
    let script = format!("sleep 300 & echo $! > {}; sleep 300", pidfile.display());
    let p = pipeline(
        &["test", "after"],
        vec![
            job("long", "test", &[&script]),
            job("next", "after", &["true"]),
        ],
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    let c2 = cancel.clone();
    let pf = pidfile.clone();
    tokio::spawn(async move {
        // The file exists before `echo $!` has written the pid into it.
        while std::fs::read_to_string(&pf).map_or(true, |s| s.trim().is_empty()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c2.cancel();
    });
    let mut reporter = gantry_engine::report::Reporter::new(
        gantry_engine::report::OutputMode::Quiet,
        Box::new(std::io::sink()),
    );
    let t = Instant::now();
    let r = gantry_engine::run::run_pipeline(&p, repo.options(), None, &mut reporter, cancel)
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(r.status, RunStatus::Canceled);
    assert_eq!(status(&r, "long"), "canceled");
    assert_eq!(status(&r, "next"), "canceled");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "orphan {pid} after cancel");
    // No temporary directories left behind.
    let builds = r.run_dir.join("builds");
    let leftovers: Vec<_> = std::fs::read_dir(&builds)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!r.run_dir.join("source").exists());
    let snapshots = repo.path().join(".gantry/snapshots");
    let stray: Vec<_> = std::fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[tokio::test]
async fn resource_group_runs_one_job_at_a_time() {
    let repo = Repo::new(&[]);
    let (_keep, dir) = scratch();
    let file = dir.join("events");
    let script = format!(
        "echo start >> {f}; sleep 0.3; echo end >> {f}",
        f = file.display()
    );
    let mut a = job("a", "deploy", &[&script]);
    a.resource_group = Some("prod".into());
    let mut b = job("b", "deploy", &[&script]);
    b.resource_group = Some("prod".into());
    let p = pipeline(&["deploy"], vec![a, b]);
    let r = repo.run(&p).await;
    assert_eq!(r.status, RunStatus::Success);
    let events = std::fs::read_to_string(&file).unwrap();
    assert_eq!(events, "start\nend\nstart\nend\n");
}

#[tokio::test]
async fn dag_jobs_start_when_their_needs_finish() {
    let repo = Repo::new(&[]);
    let (_keep, dir) = scratch();
    let file = dir.join("order");
    let w = |s: &str| format!("echo {s} >> {}", file.display());
    let slow = job("slow", "build", &["sleep 1", &w("slow")]);
    let fast = job("fast", "build", &[&w("fast")]);
    let mut after_fast = job("after-fast", "test", &[&w("after-fast")]);
    after_fast.needs = needs(&["fast"]);
    let mut stage_mode = job("stage-mode", "test", &[&w("stage-mode")]);
    stage_mode.needs = None;
    let p = pipeline(&["build", "test"], vec![slow, fast, after_fast, stage_mode]);
    let r = repo.run(&p).await;
    assert_eq!(r.status, RunStatus::Success);
    let order = std::fs::read_to_string(&file).unwrap();
    let pos = |s: &str| order.lines().position(|l| l == s).unwrap();
    // The DAG job does not wait for the slow job of the earlier stage.
    assert!(pos("after-fast") < pos("slow"), "{order}");
    // The stage-mode job does.
    assert!(pos("stage-mode") > pos("slow"), "{order}");
}

#[tokio::test]
async fn dag_failure_skips_dependents_only() {
    let repo = Repo::new(&[]);
    let mut b = job("b", "test", &["true"]);
    b.needs = needs(&["a"]);
    let mut d = job("d", "test", &["true"]);
    d.needs = needs(&["c"]);
    let p = pipeline(
        &["build", "test"],
        vec![
            job("a", "build", &["false"]),
            job("c", "build", &["true"]),
            b,
            d,
        ],
    );
    let r = repo.run(&p).await;
    assert_eq!(status(&r, "b"), "skipped");
    assert_eq!(status(&r, "d"), "success");
}

#[tokio::test]
async fn parallel_instances_see_node_index_and_total() {
    let repo = Repo::new(&[]);
    let jobs: Vec<_> = (1..=3)
        .map(|i| {
            let mut j = job(
                &format!("test {i}/3"),
                "test",
                &["echo node=$CI_NODE_INDEX/$CI_NODE_TOTAL"],
            );
            j.definition = "test".into();
            j.node_index = Some(i);
            j.node_total = Some(3);
            j
        })
        .collect();
    let p = pipeline(&["test"], jobs);
    let r = repo.run(&p).await;
    for i in 1..=3 {
        assert!(log(&r, &format!("test {i}/3")).contains(&format!("node={i}/3")));
    }
    // A parallel job is selected by its definition name.
    let mut opts = repo.options();
    opts.jobs = vec!["test".into()];
    let r = repo.run_with(&p, opts).await;
    assert_eq!(r.jobs.len(), 3);
}

#[tokio::test]
async fn variable_precedence_and_predefined() {
    let repo = Repo::new(&[]);
    let mut p = pipeline(&["test"], vec![]);
    p.context_variables.push(var("CI_COMMIT_BRANCH", "main"));
    p.context_variables.push(var("OVERRIDE_ME", "from-context"));
    let mut j = job(
        "show",
        "test",
        &[
            "echo yaml=$OVERRIDE_ME",
            "echo cli=$FROM_CLI",
            "echo nested=$NESTED",
            "echo job=$CI_JOB_NAME stage=$CI_JOB_STAGE server=$CI_SERVER shared=$CI_SHARED_ENVIRONMENT",
            "echo dir-ok=$([ \"$CI_PROJECT_DIR\" = \"$PWD\" ] && echo yes)",
            "echo status=$CI_JOB_STATUS timeout=$CI_JOB_TIMEOUT",
            "echo raw=$RAW",
        ],
    );
    let mut raw = Variable::new("RAW", "$CI_JOB_NAME");
    raw.expand = false;
    j.variables = vec![
        var("OVERRIDE_ME", "from-yaml"),
        var("FROM_CLI", "from-yaml"),
        var("NESTED", "${CI_COMMIT_BRANCH}-$OVERRIDE_ME"),
        raw,
    ];
    j.timeout = Some(120);
    p.jobs.push(j);
    let mut opts = repo.options();
    opts.variables = vec![var("FROM_CLI", "from-cli")];
    let r = repo.run_with(&p, opts).await;
    let l = log(&r, "show");
    assert!(l.contains("yaml=from-yaml"), "{l}");
    assert!(l.contains("cli=from-cli"), "{l}");
    assert!(l.contains("nested=main-from-yaml"), "{l}");
    assert!(
        l.contains("job=show stage=test server=yes shared=true"),
        "{l}"
    );
    assert!(l.contains("dir-ok=yes"), "{l}");
    assert!(l.contains("status=running timeout=120"), "{l}");
    assert!(l.contains("raw=$CI_JOB_NAME"), "{l}");
}

#[tokio::test]
async fn masked_and_file_variables() {
    let repo = Repo::new(&[]);
    let mut secret = Variable::new("TOKEN", "sup3r-s3cret-value");
    secret.masked = true;
    let mut file = Variable::new("KUBECONFIG", "apiVersion: v1\n");
    file.file = true;
    let p = pipeline(
        &["test"],
        vec![job(
            "j",
            "test",
            &[
                "echo token=$TOKEN",
                "printf 'split: sup3r-'; printf 's3cret-value\\n'",
                "echo path=$KUBECONFIG",
                "cat \"$KUBECONFIG\"",
                "echo keep-path $KUBECONFIG > where",
            ],
        )],
    );
    let mut opts = repo.options();
    opts.variables = vec![secret, file];
    let r = repo.run_with(&p, opts).await;
    assert_eq!(r.status, RunStatus::Success);
    let l = log(&r, "j");
    assert!(!l.contains("sup3r-s3cret-value"), "{l}");
    assert!(l.contains("token=[MASKED]"), "{l}");
    assert!(l.contains("split: [MASKED]"), "{l}");
    assert!(l.contains("apiVersion: v1"), "{l}");
    assert!(l.contains("path=/"), "{l}");
    // The file is removed at cleanup.
    let build = r.job("j").unwrap().build_dir.clone().unwrap();
    let kept = std::fs::read_to_string(build.join("where")).unwrap();
    let path = kept.split_whitespace().nth(1).unwrap();
    assert!(!std::path::Path::new(path).exists(), "{path} still exists");
}

#[tokio::test]
async fn after_script_runs_in_its_own_shell_with_job_status() {
    let repo = Repo::new(&[]);
    let mut j = job("j", "test", &["export IN_SCRIPT=1", "exit 7"]);
    j.after_script = vec!["echo after status=$CI_JOB_STATUS in_script=${IN_SCRIPT:-unset}".into()];
    let mut ok = job("ok", "test", &["true"]);
    ok.after_script = vec!["echo after status=$CI_JOB_STATUS".into(), "exit 3".into()];
    let p = pipeline(&["test"], vec![j, ok]);
    let r = repo.run(&p).await;
    let l = log(&r, "j");
    assert!(l.contains("after status=failed in_script=unset"), "{l}");
    assert_eq!(r.job("j").unwrap().exit_code, Some(7));
    // A failing after_script does not change the job's status.
    assert!(log(&r, "ok").contains("after status=success"));
    assert_eq!(status(&r, "ok"), "success");
}

#[tokio::test]
async fn artifacts_paths_exclude_untracked_when_and_dotenv() {
    let repo = Repo::new(&[("tracked.txt", "t")]);
    let mut build = job(
        "build",
        "build",
        &[
            "mkdir -p dist && echo app > dist/app.js && echo tmp > dist/app.tmp",
            "echo stray > untracked.log",
            "echo 'VERSION=1.2.3' > build.env",
            "echo 'URL = http://x/y?a=b' >> build.env",
        ],
    );
    let mut art = artifacts(&["dist/"]).unwrap();
    art.exclude = vec!["dist/*.tmp".into()];
    art.untracked = true;
    art.reports
        .insert("dotenv".into(), vec!["build.env".into()]);
    build.artifacts = Some(art);
    let mut consumer = job(
        "consumer",
        "test",
        &[
            "cat dist/app.js",
            "ls dist/app.tmp 2>/dev/null || echo no-tmp",
            "cat untracked.log",
            "echo version=$VERSION url=$URL",
        ],
    );
    consumer.dependencies = vec!["build".into()];
    let mut outsider = job(
        "outsider",
        "test",
        &[
            "echo version=${VERSION:-none}",
            "ls dist 2>/dev/null || echo no-dist",
        ],
    );
    outsider.dependencies = vec![];
    let mut failing = job("failing", "build", &["echo log > fail.log", "false"]);
    failing.allow_failure = true;
    let mut fart = artifacts(&["fail.log"]).unwrap();
    fart.when = ArtifactsWhen::OnFailure;
    failing.artifacts = Some(fart);
    let p = pipeline(&["build", "test"], vec![build, failing, consumer, outsider]);
    let r = repo.run(&p).await;
    assert_eq!(r.status, RunStatus::Success, "{:?}", r.jobs);
    let c = log(&r, "consumer");
    assert!(c.contains("\napp\n"), "{c}");
    assert!(c.contains("no-tmp"), "{c}");
    assert!(c.contains("stray"), "{c}");
    assert!(c.contains("version=1.2.3 url=http://x/y?a=b"), "{c}");
    let o = log(&r, "outsider");
    assert!(o.contains("version=none") && o.contains("no-dist"), "{o}");
    assert!(r.job("failing").unwrap().artifact.is_some());
    // Artifacts live under .gantry, never in the working tree.
    assert!(!repo.path().join("dist").exists());
    assert!(
        r.job("build")
            .unwrap()
            .artifact
            .as_ref()
            .unwrap()
            .starts_with(repo.path().join(".gantry"))
    );
}

#[tokio::test]
async fn junit_failures_are_collected() {
    let repo = Repo::new(&[]);
    let mut t = job(
        "unit",
        "test",
        &[
            r#"printf '<testsuite><testcase classname="calc" name="adds"/><testcase classname="calc" name="divides"><failure>boom</failure></testcase></testsuite>' > report.xml"#,
            "exit 1",
        ],
    );
    let mut art = gantry_config::model::Artifacts {
        when: ArtifactsWhen::Always,
        ..Default::default()
    };
    art.reports.insert("junit".into(), vec!["*.xml".into()]);
    t.artifacts = Some(art);
    let p = pipeline(&["test"], vec![t]);
    let r = repo.run(&p).await;
    assert_eq!(r.job("unit").unwrap().junit_failures, vec!["calc.divides"]);
}

#[tokio::test]
async fn caches_persist_between_runs_with_policy_and_fallback() {
    let repo = Repo::new(&[("package.lock", "v1")]);
    let cache = |policy: CachePolicy, key: CacheKey| Cache {
        key,
        paths: vec!["deps/".into()],
        policy,
        ..Cache::default()
    };
    let script = "if [ -f deps/lib ]; then echo restored=$(cat deps/lib); else echo cold; fi; mkdir -p deps; echo $CI_JOB_ID > deps/lib";
    let mut a = job("a", "test", &[script]);
    a.cache = vec![cache(
        CachePolicy::PullPush,
        CacheKey::Files {
            files: vec!["package.lock".into()],
            prefix: Some("deps".into()),
        },
    )];
    let p = pipeline(&["test"], vec![a]);
    let r1 = repo.run(&p).await;
    assert!(log(&r1, "a").contains("cold"));
    let r2 = repo.run(&p).await;
    assert!(log(&r2, "a").contains("restored="), "{}", log(&r2, "a"));
    // The key is prefix-SHA1(commit id of the last change to the file).
    let last = git(
        repo.path(),
        &["log", "-1", "--format=%H", "--", "package.lock"],
    );
    use sha1::Digest;
    let digest = hex::encode(sha1::Sha1::digest(last.as_bytes()));
    assert!(
        repo.path()
            .join(format!(".gantry/cache/deps-{digest}.zip"))
            .is_file()
    );

    // pull: restores via fallback_keys, never writes its own key.
    let mut pull = cache(
        CachePolicy::Pull,
        CacheKey::Literal("other-$CI_COMMIT_REF_SLUG".into()),
    );
    pull.fallback_keys = vec![format!("deps-{digest}")];
    let mut b = job("b", "test", &[script]);
    b.cache = vec![pull];
    let r3 = repo.run(&pipeline(&["test"], vec![b])).await;
    assert!(log(&r3, "b").contains("restored="), "{}", log(&r3, "b"));
    assert!(!repo.path().join(".gantry/cache/other-main.zip").exists());

    // push: never restores.
    let mut c = job("c", "test", &[script]);
    c.cache = vec![cache(
        CachePolicy::Push,
        CacheKey::Literal(format!("deps-{digest}")),
    )];
    let r4 = repo.run(&pipeline(&["test"], vec![c])).await;
    assert!(log(&r4, "c").contains("cold"));
}

#[tokio::test]
async fn selection_by_job_needs_and_stage() {
    let repo = Repo::new(&[]);
    let mut test = job("test", "test", &["true"]);
    test.needs = needs(&["build"]);
    let p = pipeline(
        &["build", "test", "deploy"],
        vec![
            job("build", "build", &["true"]),
            test,
            job("deploy", "deploy", &["true"]),
        ],
    );
    let mut opts = repo.options();
    opts.jobs = vec!["test".into()];
    let r = repo.run_with(&p, opts.clone()).await;
    assert_eq!(
        r.jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
        ["test"]
    );
    opts.with_needs = true;
    let r = repo.run_with(&p, opts).await;
    assert_eq!(
        r.jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
        ["build", "test"]
    );
    let mut opts = repo.options();
    opts.stage = Some("deploy".into());
    let r = repo.run_with(&p, opts).await;
    assert_eq!(
        r.jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
        ["deploy"]
    );
    // Unknown names are usage errors.
    let mut opts = repo.options();
    opts.jobs = vec!["nope".into()];
    let mut reporter = gantry_engine::report::Reporter::new(
        gantry_engine::report::OutputMode::Quiet,
        Box::new(std::io::sink()),
    );
    let err = gantry_engine::run::run_pipeline(
        &p,
        opts,
        None,
        &mut reporter,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.is_usage(), "{err}");
}

#[tokio::test]
async fn job_run_alone_uses_the_last_runs_artifacts() {
    let repo = Repo::new(&[]);
    let mut build = job("build", "build", &["echo v > out.txt", "echo A=1 > a.env"]);
    let mut art = artifacts(&["out.txt"]).unwrap();
    art.reports.insert("dotenv".into(), vec!["a.env".into()]);
    build.artifacts = Some(art);
    let mut deploy = job("deploy", "deploy", &["cat out.txt", "echo A=$A"]);
    deploy.dependencies = vec!["build".into()];
    let p = pipeline(&["build", "deploy"], vec![build, deploy]);
    repo.run(&p).await;
    let mut opts = repo.options();
    opts.jobs = vec!["deploy".into()];
    let r = repo.run_with(&p, opts).await;
    let l = log(&r, "deploy");
    assert!(l.contains("\nv\n") && l.contains("A=1"), "{l}");
}

#[tokio::test]
async fn git_strategy_clone_gives_a_real_checkout() {
    let repo = Repo::new(&[("f", "x")]);
    let mut j = job(
        "j",
        "test",
        &["git rev-parse HEAD", "git status --porcelain | wc -l"],
    );
    j.variables = vec![var("GIT_STRATEGY", "clone")];
    let r = repo.run(&pipeline(&["test"], vec![j])).await;
    assert_eq!(r.status, RunStatus::Success, "{}", log(&r, "j"));
    assert!(log(&r, "j").contains(&repo.sha));
}
