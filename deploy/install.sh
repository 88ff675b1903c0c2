#!/usr/bin/env bash
# Install, upgrade or remove edge-agent on Raspberry Pi OS, Debian, Ubuntu or Jetson (JetPack).
#
#   sudo deploy/install.sh --wheel dist/edge_agent-0.2.0-py3-none-any.whl
#   sudo deploy/install.sh --version 0.2.0 --pip-arg=--index-url=URL   # from your index
#   sudo deploy/install.sh --uninstall [--purge]
#   deploy/install.sh --dry-run --wheel ...         # print the plan, change nothing
#   deploy/install.sh --root /tmp/img --wheel ...   # install into an image tree, no systemctl
#
# Where the local broker is Mosquitto (/etc/mosquitto/conf.d exists), the drop-in
# deploy/mosquitto/edge-agent.conf goes there and Mosquitto is reloaded, so that no QoS 1
# reading is lost while either side restarts (docs/delivery.md); --no-mosquitto-conf skips it.
#
# Layout: one venv per version, /opt/edge-agent/venv-<version>, and /opt/edge-agent/current
# pointing at the live one (the unit runs /opt/edge-agent/current/bin/edge-agent). An upgrade
# builds the new venv beside the old one, switches the link, restarts, and waits for the
# health signal; without it the link goes back to the previous venv. Config
# (/etc/edge-agent/config.toml) is created once and never overwritten; models live in
# /var/lib/edge-agent/models and are kept across upgrades and a plain --uninstall.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
MIN_PY=3.11

ROOT=""
WHEEL=""
VERSION=""
MODEL=""
PYTHON=""
DRY_RUN=0
UNINSTALL=0
PURGE=0
START=1
FORCE=0
CUDA=0
MOSQUITTO_CONF=1
ORT_WHEEL=""
HEALTH_TIMEOUT=120
PIP_ARGS=()
# Tests drive the upgrade/rollback path with a stand-in systemctl; it is then used as if
# systemd were running, also with --root.
SYSTEMCTL=${EDGE_AGENT_SYSTEMCTL:-}

usage() {
    cat <<EOF
usage: install.sh [--wheel PATH | --version X.Y.Z] [options]
       install.sh --uninstall [--purge] [options]

install / upgrade:
  --wheel PATH          install this edge-agent wheel (dependencies from PyPI)
  --version X.Y.Z       install edge-agent X.Y.Z from the package index pip is set up for
                        (your own index: the name "edge-agent" on PyPI is another project)
  --model DIR           copy this model folder to /var/lib/edge-agent/models/<name>
  --python PATH         interpreter for the venv (default: newest python3.x >= $MIN_PY)
  --force               rebuild the venv even if this version is installed
  --no-start            install and enable, but do not (re)start the service
  --health-timeout S    seconds to wait for the service to report healthy (default 120)
  --cuda                Jetson: enable the CUDA provider drop-in (see deploy/README.md)
  --ort-wheel PATH      Jetson: the onnxruntime-gpu wheel for this JetPack, replaces onnxruntime
  --pip-arg ARG         pass ARG to pip install (repeatable), e.g. --pip-arg=--no-index
  --no-mosquitto-conf   leave Mosquitto alone (default: where /etc/mosquitto/conf.d
                        exists, install deploy/mosquitto/edge-agent.conf and reload it)

modes:
  --uninstall           remove the program and units; keep config, models and the user
  --purge               with --uninstall: also remove config, state, cache and the user
  --dry-run             print every step instead of doing it
  --root DIR            operate on the tree under DIR (an image, a test); no service start
EOF
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}
say() { echo "==> $*"; }

# Every change to the system goes through run, so --dry-run shows exactly what would happen.
run() {
    if [ "$DRY_RUN" -eq 1 ]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --wheel) WHEEL=${2:?--wheel needs a path}; shift ;;
            --version) VERSION=${2:?--version needs a version}; shift ;;
            --model) MODEL=${2:?--model needs a folder}; shift ;;
            --python) PYTHON=${2:?--python needs a path}; shift ;;
            --root) ROOT=${2:?--root needs a directory}; shift ;;
            --health-timeout) HEALTH_TIMEOUT=${2:?}; shift ;;
            --ort-wheel) ORT_WHEEL=${2:?--ort-wheel needs a path}; shift ;;
            --pip-arg) PIP_ARGS+=("${2:?}"); shift ;;
            --pip-arg=*) PIP_ARGS+=("${1#--pip-arg=}") ;;
            --force) FORCE=1 ;;
            --no-start) START=0 ;;
            --cuda) CUDA=1 ;;
            --no-mosquitto-conf) MOSQUITTO_CONF=0 ;;
            --uninstall) UNINSTALL=1 ;;
            --purge) PURGE=1 ;;
            --dry-run) DRY_RUN=1 ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument: $1" ;;
        esac
        shift
    done
    if [ -n "$ROOT" ]; then
        [ -d "$ROOT" ] || die "--root $ROOT is not a directory"
        ROOT=$(cd "$ROOT" && pwd)
    fi
    if [ "$UNINSTALL" -eq 0 ]; then
        [ -n "$WHEEL" ] || [ -n "$VERSION" ] || die "pass --wheel PATH or --version X.Y.Z"
        [ -z "$WHEEL" ] || [ -z "$VERSION" ] || die "--wheel and --version exclude each other"
        if [ -n "$WHEEL" ]; then
            [ -f "$WHEEL" ] || die "wheel $WHEEL not found"
            WHEEL=$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")
            # Wheel names are name-version-...: edge_agent-0.2.0-py3-none-any.whl
            VERSION=$(basename "$WHEEL" | cut -d- -f2)
        fi
        [[ "$VERSION" =~ ^[0-9A-Za-z.+!_-]+$ ]] || die "odd version: $VERSION"
    fi
    [ "$PURGE" -eq 0 ] || [ "$UNINSTALL" -eq 1 ] || die "--purge goes with --uninstall"
}

# Paths, all under $ROOT (empty on a real install).
set_paths() {
    PREFIX=$ROOT/opt/edge-agent
    ETC=$ROOT/etc/edge-agent
    STATE=$ROOT/var/lib/edge-agent
    CACHE=$ROOT/var/cache/edge-agent
    UNITS=$ROOT/etc/systemd/system
    SYSUSERS=$ROOT/usr/lib/sysusers.d
    MOSQUITTO_DIR=$ROOT/etc/mosquitto/conf.d
    VENV=$PREFIX/venv-$VERSION
}

# systemd is only driven live on a real install on a booted systemd machine.
live_systemd() {
    [ -n "$SYSTEMCTL" ] || { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }
}

# "-o USER -g GROUP" for install(1); under --root the ids come from the tree's own files.
owner() {
    local user=$1 group=$2
    if [ -n "$ROOT" ]; then
        user=$(awk -F: -v n="$user" '$1 == n {print $3}' "$ROOT/etc/passwd" 2>/dev/null)
        group=$(awk -F: -v n="$group" '$1 == n {print $3}' "$ROOT/etc/group" 2>/dev/null)
        # In a dry run the user may not exist yet: show the names.
        user=${user:-$1}
        group=${group:-$2}
    fi
    echo "-o $user -g $group"
}

systemctl_() {
    if [ -n "$SYSTEMCTL" ]; then
        run "$SYSTEMCTL" "$@"
    elif [ -n "$ROOT" ]; then
        # Offline mode: enable/disable only create or remove the symlinks under --root.
        case "$1" in
            enable | disable) run systemctl --root="$ROOT" "$@" ;;
            *) say "skipped (--root): systemctl $*" ;;
        esac
    elif live_systemd; then
        run systemctl "$@"
    else
        say "skipped (systemd is not PID 1 here): systemctl $*"
    fi
}

detect_platform() {
    local os_id="unknown" os_name="unknown"
    if [ -r "$ROOT/etc/os-release" ]; then
        # Read, not sourced: under --root the file belongs to another system.
        os_id=$(sed -n 's/^ID=//p' "$ROOT/etc/os-release" | tr -d '"')
        os_name=$(sed -n 's/^PRETTY_NAME=//p' "$ROOT/etc/os-release" | tr -d '"')
    fi
    JETSON=0
    if [ -e "$ROOT/etc/nv_tegra_release" ]; then
        JETSON=1
        say "platform: NVIDIA Jetson ($(head -n1 "$ROOT/etc/nv_tegra_release" | cut -c1-60)) on $os_name"
        echo "    onnxruntime from PyPI runs on the CPU (CPUExecutionProvider)."
        echo "    For the GPU: pass --cuda and --ort-wheel PATH with the onnxruntime-gpu wheel"
        echo "    built for this JetPack (NVIDIA's Jetson wheels; PyPI has none for aarch64),"
        echo "    which sets EDGE_AGENT_MODEL__PROVIDER=CUDAExecutionProvider in a drop-in."
    else
        case "$os_id" in
            raspbian) say "platform: Raspberry Pi OS ($os_name)" ;;
            debian | ubuntu) say "platform: $os_name" ;;
            *) say "platform: $os_name (untested; Debian-like assumed)" ;;
        esac
    fi
    if [ "$CUDA" -eq 1 ] && [ "$JETSON" -eq 0 ]; then
        echo "    warning: --cuda without /etc/nv_tegra_release: the GPU drop-in assumes a Jetson" >&2
    fi
}

py_ok() {
    "$1" -c "import sys; sys.exit(sys.version_info < (${MIN_PY/./, }))" 2>/dev/null
}

# The interpreter for the venv: >= 3.11, else uv provides one (JetPack 6 ships 3.10).
find_python() {
    if [ -n "$PYTHON" ]; then
        py_ok "$PYTHON" || die "$PYTHON is older than $MIN_PY"
        return
    fi
    local candidate
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null && py_ok "$(command -v "$candidate")"; then
            # The real interpreter, not a shim (pyenv) that may resolve differently later.
            PYTHON=$("$candidate" -c 'import sys; print(sys.executable)')
            say "python: $PYTHON ($("$PYTHON" -V 2>&1))"
            return
        fi
    done
    local have="none"
    command -v python3 >/dev/null && have=$(python3 -V 2>&1)
    say "python: the system has $have; edge-agent needs >= $MIN_PY"
    echo "    installing Python $MIN_PY with uv (uv from PyPI into $PREFIX/uv)"
    local uv_python
    run python3 -m venv "$PREFIX/uv"
    run "$PREFIX/uv/bin/pip" install --quiet uv
    run env UV_PYTHON_INSTALL_DIR="$PREFIX/python" "$PREFIX/uv/bin/uv" python install "$MIN_PY"
    if [ "$DRY_RUN" -eq 1 ]; then
        PYTHON="$PREFIX/python/cpython-$MIN_PY/bin/python$MIN_PY"
    else
        uv_python=$(UV_PYTHON_INSTALL_DIR="$PREFIX/python" "$PREFIX/uv/bin/uv" python find "$MIN_PY")
        PYTHON=$uv_python
    fi
}

ensure_user() {
    run install -D -m 0644 "$REPO/systemd/sysusers.d/edge-agent.conf" "$SYSUSERS/edge-agent.conf"
    if command -v systemd-sysusers >/dev/null; then
        # Idempotent: creates the user only if it does not exist (works offline with --root).
        if [ -n "$ROOT" ]; then
            run systemd-sysusers --root="$ROOT" "$SYSUSERS/edge-agent.conf"
        else
            run systemd-sysusers "$SYSUSERS/edge-agent.conf"
        fi
    elif ! grep -q '^edge-agent:' "$ROOT/etc/passwd" 2>/dev/null; then
        run useradd ${ROOT:+--root "$ROOT"} --system --user-group --no-create-home \
            --home-dir /var/lib/edge-agent --shell /usr/sbin/nologin edge-agent
    fi
}

build_venv() {
    if [ "$FORCE" -eq 0 ] && [ -e "$VENV/.complete" ] &&
        "$VENV/bin/edge-agent" --version 2>/dev/null | grep -qx "edge-agent $VERSION"; then
        say "venv: $VENV already has edge-agent $VERSION"
        return
    fi
    say "venv: building $VENV"
    find_python
    # Built in place (a venv records its own path); .complete marks a finished build, so a
    # half-built venv from an interrupted run is rebuilt rather than taken as installed.
    run rm -rf "$VENV"
    run "$PYTHON" -m venv "$VENV"
    local target=("edge-agent==$VERSION")
    [ -z "$WHEEL" ] || target=("$WHEEL")
    run "$VENV/bin/pip" install --quiet ${PIP_ARGS[@]+"${PIP_ARGS[@]}"} "${target[@]}"
    if [ -n "$ORT_WHEEL" ]; then
        run "$VENV/bin/pip" uninstall --quiet --yes onnxruntime
        run "$VENV/bin/pip" install --quiet ${PIP_ARGS[@]+"${PIP_ARGS[@]}"} "$ORT_WHEEL"
    fi
    # Also catches a same-named package from the wrong index: it has no edge-agent command.
    if [ "$DRY_RUN" -eq 0 ] && ! "$VENV/bin/edge-agent" --version | grep -qx "edge-agent $VERSION"; then
        die "$VENV/bin/edge-agent is not edge-agent $VERSION; wrong package or index?"
    fi
    run touch "$VENV/.complete"
}

switch_current() {
    PREVIOUS=""
    if [ -L "$PREFIX/current" ]; then
        PREVIOUS=$(readlink "$PREFIX/current")
    fi
    if [ "$PREVIOUS" = "venv-$VERSION" ]; then
        say "current: already venv-$VERSION"
        CHANGED_VENV=0
        return
    fi
    say "current: ${PREVIOUS:-none} -> venv-$VERSION"
    # Relative, so the link also works inside an image mounted elsewhere (--root).
    run ln -sfn "venv-$VERSION" "$PREFIX/current.new"
    run mv -T "$PREFIX/current.new" "$PREFIX/current"
    CHANGED_VENV=1
}

# Keep the live venv and the one before it (the rollback target); remove older ones.
prune_venvs() {
    local dir name
    for dir in "$PREFIX"/venv-*; do
        [ -d "$dir" ] || continue
        name=$(basename "$dir")
        if [ "$name" != "venv-$VERSION" ] && [ "$name" != "$PREVIOUS" ]; then
            run rm -rf "$dir"
        fi
    done
}

install_config() {
    run install -d -m 0755 "$ETC"
    if [ -e "$ETC/config.toml" ]; then
        say "config: $ETC/config.toml exists; left as it is"
    else
        say "config: creating $ETC/config.toml from the example; edit mqtt.host and mqtt.node_id"
        # shellcheck disable=SC2046  # owner prints two options
        run install -m 0640 $(owner root edge-agent) "$HERE/config.example.toml" "$ETC/config.toml"
    fi
}

install_model() {
    # shellcheck disable=SC2046  # owner prints two options
    run install -d -m 0750 $(owner edge-agent edge-agent) "$STATE"
    # shellcheck disable=SC2046
    run install -d -m 0755 $(owner root edge-agent) "$STATE/models"
    [ -n "$MODEL" ] || return 0
    [ -f "$MODEL/manifest.json" ] || die "--model $MODEL has no manifest.json"
    local name
    name=$(basename "$MODEL")
    if [ -d "$STATE/models/$name" ] && diff -rq "$MODEL" "$STATE/models/$name" >/dev/null; then
        say "model: $STATE/models/$name is up to date"
        return
    fi
    say "model: copying $MODEL to $STATE/models/$name"
    run rm -rf "$STATE/models/$name.new"
    run cp -r "$MODEL" "$STATE/models/$name.new"
    run chmod -R u=rwX,go=rX "$STATE/models/$name.new"
    run rm -rf "$STATE/models/$name"
    run mv "$STATE/models/$name.new" "$STATE/models/$name"
    CHANGED_MODEL=1
}

install_units() {
    local unit changed=0
    for unit in edge-agent.service edge-agent@.service; do
        if ! cmp -s "$REPO/systemd/$unit" "$UNITS/$unit"; then
            run install -D -m 0644 "$REPO/systemd/$unit" "$UNITS/$unit"
            changed=1
        fi
    done
    install_dropin mqtt-password.conf "$([ -e "$ETC/mqtt-password" ] && echo 1 || echo 0)"
    install_dropin openai-api-key.conf "$([ -e "$ETC/openai-api-key" ] && echo 1 || echo 0)"
    install_dropin jetson-cuda.conf "$CUDA"
    CHANGED_UNITS=$((changed + CHANGED_UNITS))
    [ "$CHANGED_UNITS" -eq 0 ] || systemctl_ daemon-reload
    systemctl_ enable edge-agent.service
}

# A drop-in from systemd/ in edge-agent.service.d/, present exactly when $2 is 1.
install_dropin() {
    local name=$1 wanted=$2 dest=$UNITS/edge-agent.service.d/$1
    if [ "$wanted" -eq 1 ] && ! cmp -s "$REPO/systemd/$name" "$dest"; then
        run install -D -m 0644 "$REPO/systemd/$name" "$dest"
        CHANGED_UNITS=$((CHANGED_UNITS + 1))
    elif [ "$wanted" -eq 0 ] && [ -e "$dest" ]; then
        run rm -f "$dest"
        CHANGED_UNITS=$((CHANGED_UNITS + 1))
    fi
}

# The Mosquitto drop-in: no queue limit that drops a device's backlog, persistence, a short
# autosave. Only where the local broker is Mosquitto; reloaded (SIGHUP applies all of it).
install_mosquitto_conf() {
    local dest=$MOSQUITTO_DIR/edge-agent.conf
    if [ "$MOSQUITTO_CONF" -eq 0 ]; then
        say "mosquitto: left alone (--no-mosquitto-conf)"
        return
    fi
    if [ ! -d "$MOSQUITTO_DIR" ]; then
        say "mosquitto: no $MOSQUITTO_DIR here; see docs/delivery.md for your broker's settings"
        return
    fi
    if cmp -s "$HERE/mosquitto/edge-agent.conf" "$dest"; then
        say "mosquitto: $dest is up to date"
        return
    fi
    say "mosquitto: installing $dest (no queue limit, persistence, autosave 60 s)"
    run install -m 0644 "$HERE/mosquitto/edge-agent.conf" "$dest"
    reload_mosquitto
}

reload_mosquitto() {
    if live_systemd && ! "${SYSTEMCTL:-systemctl}" is-active --quiet mosquitto.service; then
        say "mosquitto: not running; the drop-in applies when it starts"
        return
    fi
    systemctl_ reload mosquitto.service
}

remove_mosquitto_conf() {
    local dest=$MOSQUITTO_DIR/edge-agent.conf
    [ "$MOSQUITTO_CONF" -eq 1 ] && [ -e "$dest" ] || return 0
    say "mosquitto: removing $dest"
    run rm -f "$dest"
    reload_mosquitto
}

# Healthy: systemd says active (Type=notify, so only after READY=1) and, where mosquitto_sub
# exists, the retained availability topic says online.
healthy() {
    "${SYSTEMCTL:-systemctl}" is-active --quiet edge-agent.service || return 1
    command -v mosquitto_sub >/dev/null || return 0
    local where
    where=$("$PREFIX/current/bin/python" - "$ETC/config.toml" <<'PY'
import sys, tomllib
mqtt = tomllib.load(open(sys.argv[1], "rb")).get("mqtt", {})
if mqtt.get("username") or mqtt.get("password_file"):
    sys.exit(0)  # no broker password in this script: systemd's word is enough
print(mqtt.get("host", "127.0.0.1"), mqtt.get("port", 1883),
      f'{mqtt.get("base_topic", "edge-agent")}/{mqtt.get("node_id", "edge-agent")}/availability')
PY
)
    [ -n "$where" ] || return 0
    local host port topic
    read -r host port topic <<<"$where"
    [ "$(mosquitto_sub -h "$host" -p "$port" -t "$topic" -C 1 -W 10 2>/dev/null)" = online ]
}

restart_and_gate() {
    if [ "$START" -eq 0 ]; then
        say "not starting (--no-start)"
        return
    fi
    if ! live_systemd; then
        systemctl_ restart edge-agent.service
        return
    fi
    if [ "$DRY_RUN" -eq 1 ]; then
        run "${SYSTEMCTL:-systemctl}" restart edge-agent.service
        echo "+ wait up to ${HEALTH_TIMEOUT}s for active + availability online; else roll back"
        return
    fi
    if [ "$CHANGED_VENV" -eq 0 ] && [ "$CHANGED_UNITS" -eq 0 ] && [ "$CHANGED_MODEL" -eq 0 ] &&
        "${SYSTEMCTL:-systemctl}" is-active --quiet edge-agent.service; then
        say "service: running and nothing changed; not restarted"
        return
    fi
    say "service: restarting; waiting up to ${HEALTH_TIMEOUT}s for it to report healthy"
    # Type=notify: restart returns once READY=1 arrived, or fails after TimeoutStartSec.
    timeout "$HEALTH_TIMEOUT" "${SYSTEMCTL:-systemctl}" restart edge-agent.service || true
    local deadline=$((SECONDS + HEALTH_TIMEOUT))
    until healthy; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            rollback
            die "edge-agent $VERSION did not become healthy; rolled back to ${PREVIOUS:-nothing}"
        fi
        sleep 2
    done
    say "service: edge-agent $VERSION is healthy"
}

rollback() {
    echo "install.sh: edge-agent $VERSION did not report healthy; last log lines:" >&2
    if [ -z "$ROOT" ] && command -v journalctl >/dev/null; then
        journalctl -u edge-agent.service -n 20 --no-pager >&2 || true
    fi
    if [ -n "$PREVIOUS" ] && [ -d "$PREFIX/$PREVIOUS" ]; then
        echo "install.sh: rolling back to $PREVIOUS" >&2
        ln -sfn "$PREVIOUS" "$PREFIX/current.new"
        mv -T "$PREFIX/current.new" "$PREFIX/current"
        "${SYSTEMCTL:-systemctl}" restart edge-agent.service || true
    else
        "${SYSTEMCTL:-systemctl}" stop edge-agent.service || true
    fi
}

do_install() {
    CHANGED_VENV=0
    CHANGED_UNITS=0
    CHANGED_MODEL=0
    PREVIOUS=""
    detect_platform
    if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ] && [ "$DRY_RUN" -eq 0 ]; then
        die "run as root (sudo), or use --dry-run / --root DIR"
    fi
    ensure_user
    run install -d -m 0755 "$PREFIX"
    build_venv
    switch_current
    install_config
    install_model
    # shellcheck disable=SC2046  # owner prints two options
    run install -d -m 0750 $(owner edge-agent edge-agent) "$CACHE"
    install_units
    install_mosquitto_conf
    restart_and_gate
    prune_venvs
    say "done: edge-agent $VERSION (config $ETC/config.toml, models $STATE/models)"
}

do_uninstall() {
    if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ] && [ "$DRY_RUN" -eq 0 ]; then
        die "run as root (sudo), or use --dry-run / --root DIR"
    fi
    if live_systemd; then
        run "${SYSTEMCTL:-systemctl}" disable --now edge-agent.service || true
    elif [ -e "$UNITS/edge-agent.service" ]; then
        systemctl_ disable edge-agent.service
    fi
    run rm -rf "$UNITS/edge-agent.service" "$UNITS/edge-agent@.service" \
        "$UNITS/edge-agent.service.d" "$PREFIX"
    systemctl_ daemon-reload
    remove_mosquitto_conf
    if [ "$PURGE" -eq 1 ]; then
        say "purge: removing config, state (models), cache and the edge-agent user"
        run rm -rf "$ETC" "$STATE" "$CACHE" "$SYSUSERS/edge-agent.conf"
        if grep -q '^edge-agent:' "$ROOT/etc/passwd" 2>/dev/null; then
            run userdel ${ROOT:+--root "$ROOT"} edge-agent
        fi
    else
        say "kept: $ETC, $STATE (models) and the edge-agent user; --purge removes them"
    fi
    say "edge-agent removed"
}

main() {
    parse_args "$@"
    set_paths
    if [ "$UNINSTALL" -eq 1 ]; then
        do_uninstall
    else
        do_install
    fi
}

main "$@"
