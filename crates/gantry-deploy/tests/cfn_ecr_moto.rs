//! CloudFormation create / update / outputs and the ECR token, against a real moto server.

mod common;

use std::time::Duration;

use gantry_deploy::cloudformation::{StackOptions, deploy_stack};
use gantry_deploy::history::{HistoryStore, MemoryHistoryStore};
use gantry_deploy::{DeployResult, Log, aws, ecr};

const TEMPLATE: &str = r#"
Parameters:
  Name: {Type: String}
  Env: {Type: String, Default: dev}
Resources:
  Bucket:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Sub "${Name}-${Env}"
Outputs:
  BucketName:
    Value: !Ref Bucket
  EnvOut:
    Value: !Ref Env
"#;

#[tokio::test]
async fn cloudformation_create_update_keeps_previous_parameters_and_writes_outputs() {
    let Some(moto) = common::start_moto("cloudformation") else {
        return;
    };
    let cfg = aws::load_config(&common::aws_options(&moto))
        .await
        .expect("config");
    let client = aws_sdk_cloudformation::Client::new(&cfg);
    let dir = tempfile::tempdir().expect("tempdir");
    let template = dir.path().join("stack.yml");
    std::fs::write(&template, TEMPLATE).expect("template");
    let dotenv = dir.path().join("outputs.env");
    let history = MemoryHistoryStore::default();

    let mut opts = StackOptions::new("app");
    opts.template_file = Some(template.clone());
    opts.parameters = vec![("Name".into(), "gantry-demo".into())];
    opts.poll_interval = Duration::from_millis(50);
    opts.outputs_dotenv = Some(dotenv.clone());
    let created = deploy_stack(&client, &opts, &history, &Log::silent())
        .await
        .expect("create");
    assert!(created.created);
    assert_eq!(created.status, "CREATE_COMPLETE");
    assert!(
        created
            .outputs
            .contains(&("BucketName".into(), "gantry-demo-dev".into())),
        "{:?}",
        created.outputs
    );
    let text = std::fs::read_to_string(&dotenv).expect("dotenv");
    assert!(
        text.contains("BucketName=gantry-demo-dev\n") && text.contains("EnvOut=dev\n"),
        "{text}"
    );

    // Update with the previous template (no --template) and only Env given: Name keeps its
    // previous value, passed explicitly (moto answers UsePreviousValue with HTTP 500).
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let log = Log::new(move |l| sink.lock().expect("lock").push(l.to_string()));
    let mut update = StackOptions::new("app");
    update.parameters = vec![("Env".into(), "prod".into())];
    update.poll_interval = Duration::from_millis(50);
    update.outputs_dotenv = Some(dotenv.clone());
    let updated = deploy_stack(&client, &update, &history, &log)
        .await
        .expect("update");
    assert!(!updated.created && updated.changed);
    assert_eq!(updated.status, "UPDATE_COMPLETE");
    assert!(
        updated.outputs.contains(&("EnvOut".into(), "prod".into())),
        "{:?}",
        updated.outputs
    );
    let stack = client
        .describe_stacks()
        .stack_name("app")
        .send()
        .await
        .expect("describe");
    let params: Vec<String> = stack.stacks()[0]
        .parameters()
        .iter()
        .map(|p| {
            format!(
                "{}={}",
                p.parameter_key().unwrap_or(""),
                p.parameter_value().unwrap_or("")
            )
        })
        .collect();
    assert!(
        params.contains(&"Name=gantry-demo".to_string()),
        "{params:?}"
    );
    let log_text = lines.lock().expect("lock").join("\n");
    assert!(
        log_text.contains("using the stack's current template"),
        "{log_text}"
    );
    assert!(
        log_text.contains("parameter Name (previous value)"),
        "{log_text}"
    );
    assert!(log_text.contains("change set preview"), "{log_text}");
    assert!(log_text.contains("event: UPDATE_COMPLETE"), "{log_text}");
    assert!(
        std::fs::read_to_string(&dotenv)
            .expect("dotenv")
            .contains("EnvOut=prod")
    );

    // Nothing to change: success without an update.
    let same = deploy_stack(&client, &update, &history, &Log::silent())
        .await
        .expect("no-op");
    assert!(!same.changed);
    let results: Vec<DeployResult> = history
        .list(Some("cloudformation:app"))
        .await
        .expect("h")
        .iter()
        .map(|r| r.result)
        .collect();
    assert_eq!(results, [DeployResult::Succeeded; 3]);

    // No template and no stack: a clear error.
    let err = deploy_stack(
        &client,
        &StackOptions::new("absent"),
        &history,
        &Log::silent(),
    )
    .await
    .expect_err("absent");
    assert!(err.to_string().contains("pass --template FILE"), "{err}");
}

#[tokio::test]
async fn ecr_token_is_decoded_and_stored_for_the_engine() {
    let Some(moto) = common::start_moto("ecr_token") else {
        return;
    };
    let cfg = aws::load_config(&common::aws_options(&moto))
        .await
        .expect("config");
    let client = aws_sdk_ecr::Client::new(&cfg);
    client
        .create_repository()
        .repository_name("app")
        .send()
        .await
        .expect("repo");
    let creds = ecr::ecr_credentials(&client, &[]).await.expect("token");
    assert_eq!(
        creds[0].registry,
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    );
    assert_eq!(creds[0].username, "AWS");
    assert!(!creds[0].password.is_empty());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    ecr::store_credentials(&path, &creds[0]).expect("store");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    assert!(doc["auths"]["123456789012.dkr.ecr.eu-west-1.amazonaws.com"]["auth"].is_string());
}
