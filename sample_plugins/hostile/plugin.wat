;; hostile: a plug-in that misbehaves on purpose, to show hostwire's limits.
;;   hostwire plugin call sample_plugins/hostile/plugin.wat spin --timeout-ms 200
(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_offset" (func $input_offset (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (memory (export "memory") 1)
  ;; Behaves: returns its input.
  (func (export "echo") (result i32)
    (call $output_set (call $input_offset) (call $input_length))
    (i32.const 0))
  ;; Never returns.
  (func (export "spin") (result i32) (loop $forever (br $forever)) (i32.const 0))
  ;; Grows its memory until refused, then keeps asking the kernel for more.
  (func (export "hog") (result i32)
    (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    (loop $more (drop (call $alloc (i64.const 1048576))) (br $more))
    (i32.const 0))
  ;; Reads far outside its memory.
  (func (export "crash") (result i32) (i32.load (i32.const 0x7ffffff0)))
)
