//! The ABI v1 contract: which exports a guest must have, which imports the host provides, and
//! how packed pointers and guest memory are read and written.

use wasmer::{ExternType, FunctionType, MemoryView, Module, Type};

use crate::WasmError;

/// The host's import module.
pub(crate) const HOST_MODULE: &str = "gk";
/// The WASI module TinyGo guests import.
pub(crate) const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// The host functions of module `gk`, with their types (params, results).
pub(crate) const HOST_IMPORTS: &[(&str, &[Type], &[Type])] = &[
    (
        "host_call",
        &[Type::I32, Type::I32, Type::I32, Type::I32],
        &[Type::I64],
    ),
    ("log", &[Type::I32, Type::I32, Type::I32], &[]),
    // Extensions beyond v1; a v1 guest never imports them.
    ("host_error", &[], &[Type::I64]),
    ("fail", &[Type::I32, Type::I32, Type::I32, Type::I32], &[]),
    ("clock_ms", &[], &[Type::I64]),
];

/// What the guest exports, as far as the host cares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuestExports {
    pub(crate) has_free: bool,
}

fn describe(ty: &ExternType) -> String {
    match ty {
        ExternType::Function(f) => format!("function {f}"),
        ExternType::Memory(_) => "memory".to_owned(),
        ExternType::Table(_) => "table".to_owned(),
        ExternType::Global(_) => "global".to_owned(),
        ExternType::Tag(_) => "tag".to_owned(),
    }
}

fn expect_function(
    name: &str,
    ty: &ExternType,
    params: &[Type],
    results: &[Type],
) -> Result<(), WasmError> {
    let expected = FunctionType::new(params.to_vec(), results.to_vec());
    match ty {
        ExternType::Function(found) if *found == expected => Ok(()),
        other => Err(WasmError::WrongExport {
            name: name.to_owned(),
            expected: format!("function {expected}"),
            found: describe(other),
        }),
    }
}

/// The prefixes of the exports the host's metering and interrupt checks add to every module.
const RESERVED_EXPORT_PREFIXES: &[&str] = &["wasmer_metering", crate::interrupt::INTERRUPT_EXPORT];

/// Refuses a module that exports a name the host's metering or interrupt checks use (it would be
/// overwritten, and a guest must not touch its own fuel or flag). Read from the raw bytes, before
/// the middlewares add them.
pub(crate) fn refuse_reserved_exports(wasm: &[u8]) -> Result<(), WasmError> {
    use wasmer::wasmparser::{Parser, Payload};
    for payload in Parser::new(0).parse_all(wasm) {
        let Ok(Payload::ExportSection(exports)) = payload else {
            continue;
        };
        for export in exports.into_iter().flatten() {
            if RESERVED_EXPORT_PREFIXES
                .iter()
                .any(|prefix| export.name.starts_with(prefix))
            {
                return Err(WasmError::WrongExport {
                    name: export.name.to_owned(),
                    expected: "no export of that name (the host's limits use it)".to_owned(),
                    found: format!("{:?}", export.kind).to_lowercase(),
                });
            }
        }
    }
    Ok(())
}

/// Checks the exports and imports of a module against the ABI.
pub(crate) fn validate(module: &Module) -> Result<GuestExports, WasmError> {
    let exports: Vec<_> = module.exports().collect();
    let find = |name: &str| {
        exports
            .iter()
            .find(|e| e.name() == name)
            .map(|e| e.ty().clone())
    };
    match find("memory") {
        Some(ExternType::Memory(_)) => {}
        Some(other) => {
            return Err(WasmError::WrongExport {
                name: "memory".into(),
                expected: "memory".into(),
                found: describe(&other),
            });
        }
        None => {
            return Err(WasmError::MissingExport {
                name: "memory",
                what: "the host reads and writes arguments there",
            });
        }
    }
    let required: [(&'static str, &'static str, &[Type], &[Type]); 3] = [
        (
            "gk_malloc",
            "the host allocates argument buffers with it",
            &[Type::I32],
            &[Type::I32],
        ),
        (
            "gk_register",
            "it returns the registration JSON",
            &[],
            &[Type::I64],
        ),
        (
            "gk_call",
            "the host calls plugin functions through it",
            &[Type::I32, Type::I32, Type::I32, Type::I32],
            &[Type::I64],
        ),
    ];
    for (name, what, params, results) in required {
        let ty = find(name).ok_or(WasmError::MissingExport { name, what })?;
        expect_function(name, &ty, params, results)?;
    }
    let has_free = match find("gk_free") {
        Some(ty) => {
            expect_function("gk_free", &ty, &[Type::I32], &[])?;
            true
        }
        None => false,
    };

    for import in module.imports() {
        let (module_name, name) = (import.module(), import.name());
        let unknown = |hint: String| WasmError::UnknownImport {
            module: module_name.to_owned(),
            name: name.to_owned(),
            hint,
        };
        match (module_name, import.ty()) {
            (HOST_MODULE, ExternType::Function(found)) => {
                let Some((_, params, results)) = HOST_IMPORTS.iter().find(|(n, _, _)| *n == name)
                else {
                    return Err(unknown(format!(
                        " (module `gk` has {})",
                        HOST_IMPORTS
                            .iter()
                            .map(|i| i.0)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                let expected = FunctionType::new(params.to_vec(), results.to_vec());
                if *found != expected {
                    return Err(unknown(format!(" with type {found}: it is {expected}")));
                }
            }
            (WASI_MODULE, ExternType::Function(_)) => {}
            _ => return Err(unknown(String::new())),
        }
    }
    Ok(GuestExports { has_free })
}

/// Splits a packed `ptr << 32 | len` result.
pub(crate) fn unpack(packed: i64) -> (u32, u32) {
    let bits = packed as u64;
    ((bits >> 32) as u32, bits as u32)
}

/// Packs a pointer and a length.
pub(crate) fn pack(ptr: u32, len: u32) -> i64 {
    ((u64::from(ptr) << 32) | u64::from(len)) as i64
}

/// Reads `len` bytes at `ptr`, refusing a length above `max_len` (before anything else) or a
/// range outside memory; nothing is allocated for a refused read.
pub(crate) fn read(
    view: &MemoryView<'_>,
    ptr: u32,
    len: u32,
    max_len: usize,
    what: &str,
) -> Result<Vec<u8>, String> {
    if len as usize > max_len {
        return Err(format!(
            "{what} of {len} bytes is larger than the {max_len} bytes allowed"
        ));
    }
    let size = view.data_size();
    let end = u64::from(ptr) + u64::from(len);
    if end > size {
        return Err(format!(
            "{what} at {ptr}..{end} lies outside guest memory of {size} bytes"
        ));
    }
    let mut buffer = vec![0; len as usize];
    view.read(u64::from(ptr), &mut buffer)
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(buffer)
}

/// Reads a UTF-8 string at `ptr`.
pub(crate) fn read_str(
    view: &MemoryView<'_>,
    ptr: u32,
    len: u32,
    max_len: usize,
    what: &str,
) -> Result<String, String> {
    String::from_utf8(read(view, ptr, len, max_len, what)?)
        .map_err(|_| format!("{what} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips() {
        for (ptr, len) in [(0, 0), (1, 2), (u32::MAX, u32::MAX), (65_536, 17)] {
            assert_eq!(unpack(pack(ptr, len)), (ptr, len));
        }
        assert_eq!(unpack(-1), (u32::MAX, u32::MAX));
    }
}
