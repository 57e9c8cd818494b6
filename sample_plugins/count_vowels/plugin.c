/* count_vowels: Extism's classic example plug-in, in C, for hostwire.
 *
 * Input: any UTF-8 text. Output: {"count": N, "total": N, "vowels": "..."}.
 * Config: "vowels" replaces the set of letters counted (default "aeiouAEIOU").
 * Every call logs the count at info level (hostwire routes it to Python
 * logging as hostwire.plugin.count_vowels).
 *
 * There is no Extism C PDK here, so the kernel imports are declared by hand.
 * On wasm32 a u64 is "unsigned long long" (unsigned long is 32-bit).
 */
typedef unsigned long long u64;
typedef unsigned char u8;

#define KERNEL(name) __attribute__((import_module("extism:host/env"), import_name(name)))
KERNEL("input_length") u64 extism_input_length(void);
KERNEL("input_load_u8") u8 extism_input_load_u8(u64 offset);
KERNEL("alloc") u64 extism_alloc(u64 length);
KERNEL("length") u64 extism_length(u64 block);
KERNEL("load_u8") u8 extism_load_u8(u64 offset);
KERNEL("store_u8") void extism_store_u8(u64 offset, u8 value);
KERNEL("output_set") void extism_output_set(u64 block, u64 length);
KERNEL("config_get") u64 extism_config_get(u64 key_block);
KERNEL("log_info") void extism_log_info(u64 block);

static u64 block_from(const char *text, u64 length) {
    u64 block = extism_alloc(length);
    for (u64 i = 0; i < length; i++) extism_store_u8(block + i, (u8)text[i]);
    return block;
}

static u64 cstrlen(const char *text) {
    u64 n = 0;
    while (text[n]) n++;
    return n;
}

static char vowels[256] = "aeiouAEIOU";
static u64 vowel_count = 10;

static void load_config(void) {
    const char *key = "vowels";
    u64 value = extism_config_get(block_from(key, cstrlen(key)));  /* frees the key block */
    if (value == 0) return;
    u64 length = extism_length(value);
    if (length > sizeof(vowels) - 1) length = sizeof(vowels) - 1;
    for (u64 i = 0; i < length; i++) vowels[i] = (char)extism_load_u8(value + i);
    vowels[length] = 0;
    vowel_count = length;
}

static int is_vowel(u8 c) {
    for (u64 i = 0; i < vowel_count; i++)
        if ((u8)vowels[i] == c) return 1;
    return 0;
}

/* Writes the decimal digits of n at out, returns how many. */
static u64 format_u64(u64 n, char *out) {
    char digits[20];
    u64 count = 0;
    do { digits[count++] = (char)('0' + n % 10); n /= 10; } while (n);
    for (u64 i = 0; i < count; i++) out[i] = digits[count - 1 - i];
    return count;
}

static u64 append(char *out, u64 at, const char *text) {
    while (*text) out[at++] = *text++;
    return at;
}

__attribute__((export_name("count_vowels"))) int count_vowels(void) {
    load_config();
    u64 length = extism_input_length();
    u64 count = 0;
    for (u64 i = 0; i < length; i++)
        if (is_vowel(extism_input_load_u8(i))) count++;

    static char json[64 + 2 * sizeof(vowels)];
    u64 at = append(json, 0, "{\"count\": ");
    at += format_u64(count, json + at);
    at = append(json, at, ", \"total\": ");
    at += format_u64(length, json + at);
    at = append(json, at, ", \"vowels\": \"");
    for (u64 i = 0; i < vowel_count; i++) {
        char c = vowels[i];
        if (c == '"' || c == '\\') json[at++] = '\\';
        json[at++] = (c >= 0x20) ? c : '?';
    }
    at = append(json, at, "\"}");

    u64 output = block_from(json, at);
    extism_output_set(output, at);

    char line[48];
    u64 n = append(line, 0, "counted vowels: ");
    n += format_u64(count, line + n);
    extism_log_info(block_from(line, n));
    return 0;
}
