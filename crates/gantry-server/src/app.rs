//! The server process: configuration, shared state, start-up (database,
//! migrations, bootstrap, listener, background queue, built-in runner).
//!
//! Several servers may share one PostgreSQL database and one S3 bucket:
//! the only state on a server's disk is its repository mirrors (rebuilt on
//! demand, see [`crate::repos`]) and, without `GANTRY_SERVER_KEY`, its key;
//! a server whose key differs from the one the database was set up with
//! refuses to start.

use crate::crypto::ServerKey;
use crate::db::Db;
use crate::error::ServeError;
use crate::lock_file::{Held, HeldLock, try_hold};
use crate::logs::Logs;
use crate::objects::Objects;
use crate::repos::Repos;
use crate::store::Store;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// How `gantry serve` runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// SQLite database, server key, mirrors, local objects.
    pub data_dir: PathBuf,
    /// `postgres://…`; SQLite in `data_dir` when `None`.
    pub database: Option<String>,
    /// `s3://BUCKET/PREFIX`; `data_dir/objects` when `None`.
    pub objects: Option<String>,
    pub listen: String,
    /// The URL runners and clients use; `http://LISTEN` when `None`.
    pub external_url: Option<String>,
    /// Run a runner inside the server process (through the same protocol).
    pub builtin_runner: bool,
    pub builtin_concurrency: u32,
    /// A running job whose runner is silent this long fails "runner lost".
    pub runner_timeout: Duration,
    /// `GANTRY_ADMIN_TOKEN`: on first start, the administrator's API token.
    pub admin_token: Option<String>,
    /// `GANTRY_SERVER_KEY`: 64 hex digits; else `data_dir/server.key`.
    pub server_key: Option<String>,
    /// How often expired artifacts and caches are deleted.
    pub sweep_interval: Duration,
    /// Shared caches neither restored nor saved this long are deleted;
    /// `None`: kept for ever.
    pub cache_max_age: Option<Duration>,
    /// How often every project's remote is fetched for new commits
    /// (GitLab's pull mirroring); `None`: never (webhooks only).
    pub poll_interval: Option<Duration>,
    /// The GitLab instance `include:template` and `include:component`
    /// read from; `None`: `GANTRY_GITLAB_URL`, `CI_SERVER_URL`, gitlab.com.
    pub gitlab_url: Option<String>,
}

/// How long an unused shared cache is kept by default (14 days).
pub const DEFAULT_CACHE_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);

impl ServeConfig {
    pub fn new(data_dir: PathBuf) -> ServeConfig {
        ServeConfig {
            data_dir,
            database: None,
            objects: None,
            listen: "127.0.0.1:8080".into(),
            external_url: None,
            builtin_runner: true,
            builtin_concurrency: 2,
            runner_timeout: Duration::from_secs(60),
            admin_token: None,
            server_key: None,
            sweep_interval: Duration::from_secs(60),
            cache_max_age: Some(DEFAULT_CACHE_MAX_AGE),
            poll_interval: None,
            gitlab_url: None,
        }
    }

    pub fn database_url(&self) -> String {
        self.database.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("gantry.db").display()
            )
        })
    }
}

/// The wake-up of runners waiting for a job. On PostgreSQL it reaches the
/// other servers of the database too (`NOTIFY gantry_queue`): a runner
/// long-polling server B hears at once of the jobs a webhook made on
/// server A, not at its next look at the table (every second).
pub struct QueueSignal {
    local: Notify,
    /// Wakes the task that sends the `NOTIFY` (a pending permit coalesces
    /// bursts into one).
    outgoing: Notify,
    shared: bool,
}

/// The PostgreSQL channel of [`QueueSignal`].
const QUEUE_CHANNEL: &str = "gantry_queue";

impl QueueSignal {
    pub fn new(shared: bool) -> QueueSignal {
        QueueSignal {
            local: Notify::new(),
            outgoing: Notify::new(),
            shared,
        }
    }

    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.local.notified()
    }

    pub fn notify_waiters(&self) {
        self.local.notify_waiters();
        if self.shared {
            self.outgoing.notify_one();
        }
    }
}

/// Sends this server's wake-ups to the other servers and passes theirs on
/// to its runners. Without the listener (a lost connection) runners still
/// look every second.
fn spawn_queue_relay(app: Shared) {
    if !app.queue.shared {
        return;
    }
    let sender = app.clone();
    tokio::spawn(async move {
        loop {
            sender.queue.outgoing.notified().await;
            let sent = sqlx::query(sqlx::AssertSqlSafe(format!("NOTIFY {QUEUE_CHANNEL}")))
                .execute(&sender.store.db.pool)
                .await;
            if let Err(e) = sent {
                eprintln!("gantry serve: cannot tell other servers of new jobs: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    tokio::spawn(async move {
        let url = app.config.database_url();
        loop {
            let listened = async {
                let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
                listener.listen(QUEUE_CHANNEL).await?;
                loop {
                    listener.recv().await?;
                    app.queue.local.notify_waiters();
                }
            };
            let result: Result<(), sqlx::Error> = listened.await;
            if let Err(e) = result {
                eprintln!(
                    "gantry serve: not hearing other servers' new jobs (runners look every second): {e}"
                );
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub http_requests: AtomicU64,
    pub jobs_claimed: AtomicU64,
    pub jobs_finished: AtomicU64,
    pub log_bytes: AtomicU64,
    pub webhooks: AtomicU64,
    pub webhooks_refused: AtomicU64,
    pub pipelines_created: AtomicU64,
    /// Pipeline schedules rebuilt from job rows (not once per event).
    pub schedule_restores: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
}

/// State shared by every request and background task.
pub struct App {
    pub store: Store,
    pub objects: Objects,
    pub logs: Logs,
    pub repos: Repos,
    pub config: ServeConfig,
    pub url: String,
    /// `url` was guessed from the machine's name or address because the
    /// server listens on every interface and no `--url` was given.
    pub url_guessed: bool,
    /// Woken when jobs become pending (long-polling runners wait on it).
    pub queue: QueueSignal,
    /// Woken when a pipeline may advance (a job finished, one was created).
    pub advance: Notify,
    pub metrics: Metrics,
    pub started: std::time::Instant,
    /// Shared caches' restores noted lately, for expiry.
    pub cache_uses: crate::shared_cache::CacheUses,
    /// Live pipelines' state machines (see [`crate::queue::LivePipelines`]).
    pub live: crate::queue::LivePipelines,
    /// Pipelines' immutable facts by id (the plan, parsed once).
    planned: std::sync::Mutex<std::collections::HashMap<i64, Arc<PipelineFacts>>>,
}

/// What never changes about a pipeline once it is stored: its plan, the
/// row's creation-time columns and its project's path. A claim reads them
/// from memory instead of three queries.
pub struct PipelineFacts {
    pub planned: Arc<gantry_config::model::Pipeline>,
    /// The row as it was read: only the columns fixed at creation (ref,
    /// sha, iid, variables, protected, created_at…) are to be used, never
    /// `status` or the timestamps that follow it.
    pub row: crate::store::Pipeline,
    pub project_path: String,
}

impl App {
    /// The planned pipeline stored with pipeline `pipeline_id`.
    pub async fn planned(
        &self,
        pipeline_id: i64,
    ) -> Result<Arc<gantry_config::model::Pipeline>, crate::error::StoreError> {
        Ok(self.pipeline_facts(pipeline_id).await?.planned.clone())
    }

    /// [`PipelineFacts`] of `pipeline_id`, read once.
    pub async fn pipeline_facts(
        &self,
        pipeline_id: i64,
    ) -> Result<Arc<PipelineFacts>, crate::error::StoreError> {
        if let Some(p) = self.planned.lock().expect("plan cache").get(&pipeline_id) {
            return Ok(p.clone());
        }
        let corrupt =
            |e: String| crate::error::StoreError::Corrupt(format!("pipeline {pipeline_id}: {e}"));
        let gone = || corrupt("no such pipeline".into());
        let spec = self
            .store
            .pipeline_spec(pipeline_id)
            .await?
            .ok_or_else(gone)?;
        let row = self.store.pipeline(pipeline_id).await?.ok_or_else(gone)?;
        let project = self
            .store
            .project(row.project_id)
            .await?
            .ok_or_else(|| corrupt(format!("its project {} is gone", row.project_id)))?;
        let planned: gantry_config::model::Pipeline =
            serde_json::from_str(&spec).map_err(|e| corrupt(e.to_string()))?;
        let facts = Arc::new(PipelineFacts {
            planned: Arc::new(planned),
            row,
            project_path: project.path,
        });
        let mut cache = self.planned.lock().expect("plan cache");
        if cache.len() > 1000 {
            cache.clear();
        }
        cache.insert(pipeline_id, facts.clone());
        Ok(facts)
    }
}

pub type Shared = Arc<App>;

/// A started server.
pub struct Running {
    pub addr: SocketAddr,
    pub url: String,
    pub app: Shared,
    pub server: tokio::task::JoinHandle<()>,
    /// The locks on the data directory and the SQLite database: a second
    /// server on either is refused while this one runs.
    pub locks: Vec<HeldLock>,
}

/// Opens the store and builds the state (no listener yet). [`start`]
/// takes the data directory's locks first.
pub async fn open(config: ServeConfig) -> Result<App, ServeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::Io {
        what: "cannot create the data directory",
        path: config.data_dir.display().to_string(),
        source,
    })?;
    crate::shared_cache::clean_uploads(&config.data_dir);
    let key = ServerKey::load(config.server_key.as_deref(), &config.data_dir)?;
    let db = Db::connect(&config.database_url()).await?;
    let store = Store { db, key };
    check_key(&store).await?;
    if let Some(token) = &config.admin_token
        && store.bootstrap_admin(token).await?
    {
        eprintln!(
            "gantry serve: created the administrator `root` with the token from GANTRY_ADMIN_TOKEN"
        );
    }
    let backend = store.backend();
    let objects = Objects::open(config.objects.as_deref(), &config.data_dir)?;
    let logs = Logs::new(objects.clone());
    let repos = Repos::new(config.data_dir.join("repos"));
    let (url, url_guessed) = match &config.external_url {
        Some(url) => (url.trim_end_matches('/').to_string(), false),
        None => default_url(&config.listen),
    };
    Ok(App {
        store,
        objects,
        logs,
        repos,
        config,
        url,
        url_guessed,
        queue: QueueSignal::new(backend == crate::db::Backend::Postgres),
        advance: Notify::new(),
        metrics: Metrics::default(),
        started: std::time::Instant::now(),
        cache_uses: Default::default(),
        live: Default::default(),
        planned: Default::default(),
    })
}

/// Locks the data directory and a SQLite database for this server.
fn lock_data(config: &ServeConfig) -> Result<Vec<HeldLock>, ServeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::Io {
        what: "cannot create the data directory",
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let mut locks = vec![hold(
        &config.data_dir.join("serve.lock"),
        "the data directory",
        &config.data_dir.display().to_string(),
        "give each server its own --data DIR",
    )?];
    if let Some(db) = sqlite_path(&config.database_url()) {
        locks.push(hold(
            &PathBuf::from(format!("{}.serve-lock", db.display())),
            "the SQLite database",
            &db.display().to_string(),
            "one server per SQLite database: stop that one first, or share a --database postgres://… between several",
        )?);
    }
    Ok(locks)
}

/// The file a SQLite database URL names (`sqlite://PATH?…`, `sqlite:PATH`);
/// none for PostgreSQL or an in-memory database.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// Locks `path` for this server's life ([`crate::lock_file`]).
fn hold(
    path: &Path,
    what: &'static str,
    shown: &str,
    next: &'static str,
) -> Result<HeldLock, ServeError> {
    match try_hold(path) {
        Ok(Held::Taken(lock)) => Ok(lock),
        Ok(Held::Busy(pid)) => Err(ServeError::Busy {
            what,
            path: shown.to_string(),
            pid,
            next,
        }),
        Err(source) => Err(ServeError::Io {
            what: "cannot lock",
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Starts the listener, the queue and (unless disabled) the built-in runner.
pub async fn start(config: ServeConfig) -> Result<Running, ServeError> {
    let locks = lock_data(&config)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen.clone(),
        source,
    })?;
    let mut config = config;
    // `--listen 127.0.0.1:0` picks a port: the URL follows it.
    config.listen = addr.to_string();
    let app = Arc::new(open(config).await?);
    let router = crate::api::router(app.clone());
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("gantry serve: the listener stopped: {e}");
        }
    });
    crate::queue::spawn(app.clone());
    spawn_queue_relay(app.clone());
    if let Err(e) = crate::children::resume(&app).await {
        eprintln!("gantry serve: resuming trigger jobs: {e}");
    }
    crate::sweeper::spawn(app.clone());
    if let Some(interval) = app.config.poll_interval {
        crate::poller::spawn(app.clone(), interval);
    }
    if app.config.builtin_runner {
        let runner = crate::runner::RunnerConfig {
            url: app.url.clone(),
            registration_token: app.store.key.registration_token(),
            description: "built-in".into(),
            tags: Vec::new(),
            run_untagged: true,
            executor: crate::runner::ExecutorChoice::Auto,
            concurrency: app.config.builtin_concurrency.max(1),
            work_dir: app.config.data_dir.join("runner"),
        };
        tokio::spawn(async move {
            if let Err(e) = crate::runner::run(runner).await {
                eprintln!("gantry serve: the built-in runner stopped: {e}");
            }
        });
    }
    Ok(Running {
        url: app.url.clone(),
        addr,
        app,
        server,
        locks,
    })
}

/// Refuses a server key other than the one the database was set up with:
/// a second server with a key of its own would fail every runner's
/// registration and read every stored variable as garbage.
async fn check_key(store: &Store) -> Result<(), ServeError> {
    use sha2::Digest as _;
    let fingerprint = hex::encode(sha2::Sha256::digest(
        store.key.registration_token().as_bytes(),
    ));
    let _w = store.db.write_lock().await;
    sqlx::query(
        "INSERT INTO server_facts (name, value) VALUES ('key_fingerprint', $1) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(&fingerprint)
    .execute(&store.db.pool)
    .await
    .map_err(crate::error::StoreError::from)?;
    let (stored,): (String,) =
        sqlx::query_as("SELECT value FROM server_facts WHERE name = 'key_fingerprint'")
            .fetch_one(&store.db.pool)
            .await
            .map_err(crate::error::StoreError::from)?;
    if stored != fingerprint {
        return Err(ServeError::Config(
            "the database was set up by a server with another server key: give every server of one database the same GANTRY_SERVER_KEY (the first server's key is in its DATA/server.key). If that key is lost, stored variables cannot be read: delete the row 'key_fingerprint' of the table server_facts to adopt this key, then set the variables again".into(),
        ));
    }
    Ok(())
}

/// The URL jobs and runners reach the server at when no `--url` is given:
/// `http://LISTEN`, except that an address of every interface (`0.0.0.0`,
/// `[::]`) is no address to connect to: the machine's host name when it
/// names a non-loopback address, else the address its default route
/// leaves from. Answers whether it was guessed that way.
pub fn default_url(listen: &str) -> (String, bool) {
    let plain = (format!("http://{listen}"), false);
    let Ok(addr) = listen.parse::<SocketAddr>() else {
        return plain;
    };
    if !addr.ip().is_unspecified() {
        return plain;
    }
    let port = addr.port();
    if let Some(host) = host_name()
        && resolves_off_loopback(&host, port)
    {
        return (format!("http://{host}:{port}"), true);
    }
    match outbound_address(addr.is_ipv6()) {
        Some(ip) => (format!("http://{}", SocketAddr::new(ip, port)), true),
        None => (format!("http://127.0.0.1:{port}"), true),
    }
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h != "localhost")
}

fn resolves_off_loopback(host: &str, port: u16) -> bool {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map(|mut addrs| addrs.any(|a| !a.ip().is_loopback() && !a.ip().is_unspecified()))
        .unwrap_or(false)
}

/// The local address of the default route (a UDP `connect` sends nothing).
fn outbound_address(v6_first: bool) -> Option<std::net::IpAddr> {
    let probes: [(&str, &str); 2] = if v6_first {
        [("[::]:0", "[2001:db8::1]:9"), ("0.0.0.0:0", "192.0.2.1:9")]
    } else {
        [("0.0.0.0:0", "192.0.2.1:9"), ("[::]:0", "[2001:db8::1]:9")]
    };
    probes.iter().find_map(|(bind, target)| {
        let socket = std::net::UdpSocket::bind(bind).ok()?;
        socket.connect(target).ok()?;
        let ip = socket.local_addr().ok()?.ip();
        (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
    })
}
