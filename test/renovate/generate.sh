#!/usr/bin/env bash
# Regenerates test/renovate/fixtures/: runs real Renovate (lookup only) against the fleet in
# test/renovate/fleet/, with every registry it asks served by servers.py on 127.0.0.1 and
# everything else refused by a deny-all proxy, and stores what Renovate wrote, untouched.
#
#   test/renovate/generate.sh            # both runs: platform local and platform gitea
#   FLUXGATE_RENOVATE_HOME=/some/dir ... # where Renovate is installed (default: .cache/)
#
# Needs node >= 20 with npm (the registry is used only to install Renovate), python3 and git.
set -euo pipefail

RENOVATE_VERSION=39.264.1
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FIXTURES="$HERE/fixtures"
RENOVATE_HOME="${FLUXGATE_RENOVATE_HOME:-$HERE/.cache}"
# A fixed path (not mktemp): Renovate writes its working directories into the log, and
# fixed ones keep regenerated logs comparable.
WORK="${TMPDIR:-/tmp}/fluxgate-renovate-fixtures"
PROXY=http://127.0.0.1:45604
GITEA=http://127.0.0.1:45605

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- Renovate itself -------------------------------------------------------------------
installed="$(node -p "try { require('$RENOVATE_HOME/node_modules/renovate/package.json').version } catch { '' }")"
if [[ "$installed" != "$RENOVATE_VERSION" ]]; then
  log "installing renovate@$RENOVATE_VERSION into $RENOVATE_HOME"
  mkdir -p "$RENOVATE_HOME"
  npm install --prefix "$RENOVATE_HOME" --no-audit --no-fund --no-save \
    "renovate@$RENOVATE_VERSION" >&2
fi
RENOVATE="$RENOVATE_HOME/node_modules/renovate/dist/renovate.js"

# --- scratch space and servers, removed on any exit ------------------------------------
servers_pid=""
cleanup() {
  if [[ -n "$servers_pid" ]] && kill -0 "$servers_pid" 2>/dev/null; then
    kill "$servers_pid"
    wait "$servers_pid" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
rm -rf "$WORK"
mkdir -p "$WORK/git" "$WORK/home" "$FIXTURES"

# Commits with fixed identities and dates, so the repositories' hashes never change.
export GIT_AUTHOR_NAME="Fleet Owner" GIT_AUTHOR_EMAIL="owner@fleet.invalid"
export GIT_COMMITTER_NAME="Fleet Owner" GIT_COMMITTER_EMAIL="owner@fleet.invalid"
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
at() { GIT_AUTHOR_DATE="$1" GIT_COMMITTER_DATE="$1" "${@:2}"; }

# The Git repository the fleet's GitRepository follows by tag, one commit per tag.
log "building the Git repositories"
config_repo="$WORK/platform-config"
git init -q -b main "$config_repo"
python3 -c '
import json, sys
tags = json.load(open(sys.argv[1]))["git"]["platform-config"]
for tag, meta in sorted(tags.items(), key=lambda kv: kv[1]["created"]):
    print(tag, meta["created"])
' "$HERE/packages.json" | while read -r tag created; do
  echo "release: $tag" > "$config_repo/VERSION"
  git -C "$config_repo" add VERSION
  at "$created" git -C "$config_repo" commit -q -m "Release $tag"
  at "$created" git -C "$config_repo" tag -a -m "$tag" "$tag"
done
git clone -q --bare "$config_repo" "$WORK/git/platform-config.git"

# The fleet: a checkout for the local run, and the same commit served as Gitea's
# home/fleet for the named run.
fleet="$WORK/fleet"
cp -R "$HERE/fleet" "$fleet"
git -C "$fleet" init -q -b main
git -C "$fleet" add -A
at "2025-06-01T00:00:00Z" git -C "$fleet" commit -q -m "Fleet for Renovate's fixtures"
mkdir -p "$WORK/git/home"
git clone -q --bare "$fleet" "$WORK/git/home/fleet.git"

requests="$WORK/requests.ndjson"
: > "$requests"
python3 "$HERE/servers.py" serve --git-root "$WORK/git" --request-log "$requests" \
  > "$WORK/servers.out" 2>&1 &
servers_pid=$!
for _ in $(seq 100); do
  grep -q '^ready$' "$WORK/servers.out" && break
  kill -0 "$servers_pid" 2>/dev/null || { cat "$WORK/servers.out" >&2; exit 1; }
  sleep 0.1
done
grep -q '^ready$' "$WORK/servers.out" || { log "servers did not start"; exit 1; }

# --- Renovate runs -----------------------------------------------------------------------
# Only what Renovate needs: no token or setting of the machine's own leaks in.
run_renovate() {
  local name="$1" dir="$2"
  shift 2
  log "renovate ($name)"
  local started=$SECONDS status=0
  (
    cd "$dir"
    env -i PATH="$PATH" HOME="$WORK/home" TZ=UTC LANG=C.UTF-8 \
      HTTP_PROXY="$PROXY" HTTPS_PROXY="$PROXY" http_proxy="$PROXY" https_proxy="$PROXY" \
      NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost \
      GIT_CONFIG_NOSYSTEM=1 \
      LOG_LEVEL=debug LOG_FORMAT=json \
      RENOVATE_CONFIG_FILE="$HERE/config.js" \
      RENOVATE_BASE_DIR="$WORK/renovate-$name" \
      FIXTURE_REPORT_PATH="$FIXTURES/$name.report.json" \
      "$@" node "$RENOVATE"
  ) > "$FIXTURES/$name.log.ndjson" || status=$?
  log "renovate ($name) exited $status after $((SECONDS - started))s"
  if [[ $status -ne 0 ]]; then
    grep '"level":[56]0' "$FIXTURES/$name.log.ndjson" >&2 || true
    exit "$status"
  fi
  # Renovate logs, but does not fail on, a lookup it could not make: those would make
  # fixtures with silently missing updates. One warning is expected: re2 (a native
  # module) has no prebuilt binary for every platform, and Renovate falls back to
  # JavaScript regular expressions, which changes nothing in what it finds.
  python3 - "$FIXTURES/$name.log.ndjson" <<'PY'
"""Fails on a Renovate log line at warn level or above, other than the re2 fallback."""
import json, sys
expected = {"RE2 not usable, falling back to RegExp"}
bad = [line for line in open(sys.argv[1])
       if json.loads(line).get("level", 0) >= 40 and json.loads(line).get("msg") not in expected]
if bad:
    sys.stderr.write("renovate logged warnings or errors:\n" + "".join(bad))
    sys.exit(1)
PY
}

rm -f "$FIXTURES"/*.report.json "$FIXTURES"/*.log.ndjson
run_renovate local "$fleet" RENOVATE_PLATFORM=local
run_renovate gitea "$WORK" RENOVATE_PLATFORM=gitea RENOVATE_ENDPOINT="$GITEA/api/v1" \
  RENOVATE_TOKEN=fixture-token RENOVATE_REPOSITORIES=home/fleet \
  RENOVATE_GIT_AUTHOR="Renovate Bot <renovate@fleet.invalid>"

# --- what happened -----------------------------------------------------------------------
python3 - "$requests" "$FIXTURES" <<'EOF'
"""Summarises the run: requests per server, anything the proxy refused, findings per
manager in each report."""
import collections, glob, json, os, sys

requests = [json.loads(line) for line in open(sys.argv[1])]
per_server = collections.Counter(r["server"] for r in requests)
print("requests:", dict(sorted(per_server.items())), file=sys.stderr)
for r in requests:
    if r["server"] == "proxy" or r["status"] >= 400:
        print("  refused/missing:", r, file=sys.stderr)
for path in sorted(glob.glob(os.path.join(sys.argv[2], "*.report.json"))):
    report = json.load(open(path))
    for repository, entry in report["repositories"].items():
        for manager, files in entry["packageFiles"].items():
            deps = [d for f in files for d in f["deps"]]
            updates = collections.Counter(u["updateType"] for d in deps
                                          for u in d.get("updates", []))
            print(f"{os.path.basename(path)} [{repository}] {manager}: {len(files)} files, "
                  f"{len(deps)} deps, updates {dict(sorted(updates.items()))}",
                  file=sys.stderr)
EOF
if grep -q '"server": "proxy"' "$requests"; then
  log "Renovate tried to leave 127.0.0.1 (see above); the fixtures may miss data"
  exit 1
fi
log "fixtures written to $FIXTURES"
