// cycle_color: turns lightcontrol's default light to the next colour of a cycle.
//
// Export `run`: output {"from": "<old colour>", "to": "<new colour>", "status": N}.
// Config: "order" replaces the cycle (default "red,green,blue,white"); a light
// whose colour is not in the cycle goes to its first colour.
// Grants needed: getStates, setLightColor.
//
// Built on the AssemblyScript PDK that hostwire generates from
// openapi/light.yaml (`make` writes it to build/pdk/assemblyscript).
import {
  Color,
  JsonWriter,
  SetLightColorRequest,
  SetLightColorRequestAction,
  config,
  fail,
  getStates,
  outputWriter,
  setLightColor,
} from "../../../build/pdk/assemblyscript";

const DEFAULT_ORDER = "red,green,blue,white";

function action(color: Color): SetLightColorRequestAction {
  if (color == Color.Red) return SetLightColorRequestAction.ToRed;
  if (color == Color.Green) return SetLightColorRequestAction.ToGreen;
  if (color == Color.Blue) return SetLightColorRequestAction.ToBlue;
  return SetLightColorRequestAction.ToWhite;
}

function cycle(): Array<Color> | null {
  const order = config("order");
  const names = (order !== null && order.trim().length > 0 ? order : DEFAULT_ORDER).split(",");
  const colors = new Array<Color>();
  for (let i = 0; i < names.length; i++) {
    const name = names[i].trim().toLowerCase();
    const color = Color.fromString(name);
    if (color === null) {
      const known = Color.values().map<string>((c: Color): string => c.value);
      fail('config "order": unknown colour "' + name + '" (use ' + known.join(", ") + ")");
      return null;
    }
    colors.push(color);
  }
  return colors;
}

export function run(): i32 {
  const colors = cycle();
  if (colors === null) return 1;

  const states = getStates();
  if (!states.ok) return fail(states.describe());
  const state = states.body;
  if (state === null) return fail("get_states answered status " + states.status.toString() + " without a body");
  const from = state.color;
  // indexOf gives -1 for a colour outside the cycle, so the cycle starts over.
  const to = colors[(colors.indexOf(from) + 1) % colors.length];

  const changed = setLightColor(new SetLightColorRequest(action(to)));
  if (!changed.ok) return fail(changed.describe());

  outputWriter(
    new JsonWriter()
      .beginObject()
      .key("from").string(from.value)
      .key("to").string(to.value)
      .key("status").integer(changed.status)
      .endObject(),
  );
  return 0;
}
