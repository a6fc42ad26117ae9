#!/usr/bin/env bash
# Autobahn TestSuite against agentwire-ws (examples built with the `deflate` feature), in both
# roles, via kosoku.
#
# usage: scripts/autobahn.sh [server|client|both] [--full] [--update]
#   server  kosoku -m fuzzingclient drives examples/echo_std (and echo_tokio with ECHO=echo_tokio)
#   client  kosoku -m fuzzingserver is driven by examples/client
#   (default) sections 1-10 plus the compression subset 12.1-12.5 and 13.1-13.7, cases 1-4 of
#             each (1000 messages of 16 B to 1 KiB per case, every negotiation variant): ~2 min
#   --full    sections 1-13, all 517 cases (12.* and 13.* take ~10 min per role here)
#   --update  write this run's verdicts into the golden file ws-codec/autobahn/expected-results.json
#
# Verdicts per case are compared with the golden file (for the cases this run selected); exit 1
# on any FAILED/ERROR/UNCLEAN case, any difference from the golden verdicts (OK / NON-STRICT /
# INFORMATIONAL), or a selected golden case that did not run.
# Env: KOSOKU (default .venv/bin/kosoku, installed on first use), ECHO (echo_std), PORT_SERVER
# (9301), PORT_CLIENT (9302), TARGET_DIR (cargo target dir), OUT (reports dir, default
# target/autobahn).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mode="${1:-both}"
update=0
full=0
for a in "${@:2}"; do
  case "$a" in
    --update) update=1 ;;
    --full) full=1 ;;
    *) echo "unknown argument $a"; exit 2 ;;
  esac
done
KOSOKU="${KOSOKU:-$root/.venv/bin/kosoku}"
PY="$root/.venv/bin/python"
ECHO="${ECHO:-echo_std}"
PORT_SERVER="${PORT_SERVER:-9301}"
PORT_CLIENT="${PORT_CLIENT:-9302}"
TARGET_DIR="${TARGET_DIR:-${CARGO_TARGET_DIR:-$root/target}}"
OUT="${OUT:-$root/target/autobahn}"
golden="$root/ws-codec/autobahn/expected-results.json"
cases=(-i '1.*' -i '2.*' -i '3.*' -i '4.*' -i '5.*' -i '6.*' -i '7.*' -i '9.*' -i '10.*')
if [ "$full" = 1 ]; then
  cases+=(-i '12.*' -i '13.*')
else
  for s in 1 2 3 4 5; do for c in 1 2 3 4; do cases+=(-i "12.$s.$c"); done; done
  for s in 1 2 3 4 5 6 7; do for c in 1 2 3 4; do cases+=(-i "13.$s.$c"); done; done
fi
patterns=()
for ((i = 1; i < ${#cases[@]}; i += 2)); do patterns+=("${cases[$i]}"); done

if [ ! -x "$KOSOKU" ]; then
  echo "== installing kosoku into .venv"
  [ -x "$PY" ] || python3 -m venv "$root/.venv"
  "$root/.venv/bin/pip" install -q --disable-pip-version-check kosoku==0.1.0
fi
echo "== building examples (release)"
CARGO_TARGET_DIR="$TARGET_DIR" cargo build -q --release -p agentwire-ws --features deflate --example "$ECHO" --example client || exit 1
bin="$TARGET_DIR/release/examples"
mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

run_server() {
  "$bin/$ECHO" "127.0.0.1:$PORT_SERVER" 2>"$OUT/echo.log" &
  pids+=($!)
  wait_port "$PORT_SERVER" || { echo "echo server did not start"; return 2; }
  echo "== kosoku fuzzingclient -> $ECHO (${patterns[*]})"
  rm -rf "$OUT/servers"
  timeout 1800 "$KOSOKU" -m fuzzingclient -p 2 -o "$OUT/servers" "${cases[@]}" "127.0.0.1:$PORT_SERVER" >"$OUT/servers.log" 2>&1
  [ -s "$OUT/servers/index.json" ] || { echo "no report; see $OUT/servers.log"; tail -5 "$OUT/servers.log"; return 2; }
}

run_client() {
  echo "== kosoku fuzzingserver <- examples/client (${patterns[*]})"
  rm -rf "$OUT/clients"
  timeout 2400 "$KOSOKU" -m fuzzingserver -o "$OUT/clients" "${cases[@]}" "127.0.0.1:$PORT_CLIENT" >"$OUT/clients.log" 2>&1 &
  local k=$!
  pids+=($k)
  wait_port "$PORT_CLIENT" || { echo "kosoku did not start"; return 2; }
  "$bin/client" "ws://127.0.0.1:$PORT_CLIENT" agentwire-ws 2>"$OUT/client.log"
  wait "$k"
  [ -s "$OUT/clients/index.json" ] || { echo "no report; see $OUT/clients.log"; tail -5 "$OUT/clients.log"; return 2; }
}

rc=0
reports=()
if [ "$mode" = server ] || [ "$mode" = both ]; then run_server || rc=2; reports+=("server=$OUT/servers/index.json"); fi
if [ "$mode" = client ] || [ "$mode" = both ]; then run_client || rc=2; reports+=("client=$OUT/clients/index.json"); fi
[ "$rc" = 0 ] || exit "$rc"

"$PY" - "$golden" "$update" "${patterns[*]}" "${reports[@]}" <<'PYEOF'
import json, sys
from collections import Counter
from fnmatch import fnmatchcase
golden_path, update, patterns, reports = sys.argv[1], sys.argv[2] == "1", sys.argv[3].split(), sys.argv[4:]
selected = lambda c: any(fnmatchcase(c, p) for p in patterns)
PASS = {"OK", "NON-STRICT", "INFORMATIONAL"}
key = lambda c: [int(x) for x in c.split(".")]
try:
    golden = json.load(open(golden_path))
except FileNotFoundError:
    golden = {}
bad = 0
for spec in reports:
    role, path = spec.split("=", 1)
    index = json.load(open(path))
    cases = {}
    for agent, cs in index.items():
        cases.update(cs)
    verdicts = {}
    for cid in sorted(cases, key=key):
        c = cases[cid]
        v = c["behavior"]
        if v in PASS and c["behaviorClose"] in ("FAILED", "UNCLEAN"):
            v = "FAILED(close)"
        verdicts[cid] = v
    cnt = Counter(verdicts.values())
    print(f"{role}: {len(verdicts)} cases: " + ", ".join(f"{k} {n}" for k, n in sorted(cnt.items())))
    failed = [c for c, v in verdicts.items() if v not in PASS]
    if failed:
        bad += 1
        print(f"  not passing ({len(failed)}): " + ", ".join(f"{c}={verdicts[c]}" for c in failed[:40]))
    if update:
        golden.setdefault(role, {}).update(verdicts)
        continue
    want = golden.get(role)
    if want is None:
        bad += 1
        print(f"  no golden verdicts for {role} in {golden_path}")
        continue
    want = {c: v for c, v in want.items() if selected(c)}
    # OK and NON-STRICT can flip on timing (Autobahn's fail-fast cases); other changes are regressions
    soft = {"OK", "NON-STRICT"}
    diffs = [c for c in sorted(set(want) | set(verdicts), key=key)
             if want.get(c) != verdicts.get(c) and not {want.get(c), verdicts.get(c)} <= soft]
    if diffs:
        bad += 1
        print(f"  differs from golden ({len(diffs)}): " + ", ".join(f"{c}: {want.get(c)} -> {verdicts.get(c)}" for c in diffs[:40]))
    else:
        print("  matches golden")
if update:
    json.dump(golden, open(golden_path, "w"), indent=1, sort_keys=True)
    print(f"wrote {golden_path}")
sys.exit(1 if bad else 0)
PYEOF
