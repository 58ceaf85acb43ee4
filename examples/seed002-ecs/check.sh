#!/bin/sh
# The service must run this pipeline's image; BREAK_KEEPALIVE=1 stands for a failing keepalive.
set -eu
td=$(aws ecs describe-services --cluster "$CLUSTER_NAME" --services "$SERVICE_NAME" \
  --query 'services[0].taskDefinition' --output text)
image=$(aws ecs describe-task-definition --task-definition "$td" \
  --query 'taskDefinition.containerDefinitions[0].image' --output text)
echo "service runs $td with $image"
case "$image" in
  *":$CI_COMMIT_SHORT_SHA-$CI_PIPELINE_ID") ;;
  *) echo "expected the image tagged $CI_COMMIT_SHORT_SHA-$CI_PIPELINE_ID" >&2; exit 1 ;;
esac
if [ "$BREAK_KEEPALIVE" = 1 ]; then
  echo "keepalive: FAILED (BREAK_KEEPALIVE=1)" >&2
  exit 1
fi
echo "keepalive: ok"
