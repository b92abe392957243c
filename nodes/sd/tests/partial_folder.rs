//! A diffusers folder gives only the parts it has: without `vae/` the U-Net
//! and text encoder still load, and the VAE handle says what is missing.
use diffgraph_nodes_sd::nodes::component::Component;
use diffgraph_nodes_sd::nodes::loader::load;
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

fn copy_dir(from: &Path, to: &Path, skip: &str) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, name) = (entry.path(), entry.file_name());
        if name == skip {
            continue;
        }
        if src.is_dir() {
            copy_dir(&src, &to.join(&name), skip);
        } else {
            std::fs::copy(&src, to.join(&name)).unwrap();
        }
    }
}

#[test]
fn a_folder_without_vae_still_gives_the_model() {
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sd/sd1-tiny");
    let dir = std::env::temp_dir().join(format!("diffgraph-no-vae-{}", std::process::id()));
    copy_dir(&fixture, &dir, "vae");
    let loaded = load(&dir, None, Kind::Float, Device::Cpu);
    std::fs::remove_dir_all(&dir).ok();
    let loaded = loaded.unwrap();
    assert!(loaded.clip.is_ok());
    let vae = Component::new("VAE", loaded.vae);
    let err = vae.lock().err().unwrap().0;
    assert!(
        err.contains("has no VAE") && err.contains("no vae/"),
        "{err}"
    );
}
