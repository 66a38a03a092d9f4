//! The guest side of the ABI: the allocator, the raw host imports and the export bodies the
//! [`export_plugin!`](crate::export_plugin) macro calls. Not for direct use.

use std::alloc::{Layout, alloc, dealloc};

use crate::GkRegistration;
use crate::guest::GuestError;

/// Bytes before each allocation holding its size, so `gk_free` needs only the pointer.
const HEADER: usize = 8;

#[cfg(target_arch = "wasm32")]
mod imports {
    #[link(wasm_import_module = "gk")]
    unsafe extern "C" {
        pub(crate) fn host_call(fn_ptr: i32, fn_len: i32, args_ptr: i32, args_len: i32) -> i64;
        pub(crate) fn host_error() -> i64;
        pub(crate) fn log(level: i32, ptr: i32, len: i32);
        pub(crate) fn fail(code_ptr: i32, code_len: i32, msg_ptr: i32, msg_len: i32);
        pub(crate) fn clock_ms() -> i64;
    }
}

/// Off wasm32 (for compiling and unit-testing plugin code on the host) there is no host.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::missing_safety_doc)]
mod imports {
    pub(crate) unsafe fn host_call(_: i32, _: i32, _: i32, _: i32) -> i64 {
        0
    }
    pub(crate) unsafe fn host_error() -> i64 {
        0
    }
    pub(crate) unsafe fn log(_: i32, _: i32, _: i32) {}
    pub(crate) unsafe fn fail(_: i32, _: i32, _: i32, _: i32) {}
    pub(crate) unsafe fn clock_ms() -> i64 {
        0
    }
}

fn layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(HEADER)?, HEADER).ok()
}

/// `gk_malloc`: a buffer of `size` bytes, or 0.
pub fn malloc(size: i32) -> i32 {
    let Ok(size) = usize::try_from(size) else {
        return 0;
    };
    let Some(layout) = layout(size) else { return 0 };
    // SAFETY: the layout has a non-zero size (HEADER > 0); the header is written inside it.
    unsafe {
        let base = alloc(layout);
        if base.is_null() {
            return 0;
        }
        base.cast::<usize>().write(size);
        base.add(HEADER) as usize as i32
    }
}

/// `gk_free`: releases a buffer from [`malloc`]; 0 is ignored.
pub fn free(ptr: i32) {
    if ptr == 0 {
        return;
    }
    // SAFETY: `ptr` came from `malloc`, which put the size HEADER bytes before it.
    unsafe {
        let base = (ptr as usize as *mut u8).sub(HEADER);
        let size = base.cast::<usize>().read();
        if let Some(layout) = layout(size) {
            dealloc(base, layout);
        }
    }
}

fn pack(ptr: i32, len: usize) -> i64 {
    ((i64::from(ptr as u32)) << 32) | (len as u32 as i64)
}

/// Copies bytes into a new buffer the host will free, and packs it.
fn leak(bytes: &[u8]) -> i64 {
    let ptr = malloc(bytes.len() as i32);
    if ptr == 0 {
        return 0;
    }
    // SAFETY: the buffer holds `bytes.len()` bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr as usize as *mut u8, bytes.len()) };
    pack(ptr, bytes.len())
}

/// Copies a packed buffer the host wrote (with [`malloc`]) out, and frees it.
fn take(packed: i64) -> Vec<u8> {
    let (ptr, len) = ((packed as u64 >> 32) as u32, packed as u32);
    if ptr == 0 {
        return Vec::new();
    }
    // SAFETY: the host wrote `len` bytes into a buffer it got from `malloc`.
    let bytes =
        unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, len as usize) }.to_vec();
    free(ptr as i32);
    bytes
}

/// Borrows `len` bytes at `ptr` (a buffer the host filled and will free).
fn view<'a>(ptr: i32, len: i32) -> &'a [u8] {
    if ptr == 0 || len <= 0 {
        return &[];
    }
    // SAFETY: the host wrote `len` bytes at `ptr` and keeps them until the call returns.
    unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, len as usize) }
}

/// `gk_register`.
pub fn register(register: fn() -> GkRegistration) -> i64 {
    leak(&register().to_json())
}

/// `gk_call`.
pub fn call(
    call: fn(&str, &[u8]) -> Result<Vec<u8>, GuestError>,
    fn_ptr: i32,
    fn_len: i32,
    args_ptr: i32,
    args_len: i32,
) -> i64 {
    let function = String::from_utf8_lossy(view(fn_ptr, fn_len)).into_owned();
    match call(&function, view(args_ptr, args_len)) {
        Ok(result) if result.is_empty() => 0,
        Ok(result) => leak(&result),
        Err(error) => {
            // SAFETY: both strings live until `fail` returns; the host copies them.
            unsafe {
                imports::fail(
                    error.code.as_ptr() as usize as i32,
                    error.code.len() as i32,
                    error.message.as_ptr() as usize as i32,
                    error.message.len() as i32,
                );
            }
            0
        }
    }
}

/// Calls `host_call`; on failure, the host's error detail.
pub(crate) fn host_call(function: &str, args: &[u8]) -> Result<Vec<u8>, Vec<u8>> {
    // SAFETY: the pointers and lengths describe live slices; the host copies them.
    let packed = unsafe {
        imports::host_call(
            function.as_ptr() as usize as i32,
            function.len() as i32,
            args.as_ptr() as usize as i32,
            args.len() as i32,
        )
    };
    if packed == 0 {
        // SAFETY: no arguments.
        return Err(take(unsafe { imports::host_error() }));
    }
    Ok(take(packed))
}

/// Calls the `log` import.
pub(crate) fn log(level: i32, message: &str) {
    // SAFETY: the message lives until the host has copied it.
    unsafe {
        imports::log(
            level,
            message.as_ptr() as usize as i32,
            message.len() as i32,
        )
    }
}

/// Milliseconds since the Unix epoch, from the host's clock (0 off wasm32).
pub fn clock_ms() -> i64 {
    // SAFETY: no arguments.
    unsafe { imports::clock_ms() }
}
