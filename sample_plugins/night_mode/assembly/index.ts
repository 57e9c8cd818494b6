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
//
// Built on the AssemblyScript PDK that hostwire generates from
// openapi/light.yaml (`make` writes it to build/pdk/assemblyscript).
import {
  BeforeEventResult,
  BeforeEventResultReject,
  Color,
  LightEvent,
  Status,
  config,
  fail,
  onLightBeforeSave,
  quote,
} from "../../../build/pdk/assemblyscript";

const MINUTES_PER_DAY = 24 * 60;

export function light_before_save(): i32 {
  return onLightBeforeSave(nightMode);
}

function nightMode(event: LightEvent): BeforeEventResult | null {
  // Config is checked even when it does not matter yet, so that a typo shows
  // up with the first event rather than at the first night.
  const settings = readSettings();
  if (settings === null) return null;
  const minute = minuteOfDay(event.timestamp);
  if (minute < 0) {
    fail("the event's timestamp " + quote(event.timestamp) + " is not an RFC 3339 time");
    return null;
  }
  const record = event.data.record;
  const quiet = inWindow(minute, clock(settings.from, 0), clock(settings.to, 0));
  if (record.color != Color.White || record.status != Status.On || !quiet) return null; // {}

  const answer = new BeforeEventResult();
  if (settings.red) {
    record.color = Color.Red;
    answer.record = record;
  } else {
    answer.reject = new BeforeEventResultReject(
      "night mode: white light is not allowed between " + settings.from + " and " + settings.to,
    );
  }
  return answer;
}

// ---- config ---------------------------------------------------------------

class Settings {
  constructor(public from: string, public to: string, public red: bool) {}
}

function timeSetting(key: string, fallback: string): string | null {
  const value = config(key);
  if (value === null || value.length == 0) return fallback;
  if (value.length != 5 || clock(value, 0) < 0) {
    fail('config "' + key + '": ' + quote(value) +
      " is not a time of day as HH:MM (00:00 to 23:59, UTC)");
    return null;
  }
  return value;
}

function readSettings(): Settings | null {
  const from = timeSetting("quiet_from", "22:00");
  if (from === null) return null;
  const to = timeSetting("quiet_to", "07:00");
  if (to === null) return null;
  const mode = config("mode");
  if (mode !== null && mode.length > 0 && mode != "reject" && mode != "red") {
    fail('config "mode": ' + quote(mode) + ' is neither "reject" nor "red"');
    return null;
  }
  return new Settings(from, to, mode !== null && mode == "red");
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
