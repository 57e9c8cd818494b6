"""Serving an app with uvicorn: a deadline for each request's headers, and workers.

uvicorn bounds the idle time between keep-alive requests but not the time a
client takes to send a request's headers: one that trickles them a byte at a
time holds its connection for ever. ``HeaderTimeoutProtocol`` answers
``408 request_timeout`` and closes the connection when the headers are not
complete ``header_timeout_s`` after the connection opened (or after the first
byte of a later request on it). The body's own deadline is the app's (it sees
the body; the server only passes it on).

``serve_workers`` runs several worker processes on one listening socket
(``hostwire serve --workers N``): each builds the app itself (spawned, not
forked: nothing of the parent's threads or connections is shared), the
parent restarts one that exits and stops them all on SIGTERM or SIGINT.
Each answer says which worker gave it (``x-hostwire-worker: 1..N``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from hostwire._contract import error_body
from hostwire._errors import ConfigError, HostwireError

HEADER_TIMEOUT_S = 10.0
# After SIGTERM, requests still open this long (an event stream) are cancelled.
GRACEFUL_SHUTDOWN_S = 10.0
HEADER_TIMEOUT_ENV = "HOSTWIRE_HEADER_TIMEOUT_S"
log = logging.getLogger("hostwire.server")


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request headers."""

    header_timeout_s = HEADER_TIMEOUT_S
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._waiting_for_headers():
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a request that was pipelined
        if not self.transport.is_closing() and self._waiting_for_headers():
            self._disarm()
            self._arm()  # the next request's headers, on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._waiting_for_headers():
            return
        message = f"The request headers did not arrive within {self.header_timeout_s:g} s."
        body = json.dumps(error_body("request_timeout", message)).encode()
        head = (
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
        log.info(
            "%s sent no complete request headers within %g s: 408.", client, self.header_timeout_s
        )
        self.transport.write(head.encode("ascii") + body)
        self.transport.close()


def header_timeout_from_env() -> float:
    """``HOSTWIRE_HEADER_TIMEOUT_S``, or the default of 10 s when it is unset."""
    text = os.environ.get(HEADER_TIMEOUT_ENV, "").strip()
    if not text:
        return HEADER_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{HEADER_TIMEOUT_ENV}={text!r}: give a number of seconds above 0.")
    return value


def server_config(
    app: Any, *, host: str, port: int, header_timeout_s: float | None = None, **options: Any
) -> uvicorn.Config:
    """A uvicorn configuration that serves ``app`` with a header deadline
    (``header_timeout_s``, else ``HOSTWIRE_HEADER_TIMEOUT_S``, else 10 s)."""
    timeout = header_timeout_s if header_timeout_s is not None else header_timeout_from_env()
    protocol = type(
        "HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": timeout}
    )
    options.setdefault("access_log", False)
    options.setdefault("timeout_graceful_shutdown", GRACEFUL_SHUTDOWN_S)
    return uvicorn.Config(app, host=host, port=port, http=protocol, **options)


class CleanExitServer(uvicorn.Server):
    """uvicorn's server, exiting 0 after a shutdown that was asked for.

    uvicorn re-raises SIGTERM/SIGINT after a graceful shutdown, so the
    process dies "by signal". A shutdown that was asked for and completed is
    a success: exit status 0. ``on_started`` runs once the server listens
    (its lifespan started), e.g. to tell a supervisor.
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None] | None = None):
        super().__init__(config)
        self._on_started = on_started

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit and self._on_started is not None:
            self._on_started()


# -- several worker processes ------------------------------------------------------------

WORKER_HEADER = "x-hostwire-worker"  # which worker answered: 1..N
WORKER_ENV = "HOSTWIRE_WORKER"  # set in each worker process: its number
WORKERS_ENV = "HOSTWIRE_WORKERS"  # set in each worker process: how many there are
STOP_TIMEOUT_S = 30.0  # after SIGTERM, a worker still running then is killed
_STEADY_S = 10.0  # a worker that ran this long before exiting is restarted at once
_MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class WorkerPlan:
    """What each worker process needs; it is pickled into the worker (spawn).

    ``build`` makes the ASGI app in the worker (a module-level function or a
    ``functools.partial`` of one); a ``HostwireError`` it raises stops the
    server, the parent printing its message and exiting with its exit code.
    """

    build: Callable[[], Any]
    host: str
    port: int
    workers: int
    log_level: int = logging.INFO
    header_timeout_s: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # Sets up a worker's logging, given its number (the CLI's JSON or text format);
    # None: text lines naming the worker.
    configure_logs: Callable[[int], None] | None = None


def serve_workers(plan: WorkerPlan) -> int:
    """Serve ``plan`` with ``plan.workers`` processes on one listening socket.

    Each worker builds the app itself; one that exits after it started is
    started again (at once, or with a growing pause when it keeps exiting), one
    that fails before it ever started stops them all. SIGTERM or SIGINT stops
    every worker gracefully; the exit status is 0 when they all stopped in
    ``STOP_TIMEOUT_S``, else 1 (those left were killed), or the exit code of a
    worker that could not start.
    """
    listening = _listen(plan.host, plan.port)
    try:
        return _Supervisor(plan, listening).run()
    finally:
        listening.close()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say
    # so, and without it small answers wait for delayed ACKs (40 ms each).
    listening = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
        listening.listen(2048)
    except OSError as exc:
        listening.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    return listening


@dataclass
class _Slot:
    """One worker's place: the process in it now, and how it has fared."""

    number: int
    process: BaseProcess | None = None
    status: Connection | None = None
    lifeline: Connection | None = None  # the worker sees EOF on its end when we are gone
    started: bool = False  # this process is serving
    ever_started: bool = False  # some process in this slot served
    started_at: float = 0.0
    failures: int = 0  # exits in a row that came soon after starting
    restart_at: float | None = None
    failure: tuple[int, str] | None = None  # (exit code, message) the worker sent


class _Supervisor:
    def __init__(self, plan: WorkerPlan, listening: socket.socket) -> None:
        self.plan = plan
        self.listening = listening
        self.context = multiprocessing.get_context("spawn")
        self.slots = [_Slot(n) for n in range(1, plan.workers + 1)]
        self.stop_requested = 0  # signals received
        self.stopping_since: float | None = None
        self.code = 0
        self.announced = False

    def run(self) -> int:
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        previous_fd = signal.set_wakeup_fd(wake_write.fileno())
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in self.slots:
                self._start(slot)
            while any(s.process is not None for s in self.slots) or not self._stopping:
                self._step(wake_read)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_fd)
            wake_read.close()
            wake_write.close()
            for slot in self.slots:
                self._kill(slot)
        return self.code

    @property
    def _stopping(self) -> bool:
        return self.stopping_since is not None

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.stop_requested += 1

    def _step(self, wake: socket.socket) -> None:
        if self.stop_requested and not self._stopping:
            self._stop_all()
        if self.stop_requested > 1:  # asked again: do not wait for them
            for slot in self.slots:
                self._kill(slot)
        waiting: list[Any] = [wake]
        for slot in self.slots:
            if slot.process is not None:
                waiting.append(slot.process.sentinel)
            if slot.status is not None:
                waiting.append(slot.status)
        for ready in wait(waiting, self._timeout()):
            if ready is wake:
                with contextlib.suppress(BlockingIOError):
                    wake.recv(64)
        now = time.monotonic()
        for slot in self.slots:
            self._read_status(slot)
            if slot.process is not None and not slot.process.is_alive():
                self._exited(slot, now)
            if slot.restart_at is not None and slot.restart_at <= now and not self._stopping:
                slot.restart_at = None
                self._start(slot)
        if self.stopping_since is not None and now - self.stopping_since > STOP_TIMEOUT_S:
            self._kill_late()

    def _kill_late(self) -> None:
        for slot in self.slots:
            if slot.process is not None:
                log.error(
                    "worker %d (pid %s) did not stop within %g s: killed.",
                    slot.number,
                    slot.process.pid,
                    STOP_TIMEOUT_S,
                )
                self._kill(slot)
                self.code = self.code or 1

    def _timeout(self) -> float | None:
        now = time.monotonic()
        moments = [s.restart_at for s in self.slots if s.restart_at is not None]
        if self.stopping_since is not None:
            moments.append(self.stopping_since + STOP_TIMEOUT_S)
        if not moments:
            return None
        return max(0.0, min(moments) - now) + 0.01

    def _start(self, slot: _Slot) -> None:
        receiving, sending = self.context.Pipe(duplex=False)
        held, lifeline = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker_main,
            args=(self.plan, slot.number, self.listening, sending, held),
            name=f"hostwire-worker-{slot.number}",
        )
        process.start()
        sending.close()  # the worker holds the other end: EOF when it is gone
        held.close()
        self._close(slot)
        slot.process, slot.status, slot.lifeline = process, receiving, lifeline
        slot.started, slot.failure, slot.started_at = False, None, time.monotonic()

    def _read_status(self, slot: _Slot) -> None:
        status = slot.status
        while status is not None and status.poll():
            try:
                message = status.recv()
            except (EOFError, OSError):
                status.close()
                slot.status = status = None
                break
            if message[0] == "started":
                slot.started = slot.ever_started = True
                slot.started_at = time.monotonic()
                self._announce()
            elif message[0] == "failed":
                slot.failure = (int(message[1]), str(message[2]))

    def _announce(self) -> None:
        if not self.announced and all(s.started for s in self.slots):
            self.announced = True
            log.info(
                "%d workers serving on %s:%d.", len(self.slots), self.plan.host, self.plan.port
            )

    def _exited(self, slot: _Slot, now: float) -> None:
        assert slot.process is not None
        slot.process.join()
        self._read_status(slot)
        exitcode, pid = slot.process.exitcode, slot.process.pid
        slot.process = None
        self._close(slot)
        if self._stopping:
            if exitcode not in (0, None, -signal.SIGTERM):  # SIGTERM: ended before it served
                log.warning("worker %d (pid %s) stopped with %s.", slot.number, pid, _how(exitcode))
            return
        if not slot.ever_started:
            # It never served: the app cannot start (its configuration, its database).
            code, message = slot.failure or (
                1,
                f"worker {slot.number} could not start ({_how(exitcode)}); its log says why.",
            )
            print(f"hostwire: error: {message}", file=sys.stderr)
            self.code = code
            self._stop_all()
            return
        steady = slot.started and now - slot.started_at >= _STEADY_S
        slot.failures = 0 if steady else slot.failures + 1
        pause = 0.0 if steady else min(_MAX_BACKOFF_S, 0.5 * 2 ** (slot.failures - 1))
        reason = slot.failure[1] if slot.failure else _how(exitcode)
        log.warning(
            "worker %d (pid %s) exited (%s); starting another in %g s.",
            slot.number,
            pid,
            reason,
            pause,
        )
        slot.restart_at = now + pause

    def _stop_all(self) -> None:
        if self.stopping_since is not None:
            return
        self.stopping_since = time.monotonic()
        for slot in self.slots:
            slot.restart_at = None
            if slot.process is not None and slot.process.is_alive():
                slot.process.terminate()  # SIGTERM: a graceful shutdown

    def _kill(self, slot: _Slot) -> None:
        process = slot.process
        if process is None:
            return
        if process.is_alive():
            process.kill()
        process.join()
        slot.process = None
        self._close(slot)

    @staticmethod
    def _close(slot: _Slot) -> None:
        for end in (slot.status, slot.lifeline):
            if end is not None:
                end.close()
        slot.status = slot.lifeline = None


def _how(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit status {exitcode}"


def _watch_supervisor(lifeline: Connection) -> None:
    """Stop this worker when the supervisor is gone (killed: it sent no SIGTERM)."""
    with contextlib.suppress(EOFError, OSError):
        while True:
            lifeline.recv()
    log.warning("the supervisor (pid %d) is gone: this worker stops.", os.getppid())
    os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(
    plan: WorkerPlan,
    number: int,
    listening: socket.socket,
    status: Connection,
    lifeline: Connection,
) -> None:
    """A worker process: build the app, serve it on the shared socket until SIGTERM."""
    # Ctrl-C reaches every process of the terminal's group: the parent turns it
    # into SIGTERM for each worker, which uvicorn handles (SIGINT is its too once
    # it serves; before that, the parent's SIGTERM ends the worker).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(
        target=_watch_supervisor, args=(lifeline,), name="hostwire-supervisor-watch", daemon=True
    ).start()
    os.environ[WORKER_ENV] = str(number)
    os.environ[WORKERS_ENV] = str(plan.workers)
    if plan.configure_logs is not None:
        plan.configure_logs(number)
    else:
        logging.basicConfig(
            level=plan.log_level,
            format=f"%(name)s: worker {number}: %(levelname)s: %(message)s",
            stream=sys.stderr,
        )
    try:
        app = plan.build()
    except HostwireError as exc:
        status.send(("failed", exc.exit_code, str(exc)))
        sys.exit(exc.exit_code)
    except Exception as exc:
        log.exception("worker %d could not build the app", number)
        status.send(("failed", 1, f"the app could not be built: {type(exc).__name__}: {exc}"))
        sys.exit(1)
    config = server_config(
        app,
        host=plan.host,
        port=plan.port,
        header_timeout_s=plan.header_timeout_s,
        headers=[(WORKER_HEADER, str(number))],
        **plan.options,
    )
    CleanExitServer(config, on_started=lambda: status.send(("started",))).run(sockets=[listening])
