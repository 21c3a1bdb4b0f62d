#!/usr/bin/env bash
# Runs the whole test suite, as the README tells developers to: installs the pinned nats-server the
# tests start (a no-op when it is already there), then `cargo test` over the workspace. Arguments are
# passed on to `cargo test`, e.g. `scripts/test.sh restart` runs only tests whose name contains
# "restart", and `scripts/test.sh -- --nocapture` shows their output.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-nats-server.sh
# --locked: the tests must pass with the committed Cargo.lock, not with whatever resolves today.
exec cargo test --workspace --locked "$@"
