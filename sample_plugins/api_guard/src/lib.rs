//! api_guard: an `http_pre_hook` that lets a request reach the API only with a
//! known API key, and, if asked, only so many requests per key and window.
//!
//! * A public path (`public_prefixes`) passes untouched: `{"context": <as given>}`.
//! * A missing or unknown key is answered here, before the route: 401 with
//!   `{"error": {"code": "unauthorized", ...}}` and `www-authenticate: ApiKey`.
//! * A key over its rate limit: 429 with `retry-after` (seconds until its window
//!   ends) and `{"error": {"code": "rate_limited", ...}}`.
//! * Otherwise the request goes on with `"guard": "ok"` and `"guard_key": <the
//!   key's name>` added to the context, for the post-hooks (never the key itself).
//!
//! Config:
//! * `api_keys` (required): comma-separated `name:key` or bare `key` entries; a
//!   bare key is named after its place in the list (`key1`, `key2`, ...). A key
//!   that contains `:` must be given a name.
//! * `header` (default `X-API-Key`): where the key is sent; header names are
//!   matched case-insensitively (they usually arrive lower-cased).
//! * `rate_limit` (default 0, unlimited): requests per key per window.
//! * `window_s` (default 60): the window's length in seconds.
//! * `public_prefixes` (default `/openapi.json,/openapi.yaml,/.well-known/,/logo.png,/legal`):
//!   comma-separated path prefixes that need no key. A prefix matches the path
//!   itself and what lies below it (`/legal` matches `/legal` and `/legal/terms`,
//!   not `/legalese`); a path with `.`/`..` segments or `//` is never public.
//!   `none`: every path needs a key.
//!
//! Extism hands an empty config value to the plug-in as unset, so `""` means
//! the default. A bad config fails the hook with `error` set (so the plug-in's
//! `on_error` applies: keep the default `fail_closed` for a guard, or a broken
//! config lets everything through).
//!
//! The rate limit counts in fixed windows: a key's window starts with its first
//! request and lasts `window_s`; within it at most `rate_limit` requests pass (a
//! refused request does not count). Its limits, on purpose:
//! * The counters live in the plug-in instance, in Extism vars. hostwire pools
//!   instances (one per concurrent call, more under load) and replaces one after
//!   a failure, so the limit holds per instance: with k busy instances a key may
//!   get up to k × `rate_limit` per window. A shared limit needs shared state on
//!   the host.
//! * Fixed windows allow a burst of up to 2 × `rate_limit` across a window's end.
//! * Time comes from WASI's `clock_time_get` (wall clock, so a clock step can end
//!   a window early or late; a clock going backwards starts a new window).
//!   Importing it makes hostwire link WASI, which it does with no files,
//!   environment or sockets: the clock is all this plug-in gets from it.

use hostwire_pdk::serde_json::Map;
use hostwire_pdk::*;

const DEFAULT_HEADER: &str = "X-API-Key";
const DEFAULT_PUBLIC: &str = "/openapi.json,/openapi.yaml,/.well-known/,/logo.png,/legal";
const DEFAULT_WINDOW_S: u64 = 60;

struct ApiKey {
    name: String,
    secret: String,
}

struct Settings {
    keys: Vec<ApiKey>,
    header: String,
    rate_limit: u64,
    window_ms: u64,
    public: Vec<String>,
}

fn settings() -> Result<Settings, String> {
    let keys = api_keys()?;
    let header = config("header").unwrap_or_else(|| DEFAULT_HEADER.to_string());
    let header = header.trim().to_string();
    if header.is_empty() || !header.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(format!("config \"header\" must be a header name, not \"{}\"", header));
    }
    let rate_limit = whole_number("rate_limit", 0)?;
    let window_s = whole_number("window_s", DEFAULT_WINDOW_S)?;
    if window_s == 0 {
        return Err("config \"window_s\" must be at least 1".to_string());
    }
    let window_ms = window_s
        .checked_mul(1000)
        .ok_or_else(|| format!("config \"window_s\" is too large: {}", window_s))?;
    let public = config("public_prefixes").unwrap_or_else(|| DEFAULT_PUBLIC.to_string());
    let public: Vec<String> = match public.trim() {
        "none" => Vec::new(),
        public => list(public).map(str::to_string).collect(),
    };
    if let Some(bad) = public.iter().find(|p| !p.starts_with('/')) {
        return Err(format!("config \"public_prefixes\": \"{}\" does not start with /", bad));
    }
    Ok(Settings { keys, header, rate_limit, window_ms, public })
}

fn api_keys() -> Result<Vec<ApiKey>, String> {
    let text = config("api_keys").unwrap_or_default();
    let mut keys = Vec::new();
    for (index, entry) in list(&text).enumerate() {
        let (name, secret) = match entry.split_once(':') {
            Some((name, secret)) => (name.trim().to_string(), secret.trim().to_string()),
            None => (format!("key{}", index + 1), entry.to_string()),
        };
        if name.is_empty() || secret.is_empty() {
            return Err(format!(
                "config \"api_keys\": entry {} (\"{}\") needs a name and a key (name:key)",
                index + 1,
                name
            ));
        }
        keys.push(ApiKey { name, secret });
    }
    if keys.is_empty() {
        return Err("config \"api_keys\" is not set: give the accepted keys, comma-separated \
                    (name:key or key)"
            .to_string());
    }
    Ok(keys)
}

fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|item| !item.is_empty())
}

fn whole_number(key: &str, default: u64) -> Result<u64, String> {
    match config(key) {
        None => Ok(default),
        Some(text) => text.trim().parse().map_err(|_| {
            format!("config \"{}\" must be a whole number of 0 or more, not \"{}\"", key, text)
        }),
    }
}

fn is_public(path: &str, prefixes: &[String]) -> bool {
    if path.contains("//") || path.split('/').any(|segment| segment == "." || segment == "..") {
        return false;
    }
    prefixes.iter().any(|prefix| match path.strip_prefix(prefix.as_str()) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    })
}

/// The value of header `name`, whatever the casing of the request's header names.
fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    let headers = headers.as_object()?;
    let (_, value) = headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name))?;
    Some(value.as_str()?.trim()).filter(|value| !value.is_empty())
}

/// The key `presented` matches; every key is compared, in constant time each.
fn known<'a>(keys: &'a [ApiKey], presented: &str) -> Option<&'a ApiKey> {
    let mut found = None;
    for key in keys {
        if same(key.secret.as_bytes(), presented.as_bytes()) && found.is_none() {
            found = Some(key);
        }
    }
    found
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

// -- the rate limit: one fixed window per key, in an Extism var -------------

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn clock_time_get(clock: u32, precision: u64, time: *mut u64) -> u32;
}

fn now_ms() -> Result<u64, String> {
    let mut nanos = 0u64;
    match unsafe { clock_time_get(0, 1_000_000, &mut nanos) } {
        0 => Ok(nanos / 1_000_000),
        errno => Err(format!("the clock is not available (WASI errno {})", errno)),
    }
}

// In Extism's kernel var_get frees the key block, var_set frees both blocks.
fn var_get(name: &str) -> Option<Vec<u8>> {
    let offset = unsafe { kernel::var_get(kernel::write(name.as_bytes())) };
    (offset != 0).then(|| kernel::take(offset))
}

fn var_set(name: &str, value: &[u8]) {
    unsafe { kernel::var_set(kernel::write(name.as_bytes()), kernel::write(value)) };
}

/// Counts a request for `key`; `Some(seconds)` when its window is full, with
/// the seconds until the window ends.
fn over_limit(key: &ApiKey, settings: &Settings) -> Result<Option<u64>, String> {
    let now = now_ms()?;
    let var = format!("api_guard.window.{}", key.name);
    let stored = var_get(&var).and_then(|data| {
        let text = String::from_utf8(data).ok()?;
        let (start, count) = text.split_once(' ')?;
        Some((start.parse::<u64>().ok()?, count.parse::<u64>().ok()?))
    });
    let (start, count) = match stored {
        Some((start, count)) if start <= now && now - start < settings.window_ms => (start, count),
        _ => (now, 0),
    };
    if count >= settings.rate_limit {
        let left_ms = start + settings.window_ms - now;
        return Ok(Some(((left_ms + 999) / 1000).max(1)));
    }
    var_set(&var, format!("{} {}", start, count + 1).as_bytes());
    Ok(None)
}

// -- answers -----------------------------------------------------------------

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity((data.len() + 2) / 3 * 4);
    for chunk in data.chunks(3) {
        let bytes = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * index) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn refuse(
    context: Value,
    status_code: i64,
    code: &str,
    message: String,
    header: (&str, String),
) -> HttpPreHookOutput {
    let body = json!({"error": {"code": code, "message": message}}).to_string();
    let headers = json!({"content-type": "application/json", header.0: header.1});
    HttpPreHookOutput {
        context,
        response: Some(HttpResponse { status_code, headers, body: base64(body.as_bytes()) }),
        has_response: Some(true),
        ..Default::default()
    }
}

fn unauthorized(context: Value, message: String) -> HttpPreHookOutput {
    refuse(context, 401, "unauthorized", message, ("www-authenticate", "ApiKey".to_string()))
}

thread_local! {
    // An instance's config never changes: read and check it once, on first use.
    static SETTINGS: std::cell::RefCell<Option<std::rc::Rc<Settings>>> =
        std::cell::RefCell::new(None);
}

fn cached_settings() -> Result<std::rc::Rc<Settings>, String> {
    if let Some(found) = SETTINGS.with(|cell| cell.borrow().clone()) {
        return Ok(found);
    }
    let fresh = std::rc::Rc::new(settings()?);
    SETTINGS.with(|cell| *cell.borrow_mut() = Some(fresh.clone()));
    Ok(fresh)
}

fn guard(input: HttpPreHookInput) -> Result<HttpPreHookOutput, String> {
    let settings = cached_settings()?;
    let context = input.context;
    let request = input.request;
    if is_public(&request.path, &settings.public) {
        return Ok(HttpPreHookOutput { context, ..Default::default() });
    }
    let name = &settings.header;
    let presented = match header(&request.headers, name) {
        Some(value) => value,
        None => {
            let message = format!("Missing API key: send one in the {} header.", name);
            return Ok(unauthorized(context, message));
        }
    };
    let key = match known(&settings.keys, presented) {
        Some(key) => key,
        None => {
            let message = format!("Unknown API key in the {} header.", name);
            return Ok(unauthorized(context, message));
        }
    };
    if settings.rate_limit > 0 {
        if let Some(retry_after) = over_limit(key, &settings)? {
            let message = format!(
                "Too many requests for API key \"{}\": at most {} per {} s; retry in {} s.",
                key.name,
                settings.rate_limit,
                settings.window_ms / 1000,
                retry_after
            );
            let header = ("retry-after", retry_after.to_string());
            return Ok(refuse(context, 429, "rate_limited", message, header));
        }
    }
    let mut context = match context {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    context.insert("guard".to_string(), json!("ok"));
    context.insert("guard_key".to_string(), json!(key.name));
    Ok(HttpPreHookOutput { context: Value::Object(context), ..Default::default() })
}

http_pre_hook!(|input: HttpPreHookInput| {
    let context = input.context.clone();
    Ok(guard(input).unwrap_or_else(|message| HttpPreHookOutput {
        context,
        error: Some(format!("api_guard: {}", message)),
        ..Default::default()
    }))
});
