//! `proxy`: a WAT guest whose every function is the host function of the same name, so a test
//! drives the host API through a real WASM plugin: calling `proxy`'s `http_request` with
//! `{url}` is the guest calling `http_request`.

/// What `proxy` asks for: the Go host's plugin.yaml example, `db` readwrite without scope
/// and `http` on one domain.
pub(crate) const PROXY_REGISTRATION: &str = r#"{"name":"proxy","version":"1.0.0","description":"host calls, forwarded","resources":{"permissions":[{"type":"db","access":"readwrite"},{"type":"http","scope":["*.tenor.com"]}]}}"#;

/// The proxy guest: `gk_call(f, args)` is `host_call(f, args)`, and a failed host call answers
/// the host's error (`host_error`).
pub(crate) fn proxy_module() -> Vec<u8> {
    proxy_module_registering(PROXY_REGISTRATION)
}

/// The proxy guest registering `registration` (JSON) instead.
pub(crate) fn proxy_module_registering(registration_json: &str) -> Vec<u8> {
    let registration = registration_json.replace('\\', "\\\\").replace('"', "\\\"");
    let wat = format!(
        r#"(module
  (import "gk" "host_call" (func $host_call (param i32 i32 i32 i32) (result i64)))
  (import "gk" "host_error" (func $host_error (result i64)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 8192))
  (func (export "gk_malloc") (param $size i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (local.set $p (global.get $heap))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.lt_s
              (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end) (local.get $have)) (i32.const 16)) (i32.const 1)))
              (i32.const 0))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))
  (data (i32.const 16) "{registration}")
  (func (export "gk_register") (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const {length})))
  (func (export "gk_call") (param $fp i32) (param $fl i32) (param $ap i32) (param $al i32) (result i64)
    (local $result i64)
    (local.set $result (call $host_call (local.get $fp) (local.get $fl) (local.get $ap) (local.get $al)))
    (if (result i64) (i64.eqz (local.get $result))
      (then (call $host_error))
      (else (local.get $result)))))"#,
        length = registration_json.len()
    );
    wat::parse_str(wat).unwrap()
}
