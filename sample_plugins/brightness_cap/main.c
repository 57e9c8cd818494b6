/* brightness_cap: keeps every light at or below a maximum brightness.
 *
 * Written on the C PDK generated from openapi/light.yaml (build/pdk/c):
 *
 * - light_before_save (a lifecycle event): a record brighter than the config
 *   key "max" (default 80) is replaced by the same record at "max"; any other
 *   record goes on unchanged ({}).
 * - report: the default light's state (get_states) and how many lights there
 *   are and how many are over the cap (list_lights):
 *   {"default": {"status", "color"}, "lights": n, "over_cap": m}.
 *   Needs the grants getStates and listLights.
 */
#include "hostwire.h"

static int64_t max_brightness(void) { return hw_config_int("max", 80); }

static int cap(const LightEvent *event, BeforeEventResult *result) {
    const Light *record = event->data->record;
    int64_t max = max_brightness();
    if (record->brightness > max) {
        Light *capped = hw_new(Light);
        *capped = *record;
        capped->brightness = max;
        result->record = capped;
        hw_log_info("capped %S from %lld to %lld", record->id, (long long)record->brightness,
                    (long long)max);
    }
    return 0;
}
HW_ON_LIGHT_BEFORE_SAVE(cap)

HW_EXPORT(report) {
    int64_t max = max_brightness();
    api_get_states_response states = api_get_states();
    if (!states.ok) return hw_fail("get_states: %S (%S)", states.error.message, states.error.code);
    api_list_lights_response list = api_list_lights();
    if (!list.ok) return hw_fail("list_lights: %S (%S)", list.error.message, list.error.code);
    const Light_array *lights = &list.body->lights;
    size_t over = 0;
    for (size_t i = 0; i < lights->count; i++) {
        if (lights->items[i].brightness > max) over++;
    }
    hw_output(hw_format("{\"default\":%S,\"lights\":%zu,\"over_cap\":%zu}",
                        States_to_json(states.body), lights->count, over));
    return 0;
}
