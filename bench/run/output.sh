#!/usr/bin/env bash
# Job output volume: `gantry run` against the same script run straight by
# bash (the floor), an older gantry build (--old BIN, e.g. main's) and
# gitlab-ci-local 4.x (the peer), in the same run, on the same repository:
#   fast400   400 MB printed as fast as the job can (100-byte lines)
#   line50    one 50 MB line without a newline
#   stalled   fast400 while gantry's own output goes to a reader that reads
#             nothing for 5 s, then everything (a terminal that scrolls
#             slowly, a paused `less`): gantry alone, and --old
# Prints wall time (date, ns) and peak RSS (/usr/bin/time -f %M) of each,
# and the ratios. The job's log (400 MB) is written under .gantry/ of a
# temporary repository, removed at exit.
#
# Usage: bench/run/output.sh [--gantry BIN] [--old BIN] [--no-peer]
#        [--only fast400|line50|stalled] [--peer-timeout SECONDS]
# Targets (issue 8): fast400 and stalled under 64 MB peak RSS; line50 in
# linear time (no slower per byte than fast400) and under 64 MB.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
GANTRY=""
OLD=""
PEER=1
ONLY=""
PEER_TIMEOUT=300
while [ $# -gt 0 ]; do
  case "$1" in
    --gantry) GANTRY="$2"; shift 2 ;;
    --old) OLD="$2"; shift 2 ;;
    --no-peer) PEER=0; shift ;;
    --only) ONLY="$2"; shift 2 ;;
    --peer-timeout) PEER_TIMEOUT="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ -z "$GANTRY" ]; then
  (cd "$ROOT" && cargo build --release -q -p gantry)
  GANTRY="$ROOT/target/release/gantry"
fi
# Measured from inside the repositories: absolute paths.
GANTRY="$(realpath "$GANTRY")"
if [ -n "$OLD" ]; then OLD="$(realpath "$OLD")"; fi
if [ "$PEER" = 1 ]; then
  PEER_PATH="$("$ROOT/scripts/setup-peer.sh" | tail -n 1)"
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# `yes` dies of SIGPIPE when head has enough; the job's shell has pipefail.
SCRIPT_fast400='{ yes 012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678 || true; } | head -c 400000000'
SCRIPT_line50="head -c 50000000 /dev/zero | tr '\\0' x"
SCRIPT_stalled="$SCRIPT_fast400"

new_repo() { # name script
  local dir="$WORK/$1"
  mkdir -p "$dir"
  # A YAML single-quoted scalar: the script starts with `{`.
  printf "out:\n  script:\n    - '%s'\n" "${2//\'/\'\'}" > "$dir/.gitlab-ci.yml"
  (cd "$dir" && git init -q -b main && git add -A \
    && git -c user.name=bench -c user.email=bench@example.com commit -qm bench)
}

# measure DIR CMD... -> "wall_s max_rss_kb", or "fail" when it failed or timed out
measure() {
  local dir="$1"; shift
  local out="$WORK/time.out" start end
  start=$(date +%s%N)
  if ! (cd "$dir" && timeout "$PEER_TIMEOUT" /usr/bin/time -o "$out" -f '%M' "$@" >/dev/null 2>&1); then
    echo "fail"
    return
  fi
  end=$(date +%s%N)
  echo "$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", (e - s) / 1e9 }') $(tail -n 1 "$out")"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "-" }'; }
mb() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }

row() { # label result
  if [ "$2" = fail ]; then
    printf '  %-18s did not finish (failed or over %s s)\n' "$1" "$PEER_TIMEOUT"
  else
    read -r w m <<< "$2"
    printf '  %-18s %8s s %8s MB peak RSS\n' "$1" "$w" "$(mb "$m")"
  fi
}

# gantry with its output read by nobody for 5 s (the stalled case).
stalled_run() { "$1" run | { sleep 5; cat >/dev/null; }; }
export -f stalled_run

for case in fast400 line50 stalled; do
  if [ -n "$ONLY" ] && [ "$ONLY" != "$case" ]; then continue; fi
  var="SCRIPT_$case"
  script="${!var}"
  new_repo "$case" "$script"
  echo "$case: $script"
  if [ "$case" = stalled ]; then
    # %M is the largest of bash and what it waited for: gantry.
    floor=fail
    now="$(measure "$WORK/$case" bash -c 'set -o pipefail; stalled_run "$0"' "$GANTRY")"
  else
    floor="$(measure "$WORK/$case" bash -c "$script")"
    row "bash (floor)" "$floor"
    now="$(measure "$WORK/$case" "$GANTRY" run)"
  fi
  rm -rf "$WORK/$case/.gantry"
  row "gantry" "$now"
  if [ -n "$OLD" ]; then
    if [ "$case" = stalled ]; then
      old="$(measure "$WORK/$case" bash -c 'set -o pipefail; stalled_run "$0"' "$OLD")"
    else
      old="$(measure "$WORK/$case" "$OLD" run)"
    fi
    rm -rf "$WORK/$case/.gantry"
    row "gantry (old)" "$old"
  fi
  if [ "$PEER" = 1 ] && [ "$case" != stalled ]; then
    peer="$(PATH="$PEER_PATH:$PATH" measure "$WORK/$case" gitlab-ci-local out)"
    rm -rf "$WORK/$case/.gitlab-ci-local"
    row "gitlab-ci-local" "$peer"
  fi
  if [ "$now" != fail ]; then
    read -r nw nm <<< "$now"
    if [ "$floor" != fail ]; then
      read -r fw _ <<< "$floor"
      echo "  gantry / bash time: $(ratio "$nw" "$fw")x"
    fi
    if [ -n "$OLD" ] && [ "$old" != fail ]; then
      read -r ow om <<< "$old"
      echo "  old / gantry: time $(ratio "$ow" "$nw")x, peak RSS $(ratio "$om" "$nm")x"
    fi
    if [ "$PEER" = 1 ] && [ "$case" != stalled ] && [ "$peer" != fail ]; then
      read -r pw pm <<< "$peer"
      echo "  gitlab-ci-local / gantry: time $(ratio "$pw" "$nw")x, peak RSS $(ratio "$pm" "$nm")x"
    fi
    verdict=$(awk -v m="$nm" 'BEGIN { print (m < 64 * 1024) ? "met" : "MISSED" }')
    echo "  target peak RSS < 64 MB: $verdict"
    if [ "$case" = fast400 ]; then fast_s="$nw"; fi
    if [ "$case" = line50 ] && [ -n "${fast_s:-}" ]; then
      # Seconds per MB, the long line against 400 MB of short lines.
      echo "  line50 per MB / fast400 per MB: $(awk -v a="$nw" -v b="$fast_s" 'BEGIN { printf "%.2f", (a / 50) / (b / 400) }')x (linear: about 1 or less)"
    fi
  fi
done
