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
echo "A plug-in that misbehaves fails alone, with a one-line reason:"
step $HW plugin call sample_plugins/hostile/plugin.wat spin --timeout-ms 200
step $HW plugin call sample_plugins/hostile/plugin.wat hog --memory-mib 8
step $HW plugin call sample_plugins/hostile/plugin.wat crash
step $HW plugin call sample_plugins/hostile/plugin.wat echo --input '{"still": "fine"}'

PORT="${PORT:-8000}"
export LIGHTCONTROL_TOKEN="${LIGHTCONTROL_TOKEN:-demo-token}"
URL="http://127.0.0.1:$PORT"
cat <<MSG

Now lightcontrol, the reference app, on $URL with the plug-ins of plugins.yaml
loaded (Ctrl-C stops it).
From another terminal:
  curl $URL/openapi.json
  curl $URL/.well-known/ai-plugin.json
  curl -H "Authorization: Bearer $LIGHTCONTROL_TOKEN" $URL/states
  curl -H "Authorization: Bearer $LIGHTCONTROL_TOKEN" -H "Content-Type: application/json" \\
       -d '{"action": "TurnOn"}' $URL/light_control
  curl -H "Authorization: Bearer $LIGHTCONTROL_TOKEN" -H "Content-Type: application/json" \\
       -d '{"name": "Kitchen", "color": "blue"}' $URL/lights
MSG
exec $HW serve --host 127.0.0.1 --port "$PORT" --db lightcontrol.db --config plugins.yaml
