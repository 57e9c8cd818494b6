"""The Light model's lifecycle steps, wired to hostwire's event bus and outbox.

Every change goes through ``LightStore``'s steps, so every write (the original
three routes included) raises its events: before-steps run the plug-ins'
``light_before_*`` handlers on the spot; after-steps (``after_validation``
included) put an event in the outbox inside the write's transaction,
delivered once it commits.
"""

from __future__ import annotations

from hostwire import EventBus, EventHandlerError, EventRejected, Outbox
from lightcontrol.store import Change, LightPluginFailed, LightRejected, LightStore

MODEL = "light"


class LightEvents:
    """Connects a ``LightStore`` to an ``EventBus`` and an ``Outbox``."""

    def __init__(self, bus: EventBus, outbox: Outbox) -> None:
        self.bus = bus
        self.outbox = outbox

    def attach(self, store: LightStore) -> None:
        store.observers.append(self.observe)
        store.after_commit.append(self.outbox.notify)

    def observe(self, change: Change) -> None:
        if change.step.startswith("before_"):
            try:
                change.record = self.bus.before(
                    MODEL, change.step, change.record, change.previous, change.changes
                )
            except EventRejected as exc:
                raise LightRejected(str(exc), plugin=exc.plugin) from exc
            except EventHandlerError as exc:
                raise LightPluginFailed(str(exc), plugin=exc.plugin, export=exc.export) from exc
            return
        handlers = self.bus.handlers(MODEL, change.step)
        if not handlers or change.connection is None:
            return
        envelope = self.bus.envelope(
            MODEL, change.step, change.record, change.previous, change.changes
        )
        self.outbox.add(
            change.connection,
            envelope,
            subject=f"{MODEL}/{change.record['id']}",
            targets=[(h.plugin.name, f"{MODEL}_{change.step}") for h in handlers],
        )
