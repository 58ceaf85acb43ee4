//! The seed pipelines (../shared/seeds, copied into examples/seeds) lint
//! clean and plan to the stages and jobs the write-ups describe.

mod common;
use common::{Cmd, examples, git_repo};

fn seed(name: &str) -> String {
    std::fs::read_to_string(examples().join("seeds").join(name).join(".gitlab-ci.yml"))
        .expect("seed fixture")
}

fn job_names(plan: &serde_json::Value) -> Vec<String> {
    plan["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn seed001_lints_and_plans_build_test_staging() {
    let repo = git_repo(&[(".gitlab-ci.yml", &seed("seed001"))]);
    Cmd::new()
        .dir(repo.path())
        .args(&["lint"])
        .run()
        .status(0)
        .stdout_has("valid");
    let main = Cmd::new()
        .dir(repo.path())
        .args(&["plan", "--json"])
        .run()
        .status(0)
        .json();
    assert_eq!(main["status"], "created");
    assert_eq!(main["stages"], serde_json::json!(["build", "test"]));
    assert_eq!(job_names(&main), ["build", "test"]);
    let skipped = &main["skipped"][0];
    assert_eq!(skipped["name"], "staging");
    assert!(
        skipped["reason"].as_str().expect("reason").contains("only"),
        "{skipped}"
    );
    // The global image and services (legacy keywords) reach every job.
    assert_eq!(main["jobs"][0]["image"]["name"], "docker:dind");
    assert_eq!(main["jobs"][0]["services"][0]["name"], "docker:dind");
    assert_eq!(main["jobs"][1]["image"]["name"], "$IMAGE_TAG");

    let staging = Cmd::new()
        .dir(repo.path())
        .args(&["plan", "--json", "--ref", "staging"])
        .run()
        .status(0)
        .json();
    assert_eq!(job_names(&staging), ["build", "test", "staging"]);
    assert_eq!(
        staging["stages"],
        serde_json::json!(["build", "test", "staging"])
    );
    let env = &staging["jobs"][2]["environment"];
    assert_eq!(env["name"], "staging");
}

#[test]
fn seed002_plans_rollback_on_failure() {
    let repo = git_repo(&[(".gitlab-ci.yml", &seed("seed002"))]);
    Cmd::new().dir(repo.path()).args(&["lint"]).run().status(0);
    let plan = Cmd::new()
        .dir(repo.path())
        .args(&["plan", "--json"])
        .run()
        .status(0)
        .json();
    assert_eq!(
        plan["stages"],
        serde_json::json!(["build", "deploy", "test", "rollback"])
    );
    assert_eq!(job_names(&plan), ["build", "deploy", "test", "rollback"]);
    assert_eq!(plan["jobs"][3]["when"], "on_failure");
    for job in plan["jobs"].as_array().expect("jobs") {
        assert_eq!(job["environment"]["name"], "staging");
        assert_eq!(job["image"]["name"], "docker:git");
    }
    let vars = &plan["jobs"][0]["variables"];
    assert_eq!(vars["IMAGE_NAME"], "$ECR_REPO/$IMAGE_TAG");
}

#[test]
fn seed004_plans_test_build_deploy() {
    let repo = git_repo(&[(".gitlab-ci.yml", &seed("seed004"))]);
    Cmd::new().dir(repo.path()).args(&["lint"]).run().status(0);
    let plan = Cmd::new()
        .dir(repo.path())
        .args(&["plan", "--json"])
        .run()
        .status(0)
        .json();
    assert_eq!(
        plan["stages"],
        serde_json::json!(["test", "build", "deploy"])
    );
    assert_eq!(job_names(&plan), ["test", "build", "deploy"]);
    assert_eq!(plan["jobs"][1]["services"][0]["name"], "docker:dind");
    assert_eq!(
        plan["jobs"][2]["script"],
        serde_json::json!(["ecs deploy ClusterName ServiceName --timeout=1800"])
    );
}

#[test]
fn seed000_fragment_is_rejected_clearly() {
    let repo = git_repo(&[(".gitlab-ci.yml", &seed("seed000-fragment"))]);
    Cmd::new()
        .dir(repo.path())
        .args(&["lint"])
        .run()
        .status(1)
        .stderr_has("visible job");
}

#[test]
fn seed000_with_a_job_resolves_anchor_and_variables() {
    let repo = git_repo(&[(".gitlab-ci.yml", &seed("seed000-with-job"))]);
    Cmd::new().dir(repo.path()).args(&["lint"]).run().status(0);
    let plan = Cmd::new()
        .dir(repo.path())
        .args(&["plan", "--json"])
        .run()
        .status(0)
        .json();
    let job = &plan["jobs"][0];
    assert_eq!(job["name"], "get credentials");
    let script = job["script"].as_array().expect("script");
    assert_eq!(
        script.len(),
        7,
        "the anchored list is flattened into the script: {script:?}"
    );
    assert_eq!(script[1], "echo \"Assuming role $ROLE_ARN\"");
    assert_eq!(job["variables"]["AWS_DEFAULT_REGION"], "eu-west-1");
    assert_eq!(
        job["variables"]["ROLE_ARN"],
        "arn:aws:iam::${AWS_ACCOUNT_ID}:role/terraform-deployment-role"
    );
    // Not created for a merge request from another project? It is: the first rule matches.
    let mr = Cmd::new()
        .dir(repo.path())
        .args(&["plan", "--json", "--source", "merge_request_event"])
        .run()
        .status(0)
        .json();
    assert_eq!(job_names(&mr), ["get credentials"]);
    let other = Cmd::new()
        .dir(repo.path())
        .args(&["plan", "--json", "--ref", "feature"])
        .run()
        .status(0)
        .json();
    assert!(job_names(&other).is_empty());
}
