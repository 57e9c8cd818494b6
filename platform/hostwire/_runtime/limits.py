"""Resource limits of a plug-in: always on, with safe defaults."""

from __future__ import annotations

from dataclasses import dataclass

WASM_PAGE_BYTES = 64 * 1024
PAGES_PER_MIB = (1024 * 1024) // WASM_PAGE_BYTES


@dataclass(frozen=True, slots=True)
class Limits:
    """What one call of one plug-in may use.

    ``memory_mib`` bounds the plug-in's linear memory *and* the Extism kernel's
    own memory (which uses about 1 MiB), so it must be at least 2.
    """

    timeout_ms: int = 1000
    memory_mib: int = 32
    max_input_bytes: int = 1024 * 1024
    max_output_bytes: int = 1024 * 1024
    max_host_calls: int = 1000
    max_instances: int = 64
    # What one host call may read from the plug-in's memory; checked from the
    # block's length before anything is copied (an oversize call gets a 413).
    max_host_input_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        for field in (
            "timeout_ms",
            "memory_mib",
            "max_input_bytes",
            "max_output_bytes",
            "max_instances",
            "max_host_input_bytes",
        ):
            if getattr(self, field) < 1:
                raise ValueError(f"limit {field} must be at least 1, not {getattr(self, field)}")
        if self.memory_mib < 2:
            raise ValueError(
                f"limit memory_mib must be at least 2 (the Extism kernel needs 1 MiB), "
                f"not {self.memory_mib}"
            )
        if self.max_host_calls < 0:
            raise ValueError(f"limit max_host_calls must be 0 or more, not {self.max_host_calls}")

    @property
    def max_pages(self) -> int:
        """The memory limit in 64 KiB WebAssembly pages, as Extism wants it."""
        return self.memory_mib * PAGES_PER_MIB
