#!/usr/bin/env bash
# The demo `make demo` runs: sample plug-ins built from source, run through the
# hostwire CLI, and hostile plug-ins contained by their limits.
set -uo pipefail
cd "$(dirname "$0")/.."
HW=".venv/bin/hostwire"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; printf '(exit status %s)\n' "$?"; }

echo "hostwire demo: Extism plug-ins with limits that always hold, then lightcontrol."
step $HW plugin inspect sample_plugins/count_vowels/build/plugin.wasm
step $HW plugin call sample_plugins/count_vowels/build/plugin.wasm count_vowels --input "Hello, hostwire!"
step $HW plugin call sample_plugins/count_vowels/build/plugin.wasm count_vowels --input "Hello, hostwire!" --config vowels=lw
echo
echo "An AssemblyScript plug-in calling lightcontrol's API through host functions made from"
echo "openapi/light.yaml (in process, with a throw-away database):"
step $HW plugin inspect sample_plugins/cycle_color/build/plugin.wasm --spec openapi/light.yaml
step $HW plugin call sample_plugins/cycle_color/build/plugin.wasm run --spec openapi/light.yaml --grant getStates --grant setLightColor
step $HW plugin call sample_plugins/cycle_color/build/plugin.wasm run --spec openapi/light.yaml --grant getStates --grant setLightColor --config order=blue,green
echo "Without the setLightColor grant, the call is refused with 403 and reaches nothing:"
step $HW plugin call sample_plugins/cycle_color/build/plugin.wasm run --spec openapi/light.yaml --grant getStates
echo
echo "The same API from plug-ins on the generated C and Rust PDKs:"
step $HW plugin call sample_plugins/brightness_cap/build/plugin.wasm report --spec openapi/light.yaml --grant getStates --grant listLights
step $HW plugin call sample_plugins/scene/build/plugin.wasm apply_scene --spec openapi/light.yaml --grant listLights --grant updateLight --config scene=movie
echo
echo "A plug-in that misbehaves fails alone, with a one-line reason:"
step $HW plugin call sample_plugins/hostile/plugin.wat spin --timeout-ms 200
step $HW plugin call sample_plugins/hostile/plugin.wat hog --memory-mib 8
step $HW plugin call sample_plugins/hostile/plugin.wat crash
step $HW plugin call sample_plugins/hostile/plugin.wat echo --input '{"still": "fine"}'

echo
echo "hostwire gateway: plug-ins for an app in any language. A stand-in for a billing API (a"
echo "subset of Lago's, in its own process; hostwire never imports it) sends signed webhooks:"
step .venv/bin/python scripts/demo_gateway.py

PORT="${PORT:-8000}"
export LIGHTCONTROL_TOKEN="${LIGHTCONTROL_TOKEN:-demo-token}"
# The console, /metrics and the plug-in API: a token of their own, new each run.
export HOSTWIRE_ADMIN_TOKEN="${HOSTWIRE_ADMIN_TOKEN:-$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))')}"
URL="http://127.0.0.1:$PORT"
DB=".demo/lightcontrol.db"
rm -rf .demo && mkdir -p .demo   # a fresh store each run: the walkthrough creates "lamp"

echo
echo "Now lightcontrol with the plug-ins of plugins.yaml, on $URL:"
$HW serve --host 127.0.0.1 --port "$PORT" --db "$DB" --config plugins.yaml &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER; exit 0' INT TERM
for _ in $(seq 100); do
  .venv/bin/python -c "import httpx,sys; httpx.get(sys.argv[1], timeout=1)" "$URL/openapi.json" \
    2>/dev/null && break
  kill -0 $SERVER 2>/dev/null || { echo "the server did not start"; exit 1; }
  sleep 0.1
done
.venv/bin/python scripts/demo_events.py "$URL" "$LIGHTCONTROL_TOKEN"
step $HW events list --db "$DB" --limit 4

cat <<MSG

lightcontrol keeps running on $URL (Ctrl-C stops it). From another terminal:
  curl $URL/openapi.json
  curl $URL/.well-known/ai-plugin.json
  curl -H "Authorization: Bearer $LIGHTCONTROL_TOKEN" -H "X-API-Key: demo-key" $URL/states
  curl -H "Authorization: Bearer $LIGHTCONTROL_TOKEN" -H "X-API-Key: demo-key" \\
       -H "Content-Type: application/json" -d '{"action": "ToGreen"}' $URL/light_color
  curl -H "Authorization: Bearer $LIGHTCONTROL_TOKEN" -H "X-API-Key: demo-key" $URL/lights/lamp
  curl -H "Authorization: Bearer $LIGHTCONTROL_TOKEN" -H "X-API-Key: demo-key" "$URL/events/deliveries?limit=5"
  curl -N -H "Authorization: Bearer $LIGHTCONTROL_TOKEN" -H "X-API-Key: demo-key" $URL/events/stream
  .venv/bin/hostwire events list --db $DB

The operators' console: open $URL/hostwire/ and log in with the admin token
  $HOSTWIRE_ADMIN_TOKEN
(plug-ins, live calls and failures, deliveries with replay, and the lights page), or:
  curl -H "Authorization: Bearer $HOSTWIRE_ADMIN_TOKEN" $URL/metrics
  curl -H "Authorization: Bearer $HOSTWIRE_ADMIN_TOKEN" $URL/hostwire/plugins
MSG
wait $SERVER
