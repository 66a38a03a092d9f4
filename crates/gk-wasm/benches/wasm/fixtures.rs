//! Guests for the benchmark, in WAT.

/// Echoes its arguments (into a buffer of its own); the allocator wraps around at 1 MiB.
pub(crate) const ECHO: &str = r#"
(module
  (import "gk" "host_call" (func $host_call (param i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 20)
  (global $heap (mut i32) (i32.const 8192))
  (data (i32.const 16) "{\"name\":\"bench\",\"version\":\"1\"}")
  (data (i32.const 100) "translate")
  (data (i32.const 120) "{\"key\":\"k\"}")
  (func $malloc (export "gk_malloc") (param $size i32) (result i32)
    (local $p i32)
    (if (i32.gt_u (i32.add (global.get $heap) (local.get $size)) (i32.const 1245184))
      (then (global.set $heap (i32.const 8192))))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
  (func $pack (param $p i32) (param $l i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $l))))
  (func (export "gk_register") (result i64) (call $pack (i32.const 16) (i32.const 30)))
  (func (export "gk_call") (param $fp i32) (param $fl i32) (param $ap i32) (param $al i32) (result i64)
    (local $i i32) (local $out i32)
    ;; "host": 1000 host calls (translate {"key":"k"}) in one guest call
    (if (i32.eq (i32.load8_u (local.get $fp)) (i32.const 104))
      (then
        (loop $more
          (drop (call $host_call (i32.const 100) (i32.const 9) (i32.const 120) (i32.const 11)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $more (i32.lt_u (local.get $i) (i32.const 1000))))
        (return (i64.const 0))))
    (local.set $out (call $malloc (local.get $al)))
    (memory.copy (local.get $out) (local.get $ap) (local.get $al))
    (call $pack (local.get $out) (local.get $al)))
)
"#;

/// CPU-bound work, to measure what the deadline checks cost guest code and how close to the
/// deadline a guest that never calls the host stops.
pub(crate) const COMPUTE: &str = r#"
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"name\":\"compute\",\"version\":\"1\"}")
  (func (export "gk_malloc") (param i32) (result i32) (i32.const 8192))
  (func $fib (param $n i32) (result i32)
    (if (result i32) (i32.lt_u (local.get $n) (i32.const 2))
      (then (local.get $n))
      (else (i32.add (call $fib (i32.sub (local.get $n) (i32.const 1)))
                     (call $fib (i32.sub (local.get $n) (i32.const 2)))))))
  (func (export "gk_register") (result i64) (i64.const 0x1000000020))
  (func (export "gk_call") (param $fp i32) (param $fl i32) (param $ap i32) (param $al i32) (result i64)
    (local $i i32) (local $x i32) (local $c i32)
    (local.set $c (i32.load8_u (local.get $fp)))
    ;; "loop": 10 million iterations of a little arithmetic
    (if (i32.eq (local.get $c) (i32.const 108))
      (then
        (loop $more
          (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 31)) (local.get $i)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $more (i32.lt_u (local.get $i) (i32.const 10000000))))
        (i32.store (i32.const 0) (local.get $x))
        (return (i64.const 0))))
    ;; "fib": fib(27), about 630,000 calls
    (if (i32.eq (local.get $c) (i32.const 102))
      (then (i32.store (i32.const 0) (call $fib (i32.const 27))) (return (i64.const 0))))
    ;; "spin": forever
    (loop $l (br $l))
    (i64.const 0))
)
"#;
