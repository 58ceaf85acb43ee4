//! Project membership: a user's role in one project, set through GitLab's
//! members API (driven by python-gitlab, tests/pyclients/project_members.py)
//! and obeyed by the API's and the dashboard's project actions: a
//! server-wide viewer who maintains one project may run pipelines and
//! approve production deploys there and nowhere else; a server-wide
//! developer who only reads one project may not run pipelines there.

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

const PIPELINE: &str = "build:\n  script: 'true'\n\
deploy:\n  script: 'true'\n  when: manual\n  environment:\n    name: production\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projects_members_have_their_role_there_and_only_there() {
    let Some(python) = pyclients_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    repo(&repo_dir, &[(".gitlab-ci.yml", PIPELINE)]);
    let running = gantry_server::start(config(&dir.path().join("data"), None))
        .await
        .unwrap();
    let url = running.url.clone();
    let admin = Client::new(&url, Some(ADMIN_TOKEN));
    let shop = admin.project("shop", &repo_dir).await;
    let other = admin.project("other", &repo_dir).await;
    let mut users = Vec::new();
    for (name, role) in [("dana", "developer"), ("vic", "viewer")] {
        let (s, u) = admin
            .post("/api/v4/users", json!({"username": name, "role": role}))
            .await;
        assert_eq!(s, 201, "{u}");
        users.push((
            u["id"].as_i64().unwrap(),
            u["token"].as_str().unwrap().to_string(),
        ));
    }
    let [(dana_id, dana_token), (vic_id, vic_token)] = <[_; 2]>::try_from(users).unwrap();
    let (dana, vic) = (
        Client::new(&url, Some(&dana_token)),
        Client::new(&url, Some(&vic_token)),
    );

    let out = tokio::process::Command::new(&python)
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/pyclients/project_members.py"),
        )
        .env("GANTRY_URL", &url)
        .env("GANTRY_TOKEN", ADMIN_TOKEN)
        .env("GANTRY_PROJECT", shop.to_string())
        .env("DEV_ID", dana_id.to_string())
        .env("VIEWER_ID", vic_id.to_string())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "python-gitlab script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Dana (developer, a reader of shop) may not run shop's pipelines;
    // she still runs other's.
    let run = |project: i64| format!("/api/v4/projects/{project}/pipeline");
    assert_eq!(dana.post(&run(shop), json!({"ref": "main"})).await.0, 403);
    assert_eq!(dana.post(&run(other), json!({"ref": "main"})).await.0, 201);
    // Vic (viewer, a maintainer of shop) runs shop's pipelines and plays
    // its production deploy, which needs a maintainer; not other's.
    assert_eq!(vic.post(&run(other), json!({"ref": "main"})).await.0, 403);
    let (s, p) = vic.post(&run(shop), json!({"ref": "main"})).await;
    assert_eq!(s, 201, "{p}");
    let id = p["id"].as_i64().unwrap();
    let mut deploy = None;
    for _ in 0..100 {
        let jobs = admin.jobs(shop, id).await;
        if let Some(j) = jobs
            .iter()
            .find(|j| j["name"] == "deploy" && j["status"] == "manual")
        {
            deploy = j["id"].as_i64();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deploy = deploy.expect("the deploy job waits as manual");
    let play = format!("/api/v4/projects/{shop}/jobs/{deploy}/play");
    assert_eq!(dana.post(&play, json!({})).await.0, 403);
    let (s, body) = vic.post(&play, json!({})).await;
    assert!(s == 200 || s == 201, "{s} {body}");
    // Only shop's maintainers manage shop's members.
    let (s, _) = dana
        .post(
            &format!("/api/v4/projects/{shop}/members"),
            json!({"user_id": dana_id, "access_level": 40}),
        )
        .await;
    assert_eq!(s, 403);

    // Removed, Dana is a developer in shop again.
    let removed = reqwest::Client::new()
        .delete(format!("{url}/api/v4/projects/{shop}/members/{dana_id}"))
        .header("PRIVATE-TOKEN", ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(removed.as_u16(), 204);
    assert_eq!(dana.post(&run(shop), json!({"ref": "main"})).await.0, 201);

    // The dashboard asks the same question: Vic (signed in with her API
    // token) may open shop's run form, not other's.
    let mut web = Web::new(&url);
    assert_eq!(web.login("vic", &vic_token).await, 303);
    assert_eq!(web.get(&format!("/dash/projects/{shop}/run")).await.0, 200);
    assert_eq!(web.get(&format!("/dash/projects/{other}/run")).await.0, 403);
    running.server.abort();
}
