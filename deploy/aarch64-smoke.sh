#!/usr/bin/env bash
# aarch64 smoke test under qemu-user: an arm64 Debian bookworm root, the edge-agent wheel
# and its aarch64 dependency wheels from PyPI in a venv there, then the tiny int4 model
# loaded, a few tokens generated and a zigbee2mqtt payload parsed, all as arm64 code.
#
#   deploy/aarch64-smoke.sh MODEL_DIR [WHEEL]
#
# MODEL_DIR: the int4 folder from `edge-agent model build-tiny` (its last output line).
# WHEEL: default builds one from this checkout. Needs root (debootstrap, chroot) and
# network to PyPI. Slow (qemu emulates every instruction): a separate command, not CI.
set -euo pipefail

MODEL=${1:?usage: aarch64-smoke.sh MODEL_DIR [WHEEL]}
WHEEL=${2:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
[ -f "$MODEL/manifest.json" ] || { echo "aarch64-smoke.sh: $MODEL has no manifest.json" >&2; exit 1; }

started=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/aarch64-smoke.XXXXXX")
root=$work/root
cleanup() {
    umount "$root/proc" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

step() { echo "==> [$((SECONDS - started))s] $*"; }

if [ -z "$WHEEL" ]; then
    step "building the wheel from $REPO"
    python3 -m pip wheel --no-deps --quiet "$REPO" -w "$work/dist"
    WHEEL=$(ls "$work"/dist/edge_agent-*.whl)
fi

step "arm64 root (cached debootstrap tarball)"
"$HERE/make-rootfs.sh" arm64 "$root" >/dev/null
mount -t proc proc "$root/proc"
install -d "$root/opt/smoke"
cp "$WHEEL" "$root/opt/smoke/"
cp -r "$MODEL" "$root/opt/smoke/model"
echo "    $(chroot "$root" uname -m), $(chroot "$root" python3 -V)"

step "venv + pip install (aarch64 wheels from PyPI)"
chroot "$root" python3 -m venv /opt/smoke/venv
chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
    /opt/smoke/venv/bin/pip install --quiet "/opt/smoke/$(basename "$WHEEL")"
chroot "$root" /opt/smoke/venv/bin/edge-agent --version

step "load the model, generate, parse a payload (as arm64)"
chroot "$root" /opt/smoke/venv/bin/python - <<'PY'
import json, platform, time
from pathlib import Path

import onnxruntime

from edge_agent.ingest import build_source
from edge_agent.ingest.payload import Payload
from edge_agent.llm.base import GenerationRequest
from edge_agent.llm.runtime import OnnxGenerator

assert platform.machine() == "aarch64", platform.machine()
print("    onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
started = time.monotonic()
generator = OnnxGenerator.load(Path("/opt/smoke/model"), threads=2)
print(f"    model {generator.model_id} loaded and warmed up in {time.monotonic() - started:.1f}s")
result = generator.generate(
    GenerationRequest(prompt=generator.render("Summarise: kitchen 21.5 C."), max_new_tokens=8)
)
assert result.new_tokens >= 1, result
print(f"    generated {result.new_tokens} tokens in {result.latency_s:.2f}s ({result.stop_reason})")
source = build_source("zigbee2mqtt/#", "zigbee2mqtt", "kitchen")
payload = Payload(json.dumps({"temperature": 21.5, "humidity": 40}).encode())
events = source.parse("zigbee2mqtt/kitchen sensor", payload, time.time())
assert {e.metric for e in events} >= {"temperature", "humidity"}, events
print(f"    parsed {len(events)} events from a zigbee2mqtt payload")
PY
step "aarch64 smoke passed"
