"""Serving speed, measured side by side in one run: this commit's service against an older commit's,
on the same models, photo and minutes.

    make bench        # = python bench/serve.py [--baseline 141ddb7] [--photo F] [--requests 200]

Serves the champions in models/serving.json twice with `bentoml serve` on free loopback ports: from
this working tree, and from `--baseline` (a git commit, exported with `git archive` to a temp folder,
with a model store holding the same weights under the metadata keys that commit reads; default: the
commit before the speed work, issue 12). Then, interleaving old and new block by block (this VM's
speed drifts by +-20 % between minutes):
1. raw forward: the model call of each service (decode excluded) on one photo, in-process: the old
   one as it was (two float32 NCHW batch-1 calls per model), the new one as service/forward.py makes it;
2. latency at concurrency 1: p50 / p99 of POST /predict (`--block` requests to one service, then the
   other's turn);
3. throughput at concurrency 1 and 32 (keep-alive connections from one asyncio client: servers.load;
   median of `--rounds` rounds, old and new alternating; a c=32 round is `--load` requests, so that
   its ramp-up and drain are a small part of it), and at 32 the
   server's CPU per request (its workers and decoder processes apart, from /proc) against the new
   model call's CPU per photo in a batch of 16 (issue 26: at most 1.5x), and the batches it formed;
4. the face step: decode + crop of a ~1 MP JPEG with and without finding the face (this tree).
The photo is a real 350 px SCUT-FBP5500 photo from ../shared when it is there (its JPEG is decoded
in draft mode when the model input allows), else service/example.jpg (160 px, synthetic).
Prints the machine's roofline first (bench/roofline.py), and for each service the models' share of
it at concurrency 32: requests/s x the forward multiply-accumulates of one request (both networks,
and the mirror image where flip averaging is on) / the attainable GMAC/s of its precision.
Targets: /predict p50 new/old <= 0.6; throughput at c=32 new/old >= 2 (issues 12, 26); the face step
adds <= 10 ms p50 per 1 MP photo. Prints the ratios.
"""
from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from servers import ROOT, baseline_store, batch_sizes, export_commit, load, serve, server_cpu_s, stop, use_champions

EXAMPLE = ROOT / "service" / "example.jpg"
SCUT_PHOTO = ROOT.parent / "shared" / "data" / "facescore" / "images" / "ftw101.jpg"   # 350 x 350
PHOTO = SCUT_PHOTO if SCUT_PHOTO.is_file() else EXAMPLE
LOAD = 1280                   # requests per c=32 round (~3-6 s here)
BATCH = 16                    # photos per model call: the forward's cost where batching pays in full
BASELINE = "141ddb7"          # the commit before the speed work (issue 12; fp32 NCHW, 2 batch-1 calls, no guard)


def raw_forwards(photo: Path):
    """-> ({"old": fn, "new": fn}, the new policy, MACs per request, the new call's CPU ms per photo in a
    batch of BATCH): the model call each /predict makes (decode excluded) on one photo,
    with the threads of one server worker. old: the pre-policy call (float32 NCHW, the photo and its
    mirror as two batch-1 calls per model); new: the service's call (service/forward.py: `predict` under
    the stored policy, the networks at once on one thread each)."""
    import bentoml
    import torch

    from pipeline.core.execution import cpu_threads
    from pipeline.core.model import TaskModel, load_bundle, serving_model
    from pipeline.core.preprocess import load_uint8, to_tensor
    from service.forward import Forward
    from service.service import CONTRACT as limits  # checked (sha256) once, at import
    from service.service import WORKERS

    refs = {t: bentoml.models.get(os.environ[f"FACES_{t.upper()}_MODEL"]) for t in ("gender", "rating")}
    torch.set_num_threads(cpu_threads(0, WORKERS))       # as many threads as one server worker uses
    pixels = load_uint8(photo, limits.image_size, 10**8, limits.face)[None]
    old = [TaskModel(load_bundle(r.path_of("model.pt"))[0], t).eval() for t, r in refs.items()]
    new = [serving_model(r.path_of("model.pt"), t, limits.execution, workers=WORKERS) for t, r in refs.items()]
    x = to_tensor(pixels)
    from pipeline.core.layers import layer_table

    macs = sum(r.macs for net in old for r in layer_table(net.net, limits.image_size)) * (2 if limits.tta_flip else 1)

    @torch.no_grad()
    def forward_old() -> None:
        for m in old:
            m(x)
            if limits.tta_flip:
                m(x.flip(3))

    call = Forward({t: m for t, (m, _) in zip(refs, new, strict=True)}, tuple(refs), new[0][1], limits.tta_flip)

    def forward_new() -> None:
        call([pixels[0]])

    for _ in range(20):                               # the first calls warm up allocator and caches
        forward_old(), forward_new()
    many = np.repeat(pixels, BATCH, axis=0)           # a worker's batch at c=32 (~16 photos queue per worker)
    t0, n = time.process_time(), 0
    while time.process_time() - t0 < 2.0:          # process time: the side thread's CPU counts too
        call(list(many))
        n += 1
    batched_ms = (time.process_time() - t0) / n / BATCH * 1000
    return {"old": forward_old, "new": forward_new}, new[0][1], macs, batched_ms


def megapixel_scene() -> bytes:
    """A ~1 MP phone-like JPEG (1152 x 864): a drawn face at ~30 % of the shorter side in clutter."""
    import io

    sys.path.insert(0, str(ROOT / "bench"))
    from wild import clutter

    from pipeline.stages.synth import render_face, sample_face

    rng = np.random.default_rng(0)
    scene = clutter(rng, 1152, 864, blobs=0)
    scene.paste(render_face(sample_face(rng, 0.25), 360, rng), (600, 200))
    buf = io.BytesIO()
    scene.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def face_step(size: int, face, n: int, threads: int) -> tuple[list[float], list[float]]:
    """Alternates decode + centre crop and decode + face step + crop of one ~1 MP JPEG, n times, with
    the service's thread count -> (centre ms, face ms)."""
    import cv2

    from pipeline.core.preprocess import frame, open_image

    cv2.setNumThreads(threads)
    data = megapixel_scene()
    centre, faced = [], []
    for i in range(n + 10):
        t0 = time.perf_counter()
        frame(open_image(data, 10**8), size, None)
        t1 = time.perf_counter()
        frame(open_image(data, 10**8), size, face)
        t2 = time.perf_counter()
        if i >= 10:                                   # after warm-up
            centre.append((t1 - t0) * 1000)
            faced.append((t2 - t1) * 1000)
    return centre, faced


def side_by_side(urls: dict[str, str], photo: Path, forwards: dict, n: int, block: int) -> dict[str, dict[str, list[float]]]:
    """n raw forwards and n POST /predict of each service, in blocks of `block` of one kind, the
    services alternating block by block -> ms lists. Blocks, not single requests: a service answering
    one caller runs with its caches warm, while alternating every request between two servers and an
    in-process forward (block 1, the method before) measures each with the other's data in the caches
    (docs/speed.md: it hid the networks-at-once gain of service/forward.py)."""
    out = {k: {"raw": [], "http": []} for k in urls}
    send = {k: requester(u, photo) for k, u in urls.items()}
    block = max(1, block)
    for _ in range(-(-n // block)):
        for k in urls:
            for _ in range(block):
                t0 = time.perf_counter()
                forwards[k]()
                out[k]["raw"].append((time.perf_counter() - t0) * 1000)
            out[k]["http"].extend(send[k]() for _ in range(block))
    return out


def multipart(path: Path) -> tuple[bytes, str]:
    """A ready-made multipart/form-data body with the photo in the field `image`, built once: the
    load generator shares the server's 2 cores, so it must spend as little CPU per request as it can."""
    boundary = "benchboundary7MA4YWxkTrZu0gW"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def requester(url: str, photo: Path):
    """-> a function that POSTs the photo to /predict on its own keep-alive connection (http.client:
    a fraction of httpx's CPU per request) and returns the latency in ms."""
    body, ctype = multipart(photo)
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)

    def send() -> float:
        t0 = time.perf_counter()
        conn.request("POST", "/predict", body, {"Content-Type": ctype})
        r = conn.getresponse()
        payload = r.read()
        if r.status != 200:
            raise RuntimeError(f"/predict answered {r.status}: {payload[:200]!r}")
        return (time.perf_counter() - t0) * 1000

    return send


def throughput(url: str, photo: Path, concurrency: int, requests: int, proc: subprocess.Popen | None = None
               ) -> tuple[float, dict[str, float]]:
    """Requests per second with `concurrency` keep-alive connections, each sending its next request
    on answer (servers.load) -> (req/s, the server's CPU ms per request by kind of process
    (servers.server_cpu_s), over the same requests)."""
    body, ctype = multipart(photo)
    raw = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    load(url, raw, concurrency, min(requests, 4 * concurrency))                      # warm-up
    cpu0, t0 = server_cpu_s(proc) if proc else {}, time.perf_counter()
    load(url, raw, concurrency, requests)
    seconds, cpu1 = time.perf_counter() - t0, server_cpu_s(proc) if proc else {}
    return requests / seconds, {k: (cpu1[k] - cpu0[k]) / requests * 1000 for k in cpu1}


def report(photo: Path, ref: str, policy, lat: dict, rps: dict, rounds: int) -> None:
    print(f"photo {photo.name} ({photo.stat().st_size} bytes); old = commit {ref}, new = this tree "
          f"({policy.describe()['precision']}, {policy.describe()['memory_format']}, {policy.threads} threads/worker)")
    print(f"{'':<5} {'raw forward p50':>16} {'/predict p50':>13} {'p99':>8} {'c=1 req/s':>10} {'c=32 req/s':>11}")
    for k in lat:
        raw, (p50, p99) = np.median(lat[k]["raw"]), np.percentile(lat[k]["http"], [50, 99])
        print(f"{k:<5} {raw:13.2f} ms {p50:10.2f} ms {p99:5.1f} ms {rps[k][1]:10.1f} {rps[k][32]:11.1f}")
    if "old" not in lat:
        return
    p50 = {k: np.median(lat[k]["http"]) for k in lat}
    print(f"new/old: raw forward {np.median(lat['new']['raw']) / np.median(lat['old']['raw']):.2f}x, "
          f"/predict p50 {p50['new'] / p50['old']:.2f}x (target <= 0.6), "
          f"c=32 throughput {rps['new'][32] / rps['old'][32]:.2f}x (target >= 2; median of {rounds} rounds), "
          f"c=1 {rps['new'][1] / rps['old'][1]:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="requests per latency / c=1 measurement")
    ap.add_argument("--load", type=int, default=LOAD, help="requests per c=32 round: steady state, where the "
                    "ramp-up and the drain (small batches, new connections) are a small part of it")
    ap.add_argument("--block", type=int, default=20, help="latency: requests to one service before the "
                    "other's turn (1: alternate every request, as before 2026-12-04's fifth session)")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds (c=1, 32 each, old and new); medians")
    ap.add_argument("--photo", type=Path, default=PHOTO, help=f"the JPEG to send (default: {PHOTO.name})")
    ap.add_argument("--baseline", default=BASELINE, help="git commit to compare with; none: this tree only "
                    "(a commit older than the models' metadata refuses them: re-package with its own code)")
    args = ap.parse_args()
    use_champions()
    from roofline import measure

    roof = measure()
    print(roof.line(), flush=True)
    forwards, policy, macs, batched_ms = raw_forwards(args.photo)
    with tempfile.TemporaryDirectory() as tmp:
        procs, urls = {}, {}
        try:
            services: list[tuple[str, Path, Path | None]] = [("new", ROOT, None)]
            if args.baseline != "none":     # "none": this tree only (the roofline share, no comparison)
                old = export_commit(args.baseline, Path(tmp) / "code")
                services.insert(0, ("old", old, baseline_store(Path(tmp) / "home")))
            for k, cwd, home in services:
                procs[k], urls[k] = serve(cwd, home)
            lat = side_by_side(urls, args.photo, forwards, args.requests, args.block)
            runs, batches = [], [0.0, 0.0]                  # the new service's photos and model calls at c=32
            for _ in range(args.rounds):
                runs.append({k: {} for k in urls})
                for k, u in urls.items():
                    runs[-1][k][1] = throughput(u, args.photo, 1, args.requests, procs[k])
                    before = batch_sizes(u) if k == "new" else (0.0, 0.0)
                    runs[-1][k][32] = throughput(u, args.photo, 32, args.load, procs[k])
                    if k == "new":
                        batches = [b + a - x for b, a, x in zip(batches, batch_sizes(u), before, strict=True)]
            mean_batch = batches[0] / max(batches[1], 1)
        finally:
            stop(procs.values())
    rps = {k: {c: statistics.median(r[k][c][0] for r in runs) for c in (1, 32)} for k in urls}
    cpu = {k: {kind: statistics.median(r[k][32][1][kind] for r in runs) for kind in ("workers", "decoders")}
           for k in urls}
    report(args.photo, args.baseline, policy, lat, rps, args.rounds)
    if "old" in urls:                       # this VM's speed drifts between rounds: show the spread
        print("c=32 new/old by round: " + " ".join(f"{r['new'][32][0] / r['old'][32][0]:.2f}x" for r in runs))
    for k, c in cpu.items():
        total = c["workers"] + c["decoders"]
        print(f"{k}: server CPU per request at c=32 {total:.2f} ms (workers {c['workers']:.2f} + decoder processes "
              f"{c['decoders']:.2f})" + (f"; the batched forward (batch {BATCH}, both models) {batched_ms:.2f} ms of it "
                                         f"-> {total / batched_ms:.2f}x the model's share (target <= 1.5x); "
                                         f"its batches held {mean_batch:.1f} photos on average" if k == "new" else ""))
    for k in rps:                             # the old commit ran its models in fp32 NCHW
        gmacs = rps[k][32] * macs / 1e9
        peak = roof.peak("fp32" if k == "old" else str(policy.describe()["precision"]))
        print(f"{k}: the models' share of the CPU at c=32: {rps[k][32]:.1f} req/s x {macs / 1e9:.3f} GMAC = "
              f"{gmacs:.1f} GMAC/s = {gmacs / peak:.1%} of the roofline ({peak:.0f} GMAC/s); the rest is not the model")

    from pipeline.core.config import load_params
    from service.service import CONTRACT as limits

    face = limits.face or load_params(ROOT / "params.yaml").ingest.face
    from service.settings import CPUS

    centre, faced = face_step(limits.image_size, face, args.requests, CPUS)   # as the service
    served = "these models crop faces" if limits.face else "these models crop the centre; timed with params.yaml's"
    print(f"face step ({served}), 1152x864 JPEG, {CPUS} OpenCV threads, decode + crop p50: centre "
          f"{np.median(centre):.2f} ms, face {np.median(faced):.2f} ms -> the face step adds "
          f"{np.median(faced) - np.median(centre):+.2f} ms (target <= +10 ms)")


if __name__ == "__main__":
    main()
