"""Receiving the app's webhooks: signed, known, valid, recorded once, then answered.

A POST to the webhooks path goes through, in order: its size (413), its
Standard Webhooks signature and timestamp (401), JSON (400), its event type
(422 for one no webhook of the document declares, or a lifecycle before-event,
which only the app's own process can raise), the webhook's body schema (422,
naming the first problem). Then, in one committed transaction, the event goes
to the outbox for every plug-in that exports its handler, keyed by its
``webhook-id``: a retry of an event already recorded adds nothing and answers
``200 {"duplicate": true}``; a new one answers ``202``. Only then are the
delivery workers woken. Every webhook logs one line: type, id and outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from hostwire._contract import error_body
from hostwire._errors import StorageError
from hostwire._events import Outbox, Subscriber
from hostwire._gateway.routing import EventIndex, subject_of
from hostwire._gateway.signature import SignatureError, Verifier
from hostwire._hostapi import OpenAPIDocument, Schema, Webhook, compile_schema
from hostwire._runtime import JsonProblem, loads_strict, log_safe

log = logging.getLogger("hostwire.gateway")


class _Refused(Exception):
    """A webhook the gateway does not take: the status, code and message to answer."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details
        self.event_type = "-"  # the body's, once it is known


@dataclass(frozen=True, slots=True)
class Received:
    """A webhook that passed every check: what goes to the outbox."""

    event_id: str
    webhook: Webhook
    payload: dict[str, Any]
    subject: str


class WebhookReceiver:
    """The ASGI endpoint the app posts its webhooks to.

    ``subscribers()`` are the loaded plug-ins; those that export a webhook's
    handler get its deliveries.
    """

    def __init__(
        self,
        document: OpenAPIDocument,
        outbox: Outbox,
        subscribers: Callable[[], Sequence[Subscriber]],
        *,
        verifier: Verifier,
        event_type: str,
        subject: Sequence[str],
        max_body_bytes: int,
    ) -> None:
        self.document = document
        self.outbox = outbox
        self.subscribers = subscribers
        self.verifier = verifier
        self.index = EventIndex(document, event_type)
        self.subject = list(subject)
        self.max_body_bytes = max_body_bytes
        self._schemas: dict[str, Schema | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if request.method != "POST":
            response = _error(405, "method_not_allowed", "Webhooks are received with POST.")
            response.headers["allow"] = "POST"
            await response(scope, receive, send)
            return
        event = request.headers.get("webhook-id", "-")
        try:
            body = await self._body(request)
            received = self.check(body, request.headers)
            event = received.event_id
            response = await anyio.to_thread.run_sync(self._record, received)
        except _Refused as refused:
            log.info(
                "webhook %s %s: refused %d (%s)",
                log_safe(clip(refused.event_type)),
                log_safe(event),
                refused.status,
                log_safe(str(refused)),
            )
            response = _error(refused.status, refused.code, str(refused), refused.details)
        except ClientDisconnect:
            log.info("webhook - %s: the sender left before its body arrived", log_safe(event))
            return
        await response(scope, receive, send)

    async def _body(self, request: Request) -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _Refused(
                    413, "payload_too_large", f"The body is over {self.max_body_bytes} bytes."
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def check(self, body: bytes, headers: Any) -> Received:
        """Every check but the outbox's; ``_Refused`` says which failed."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused(400, "invalid_json", "The body is not UTF-8 JSON.") from None
        try:
            event_id = self.verifier.verify(text, headers)
        except SignatureError as exc:
            raise _Refused(401, "invalid_signature", str(exc)) from None
        try:
            value = loads_strict(body)
        except JsonProblem as exc:
            raise _Refused(400, "invalid_json", f"The body {exc.detail}.") from None
        if not isinstance(value, dict):
            raise _Refused(400, "invalid_json", "The body is not a JSON object.")
        event_type = self.index.type_of(value) or "-"
        try:
            webhook = self._webhook(value)
            payload = self._valid(webhook, value, event_id)
        except _Refused as refused:
            refused.event_type = event_type
            raise
        subject = subject_of(value, event_type, self.subject, event_id)
        return Received(event_id, webhook, payload, subject)

    def _webhook(self, body: dict[str, Any]) -> Webhook:
        event_type = self.index.type_of(body)
        if event_type is None:
            raise _Refused(
                422,
                "unknown_event",
                f"The body has no event type (a string at {self.index.pointer}).",
            )
        webhook = self.index.find(event_type)
        if webhook is None:
            raise _Refused(
                422,
                "unknown_event",
                f'"{clip(event_type)}" is not a webhook of {self.document.source}.',
            )
        if webhook.before:
            raise _Refused(
                422,
                "unknown_event",
                f'"{webhook.name}" is a lifecycle before-event: only the app\'s own process '
                "raises it, never a webhook.",
            )
        return webhook

    def _valid(self, webhook: Webhook, body: dict[str, Any], event_id: str) -> dict[str, Any]:
        schema = self._schema(webhook)
        if schema is None:
            return body
        problems = schema.problems("body", "", body)
        if problems:
            first = problems[0]
            raise _Refused(
                422,
                "invalid_payload",
                f'The body breaks the schema of webhook "{webhook.name}": '
                f"{first['field']}: {first['message']}",
                problems[:1],
            )
        if webhook.enveloped and "id" not in body:
            # Handlers of an envelope get its id, unless the schema forbids one.
            with_id = {"id": event_id, **body}
            if not schema.problems("body", "", with_id):
                return with_id
        return body

    def _schema(self, webhook: Webhook) -> Schema | None:
        if webhook.name not in self._schemas:  # compiled on first use; a race compiles twice
            body = webhook.body
            self._schemas[webhook.name] = (
                compile_schema(self.document, body) if body is not None else None
            )
        return self._schemas[webhook.name]

    def _record(self, received: Received) -> JSONResponse:
        export = received.webhook.export
        targets = [
            (s.plugin.name, export) for s in self.subscribers() if export in s.plugin.exports
        ]
        try:
            with self.outbox.storage.guard("recording a webhook"), self.outbox.engine.begin() as c:
                added = Outbox.add_once(
                    c,
                    received.payload,
                    event_id=received.event_id,
                    event_type=received.webhook.name,
                    subject=received.subject,
                    targets=targets,
                )
        except StorageError as exc:
            log.warning(
                "webhook %s %s: not recorded (503): %s",
                received.webhook.name,
                log_safe(received.event_id),
                exc,
            )
            response = _error(503, "storage_unavailable", str(exc))
            response.headers["retry-after"] = str(exc.retry_after_s)
            return response
        self.outbox.storage.ok()
        answer: dict[str, Any] = {"id": received.event_id, "type": received.webhook.name}
        if not added:
            log.info(
                "webhook %s %s: duplicate, already recorded",
                received.webhook.name,
                log_safe(received.event_id),
            )
            return JSONResponse({**answer, "duplicate": True}, status_code=200)
        self.outbox.notify()
        names = [name for name, _ in targets]
        log.info(
            "webhook %s %s: accepted for %s",
            received.webhook.name,
            log_safe(received.event_id),
            ", ".join(names) if names else f"no plug-in (none exports {export})",
        )
        return JSONResponse({**answer, "plugins": names}, status_code=202)


def clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status)
