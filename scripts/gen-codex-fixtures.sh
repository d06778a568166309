#!/usr/bin/env bash
# Regenerates the real Codex CLI fixtures in crates/baton-cli/tests/fixtures/codex-home/.
#
# What it does:
#   1. Gets the Codex CLI: $CODEX if set, else `npm install @openai/codex@$CODEX_VERSION` into a
#      throwaway prefix (the npm package ships the native binary; nothing is installed globally).
#   2. Builds and starts the standalone scripted model server
#      (crates/baton-test-support/src/bin/scripted-model-server.rs), which prints its base URL.
#   3. Writes a throwaway CODEX_HOME whose config.toml points a `scripted` provider
#      (wire_api = "responses") at that server, with a dummy API key in the environment.
#   4. Runs `codex exec` / `codex exec resume` in a throwaway project directory to make three
#      sessions (prompts follow the scripted server's conventions: `shell: CMD` makes the model
#      call Codex's shell tool `exec_command`):
#        shell       one turn with a shell tool call and its output
#        multi_turn  exec, then two `codex exec resume` turns (the last with a shell call)
#        compacted   a turn followed by Codex's post-turn compaction (forced by a tiny
#                    model_context_window and model_post_turn_compact_threshold_percent),
#                    then a `codex exec resume` turn after the compaction
#   5. Replaces the fixture directory with Codex's `sessions/` tree and its `state_5.sqlite`
#      index, and writes `fixtures.json` (which id is which session) and README.md.
#
# Usage: scripts/gen-codex-fixtures.sh [OUTPUT_DIR]
#   CODEX=/path/to/codex     use this Codex binary instead of installing one
#   CODEX_VERSION=0.169.0    the npm version to install (default below)
#   KEEP_WORK=1              keep the temporary directory (for inspecting requests.jsonl)
#
# The tests copy the fixture home into a temporary directory, so the absolute paths Codex
# recorded (project cwd, rollout_path in the index) are deliberately stale there.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out_dir=${1:-$repo_root/crates/baton-cli/tests/fixtures/codex-home}
codex_version=${CODEX_VERSION:-0.169.0}

work=$(mktemp -d "${TMPDIR:-/tmp}/baton-codex-fixtures.XXXXXX")
server_pid=""
cleanup() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ -z ${KEEP_WORK:-} ]]; then
        rm -rf "$work"
    else
        echo "kept $work" >&2
    fi
}
trap cleanup EXIT

# 1. The Codex CLI.
if [[ -n ${CODEX:-} ]]; then
    codex=$CODEX
else
    echo "installing @openai/codex@$codex_version into $work/npm" >&2
    npm install --silent --no-audit --no-fund --prefix "$work/npm" "@openai/codex@$codex_version" >&2
    codex=$work/npm/node_modules/.bin/codex
fi
codex_version_line=$("$codex" --version)
echo "using $codex_version_line" >&2

# 2. The scripted model server.
(cd "$repo_root" && cargo build --quiet -p baton-test-support --bin scripted-model-server)
server_bin=$repo_root/target/debug/scripted-model-server
"$server_bin" --log "$work/requests.jsonl" >"$work/server-url" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do
    [[ -s $work/server-url ]] && break
    sleep 0.1
done
base_url=$(head -n1 "$work/server-url")
[[ $base_url == http://* ]] || { echo "the scripted server did not start" >&2; exit 1; }

# 3. A throwaway Codex home and project.
export CODEX_HOME=$work/codex-home
export SCRIPTED_API_KEY=dummy-key-not-a-secret
project=$work/project
mkdir -p "$CODEX_HOME" "$project"
cat >"$CODEX_HOME/config.toml" <<EOF
model = "scripted-model"
model_provider = "scripted"
approval_policy = "never"
# Codex's own sandbox may be unavailable where this runs (containers); the commands are echoes.
sandbox_mode = "danger-full-access"

[model_providers.scripted]
name = "scripted"
base_url = "$base_url"
wire_api = "responses"
env_key = "SCRIPTED_API_KEY"
EOF

# Runs codex exec with the given arguments in the project; prints the thread id.
run_codex() {
    local events
    events=$(cd "$project" && "$codex" exec --skip-git-repo-check --json "$@" </dev/null 2>>"$work/codex.log")
    printf '%s\n' "$events" >>"$work/events.jsonl"
    if grep -q '"type":"turn.failed"' <<<"$events"; then
        echo "codex turn failed: $events" >&2
        exit 1
    fi
    sed -n 's/.*"type":"thread.started","thread_id":"\([^"]*\)".*/\1/p' <<<"$events" | head -n1
}

# 4. The sessions.
shell_id=$(run_codex "shell: echo hello from codex")

multi_id=$(run_codex "first question")
run_codex resume "$multi_id" "second question" >/dev/null
run_codex resume "$multi_id" "shell: echo third turn" >/dev/null

compacted_id=$(run_codex -c model_context_window=40000 -c model_post_turn_compact_threshold_percent=10 \
    "before compaction")
run_codex resume "$compacted_id" "after compaction" >/dev/null

for id in "$shell_id" "$multi_id" "$compacted_id"; do
    [[ -n $id ]] || { echo "a codex run printed no thread id" >&2; exit 1; }
done
grep -q '"type":"compacted"' "$CODEX_HOME"/sessions/*/*/*/rollout-*"$compacted_id".jsonl ||
    { echo "codex did not compact session $compacted_id" >&2; exit 1; }

# 5. The fixtures: Codex's sessions tree and index, nothing else (no installation id, no logs).
if [[ -e $CODEX_HOME/state_5.sqlite-wal && -s $CODEX_HOME/state_5.sqlite-wal ]]; then
    echo "state_5.sqlite still has a write-ahead log; rerun" >&2
    exit 1
fi
rm -rf "$out_dir"
mkdir -p "$out_dir"
cp -R "$CODEX_HOME/sessions" "$out_dir/sessions"
cp "$CODEX_HOME/state_5.sqlite" "$out_dir/state_5.sqlite"
generated=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cat >"$out_dir/fixtures.json" <<EOF
{
  "codex_version": "$codex_version_line",
  "generated": "$generated",
  "recorded_project_dir": "$project",
  "recorded_codex_home": "$CODEX_HOME",
  "sessions": {
    "shell": "$shell_id",
    "multi_turn": "$multi_id",
    "compacted": "$compacted_id"
  }
}
EOF
cat >"$out_dir/README.md" <<EOF
# Real Codex CLI fixtures

Generated by \`scripts/gen-codex-fixtures.sh\` with **$codex_version_line** on $generated,
running the real Codex CLI (npm \`@openai/codex\`) against baton's scripted model server
(\`cargo run -p baton-test-support --bin scripted-model-server\`). Do not edit by hand:
regenerate with

    scripts/gen-codex-fixtures.sh            # installs @openai/codex@\$CODEX_VERSION under /tmp
    CODEX=\$(which codex) scripts/gen-codex-fixtures.sh   # or use an installed codex

and update the expectations in \`crates/baton-cli/tests/codex_interop.rs\` if Codex changed
what it records. CI only reads these files; it needs no Codex install.

Contents (ids in \`fixtures.json\`):

| session | made by |
|---|---|
| \`shell\` ($shell_id) | \`codex exec "shell: echo hello from codex"\`: one \`exec_command\` call and its output |
| \`multi_turn\` ($multi_id) | \`codex exec "first question"\`, then \`codex exec resume ID "second question"\` and \`codex exec resume ID "shell: echo third turn"\` (one file) |
| \`compacted\` ($compacted_id) | \`codex exec "before compaction"\` with a forced post-turn compaction (\`compacted\` line with \`replacement_history\`), then \`codex exec resume ID "after compaction"\` |

\`state_5.sqlite\` is Codex's own thread index from the same run. Its \`rollout_path\` values and
the cwd recorded in the transcripts point into the temporary directories of that run
(\`$CODEX_HOME\`, \`$project\`), which no longer exist: the tests copy this tree into a temporary
\`codex_home\` and pass \`--cd\`, so baton must fall back from the stale index paths to the
file-name scan, as with a moved Codex home. The API key used was a dummy value; no secret
or installation id is included.
EOF
echo "wrote fixtures to $out_dir:" >&2
find "$out_dir" -type f | sort >&2
