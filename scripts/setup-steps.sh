# Sourced by scripts/setup-env.sh. `step N TITLE CMD...` runs CMD as step N of SETUP_STEPS and
# says so: when it starts, every SETUP_TICK_S seconds (15) while it runs (pip -q is silent for
# minutes) and when it ends, with the elapsed time. Returns CMD's exit code.
step() {
  local n="$1/${SETUP_STEPS:-4}" title="$2" tick="${SETUP_TICK_S:-15}" start rc=0 ticker
  shift 2
  start=$(date +%s)
  echo "[setup $n] $title ..." >&2
  (
    # sleep gets no inherited descriptors: killed mid-sleep, it must not hold a pipe open.
    while sleep "$tick" </dev/null >/dev/null 2>&1; do
      echo "[setup $n] $title ... $(($(date +%s) - start)) s" >&2
    done
  ) &
  ticker=$!
  "$@" || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    echo "[setup $n] $title failed after $(($(date +%s) - start)) s (exit code $rc)" >&2
    return "$rc"
  fi
  echo "[setup $n] $title done in $(($(date +%s) - start)) s" >&2
}
