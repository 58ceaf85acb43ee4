//! CloudFormation through the deploy state machine (create, update, outputs, notifications,
//! rollback to the known-good template) and the ECR token, against a real moto server.

mod common;

use std::time::Duration;

use gantry_deploy::cloudformation::{
    StackOptions, deploy_stack, describe_stack, preview_stack, rollback_stack,
};
use gantry_deploy::history::{HistoryStore, MemoryHistoryStore};
use gantry_deploy::machine::Outcome;
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

fn capture() -> (Log, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    (
        Log::new(move |l| sink.lock().expect("lock").push(l.to_string())),
        lines,
    )
}

fn template(version: &str) -> String {
    format!("Description: {version}\n{TEMPLATE}")
}

async fn live_template(client: &aws_sdk_cloudformation::Client) -> String {
    client
        .get_template()
        .stack_name("app")
        .send()
        .await
        .expect("get template")
        .template_body()
        .unwrap_or_default()
        .to_string()
}

/// CloudFormation on the one deploy state machine: change-set preview also for a create,
/// `--notify` events, a health failure rolled back to the known-good template (redeployed
/// through a change set on moto), manual rollbacks, previous parameter values.
///
/// moto's ExecuteChangeSet updates a stack's template but neither its parameters nor its
/// outputs, so revisions here differ by template and parameters are checked in the recorded
/// history (outputs: the dotenv unit test).
#[tokio::test]
async fn cloudformation_deploys_through_the_machine_and_rolls_back_to_the_known_good_template() {
    let Some(moto) = common::start_moto("cloudformation") else {
        return;
    };
    let client = common::cfn_client(&moto).await;
    let account = aws::caller_account(
        &aws::load_config(&common::aws_options(&moto))
            .await
            .expect("config"),
    )
    .await
    .expect("sts");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |version: &str| {
        let path = dir.path().join(format!("{version}.yml"));
        std::fs::write(&path, template(version)).expect("template");
        path
    };
    let history = MemoryHistoryStore::default();
    let moto_url = moto.url.clone();
    let app = common::HttpStub::start_with(move || {
        let live = ureq::post(&moto_url)
            .set(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/eu-west-1/cloudformation/aws4_request, SignedHeaders=host, Signature=0",
            )
            .send_form(&[
                ("Action", "GetTemplate"),
                ("StackName", "app"),
                ("Version", "2010-05-15"),
            ])
            .ok()
            .and_then(|r| r.into_string().ok())
            .unwrap_or_default();
        if live.contains("Description: v3") {
            503
        } else {
            200
        }
    });
    let hook = common::HttpStub::start(200);
    let stack_opts = |version: &str| {
        let mut o = StackOptions::new("app");
        o.account = Some(account.clone());
        o.template_file = Some(file(version));
        o.parameters = vec![("Name".into(), "gantry-demo".into())];
        o.poll_interval = Duration::from_millis(50);
        o.health_url = Some(app.url.clone());
        o.health_timeout = Duration::from_secs(1);
        o.machine.notify = vec![hook.url.clone()];
        o
    };

    // --preview-only on a stack that does not exist: the CREATE change set is shown, and
    // neither it nor its placeholder stack stays.
    let (log, lines) = capture();
    preview_stack(&client, &stack_opts("v1"), &history, &log)
        .await
        .expect("preview");
    let text = lines.lock().expect("lock").join("\n");
    assert!(text.contains("it will be created"), "{text}");
    assert!(text.contains("change set ("), "{text}");
    assert!(
        describe_stack(&client, "app").await.expect("d").is_none(),
        "no placeholder stack left"
    );

    let (log, lines) = capture();
    let created = deploy_stack(&client, &stack_opts("v1"), &history, &log).await;
    let text = lines.lock().expect("lock").join("\n");
    assert!(created.report.ok(), "{}\n{text}", created.report.message());
    assert_eq!(created.status.as_deref(), Some("CREATE_COMPLETE"));
    assert!(
        text.contains("change set ("),
        "a preview also for a create: {text}"
    );
    assert!(text.contains("event: CREATE_COMPLETE"), "{text}");
    let Outcome::Succeeded { revision: v1, .. } = created.report.outcome.clone() else {
        panic!("{:?}", created.report.outcome)
    };

    // Nothing to change: success without an update.
    let same = deploy_stack(&client, &stack_opts("v1"), &history, &Log::silent()).await;
    assert!(same.report.ok(), "{}", same.report.message());
    assert!(!same.changed);

    // A new template; Name keeps its previous value.
    let mut next = stack_opts("v2");
    next.parameters.clear();
    let (log, lines) = capture();
    let updated = deploy_stack(&client, &next, &history, &log).await;
    assert!(updated.report.ok(), "{}", updated.report.message());
    assert!(updated.changed);
    assert_eq!(updated.status.as_deref(), Some("UPDATE_COMPLETE"));
    let Outcome::Succeeded { revision: v2, .. } = updated.report.outcome.clone() else {
        panic!("{:?}", updated.report.outcome)
    };
    let text = lines.lock().expect("lock").join("\n");
    assert!(text.contains("parameter Name (previous value)"), "{text}");
    assert!(text.contains("event: UPDATE_COMPLETE"), "{text}");
    assert!(live_template(&client).await.contains("Description: v2"));

    // A bad revision: the stack updates, then the app does not answer. The machine redeploys
    // the known-good template and parameters (v2) through a change set. The "app" answers 503
    // while the stack runs v3: it asks moto for the live template at each probe.
    let (log, lines) = capture();
    let failed = deploy_stack(&client, &stack_opts("v3"), &history, &log).await;
    let text = lines.lock().expect("lock").join("\n");
    match &failed.report.outcome {
        Outcome::RolledBack { to, why, .. } => {
            assert_eq!(to, &v2, "{text}");
            assert!(why.contains("last known-good"), "{why}");
        }
        other => panic!("{other:?}\n{text}"),
    }
    assert_eq!(failed.report.live_now.as_ref(), Some(&v2));
    assert!(
        live_template(&client).await.contains("Description: v2"),
        "{text}"
    );
    assert_eq!(
        hook.events(),
        [
            "started",
            "succeeded",
            "started",
            "succeeded",
            "started",
            "succeeded",
            "started",
            "rolled_back"
        ]
    );
    assert!(
        hook.bodies()
            .iter()
            .all(|b| b.contains("cloudformation:123456789012:eu-west-1:app")),
        "{:?}",
        hook.bodies()
    );

    // By hand: back to the known-good revision before the live one (v1); "known good" is
    // withdrawn from the revision left (v2).
    let mut manual = StackOptions::new("app");
    manual.poll_interval = Duration::from_millis(50);
    manual.health_url = Some(app.url.clone());
    let back = rollback_stack(&client, &manual, None, &history, &Log::silent()).await;
    assert!(back.ok(), "{}", back.message());
    assert_eq!(back.live_now.as_ref(), Some(&v1), "{}", back.message());
    assert!(live_template(&client).await.contains("Description: v1"));
    let key = "cloudformation:123456789012:eu-west-1:app";
    let records = history.records(key).await.expect("history");
    assert!(
        records
            .iter()
            .filter(|r| r.revision == v2)
            .all(|r| !r.known_good)
    );
    // --to a recorded revision by a prefix of its digest.
    let short = v2.trim_start_matches("sha256:")[..8].to_string();
    let to = rollback_stack(&client, &manual, Some(&short), &history, &Log::silent()).await;
    assert!(to.ok(), "{}", to.message());
    assert!(live_template(&client).await.contains("Description: v2"));

    // Previous values: no --template, only Env given; recorded with the template.
    let mut env = StackOptions::new("app");
    env.parameters = vec![("Env".into(), "prod".into())];
    env.poll_interval = Duration::from_millis(50);
    let (log, lines) = capture();
    let prod = deploy_stack(&client, &env, &history, &log).await;
    assert!(prod.report.ok(), "{}", prod.report.message());
    let text = lines.lock().expect("lock").join("\n");
    assert!(
        text.contains("using the stack's current template"),
        "{text}"
    );
    let records = history.records(key).await.expect("history");
    let last = records.last().expect("record");
    assert_eq!(
        last.details["parameters"], r#"{"Env":"prod","Name":"gantry-demo"}"#,
        "given, previous and default values, sorted"
    );
    assert!(last.details["template"].contains("Description: v2"));
    assert!(records.iter().all(|r| r.result != DeployResult::InProgress));
    assert!(records.iter().all(|r| r.target == key));

    // No template and no stack: a clear error, nothing changed.
    let mut absent = StackOptions::new("absent");
    absent.account = Some(account.clone());
    let absent = deploy_stack(&client, &absent, &history, &Log::silent()).await;
    assert!(!absent.report.changed_anything());
    assert!(
        absent.report.message().contains("pass --template FILE"),
        "{}",
        absent.report.message()
    );
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
