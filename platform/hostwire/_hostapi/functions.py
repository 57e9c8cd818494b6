"""An OpenAPI document plus a target: the host functions plug-ins import (Contract 1)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hostwire._contract import error_reply
from hostwire._errors import ConfigError, InvalidCall
from hostwire._hostapi.openapi import OpenAPIDocument, Operation, dumps, load_openapi
from hostwire._hostapi.validate import OperationValidator
from hostwire._runtime import (
    CHAIN,
    CallContext,
    HostFunction,
    JsonProblem,
    describe,
    loads_strict,
    log_safe,
    payload_too_large,
)
from hostwire._targets import Caller, DispatchError, Reply, Target

log = logging.getLogger("hostwire.hostapi")
ALL_OPERATIONS = "*"
DEFAULT_MAX_DEPTH = 8


def _reply_json(reply: Reply) -> bytes:
    head = dumps({"status": reply.status, "headers": reply.headers})[:-1]
    if not reply.body:
        return head + b',"body":null}'
    if "json" in reply.headers.get("content-type", ""):
        try:
            loads_strict(reply.body)
        except JsonProblem:
            pass  # not strict JSON in UTF-8: the plug-in gets it as text
        else:
            # Valid JSON from the app goes to the plug-in as sent, not re-encoded.
            return head + b',"body":' + reply.body + b"}"
    return head + b',"body":' + dumps(reply.body.decode("utf-8", errors="replace")) + b"}"


class HostApi:
    """Turns every operation of an OpenAPI document into a host function.

    Calls are validated against their operation, checked against the calling
    plug-in's grants, then sent to ``target`` (``AsgiTarget`` or ``HttpTarget``).
    """

    def __init__(
        self,
        spec: OpenAPIDocument | str | Path,
        target: Target,
        *,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        self.spec = spec if isinstance(spec, OpenAPIDocument) else load_openapi(spec)
        self.target = target
        self.max_depth = max_depth
        self._validators = {
            name: OperationValidator(self.spec, op) for name, op in self.spec.operations.items()
        }

    @property
    def operations(self) -> dict[str, Operation]:
        """Operations by host-function name."""
        return self.spec.operations

    def resolve_grants(self, grants: Iterable[str], *, plugin: str = "") -> frozenset[str]:
        """Host-function names for ``grants`` (operationIds, names or ``*``)."""
        names: set[str] = set()
        for grant in grants:
            if grant == ALL_OPERATIONS:
                names.update(self.operations)
                continue
            op = self.spec.operation(grant)
            if op is None:
                known = ", ".join(sorted(o.grant for o in self.operations.values()))
                who = f'Plug-in "{plugin}" grants' if plugin else "Grant"
                raise ConfigError(
                    f'{who} "{grant}", which is not an operation of {self.spec.source} '
                    f"(operations: {known})."
                )
            names.add(op.name)
        return frozenset(names)

    def host_functions(
        self, plugin: str, grants: Iterable[str] = (), *, token: str | None = None
    ) -> list[HostFunction]:
        """One host function per operation, for the plug-in named ``plugin``.

        Operations outside ``grants`` stay importable but answer 403 not_granted.
        ``token`` is the plug-in's own credential, sent as a bearer token.
        """
        allowed = self.resolve_grants(grants, plugin=plugin)
        return [
            HostFunction(
                name, self._handler(op, name in allowed, token), oversize=_counted_oversize(op)
            )
            for name, op in sorted(self.operations.items())
        ]

    def _handler(self, op: Operation, granted: bool, token: str | None) -> Any:
        answer = self._answer(op, granted, token)
        operation = op.grant

        def handle(context: CallContext, data: bytes) -> bytes:
            status, reply = answer(context, data)
            stats = context.stats
            if stats is not None:
                stats.host_call(operation, status)
            return reply

        return handle

    def _answer(
        self, op: Operation, granted: bool, token: str | None
    ) -> Callable[[CallContext, bytes], tuple[int, bytes]]:
        """The call's answer: (the status the plug-in gets, the reply's JSON)."""
        validator = self._validators[op.name]

        def answer(context: CallContext, data: bytes) -> tuple[int, bytes]:
            if not granted:
                context.refused.append(op.grant)
                return 403, error_reply(
                    403,
                    "not_granted",
                    f'Plug-in "{context.plugin}" is not granted operation "{op.grant}"; '
                    "add it to the plug-in's grants.",
                )
            chain = (*CHAIN.get(), f"{context.plugin}.{context.export} → {op.name}")
            if len(chain) > self.max_depth:
                return 508, error_reply(
                    508,
                    "depth_exceeded",
                    f"Nested plug-in calls went deeper than {self.max_depth}: {describe(chain)}.",
                )
            try:
                value = loads_strict(data) if data.strip() else {}
            except JsonProblem as exc:
                return 400, error_reply(400, "invalid_request", f"The input {exc.detail}.")
            try:
                call = validator.prepare(value)
            except InvalidCall as exc:
                return 400, error_reply(400, "invalid_request", str(exc), exc.details)
            started = time.perf_counter()
            caller = Caller(context.plugin, token, chain, context.deadline)
            try:
                reply = self.target.send(call, caller)
            except DispatchError as exc:
                log.warning(
                    "%s: %s %s failed: %s",
                    context.plugin,
                    call.method,
                    log_safe(call.path),
                    log_safe(str(exc)),
                    extra={
                        "plugin": context.plugin,
                        "export": context.export,
                        "outcome": "host_call_failed",
                        "operation": op.name,
                        "status": exc.status,
                    },
                )
                return exc.status, error_reply(exc.status, exc.code, str(exc))
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s: %s %s → %d in %.2f ms",
                    context.plugin,
                    call.method,
                    log_safe(call.path),
                    reply.status,
                    (time.perf_counter() - started) * 1000,
                )
            return reply.status, _reply_json(reply)

        return answer

    def close(self) -> None:
        self.target.close()


def _counted_oversize(op: Operation) -> Callable[[CallContext, str, int], bytes]:
    """The 413 answer to a call of ``op`` whose input is over the plug-in's limit,
    counted in ``hostwire_host_calls_total`` like every other answer."""
    operation = op.grant

    def oversize(context: CallContext, function: str, length: int) -> bytes:
        stats = context.stats
        if stats is not None:
            stats.host_call(operation, 413)
        return payload_too_large(context, function, length)

    return oversize
