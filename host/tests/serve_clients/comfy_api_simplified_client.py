"""A real ComfyUI client library from PyPI against `diffgraph serve`.

`comfy-api-simplified` (installed into .venv by scripts/setup.sh) is one of
the client libraries people script ComfyUI with. This drives it the way its
README does: load an API workflow (titles in `_meta`, as ComfyUI's "Export
(API)" writes them), set parameters by node title, queue and wait for the
images over the WebSocket, then read them through /history and /view. It also
calls the library's other endpoints (object_info, system_stats, embeddings,
queue, upload). Any mismatch is an exception and a non-zero exit; the result
is printed as one JSON line for host/tests/serve_examples.rs to check.

usage: python comfy_api_simplified_client.py URL WORKFLOW.json IMAGE.png
"""
import json
import sys

from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper

TITLES = {
    "3": "KSampler",
    "4": "Load Checkpoint",
    "5": "Empty Latent Image",
    "6": "Positive",
    "7": "Negative",
    "8": "VAE Decode",
    "9": "Save Image",
}


def main(url, workflow_path, image_path):
    api = ComfyApiWrapper(url)
    info = api.get_object_info()
    for node in ("KSampler", "CheckpointLoaderSimple", "SaveImage"):
        assert node in info, f"/object_info lacks {node}"
    one = api.get_object_info("KSampler")
    assert one["KSampler"]["input"]["required"]["seed"][0] == "INT", one
    stats = api.get_system_stats()
    assert "system" in stats and "devices" in stats, stats
    embeddings = api.get_embeddings()
    assert isinstance(embeddings, list), embeddings

    with open(workflow_path, encoding="utf-8") as f:
        raw = json.load(f)
    for node_id, title in TITLES.items():
        raw[node_id]["_meta"] = {"title": title}
    wf = ComfyWorkflowWrapper(raw)
    assert sorted(wf.list_nodes()) == sorted(TITLES.values())
    wf.set_node_param("KSampler", "seed", 42)
    wf.set_node_param("KSampler", "steps", 2)
    wf.set_node_param("Empty Latent Image", "width", 64)
    wf.set_node_param("Empty Latent Image", "height", 64)
    wf.set_node_param("Positive", "text", "a red circle")
    wf.set_node_param("Save Image", "filename_prefix", "simplified")
    images = api.queue_and_wait_images(wf, "Save Image")
    assert images, "no images"
    for name, data in images.items():
        assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG"
    queue = api.get_queue()
    assert queue["queue_running"] == [] and queue["queue_pending"] == [], queue

    uploaded = api.upload_image(image_path)
    assert uploaded["name"], uploaded
    print(json.dumps({
        "images": sorted(images),
        "sizes": [len(d) for _, d in sorted(images.items())],
        "uploaded": uploaded,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:4])
