#!/usr/bin/env bash
# `gantry run` against gitlab-ci-local 4.x on generated shell pipelines, in
# the same run, on the same repositories:
#   stages30  30 echo jobs in 3 stages
#   dag30     3 layers of 10; each job needs 2 jobs of the layer before
#   chain30   a linear chain of 30 (each job needs the previous one)
#   container10  10 jobs in 2 stages in localhost/busybox containers, through
#             the Docker API of Podman (scripts/setup-podman.sh,
#             make-test-images.sh); skipped when no engine answers
# Prints median wall time (date, ns) and peak RSS (/usr/bin/time -f '%M') of each
# tool, the ratios, and gantry's per-job overhead on the shell executor:
# (chain30 wall time - the same 30 scripts run directly with bash) / 30.
#
# Then the scale series (gantry alone: the peer needs minutes per thousand
# jobs): 1,000 / 5,000 / 20,000 trivial jobs in 5 stages; wall time, peak
# RSS and the size of .gantry/ after the run, each per job and relative to
# the 1,000-job run (linear growth keeps the per-job figures flat).
#
# Usage: bench/run/run.sh [--reps N] [--gantry BIN] [--no-peer]
#                         [--scale "1000 5000 20000"] [--no-scale] [--scale-only]
# Targets: >= 10x less wall time and peak RSS than gitlab-ci-local; < 5 ms
# overhead per job; per-job time, memory and disk flat from 1,000 to 20,000.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
REPS=5
PEER_REPS=3
GANTRY=""
PEER=1
SCALE="1000 5000 20000"
SCALE_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) REPS="$2"; shift 2 ;;
    --gantry) GANTRY="$2"; shift 2 ;;
    --no-peer) PEER=0; shift ;;
    --scale) SCALE="$2"; shift 2 ;;
    --no-scale) SCALE=""; shift ;;
    --scale-only) SCALE_ONLY=1; PEER=0; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ -z "$GANTRY" ]; then
  (cd "$ROOT" && cargo build --release -q -p gantry)
  GANTRY="$ROOT/target/release/gantry"
fi
if [ "$PEER" = 1 ]; then
  PEER_PATH="$("$ROOT/scripts/setup-peer.sh" | tail -n 1)"
fi

WORK="$(mktemp -d)"
# `gantry run` keeps each container job's build container for `gantry shell`;
# the bench repositories go away, so their kept containers go too.
cleanup() {
  if command -v docker >/dev/null 2>&1; then
    docker ps -a --format '{{.Names}}|{{.Label "gantry.project"}}' 2>/dev/null \
      | awk -F'|' '$2 == "/builds/bench/project" { print $1 }' | xargs -r docker rm -f >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

new_repo() { # name -> creates $WORK/name with .gitlab-ci.yml from stdin
  local dir="$WORK/$1"
  mkdir -p "$dir"
  cat > "$dir/.gitlab-ci.yml"
  (cd "$dir" && git init -q -b main && git remote add origin https://gitlab.example.com/bench/project.git \
    && git add -A && git -c user.name=bench -c user.email=bench@example.com commit -qm bench)
}

gen_stages30() {
  echo "stages: [s1, s2, s3]"
  for s in 1 2 3; do for i in $(seq 1 10); do
    printf 'job_%s_%s:\n  stage: s%s\n  script:\n    - echo "job %s %s"\n' "$s" "$i" "$s" "$s" "$i"
  done; done
}

gen_dag30() {
  echo "stages: [l0, l1, l2]"
  for l in 0 1 2; do for i in $(seq 0 9); do
    printf 'n_%s_%s:\n  stage: l%s\n' "$l" "$i" "$l"
    if [ "$l" = 0 ]; then
      printf '  needs: []\n'
    else
      printf '  needs: [n_%s_%s, n_%s_%s]\n' "$((l - 1))" "$i" "$((l - 1))" "$(((i + 1) % 10))"
    fi
    printf '  script:\n    - echo "node %s %s"\n' "$l" "$i"
  done; done
}

gen_chain30() {
  printf 'stages: ['
  for i in $(seq 1 30); do printf 's%s' "$i"; [ "$i" -lt 30 ] && printf ', '; done
  printf ']\n'
  for i in $(seq 1 30); do
    printf 'c_%s:\n  stage: s%s\n' "$i" "$i"
    if [ "$i" -gt 1 ]; then printf '  needs: [c_%s]\n' "$((i - 1))"; fi
    printf '  script:\n    - echo "link %s"\n' "$i"
  done
}

gen_container10() {
  echo "stages: [one, two]"
  echo "image: localhost/busybox:latest"
  for s in one two; do for i in $(seq 1 5); do
    printf 'box_%s_%s:\n  stage: %s\n  script:\n    - echo "box %s %s"\n' "$s" "$i" "$s" "$s" "$i"
  done; done
}

# measure DIR REPS CMD... -> prints "median_wall_s max_rss_kb"
measure() {
  local dir="$1" reps="$2"; shift 2
  local walls=() rss=0 out="$WORK/time.out"
  local start end
  for _ in $(seq 1 "$reps"); do
    start="$(date +%s%N)"
    (cd "$dir" && /usr/bin/time -o "$out" -f '%e %M' "$@" >/dev/null 2>&1) || {
      echo "command failed in $dir: $*" >&2; cat "$out" >&2; return 1; }
    end="$(date +%s%N)"
    read -r _ m < "$out"
    # %e has 10 ms resolution: the wall time is taken with date instead.
    walls+=("$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.4f", (b - a) / 1e9 }')")
    [ "$m" -gt "$rss" ] && rss="$m"
  done
  local median
  median="$(printf '%s\n' "${walls[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
  echo "$median $rss"
}

gen_trivial() { # N -> N echo jobs in 5 stages (compact: 20,000 jobs stay under GitLab's 1 MB)
  echo "stages: [s1, s2, s3, s4, s5]"
  awk -v n="$1" 'BEGIN { for (i = 1; i <= n; i++)
    printf "j%d: {stage: s%d, script: [echo %d]}\n", i, (i % 5) + 1, i }'
}

scale_series() {
  [ -n "$SCALE" ] || return 0
  echo
  echo "scale: N trivial shell jobs in 5 stages, one run each (-j = cores)"
  printf '%7s %9s %9s %9s %10s %10s %11s %8s\n' jobs wall_s rss_MB gantry_MB ms/job KB_rss/job KB_disk/job time_x
  local base=""
  for n in $SCALE; do
    gen_trivial "$n" | new_repo "scale$n"
    read -r w m < <(measure "$WORK/scale$n" 1 "$GANTRY" run)
    local disk
    disk="$(du -sk "$WORK/scale$n/.gantry" | cut -f1)"
    [ -z "$base" ] && base="$w:$n"
    awk -v n="$n" -v w="$w" -v m="$m" -v d="$disk" -v base="$base" 'BEGIN {
      split(base, b, ":")
      printf "%7d %9.2f %9.1f %9.1f %10.3f %10.2f %11.2f %7.2fx\n", n, w, m/1024, d/1024, w*1000/n, m/n, d/n, (w/b[1]) / (n/b[2]) }'
  done
  echo "(time_x: wall time relative to linear growth from the first row; 1.00x is linear)"
}

if [ "$SCALE_ONLY" = 1 ]; then
  scale_series
  exit 0
fi

printf '%-9s %10s %10s %10s %10s %8s %8s\n' pipeline gantry_s gantry_MB gcl_s gcl_MB wall_x rss_x
export DOCKER_HOST="${DOCKER_HOST:-unix:///run/podman/podman.sock}"
PIPELINES="stages30 dag30 chain30"
if curl -sf --max-time 2 --unix-socket "${DOCKER_HOST#unix://}" http://d/_ping >/dev/null 2>&1; then
  PIPELINES="$PIPELINES container10"
else
  echo "(no container engine at $DOCKER_HOST: container10 skipped)"
fi
for p in $PIPELINES; do
  "gen_$p" | new_repo "$p"
  read -r gw gm < <(measure "$WORK/$p" "$REPS" "$GANTRY" run)
  if [ "$PEER" = 1 ]; then
    if ! read -r pw pm < <(PATH="$PEER_PATH:$PATH" measure "$WORK/$p" "$PEER_REPS" gitlab-ci-local); then
      printf '%-9s %10.3f %10.1f %10s %10s %8s %8s   (gitlab-ci-local failed: it pulls its helper image firecow/gitlab-ci-local-util from Docker Hub, unreachable here)\n' "$p" "$gw" "$(awk -v m="$gm" 'BEGIN{print m/1024}')" - - - -
      continue
    fi
    awk -v p="$p" -v gw="$gw" -v gm="$gm" -v pw="$pw" -v pm="$pm" 'BEGIN {
      gws = (gw > 0.005 ? gw : 0.005)
      printf "%-9s %10.3f %10.1f %10.3f %10.1f %7.1fx %7.1fx\n", p, gw, gm/1024, pw, pm/1024, pw/gws, pm/gm }'
  else
    awk -v p="$p" -v gw="$gw" -v gm="$gm" 'BEGIN {
      printf "%-9s %10.3f %10.1f %10s %10s %8s %8s\n", p, gw, gm/1024, "-", "-", "-", "-" }'
  fi
done

# Per-job overhead on the shell executor, two ways:
#  amortized: (gantry chain30 - the same 30 scripts run directly, one bash
#             each, in sequence) / 30; includes planning and run set-up.
#  marginal:  (gantry chain30 - gantry chain1) / 29 - one script's own time:
#             what one more job costs.
direct_ms() {
  local start end
  start="$(date +%s%N)"
  for i in $(seq 1 30); do bash -c "set -e; echo \"link $i\"" >/dev/null; done
  end="$(date +%s%N)"
  echo $(((end - start) / 1000000))
}
best_direct=999999
for _ in $(seq 1 "$REPS"); do d="$(direct_ms)"; [ "$d" -lt "$best_direct" ] && best_direct="$d"; done
gen_chain30 | awk 'NR == 1 { print "stages: [s1]"; next } /^c_2:/ { exit } { print }' | new_repo chain1
read -r c1 _ < <(measure "$WORK/chain1" "$REPS" "$GANTRY" run -j 1)
read -r cw _ < <(measure "$WORK/chain30" "$REPS" "$GANTRY" run -j 1)
awk -v cw="$cw" -v c1="$c1" -v d="$best_direct" 'BEGIN {
  printf "\nshell executor, chain30 with -j 1: gantry %.0f ms, 1-job pipeline %.0f ms, the 30 scripts alone %d ms\n", cw*1000, c1*1000, d
  printf "per-job overhead, amortized (incl. planning): %.2f ms/job\n", (cw*1000 - d)/30
  printf "per-job overhead, marginal: %.2f ms/job (target < 5)\n", (cw - c1)*1000/29 - d/30 }'

scale_series
