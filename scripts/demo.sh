#!/usr/bin/env bash
# The demo: sets up .venv on a fresh machine (like scripts/test.sh), then runs the whole path on
# a small real classifier, offline: train, build, serve, predict and explain, HTML report,
# upload to a local S3 server and a PVC-style folder, InferenceService manifest.
# Extra arguments go to `scibert-pack demo` (e.g. --workdir DIR; default ./demo-work, relative
# to the current folder).
set -euo pipefail
source "$(dirname "$0")/setup-env.sh"

exec "$VENV/bin/scibert-pack" demo "$@"
