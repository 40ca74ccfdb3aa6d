# Sourced by scripts/test.sh and scripts/demo.sh: make .venv ready on a fresh machine.
# Idempotent and quiet when everything is already there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

log() { echo "[setup] $*" >&2; }

# Each install step says what it does and how long it has taken (scripts/setup-steps.sh).
source "$ROOT/scripts/setup-steps.sh"

if [ ! -x "$VENV/bin/python" ]; then
  step 1 "creating $VENV" "$PY" -m venv "$VENV"
fi

# torch first, pinned: the CPU wheel on disk. A bare `torch` would pull a multi-GB CUDA build.
if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  step 2 "installing torch==2.13.0 (CPU, pip)" "$VENV/bin/pip" install -q torch==2.13.0
fi

stamp="$VENV/.scibert-pack-installed"
# The strict editable install links each file of the package folders (every top-level folder with
# an __init__.py) into build/__editable__.*: the stamp holds their list, and a module added or
# removed since relinks them.
package_files="$(cd "$ROOT" && for init in */__init__.py; do
  find "${init%/__init__.py}" -name __pycache__ -prune -o -type f -print
done | LC_ALL=C sort | sha256sum)"
_link_project() {  # EXTRAS, then pip options
  rm -rf "$ROOT"/build/__editable__.*  # an older version's link tree would be type-checked too
  "$VENV/bin/pip" install -q "${@:2}" -e "$ROOT$1" --config-settings editable_mode=strict
}
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  # KServe's own storage initializer, used by the tests as the downloader that proves an upload.
  # Its full dependency set (GCS, Azure, HF, ...) is not needed for s3:// and local URIs.
  _install_project() {
    _link_project "[dev]" &&
      "$VENV/bin/pip" install -q --no-deps "kserve-storage>=0.15" &&
      # The kserve SDK's InferenceRESTClient, a third-party client in tests/test_oip_clients.py.
      # Without --no-deps it pulls its model server's stack; these are what `import kserve` needs.
      "$VENV/bin/pip" install -q --no-deps "kserve==0.21.0" &&
      # Pinned within kserve's and botocore's own ranges: pip does not weigh what is installed.
      "$VENV/bin/pip" install -q "cloudevents<2" "psutil>=5.9.6,<6" fastapi httpx orjson \
        "pandas>=2.2,<3" "protobuf>=6.33.5,<7" "python-dateutil>=2.8,<3" python-multipart pyjwt \
        prometheus-client grpc-interceptor uvicorn timing-asgi watchfiles kubernetes tabulate \
        2> >(_without_kserve_conflicts)
  }
  # pip then lists kserve's and kserve-storage's left-out extras as an ERROR although the
  # install succeeded: say it once, plainly, and keep every other line pip writes.
  _without_kserve_conflicts() {
    local line said=""
    while IFS= read -r line; do
      case "$line" in
        "ERROR: pip's dependency resolver does not currently"*) ;;
        "kserve "*" requires "* | "kserve-storage "*" requires "*)
          [ -n "$said" ] || log "kserve and kserve-storage are installed without their cloud extras (GCS, Azure, ...): not needed here, not an error"
          said=1 ;;
        *) echo "$line" >&2 ;;
      esac
    done
  }
  step 3 "installing scibert-pack with dev extras (pip)" _install_project
  echo "$package_files" >"$stamp"
elif [ "$(cat "$stamp")" != "$package_files" ] ||
  # A plain `pip install -e .` since (README's bench step, habit) swapped the links for an import
  # hook that mypy cannot read.
  ! "$VENV/bin/python" -I -c 'import sys, scibert_pack.config as c
sys.exit("__editable__" not in c.__file__)' 2>/dev/null; then
  step 3 "relinking scibert-pack's package files (pip)" _link_project "" --no-deps
  echo "$package_files" >"$stamp"
fi

ensure_java

# Headless Chromium for the screenshot test of the HTML report (tests/test_report_html.py skips,
# saying why, without it). Installed only as root with apt-get: never asks for a password.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "chromium not found: installing it for the report screenshot test (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || log "could not install chromium: the report screenshot test will be skipped"
  else
    log "chromium not found (not root or no apt-get): the report screenshot test will be skipped"
  fi
fi
