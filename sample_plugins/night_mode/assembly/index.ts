// night_mode: no white light at night.
//
// Export `light_before_save` (a lifecycle event: it runs before every write of
// a light and may change or refuse it). When the event's time is inside the
// quiet window and the light is on and white, it either refuses the save
// ({"reject": {"reason": ...}}, the API answers 422) or turns the light red
// ({"record": {...}}). Otherwise it outputs {}: go on unchanged. The time is
// the event's timestamp: a plug-in has no clock.
//
// Config (all optional):
//   quiet_from, quiet_to  "HH:MM" in UTC, default 22:00 and 07:00. quiet_from
//                         is inside the window, quiet_to is not; the window
//                         may wrap midnight, and equal times mean never.
//   mode                  "reject" (default) or "red".
// Grants needed: none (it only answers the event).
import { Config, Host, Memory } from "@extism/as-pdk";
import { error_set } from "@extism/as-pdk/lib/env";
import { JSON } from "assemblyscript-json/assembly";

const MINUTES_PER_DAY = 24 * 60;
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

function toJson(value: JSON.Value): string {
  if (value.isString) return quote((<JSON.Str>value).valueOf());
  if (value.isObj) {
    const obj = <JSON.Obj>value;
    const keys = obj.keys;
    const parts = new Array<string>(keys.length);
    for (let i = 0; i < keys.length; i++) {
      parts[i] = quote(keys[i]) + ":" + toJson(obj.get(keys[i])!);
    }
    return "{" + parts.join(",") + "}";
  }
  if (value.isArr) {
    const items = (<JSON.Arr>value).valueOf();
    const parts = new Array<string>(items.length);
    for (let i = 0; i < items.length; i++) parts[i] = toJson(items[i]);
    return "[" + parts.join(",") + "]";
  }
  return value.stringify(); // numbers, booleans and null
}

// ---- times of day ---------------------------------------------------------

function isDigit(text: string, at: i32): bool {
  const c = text.charCodeAt(at); // -1 past the end
  return c >= 0x30 && c <= 0x39;
}

// The number written with two ASCII digits at text[at], or -1.
function twoDigits(text: string, at: i32): i32 {
  if (!isDigit(text, at) || !isDigit(text, at + 1)) return -1;
  return (text.charCodeAt(at) - 0x30) * 10 + text.charCodeAt(at + 1) - 0x30;
}

// Minutes after midnight of "HH:MM" at text[at], or -1.
function clock(text: string, at: i32): i32 {
  const hours = twoDigits(text, at);
  const minutes = twoDigits(text, at + 3);
  const valid = hours >= 0 && hours <= 23 && minutes >= 0 && minutes <= 59;
  return valid && text.charAt(at + 2) == ":" ? hours * 60 + minutes : -1;
}

// The UTC minute of the day of an RFC 3339 time such as
// "2026-11-21T23:15:02.123Z" or "2026-11-22T00:15:02+01:00", or -1.
function minuteOfDay(time: string): i32 {
  const date = twoDigits(time, 0) >= 0 && twoDigits(time, 2) >= 0 && time.charAt(4) == "-" &&
    twoDigits(time, 5) >= 0 && time.charAt(7) == "-" && twoDigits(time, 8) >= 0;
  const separator = time.charAt(10);
  const local = clock(time, 11);
  // Seconds may be 60 (a leap second).
  if (!date || (separator != "T" && separator != "t" && separator != " ") || local < 0 ||
      time.charAt(16) != ":" || twoDigits(time, 17) < 0 || twoDigits(time, 17) > 60) {
    return -1;
  }
  let end = 19;
  if (time.charAt(end) == ".") {
    end++;
    while (isDigit(time, end)) end++;
    if (end == 20) return -1; // a dot with no digits
  }
  const zone = time.substring(end);
  if (zone == "Z" || zone == "z") return local;
  const offset = clock(zone, 1);
  if (zone.length != 6 || offset < 0 || (zone.charAt(0) != "+" && zone.charAt(0) != "-")) return -1;
  // 00:15+01:00 is 23:15 UTC.
  return (local - (zone.charAt(0) == "+" ? offset : -offset) + MINUTES_PER_DAY) % MINUTES_PER_DAY;
}

// quiet_from is inside, quiet_to is not; from > to wraps past midnight.
function inWindow(minute: i32, from: i32, to: i32): bool {
  if (from == to) return false;
  return from < to ? minute >= from && minute < to : minute >= from || minute < to;
}

// ---- config ---------------------------------------------------------------

class Settings {
  constructor(public from: string, public to: string, public red: bool) {}
}

function timeSetting(key: string, fallback: string): string | null {
  const value = Config.get(key);
  if (!value) return fallback;
  if (value.length != 5 || clock(value, 0) < 0) {
    fail('config "' + key + '": ' + quote(value) +
      " is not a time of day as HH:MM (00:00 to 23:59, UTC)");
    return null;
  }
  return value;
}

function settings(): Settings | null {
  const from = timeSetting("quiet_from", "22:00");
  if (!from) return null;
  const to = timeSetting("quiet_to", "07:00");
  if (!to) return null;
  const mode = Config.get("mode");
  if (mode && mode != "reject" && mode != "red") {
    fail('config "mode": ' + quote(mode) + ' is neither "reject" nor "red"');
    return null;
  }
  return new Settings(from, to, mode == "red");
}

// ---- the event ------------------------------------------------------------

class Event {
  constructor(public minute: i32, public record: JSON.Obj) {}
}

function stringField(obj: JSON.Obj, key: string, where: string): string | null {
  const value = obj.getString(key);
  if (!value) fail(where + ' has no "' + key + '" string');
  return value ? value.valueOf() : null;
}

function readEvent(): Event | null {
  const input = Host.input();
  const bad = Syntax.errorAt(input);
  if (bad >= 0) {
    fail("the event is not valid JSON (error at byte " + bad.toString() + ")");
    return null;
  }
  const parsed = JSON.parse(input);
  const data = parsed.isObj ? (<JSON.Obj>parsed).getObj("data") : null;
  const record = data ? data.getObj("record") : null;
  if (!record) {
    fail("the event has no data.record object");
    return null;
  }
  const timestamp = stringField(<JSON.Obj>parsed, "timestamp", "the event");
  if (!timestamp) return null;
  const minute = minuteOfDay(timestamp);
  if (minute < 0) {
    fail("the event's timestamp " + quote(timestamp) + " is not an RFC 3339 time");
    return null;
  }
  return new Event(minute, record);
}

export function light_before_save(): i32 {
  // Config is checked even when it does not matter yet, so that a typo shows
  // up with the first event rather than at the first night.
  const config = settings();
  if (!config) return 1;
  const event = readEvent();
  if (!event) return 1;
  const color = stringField(event.record, "color", "data.record");
  if (!color) return 1;
  const status = stringField(event.record, "status", "data.record");
  if (!status) return 1;

  let output = "{}";
  if (color == "white" && status == "on" &&
      inWindow(event.minute, clock(config.from, 0), clock(config.to, 0))) {
    if (config.red) {
      // Map.set keeps the key where it was, so the record reads as it came.
      event.record.set("color", "red");
      output = '{"record":' + toJson(event.record) + "}";
    } else {
      const reason = "night mode: white light is not allowed between " +
        config.from + " and " + config.to;
      output = '{"reject":{"reason":' + quote(reason) + "}}";
    }
  }
  // Host.outputString would cut non-ASCII text short (it counts UTF-16 units).
  Host.output(bytes(output));
  return 0;
}
