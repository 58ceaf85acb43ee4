//! The OpenAPI 3.1 document of every route (`GET /api/v4/openapi.json`).

use axum::Json;
use serde_json::{Map, Value, json};

/// Method, path, summary, and who may call it.
const ROUTES: &[(&str, &str, &str, &str)] = &[
    (
        "get",
        "/healthz",
        "Liveness: 200 when the database answers",
        "anyone",
    ),
    ("get", "/metrics", "Prometheus metrics", "anyone"),
    ("get", "/api/v4/version", "Server version", "anyone"),
    ("get", "/api/v4/user", "The token's user", "viewer"),
    (
        "post",
        "/api/v4/users",
        "Create a user with a role; answers with an API token",
        "admin",
    ),
    (
        "get",
        "/api/v4/users/{uid}",
        "A user (bot: the system user that cannot log in)",
        "viewer",
    ),
    ("get", "/api/v4/projects", "List projects", "viewer"),
    (
        "get",
        "/api/v4/projects/{id}/members",
        "The project's members and their access levels (20 viewer, 30 developer, 40 maintainer)",
        "viewer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/members/all",
        "Every user with the access they have in the project (a non-member's is their server-wide role)",
        "viewer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/members/all/{uid}",
        "One user's access in the project",
        "viewer",
    ),
    (
        "post",
        "/api/v4/projects/{id}/members",
        "Add a member: user_id or username, access_level (10/20 viewer, 30, 40/50 maintainer)",
        "maintainer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/members/{uid}",
        "One member",
        "viewer",
    ),
    (
        "put",
        "/api/v4/projects/{id}/members/{uid}",
        "Change a member's access_level",
        "maintainer",
    ),
    (
        "delete",
        "/api/v4/projects/{id}/members/{uid}",
        "Remove a member (their server-wide role applies again)",
        "maintainer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/protected_environments",
        "Protected environments: who may deploy (approve manual jobs)",
        "viewer",
    ),
    (
        "post",
        "/api/v4/projects/{id}/protected_environments",
        "Protect an environment: name, deploy_access_levels (access_level 30/40/60 or user_id)",
        "maintainer",
    ),
    (
        "delete",
        "/api/v4/projects/{id}/protected_environments/{name}",
        "Unprotect an environment",
        "maintainer",
    ),
    (
        "post",
        "/api/v4/projects",
        "Create a project from import_url (git URL or local path)",
        "maintainer",
    ),
    (
        "get",
        "/api/v4/projects/{id}",
        "A project (id or URL-encoded path)",
        "viewer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/gantry_webhook",
        "Webhook secret and URLs",
        "maintainer",
    ),
    (
        "post",
        "/api/v4/projects/{id}/pipeline",
        "Create a pipeline on a ref, with variables and `inputs` for the configuration's `spec:inputs`",
        "developer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/pipelines",
        "List pipelines (ref, status, page, per_page)",
        "viewer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/pipelines/{pipeline_id}",
        "A pipeline",
        "viewer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/pipelines/{pipeline_id}/jobs",
        "A pipeline's jobs (scope[]); trigger jobs are listed under bridges",
        "viewer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/pipelines/{pipeline_id}/bridges",
        "A pipeline's trigger jobs with their downstream pipelines (child or multi-project)",
        "viewer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/pipelines/{pipeline_id}/variables",
        "A pipeline's variables",
        "developer",
    ),
    (
        "post",
        "/api/v4/projects/{id}/pipelines/{pipeline_id}/retry",
        "Retry failed jobs",
        "developer",
    ),
    (
        "post",
        "/api/v4/projects/{id}/pipelines/{pipeline_id}/cancel",
        "Cancel unfinished jobs",
        "developer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/jobs",
        "A project's jobs (scope[]), trigger jobs aside (see bridges)",
        "viewer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/jobs/{job_id}",
        "A job",
        "viewer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/jobs/{job_id}/trace",
        "A job's log (text)",
        "viewer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/jobs/{job_id}/trace/stream",
        "A job's log live (Server-Sent Events; resume with Last-Event-ID or ?offset=)",
        "viewer",
    ),
    (
        "post",
        "/api/v4/projects/{id}/jobs/{job_id}/play",
        "Play a manual or delayed job",
        "developer",
    ),
    (
        "post",
        "/api/v4/projects/{id}/jobs/{job_id}/retry",
        "Retry a job",
        "developer",
    ),
    (
        "post",
        "/api/v4/projects/{id}/jobs/{job_id}/cancel",
        "Cancel a job",
        "developer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/jobs/{job_id}/artifacts",
        "Download a job's artifacts (zip)",
        "viewer or job token",
    ),
    (
        "get",
        "/api/v4/projects/{id}/variables",
        "List project variables",
        "maintainer",
    ),
    (
        "post",
        "/api/v4/projects/{id}/variables",
        "Create a project variable (masked, protected)",
        "maintainer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/variables/{key}",
        "A project variable",
        "maintainer",
    ),
    (
        "put",
        "/api/v4/projects/{id}/variables/{key}",
        "Update a project variable",
        "maintainer",
    ),
    (
        "delete",
        "/api/v4/projects/{id}/variables/{key}",
        "Delete a project variable",
        "maintainer",
    ),
    (
        "get",
        "/api/v4/admin/ci/variables",
        "List instance variables",
        "admin",
    ),
    (
        "post",
        "/api/v4/admin/ci/variables",
        "Create an instance variable",
        "admin",
    ),
    (
        "get",
        "/api/v4/projects/{id}/pipeline_schedules",
        "List schedules",
        "viewer",
    ),
    (
        "post",
        "/api/v4/projects/{id}/pipeline_schedules",
        "Create a schedule (cron, cron_timezone)",
        "developer",
    ),
    (
        "get",
        "/api/v4/deploy_history/records",
        "gantry deploy history: records of a target (target=) or matching a filter (filter=)",
        "viewer or a running job's JOB-TOKEN",
    ),
    (
        "put",
        "/api/v4/deploy_history/records/{record_id}",
        "gantry deploy history: insert or replace a record (compare-and-swap on the server)",
        "developer or a running job's JOB-TOKEN",
    ),
    (
        "post",
        "/api/v4/deploy_history/leases",
        "gantry deploy history: take a target's lease ({target, holder}); answers acquired or the holder",
        "developer or a running job's JOB-TOKEN",
    ),
    (
        "delete",
        "/api/v4/deploy_history/leases",
        "gantry deploy history: release a lease (target=, holder_id=)",
        "developer or a running job's JOB-TOKEN",
    ),
    (
        "get",
        "/api/v4/projects/{id}/environments",
        "List environments (state available/stopping/stopped, auto_stop_at)",
        "viewer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/environments/{eid}",
        "An environment",
        "viewer",
    ),
    (
        "post",
        "/api/v4/projects/{id}/environments/{eid}/stop",
        "Stop an environment: plays its on_stop job (stopping, then stopped); force=true stops it at once without on_stop",
        "developer",
    ),
    (
        "post",
        "/api/v4/projects/{id}/environments/stop_stale",
        "Stop environments neither created nor deployed to since before= (ISO 8601, 10 years to 1 week ago; limit= up to 1000), protected ones excepted",
        "developer",
    ),
    (
        "get",
        "/api/v4/projects/{id}/deployments",
        "List deployments",
        "viewer",
    ),
    (
        "get",
        "/api/v4/runners/all",
        "List runners with status",
        "admin",
    ),
    (
        "post",
        "/api/v4/projects/{id}/webhooks/gitlab",
        "GitLab-format webhook (X-Gitlab-Token)",
        "webhook secret",
    ),
    (
        "post",
        "/api/v4/projects/{id}/webhooks/github",
        "GitHub webhook (X-Hub-Signature-256)",
        "webhook secret",
    ),
    (
        "post",
        "/api/v4/projects/{id}/webhooks/gitea",
        "Gitea webhook (X-Gitea-Signature)",
        "webhook secret",
    ),
    (
        "post",
        "/api/v4/runners",
        "Register a runner (registration token)",
        "registration token",
    ),
    (
        "delete",
        "/api/v4/runners",
        "Unregister a runner",
        "runner token",
    ),
    (
        "post",
        "/api/v4/jobs/request",
        "Long-poll for a job (201 job, 204 none)",
        "runner token",
    ),
    (
        "put",
        "/api/v4/jobs/{job_id}",
        "Heartbeat or finish a job",
        "job token",
    ),
    (
        "patch",
        "/api/v4/jobs/{job_id}/trace",
        "Append a log chunk (Content-Range: START-END)",
        "job token",
    ),
    (
        "post",
        "/api/v4/jobs/{job_id}/artifacts",
        "Upload the artifacts zip",
        "job token",
    ),
    (
        "get",
        "/api/v4/jobs/{job_id}/artifacts",
        "Download a dependency's artifacts",
        "job token",
    ),
    (
        "get",
        "/api/v4/jobs/{job_id}/cache/{key}",
        "Read a cache archive",
        "job token",
    ),
    (
        "put",
        "/api/v4/jobs/{job_id}/cache/{key}",
        "Write a cache archive",
        "job token",
    ),
    (
        "get",
        "/api/v4/projects/{id}/repository.git/info/refs",
        "git smart HTTP: refs of the project's repository (service=git-upload-pack only)",
        "HTTP Basic gitlab-ci-token:<job token> of a running job of the project",
    ),
    (
        "post",
        "/api/v4/projects/{id}/repository.git/git-upload-pack",
        "git smart HTTP: fetch from the project's repository",
        "HTTP Basic gitlab-ci-token:<job token> of a running job of the project",
    ),
    (
        "post",
        "/api/v4/projects/{id}/repository.git/git-receive-pack",
        "git smart HTTP: pushes, always refused (403)",
        "nobody",
    ),
];

pub fn spec() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, who) in ROUTES {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let entry = paths
            .entry(path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[*method] = json!({
            "summary": summary,
            "description": format!("Who may call it: {who}."),
            "parameters": params,
            "responses": {"200": {"description": "OK"}, "401": {"description": "No or wrong token"}, "403": {"description": "Not allowed"}},
        });
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Gantry server API (GitLab v4 subset and extras)", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {
            "privateToken": {"type": "apiKey", "in": "header", "name": "PRIVATE-TOKEN"},
            "bearer": {"type": "http", "scheme": "bearer"},
            "jobToken": {"type": "apiKey", "in": "header", "name": "JOB-TOKEN"}
        }},
        "paths": paths,
    })
}

pub async fn document() -> Json<Value> {
    Json(spec())
}
