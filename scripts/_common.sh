# Shared by scripts/test and scripts/demo: set up system packages and the venv.
# Sourced, not run. Works on a fresh Debian/Ubuntu with only python3 (root or sudo).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${EDGE_AGENT_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    # Install the named Debian packages that are missing; update the index once.
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "==> apt-get install ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_python() {
    if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "edge-agent needs Python 3.11 or newer; $PY is $("$PY" --version 2>&1)." >&2
        echo "On Debian 12 / Raspberry Pi OS Bookworm, python3 is 3.11: apt-get install python3" >&2
        exit 1
    fi
    # Debian splits venv/ensurepip out of python3.
    "$PY" -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
}

ensure_venv() {
    # $1: the extras to install, e.g. "dev,export".
    ensure_python
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    echo "==> pip install -e .[$1] into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # torch first and alone: the exact pin resolves to the CPU wheel, not a CUDA build.
    if [[ "$1" == *export* ]]; then
        "$VENV/bin/python" -m pip install -q "torch==2.13.0"
    fi
    "$VENV/bin/python" -m pip install -q -e "$ROOT[$1]"
}
