#!/usr/bin/env bash
# Runs examples/python-agent/agent.py against the gateway `npm start` is serving: finds the newest
# demo data directory (.data/demo/<timestamp>), its gateway and registry addresses (from their logs),
# enrols a Python planner and worker once through the registry CLI (`agent register --json`: the CLI
# writes each key file, mode 0600), and runs the two agents.
#
#   terminal 1:  npm start
#   terminal 2:  examples/python-agent/run.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PARLEY_PYTHON:-/usr/bin/python3}"
demo="${1:-$(ls -d "$root"/.data/demo/*/ 2>/dev/null | sort | tail -1)}"
demo="${demo%/}"
[ -n "$demo" ] && [ -f "$demo/gateway.log" ] || { echo "run.sh: no demo found under .data/demo: start one with 'npm start' first" >&2; exit 1; }

# The last ready line of each child (the demo restarts the gateway once, on the same address).
gateway="$(grep '"ready":true' "$demo/gateway.log" | tail -1 | "$python" -c 'import json,sys; print(json.loads(sys.stdin.read())["address"])')"
registry_port="$(grep '"msg":"listening"' "$demo/registry.log" | tail -1 | "$python" -c 'import json,sys; print(json.loads(sys.stdin.read())["port"])')"
registry="127.0.0.1:$registry_port"
out="$demo/python-agent"
mkdir -p -m 700 "$out"

enrol() { # AGENT_ID TYPE
  if [ ! -s "$out/$1.cert.json" ]; then
    (cd "$root" && npm run --silent registry -- agent register "$1" --type "$2" --json \
       --key-file "$out/$1.key.json" --data-dir "$demo/registry" --server "$registry") > "$out/$1.cert.json.tmp"
    mv "$out/$1.cert.json.tmp" "$out/$1.cert.json"
  fi
}
enrol py-planner planner
enrol py-worker worker

exec "$python" "$root/examples/python-agent/agent.py" \
  --gateway "$gateway" --gateway-id parley-demo --trust-bundle "$demo/gateway/trust-bundle.json" \
  --planner "$out/py-planner.key.json" "$out/py-planner.cert.json" \
  --worker "$out/py-worker.key.json" "$out/py-worker.cert.json" \
  --state-dir "$out/state"
