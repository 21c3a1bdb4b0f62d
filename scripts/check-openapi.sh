#!/usr/bin/env bash
# Validates the HTTP API's OpenAPI document with a real validator: installs the pinned
# `openapi-spec-validator` from PyPI into tools/openapi-validator (a no-op when it is there), prints
# the document with `jetway-server openapi` (what /openapi.json serves) into
# target/openapi.json, and validates it. The dev build is reused when CI's tests built it already.
set -euo pipefail

VALIDATOR_VERSION="${OPENAPI_SPEC_VALIDATOR_VERSION:-0.9.0}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$root/tools/openapi-validator/$VALIDATOR_VERSION"

if [ ! -d "$target/openapi_spec_validator" ]; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        --target "$target" "openapi-spec-validator==$VALIDATOR_VERSION"
fi
cd "$root"
cargo run --quiet --locked -p jetway-server -- openapi > target/openapi.json
PYTHONPATH="$target" python3 -m openapi_spec_validator target/openapi.json
