#!/usr/bin/env bash
# Build (once) and unpack a minimal Debian bookworm root for the deploy tests.
#
#   deploy/make-rootfs.sh ARCH DEST [EXTRA]
#
# ARCH is amd64 or arm64; DEST must not exist yet (or be empty); EXTRA is a comma-separated
# list of more Debian packages (e.g. systemd, for `systemctl enable` in the Ansible test).
#
# The debootstrap result is cached as a tarball under ~/.cache/edge-agent/ (override with
# EDGE_AGENT_CACHE) because debootstrap takes minutes and the tests want a fresh root each
# run. arm64 roots need qemu-user-static and binfmt_misc; this script enables both.
set -euo pipefail

ARCH=${1:?usage: make-rootfs.sh ARCH DEST}
DEST=${2:?usage: make-rootfs.sh ARCH DEST}
EXTRA=${3:-}
SUITE=bookworm
# The host's own Debian mirror (first URIs line of its apt sources) unless DEBIAN_MIRROR says.
host_mirror() {
    local uri
    uri=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
        | grep -v security | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) {print $i; exit}}')
    if [ -z "$uri" ]; then
        echo "make-rootfs.sh: no Debian mirror in /etc/apt sources; set DEBIAN_MIRROR" >&2
        exit 1
    fi
    echo "$uri"
}
MIRROR=${DEBIAN_MIRROR:-$(host_mirror)}
CACHE=${EDGE_AGENT_CACHE:-$HOME/.cache/edge-agent}
# python3-venv for the service's venv; ca-certificates so pip can reach the index.
INCLUDE=python3,python3-venv,ca-certificates${EXTRA:+,$EXTRA}
TARBALL=$CACHE/rootfs-$SUITE-$ARCH${EXTRA:+-${EXTRA//,/-}}.tar.gz

enable_binfmt() {
    # Foreign roots run through the kernel's binfmt_misc handing ELF files to qemu.
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        update-binfmts --enable qemu-aarch64
    fi
}

build_tarball() {
    local work
    work=$(mktemp -d "${TMPDIR:-/tmp}/rootfs.XXXXXX")
    # shellcheck disable=SC2064  # expand now: the trap must remove this very directory
    trap "rm -rf '$work'" EXIT
    debootstrap --variant=minbase --arch="$ARCH" --include="$INCLUDE" \
        "$SUITE" "$work/root" "$MIRROR" >&2
    # Apt lists and caches make the tarball three times larger and nothing reads them.
    rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
    mkdir -p "$CACHE"
    tar -C "$work/root" --numeric-owner -czf "$TARBALL.part" .
    mv "$TARBALL.part" "$TARBALL"
    rm -rf "$work"
    trap - EXIT
}

if [ "$(id -u)" -ne 0 ]; then
    echo "make-rootfs.sh: must run as root (debootstrap, chroot)" >&2
    exit 1
fi
if [ -e "$DEST" ] && [ -n "$(ls -A "$DEST")" ]; then
    echo "make-rootfs.sh: $DEST exists and is not empty" >&2
    exit 1
fi
if [ "$ARCH" != "$(dpkg --print-architecture)" ]; then
    enable_binfmt
fi
[ -s "$TARBALL" ] || build_tarball
mkdir -p "$DEST"
tar -C "$DEST" --numeric-owner -xzf "$TARBALL"
# The host's CA bundle: where TLS is intercepted by a local CA, pip in the root needs it.
cp /etc/ssl/certs/ca-certificates.crt "$DEST/etc/ssl/certs/ca-certificates.crt"
echo "$DEST"
