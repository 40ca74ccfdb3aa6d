#!/usr/bin/env python3
"""Screenshot an HTML explanation report in headless Chromium, to look at it as a person would.

    python scripts/screenshot_report.py explanations.html report.png [--size 1280x900]

Without a report argument (`--sample`), writes a sample report (the blog's sentence, a hostile
text, a long text that must wrap, word pieces) next to the PNG first. Needs Debian's `chromium`
(scripts/setup-env.sh installs it when it can). Prints the PNG's path, size and colour count.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
)  # fmt: skip
BROWSERS = ("chromium", "chromium-browser")


def find_chromium() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(html: Path, png: Path, *, width: int = 1280, height: int = 900) -> Path:
    """Render `html` at width x height into `png` with a fresh, empty browser profile."""
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("chromium is not installed: apt-get install chromium")
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="report-shot-") as profile:
        command = [
            browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
            f"--window-size={width},{height}", f"--screenshot={png.resolve()}",
            html.resolve().as_uri(),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 or not png.is_file():
        raise RuntimeError(
            f"chromium exited {done.returncode} without {png}: {done.stderr[-2000:]}"
        )
    return png


def png_facts(png: Path) -> tuple[int, int, int]:
    """(width, height, distinct colours) of an 8-bit RGB/RGBA PNG."""
    width, height, rows = png_pixels(png)
    colours = {pixel for row in rows[::4] for pixel in row[::2]}  # a sample is plenty
    return width, height, len(colours)


def png_pixels(png: Path) -> tuple[int, int, list[list[bytes]]]:
    """(width, height, rows of pixels) of an 8-bit RGB/RGBA PNG, read with the standard library
    (no imaging package needed)."""
    data = png.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{png} is not a PNG")
    pos, header, chunks = 8, b"", []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    if depth != 8 or colour not in (2, 6):
        raise ValueError(f"{png}: only 8-bit RGB/RGBA is read, got depth {depth} type {colour}")
    step = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * step
    previous = bytearray(stride)
    rows: list[list[bytes]] = []
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - step] if i >= step else 0
            up = previous[i]
            corner = previous[i - step] if i >= step else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                line[i] = (line[i] + _paeth(left, up, corner)) & 0xFF
        rows.append([bytes(line[i : i + 3]) for i in range(0, stride, step)])
        previous = line
    return width, height, rows


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def sample_report(path: Path) -> Path:
    """A report that exercises what must read well: words, pieces, escaping, a long text."""
    from scibert_pack.client.inference_client import ServedExplanation
    from scibert_pack.client.report_html import write_report

    blog = "Risk assessment implications of site-specific oral relative bioavailability."
    words = ["Risk", "assessment", "implications", "of", "site-specific", "oral", "relative",
             "bioavailability", "."]  # fmt: skip
    long_text = " ".join(
        ["Integrated gradients attribute the site-specific change of the probability"] * 12
        + ["to", "supercalifragilisticexpialidocious" * 6]
    )
    long_words = long_text.split()
    pieces = ["[CLS]", "risk", "assessment", "implications", "of", "site", "-", "specific",
              "oral", "relative", "bio", "##ava", "##ila", "##bility", ".", "[SEP]"]  # fmt: skip
    explanations = [
        ServedExplanation(blog, "medicine", "medicine", words,
                    [0.076, 0.03, -0.02, 0.001, 0.05, 0.04, -0.01, 0.12, 0.02], 2e-4, False),
        ServedExplanation(long_text, "physics", "physics", long_words,
                    [((i % 7) - 3) / 30 for i in range(len(long_words))], -3e-3, True),
        ServedExplanation(blog, "medicine", "medicine", pieces,
                    [0.0, 0.076, 0.03, -0.02, 0.001, 0.02, 0.01, 0.02, 0.04, -0.01, 0.079, 0.02,
                     0.058, -0.054, 0.02, 0.0], 2e-4, False),
        ServedExplanation('<script>alert("x")</script> & co.', "other", "other",
                    ["<script>alert(\"x\")</script>", "&", "co", "."], [0.2, -0.1, 0.05, 0.0],
                    0.0, False),
    ]  # fmt: skip
    probabilities = [
        {"medicine": 0.912, "biology": 0.051, "chemistry": 0.037},
        {"physics": 0.64, "chemistry": 0.2, "biology": 0.16},
        None,
        {"other": 0.5, "medicine": 0.5},
    ]
    return write_report(path, explanations, probabilities=probabilities, model="sample")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", type=Path, help="explanations.html (or --sample)")
    parser.add_argument("png", type=Path)
    parser.add_argument("--size", default="1280x900", help="window WIDTHxHEIGHT (1280x900)")
    parser.add_argument("--sample", action="store_true", help="screenshot a sample report")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    report = args.report
    if args.sample or report is None:
        report = sample_report(args.png.with_suffix(".html"))
    screenshot(report, args.png, width=width, height=height)
    w, h, colours = png_facts(args.png)
    print(f"{args.png}: {w}x{h}, {colours} colours (from {report})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
