// follow: one light copies another's colour and on/off state.
//
// Export `light_after_update` (a lifecycle event, delivered after a light was
// changed, from the platform's outbox: at least once, retried until it
// succeeds). When the changed light is the source, the target gets the
// source's colour and status through the updateLight operation; output
// {"followed": "<source>", "target": "<target>", "status": N}. Any other light
// is ignored: output {"ignored": "<its id>"}.
//
// Config: "source" (default "default") and "target" (required), light ids.
// Grants needed: updateLight.
//
// hostwire has no generated AssemblyScript PDK yet, so the host function is
// imported by hand: it takes and returns an Extism memory block holding UTF-8
// JSON, the reply being {"status": N, "headers": {...}, "body": ...}.
import { Config, Host, Memory } from "@extism/as-pdk";
import { error_set, length } from "@extism/as-pdk/lib/env";
import { JSON } from "assemblyscript-json/assembly";

@external("extism:host/user", "update_light")
declare function update_light(input: u64): u64;

// Deeper JSON than this is refused before parsing: the parser is recursive.
const MAX_DEPTH = 32;

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

// ---- JSON helpers ---------------------------------------------------------

// assemblyscript-json aborts on malformed JSON with a message about its own
// source ("Unexpected input end at ~lib/assemblyscript-json/..."), leaves its
// parser half-way (the same instance then misreads the next, valid, text) and
// accepts some text that is not JSON ({"a": 1} x). This strict check runs
// first, so bad input is a plain error that names the byte. It also refuses
// "\f", which that parser does not know.
class Syntax {
  at: i32 = 0;
  constructor(private text: Uint8Array) {}

  // The offset of the first bad byte, or -1 when the whole text is one value.
  static errorAt(text: Uint8Array): i32 {
    const syntax = new Syntax(text);
    return syntax.value(0) && syntax.at == text.length ? -1 : syntax.at;
  }

  private peek(): i32 {
    return this.at < this.text.length ? <i32>this.text[this.at] : -1;
  }

  private eat(c: i32): bool {
    if (this.peek() != c) return false;
    this.at++;
    return true;
  }

  private space(): void {
    for (let c = this.peek(); c == 0x20 || c == 0x0a || c == 0x0d || c == 0x09; c = this.peek()) {
      this.at++;
    }
  }

  private digits(): bool {
    const start = this.at;
    while (this.peek() >= 0x30 && this.peek() <= 0x39) this.at++;
    return this.at > start;
  }

  private word(word: string): bool {
    for (let i = 0; i < word.length; i++) if (!this.eat(word.charCodeAt(i))) return false;
    return true;
  }

  private value(depth: i32): bool {
    this.space();
    const c = this.peek();
    let ok = false;
    if (c == 0x7b) ok = depth < MAX_DEPTH && this.members(depth, 0x7d, true); // {
    else if (c == 0x5b) ok = depth < MAX_DEPTH && this.members(depth, 0x5d, false); // [
    else if (c == 0x22) ok = this.string();
    else if (c == 0x2d || (c >= 0x30 && c <= 0x39)) ok = this.number();
    else if (c == 0x74) ok = this.word("true");
    else if (c == 0x66) ok = this.word("false");
    else if (c == 0x6e) ok = this.word("null");
    this.space();
    return ok;
  }

  // An object's "key": value pairs or an array's values, brackets included.
  private members(depth: i32, close: i32, keyed: bool): bool {
    this.at++;
    this.space();
    if (this.eat(close)) return true;
    do {
      this.space();
      if (keyed) {
        if (!this.string()) return false; // "key"
        this.space();
        if (!this.eat(0x3a)) return false; // :
      }
      if (!this.value(depth + 1)) return false;
    } while (this.eat(0x2c)); // ,
    return this.eat(close);
  }

  private string(): bool {
    if (!this.eat(0x22)) return false;
    // peek() is -1 at the end of the text; raw control characters are not JSON.
    while (this.peek() >= 0x20) {
      const c = this.text[this.at++];
      if (c == 0x22) return true;
      if (c != 0x5c) continue;
      if (this.eat(0x75)) { // \uXXXX
        for (let i = 0; i < 4; i++) {
          const h = this.peek() | 0x20; // lower case for letters
          if (!((h >= 0x30 && h <= 0x39) || (h >= 0x61 && h <= 0x66))) return false;
          this.at++;
        }
      } else if (!(this.eat(0x22) || this.eat(0x5c) || this.eat(0x2f) || this.eat(0x62) ||
                   this.eat(0x6e) || this.eat(0x72) || this.eat(0x74))) { // " \ / b n r t
        return false;
      }
    }
    return false;
  }

  private number(): bool {
    this.eat(0x2d); // -
    if (!this.eat(0x30) && !this.digits()) return false; // 0 or 1-9 then digits
    if (this.eat(0x2e) && !this.digits()) return false; // .digits
    if (this.eat(0x65) || this.eat(0x45)) { // e or E, a sign, digits
      if (!this.eat(0x2b)) this.eat(0x2d);
      if (!this.digits()) return false;
    }
    return true;
  }
}

// assemblyscript-json's stringify leaves control characters unescaped (a
// backslash before a raw newline is not JSON), so strings are quoted here.
function quote(text: string): string {
  let out = '"';
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c != 0x22 && c != 0x5c && c >= 0x20) continue;
    out += text.substring(start, i);
    out += c == 0x22 ? '\\"' : c == 0x5c ? "\\\\" : "\\u" + c.toString(16).padStart(4, "0");
    start = i + 1;
  }
  return out + text.substring(start) + '"';
}

// Parses JSON that passed the syntax check, or sets the error naming `what`.
function parse(text: Uint8Array, what: string): JSON.Obj | null {
  const bad = Syntax.errorAt(text);
  if (bad >= 0) {
    fail(what + " is not valid JSON (error at byte " + bad.toString() + ")");
    return null;
  }
  const value = JSON.parse(text);
  if (!value.isObj) fail(what + " is not a JSON object");
  return value.isObj ? <JSON.Obj>value : null;
}

function stringField(obj: JSON.Obj, key: string, where: string): string | null {
  const value = obj.getString(key);
  if (!value) fail(where + ' has no "' + key + '" string');
  return value ? value.valueOf() : null;
}

// ---- the event ------------------------------------------------------------

export function light_after_update(): i32 {
  const sourceValue = Config.get("source");
  const source = sourceValue ? sourceValue : "default";
  const target = Config.get("target");
  if (!target) {
    return fail('config "target" is missing: the id of the light that follows ' + quote(source));
  }
  // The target's own update would be an event for the source again: a loop.
  if (target == source) return fail('config "target" is ' + quote(target) + ', the source itself');

  const event = parse(Host.input(), "the event");
  if (!event) return 1;
  const data = event.getObj("data");
  const record = data ? data.getObj("record") : null;
  if (!record) return fail("the event has no data.record object");
  const id = stringField(record, "id", "data.record");
  if (!id) return 1;

  if (id != source) {
    Host.output(bytes('{"ignored":' + quote(id) + "}"));
    return 0;
  }
  const color = stringField(record, "color", "data.record");
  if (!color) return 1;
  const status = stringField(record, "status", "data.record");
  if (!status) return 1;

  const request = '{"path":{"id":' + quote(target) + '},"body":{"color":' + quote(color) +
    ',"status":' + quote(status) + "}}";
  const block = update_light(Memory.allocateString(request).offset);
  // hostwire cancels the call when a host function fails, but a 0 block would
  // otherwise read as an empty reply.
  if (block == 0) return fail("update_light returned no reply");
  const memory = new Memory(block, length(block));
  const reply = parse(memory.toUint8Array(), "the reply of update_light");
  memory.free();
  if (!reply) return 1;
  const statusCode = reply.getInteger("status");
  if (!statusCode) return fail('the reply of update_light has no "status" integer');
  const code = statusCode.valueOf();

  if (code < 200 || code > 299) {
    // A failure is returned as one: the outbox delivers the event again later.
    // An error body that is not hostwire's {"error": {...}} (a proxy's plain
    // text, say) is quoted as it is.
    const body = reply.get("body");
    let detail = body ? body.stringify() : "no body";
    const error = body && body.isObj ? (<JSON.Obj>body).getObj("error") : null;
    if (error) {
      const errorCode = error.getString("code");
      const message = error.getString("message");
      detail = (errorCode ? errorCode.valueOf() + ": " : "") + (message ? message.valueOf() : "");
    }
    return fail("update_light on " + quote(target) + " failed with status " +
      code.toString() + ": " + detail);
  }
  // Host.outputString would cut non-ASCII text short (it counts UTF-16 units).
  Host.output(bytes(
    '{"followed":' + quote(source) + ',"target":' + quote(target) +
    ',"status":' + code.toString() + "}",
  ));
  return 0;
}
