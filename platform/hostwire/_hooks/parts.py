"""Which parts of a request and response a plug-in's HTTP hooks read (``hook_input``).

A plug-in declares it in its configuration entry (Contract 4)::

    hook_input: {request_body: false}    # headers, method, path and query only

Method, path, query and headers always go to every hook. A body the plug-in
does not read is neither base64-encoded nor copied into its input: it gets
``"body": ""`` (the field stays, so the PDKs' typed inputs still parse), and
whatever body its answer carries for it is ignored, so an echo of what it saw
cannot erase the real body. A response a pre-hook makes itself
(``has_response``) is its own and keeps its body.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from hostwire._runtime import Plugin


@dataclass(frozen=True, slots=True)
class HookInput:
    """The bodies a plug-in's hooks read: the request's (pre, post and chunk hooks)
    and the response's (post-hooks)."""

    request_body: bool = True
    response_body: bool = True


EVERYTHING = HookInput()
_DECLARED: weakref.WeakKeyDictionary[Plugin, HookInput] = weakref.WeakKeyDictionary()


def declare_hook_input(plugin: Plugin, parts: HookInput) -> None:
    """Record what ``plugin``'s hooks read (its configuration's ``hook_input``)."""
    if parts == EVERYTHING:
        _DECLARED.pop(plugin, None)
    else:
        _DECLARED[plugin] = parts


def hook_input(plugin: Plugin) -> HookInput:
    """What ``plugin``'s hooks read: everything unless its configuration said less."""
    return _DECLARED.get(plugin, EVERYTHING)
