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
// Built on the AssemblyScript PDK that hostwire generates from
// openapi/light.yaml (`make` writes it to build/pdk/assemblyscript).
import {
  JsonWriter,
  LightEvent,
  LightUpdate,
  config,
  configOr,
  fail,
  onLightAfterUpdate,
  outputWriter,
  quote,
  updateLight,
} from "../../../build/pdk/assemblyscript";

export function light_after_update(): i32 {
  return onLightAfterUpdate(follow);
}

function follow(event: LightEvent): void {
  const source = configOr("source", "default");
  const target = config("target");
  if (target === null || target.length == 0) {
    fail('config "target" is missing: the id of the light that follows ' + quote(source));
    return;
  }
  // The target's own update would be an event for the source again: a loop.
  if (target == source) {
    fail('config "target" is ' + quote(target) + ", the source itself");
    return;
  }

  const record = event.data.record;
  if (record.id != source) {
    outputWriter(new JsonWriter().beginObject().key("ignored").string(record.id).endObject());
    return;
  }
  const change = new LightUpdate();
  change.color = record.color;
  change.status = record.status;
  const reply = updateLight(target, change);
  if (!reply.ok) {
    // A failure is returned as one: the outbox delivers the event again later.
    fail("update_light on " + quote(target) + " failed with status " +
      reply.status.toString() + ": " + reply.error!.toString());
    return;
  }
  outputWriter(
    new JsonWriter()
      .beginObject()
      .key("followed").string(source)
      .key("target").string(target)
      .key("status").integer(reply.status)
      .endObject(),
  );
}
