//! ComfyUI's editor (UI) format: the default UI workflow gives the API
//! workflow's image; primitives, reroutes, notes, muted and bypassed nodes
//! (moved out of comfy.rs, which covers the API format).
mod common;

use common::comfy_support::*;

const UI_WORKFLOW: &str = "tests/fixtures/comfy/default-ui-workflow.json";

/// The default workflow as ComfyUI's editor saves it gives the API
/// workflow's image, byte for byte.
#[test]
fn the_ui_workflow_gives_the_api_workflows_image() {
    let models = common::tiny_sd1_models_folder();
    let out = tempfile::tempdir().unwrap();
    for (wf, prefix) in [(WORKFLOW, "api"), (UI_WORKFLOW, "ui")] {
        let set_prefix = format!("9.filename_prefix={prefix}");
        ok(&diffgraph(&[
            "run",
            wf,
            "--quiet",
            "--threads",
            "1",
            "--models",
            models.path().to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
            "--set",
            "3.steps=2",
            "--set",
            "5.width=32",
            "--set",
            "5.height=32",
            "--set",
            &set_prefix,
        ]));
    }
    let read = |p: &str| std::fs::read(out.path().join(p)).unwrap();
    assert!(read("api.png") == read("ui.png"));
}

fn convert(path: &str) -> String {
    ok(&diffgraph(&[
        "convert",
        path,
        "--set",
        "4.ckpt_name=shapes-ldm",
    ]))
}

/// PrimitiveNode values, Reroutes, Notes, muted and bypassed nodes as the
/// frontend's graphToPrompt treats them: this variant of the default UI
/// workflow converts to exactly the API workflow's graph.
#[test]
fn ui_primitives_reroutes_notes_muted_and_bypassed_nodes() {
    let mut ui: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(UI_WORKFLOW)).unwrap()).unwrap();
    let node = |ui: &mut serde_json::Value, id: i64| -> serde_json::Value {
        ui["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .unwrap()
            .clone()
    };
    let set_node = |ui: &mut serde_json::Value, n: serde_json::Value| {
        let nodes = ui["nodes"].as_array_mut().unwrap();
        nodes.retain(|m| m["id"] != n["id"]);
        nodes.push(n);
    };
    let links = |ui: &mut serde_json::Value| ui["links"].as_array_mut().unwrap().clone();
    let mut all = links(&mut ui);
    // The seed from a PrimitiveNode (the KSampler's own widget value is stale).
    let mut ks = node(&mut ui, 3);
    ks["widgets_values"][0] = serde_json::json!(1);
    ks["inputs"].as_array_mut().unwrap().push(serde_json::json!(
        {"name": "seed", "type": "INT", "link": 10, "widget": {"name": "seed"}}));
    set_node(&mut ui, ks);
    set_node(
        &mut ui,
        serde_json::json!({"id": 10, "type": "PrimitiveNode", "mode": 0, "inputs": [],
        "outputs": [{"name": "INT", "type": "INT", "links": [10]}], "widgets_values": [8566257, "fixed"]}),
    );
    all.push(serde_json::json!([10, 10, 0, 3, 4, "INT"]));
    // The VAE through a Reroute; a Note; a muted SaveImage.
    all.retain(|l| l[0] != 8);
    all.push(serde_json::json!([8, 4, 2, 11, 0, "*"]));
    all.push(serde_json::json!([11, 11, 0, 8, 1, "VAE"]));
    let mut dec = node(&mut ui, 8);
    dec["inputs"][1]["link"] = serde_json::json!(11);
    set_node(&mut ui, dec);
    set_node(
        &mut ui,
        serde_json::json!({"id": 11, "type": "Reroute", "mode": 0,
        "inputs": [{"name": "", "type": "*", "link": 8}], "outputs": [{"name": "", "type": "VAE", "links": [11]}]}),
    );
    set_node(
        &mut ui,
        serde_json::json!({"id": 12, "type": "Note", "mode": 0, "inputs": [], "outputs": [],
        "widgets_values": ["a note"]}),
    );
    set_node(
        &mut ui,
        serde_json::json!({"id": 13, "type": "SaveImage", "mode": 2,
        "inputs": [{"name": "images", "type": "IMAGE", "link": 13}], "outputs": [], "widgets_values": ["muted"]}),
    );
    all.push(serde_json::json!([13, 8, 0, 13, 0, "IMAGE"]));
    // A bypassed CLIPSetLastLayer before the positive prompt's encoder.
    all.retain(|l| l[0] != 3);
    all.push(serde_json::json!([3, 4, 1, 14, 0, "CLIP"]));
    all.push(serde_json::json!([14, 14, 0, 6, 0, "CLIP"]));
    let mut pos = node(&mut ui, 6);
    pos["inputs"][0]["link"] = serde_json::json!(14);
    set_node(&mut ui, pos);
    set_node(
        &mut ui,
        serde_json::json!({"id": 14, "type": "CLIPSetLastLayer", "mode": 4,
        "inputs": [{"name": "clip", "type": "CLIP", "link": 3}],
        "outputs": [{"name": "CLIP", "type": "CLIP", "links": [14]}], "widgets_values": [-2]}),
    );
    ui["links"] = serde_json::Value::Array(all);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ui.json");
    std::fs::write(&path, ui.to_string()).unwrap();
    assert_eq!(convert(path.to_str().unwrap()), convert(WORKFLOW));

    // A muted node's consumers lose that input.
    let mut neg = node(&mut ui, 7);
    neg["mode"] = serde_json::json!(2);
    set_node(&mut ui, neg);
    std::fs::write(&path, ui.to_string()).unwrap();
    let err = refused(&diffgraph(&[
        "convert",
        path.to_str().unwrap(),
        "--set",
        "4.ckpt_name=shapes-ldm",
    ]));
    assert!(
        err.contains("node `3`, input `negative`: required input missing"),
        "{err}"
    );
}
