"""WebAssembly text for test plug-ins, hostile ones included."""

KERNEL = """
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_offset" (func $input_offset (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "log_info" (func $log_info (param i64)))
  (import "extism:host/env" "log_warn" (func $log_warn (param i64)))
  (import "extism:host/env" "config_get" (func $config_get (param i64) (result i64)))
  (import "extism:host/env" "error_set" (func $error_set (param i64)))
  (import "extism:host/env" "http_request" (func $http_request (param i64 i64) (result i64)))
"""

# Copies linear memory [ptr, ptr+len) into a new Extism block.
TO_BLOCK = """
  (func $to_block (param $ptr i32) (param $len i32) (result i64)
    (local $block i64) (local $i i32)
    (local.set $block (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done
      (loop $copy
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (call $store_u8
          (i64.add (local.get $block) (i64.extend_i32_u (local.get $i)))
          (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $copy)))
    (local.get $block))
"""

HOSTILE = f"""
(module
  {KERNEL}
  (import "extism:host/user" "host_echo" (func $host_echo (param i64) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "hello from the plug-in")
  (data (i32.const 64) "greeting")
  (data (i32.const 96) "the plug-in refuses this input")
  (data (i32.const 160) "{{\\"url\\": \\"http://127.0.0.1:9/\\", \\"method\\": \\"GET\\"}}")
  {TO_BLOCK}
  (func (export "echo") (result i32)
    (call $output_set (call $input_offset) (call $input_length))
    (i32.const 0))
  (func (export "log") (result i32)
    (call $log_info (call $to_block (i32.const 0) (i32.const 22)))
    (call $log_warn (call $input_offset))
    (i32.const 0))
  (func (export "config") (result i32) (local $value i64)
    (local.set $value (call $config_get (call $to_block (i32.const 64) (i32.const 8))))
    (if (i64.eqz (local.get $value)) (then (return (i32.const 0))))
    (call $output_set (local.get $value) (call $length (local.get $value)))
    (i32.const 0))
  (func (export "fail") (result i32)
    (call $error_set (call $to_block (i32.const 96) (i32.const 30)))
    (i32.const 1))
  (func (export "call_host") (result i32) (local $result i64)
    (local.set $result (call $host_echo (call $input_offset)))
    (call $output_set (local.get $result) (call $length (local.get $result)))
    (i32.const 0))
  (func (export "call_host_forever") (result i32)
    (loop $again (drop (call $host_echo (call $input_offset))) (br $again))
    (i32.const 0))
  (func (export "http") (result i32) (local $response i64)
    (local.set $response
      (call $http_request (call $to_block (i32.const 160) (i32.const 47)) (i64.const 0)))
    (call $output_set (local.get $response) (call $length (local.get $response)))
    (i32.const 0))
  (func (export "big_output") (result i32)
    (call $output_set (call $alloc (i64.const 2097152)) (i64.const 2097152))
    (i32.const 0))
  (func (export "infinite_loop") (result i32) (loop $forever (br $forever)) (i32.const 0))
  (func (export "memory_grow_bomb") (result i32)
    (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    (unreachable))
  (func (export "alloc_bomb") (result i32)
    (loop $more (drop (call $alloc (i64.const 1048576))) (br $more))
    (i32.const 0))
  (func (export "unreachable_trap") (result i32) (unreachable))
  (func (export "out_of_bounds") (result i32) (i32.load (i32.const 0x7ffffff0)))
  (func $recurse (export "infinite_recursion") (result i32)
    (i32.add (call $recurse) (i32.const 1)))
)
"""

# A WASI module: counts the environment variables and preopened directories
# it can see and outputs them as two decimal digits ("00" = nothing at all).
WASI_PROBE = f"""
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get"
    (func $fd_prestat_get (param i32 i32) (result i32)))
  {KERNEL}
  (memory (export "memory") 1)
  {TO_BLOCK}
  (func (export "probe") (result i32) (local $dirs i32)
    (drop (call $environ_sizes_get (i32.const 200) (i32.const 204)))
    (if (i32.eqz (call $fd_prestat_get (i32.const 3) (i32.const 208)))
      (then (local.set $dirs (i32.const 1))))
    (i32.store8 (i32.const 300) (i32.add (i32.const 48) (i32.load (i32.const 200))))
    (i32.store8 (i32.const 301) (i32.add (i32.const 48) (local.get $dirs)))
    (call $output_set (call $to_block (i32.const 300) (i32.const 2)) (i64.const 2))
    (i32.const 0))
)
"""


def caller(*functions: str) -> str:
    """A plug-in with one export per host function ``f``: ``call_f`` passes its
    input to ``f`` and outputs what ``f`` returned."""
    imports = "\n".join(
        f'  (import "extism:host/user" "{f}" (func ${f} (param i64) (result i64)))'
        for f in functions
    )
    exports = "\n".join(
        f"""  (func (export "call_{f}") (result i32) (local $r i64)
    (local.set $r (call ${f} (call $input_offset)))
    (call $output_set (local.get $r) (call $length (local.get $r)))
    (i32.const 0))"""
        for f in functions
    )
    return f'(module\n{KERNEL}\n{imports}\n  (memory (export "memory") 1)\n{exports}\n)'


def event_handler(*exports: str) -> str:
    """A plug-in whose exports report their input to host function ``note``, then
    trap if config ``trap`` is set, else output config ``answer`` (if any)."""
    functions = "\n".join(
        f"""  (func (export "{e}") (result i32) (local $v i64)
    (drop (call $note (call $input_offset)))
    (if (i64.ne (call $config_get (call $to_block (i32.const 16) (i32.const 4))) (i64.const 0))
      (then unreachable))
    (local.set $v (call $config_get (call $to_block (i32.const 0) (i32.const 6))))
    (if (i64.eqz (local.get $v)) (then (return (i32.const 0))))
    (call $output_set (local.get $v) (call $length (local.get $v)))
    (i32.const 0))"""
        for e in exports
    )
    return f"""(module
{KERNEL}
  (import "extism:host/user" "note" (func $note (param i64) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "answer")
  (data (i32.const 16) "trap")
{TO_BLOCK}
{functions}
)"""


def hook_handler(*exports: str) -> str:
    """Like ``event_handler``, but each export outputs the config value named
    after it (nothing when unset): one module plays any hook answer."""
    names = "".join(f'  (data (i32.const {256 + 64 * i}) "{e}")\n' for i, e in enumerate(exports))
    functions = "\n".join(
        f"""  (func (export "{e}") (result i32) (local $v i64)
    (drop (call $note (call $input_offset)))
    (if (i64.ne (call $config_get (call $to_block (i32.const 16) (i32.const 4))) (i64.const 0))
      (then unreachable))
    (local.set $v
      (call $config_get (call $to_block (i32.const {256 + 64 * i}) (i32.const {len(e)}))))
    (if (i64.eqz (local.get $v)) (then (return (i32.const 0))))
    (call $output_set (local.get $v) (call $length (local.get $v)))
    (i32.const 0))"""
        for i, e in enumerate(exports)
    )
    return f"""(module
{KERNEL}
  (import "extism:host/user" "note" (func $note (param i64) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 16) "trap")
{names}{TO_BLOCK}
{functions}
)"""


# Plug-ins that break the output and host-call contracts, and one that uses HTTP.
CONTRACT_BREAKER = f"""
(module
  {KERNEL}
  (import "extism:host/env" "http_status_code" (func $http_status_code (result i32)))
  (import "extism:host/env" "http_headers" (func $http_headers (result i64)))
  (import "extism:host/user" "host_echo" (func $host_echo (param i64) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "the guest ran on after a refused host call")
  {TO_BLOCK}
  (global $size (mut i64) (i64.const 52428800))
  (func (export "output_huge_offset") (result i32)
    (call $output_set (i64.const 0x7fffffffffff) (i64.const 10))
    (i32.const 0))
  (func (export "output_past_memory") (result i32)
    (call $output_set (call $alloc (i64.const 16)) (i64.const 0x10000000))
    (i32.const 0))
  (func (export "output_past_block") (result i32)
    (call $output_set (call $alloc (i64.const 16)) (i64.const 17))
    (i32.const 0))
  (func (export "output_unallocated") (result i32)
    (call $output_set (i64.const 60000) (i64.const 5))
    (i32.const 0))
  (func (export "output_negative") (result i32)
    (call $output_set (i64.const -8) (i64.const 5))
    (i32.const 0))
  (func (export "output_nothing") (result i32) (i32.const 0))
  ;; 50 MiB blocks whose pages are never written: they cost the host nothing
  ;; unless it copies them.
  (func (export "huge_host_input") (result i32) (local $r i64)
    (local.set $r (call $host_echo (call $alloc (global.get $size))))
    (call $output_set (local.get $r) (call $length (local.get $r)))
    (i32.const 0))
  (func (export "huge_output") (result i32)
    (call $output_set (call $alloc (global.get $size)) (global.get $size))
    (i32.const 0))
  ;; Calls host_echo forever, allocating a fresh input each time as PDKs do;
  ;; should a call answer 0 (refused), it logs that it ran on and returns.
  (func (export "host_calls_forever") (result i32) (local $r i64)
    (loop $again
      (local.set $r (call $host_echo (call $alloc (i64.const 64))))
      (if (i64.eqz (local.get $r))
        (then
          (call $log_warn (call $to_block (i32.const 0) (i32.const 42)))
          (return (i32.const 0))))
      (br $again))
    (i32.const 0))
  ;; The input is an http_request JSON; the output is the response body,
  ;; or its status as three digits, or its headers as JSON.
  (func (export "fetch_body") (result i32) (local $r i64)
    (local.set $r (call $http_request (call $input_offset) (i64.const 0)))
    (call $output_set (local.get $r) (call $length (local.get $r)))
    (i32.const 0))
  (func (export "fetch_status") (result i32) (local $s i32) (local $out i64)
    (drop (call $http_request (call $input_offset) (i64.const 0)))
    (local.set $s (call $http_status_code))
    (local.set $out (call $alloc (i64.const 3)))
    (call $store_u8 (local.get $out)
      (i32.add (i32.const 48) (i32.div_u (local.get $s) (i32.const 100))))
    (call $store_u8 (i64.add (local.get $out) (i64.const 1))
      (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $s) (i32.const 10)) (i32.const 10))))
    (call $store_u8 (i64.add (local.get $out) (i64.const 2))
      (i32.add (i32.const 48) (i32.rem_u (local.get $s) (i32.const 10))))
    (call $output_set (local.get $out) (i64.const 3))
    (i32.const 0))
  (func (export "fetch_headers") (result i32) (local $h i64)
    (drop (call $http_request (call $input_offset) (i64.const 0)))
    (local.set $h (call $http_headers))
    (call $output_set (local.get $h) (call $length (local.get $h)))
    (i32.const 0))
)
"""


# Takes the handle of its input, sleeps (WASI poll_oneoff, 300 ms: far past a
# short timeout_ms, and not cut off by it) and only then hands that valid block
# to output_set or http_request: the kernel replacement runs after the deadline.
LATE = f"""
(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  {KERNEL}
  (memory (export "memory") 1)
  (func $sleep
    ;; one relative clock subscription (48 bytes at 256), its event at 320
    (i64.store (i32.const 256) (i64.const 0))
    (i32.store8 (i32.const 264) (i32.const 0))
    (i32.store (i32.const 272) (i32.const 1))
    (i64.store (i32.const 280) (i64.const 300000000))
    (i64.store (i32.const 288) (i64.const 0))
    (i32.store16 (i32.const 296) (i32.const 0))
    (drop (call $poll_oneoff (i32.const 256) (i32.const 320) (i32.const 1) (i32.const 352))))
  (func (export "late_output") (result i32) (local $in i64) (local $n i64)
    (local.set $in (call $input_offset))
    (local.set $n (call $input_length))
    (call $sleep)
    (call $output_set (local.get $in) (local.get $n))
    (i32.const 0))
  (func (export "late_http") (result i32) (local $in i64)
    (local.set $in (call $input_offset))
    (call $sleep)
    (drop (call $http_request (local.get $in) (i64.const 0)))
    (i32.const 0))
)
"""
