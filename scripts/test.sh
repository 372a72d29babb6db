#!/usr/bin/env bash
# Every test: unit and integration (swift test, which spawns the built binaries) and the shell
# smoke test. This is the README's second command and what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --build-tests
scripts/smoke.sh
# Suites that spawn servers run one at a time: on 2 cores, parallel suites only add noise and
# timeouts, and Foundation's Process can miss an exit when two children start at once.
swift test --no-parallel
