#!/usr/bin/env bash
# Every test: unit and integration (swift test, which spawns the built binaries) and the shell
# smoke test. This is the README's second command and what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --build-tests
scripts/smoke.sh
swift test
