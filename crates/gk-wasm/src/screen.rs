//! What a module may declare, checked on its bytes before anything is compiled: one memory, a
//! few small tables, and only the WebAssembly proposals the ABI needs.
//!
//! The engine is built with the same proposals ([`engine_features`]) and the tunables cap every
//! memory and table, so these checks are the clear error in front of wasmer's own limits.

use wasmer::sys::Features;
use wasmer::wasmparser::{Parser, Payload, TypeRef, Validator, WasmFeatures};

use crate::WasmError;
use crate::limits::{MAX_TABLE_ELEMENTS, MAX_TABLES};

/// The proposals a plugin may use, in words, for errors and docs.
pub(crate) const ENABLED_PROPOSALS: &str = "MVP, mutable globals, sign extension, saturating \
    float-to-int, multi-value, bulk memory, reference types, SIMD, extended constants";

/// The proposals the engine compiles: what toolchains emit by default (Rust, C, TinyGo), and
/// nothing the ABI does not need. Off: threads (shared memory, atomics), multi-memory, memory64,
/// exceptions, tail calls, relaxed SIMD, wide arithmetic, module linking.
pub(crate) fn engine_features() -> Features {
    let mut features = Features::none();
    features
        .bulk_memory(true)
        .reference_types(true)
        .simd(true)
        .multi_value(true)
        .extended_const(true);
    features
}

/// The same set as wasmparser features (wasmer adds the MVP-era ones the same way).
fn validator_features() -> WasmFeatures {
    WasmFeatures::MUTABLE_GLOBAL
        | WasmFeatures::SATURATING_FLOAT_TO_INT
        | WasmFeatures::SIGN_EXTENSION
        | WasmFeatures::FLOATS
        | WasmFeatures::GC_TYPES
        | WasmFeatures::MULTI_VALUE
        | WasmFeatures::BULK_MEMORY
        | WasmFeatures::REFERENCE_TYPES
        | WasmFeatures::SIMD
        | WasmFeatures::EXTENDED_CONST
}

/// Refuses a module with more than one memory (declared or imported), more than
/// [`MAX_TABLES`] tables, or a table that starts above [`MAX_TABLE_ELEMENTS`]. Malformed bytes
/// are left to the compiler, which names the problem.
pub(crate) fn check_structure(wasm: &[u8]) -> Result<(), WasmError> {
    let (mut memories, mut tables) = (0usize, 0usize);
    let mut check_table = |initial: u64| {
        tables += 1;
        if initial > u64::from(MAX_TABLE_ELEMENTS) {
            return Err(WasmError::Limits(format!(
                "the module's table starts with {initial} elements; at most {MAX_TABLE_ELEMENTS} are allowed"
            )));
        }
        Ok(())
    };
    for payload in Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(Payload::ImportSection(imports)) => {
                for import in imports.into_imports().flatten() {
                    match import.ty {
                        TypeRef::Memory(_) => memories += 1,
                        TypeRef::Table(table) => check_table(table.initial)?,
                        _ => {}
                    }
                }
            }
            Ok(Payload::MemorySection(section)) => memories += section.count() as usize,
            Ok(Payload::TableSection(section)) => {
                for table in section.into_iter().flatten() {
                    check_table(table.ty.initial)?;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if memories > 1 {
        return Err(WasmError::Limits(format!(
            "the module has {memories} memories; a plugin has exactly one (`memory`), which \
             `memory_mb` caps"
        )));
    }
    if tables > MAX_TABLES {
        return Err(WasmError::Limits(format!(
            "the module has {tables} tables; at most {MAX_TABLES} are allowed"
        )));
    }
    Ok(())
}

/// The proposals GoatKit leaves off, each with the wasmparser features that make it up.
const DISABLED_PROPOSALS: &[(WasmFeatures, &str)] = &[
    (
        WasmFeatures::THREADS.union(WasmFeatures::SHARED_EVERYTHING_THREADS),
        "threads (shared memory, atomics)",
    ),
    (WasmFeatures::MULTI_MEMORY, "multi-memory"),
    (WasmFeatures::MEMORY64, "memory64"),
    (
        WasmFeatures::EXCEPTIONS.union(WasmFeatures::LEGACY_EXCEPTIONS),
        "exceptions",
    ),
    (WasmFeatures::TAIL_CALL, "tail calls"),
    (WasmFeatures::RELAXED_SIMD, "relaxed SIMD"),
    (WasmFeatures::WIDE_ARITHMETIC, "wide arithmetic"),
    (
        WasmFeatures::GC.union(WasmFeatures::FUNCTION_REFERENCES),
        "GC and typed function references",
    ),
    (WasmFeatures::CUSTOM_PAGE_SIZES, "custom page sizes"),
    (WasmFeatures::STACK_SWITCHING, "stack switching"),
];

/// Validates the module with the proposals the engine compiles. A module that is valid with
/// every proposal but not with those uses one GoatKit does not enable, and is told which: each
/// proposal without which the module no longer validates.
pub(crate) fn check_proposals(wasm: &[u8]) -> Result<(), WasmError> {
    let Err(refused) = Validator::new_with_features(validator_features()).validate_all(wasm) else {
        return Ok(());
    };
    if let Err(invalid) = Validator::new_with_features(WasmFeatures::all()).validate_all(wasm) {
        return Err(WasmError::Compile(format!("Validation error: {invalid}")));
    }
    let used: Vec<&str> = DISABLED_PROPOSALS
        .iter()
        .filter(|(features, _)| {
            Validator::new_with_features(WasmFeatures::all().difference(*features))
                .validate_all(wasm)
                .is_err()
        })
        .map(|(_, name)| *name)
        .collect();
    let proposals = if used.is_empty() {
        "a proposal".to_owned()
    } else {
        used.join(", ")
    };
    Err(WasmError::Unsupported(format!(
        "{proposals} ({refused}); plugins may use: {ENABLED_PROPOSALS}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wasm(text: &str) -> Vec<u8> {
        wat::parse_str(text).expect("valid WAT")
    }

    #[test]
    fn one_memory_and_small_tables_pass() {
        let ok = wasm("(module (memory 1) (table 10 funcref) (table 10 externref))");
        assert!(check_structure(&ok).is_ok());
        assert!(check_proposals(&ok).is_ok());
    }

    #[test]
    fn structure_refusals_name_the_limit() {
        for (text, expected) in [
            (
                "(module (memory 1) (memory 1))",
                "the module has 2 memories; a plugin has exactly one",
            ),
            (
                "(module (import \"env\" \"m\" (memory 1)) (memory 1))",
                "the module has 2 memories",
            ),
            (
                "(module (table 1 funcref) (table 1 funcref) (table 1 funcref) (table 1 funcref) (table 1 funcref))",
                "the module has 5 tables; at most 4 are allowed",
            ),
            (
                "(module (table 100001 funcref))",
                "the module's table starts with 100001 elements",
            ),
        ] {
            let error = check_structure(&wasm(text)).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn disabled_proposals_are_refused_by_name() {
        for (text, expected) in [
            ("(module (memory 1 1 shared))", "threads"),
            ("(module (memory i64 1))", "memory64"),
            ("(module (memory 1) (memory 1))", "multi-memory"),
            ("(module (tag) )", "exceptions"),
            ("(module (func $f) (func (return_call $f)))", "tail call"),
        ] {
            let error = check_proposals(&wasm(text)).expect_err(text);
            assert!(
                matches!(error, WasmError::Unsupported(_)),
                "{text}: {error:?}"
            );
            let message = error.to_string();
            assert!(message.contains(expected), "{text}: {message}");
        }
        let invalid = check_proposals(&wasm("(module (func (result i32)))")).unwrap_err();
        assert!(matches!(invalid, WasmError::Compile(_)), "{invalid:?}");
    }
}
