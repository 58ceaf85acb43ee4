-- 20 projects, 25 refs each, 10,000 pipelines of 10 jobs: 100,000 jobs.
-- Plain SQL with recursive CTEs: the same file seeds SQLite and PostgreSQL.
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20)
INSERT INTO projects (path, name, source_url, default_branch, webhook_secret, ci_config_path, created_at, creator_id)
SELECT 'group/project-' || i, 'project-' || i, '/nonexistent/' || i, 'main', 'secret', '.gitlab-ci.yml', 1700000000000, 1 FROM n;

WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9999)
INSERT INTO pipelines (project_id, iid, ref, sha, before_sha, tag, source, status, protected, user_id, variables, spec,
  name, error, created_at, updated_at, started_at, finished_at)
SELECT (SELECT MIN(id) FROM projects) + i % 20, i / 20 + 1, 'branch-' || ((i / 20) % 25),
  '0123456789abcdef0123456789abcdef' || (10000000 + i), '0000000000000000000000000000000000000000', 0, 'push',
  CASE i % 7 WHEN 0 THEN 'failed' WHEN 1 THEN 'running' WHEN 2 THEN 'canceled' ELSE 'success' END,
  0, 1, '[]', '{}', NULL, NULL, 1700000000000 + i * 60000, 1700000000000 + i * 60000, 1700000000000 + i * 60000,
  1700000000000 + i * 60000 + 90000
FROM n;

WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9)
INSERT INTO jobs (pipeline_id, project_id, name, stage, stage_idx, status, when_, allow_failure, tags, resource_group,
  interruptible, attempt, retried, spec, environment, user_id, created_at, started_at, finished_at)
SELECT p.id, p.project_id, 'job-' || n.i, 'stage-' || (n.i / 3), n.i / 3,
  CASE WHEN p.status = 'failed' AND n.i = 9 THEN 'failed' WHEN p.status = 'running' AND n.i > 5 THEN 'pending' ELSE 'success' END,
  'on_success', 0, '[]', NULL, 0, 1, 0, '{"name":"job","script":["make test"]}', NULL, 1, p.created_at, p.started_at, p.finished_at
FROM pipelines p CROSS JOIN n;
