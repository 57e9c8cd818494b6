"""What a plug-in's export names mean to hostwire (Contracts 2 and 3)."""

from __future__ import annotations

import re

LIFECYCLE_STEPS = ("validation", "create", "save", "update", "destroy")
HTTP_HOOKS = ("http_pre_hook", "http_post_hook", "http_stream_chunk_hook")
_LIFECYCLE = re.compile(rf"^[a-z][a-z0-9_]*_(before|after)_({'|'.join(LIFECYCLE_STEPS)})$")


def lifecycle_exports(exports: frozenset[str]) -> list[str]:
    """Exports named like model lifecycle events, e.g. ``light_before_save``."""
    return sorted(name for name in exports if _LIFECYCLE.match(name))


def http_hook_exports(exports: frozenset[str]) -> list[str]:
    """Exports that are HTTP hooks, in the order the hooks run."""
    return [name for name in HTTP_HOOKS if name in exports]
