//! A moto server per test: started on a free port from the repository's `.venv-aws`
//! (scripts/setup-moto.sh), killed on drop. Without the venv the test is skipped with a printed
//! reason, unless GANTRY_REQUIRE_MOTO=1.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gantry_deploy::aws::AwsOptions;

pub struct Moto {
    child: Child,
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(5055)
}

/// Starts moto, or returns None (skip) when the venv is absent and moto is not required.
pub fn start_moto(test: &str) -> Option<Moto> {
    start_moto_with(test, &[])
}

pub fn start_moto_with(test: &str, env: &[(&str, &str)]) -> Option<Moto> {
    let venv = std::env::var_os("GANTRY_AWS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv-aws"));
    let bin = venv.join("bin/moto_server");
    if !bin.exists() {
        if std::env::var("GANTRY_REQUIRE_MOTO").as_deref() == Ok("1") {
            panic!(
                "{test}: GANTRY_REQUIRE_MOTO=1 but {} is missing (run scripts/setup-moto.sh)",
                bin.display()
            );
        }
        eprintln!(
            "SKIPPED {test}: no moto at {} (run scripts/setup-moto.sh)",
            bin.display()
        );
        return None;
    }
    let port = free_port();
    let mut cmd = Command::new(&bin);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn moto_server");
    let moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(moto);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{test}: moto_server did not listen on {port} within 30s");
}

pub fn aws_options(moto: &Moto) -> AwsOptions {
    AwsOptions {
        region: Some("eu-west-1".into()),
        endpoint_url: Some(moto.url.clone()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        ..Default::default()
    }
}
