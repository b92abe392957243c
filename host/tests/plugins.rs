//! The plugin ABI: the handshake refusing foreign builds, libraries that are
//! not plugins, and tensors crossing the boundary without copies or leaks.
mod common;

use diffgraph::{Executor, Registry, Value};

#[test]
fn handshake_refuses_another_abi_version_and_the_host_keeps_going() {
    diffgraph::device::init();
    let mut registry = Registry::new();
    let err = registry
        .load_file(&common::plugin_path("diffgraph_testnodes_bad_abi"))
        .err()
        .expect("must be refused");
    assert!(err.message.contains("ABI version 999"), "{err}");
    assert!(
        err.message
            .contains(&format!("ABI version {}", diffgraph_sdk::abi::ABI_VERSION)),
        "{err}"
    );
    assert!(registry.libraries().is_empty());
    // A good plugin still loads into the same registry afterwards.
    registry
        .load_file(&common::plugin_path("diffgraph_testnodes"))
        .expect("good plugin loads");
    assert!(registry.get("Count").is_some());
}

#[test]
fn a_library_that_is_not_a_plugin_is_refused() {
    let libtorch = diffgraph::device::libtorch_dir()
        .expect("libtorch is mapped")
        .join("libc10.so");
    let err = Registry::new().load_file(&libtorch).err().expect("refused");
    assert!(err.message.contains("not a diffgraph plugin"), "{err}");
    let err = Registry::new()
        .load_file(std::path::Path::new("/nonexistent/libx.so"))
        .err()
        .expect("refused");
    assert!(err.message.contains("cannot open"), "{err}");
}

#[test]
fn loading_a_folder_reports_each_failure_and_loads_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::plugin_path("diffgraph_testnodes"),
        dir.path().join("libgood.so"),
    )
    .unwrap();
    std::fs::copy(
        common::plugin_path("diffgraph_testnodes_bad_abi"),
        dir.path().join("libbad.so"),
    )
    .unwrap();
    std::fs::write(dir.path().join("libtruncated.so"), b"\x7fELF not really").unwrap();
    let mut registry = Registry::new();
    let source = diffgraph::plugin::discovery::PluginSource::new(dir.path(), "");
    let errors = diffgraph::plugin::discovery::load_into(&mut registry, &[source]);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(registry.get("AddInt").is_some());
}

#[test]
fn the_schema_crosses_as_declared() {
    let registry = common::registry_with(&["diffgraph_testnodes"]);
    let t = registry.get("ReadCounter").unwrap();
    let offset = &t.schema.inputs[1];
    assert_eq!(
        (offset.name.as_str(), offset.min, offset.max),
        ("offset", Some(-100.0), Some(100.0))
    );
    assert_eq!(
        t.schema.inputs[2].choices.as_deref(),
        Some(&["add".to_string(), "sub".to_string()][..])
    );
    assert!(registry.get("Sink").unwrap().schema.output_node);
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// 10,000 trips through a plugin: the tensor's storage is shared (no copies)
/// and resident memory stays flat (no leaked handles).
#[test]
fn tensors_cross_ten_thousand_times_without_copies_or_growth() {
    let exec = Executor::new(common::registry_with(&["diffgraph_testnodes"]));
    // 4 MB tensor: a leak of one handle per trip would be obvious; so would copies.
    let t = tch::Tensor::ones([1024, 1024], (tch::Kind::Float, tch::Device::Cpu));
    let ptr = t.data_ptr() as usize;
    // Call the plugin node directly through the registry 10,000 times.
    let node = exec.registry.get("PassTensor").unwrap().clone();
    let mut value = Value::Tensor(diffgraph::value::SharedTensor::new(t));
    let warmup = 100;
    let mut rss_after_warmup = 0;
    for i in 0..10_000 {
        let out = diffgraph::plugin::call_node(&node, &[&value]).expect("call");
        value = out.into_iter().next().unwrap();
        if i == warmup {
            rss_after_warmup = rss_bytes();
        }
    }
    let Value::Tensor(result) = &value else {
        panic!("{value:?}")
    };
    assert_eq!(
        result.tensor().data_ptr() as usize,
        ptr,
        "the storage was copied"
    );
    let growth = rss_bytes() as i64 - rss_after_warmup as i64;
    assert!(
        growth < 8 << 20,
        "resident memory grew by {growth} bytes over 10,000 trips"
    );
}
