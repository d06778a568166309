#!/usr/bin/env bash
# Runs the MCP project's conformance suite (server scenarios, over Streamable HTTP) against
# `baton mcp-server --listen 127.0.0.1:0`, for both protocol eras.
#
# Node 22 comes from the npm registry (the `node` package), because the suite needs
# `fs.globSync` and machines here ship Node 20. Both are pinned; they install into
# target/conformance-tools, so a second run needs no network.
#
# Scenarios that cannot apply to baton (fixture tools, prompts and resources the suite expects
# every server to expose) are listed, each with its reason, in conformance/baseline-*.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_VERSION=22.23.3
CONFORMANCE_VERSION=0.2.0-alpha.12
tools=target/conformance-tools
# `.ci/run` has just built the binary with `cargo test`; building again is a no-op then.
baton=${BATON_BIN:-${CARGO_TARGET_DIR:-target}/debug/baton}

pins="node@$NODE_VERSION @modelcontextprotocol/conformance@$CONFORMANCE_VERSION"
if [ "$(cat "$tools/pins" 2>/dev/null || true)" != "$pins" ] \
  || [ ! -x "$tools/node_modules/.bin/conformance" ] || [ ! -x "$tools/node_modules/.bin/node" ]; then
  rm -rf "$tools"
  mkdir -p "$tools"
  echo '{"private": true}' >"$tools/package.json"
  # shellcheck disable=SC2086 # two package specs
  (cd "$tools" && npm install --no-audit --no-fund --loglevel=error $pins)
  echo "$pins" >"$tools/pins"
fi
export PATH="$PWD/$tools/node_modules/.bin:$PATH"
echo "conformance $CONFORMANCE_VERSION on node $(node --version)"

[ -n "${BATON_BIN:-}" ] || cargo build --locked -p baton-cli --bin baton
work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A private BATON_HOME: no tokens (loopback only), no model needed for these scenarios.
mkdir -m 700 "$work/home"
start_server() {
  BATON_HOME="$work/home" "$baton" mcp-server --listen 127.0.0.1:0 2>"$work/stderr" &
  server_pid=$!
  for _ in $(seq 1 200); do
    url=$(grep -o 'http://[^ ]*/mcp' "$work/stderr" 2>/dev/null | head -n1 || true)
    [ -n "$url" ] && return 0
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/stderr" >&2; return 1; }
    sleep 0.1
  done
  echo "baton did not print its listening line" >&2
  return 1
}

status=0
for era in 2025-11-25 2026-07-28; do
  start_server
  echo "== conformance, requirements $era, against $url"
  # The suite exits non-zero on a failure not in the baseline, and on a baseline entry that
  # now passes (so the baseline stays exact).
  suite=0
  conformance server --url "$url" --requirements "$era" \
    --expected-failures "conformance/baseline-$era.yaml" -o "$work/results-$era" \
    >"$work/out-$era.txt" 2>&1 || suite=$?
  # The summary, without the per-scenario progress lines.
  sed -n '/=== SUMMARY ===/,$p' "$work/out-$era.txt"
  if [ "$suite" -eq 0 ]; then
    echo "conformance $era: passed (failures all in conformance/baseline-$era.yaml)"
  else
    echo "conformance $era: FAILED (exit $suite); full output follows"
    cat "$work/out-$era.txt"
    status=1
  fi
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
done
exit $status
