/* redactor: hides fields of the API's JSON responses and signs every response.
 *
 * Written on the C PDK generated from openapi/light.yaml (build/pdk/c), with
 * the three HTTP hooks:
 *
 * - http_pre_hook: records {"redactor": {"started": true}} in the context (the
 *   rest of the context is kept) and lets the request go on.
 * - http_post_hook: adds the config key "header" ("Name: value", default
 *   "X-Served-By: hostwire"), replacing a header of that name in any casing.
 *   When the context holds the pre-hook's mark, the request path is one of
 *   "paths" (comma-separated; "/lights" covers "/lights" and "/lights/...";
 *   unset: every path) and the response is JSON (content-type
 *   application/json or application/...+json), every member named in
 *   "redact" (comma-separated, default "name") gets the value "[redacted]",
 *   at any depth, in objects inside arrays too; the body is then written
 *   again (compact JSON) and a Content-Length header, if there is one, is
 *   set to its new length. Bodies that are not JSON, JSON that does not
 *   parse, and JSON without such fields are left byte for byte as they are.
 *   The answer always carries the response (the header is added to it).
 *   Redact only members the API declares as plain strings: hostwire refuses
 *   a rewrite that breaks the operation's response schema.
 * - http_stream_chunk_hook: a chunk that contains the config key "drop" (a
 *   substring; unset drops nothing) is skipped ({"skip": true}); any
 *   other passes unchanged (no "chunk" in the answer).
 *
 * Extism hands an empty config value to a plug-in as unset: "" means the
 * default. A bad config or a body or chunk that is not base64 fails the hook
 * with "error" set, and the plug-in's on_error decides what happens to the
 * request.
 */
#include "hostwire.h"

#define DEFAULT_HEADER "X-Served-By: hostwire"
#define DEFAULT_REDACT "name"
#define REDACTED "[redacted]"

/* ---- Text helpers ---------------------------------------------------------- */

static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }

static bool same_nocase(hw_str a, hw_str b) {
    if (a.len != b.len) return false;
    for (size_t i = 0; i < a.len; i++) {
        if (lower(a.ptr[i]) != lower(b.ptr[i])) return false;
    }
    return true;
}

static bool is_space(char c) { return c == ' ' || c == '\t'; }

static hw_str trim(const char *p, size_t len) {
    while (len > 0 && is_space(*p)) p++, len--;
    while (len > 0 && is_space(p[len - 1])) len--;
    return hw_str_copy(p, len);
}

static bool contains(hw_str haystack, hw_str needle) {
    if (needle.len > haystack.len) return false;
    for (size_t i = 0; i + needle.len <= haystack.len; i++) {
        if (memcmp(haystack.ptr + i, needle.ptr, needle.len) == 0) return true;
    }
    return false;
}

static hw_str setting(const char *key, const char *fallback) {
    hw_str value = hw_config(key);
    return value.ptr != NULL ? value : hw_str_c(fallback);
}

/* ---- Base64 (standard alphabet, padded) ------------------------------------ */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static hw_str b64_encode(hw_str data) {
    hw_buf out = {0};
    const unsigned char *p = (const unsigned char *)data.ptr;
    for (size_t i = 0; i < data.len; i += 3) {
        size_t left = data.len - i;
        uint32_t n = (uint32_t)p[i] << 16;
        if (left > 1) n |= (uint32_t)p[i + 1] << 8;
        if (left > 2) n |= p[i + 2];
        hw_buf_char(&out, B64[(n >> 18) & 63]);
        hw_buf_char(&out, B64[(n >> 12) & 63]);
        hw_buf_char(&out, left > 1 ? B64[(n >> 6) & 63] : '=');
        hw_buf_char(&out, left > 2 ? B64[n & 63] : '=');
    }
    return hw_buf_str(&out);
}

static int b64_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* The bytes of base64 text; false when it is not valid padded base64. */
static bool b64_decode(hw_str text, hw_str *out) {
    hw_buf data = {0};
    if (text.len % 4 != 0) return false;
    for (size_t i = 0; i < text.len; i += 4) {
        const char *q = text.ptr + i;
        bool last = i + 4 == text.len;
        int pad = last && q[3] == '=' ? (q[2] == '=' ? 2 : 1) : 0;
        int v[4] = {b64_value(q[0]), b64_value(q[1]), pad == 2 ? 0 : b64_value(q[2]),
                    pad >= 1 ? 0 : b64_value(q[3])};
        if (v[0] < 0 || v[1] < 0 || v[2] < 0 || v[3] < 0) return false;
        uint32_t n = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        hw_buf_char(&data, (char)(n >> 16));
        if (pad < 2) hw_buf_char(&data, (char)(n >> 8));
        if (pad < 1) hw_buf_char(&data, (char)n);
    }
    *out = hw_buf_str(&data);
    return true;
}

/* ---- Headers (a JSON object of strings; names in any casing) --------------- */

static hw_json *header_node(hw_json *headers, hw_str name) {
    for (hw_json *m = headers->first; m != NULL; m = m->next) {
        if (same_nocase(m->key, name)) return m;
    }
    return NULL;
}

/* Sets header name to value, in place of one with the same name in any casing. */
static void set_header(hw_json *headers, hw_str name, hw_str value) {
    hw_json *node = header_node(headers, name);
    if (node == NULL) {
        hw_json_set(headers, name.ptr, hw_json_string(value));
        return;
    }
    hw_json *fresh = hw_json_string(value);
    fresh->key = name;
    fresh->next = node->next;
    *node = *fresh;
}

static bool is_json(hw_json *headers) {
    hw_json *type = header_node(headers, HW_STR("content-type"));
    if (type == NULL || type->kind != HW_JSON_STRING) return false;
    size_t len = 0;
    while (len < type->string.len && type->string.ptr[len] != ';') len++;
    hw_str media = trim(type->string.ptr, len);
    hw_str app = HW_STR("application/");
    hw_str plus = HW_STR("+json");
    if (same_nocase(media, HW_STR("application/json"))) return true;
    return media.len > app.len + plus.len &&
           same_nocase((hw_str){media.ptr, app.len}, app) &&
           same_nocase((hw_str){media.ptr + media.len - plus.len, plus.len}, plus);
}

/* ---- Configuration ----------------------------------------------------------- */

typedef struct Fields {
    hw_str *names;
    size_t count;
} Fields;

/* The comma-separated, trimmed, non-empty items of config key (or fallback). */
static Fields config_list(const char *key, const char *fallback) {
    hw_str text = setting(key, fallback);
    Fields fields = {hw_new_array(hw_str, text.len / 2 + 1), 0};
    size_t start = 0;
    for (size_t i = 0; i <= text.len; i++) {
        if (i == text.len || text.ptr[i] == ',') {
            hw_str name = trim(text.ptr + start, i - start);
            if (name.len > 0) fields.names[fields.count++] = name;
            start = i + 1;
        }
    }
    return fields;
}

/* The header to add, from "Name: value"; false when the config is bad. */
static bool served_by(hw_str *name, hw_str *value) {
    hw_str text = setting("header", DEFAULT_HEADER);
    size_t colon = 0;
    while (colon < text.len && text.ptr[colon] != ':') colon++;
    if (colon == text.len) return false;
    *name = trim(text.ptr, colon);
    *value = trim(text.ptr + colon + 1, text.len - colon - 1);
    if (name->len == 0) return false;
    for (size_t i = 0; i < name->len; i++) {
        char c = name->ptr[i];
        if (c <= ' ' || c >= 127) return false;
    }
    return true;
}

/* Whether path is one of the "paths" (a prefix ending at a segment boundary). */
static bool covered(hw_str path) {
    Fields prefixes = config_list("paths", "");
    if (prefixes.count == 0) return true;
    for (size_t i = 0; i < prefixes.count; i++) {
        hw_str prefix = prefixes.names[i];
        while (prefix.len > 1 && prefix.ptr[prefix.len - 1] == '/') prefix.len--;
        if (path.len < prefix.len || memcmp(path.ptr, prefix.ptr, prefix.len) != 0) continue;
        if (path.len == prefix.len || path.ptr[prefix.len] == '/' || prefix.ptr[prefix.len - 1] == '/')
            return true;
    }
    return false;
}

/* ---- Redaction ---------------------------------------------------------------- */

static bool listed(hw_str key, Fields fields) {
    for (size_t i = 0; i < fields.count; i++) {
        if (hw_str_eq(key, fields.names[i])) return true;
    }
    return false;
}

/* Replaces the values of the listed members, at any depth; returns how many. */
static size_t redact(hw_json *value, Fields fields) {
    size_t count = 0;
    if (value->kind != HW_JSON_OBJECT && value->kind != HW_JSON_ARRAY) return 0;
    for (hw_json *child = value->first; child != NULL; child = child->next) {
        if (value->kind == HW_JSON_OBJECT && listed(child->key, fields)) {
            hw_json *fresh = hw_json_string(HW_STR(REDACTED));
            fresh->key = child->key;
            fresh->next = child->next;
            *child = *fresh;
            count++;
        } else {
            count += redact(child, fields);
        }
    }
    return count;
}

/* Whether the context carries this plug-in's pre-hook mark. */
static bool started(const hw_json *context) {
    const hw_json *mine = hw_json_get(context, "redactor");
    const hw_json *flag = hw_json_get(mine, "started");
    return flag != NULL && flag->kind == HW_JSON_BOOL && flag->boolean;
}

/* ---- The hooks ------------------------------------------------------------------ */

static int pre(const HttpPreHookInput *input, HttpPreHookOutput *output) {
    hw_json *context = input->context != NULL && input->context->kind == HW_JSON_OBJECT
                           ? hw_json_copy(input->context)
                           : hw_json_object();
    hw_json_set(context, "redactor", hw_json_set(hw_json_object(), "started", hw_json_bool(true)));
    output->context = context;
    return 0;
}
HW_ON_HTTP_PRE_HOOK(pre)

static int post(const HttpPostHookInput *input, HttpPostHookOutput *output) {
    hw_str name, value;
    if (!served_by(&name, &value)) {
        output->error = hw_format("redactor: config \"header\" must be \"Name: value\", not \"%S\"",
                                  hw_config("header"));
        return 0;
    }
    HttpResponse *response = hw_new(HttpResponse);
    *response = *input->response;
    const hw_json *given = input->response->headers;
    response->headers = given != NULL && given->kind == HW_JSON_OBJECT ? hw_json_copy(given)
                                                                        : hw_json_object();
    if (started(input->context) && covered(input->request->path) && is_json(response->headers)) {
        hw_str body;
        if (!b64_decode(response->body, &body)) {
            output->error = hw_format("redactor: the response body is not base64");
            return 0;
        }
        hw_json *document = body.len > 0 ? hw_json_parse(body) : NULL;
        if (body.len > 0 && document == NULL) {
            hw_log_debug("left a JSON response alone: its body does not parse (%s)", hw_error());
        }
        size_t count = document != NULL ? redact(document, config_list("redact", DEFAULT_REDACT)) : 0;
        if (count > 0) {
            hw_str text = hw_json_stringify(document);
            response->body = b64_encode(text);
            hw_json *length = header_node(response->headers, HW_STR("content-length"));
            if (length != NULL) set_header(response->headers, length->key, hw_format("%zu", text.len));
            hw_log_debug("redacted %zu values in %S %S", count, input->request->method,
                         input->request->path);
        }
    }
    set_header(response->headers, name, value);
    output->response = response;
    return 0;
}
HW_ON_HTTP_POST_HOOK(post)

static int chunk(const HttpStreamChunkInput *input, HttpStreamChunkOutput *output) {
    hw_str drop = hw_config("drop");
    if (drop.ptr == NULL || drop.len == 0) return 0;
    hw_str data;
    if (!b64_decode(input->chunk, &data)) {
        output->error = hw_format("redactor: the chunk is not base64");
        return 0;
    }
    if (contains(data, drop)) {
        output->skip = true;
        output->has_skip = true;
    }
    return 0;
}
HW_ON_HTTP_STREAM_CHUNK_HOOK(chunk)
