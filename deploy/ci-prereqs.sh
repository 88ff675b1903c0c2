#!/usr/bin/env bash
# Install the Debian packages the deploy tests need, each only when it is missing.
# Called by scripts/test (and so .ci/run); safe to run again and again.
#
#   systemd            systemd-analyze verify / security (tests/test_systemd.py)
#   (shellcheck)       deploy/*.sh stay shellcheck-clean (tests/test_install.py)
#   ansible            ansible-playbook + community.general.chroot (tests/test_ansible.py)
#   ansible-lint       the role passes ansible-lint (tests/test_ansible.py)
#   debootstrap        the Debian roots the role and the aarch64 smoke run in
#   qemu-user-static   arm64 roots on an x86 machine (deploy/aarch64-smoke.sh)
#   binfmt-support     registers qemu for foreign ELF binaries
set -euo pipefail

# command -> package that provides it
declare -A NEEDED=(
    [systemd-analyze]=systemd
    [shellcheck]=shellcheck
    [ansible-playbook]=ansible
    [ansible-lint]=ansible-lint
    [debootstrap]=debootstrap
    [qemu-aarch64-static]=qemu-user-static
    [update-binfmts]=binfmt-support
    [mosquitto_sub]=mosquitto-clients
)

missing=()
for cmd in "${!NEEDED[@]}"; do
    command -v "$cmd" >/dev/null || missing+=("${NEEDED[$cmd]}")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "==> deploy prerequisites: all present"
    exit 0
fi
echo "==> deploy prerequisites: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
