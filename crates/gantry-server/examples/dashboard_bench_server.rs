//! The server for bench/dashboard when no `gantry` binary is built: the
//! same `gantry_server::start` that `gantry serve` calls, without the CLI
//! (and so without the deploy crates' long build). Arguments:
//! `DATA_DIR LISTEN [DATABASE_URL]`; the built-in runner is off;
//! GANTRY_ADMIN_TOKEN as for `gantry serve`.

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(data), Some(listen)) = (args.next(), args.next()) else {
        eprintln!("usage: dashboard_bench_server DATA_DIR LISTEN [DATABASE_URL]");
        std::process::exit(2);
    };
    let mut config = gantry_server::ServeConfig::new(data.into());
    config.listen = listen;
    config.database = args.next();
    config.builtin_runner = false;
    config.admin_token = std::env::var("GANTRY_ADMIN_TOKEN").ok();
    match gantry_server::start(config).await {
        Ok(running) => {
            let _ = running.server.await;
        }
        Err(e) => {
            eprintln!("dashboard_bench_server: {e}");
            std::process::exit(1);
        }
    }
}
