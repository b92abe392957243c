//! A plugin as a build against a future SDK would look to this host: its
//! descriptor claims ABI version 999. The host must refuse it, naming both
//! versions, and keep running. Written by hand (not with `export_plugin!`)
//! precisely because it breaks the protocol. The two items that need unsafe
//! code say so; the rest of the crate may not use any.
#![deny(unsafe_code)]
use diffgraph_sdk::abi::{AbiCall, AbiStatus, AbiStr, PluginDescriptor};

extern "C" fn never_run(_node: u32, _call: *const AbiCall) -> AbiStatus {
    AbiStatus::Error
}

struct Desc(PluginDescriptor);
// SAFETY: immutable static data pointing to static strings.
#[allow(unsafe_code)]
unsafe impl Sync for Desc {}

static DESCRIPTOR: Desc = Desc(PluginDescriptor {
    abi_version: 999,
    struct_size: std::mem::size_of::<PluginDescriptor>() as u32,
    value_size: 0,
    call_size: 0,
    compat: AbiStr {
        ptr: b"future".as_ptr(),
        len: 6,
    },
    plugin_name: AbiStr {
        ptr: b"bad-abi".as_ptr(),
        len: 7,
    },
    schema_json: AbiStr {
        ptr: b"[]".as_ptr(),
        len: 2,
    },
    run: never_run,
});

/// The entry symbol, with the wrong version inside.
#[allow(unsafe_code)] // `no_mangle`: the symbol the host looks up
#[no_mangle]
pub extern "C" fn diffgraph_plugin_entry() -> *const PluginDescriptor {
    &DESCRIPTOR.0
}
