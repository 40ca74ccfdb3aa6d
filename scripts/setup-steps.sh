# Sourced by scripts/setup-env.sh. `step N TITLE CMD...` runs CMD as step N of SETUP_STEPS and
# says so: when it starts, every SETUP_TICK_S seconds (15) while it runs (pip -q is silent for
# minutes) and when it ends, with the elapsed time. Returns CMD's exit code.
step() {
  local n="$1/${SETUP_STEPS:-4}" title="$2" tick="${SETUP_TICK_S:-15}" start rc=0 ticker
  shift 2
  SETUP_RAN=1  # a later step that has nothing to do then says so: the count reaches its end
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

# Step 4: TorchServe's JDK 17, from apt-get when `java` is missing. When earlier steps ran, say
# that this one had nothing to do (the count would otherwise stop at 3/4).
ensure_java() {
  if ! command -v java >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
      SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
      _install_java() {
        $SUDO apt-get update -qq &&
          DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null
      }
      step 4 "java not found: installing a JDK 17 for TorchServe (apt-get)" _install_java
    else
      echo "TorchServe needs Java 17 and apt-get is not available: install a JDK 17 and rerun" >&2
      exit 1
    fi
  elif [ -n "${SETUP_RAN:-}" ]; then
    echo "[setup 4/${SETUP_STEPS:-4}] java found ($(java -version 2>&1 | head -n 1)): nothing to install" >&2
  fi
}
