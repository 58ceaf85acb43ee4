//! Test harness: throwaway PostgreSQL clusters started from the machine's
//! binaries, git repositories with a pipeline, servers in-process or as
//! child processes (this test binary re-run with an environment variable),
//! and a small HTTP client.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "gpat-test-admin-token-0123456789";

/// Whether a requirement may be skipped (no `GANTRY_REQUIRE_*` set).
pub fn skip_or_fail(var: &str, reason: &str) -> bool {
    if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
        panic!("{var} is set but {reason}");
    }
    eprintln!("SKIPPED: {reason} (set {var}=1 to make this a failure)");
    true
}

/// The Python of the python-gitlab venv (`scripts/setup-pyclients.sh`,
/// or `GANTRY_PYCLIENTS_VENV`); `None`, or a failure under
/// `GANTRY_REQUIRE_PYCLIENTS`, when it is missing.
pub fn pyclients_python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = std::env::var_os("GANTRY_PYCLIENTS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv-pyclients"));
    let python = venv.join("bin/python");
    if python.exists() {
        return Some(python);
    }
    skip_or_fail(
        "GANTRY_REQUIRE_PYCLIENTS",
        "python-gitlab is not installed (run scripts/setup-pyclients.sh)",
    );
    None
}

fn pg_bin() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("GANTRY_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        && out.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let real = std::fs::canonicalize(&p).unwrap_or(p);
        return real.parent().map(Path::to_path_buf);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PostgreSQL cluster in a temporary directory, stopped on drop.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_root: bool,
}

impl PgCluster {
    /// `None` (after printing why) when PostgreSQL is not installed and
    /// GANTRY_REQUIRE_POSTGRES is not set.
    pub fn start() -> Option<PgCluster> {
        let Some(bin) = pg_bin() else {
            skip_or_fail(
                "GANTRY_REQUIRE_POSTGRES",
                "PostgreSQL's initdb is not installed (run scripts/setup-postgres.sh)",
            );
            return None;
        };
        let as_root = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::Builder::new()
            .prefix("gantry-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        if as_root {
            // PostgreSQL refuses to run as root: the cluster belongs to `postgres`.
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "chown to postgres failed (run scripts/setup-postgres.sh)"
            );
        }
        let port = free_port();
        let cluster = PgCluster {
            dir,
            bin,
            port,
            as_root,
        };
        let initdb = cluster
            .command("initdb")
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("initdb runs");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            cluster.dir.path().display()
        );
        let start = cluster
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-l"])
            .arg(cluster.dir.path().join("log"))
            .arg("-D")
            .arg(&data)
            .args(["-o", &opts, "start"])
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl runs");
        assert!(
            start.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&start.stderr),
            std::fs::read_to_string(cluster.dir.path().join("log")).unwrap_or_default()
        );
        Some(cluster)
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// A new, empty database in the cluster.
    pub fn database(&self, name: &str) -> String {
        let out = self
            .command("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-c",
            ])
            .arg(format!("CREATE DATABASE {name}"))
            .output();
        let ok = match &out {
            Ok(o) => o.status.success(),
            Err(_) => false,
        };
        if !ok {
            // psql may live elsewhere than initdb (Debian: /usr/bin).
            let out = Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-c",
                ])
                .arg(format!("CREATE DATABASE {name}"))
                .output()
                .expect("psql runs");
            assert!(
                out.status.success(),
                "CREATE DATABASE: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A git repository on branch `main` with `files`, committed.
pub fn repo(dir: &Path, files: &[(&str, &str)]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    commit(dir, files, "first")
}

/// Writes `files` and commits; returns the commit.
pub fn commit(dir: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

/// A small HTTP client for the tests.
#[derive(Clone)]
pub struct Client {
    pub url: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
}

impl Client {
    pub fn new(url: &str, token: Option<&str>) -> Client {
        Client {
            url: url.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            token: token.map(str::to_string),
        }
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.header("PRIVATE-TOKEN", t),
            None => rb,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .auth(self.http.get(format!("{}{path}", self.url)))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    pub async fn text(&self, path: &str) -> (u16, String) {
        let r = self
            .auth(self.http.get(format!("{}{path}", self.url)))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .auth(self.http.post(format!("{}{path}", self.url)))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// Creates a project from a local repository; returns its id.
    pub async fn project(&self, name: &str, repo: &Path) -> i64 {
        let (status, body) = self
            .post(
                "/api/v4/projects",
                serde_json::json!({"name": name, "import_url": repo.display().to_string()}),
            )
            .await;
        assert_eq!(status, 201, "create project: {body}");
        body["id"].as_i64().unwrap()
    }

    /// Waits until the pipeline has finished; returns it.
    pub async fn wait_pipeline(
        &self,
        project: i64,
        pipeline: i64,
        timeout: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, p) = self
                .get(&format!("/api/v4/projects/{project}/pipelines/{pipeline}"))
                .await;
            let status = p["status"].as_str().unwrap_or("").to_string();
            if matches!(
                status.as_str(),
                "success" | "failed" | "canceled" | "skipped" | "manual"
            ) {
                return p;
            }
            if Instant::now() > deadline {
                let (_, jobs) = self
                    .get(&format!(
                        "/api/v4/projects/{project}/pipelines/{pipeline}/jobs"
                    ))
                    .await;
                panic!("pipeline {pipeline} still {status} after {timeout:?}; jobs: {jobs:#}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn jobs(&self, project: i64, pipeline: i64) -> Vec<serde_json::Value> {
        let (_, jobs) = self
            .get(&format!(
                "/api/v4/projects/{project}/pipelines/{pipeline}/jobs?per_page=100"
            ))
            .await;
        jobs.as_array().cloned().unwrap_or_default()
    }

    pub async fn webhook_secret(&self, project: i64) -> String {
        let (_, w) = self
            .get(&format!("/api/v4/projects/{project}/gantry_webhook"))
            .await;
        w["secret"].as_str().unwrap().to_string()
    }
}

/// A GitLab push webhook body for `sha` on `branch`.
pub fn gitlab_push(branch: &str, before: &str, sha: &str) -> serde_json::Value {
    serde_json::json!({
        "object_kind": "push", "ref": format!("refs/heads/{branch}"),
        "before": before, "after": sha, "checkout_sha": sha,
    })
}

pub async fn send_gitlab_hook(
    url: &str,
    project: i64,
    secret: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v4/projects/{project}/webhooks/gitlab"))
        .header("X-Gitlab-Token", secret)
        .header("X-Gitlab-Event", "Push Hook")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// A server configuration for tests: loopback on a free port, the admin
/// token, a short runner timeout.
pub fn config(data: &Path, database: Option<String>) -> gantry_server::ServeConfig {
    let mut c = gantry_server::ServeConfig::new(data.to_path_buf());
    c.listen = "127.0.0.1:0".into();
    c.database = database;
    c.admin_token = Some(ADMIN_TOKEN.into());
    c.runner_timeout = Duration::from_secs(3);
    c
}

/// A browser-like client: its own cookies, no redirects followed.
pub struct Web {
    base: String,
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
}

impl Web {
    pub fn new(base: &str) -> Web {
        Web {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn remember(&mut self, resp: &reqwest::Response) {
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (kv, _) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !val.is_empty() {
                self.cookies.push((k.to_string(), val.to_string()));
            }
        }
    }

    pub async fn get(&mut self, path: &str) -> (u16, String, reqwest::header::HeaderMap) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.remember(&resp);
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, resp.text().await.unwrap(), headers)
    }

    pub async fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
    ) -> (u16, String, reqwest::header::HeaderMap) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter())
            .finish();
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.remember(&resp);
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, resp.text().await.unwrap(), headers)
    }

    pub async fn login(&mut self, username: &str, password: &str) -> u16 {
        let (_, page, _) = self.get("/login").await;
        let csrf = csrf_of(&page);
        let (status, _, _) = self
            .post(
                "/login",
                &[
                    ("csrf", &csrf),
                    ("username", username),
                    ("password", password),
                    ("next", "/dash"),
                ],
            )
            .await;
        status
    }

    /// The CSRF token of the signed-in session (from any page's forms).
    pub async fn csrf(&mut self) -> String {
        let (_, page, _) = self.get("/dash/users").await;
        csrf_of(&page)
    }
}

pub fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[at..].split('"').next().unwrap().to_string()
}

/// A moto server, stopped on drop.
pub struct Moto(std::process::Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// moto's S3 on a free port with the bucket `bucket`, and the AWS
/// variables that reach it set in this process; `None` when moto is not
/// installed (and GANTRY_REQUIRE_MOTO is not set). Only for test binaries
/// with one test using it: the environment is the process's.
pub async fn start_moto(bucket: &str) -> Option<(Moto, String)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = std::env::var_os("GANTRY_AWS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv-aws"));
    let bin = venv.join("bin/moto_server");
    if !bin.exists() {
        skip_or_fail(
            "GANTRY_REQUIRE_MOTO",
            "moto is not installed (run scripts/setup-moto.sh)",
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let moto = Moto(
        Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_DEFAULT_REGION", "eu-west-1");
        std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
    }
    let made = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .body(r#"<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>"#)
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "create bucket");
    Some((moto, endpoint))
}
