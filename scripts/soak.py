"""Soak and fault scenarios against a real TorchServe and a real S3-protocol server (moto):

1. soak: 20,000 v2 infer requests at concurrency 32, each 50th followed by an explain (400
   explains on top), on the tiny test classifier; errors (a wrong answer counts), latency, and
   the worker's RSS read every 1,000 requests: its growth over the second half (least-squares
   line) must stay under 4 MiB + 1 % of its size, else the soak fails (exit code 1).
2. worker kill: the Python worker is SIGKILLed under load; TorchServe restarts it; requests in
   flight fail cleanly within the response timeout and every request after recovery succeeds.
3. S3 gone mid-upload (connection lost, then moto killed): the upload fails with a clear error,
   nothing is published as complete, and the rerun completes byte-identical.

Run: .venv/bin/python scripts/soak.py [--requests 20000] [--no-write]. Writes the "soak" section of
BENCHMARKS.md. The same scenarios, shorter, run in the test suite (tests/test_soak.py,
tests/test_faults.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchlib import machine, write_section

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from scibert_pack import api
from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.serving.server import ServeSettings, TorchServeProcess
from scibert_pack.storage.local_store import scan_store
from scibert_pack.testing.s3_stores_and_proxies import (
    kserve_download,
    s3_environ,
    tree,
    write_store,
)
from scibert_pack.testing.soak_load import (
    KILL_RESPONSE_TIMEOUT_S,
    KILL_SETTINGS,
    SOAK_SETTINGS,
    RssBound,
    kill_worker_under_load,
    ready_pids,
    soak,
)
from scibert_pack.testing.tiny_models import make_tiny_classifier
from scibert_pack.testing.vanishing_s3 import CLI, Moto, upload_until_s3_vanishes

EXPLAIN_EVERY = 50
RSS_EVERY = 1000
WARMUP = 500
RSS_BOUND = RssBound(slack_mib=4.0, fraction=0.01)


@contextlib.contextmanager
def serving(model: Path, work: Path, settings: BuildSettings) -> Iterator[TorchServeProcess]:
    """The tiny model built with `settings` and served on free loopback ports."""
    built = api.build(model, work / "store", settings)
    serve = ServeSettings.on_free_ports(run_dir=work / "run", ready_timeout_s=180)
    with api.serve(built.output, serve) as server:
        yield server


def run_soak(model: Path, work: Path, infer_total: int, concurrency: int) -> dict[str, object]:
    with serving(model, work / "soak", SOAK_SETTINGS) as server:
        pids = ready_pids(server)
        result = soak(
            server,
            infer_total=infer_total,
            concurrency=concurrency,
            explain_every=EXPLAIN_EVERY,
            rss_every=RSS_EVERY,
            warmup=WARMUP,
            bound=RSS_BOUND,
        )
        restarts = 0 if ready_pids(server) == pids else 1
    errors = result.errors()
    check = result.rss_check
    assert check is not None
    return {
        "requests": result.count(),
        "infer": result.count("infer"),
        "explain": result.count("explain"),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "seconds": round(result.elapsed_s, 1),
        "requests_per_s": round(result.count() / result.elapsed_s, 1),
        "infer_p50_ms": round(result.percentile_ms(50), 1),
        "infer_p99_ms": round(result.percentile_ms(99), 1),
        "explain_p99_ms": round(result.percentile_ms(99, "explain"), 1),
        "restarts": restarts,
        "rss_mib": {k: round(v, 1) for k, v in result.rss_mib.items()},
        "rss_samples": [[s.done, round(s.mib, 1)] for s in result.rss_samples],
        "rss_growth_second_half_mib": round(check.growth_mib, 2),
        "rss_bound_mib": round(check.limit_mib, 2),
        "rss_ok": check.ok,
    }


def run_worker_kill(model: Path, work: Path) -> dict[str, object]:
    with serving(model, work / "kill", KILL_SETTINGS) as server:
        report = kill_worker_under_load(
            server,
            response_timeout_s=KILL_RESPONSE_TIMEOUT_S,
            kill_after=1000,
            after_recovery=2000,
            max_seconds=300,
        )
    outcomes = report.load.outcomes
    failed = [o for o in outcomes if o.status != "200" or not o.correct]
    later = report.after_recovery()
    return {
        "requests": len(outcomes),
        "failed": len(failed),
        "failed_statuses": sorted({o.status for o in failed}),
        "wrong_answers": sum(1 for o in outcomes if o.status == "200" and not o.correct),
        "max_request_s": round(report.load.max_seconds(), 2),
        "response_timeout_s": KILL_RESPONSE_TIMEOUT_S,
        "recovery_s": round(report.recovery_s, 2),
        "restarts": 1 if report.new_pid != report.old_pid else 0,
        "after_recovery": len(later),
        "after_recovery_errors": sum(1 for o in later if o.status != "200" or not o.correct),
    }


def run_s3_gone(work: Path, kill_moto: bool) -> dict[str, object]:
    case = work / ("s3-killed" if kill_moto else "s3-lost")
    case.mkdir()
    store = write_store(case / "store", model_version="2.0", payload=os.urandom(8 << 20))
    version = scan_store(store).version
    moto = Moto(case / "moto.log")
    moto.start()
    try:
        moto.server.client().create_bucket(Bucket="models")
        env = s3_environ(moto.server.endpoint, case)
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        vanished = upload_until_s3_vanishes(store, "s3://models/m", moto, env, kill_moto=kill_moto)
        if kill_moto:
            moto.start()
            moto.server.client().create_bucket(Bucket="models")
            published = "n/a (state died with moto)"
        else:
            keys = moto.server.keys("models")
            published = "yes" if f"m/{version}.complete.json" in keys else "no"
        rerun = subprocess.run(
            [*CLI, "upload", str(store), "s3://models/m", "--json", "-q"],
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        identical = False
        if rerun.returncode == 0:
            uri = json.loads(rerun.stdout)["storage_uri"]
            identical = kserve_download(uri, case / "download") == tree(store)
    finally:
        moto.kill()
    return {
        "exit_code": vanished.returncode,
        "seconds_to_fail": round(vanished.seconds, 1),
        "traceback": "Traceback" in vanished.stderr,
        "error": vanished.stderr.strip().splitlines()[-1],
        "completion_record_before_rerun": published,
        "rerun_exit_code": rerun.returncode,
        "rerun_byte_identical": identical,
    }


def markdown(
    soaked: dict[str, object], killed: dict[str, object], s3: dict[str, dict[str, object]]
) -> str:
    rss = soaked["rss_mib"]
    assert isinstance(rss, dict)
    statuses = ", ".join(str(s) for s in killed["failed_statuses"])  # type: ignore[attr-defined]
    lines = [
        "## Soak and faults (scripts/soak.py)",
        "",
        f"Machine: {machine()}. Load average (1 min) when the run ended: "
        f"{os.getloadavg()[0]:.1f}; nothing else was run on purpose beside it.",
        "Model: the tiny BERT test classifier (scibert_pack/testing/tiny_models.py), TorchServe",
        "batch size 8, one worker. Load: closed loop, one keep-alive session per thread, KServe",
        "v2 JSON; every answer is checked against the label the text gets alone (a wrong answer",
        "is an error).",
        "",
        "| scenario | requests | errors | p99 | restarts | worker RSS (MiB) |",
        "|---|---:|---:|---:|---:|---|",
        f"| soak: infer at concurrency 32, each 50th followed by an explain | "
        f"{soaked['requests']} ({soaked['infer']} infer + {soaked['explain']} explain) | "
        f"{soaked['errors']} | "
        f"infer {soaked['infer_p99_ms']} ms, explain {soaked['explain_p99_ms']} ms | "
        f"{soaked['restarts']} | start {rss['start']}, middle {rss['middle']}, end {rss['end']}; "
        f"second half {soaked['rss_growth_second_half_mib']:+} (bound "
        f"{soaked['rss_bound_mib']}) |",
        f"| worker SIGKILLed under load (concurrency 8) | {killed['requests']} | "
        f"{killed['failed']} in flight at the kill ({statuses}), "
        f"{killed['after_recovery_errors']} of {killed['after_recovery']} after recovery | "
        f"slowest request {killed['max_request_s']} s (response timeout "
        f"{killed['response_timeout_s']} s) | {killed['restarts']} (ready again after "
        f"{killed['recovery_s']} s) | - |",
        "",
        f"Soak throughput: {soaked['requests_per_s']} requests/s over {soaked['seconds']} s, "
        f"infer p50 {soaked['infer_p50_ms']} ms. Wrong answers during the kill: "
        f"{killed['wrong_answers']}. Worker RSS was read every {RSS_EVERY} requests after "
        f"{WARMUP} warm-up infers; its growth over the second half is the least-squares line "
        f"through those readings, and the soak fails above {RSS_BOUND.slack_mib:g} MiB + "
        f"{RSS_BOUND.fraction:.0%} of the worker's size.",
        "",
        "| S3 server gone mid-upload | exit code | gave up after | traceback | complete record "
        "before rerun | rerun | rerun byte-identical |",
        "|---|---:|---:|---|---|---:|---|",
    ]
    for name, row in s3.items():
        lines.append(
            f"| {name} | {row['exit_code']} | {row['seconds_to_fail']} s | "
            f"{'yes' if row['traceback'] else 'no'} | {row['completion_record_before_rerun']} | "
            f"exit {row['rerun_exit_code']} | {'yes' if row['rerun_byte_identical'] else 'no'} |"
        )
    lines += ["", f"The upload's error: `{s3['connection lost']['error']}`"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests",
        type=int,
        default=20_000,
        help="Infer requests of the soak (explains come on top: one after every 50th).",
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-write", action="store_true", help="Print only; leave BENCHMARKS.md.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scibert-soak-") as tmp:
        work = Path(tmp)
        model = make_tiny_classifier(work / "model")
        started = time.monotonic()
        soaked = run_soak(model, work, args.requests, args.concurrency)
        print("soak", json.dumps(soaked), flush=True)
        killed = run_worker_kill(model, work)
        print("worker kill", json.dumps(killed), flush=True)
        s3 = {
            "connection lost": run_s3_gone(work, kill_moto=False),
            "moto killed": run_s3_gone(work, kill_moto=True),
        }
        for name, row in s3.items():
            print(f"s3 {name}", json.dumps(row), flush=True)
        print(f"total {time.monotonic() - started:.0f} s")
    body = markdown(soaked, killed, s3)
    print(body)
    if not args.no_write:
        write_section("soak", body)
    checks = {
        "soak without errors": soaked["errors"] == 0,
        "soak without worker restart": soaked["restarts"] == 0,
        f"soak reached {args.requests} infer requests": soaked["infer"] >= args.requests,
        f"worker RSS flat over the second half ({soaked['rss_growth_second_half_mib']:+} MiB, "
        f"bound {soaked['rss_bound_mib']} MiB)": soaked["rss_ok"] is True,
        "every request after the worker kill answered right": killed["after_recovery_errors"] == 0
        and killed["wrong_answers"] == 0,
        "S3 uploads failed cleanly and reran byte-identical": all(
            r["exit_code"] == 1 and r["rerun_byte_identical"] for r in s3.values()
        ),
    }
    for name, passed in checks.items():
        if not passed:
            print(f"FAILED: {name}", file=sys.stderr)
    ok = all(checks.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
