//! Graph texts for the guidance tests: the repository's graphs/gmm_*.json
//! with absolute fixture paths, and edits of them.

pub fn root() -> String {
    format!("{}/..", env!("CARGO_MANIFEST_DIR"))
}

/// Graph text with its fixture paths made absolute (graphs name them relative
/// to the repository root, tests run in host/).
pub fn graph_text(name: &str) -> String {
    let text = std::fs::read_to_string(format!("{}/graphs/{name}", root())).expect("graph file");
    text.replace(
        "\"tests/fixtures/",
        &format!("\"{}/tests/fixtures/", root()),
    )
}

/// `text` without input `input` of node `node` (top level or in a loop body).
pub fn without(text: &str, node: &str, input: &str) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(text).unwrap();
    let nodes = doc["nodes"].as_object_mut().unwrap();
    let n = match nodes.get_mut(node) {
        Some(n) => n,
        None => &mut nodes.get_mut("sampling").unwrap()["body"][node],
    };
    assert!(
        n["inputs"].as_object_mut().unwrap().remove(input).is_some(),
        "{node}.{input}"
    );
    doc.to_string()
}

/// `graph` run with a sigma sampler: ScaleModelInput before the model, and
/// (for classifier guidance) the sample it made and SchedulerAlphaBar's ᾱ.
pub fn with_scaled_input(graph: &str, guided: bool) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(&graph_text(graph)).unwrap();
    let body = doc["nodes"]["sampling"]["body"].as_object_mut().unwrap();
    let scaled = serde_json::json!({"type": "ScaleModelInput", "inputs": {"state": ["sampling", "state"],
        "timestep": ["sampling", "item"], "sample": ["sampling", "latent"]}});
    body.insert("scaled".into(), scaled);
    body["eps"]["inputs"]["sample"] = serde_json::json!(["scaled", "sample"]);
    if guided {
        let ab = serde_json::json!({"type": "SchedulerAlphaBar", "inputs": {"state": ["sampling", "state"], "timestep": ["sampling", "item"]}});
        body.insert("ab".into(), ab);
        body["guide"]["inputs"]["sample"] = serde_json::json!(["scaled", "sample"]);
        body["guide"]["inputs"]["alpha_bar"] = serde_json::json!(["ab", "alpha_bar"]);
    }
    doc.to_string()
}
