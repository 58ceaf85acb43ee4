//! The dashboard over HTTP, without a browser: sessions and their cookie
//! flags, CSRF on every form, what each role may see and do (approvals of
//! protected deployments), and escaping of user content. On SQLite, and on
//! PostgreSQL when it is installed.

mod support;

use std::time::Duration;
use support::*;

const PIPELINE: &str = r#"
variables:
  TARGET:
    value: staging
    description: Where to deploy
    options: [staging, production]
stages: [build, deploy]
"build <script>alert(1)</script>":
  stage: build
  script:
    - echo "target is $TARGET"
    - echo "<img src=x onerror=alert(2)>"
deploy:
  stage: deploy
  script: echo "deploying $TARGET"
  when: manual
  environment:
    name: production
"#;

async fn post_schedule(web: &mut Web, project: i64, cron: &str, csrf: &str) -> u16 {
    let project = project.to_string();
    let form = [
        ("csrf", csrf),
        ("project", project.as_str()),
        ("description", "nightly <b>build</b>"),
        ("cron", cron),
        ("timezone", "Europe/Paris"),
    ];
    web.post("/dash/schedules", &form).await.0
}

async fn wait_job_status(app: &gantry_server::app::App, job: i64, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let j = app.store.job(job).await.unwrap().unwrap();
        if j.status == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {job} stayed {}",
            j.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn roles_csrf_and_escaping(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", PIPELINE)]);
    let running = gantry_server::start(config(&dir.path().join("data"), database))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("web", &repo_dir).await;

    // No session: every page redirects to the login page.
    let mut anon = Web::new(&running.url);
    let (s, _, h) = anon.get("/dash/environments").await;
    assert_eq!(s, 303);
    assert_eq!(h["location"], "/login?next=%2Fdash%2Fenvironments");
    let (s, _, _) = anon
        .post(&format!("/dash/projects/{project}/run"), &[("ref", "main")])
        .await;
    assert_eq!(s, 303, "a form post without a session is refused");

    // Wrong passwords and a login form without its CSRF cookie are refused.
    let mut root = Web::new(&running.url);
    assert_eq!(root.login("root", "wrong").await, 401);
    let mut forged = Web::new(&running.url);
    let (s, _, _) = forged
        .post(
            "/login",
            &[
                ("csrf", "x"),
                ("username", "root"),
                ("password", ADMIN_TOKEN),
            ],
        )
        .await;
    assert_eq!(s, 403, "login without the CSRF cookie");

    // The bootstrap administrator signs in with the token; the cookie is
    // HttpOnly and SameSite=Lax (Secure only behind https).
    let (_, page, _) = root.get("/login").await;
    let csrf = csrf_of(&page);
    let (s, _, h) = root
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", "root"),
                ("password", ADMIN_TOKEN),
                ("next", "/dash"),
            ],
        )
        .await;
    assert_eq!(s, 303);
    let set: Vec<&str> = h
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with("gantry_session="))
        .unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    assert!(!session.contains("Secure"), "plain http: {session}");

    // Users with passwords and roles, created by the administrator.
    let csrf = root.csrf().await;
    for (name, role) in [
        ("dev", "developer"),
        ("boss", "maintainer"),
        ("eve", "viewer"),
    ] {
        let (s, body, _) = root
            .post(
                "/dash/users",
                &[
                    ("csrf", &csrf),
                    ("username", name),
                    ("role", role),
                    ("password", "correct horse"),
                ],
            )
            .await;
        assert_eq!(s, 200, "{body}");
        assert!(body.contains("data-testid=\"new-token\""));
    }
    let (s, _, _) = root
        .post(
            "/dash/users",
            &[
                ("username", "mallory"),
                ("role", "admin"),
                ("password", "correct horse"),
            ],
        )
        .await;
    assert_eq!(s, 403, "no CSRF token");
    let (s, _, _) = root
        .post(
            "/dash/users",
            &[
                ("csrf", "not-the-token"),
                ("username", "mallory"),
                ("role", "admin"),
                ("password", "correct horse"),
            ],
        )
        .await;
    assert_eq!(s, 403, "wrong CSRF token");

    let mut dev = Web::new(&running.url);
    assert_eq!(dev.login("dev", "correct horse").await, 303);
    let mut boss = Web::new(&running.url);
    assert_eq!(boss.login("boss", "correct horse").await, 303);
    let mut eve = Web::new(&running.url);
    assert_eq!(eve.login("eve", "correct horse").await, 303);
    let eve_csrf = eve.csrf().await;
    let dev_csrf = dev.csrf().await;
    let boss_csrf = boss.csrf().await;
    assert_ne!(dev_csrf, boss_csrf, "each session has its own CSRF token");

    // A session's CSRF token does not work in another session.
    let (s, _, _) = dev
        .post(
            &format!("/dash/projects/{project}/run"),
            &[("csrf", &boss_csrf), ("ref", "main")],
        )
        .await;
    assert_eq!(s, 403);
    // A viewer may look but not run; a developer's choice must be an option.
    let (s, _, _) = eve.get("/dash").await;
    assert_eq!(s, 200);
    let (s, _, _) = eve
        .post(
            &format!("/dash/projects/{project}/run"),
            &[("csrf", &eve_csrf), ("ref", "main")],
        )
        .await;
    assert_eq!(s, 403, "viewer ran a pipeline");
    let (s, form, _) = dev.get(&format!("/dash/projects/{project}/run")).await;
    assert_eq!(s, 200);
    assert!(
        form.contains("<option value=\"production\""),
        "choice list: {form}"
    );
    assert!(form.contains("Where to deploy"));
    let (s, body, _) = dev
        .post(
            &format!("/dash/projects/{project}/run"),
            &[("csrf", &dev_csrf), ("ref", "main"), ("var:TARGET", "moon")],
        )
        .await;
    assert_eq!(s, 422, "a value outside the options: {body}");
    assert!(body.contains("must be one of: staging, production"));
    let (s, _, h) = dev
        .post(
            &format!("/dash/projects/{project}/run"),
            &[
                ("csrf", &dev_csrf),
                ("ref", "main"),
                ("var:TARGET", "production"),
            ],
        )
        .await;
    assert_eq!(s, 303);
    let pipeline: i64 = h["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let p = running.app.store.pipeline(pipeline).await.unwrap().unwrap();
    assert_eq!(p.source, "web");
    assert!(p.variables.contains("production"), "{}", p.variables);

    let jobs = running
        .app
        .store
        .pipeline_jobs(pipeline, false)
        .await
        .unwrap();
    let build = jobs
        .iter()
        .find(|j| j.name.starts_with("build"))
        .unwrap()
        .id;
    let deploy = jobs.iter().find(|j| j.name == "deploy").unwrap().id;
    wait_job_status(&running.app, build, "success").await;
    wait_job_status(&running.app, deploy, "manual").await;

    // User content is text: the job name and the log are escaped.
    let (_, page, _) = dev.get(&format!("/dash/pipelines/{pipeline}")).await;
    assert!(
        page.contains("build &#60;script&#62;alert(1)&#60;/script&#62;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert(1)"));
    let (_, page, _) = dev.get(&format!("/dash/jobs/{build}")).await;
    assert!(!page.contains("<script>alert(1)"));
    let (_, overview, _) = dev.get("/dash").await;
    assert!(!overview.contains("<script>alert(1)"));
    assert!(overview.contains("web"));

    // A developer cannot deploy to production; a maintainer approves.
    let (_, page, _) = dev.get(&format!("/dash/jobs/{deploy}")).await;
    assert!(page.contains("data-testid=\"needs-approver\""), "{page}");
    let (s, body, _) = dev
        .post(&format!("/dash/jobs/{deploy}/play"), &[("csrf", &dev_csrf)])
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("needs an approver"), "{body}");
    assert_eq!(
        running.app.store.job(deploy).await.unwrap().unwrap().status,
        "manual"
    );
    let (s, _, _) = boss.post(&format!("/dash/jobs/{deploy}/play"), &[]).await;
    assert_eq!(s, 403, "approval without a CSRF token");
    let (s, _, _) = boss
        .post(
            &format!("/dash/jobs/{deploy}/play"),
            &[("csrf", &boss_csrf)],
        )
        .await;
    assert_eq!(s, 303);
    wait_job_status(&running.app, deploy, "success").await;
    let (_, page, _) = dev.get(&format!("/dash/jobs/{deploy}")).await;
    assert!(
        page.contains("Approved by <strong>boss</strong> for <code>production</code>"),
        "{page}"
    );
    let (_, envs, _) = dev.get("/dash/environments").await;
    assert!(envs.contains("web / production"), "{envs}");
    assert!(
        envs.contains(&format!("/dash/jobs/{deploy}")),
        "the deployment is in the history: {envs}"
    );

    // Only administrators manage users.
    let (s, _, _) = boss
        .post(
            "/dash/users",
            &[
                ("csrf", &boss_csrf),
                ("username", "x"),
                ("role", "admin"),
                ("password", "correct horse"),
            ],
        )
        .await;
    assert_eq!(s, 403);

    // Schedules: a cron with a time zone, checked; viewers cannot add one.
    assert_eq!(
        post_schedule(&mut dev, project, "not a cron", &dev_csrf).await,
        422
    );
    assert_eq!(
        post_schedule(&mut eve, project, "0 3 * * 1-5", &eve_csrf).await,
        403,
        "viewer"
    );
    assert_eq!(
        post_schedule(&mut dev, project, "0 3 * * 1-5", &dev_csrf).await,
        303
    );
    let (_, page, _) = eve.get("/dash/schedules").await;
    assert!(
        page.contains("nightly &#60;b&#62;build&#60;/b&#62;"),
        "{page}"
    );
    assert!(page.contains("Europe/Paris") && page.contains("0 3 * * 1-5"));

    // Signing out ends the session on the server.
    let (s, _, _) = dev.post("/logout", &[("csrf", &dev_csrf)]).await;
    assert_eq!(s, 303);
    let (s, _, _) = dev.get("/dash").await;
    assert_eq!(s, 303);
    running.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_roles_csrf_and_escaping_on_sqlite() {
    roles_csrf_and_escaping(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_roles_csrf_and_escaping_on_postgres() {
    let Some(pg) = PgCluster::start() else { return };
    roles_csrf_and_escaping(Some(pg.database("dash"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookie_is_secure_behind_https() {
    let dir = tempfile::tempdir().unwrap();
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http
        .get(format!("{}/login", running.url))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("; Secure"), "{cookie}");
    let page = login.text().await.unwrap();
    let csrf = csrf_of(&page);
    let value = cookie.split(';').next().unwrap().to_string();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("csrf", csrf.as_str()),
            ("username", "root"),
            ("password", ADMIN_TOKEN),
            ("next", "//evil.example/"),
        ])
        .finish();
    let resp = http
        .post(format!("{}/login", running.url))
        .header("x-forwarded-proto", "https")
        .header("cookie", value)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let session = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("gantry_session="))
        .unwrap();
    assert!(
        session.contains("; Secure") && session.contains("HttpOnly"),
        "{session}"
    );
    // An open redirect through `next` is refused.
    assert_eq!(resp.headers()["location"], "/dash");
    running.server.abort();
}

const JUNIT_PIPELINE: &str = r#"
tests:
  script:
    - |
      cat > report.xml <<XML
      <testsuite name="unit"><testcase classname="math" name="adds"/>
      <testcase classname="math" name="divides &lt;by zero&gt;"><failure>boom</failure></testcase></testsuite>
      XML
  artifacts:
    reports:
      junit: report.xml
"#;

/// `artifacts:reports:junit`: the runner reports the failed test cases with
/// the job's end, and the job page lists them (escaped).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn junit_failures_show_on_the_job_page() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", JUNIT_PIPELINE)]);
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("junit", &repo_dir).await;
    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            serde_json::json!({"ref": "main"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    api.wait_pipeline(project, id, Duration::from_secs(60))
        .await;
    let job = api.jobs(project, id).await[0]["id"].as_i64().unwrap();
    let mut web = Web::new(&running.url);
    assert_eq!(web.login("root", ADMIN_TOKEN).await, 303);
    let (status, page, _) = web.get(&format!("/dash/jobs/{job}")).await;
    assert_eq!(status, 200);
    assert!(page.contains("1 failed test case(s)"), "{page}");
    assert!(
        page.contains("math.divides &lt;by zero&gt;")
            || page.contains("math.divides &#60;by zero&#62;"),
        "{page}"
    );
    assert!(!page.contains("math.adds"));
    running.server.abort();
}

const INPUTS_PIPELINE: &str = r#"
spec:
  inputs:
    environment:
      description: Where to deploy
      options: [staging, production]
      default: staging
    replicas:
      type: number
      default: 2
    dry_run:
      type: boolean
      default: true
    regions:
      type: array
      default: [eu]
    tag:
      regex: ^v\d+$
      default: v1
---
variables:
  PLAIN: hello
show:
  script:
    - echo "env=$[[ inputs.environment ]] replicas=$[[ inputs.replicas ]] dry=$[[ inputs.dry_run ]] tag=$[[ inputs.tag ]] plain=$PLAIN"
"#;

/// The trace of the pipeline's only job, once the pipeline has finished.
async fn only_job_trace(api: &Client, project: i64, pipeline: i64) -> String {
    let p = api
        .wait_pipeline(project, pipeline, Duration::from_secs(90))
        .await;
    assert_eq!(p["status"], "success", "{p}");
    let jobs = api.jobs(project, pipeline).await;
    let (_, trace) = api
        .text(&format!(
            "/api/v4/projects/{project}/jobs/{}/trace",
            jobs[0]["id"]
        ))
        .await;
    trace
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_form_takes_spec_inputs_as_typed_fields() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", INPUTS_PIPELINE)]);
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("inputs", &repo_dir).await;
    let mut root = Web::new(&running.url);
    assert_eq!(root.login("root", ADMIN_TOKEN).await, 303);
    let run = format!("/dash/projects/{project}/run");

    // Each input is a field of its type, with its default and description.
    let (s, page, _) = root.get(&run).await;
    assert_eq!(s, 200, "{page}");
    for expected in [
        r#"<select id="input-environment" name="input:environment""#,
        r#"<option value="staging" selected>staging</option>"#,
        r#"data-input="replicas" data-type="number""#,
        r#"name="input:replicas" value="2" inputmode="decimal""#,
        r#"type="checkbox" id="input-dry_run" name="input:dry_run" value="true" checked"#,
        r#"name="input:regions" rows="2""#,
        "Where to deploy",
        r#"Must match <code>^v\d+$</code>"#,
        r#"name="var:PLAIN" value="hello""#,
    ] {
        assert!(page.contains(expected), "missing {expected} in:\n{page}");
    }
    let csrf = csrf_of(&page);

    // A value of the wrong type, outside the options or the regex, is
    // refused with GitLab's message on its field, and nothing runs.
    let cases = [
        (
            "input:replicas",
            "many",
            "`replicas` input: provided value is not a number",
        ),
        (
            "input:environment",
            "moon",
            "`environment` input: `moon` cannot be used because it is not in the list of allowed options",
        ),
        (
            "input:tag",
            "latest",
            "`tag` input: provided value does not match required RegEx pattern",
        ),
        (
            "input:regions",
            "eu",
            "`regions` input: provided value is not a array",
        ),
    ];
    for (field, value, message) in cases {
        let (s, page, _) = root
            .post(&run, &[("csrf", &csrf), ("ref", "main"), (field, value)])
            .await;
        assert_eq!(s, 422, "{field}={value}: {page}");
        assert!(
            page.contains(&message.replace('`', "&#96;")) || page.contains(message),
            "{field}={value}: expected {message} in:\n{page}"
        );
    }
    let (_, pipelines) = api
        .get(&format!("/api/v4/projects/{project}/pipelines"))
        .await;
    assert_eq!(pipelines.as_array().unwrap().len(), 0, "{pipelines}");

    // Valid values run, interpolated into the job (the unchecked box is false).
    let (s, _, h) = root
        .post(
            &run,
            &[
                ("csrf", &csrf),
                ("ref", "main"),
                ("input:environment", "production"),
                ("input:replicas", "5"),
                ("input:tag", "v7"),
                ("input:regions", r#"["eu", "us"]"#),
                ("var:PLAIN", "bye"),
            ],
        )
        .await;
    assert_eq!(s, 303);
    let pipeline: i64 = h["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let trace = only_job_trace(&api, project, pipeline).await;
    assert!(
        trace.contains("env=production replicas=5 dry=false tag=v7 plain=bye"),
        "{trace}"
    );

    // The API takes `inputs` too, checked the same way.
    let path = format!("/api/v4/projects/{project}/pipeline");
    let (s, body) = api
        .post(
            &path,
            serde_json::json!({"ref": "main", "inputs": {"replicas": "many"}}),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body.to_string()
            .contains("`replicas` input: provided value is not a number"),
        "{body}"
    );
    let (s, body) = api
        .post(
            &path,
            serde_json::json!({"ref": "main", "inputs": {"nope": 1}}),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body.to_string().contains("unknown input arguments: nope"),
        "{body}"
    );
    let (s, body) = api
        .post(
            &path,
            serde_json::json!({"ref": "main", "inputs": {"replicas": 3, "dry_run": false}}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let trace = only_job_trace(&api, project, body["id"].as_i64().unwrap()).await;
    assert!(
        trace.contains("env=staging replicas=3 dry=false tag=v1 plain=hello"),
        "{trace}"
    );
    running.server.abort();
}

/// The overview's "latest per project and ref" (a newest-first walk when
/// unfiltered, a grouped query when filtered) against a plain computation
/// over seeded pipelines: 2 projects, 3 refs, statuses and users mixed.
async fn latest_per_ref_matches_a_plain_computation(database: Option<String>) {
    use gantry_server::store_dashboard::{DashboardStore, OverviewFilter};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("data"), database);
    cfg.builtin_runner = false;
    let running = gantry_server::start(cfg).await.unwrap();
    let pool = &running.app.store.db.pool;
    for i in 1..=2 {
        sqlx::query(
            "INSERT INTO projects (path, name, source_url, default_branch, webhook_secret, ci_config_path, created_at, creator_id) \
             VALUES ($1, $2, '/nonexistent', 'main', 'secret', '.gitlab-ci.yml', 0, 1)",
        )
        .bind(format!("g/p{i}"))
        .bind(format!("p{i}"))
        .execute(pool)
        .await
        .unwrap();
    }
    let (first,): (i64,) = sqlx::query_as("SELECT MIN(id) FROM projects")
        .fetch_one(pool)
        .await
        .unwrap();
    let statuses = ["success", "failed", "running", "canceled", "failed"];
    // (id, project, ref, status, user) as inserted.
    let mut seeded: Vec<(i64, i64, String, String, Option<i64>)> = Vec::new();
    for i in 0..40i64 {
        let project = first + (i * 7 % 2);
        let git_ref = format!("r{}", i * 5 % 3);
        let status = statuses[(i * 3 % 5) as usize];
        let user = (i % 4 != 0).then_some(1i64);
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO pipelines (project_id, iid, ref, sha, before_sha, tag, source, status, protected, user_id, variables, spec, \
             name, error, created_at, updated_at) VALUES ($1, $2, $3, 'abc', '000', 0, 'push', $4, 0, $5, '[]', '{}', NULL, NULL, 0, 0) RETURNING id",
        )
        .bind(project)
        .bind(i + 1)
        .bind(&git_ref)
        .bind(status)
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap();
        seeded.push((id, project, git_ref, status.to_string(), user));
    }
    let dash = DashboardStore(&running.app.store);
    let filters = [
        OverviewFilter::default(),
        OverviewFilter {
            status: "failed".into(),
            ..Default::default()
        },
        OverviewFilter {
            project_id: Some(first + 1),
            ..Default::default()
        },
        OverviewFilter {
            git_ref: "r2".into(),
            username: "root".into(),
            ..Default::default()
        },
    ];
    for f in filters {
        for limit in [2, 100] {
            let got: Vec<i64> = dash
                .latest_per_ref(&f, limit)
                .await
                .unwrap()
                .iter()
                .map(|p| p.id)
                .collect();
            let mut want: Vec<i64> = seeded
                .iter()
                .filter(|(id, project, git_ref, _, _)| {
                    !seeded
                        .iter()
                        .any(|(i, p, r, _, _)| i > id && p == project && r == git_ref)
                })
                .filter(|(_, project, git_ref, status, user)| {
                    (f.status.is_empty() || *status == f.status)
                        && f.project_id.is_none_or(|p| p == *project)
                        && (f.git_ref.is_empty() || *git_ref == f.git_ref)
                        && (f.username.is_empty() || user.is_some())
                })
                .map(|s| s.0)
                .collect();
            want.reverse();
            want.truncate(limit as usize);
            assert!(!want.is_empty());
            assert_eq!(got, want, "{f:?} limit {limit}");
        }
    }
    running.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_latest_per_ref_on_sqlite() {
    latest_per_ref_matches_a_plain_computation(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_latest_per_ref_on_postgres() {
    let Some(pg) = PgCluster::start() else { return };
    latest_per_ref_matches_a_plain_computation(Some(pg.database("latest"))).await;
}

const PROTECTED_PIPELINE: &str = r#"
deploy-staging:
  script: echo "to staging"
  when: manual
  environment:
    name: staging
deploy-production:
  script: echo "to production"
  when: manual
  environment:
    name: production
"#;

/// Creates a user from the dashboard; answers their API token.
async fn create_user(root: &mut Web, name: &str, role: &str) -> String {
    let csrf = root.csrf().await;
    let (s, page, _) = root
        .post(
            "/dash/users",
            &[
                ("csrf", csrf.as_str()),
                ("username", name),
                ("role", role),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{page}");
    let at = page
        .find("data-testid=\"new-token\">")
        .expect("the new token")
        + 24;
    page[at..].split('<').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn protected_environment_rules_decide_who_approves() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", PROTECTED_PIPELINE)]);
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("shop", &repo_dir).await;
    let mut root = Web::new(&running.url);
    assert_eq!(root.login("root", ADMIN_TOKEN).await, 303);
    let _ = create_user(&mut root, "dev", "developer").await;
    let boss_token = create_user(&mut root, "boss", "maintainer").await;
    let alice_token = create_user(&mut root, "alice", "developer").await;
    let (s, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            serde_json::json!({"ref": "main"}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let pipeline = p["id"].as_i64().unwrap();
    api.wait_pipeline(project, pipeline, Duration::from_secs(60))
        .await;
    let jobs = api.jobs(project, pipeline).await;
    let job = |name: &str| {
        jobs.iter()
            .find(|j| j["name"] == name)
            .and_then(|j| j["id"].as_i64())
            .unwrap()
    };
    let (staging, production) = (job("deploy-staging"), job("deploy-production"));

    // A developer may not set rules; a maintainer may, and a rule naming
    // an unknown user is refused with the reason.
    let mut dev = Web::new(&running.url);
    assert_eq!(dev.login("dev", "correct horse battery").await, 303);
    let csrf = dev.csrf().await;
    let project_s = project.to_string();
    let rule = |csrf: &str, approvers: &str| {
        vec![
            ("csrf".to_string(), csrf.to_string()),
            ("project".to_string(), project_s.clone()),
            ("name".to_string(), "staging".to_string()),
            ("role".to_string(), String::new()),
            ("approvers".to_string(), approvers.to_string()),
        ]
    };
    let post_rule = async |web: &mut Web, form: Vec<(String, String)>| {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        web.post("/dash/environments/protect", &pairs).await
    };
    let (s, _, _) = post_rule(&mut dev, rule(&csrf, "alice")).await;
    assert_eq!(s, 403, "a developer cannot protect an environment");
    let mut boss = Web::new(&running.url);
    assert_eq!(boss.login("boss", "correct horse battery").await, 303);
    let csrf = boss.csrf().await;
    let (s, page, _) = post_rule(&mut boss, rule(&csrf, "alice, ghost")).await;
    assert_eq!(s, 422, "{page}");
    assert!(page.contains("no such user: ghost"), "{page}");
    let (s, page, _) = post_rule(&mut boss, rule(&csrf, "alice")).await;
    assert_eq!(s, 303, "{page}");
    let (_, page, _) = boss.get("/dash/environments").await;
    assert!(
        page.contains("alice or an admin"),
        "the rule is shown: {page}"
    );

    // Only alice (or an admin) may deploy to staging now: not the
    // maintainer, through the dashboard or the API.
    let (_, page, _) = boss.get(&format!("/dash/jobs/{staging}")).await;
    assert!(
        page.contains("Waiting for an approver (alice or an admin)"),
        "{page}"
    );
    let (s, body, _) = boss
        .post(&format!("/dash/jobs/{staging}/play"), &[("csrf", &csrf)])
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(
        body.contains("needs an approver (alice or an admin)"),
        "{body}"
    );
    let play = format!("/api/v4/projects/{project}/jobs/{staging}/play");
    let (s, body) = Client::new(&running.url, Some(&boss_token))
        .post(&play, serde_json::json!({}))
        .await;
    assert_eq!(s, 403, "{body}");
    let (s, body) = Client::new(&running.url, Some(&alice_token))
        .post(&play, serde_json::json!({}))
        .await;
    assert_eq!(s, 200, "{body}");
    // Production keeps the default rule: the maintainer may, alice not.
    let play = format!("/api/v4/projects/{project}/jobs/{production}/play");
    let (s, body) = Client::new(&running.url, Some(&alice_token))
        .post(&play, serde_json::json!({}))
        .await;
    assert_eq!(s, 403, "{body}");
    let (s, body) = Client::new(&running.url, Some(&boss_token))
        .post(&play, serde_json::json!({}))
        .await;
    assert_eq!(s, 200, "{body}");
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT username, environment FROM dashboard_approvals ORDER BY id")
            .fetch_all(&running.app.store.db.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [
            ("alice".to_string(), "staging".to_string()),
            ("boss".to_string(), "production".to_string())
        ]
    );
    let (_, page, _) = boss.get(&format!("/dash/jobs/{staging}")).await;
    let approvals = &page[page.find("data-testid=\"approvals\"").expect("approvals")..];
    assert!(approvals.contains("alice"), "{page}");

    // Unprotected, staging needs a developer again.
    let (s, _, _) = boss
        .post(
            "/dash/environments/protect",
            &[
                ("csrf", csrf.as_str()),
                ("project", project_s.as_str()),
                ("name", "staging"),
                ("unprotect", "1"),
            ],
        )
        .await;
    assert_eq!(s, 303);
    let (_, page, _) = boss.get("/dash/environments").await;
    assert!(!page.contains("alice or an admin"), "{page}");

    // GitLab's protected environments API sets the same rules.
    let alice = Client::new(&running.url, Some(&alice_token));
    let boss_api = Client::new(&running.url, Some(&boss_token));
    let (_, me) = alice.get("/api/v4/user").await;
    let alice_id = me["id"].as_i64().unwrap();
    let rules = format!("/api/v4/projects/{project}/protected_environments");
    let qa = serde_json::json!({"name": "qa", "deploy_access_levels": [{"user_id": alice_id}]});
    let (s, _) = alice.post(&rules, qa.clone()).await;
    assert_eq!(s, 403, "a developer cannot protect an environment");
    let (s, body) = boss_api.post(&rules, qa.clone()).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["deploy_access_levels"][0]["user_id"], alice_id);
    let (s, body) = boss_api.post(&rules, qa).await;
    assert_eq!(s, 409, "{body}");
    let (s, body) = boss_api
        .post(
            &rules,
            serde_json::json!({"name": "uat", "deploy_access_levels": [{"access_level": 50}]}),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(body.to_string().contains("access_level 50"), "{body}");
    let (_, list) = boss_api.get(&rules).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "qa");
    let (_, page, _) = boss.get("/dash/environments").await;
    assert!(page.contains("alice or an admin"), "{page}");
    let status = reqwest::Client::new()
        .delete(format!("{}{rules}/qa", running.url))
        .header("PRIVATE-TOKEN", &boss_token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    let (_, list) = boss_api.get(&rules).await;
    assert_eq!(list, serde_json::json!([]));
    running.server.abort();
}

/// The Run form of a re-run (`?from=`) starts from the `spec:inputs` its
/// pipeline was created with (kept by the server; GitLab's pipeline JSON
/// has no inputs, so they are the dashboard's only), not the defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rerun_form_starts_from_the_inputs_the_pipeline_ran_with() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", INPUTS_PIPELINE)]);
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("inputs", &repo_dir).await;
    let mut root = Web::new(&running.url);
    assert_eq!(root.login("root", ADMIN_TOKEN).await, 303);
    let run = format!("/dash/projects/{project}/run");

    // From the dashboard's form: every input, the unchecked box included.
    let csrf = root.csrf().await;
    let (s, page, h) = root
        .post(
            &run,
            &[
                ("csrf", &csrf),
                ("ref", "main"),
                ("input:environment", "production"),
                ("input:replicas", "5"),
                ("input:tag", "v7"),
                ("input:regions", r#"["eu", "us"]"#),
            ],
        )
        .await;
    assert_eq!(s, 303, "{page}");
    let from_form = h["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let (s, page, _) = root.get(&format!("{run}?from={from_form}")).await;
    assert_eq!(s, 200, "{page}");
    for expected in [
        r#"<option value="production" selected>production</option>"#,
        r#"name="input:replicas" value="5""#,
        r#"name="input:tag" value="v7""#,
        "[&#34;eu&#34;,&#34;us&#34;]",
    ] {
        assert!(page.contains(expected), "missing {expected} in:\n{page}");
    }
    assert!(
        !page.contains(r#"name="input:dry_run" value="true" checked"#),
        "dry_run ran false: {page}"
    );

    // From the API: the inputs given, the defaults for the rest.
    let (s, body) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            serde_json::json!({"ref": "main", "inputs": {"replicas": 3}}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let (_, page, _) = root.get(&format!("{run}?from={}", body["id"])).await;
    assert!(
        page.contains(r#"name="input:replicas" value="3""#),
        "{page}"
    );
    assert!(
        page.contains(r#"<option value="staging" selected>staging</option>"#),
        "{page}"
    );
    assert!(
        page.contains(r#"name="input:dry_run" value="true" checked"#),
        "{page}"
    );

    // Without inputs: the defaults.
    let (_, body) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            serde_json::json!({"ref": "main"}),
        )
        .await;
    let (_, page, _) = root.get(&format!("{run}?from={}", body["id"])).await;
    assert!(
        page.contains(r#"name="input:replicas" value="2""#),
        "{page}"
    );
    running.server.abort();
}

const AUTOMATIC_DEPLOYS: &str = r#"
stages: [build, deploy, after]
build:
  stage: build
  script: echo built
deploy-staging:
  stage: deploy
  script: echo deploying staging
  environment:
    name: staging
deploy-production:
  stage: deploy
  script: echo deploying production
  environment:
    name: production
smoke:
  stage: after
  needs: [deploy-staging]
  script: echo smoke
"#;

/// GitLab's protected environments also gate automatic deploy jobs: one
/// whose user may not deploy (a push pipeline has none) fails with
/// `protected_environment_failure` without running, and what needs it is
/// skipped. The default protection of `prod…` names gates manual play only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn protected_environments_gate_automatic_deploy_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let sha = repo(&repo_dir, &[(".gitlab-ci.yml", AUTOMATIC_DEPLOYS)]);
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("shop", &repo_dir).await;
    let mut root = Web::new(&running.url);
    assert_eq!(root.login("root", ADMIN_TOKEN).await, 303);
    let dev_token = create_user(&mut root, "dev", "developer").await;
    let boss_token = create_user(&mut root, "boss", "maintainer").await;
    let (s, body) = Client::new(&running.url, Some(&boss_token))
        .post(
            &format!("/api/v4/projects/{project}/protected_environments"),
            serde_json::json!({"name": "staging", "deploy_access_levels": [{"access_level": 40}]}),
        )
        .await;
    assert_eq!(s, 201, "{body}");

    let statuses = async |pipeline: i64| {
        let p = api
            .wait_pipeline(project, pipeline, Duration::from_secs(60))
            .await;
        let jobs = api.jobs(project, pipeline).await;
        let of = |name: &str| {
            jobs.iter()
                .find(|j| j["name"] == name)
                .unwrap_or_else(|| panic!("{name} in {jobs:#?}"))
                .clone()
        };
        (
            p,
            of("deploy-staging"),
            of("smoke"),
            of("deploy-production"),
        )
    };

    // A push: no user, so staging is refused; production (default rule) runs.
    let secret = api.webhook_secret(project).await;
    let (s, body) = send_gitlab_hook(
        &running.url,
        project,
        &secret,
        &gitlab_push("main", "0000000000000000000000000000000000000000", &sha),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let (p, staging, smoke, production) = statuses(body["pipeline_id"].as_i64().unwrap()).await;
    assert_eq!(p["status"], "failed", "{p}");
    assert_eq!(staging["status"], "failed", "{staging}");
    assert_eq!(staging["failure_reason"], "protected_environment_failure");
    assert!(staging["started_at"].is_null(), "it never ran: {staging}");
    assert!(staging["runner"].is_null(), "{staging}");
    assert_eq!(smoke["status"], "skipped", "{smoke}");
    assert_eq!(production["status"], "success", "{production}");
    let refused = staging["id"].as_i64().unwrap();

    // A developer's pipeline is refused too; a maintainer's deploys.
    let create = format!("/api/v4/projects/{project}/pipeline");
    let (_, body) = Client::new(&running.url, Some(&dev_token))
        .post(&create, serde_json::json!({"ref": "main"}))
        .await;
    let (_, staging, _, _) = statuses(body["id"].as_i64().unwrap()).await;
    assert_eq!(staging["failure_reason"], "protected_environment_failure");
    let (_, body) = Client::new(&running.url, Some(&boss_token))
        .post(&create, serde_json::json!({"ref": "main"}))
        .await;
    let (p, staging, smoke, _) = statuses(body["id"].as_i64().unwrap()).await;
    assert_eq!(p["status"], "success", "{p}");
    assert_eq!(staging["status"], "success", "{staging}");
    assert_eq!(smoke["status"], "success", "{smoke}");

    // The job page says why; the developer may not retry it, the
    // maintainer may, and the retry (now the maintainer's) deploys.
    let (_, page, _) = root.get(&format!("/dash/jobs/{refused}")).await;
    assert!(page.contains("protected_environment_failure"), "{page}");
    let note = &page[page
        .find("data-testid=\"protection-note\"")
        .expect("the note")..];
    assert!(
        note.contains("its pipeline has no user (started by a push)")
            && note.contains("a maintainer or above or an admin may"),
        "{page}"
    );
    let mut dev = Web::new(&running.url);
    assert_eq!(dev.login("dev", "correct horse battery").await, 303);
    let csrf = dev.csrf().await;
    let (s, _, _) = dev
        .post(&format!("/dash/jobs/{refused}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(s, 403);
    let mut boss = Web::new(&running.url);
    assert_eq!(boss.login("boss", "correct horse battery").await, 303);
    let csrf = boss.csrf().await;
    let (s, body, _) = boss
        .post(&format!("/dash/jobs/{refused}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(s, 303, "{body}");
    let retried = running
        .app
        .store
        .pipeline_jobs(body_pipeline(&running, refused).await, false)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.name == "deploy-staging")
        .unwrap();
    assert_ne!(retried.id, refused);
    wait_job_status(&running.app, retried.id, "success").await;
    running.server.abort();
}

/// The pipeline of job `id`.
async fn body_pipeline(running: &gantry_server::Running, id: i64) -> i64 {
    running
        .app
        .store
        .job(id)
        .await
        .unwrap()
        .unwrap()
        .pipeline_id
}

/// GitLab's `required_approval_count`: a manual deploy to the protected
/// environment runs once that many different allowed people approved it
/// (each plays it once); the job page shows the count and who approved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deploy_needing_two_approvals_runs_after_the_second_approver() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", PROTECTED_PIPELINE)]);
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let api = Client::new(&running.url, Some(ADMIN_TOKEN));
    let project = api.project("shop", &repo_dir).await;
    let mut root = Web::new(&running.url);
    assert_eq!(root.login("root", ADMIN_TOKEN).await, 303);
    let alice_token = create_user(&mut root, "alice", "developer").await;
    let _ = create_user(&mut root, "bob", "developer").await;
    let alice = Client::new(&running.url, Some(&alice_token));
    let (_, me) = alice.get("/api/v4/user").await;
    let alice_id = me["id"].as_i64().unwrap();
    let (_, users) = api.get(&format!("/api/v4/users/{}", alice_id + 1)).await;
    let bob_id = users["id"].as_i64().unwrap();
    assert_eq!(users["username"], "bob");

    let rules = format!("/api/v4/projects/{project}/protected_environments");
    let levels = serde_json::json!([{"user_id": alice_id}, {"user_id": bob_id}]);
    let (s, body) = api
        .post(
            &rules,
            serde_json::json!({"name": "staging", "deploy_access_levels": levels, "required_approval_count": 7}),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(body.to_string().contains("0 to 5"), "{body}");
    let (s, body) = api
        .post(
            &rules,
            serde_json::json!({"name": "staging", "deploy_access_levels": levels, "required_approval_count": 2}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["required_approval_count"], 2, "{body}");

    let (_, p) = api
        .post(
            &format!("/api/v4/projects/{project}/pipeline"),
            serde_json::json!({"ref": "main"}),
        )
        .await;
    let pipeline = p["id"].as_i64().unwrap();
    api.wait_pipeline(project, pipeline, Duration::from_secs(60))
        .await;
    let staging = api
        .jobs(project, pipeline)
        .await
        .iter()
        .find(|j| j["name"] == "deploy-staging")
        .and_then(|j| j["id"].as_i64())
        .unwrap();

    // Alice approves through the API: recorded, the job still waits; she
    // may not approve twice.
    let play = format!("/api/v4/projects/{project}/jobs/{staging}/play");
    let (s, body) = alice.post(&play, serde_json::json!({})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["status"], "manual", "{body}");
    let (s, body) = alice.post(&play, serde_json::json!({})).await;
    assert_eq!(s, 400, "{body}");

    // Bob sees 1 of 2 on the job page and approves: it deploys.
    let mut bob = Web::new(&running.url);
    assert_eq!(bob.login("bob", "correct horse battery").await, 303);
    let (_, page, _) = bob.get(&format!("/dash/jobs/{staging}")).await;
    let count = &page[page
        .find("data-testid=\"approval-count\"")
        .expect("the count")..];
    assert!(count.contains("1 of 2 approvals (alice)"), "{page}");
    assert!(page.contains(">Approve and deploy</button>"), "{page}");
    let csrf = bob.csrf().await;
    let (s, body, _) = bob
        .post(&format!("/dash/jobs/{staging}/play"), &[("csrf", &csrf)])
        .await;
    assert_eq!(s, 303, "{body}");
    wait_job_status(&running.app, staging, "success").await;
    let (_, page, _) = bob.get(&format!("/dash/jobs/{staging}")).await;
    let approvals = &page[page.find("data-testid=\"approvals\"").expect("approvals")..];
    assert!(
        approvals.contains("alice") && approvals.contains("bob"),
        "{page}"
    );

    // The Environments page's form sets the count too.
    let csrf = root.csrf().await;
    let project_s = project.to_string();
    let (s, page, _) = root
        .post(
            "/dash/environments/protect",
            &[
                ("csrf", csrf.as_str()),
                ("project", project_s.as_str()),
                ("name", "production"),
                ("role", "maintainer"),
                ("approvers", ""),
                ("required_approvals", "3"),
            ],
        )
        .await;
    assert_eq!(s, 303, "{page}");
    let (_, page, _) = root.get("/dash/environments").await;
    assert!(
        page.contains("a maintainer or above or an admin; 3 approvals"),
        "{page}"
    );
    running.server.abort();
}
