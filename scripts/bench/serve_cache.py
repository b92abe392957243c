#!/usr/bin/env python3
"""Memory of `diffgraph serve` with checkpoints alternating over jobs, with and
without `--cache-mb`: the worker's peak RSS (VmHWM) and how many jobs had to
(re)load their checkpoint (the loader not in the job's `execution_cached`).

Usage: scripts/bench/serve_cache.py [--models K] [--jobs N] [--budget MB ...]
K copies of the demo model (models/shapes-ldm, copied to a temp folder, so
each is its own checkpoint) are used in turn, A B A B ... (K=2) or A B C A B C
(K=3), N jobs per configuration; each job samples with its own seed. One
server per configuration: no budget (the default: results used by the last two
jobs stay), then each --budget. Standard library only; run after
`cargo build --release --workspace`.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "target", "release", "diffgraph")


def http(port, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data), timeout=600) as r:
        return json.loads(r.read())


def worker_pid(server_pid):
    # The job-runner thread starts the worker: look at every thread's children.
    kids = []
    for tid in os.listdir(f"/proc/{server_pid}/task"):
        with open(f"/proc/{server_pid}/task/{tid}/children") as f:
            kids += f.read().split()
    for k in kids:
        try:
            with open(f"/proc/{k}/cmdline", "rb") as f:
                if b"worker" in f.read().split(b"\0"):
                    return int(k)
        except OSError:
            pass
    return None


def rss_mib(pid, field):
    """VmHWM: peak resident memory; VmRSS: now."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_config(models, jobs, budget, work):
    demo = json.load(open(os.path.join(ROOT, "graphs", "demo.json")))
    out = tempfile.mkdtemp(dir=work)
    cmd = [BIN, "serve", "--port", "0", "--output", out, "--input", out]
    for p in ["diffgraph_nodes_core", "diffgraph_nodes_sd", "diffgraph_nodes_sampling", "diffgraph_nodes_guidance"]:
        cmd += ["--plugins", os.path.join(ROOT, "target", "release", f"lib{p}.so")]
    if budget is not None:
        cmd += ["--cache-mb", str(budget)]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = None
        for line in server.stdout:
            if line.startswith("listening on http://"):
                port = int(line.strip().rsplit(":", 1)[1])
                break
        reloads, seconds = 0, []
        for j in range(jobs):
            g = json.loads(json.dumps(demo))
            g["nodes"]["ckpt"]["inputs"]["path"] = models[j % len(models)]
            g["nodes"]["noise"]["inputs"]["seed"] = 1000 + j
            t = time.time()
            pid = http(port, "/prompt", {"prompt": g})["prompt_id"]
            while True:
                h = http(port, f"/history/{pid}")
                if pid in h:
                    break
                time.sleep(0.05)
            seconds.append(time.time() - t)
            h = h[pid]
            assert h["status"]["status_str"] == "success", h
            cached = [n for kind, d in h["status"]["messages"] if kind == "execution_cached" for n in d["nodes"]]
            reloads += "ckpt" not in cached
        worker = worker_pid(server.pid)
        return rss_mib(worker, "VmHWM"), rss_mib(worker, "VmRSS"), reloads, sum(seconds) / len(seconds)
    finally:
        server.terminate()
        server.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--budget", type=int, action="append", default=[])
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="diffgraph-cache-bench-")
    try:
        models = []
        for i in range(a.models):
            dst = os.path.join(work, f"model{i}")
            shutil.copytree(os.path.join(ROOT, "models", "shapes-ldm"), dst)
            models.append(dst)
        print(f"load average {open('/proc/loadavg').read().split()[:3]}")
        print(f"{a.models} checkpoints in turn, {a.jobs} jobs per configuration")
        print("| --cache-mb | worker peak RSS (MiB) | worker RSS at the end (MiB) | checkpoint loads | mean s/job |")
        print("|---|---|---|---|---|")
        for budget in [None] + a.budget:
            peak, end, reloads, sec = run_config(models, a.jobs, budget, work)
            print(f"| {budget if budget is not None else 'none'} | {peak:.0f} | {end:.0f} | {reloads} of {a.jobs} | {sec:.2f} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
