#!/usr/bin/env bash
# End-to-end test of the extension in a real VS Code, offline: code-server (VS Code 1.100 in the
# browser) with the .vsix installed in a fresh profile, driven by Playwright in Debian's Chromium,
# serving tiny checkpoints built by the test suite's builder. Installs whatever is missing
# (apt: chromium ripgrep libkrb5-dev; npm: the extension's and this folder's packages), builds the
# .vsix, runs e2e.mjs, and stops everything it started. Exit 0 only when every check passed.
#
#   bash editors/vscode/e2e/run.sh
#
# Env: CODECOMPLETE_PYTHON (a Python with codecomplete installed; default .venv/bin/python),
#      CODECOMPLETE_E2E_ARTIFACTS (default e2e/artifacts/<time>): screenshots, report.json, logs.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EXT=$(dirname "$HERE")
REPO=$(cd "$EXT/../.." && pwd)
PYTHON=${CODECOMPLETE_PYTHON:-$REPO/.venv/bin/python}
RUN=${CODECOMPLETE_E2E_ARTIFACTS:-$HERE/artifacts/$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$RUN"
if [ -z "${CODECOMPLETE_E2E_ARTIFACTS:-}" ]; then # keep the ten newest runs
  ls -1d "$HERE"/artifacts/*/ 2>/dev/null | sort | head -n -10 | xargs -r rm -rf
fi
RUN=$(cd "$RUN" && pwd)
T0=$SECONDS
step() { printf '[vscode-e2e %4ss] %s\n' "$((SECONDS - T0))" "$*"; }
fail() { printf '[vscode-e2e] FAILED: %s (artifacts: %s)\n' "$*" "$RUN" >&2; exit 1; }

# Everything started below runs in a process group of its own and is killed by group at exit.
GROUPS_TO_KILL=()
cleanup() {
  for pgid in ${GROUPS_TO_KILL[@]+"${GROUPS_TO_KILL[@]}"}; do kill -TERM -- "-$pgid" 2>/dev/null || true; done
  sleep 1
  for pgid in ${GROUPS_TO_KILL[@]+"${GROUPS_TO_KILL[@]}"}; do kill -KILL -- "-$pgid" 2>/dev/null || true; done
  [ -z "${TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # so that cleanup runs on Ctrl-C and on a CI timeout too

# 1. System packages. ripgrep and libkrb5-dev are for code-server's install (see step 3).
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v rg >/dev/null || missing+=(ripgrep)
[ -e /usr/include/krb5.h ] || [ -e /usr/include/krb5/krb5.h ] || missing+=(libkrb5-dev)
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  timeout 600 apt-get update -qq >"$RUN/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get install -y -qq "${missing[@]}" >>"$RUN/apt.log" 2>&1 \
    || fail "apt-get install ${missing[*]} (see apt.log)"
fi
[ -x "$PYTHON" ] && "$PYTHON" -c 'import codecomplete.lsp.server' 2>/dev/null \
  || fail "$PYTHON cannot import codecomplete.lsp: pip install -e '$REPO' there, or set CODECOMPLETE_PYTHON"

# 2. The extension: exact packages from package-lock.json (npm ci again only when the lock file
#    changed since the last run here), its unit tests, then typecheck + bundle + .vsix.
step "npm ci, npm test, npm run package (editors/vscode)"
if ! cmp -s "$EXT/package-lock.json" "$EXT/node_modules/.codecomplete-lock"; then
  (cd "$EXT" && timeout 1200 npm ci --no-audit --no-fund) >"$RUN/npm-ci.log" 2>&1 || fail "npm ci in editors/vscode (see npm-ci.log)"
  cp "$EXT/package-lock.json" "$EXT/node_modules/.codecomplete-lock"
fi
(cd "$EXT" && timeout 300 npm test) >"$RUN/unit-tests.log" 2>&1 || { tail -n 40 "$RUN/unit-tests.log"; fail "npm test (see unit-tests.log)"; }
grep -E '^# (pass|fail) ' "$RUN/unit-tests.log" | sed 's/^/  unit tests: /'
(cd "$EXT" && timeout 300 npm run package) >"$RUN/package.log" 2>&1 || fail "npm run package (see package.log)"
VSIX=$EXT/codecomplete.vsix

# 3. code-server and playwright-core, pinned by e2e/package-lock.json; installed again only when
#    the lock file changes. code-server's install needs three things here: unsafe-perm (its
#    postinstall refuses root), yes (node-pty runs `npx node-gyp`), and a ripgrep tarball in
#    $TMPDIR, which @vscode/ripgrep would otherwise download from GitHub.
stamp=$HERE/node_modules/.codecomplete-e2e-lock
if ! cmp -s "$HERE/package-lock.json" "$stamp" 2>/dev/null; then
  step "npm ci (code-server, playwright-core): a minute or two"
  tmp=$HERE/node_modules.tmp
  rm -rf "$tmp" && mkdir -p "$tmp/vscode-ripgrep-cache-1.15.11" "$tmp/rg"
  cp "$(command -v rg)" "$tmp/rg/rg"
  tar czf "$tmp/vscode-ripgrep-cache-1.15.11/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz" -C "$tmp/rg" rg
  (cd "$HERE" && TMPDIR="$tmp" npm_config_unsafe_perm=true npm_config_yes=true timeout 1200 npm ci --no-audit --no-fund) \
    >"$RUN/code-server-install.log" 2>&1 || fail "installing code-server (see code-server-install.log)"
  rm -rf "$tmp"
  cp "$HERE/package-lock.json" "$stamp"
fi
CODE_SERVER=$HERE/node_modules/.bin/code-server

# 4. Tiny checkpoints, a fresh profile and workspace, and Python files for the adaptation.
step "checkpoints, profile"
OMP_NUM_THREADS=1 "$PYTHON" "$HERE/build_checkpoints.py" "$RUN/checkpoints" >/dev/null 2>"$RUN/checkpoints.log" \
  || fail "building checkpoints (see checkpoints.log)"
mkdir -p "$RUN/user/User" "$RUN/ws" "$RUN/shots"
"$PYTHON" - "$RUN/project" "$REPO/tests" <<'PY' || fail "writing the project to adapt to"
import random, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from conftest import synthetic_module  # the test suite's plausible Python
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for i in range(8):
    (out / f"mod{i}.py").write_text(synthetic_module(random.Random(500 + i)))
PY
printf '"""Helpers for a synthetic module."""\nimport json\nimport os\n\n\ndef parse_line_7(path, items=None):\n    """Return the path for items."""\n    items = items or {}\n    for i in ' >"$RUN/ws/sample.py"
cat >"$RUN/user/User/settings.json" <<JSON
{
  "codecomplete.server.pythonPath": "$PYTHON",
  "codecomplete.checkpoint": "$RUN/checkpoints/a",
  "codecomplete.minScore": -100, "codecomplete.threads": 1, "codecomplete.timeoutMs": 10000,
  "codecomplete.acceptanceLogPath": "$RUN/acceptance.jsonl",
  "workbench.startupEditor": "none", "workbench.tips.enabled": false, "workbench.enableExperiments": false,
  "security.workspace.trust.enabled": false, "telemetry.telemetryLevel": "off", "git.enabled": false,
  "extensions.autoUpdate": false, "extensions.autoCheckUpdates": false, "update.mode": "none",
  "files.hotExit": "off", "editor.inlineSuggest.enabled": true,
  "editor.quickSuggestions": { "other": false, "comments": false, "strings": false }
}
JSON
# code-server and Chromium write into ~/.config and /tmp unless told otherwise; TMPDIR stays
# short, as it holds Unix sockets (at most 107 bytes a path)
TMP=$(mktemp -d /tmp/cc-e2e.XXXXXX)
export XDG_CONFIG_HOME=$RUN/xdg-config XDG_DATA_HOME=$RUN/xdg-data TMPDIR=$TMP OMP_NUM_THREADS=1

# 5. Install the .vsix into the fresh profile; start code-server in its own process group.
step "install the .vsix, start code-server"
"$CODE_SERVER" --user-data-dir "$RUN/user" --extensions-dir "$RUN/ext" --install-extension "$VSIX" >"$RUN/install.log" 2>&1 \
  || fail "code-server --install-extension (see install.log)"
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
setsid "$CODE_SERVER" --auth none --bind-addr "127.0.0.1:$PORT" --disable-telemetry --disable-update-check \
  --disable-workspace-trust --disable-getting-started-override --user-data-dir "$RUN/user" --extensions-dir "$RUN/ext" \
  "$RUN/ws" >"$RUN/code-server.log" 2>&1 </dev/null &
GROUPS_TO_KILL+=($!)
for _ in $(seq 1 300); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null && break; sleep 0.1; done
curl -fsS -o /dev/null "http://127.0.0.1:$PORT/healthz" || fail "code-server did not come up (see code-server.log)"

# 6. The UI test, in its own process group too (Chromium goes with it).
step "Playwright + Chromium drive VS Code"
rc=0
setsid timeout 600 node "$HERE/e2e.mjs" "http://127.0.0.1:$PORT/?folder=$RUN/ws" "$RUN" </dev/null >"$RUN/report.line" 2>"$RUN/e2e.log" &
GROUPS_TO_KILL+=($!)
wait $! || rc=$?
grep -E '^\[vscode-e2e.*(PASS|FAIL)' "$RUN/e2e.log" || true
step "done: rc=$rc, artifacts in $RUN"
# the closing line CI reads: N passed, N failed
node -e 'let r = {}; try { r = require(process.argv[1]); } catch {}
  const checks = r.checks ?? []; const passed = checks.filter((c) => c.ok).length;
  console.log(`vscode-e2e: ${passed} passed, ${checks.length - passed + (r.ok ? 0 : checks.every((c) => c.ok) ? 1 : 0)} failed`);' "$RUN/report.json"
[ "$rc" -eq 0 ] || fail "UI checks (see e2e.log, report.json, shots/)"
