//! What the moto tests share: a moto server per test, started on a free port from the
//! repository's `.venv-aws` (scripts/setup-moto.sh) and killed on drop (without the venv the
//! test is skipped with a printed reason, unless GANTRY_REQUIRE_MOTO=1); clients for it, the
//! ECS fixture, an S3 history bucket, and a small HTTP stub (health URL, webhook).

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
    // A loaded machine may need long to import moto; a port taken meanwhile makes it exit:
    // then try another port.
    for _ in 0..3 {
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
        let mut moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if moto.child.try_wait().ok().flatten().is_some() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(moto);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("{test}: moto_server did not listen within 90s (3 ports tried)");
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

/// A tiny HTTP server on a free port: answers every request with `status` (changeable) and
/// keeps the bodies of POSTs (webhook notifications). Stops with the test process.
pub struct HttpStub {
    pub url: String,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl HttpStub {
    pub fn start(status: u16) -> HttpStub {
        let code = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(status));
        let c = code.clone();
        let mut stub = HttpStub::start_with(move || c.load(std::sync::atomic::Ordering::SeqCst));
        stub.status = code;
        stub
    }

    /// A stub whose answer `status()` decides at each request.
    pub fn start_with(status: impl Fn() -> u16 + Send + 'static) -> HttpStub {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let code = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let b = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                let mut length = 0usize;
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let post = line.starts_with("POST");
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                if post {
                    b.lock()
                        .expect("lock")
                        .push(String::from_utf8_lossy(&body).into_owned());
                }
                let code = status();
                let _ = reader.get_mut().write_all(
                    format!(
                        "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    )
                    .as_bytes(),
                );
            }
        });
        HttpStub {
            url,
            status: code,
            bodies,
        }
    }

    /// A handle that shares this stub's status and bodies (e.g. for a watcher task).
    pub fn clone_handle(&self) -> HttpStub {
        HttpStub {
            url: self.url.clone(),
            status: self.status.clone(),
            bodies: self.bodies.clone(),
        }
    }

    pub fn set_status(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    /// The `event` field of every JSON body posted so far.
    pub fn events(&self) -> Vec<String> {
        self.bodies
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
            .map(|v| v["event"].as_str().unwrap_or("").to_string())
            .collect()
    }

    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().expect("lock").clone()
    }
}

/// A URL on a port nothing listens on.
pub fn closed_url() -> String {
    format!("http://127.0.0.1:{}/", free_port())
}

/// An ECS client for moto in eu-west-1.
pub async fn ecs_client(moto: &Moto) -> aws_sdk_ecs::Client {
    ecs_client_in(moto, "eu-west-1", None).await
}

/// An ECS client for moto in `region`, optionally through `--assume-role ARN`.
pub async fn ecs_client_in(moto: &Moto, region: &str, role: Option<&str>) -> aws_sdk_ecs::Client {
    let mut o = aws_options(moto);
    o.region = Some(region.into());
    o.assume_role = role.map(str::to_string);
    aws_sdk_ecs::Client::new(
        &gantry_deploy::aws::load_config(&o)
            .await
            .expect("aws config"),
    )
}

/// A CloudFormation client for moto in eu-west-1.
pub async fn cfn_client(moto: &Moto) -> aws_sdk_cloudformation::Client {
    aws_sdk_cloudformation::Client::new(
        &gantry_deploy::aws::load_config(&aws_options(moto))
            .await
            .expect("aws config"),
    )
}

/// Cluster `c1`, task family `web` (container `app`, image `registry.local/app:1`, env A=1),
/// service `service` on web:1 with `desired` tasks. Returns the web:1 ARN.
pub async fn ecs_fixture(client: &aws_sdk_ecs::Client, service: &str, desired: i32) -> String {
    use aws_sdk_ecs::types::{ContainerDefinition, KeyValuePair};
    client
        .create_cluster()
        .cluster_name("c1")
        .send()
        .await
        .expect("cluster");
    let arn = client
        .register_task_definition()
        .family("web")
        .container_definitions(
            ContainerDefinition::builder()
                .name("app")
                .image("registry.local/app:1")
                .memory(128)
                .environment(KeyValuePair::builder().name("A").value("1").build())
                .build(),
        )
        .send()
        .await
        .expect("register web")
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .expect("arn")
        .to_string();
    client
        .create_service()
        .cluster("c1")
        .service_name(service)
        .task_definition(&arn)
        .desired_count(desired)
        .send()
        .await
        .expect("service");
    arn
}

/// A history store in moto's S3 bucket `bucket` (created if missing), prefix `deploys`.
pub async fn s3_store(moto: &Moto, bucket: &str) -> Box<dyn gantry_deploy::HistoryStore> {
    use gantry_deploy::sdk::s3;
    let o = aws_options(moto);
    let cfg = gantry_deploy::aws::load_config(&o).await.expect("cfg");
    let client = s3::Client::from_conf(
        s3::config::Builder::from(&cfg)
            .force_path_style(true)
            .build(),
    );
    let _ = client
        .create_bucket()
        .bucket(bucket)
        .create_bucket_configuration(
            s3::types::CreateBucketConfiguration::builder()
                .location_constraint(s3::types::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await;
    gantry_deploy::history::open(&format!("s3://{bucket}/deploys"), &o)
        .await
        .expect("open s3 history")
}
