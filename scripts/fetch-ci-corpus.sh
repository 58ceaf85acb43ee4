#!/usr/bin/env bash
# Downloads the CI configuration corpus listed in
# crates/gantry-config/tests/corpus/MANIFEST.tsv (repository, commit, files)
# from raw.githubusercontent.com. Idempotent: files already present are kept.
set -euo pipefail
dir="$(cd "$(dirname "$0")/.." && pwd)/crates/gantry-config/tests/corpus"
grep -v '^#' "$dir/MANIFEST.tsv" | while IFS=$'\t' read -r name repo commit files; do
  IFS=',' read -ra paths <<<"$files"
  for path in "${paths[@]}"; do
    dest="$dir/$name/$path"
    [ -f "$dest" ] && continue
    mkdir -p "$(dirname "$dest")"
    curl -fsSL --retry 3 -o "$dest.tmp" "https://raw.githubusercontent.com/$repo/$commit/$path" && mv "$dest.tmp" "$dest"
  done
done
echo "corpus in $dir"
