#!/usr/bin/env bash
# Runs jetway-server on the local default, as the README's first command: installs the pinned
# nats-server when it is missing (the server starts and supervises it because NATS_URL is unset), then
# builds and runs the release binary. Arguments go to cargo; the environment configures the server.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-nats-server.sh
exec cargo run --release --locked -p jetway-server "$@"
