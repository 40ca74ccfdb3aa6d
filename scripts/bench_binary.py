"""Binary tensor extension vs JSON: v2 infer request throughput on one served model, one run.

Both formats are sent to the same server by the same client loop (N threads, requests.Session
each), in alternating rounds so that a neighbour's load on a shared machine hits both alike.
Writes the "binary" section of BENCHMARKS.md. Run: .venv/bin/python scripts/bench_binary.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import requests
from bench import build_store, demo_model, log, served
from benchlib import machine, write_section

TEXT = "risk assessment implications of site-specific oral relative bioavailability ."


def json_request(texts: list[str]) -> tuple[bytes, dict[str, str]]:
    tensor = {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}
    return json.dumps({"inputs": [tensor]}).encode(), {"Content-Type": "application/json"}


def binary_request(texts: list[str]) -> tuple[bytes, dict[str, str]]:
    blob = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    tensor = {
        "name": "text",
        "shape": [len(texts)],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(blob)},
    }
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    return header + blob, {"Inference-Header-Content-Length": str(len(header))}


def throughput(
    url: str,
    make: Callable[[list[str]], tuple[bytes, dict[str, str]]],
    texts: int,
    args: argparse.Namespace,
) -> tuple[float, int]:
    """Requests per second over `args.seconds` with `args.concurrency` client threads."""
    body, headers = make([TEXT] * texts)
    done = [0] * args.concurrency
    errors = [0] * args.concurrency
    stop = time.perf_counter() + args.seconds

    def worker(i: int) -> None:
        with requests.Session() as session:
            while time.perf_counter() < stop:
                response = session.post(url, data=body, headers=headers, timeout=120)
                if response.status_code == 200:
                    done[i] += 1
                else:
                    errors[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - start), sum(errors)


def parse_costs(sizes: list[int]) -> str:
    """Handler-side cost of each format (scibert_pack.handlers.oip_binary vs json.loads)."""
    from scibert_pack.handlers.oip_binary import decode_request

    rows = []
    for texts in sizes:
        plain, _ = json_request([TEXT] * texts)
        binary, headers = binary_request([TEXT] * texts)
        length = int(headers["Inference-Header-Content-Length"])
        costs = []
        for func in (partial(json.loads, plain), partial(decode_request, binary, length)):
            samples = []
            for _ in range(2000):
                start = time.perf_counter()
                func()
                samples.append(time.perf_counter() - start)
            costs.append(statistics.median(samples) * 1e6)
        rows.append(f"| {texts} | {costs[0]:.1f} | {costs[1]:.1f} | {costs[1] / costs[0]:.2f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="per round and format")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--texts", type=int, nargs="+", default=[1, 8], help="texts per request")
    args = parser.parse_args()
    model, model_note = demo_model()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(model, Path(tmp) / "store", "bench", "ours")
        with served(store, Path(tmp) / "run") as server:
            url = f"{server.inference_url}/v2/models/{server.model_name}/infer"
            for texts in args.texts:
                rates: dict[str, list[float]] = {"json": [], "binary": []}
                errors = 0
                throughput(
                    url, json_request, texts, argparse.Namespace(**{**vars(args), "seconds": 2.0})
                )
                for round_ in range(args.rounds):
                    for name, make in (("json", json_request), ("binary", binary_request)):
                        rate, failed = throughput(url, make, texts, args)
                        rates[name].append(rate)
                        errors += failed
                        log(f"{texts} text(s)/request round {round_ + 1}: {name} {rate:.1f} req/s")
                json_rate = statistics.median(rates["json"])
                binary_rate = statistics.median(rates["binary"])
                # Each round's pair ran back to back: the median of the pairs' ratios is what
                # a neighbour's changing load disturbs least.
                paired = statistics.median(
                    b / j for b, j in zip(rates["binary"], rates["json"], strict=True)
                )
                rows.append((texts, json_rate, binary_rate, paired, errors))
    parse = parse_costs(args.texts)
    table = "\n".join(f"| {t} | {j:.1f} | {b:.1f} | **{r:.2f}** | {e} |" for t, j, b, r, e in rows)
    write_section(
        "binary",
        f"""## Binary tensor extension vs JSON requests (scripts/bench_binary.py)

v2 infer requests per second on one served model, {args.concurrency} client threads,
{args.rounds} rounds of {args.seconds:.0f} s per format, JSON then binary back to back; the ratio
is the median of the rounds' binary/JSON ratios. The binary requests send their texts as binary
BYTES elements and ask for binary outputs (`binary_data_output`).
Model: {model_note}. Machine: {machine()}. **The machine was shared with other jobs during this
run** (other builds and test suites on the same 2 cores): the absolute rates are low and noisy,
the alternating rounds make the ratio the figure to read.

| texts / request | JSON req/s (median) | binary req/s (median) | binary / JSON (paired) | errors |
|---|---|---|---|---|
{table}

What the format itself costs the handler, in process (no server, no model; median of 2000
decodes of the same request): reading the binary body vs `json.loads` of the JSON body.

| texts / request | JSON parse µs | binary decode µs | binary / JSON |
|---|---|---|---|
{parse}

The model's forward pass dominates a request (milliseconds against microseconds of parsing), so
the served ratio stays near 1 and its spread is the machine's noise, not the format's.
""",
    )


if __name__ == "__main__":
    main()
