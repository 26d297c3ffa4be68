#!/usr/bin/env bash
# Checks the TypeScript client from a fresh clone: install from the lock file, type-check
# strictly, build, then run the unit, fixture-replay, fetch-wrapper and telemetry tests.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npx tsc --noEmit -p .
npm run build
npm test
