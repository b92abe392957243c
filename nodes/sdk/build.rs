//! Records which libtorch this SDK is built against, for the plugin handshake:
//! a tensor handle is only valid between host and plugin when both use the same
//! tch, the same dynamically linked libtorch and the same C++ string ABI.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").unwrap_or_default();
    let version = libtorch_version(Path::new(&lib)).unwrap_or_else(|| "unknown".into());
    let cxx11 = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    println!("cargo:rustc-env=DIFFGRAPH_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-env=DIFFGRAPH_CXX11_ABI={cxx11}");
    println!("cargo:rustc-env=DIFFGRAPH_LIBTORCH_LIB={lib}");
}

/// libtorch's version: `version.py` in a PyTorch wheel, `build-version` in a
/// standalone libtorch archive (both sit one level above `lib/`).
fn libtorch_version(lib: &Path) -> Option<String> {
    let root = lib.parent()?;
    println!(
        "cargo:rerun-if-changed={}",
        root.join("version.py").display()
    );
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("__version__") {
                return Some(
                    rest.trim_start_matches([' ', '='])
                        .trim()
                        .trim_matches('\'')
                        .trim_matches('"')
                        .to_string(),
                );
            }
        }
    }
    std::fs::read_to_string(root.join("build-version"))
        .ok()
        .map(|s| s.trim().to_string())
}
