// cycle_color: turns lightcontrol's default light to the next colour of a cycle.
//
// Export `run`: output {"from": "<old colour>", "to": "<new colour>", "status": N}.
// Config: "order" replaces the cycle (default "red,green,blue,white"); a light
// whose colour is not in the cycle goes to its first colour.
// Grants needed: getStates, setLightColor.
//
// hostwire has no generated AssemblyScript PDK yet, so the host functions are
// imported by hand: each takes and returns an Extism memory block holding
// UTF-8 JSON, the reply being {"status": N, "headers": {...}, "body": ...}.
import { Config, Host, Memory } from "@extism/as-pdk";
import { error_set, length } from "@extism/as-pdk/lib/env";
import { JSON } from "assemblyscript-json/assembly";

@external("extism:host/user", "get_states")
declare function get_states(input: u64): u64;
@external("extism:host/user", "set_light_color")
declare function set_light_color(input: u64): u64;

const DEFAULT_ORDER = "red,green,blue,white";
const COLORS = ["red", "green", "blue", "white"];
const ACTIONS = ["ToRed", "ToGreen", "ToBlue", "ToWhite"];

class Reply {
  constructor(public status: i64, public body: JSON.Obj) {}
}

// Set with --use abort=... so that the module does not import env.abort, which
// Extism lacks; a failed assertion then reads like any other plug-in error.
function abortPlugin(message: string | null, file: string | null, line: u32, column: u32): void {
  fail("abort: " + (message ? message : "") + " at " + (file ? file : "") + ":" + line.toString());
  unreachable();
}

function fail(message: string): i32 {
  error_set(Memory.allocateString(message).offset);
  return 1;
}

function bytes(text: string): Uint8Array {
  return Uint8Array.wrap(String.UTF8.encode(text));
}

// Gives the reply of a 2xx status; otherwise sets the plug-in's error. An error
// body that is not hostwire's {"error": {...}} (a proxy's plain text, say) is
// quoted as it is.
function parseReply(name: string, block: u64): Reply | null {
  // hostwire cancels the call when a host function fails, but a 0 block would
  // otherwise read as an empty reply.
  if (block == 0) {
    fail(name + " returned no reply");
    return null;
  }
  const memory = new Memory(block, length(block));
  const reply = <JSON.Obj>JSON.parse(memory.toUint8Array());
  memory.free();
  const status = reply.getInteger("status")!.valueOf();
  const body = reply.getObj("body");
  if (status >= 200 && status < 300 && body) return new Reply(status, body);

  let detail = reply.get("body") ? reply.get("body")!.stringify() : "no body";
  const error = body ? body.getObj("error") : null;
  if (error) {
    const code = error.getString("code");
    const message = error.getString("message");
    detail = (code ? code.valueOf() + ": " : "") + (message ? message.valueOf() : "");
  }
  fail(name + " failed with status " + status.toString() + ": " + detail);
  return null;
}

function cycle(): string[] | null {
  const order = Config.get("order");
  const names = (order && order.trim().length > 0 ? order : DEFAULT_ORDER).split(",");
  const colors: string[] = [];
  for (let i = 0; i < names.length; i++) {
    const name = names[i].trim().toLowerCase();
    if (!COLORS.includes(name)) {
      fail('config "order": unknown colour "' + name + '" (use ' + COLORS.join(", ") + ")");
      return null;
    }
    colors.push(name);
  }
  return colors;
}

export function run(): i32 {
  const colors = cycle();
  if (!colors) return 1;

  const states = parseReply("get_states", get_states(Memory.allocateString("{}").offset));
  if (!states) return 1;
  const colorValue = states.body.getString("color");
  const from = colorValue ? colorValue.valueOf() : "";
  // indexOf gives -1 for an unknown colour, so the cycle starts over.
  const to = colors[(colors.indexOf(from) + 1) % colors.length];

  const request = '{"body":{"action":"' + ACTIONS[COLORS.indexOf(to)] + '"}}';
  const changed = parseReply("set_light_color", set_light_color(Memory.allocateString(request).offset));
  if (!changed) return 1;

  // Host.outputString would cut non-ASCII text short (it counts UTF-16 units).
  Host.output(bytes(
    '{"from":' + new JSON.Str(from).stringify() + ',"to":"' + to +
    '","status":' + changed.status.toString() + "}",
  ));
  return 0;
}
