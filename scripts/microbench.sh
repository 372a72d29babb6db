#!/usr/bin/env bash
# Microbenchmarks of the hot paths (Benchmarks/, google/swift-benchmark): codecs and the queue
# round trip the master's dispatch makes, each printed as a ratio to its group's baseline measured
# in the same run. Not tests and not part of CI; run by hand:
#
#   scripts/microbench.sh [harness options, e.g. --min-time 2 --filter queue]
#
# Builds Benchmarks/ in release mode (its own package, so the main build never compiles it).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v jq >/dev/null || { echo "microbench.sh needs jq" >&2; exit 2; }
swift build -c release --package-path Benchmarks >&2
bin=$(swift build -c release --package-path Benchmarks --show-bin-path)
json=$("$bin/pool-microbench" --format json --quiet "$@")
# The harness names results "group.benchmark"; each group's "baseline: …" entry is its 1×.
jq -r '
  .benchmarks
  | map(. + {group: (.name | split(".")[0]), bench: (.name | split(".")[1:] | join("."))})
  | group_by(.group)[]
  | (map(select(.bench | startswith("baseline"))) | first | .time) as $base
  | "\n" + .[0].group + "\n" + (
      map("  \(.bench | .[0:52] | . + " " * (52 - length))  \(.time | . * 10 | round / 10 | tostring | " " * (10 - length) + .) ns"
          + (if $base then "  \((.time / $base * 100 | round) / 100)×" else "" end))
      | join("\n"))
' <<<"$json"
echo
echo "time: median ns per iteration (one iteration = the whole line's work); ×: ratio to the group's baseline."
