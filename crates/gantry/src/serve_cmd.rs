//! `gantry serve` and `gantry runner`: the server (API, webhooks, queue,
//! built-in runner) and a runner that claims jobs from one.

use crate::project::{EXIT_FAILURE, EXIT_USAGE};
use gantry_server::runner::{ExecutorChoice, RunnerConfig};
use gantry_server::{ServeConfig, start};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Data directory: the SQLite database, the server key, repository
    /// mirrors, logs and artifacts on local disk.
    #[arg(long, value_name = "DIR", default_value = "gantry-data")]
    pub data: PathBuf,
    /// Use PostgreSQL instead of SQLite (postgres://USER:PASS@HOST/DB;
    /// default: $GANTRY_DATABASE_URL when set).
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// Keep logs, artifacts and caches in S3 (s3://BUCKET/PREFIX;
    /// AWS_ENDPOINT_URL reaches an S3-compatible service).
    #[arg(long, value_name = "URL")]
    pub objects: Option<String>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The URL clients and runners use (default: http://LISTEN; when
    /// LISTEN is every interface, 0.0.0.0 or [::], the machine's host name
    /// or its address).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Do not run jobs in this process (only remote `gantry runner`s).
    #[arg(long)]
    pub no_builtin_runner: bool,
    /// Jobs the built-in runner runs at once.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub builtin_concurrency: u32,
    /// Seconds without a heartbeat after which a job fails "runner lost".
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub runner_timeout: u64,
    /// Fetch every project's remote this often (seconds) and run a push
    /// pipeline for each branch or tag whose head moved, as GitLab's pull
    /// mirroring does. 0 (the default): webhooks only.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub poll_interval: u64,
    /// The GitLab instance `include:template` and `include:component` are
    /// read from (default: GANTRY_GITLAB_URL, CI_SERVER_URL, gitlab.com).
    #[arg(long, value_name = "URL")]
    pub gitlab_url: Option<String>,
    /// Delete shared caches neither restored nor saved for this long
    /// (GitLab's duration syntax: 14d, 36h, 2 weeks). 0: keep for ever.
    #[arg(long, value_name = "AGE", default_value = "14d", value_parser = parse_max_age)]
    pub cache_max_age: MaxAge,
    /// Print the runner registration token and exit.
    #[arg(long)]
    pub print_runner_token: bool,
}

/// `--cache-max-age`: `None` keeps caches for ever.
#[derive(Clone, Copy, Debug)]
pub struct MaxAge(pub Option<Duration>);

fn parse_max_age(text: &str) -> Result<MaxAge, String> {
    let seconds = gantry_config::compose::parse_duration(text).ok_or_else(|| {
        format!("`{text}` is not a duration (write e.g. 14d, 36h, 2 weeks, or 0 to keep caches for ever)")
    })?;
    Ok(MaxAge((seconds > 0).then(|| Duration::from_secs(seconds))))
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum RunnerExecutorArg {
    Shell,
    Docker,
    Auto,
}

#[derive(clap::Args, Debug)]
pub struct RunnerArgs {
    /// The server's URL.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The registration token (`gantry serve --print-runner-token`;
    /// default: $GANTRY_RUNNER_TOKEN).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// A tag this runner serves (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Do not take jobs without tags.
    #[arg(long)]
    pub tagged_only: bool,
    /// shell, docker, or auto (docker for jobs with `image:`).
    #[arg(long, value_enum, default_value = "auto")]
    pub executor: RunnerExecutorArg,
    /// Jobs to run at once.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub concurrency: u32,
    /// A name shown on the server.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Where jobs run: mirrors, snapshots, builds.
    #[arg(long, value_name = "DIR", default_value = "gantry-runner")]
    pub work_dir: PathBuf,
}

fn runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            EXIT_FAILURE
        })
}

pub fn serve(args: ServeArgs) -> i32 {
    let mut config = ServeConfig::new(args.data.clone());
    config.database = args.database.or_else(|| {
        std::env::var("GANTRY_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
    });
    config.objects = args.objects;
    config.listen = args.listen;
    config.external_url = args.url;
    config.builtin_runner = !args.no_builtin_runner;
    config.builtin_concurrency = args.builtin_concurrency;
    config.runner_timeout = Duration::from_secs(args.runner_timeout.max(2));
    config.gitlab_url = args.gitlab_url;
    config.cache_max_age = args.cache_max_age.0;
    config.poll_interval =
        (args.poll_interval > 0).then(|| Duration::from_secs(args.poll_interval));
    config.admin_token = std::env::var("GANTRY_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    config.server_key = std::env::var("GANTRY_SERVER_KEY")
        .ok()
        .filter(|t| !t.is_empty());
    if args.print_runner_token {
        if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
            eprintln!("error: cannot create {}: {e}", config.data_dir.display());
            return EXIT_USAGE;
        }
        return match gantry_server::crypto::ServerKey::load(
            config.server_key.as_deref(),
            &config.data_dir,
        ) {
            Ok(key) => {
                println!("{}", key.registration_token());
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_USAGE
            }
        };
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        match start(config).await {
            Ok(running) => {
                eprintln!(
                    "gantry serve: listening on {} (data in {}, objects in {}, {} database)",
                    running.url,
                    running.app.config.data_dir.display(),
                    running.app.objects.description,
                    running.app.store.backend().as_str()
                );
                if running.app.url_guessed {
                    eprintln!(
                        "gantry serve: {} is every interface: jobs and runners are told {}; pass --url with the address they reach this server at if that is not it",
                        running.app.config.listen, running.url
                    );
                }
                tokio::select! {
                    _ = running.server => EXIT_FAILURE,
                    _ = tokio::signal::ctrl_c() => {
                        eprintln!("gantry serve: stopping; running jobs are failed as \"runner lost\" after the runner timeout if they do not finish");
                        0
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_USAGE
            }
        }
    })
}

pub fn runner(args: RunnerArgs) -> i32 {
    let Some(token) = args.token.or_else(|| {
        std::env::var("GANTRY_RUNNER_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
    }) else {
        eprintln!(
            "error: no registration token: pass --token (print it with `gantry serve --print-runner-token` on the server)"
        );
        return EXIT_USAGE;
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let config = RunnerConfig {
        url: args.url,
        registration_token: token,
        description: args.name.unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "runner".into())
        }),
        tags: args.tags,
        run_untagged: !args.tagged_only,
        executor: match args.executor {
            RunnerExecutorArg::Shell => ExecutorChoice::Shell,
            RunnerExecutorArg::Docker => ExecutorChoice::Docker,
            RunnerExecutorArg::Auto => ExecutorChoice::Auto,
        },
        concurrency: args.concurrency.max(1),
        work_dir: args.work_dir,
    };
    rt.block_on(async {
        tokio::select! {
            r = gantry_server::runner::run(config) => match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    EXIT_USAGE
                }
            },
            _ = tokio::signal::ctrl_c() => 0,
        }
    })
}
