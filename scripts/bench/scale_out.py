#!/usr/bin/env python3
"""Scale-out benchmark (issue 19; docs/scale-out.md, BENCHMARKS.md).

Runs the release binary against a redis-server it starts on a free loopback
port (Debian's package: scripts/setup.sh installs it) and measures:
  1. jobs/s of a trivial graph through the in-process queue (`serve`) and
     through Redis (`serve --queue` + 1 and 2 `worker --queue`);
  2. the latency one job adds (POST /prompt to its history entry, one job at
     a time, median), in-process vs Redis;
  3. the demo model (graphs/demo.json, seeds varied) with 1 vs 2 workers;
  4. model affinity: 16 jobs alternating two checkpoints (two names of the
     demo model) over 2 workers holding one model each (--max-models 1),
     with and without affinity: loads and wall time.
Prints one line per measure and the load average before and after.
Usage: scripts/bench/scale_out.py [--quick]
"""
import json, os, socket, subprocess, sys, tempfile, threading, time, urllib.request, statistics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "diffgraph")
PLUG = lambda n: os.path.join(ROOT, "target", "release", f"lib{n}.so")
LIGHT = ["diffgraph_nodes_core", "diffgraph_testnodes"]
MODEL = LIGHT + ["diffgraph_nodes_sd", "diffgraph_nodes_sampling", "diffgraph_nodes_guidance"]
QUICK = "--quick" in sys.argv
procs = []


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def drain(pipe):
    threading.Thread(target=lambda: [None for _ in pipe], daemon=True).start()


def plugin_args(names):
    return [a for n in names for a in ("--plugins", PLUG(n))]


def start_redis(d):
    port = free_port()
    p = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                          "--appendonly", "no", "--dir", d, "--logfile", "redis.log"], stdout=subprocess.DEVNULL)
    procs.append(p)
    for _ in range(500):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(7) == b"+PONG\r\n":
                    return f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    raise SystemExit("redis-server did not start")


def start_server(d, plugins, queue=None):
    cmd = [BIN, "serve", "--port", "0", "--output", os.path.join(d, "output"), "--input",
           os.path.join(d, "input"), "--models", os.path.join(ROOT, "models")] + plugin_args(plugins)
    if queue:
        cmd += ["--queue", queue]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs.append(p)
    for line in p.stdout:
        if line.startswith("listening on http://"):
            drain(p.stdout)
            return int(line.strip().rsplit(":", 1)[1])
    raise SystemExit("serve did not start")


def start_worker(d, url, name, plugins, extra=()):
    cmd = [BIN, "worker", "--queue", url, "--name", name, "--out", os.path.join(d, "output"),
           "--input", os.path.join(d, "input"), "--models", os.path.join(ROOT, "models")]
    p = subprocess.Popen(cmd + plugin_args(plugins) + list(extra), cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    procs.append(p)
    for line in p.stderr:
        if ": ready (" in line:
            drain(p.stderr)
            return p
    raise SystemExit("worker did not start")


def http(port, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=None if body is None else
                                 json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def post(port, graph):
    return http(port, "/prompt", {"prompt": graph})["prompt_id"]


def wait_all(port, ids, limit=600):
    """Polls the queue length (one cheap call), then checks every history entry once."""
    t = time.time()
    while http(port, "/prompt")["exec_info"]["queue_remaining"] > 0:
        if time.time() - t > limit:
            raise SystemExit("jobs did not finish")
        time.sleep(0.002)
    for _ in range(1000):
        h = http(port, "/history")
        if all(i in h for i in ids):
            break
        time.sleep(0.002)
    bad = [i for i in ids if not h.get(i, {}).get("status", {}).get("completed")]
    if bad:
        raise SystemExit(f"failed jobs: {h.get(bad[0])}")


def trivial(k):
    return {"nodes": {"out": {"type": "Sink", "inputs": {"x": k}}}}


def throughput(port, graphs):
    t = time.time()
    ids = [post(port, g) for g in graphs]
    wait_all(port, ids)
    return len(ids) / (time.time() - t)


def latency(port, graphs):
    out = []
    for g in graphs:
        t = time.time()
        i = post(port, g)
        while i not in http(port, f"/history/{i}"):
            time.sleep(0.0005)
        out.append((time.time() - t) * 1000)
    return statistics.median(out)


def redis_commands(url):
    """Redis's total_commands_processed (INFO stats), over a raw socket."""
    host, port = url[len("redis://"):].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"INFO stats\r\n")
        data = b""
        while b"total_commands_processed:" not in data or not data.endswith(b"\r\n"):
            data += s.recv(65536)
    line = [l for l in data.decode().splitlines() if l.startswith("total_commands_processed:")][0]
    return int(line.split(":")[1])


def stop_all():
    for p in procs:
        p.kill(); p.wait()
    procs.clear()


def status(url):
    return json.loads(subprocess.check_output([BIN, "queue", "status", "--queue", url, "--json"]))


def demo_graph(seed, path="models/shapes-ldm"):
    g = json.load(open(os.path.join(ROOT, "graphs", "demo.json")))
    g["nodes"]["noise"]["inputs"]["seed"] = seed
    g["nodes"]["ckpt"]["inputs"]["path"] = path
    return g


class Results(dict):
    """Prints each measure as it is recorded."""
    def __setitem__(self, k, v):
        super().__setitem__(k, v)
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}", flush=True)


def main():
    print("load average before:", open("/proc/loadavg").read().strip())
    n = 100 if QUICK else 300
    rounds = 1 if QUICK else 5
    res = Results()
    # The three set-ups side by side, measured in interleaved rounds (the
    # machine is shared: each round sees the same load); medians reported.
    dirs = [tempfile.TemporaryDirectory() for _ in range(3)]
    setups = {"inprocess": (start_server(dirs[0].name, LIGHT), None)}
    for workers, d in ((1, dirs[1].name), (2, dirs[2].name)):
        url = start_redis(d)
        port = start_server(d, LIGHT, url)
        for w in range(workers):
            start_worker(d, url, f"w{w}", LIGHT)
        setups[f"redis_{workers}w"] = (port, url)
    samples = {}
    base = 0
    for r in range(rounds):
        for name, (port, url) in setups.items():
            throughput(port, [trivial(-base - k - 1) for k in range(20)])  # warm
            c0 = redis_commands(url) if url else 0
            samples.setdefault(f"{name}_jobs_s", []).append(
                throughput(port, [trivial(base + k) for k in range(n)]))
            if url:
                samples.setdefault(f"{name}_commands_per_job", []).append((redis_commands(url) - c0) / n)
            samples.setdefault(f"{name}_latency_ms", []).append(
                latency(port, [trivial(base + n + k) for k in range(30)]))
        base += 10_000
    for k, v in samples.items():
        res[k] = statistics.median(v)
        print(f"  ({k} per round: {', '.join(f'{x:.1f}' for x in v)})", flush=True)
    stop_all()
    for d in dirs:
        d.cleanup()
    jobs = 4 if QUICK else 6
    dirs = [tempfile.TemporaryDirectory() for _ in range(2)]
    demo = {}
    for workers, d in ((1, dirs[0].name), (2, dirs[1].name)):
        url = start_redis(d)
        port = start_server(d, MODEL, url)
        for w in range(workers):
            start_worker(d, url, f"w{w}", MODEL)
        # Warm every worker (model loaded) with one job each at once.
        wait_all(port, [post(port, demo_graph(1000 + w)) for w in range(workers)])
        demo[workers] = port
    samples = {}
    for r in range(1 if QUICK else 3):
        for workers, port in demo.items():
            t = time.time()
            wait_all(port, [post(port, demo_graph(100 * r + k)) for k in range(jobs)])
            samples.setdefault(workers, []).append((time.time() - t) / jobs)
    for workers, v in samples.items():
        res[f"demo_{workers}w_s_per_job"] = statistics.median(v)
        print(f"  (per round: {', '.join(f'{x:.3f}' for x in v)})", flush=True)
    stop_all()
    for d in dirs:
        d.cleanup()
    for affinity in (True, False):
        with tempfile.TemporaryDirectory() as d:
            for name in ("ckpt-a", "ckpt-b"):
                os.symlink(os.path.join(ROOT, "models", "shapes-ldm"), os.path.join(d, name))
            url = start_redis(d)
            port = start_server(d, MODEL, url)
            extra = ["--max-models", "1"] + ([] if affinity else ["--no-affinity"])
            for w in range(2):
                start_worker(d, url, f"w{w}", MODEL, extra)
            t = time.time()
            ids = []
            for k in range(16):
                path = os.path.join(d, "ckpt-a" if k % 2 == 0 else "ckpt-b")
                ms = 20 + k if k % 2 == 0 else 300 + k
                ids.append(post(port, {"nodes": {
                    "ckpt": {"type": "LoadCheckpoint", "inputs": {"path": path, "dtype": "fp32"}},
                    "wait": {"type": "Sleep", "inputs": {"x": ["ckpt", "prediction_type"], "ms": ms}},
                    "out": {"type": "Sink", "inputs": {"x": ["wait", "x"]}}}}))
            wait_all(port, ids)
            key = "affinity" if affinity else "no_affinity"
            res[f"{key}_wall_s"] = time.time() - t
            res[f"{key}_loads"] = sum(w["loads"] for w in status(url)["workers"])
            stop_all()
    print("load average after:", open("/proc/loadavg").read().strip())


try:
    main()
finally:
    stop_all()
