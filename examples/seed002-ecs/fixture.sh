#!/bin/sh
# Creates what seed 002 assumes exists (cluster, service, ECR repository, the bucket of the
# shared deployment history), once.
set -eu
bucket=${HISTORY_URL#s3://}
aws s3api head-bucket --bucket "${bucket%%/*}" >/dev/null 2>&1 ||
  aws s3 mb "s3://${bucket%%/*}" >/dev/null
if aws ecs describe-services --cluster "$CLUSTER_NAME" --services "$SERVICE_NAME" \
     --query 'services[0].status' --output text 2>/dev/null | grep -q ACTIVE; then
  exit 0
fi
aws ecr create-repository --repository-name "$SERVICE_NAME" >/dev/null 2>&1 || true
aws ecs create-cluster --cluster-name "$CLUSTER_NAME" >/dev/null
aws ecs register-task-definition --family "$SERVICE_NAME" --container-definitions \
  '[{"name":"app","image":"123456789012.dkr.ecr.us-east-1.amazonaws.com/seed002-app:initial","memory":128,"portMappings":[{"containerPort":80}]}]' >/dev/null
aws ecs create-service --cluster "$CLUSTER_NAME" --service-name "$SERVICE_NAME" \
  --task-definition "$SERVICE_NAME" --desired-count 2 >/dev/null
echo "fixture: cluster $CLUSTER_NAME, service $SERVICE_NAME"
