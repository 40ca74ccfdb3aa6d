"""Then and now: an earlier revision's default archive against today's, on one machine in one run.

A ratio over a baseline moves with the machine: the same code measured 11.1x over stock settings
on one host and 9.8x on a slower one. Whether a change kept what held is a question for one
machine, so this script builds the default archive with an earlier revision's own code (its
tree from git, installed into a throwaway virtual environment that reuses this one's packages)
and with today's, then:

1. serves both and the stock-settings archive of scripts/bench.py at once, and loads them in
   alternating windows (closed-loop v2 infer, concurrency 16, one text per request, every
   answer checked): texts/s, p50 and p99 of each, each over stock, today over then;
2. times the cold start (`scibert-pack serve` to the first 200) of both archives and of a
   deflate archive of today's code, alternating.

The default revision is the one whose BENCHMARKS run the performance issue quotes as "today's"
(MiniLM 7.8x, bert-base 11.2x over stock settings).

Run: .venv/bin/python scripts/bench_then_now.py [--then REV] [--models minilm,bert-base]
[--quick]. Prints a table, writes its BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench import Load, benchmark_models, build_store, cold_starts, load, log, served
from benchlib import ROOT, machine, write_section

# The commit whose serving run (BENCHMARKS.md at that commit) the performance issue quotes.
ISSUE_REVISION = "dbf8981"
KINDS = ("then", "now", "stock")
# Builds the revision's default archive with the revision's own library (run by its interpreter).
BUILD_THEN = """
import sys
from pathlib import Path
from scibert_pack.archiver.build import build
from scibert_pack.archiver.settings import BuildSettings
build(Path(sys.argv[1]), BuildSettings(name=sys.argv[3], profile="local"), Path(sys.argv[2]))
"""


@dataclass(frozen=True)
class Revision:
    sha: str
    date: str
    subject: str

    @staticmethod
    def of(rev: str) -> Revision:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h%n%cs%n%s", rev],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        return Revision(out[0], out[1], out[2])


def then_interpreter(rev: str, work: Path) -> Path:
    """A Python whose `scibert_pack` is revision `rev`'s; every other package is this venv's."""
    source, venv = work / "then-src", work / "then-venv"
    source.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The .pth puts this venv's packages (torch, transformers, pip, ...) after the revision's own.
    Path(purelib, "_this_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-I", "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         str(source)],
        cwd=work, check=True,
    )  # fmt: skip
    return python


def build_then(python: Path, model: Path, out: Path, name: str) -> Path:
    # -I: the revision's installed package, never the checkout in the working directory.
    subprocess.run(
        [str(python), "-I", "-c", BUILD_THEN, str(model), str(out), name],
        cwd=out.parent,
        check=True,
    )
    return out


@dataclass
class ModelResult:
    label: str
    loads: dict[str, list[Load]] = field(default_factory=dict)

    def median(self, kind: str) -> Load:
        return Load.median(self.loads[kind])


def measure_model(
    python: Path, model: Path, label: str, work: Path, seconds: float, rounds: int
) -> tuple[ModelResult, Path, Path]:
    """Loads of the three archives; also returns the then and now stores (for the cold start)."""
    key = model.name
    stores = {
        "then": build_then(python, model, work / f"{key}-then", "m"),
        "now": build_store(model, work / f"{key}-now", "m", "ours"),
        "stock": build_store(model, work / f"{key}-stock", "m", "stock"),
    }
    result = ModelResult(label)
    with contextlib.ExitStack() as up:
        servers = {
            kind: up.enter_context(served(store, work / f"run-{key}-{kind}"))
            for kind, store in stores.items()
        }
        for server in servers.values():  # every worker has answered before timing
            load(server, 1.0)
        for rnd in range(rounds):
            order = KINDS if rnd % 2 == 0 else KINDS[::-1]
            for kind in order:
                got = load(servers[kind], seconds)
                result.loads.setdefault(kind, []).append(got)
                log(
                    f"  [{label}] {kind} round {rnd + 1}: {got.texts_per_s:.1f} texts/s, "
                    f"p99 {got.p99_ms:.0f} ms, failed {got.errors}"
                )
    return result, stores["then"], stores["now"]


def render(
    then: Revision,
    now: Revision,
    results: list[ModelResult],
    cold: dict[str, list[float]] | None,
    cold_label: str,
    seconds: float,
    rounds: int,
    loads: tuple[float, float],
) -> str:
    lines = [
        "## Then and now: an earlier revision's archive vs today's (scripts/bench_then_now.py)",
        "",
        f'Then: `{then.sha}` ({then.date}, "{then.subject}"), built by its own code. Now: '
        f"`{now.sha}` ({now.date}). Stock settings: scripts/bench.py's (pad to 150, batchSize 1, "
        "the plain model). The three archives served at once (2 workers each), loaded in turn: "
        f"closed loop, concurrency 16, one text per request, median of {rounds} windows of "
        f"{seconds:.0f} s; client and servers on the same machine. 1-minute load average "
        f"{loads[0]:.1f} before, {loads[1]:.1f} after.",
        "",
        "| model | archive | texts/s | p50 (ms) | p99 (ms) | failed | over stock |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = []
    for result in results:
        stock = result.median("stock").texts_per_s
        for kind in KINDS:
            got = result.median(kind)
            name = {"then": f"then (`{then.sha}`)", "now": f"now (`{now.sha}`)"}.get(kind, kind)
            lines.append(
                f"| {result.label} | {name} | {got.texts_per_s:.1f} | {got.p50_ms:.0f} | "
                f"{got.p99_ms:.0f} | {got.errors} | {got.texts_per_s / stock:.1f}x |"
            )
        then_load, now_load = result.median("then"), result.median("now")
        summary.append(
            f"- {result.label}: now **{now_load.texts_per_s / then_load.texts_per_s:.2f}x** "
            f"then's throughput; over stock {now_load.texts_per_s / stock:.1f}x now, "
            f"{then_load.texts_per_s / stock:.1f}x then; p99 {now_load.p99_ms:.0f} ms now, "
            f"{then_load.p99_ms:.0f} then, {result.median('stock').p99_ms:.0f} stock."
        )
    lines += ["", *summary]
    if cold is not None:
        med = {kind: statistics.median(v) for kind, v in cold.items()}
        lines += [
            "",
            f"Cold start, {cold_label}: `scibert-pack serve` (today's) to the first 200 on v2 "
            f"infer, median of {len(cold['now'])}, the archives in turn.",
            "",
            "| archive | seconds | runs |",
            "|---|---|---|",
        ]
        names = {
            "then": f"then (`{then.sha}`, zip-store)",
            "now": f"now (`{now.sha}`, zip-store)",
            "deflate": "now, default (deflate) archive",
        }
        for kind, values in cold.items():
            runs = ", ".join(f"{v:.1f}" for v in values)
            lines.append(f"| {names[kind]} | {med[kind]:.1f} | {runs} |")
        lines += [
            "",
            f"- Over the deflate archive: **{med['deflate'] / med['now']:.2f}x** now, "
            f"{med['deflate'] / med['then']:.2f}x then; now {med['then'] / med['now']:.2f}x "
            "then's speed.",
        ]
    lines += ["", f"Machine: {machine()}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--then", default=ISSUE_REVISION, help="The earlier revision (git rev).")
    parser.add_argument("--models", default="minilm,bert-base", help="Comma-separated keys.")
    parser.add_argument("--quick", action="store_true", help="Short windows, one cold start.")
    parser.add_argument("--no-write", action="store_true", help="Do not touch BENCHMARKS.md.")
    args = parser.parse_args()
    seconds, rounds, cold_runs = (5.0, 1, 1) if args.quick else (15.0, 3, 5)
    models = benchmark_models()
    keys = args.models.split(",")
    unknown = [key for key in keys if key not in models]
    if unknown:
        raise SystemExit(f"unknown model keys {unknown}; choose from {sorted(models)}")
    then, now = Revision.of(args.then), Revision.of("HEAD")
    before = os.getloadavg()[0]
    results = []
    cold = None
    cold_label = ""
    with tempfile.TemporaryDirectory(prefix="bench-then-now-") as tmp:
        work = Path(tmp)
        log(f"installing {then.sha} ({then.subject}) into a throwaway venv")
        python = then_interpreter(args.then, work)
        for key in keys:
            model, label = models[key]()
            log(f"[{label}] serving then / now / stock")
            result, then_store, now_store = measure_model(
                python, model, label, work, seconds, rounds
            )
            results.append(result)
            if key == keys[-1]:  # the largest model given last, as bench.py's cold start
                log(f"[{label}] cold start")
                deflate = build_store(model, work / f"{key}-deflate", "m", "deflate")
                stores = {"then": then_store, "now": now_store, "deflate": deflate}
                cold, cold_label = cold_starts(stores, work, cold_runs), label
    loads = (before, os.getloadavg()[0])
    body = render(then, now, results, cold, cold_label, seconds, rounds, loads)
    print(body)
    if not args.no_write:
        write_section("then_now", body)


if __name__ == "__main__":
    main()
