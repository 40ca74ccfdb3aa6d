"""Build settings: one frozen, validated record of everything `scibert-pack build` was asked."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from scibert_pack.config.properties import Ports, Profile
from scibert_pack.errors import InputError
from scibert_pack.handlers.settings import HandlerSettings

ArchiveFormat = Literal["zip-store", "default", "tgz", "no-archive"]
ARCHIVE_FORMATS: tuple[ArchiveFormat, ...] = ("zip-store", "default", "tgz", "no-archive")
ARCHIVE_SUFFIX: dict[ArchiveFormat, str] = {
    "zip-store": ".mar",
    "default": ".mar",
    "tgz": ".tar.gz",
    "no-archive": "",
}
# torch-model-archiver's own rule for model names; the name is also the URL path segment.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# Files are named after the model: NAME.tar.gz, staging names such as .NAME.tar.gz.partial and
# .NAME.old must stay under the 255-byte file name limit of ext4, xfs and most filesystems.
MAX_NAME_LENGTH = 200
MAX_VERSION_LENGTH = 100
NAME_RULE = f"[A-Za-z0-9][A-Za-z0-9_.-]*, at most {MAX_NAME_LENGTH} characters"
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024
# TorchServe reads max_request_size into a Java int; below 1 KiB not even a v2 header fits.
MAX_REQUEST_BYTES_RANGE = (1024, 2**31 - 1)


@dataclass(frozen=True)
class BuildSettings:
    name: str
    version: str = "1.0"
    profile: Profile = "kserve"
    archive_format: ArchiveFormat = "zip-store"
    batch_size: int = 8
    max_batch_delay_ms: int = 10
    # Two workers, each with its share of the CPUs (handler torch_threads 0): on CPU they keep
    # the cores busier than one worker with all threads (BENCHMARKS.md, "Figures behind default
    # settings"), and one keeps answering while the other restarts.
    min_workers: int = 2
    max_workers: int = 2
    response_timeout_s: int = 120
    startup_timeout_s: int = 120
    netty_threads: int = 4
    job_queue_size: int = 1000
    # TorchServe's max_request_size: the front end refuses bigger bodies with 413.
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    token_auth: bool = False
    ports: Ports = field(default_factory=Ports)
    # None: the handler's default capped at the model's own maximum.
    max_length: int | None = None
    # handler.allow_pickle (`build --allow-pickle`) also lets build read pickle weights.
    handler: HandlerSettings = field(default_factory=HandlerSettings)
    # --runtime torch-int8 / onnx-int8: the least share of held-out texts whose int8 label must
    # be fp32's (archiver/int8_check.py says why 0.98).
    min_label_agreement: float = 0.98

    def __post_init__(self) -> None:
        if len(self.name) > MAX_NAME_LENGTH:
            raise InputError(
                f"model name {_shown(self.name)} is {len(self.name)} characters long, more than "
                f"the {MAX_NAME_LENGTH} allowed: it names the archive file (NAME.tar.gz) and "
                "staging files, which must stay under the 255-byte file name limit",
                fix=f"pass a --model-name of at most {MAX_NAME_LENGTH} characters",
            )
        if not NAME_PATTERN.fullmatch(self.name):
            raise InputError(
                f"model name {_shown(self.name)} is not allowed: it is the key in request URLs "
                f"and must match {NAME_RULE}",
                fix="pass --model-name with letters, digits, '.', '_' or '-', "
                "e.g. --model-name scibert",
            )
        if len(self.version) > MAX_VERSION_LENGTH:
            raise InputError(
                f"model version {_shown(self.version)} is {len(self.version)} characters long, "
                f"more than the {MAX_VERSION_LENGTH} allowed (it names upload folders)",
                fix=f"pass a --version of at most {MAX_VERSION_LENGTH} characters, e.g. 1.0",
            )
        if not VERSION_PATTERN.fullmatch(self.version):
            raise InputError(
                f"model version {_shown(self.version)} is not allowed "
                "(expected e.g. 1.0 or 2024-05)",
                fix="pass --version with letters, digits, '.', '_' or '-'",
            )
        _check("--batch-size", self.batch_size, 1, 1024)
        _check("--max-batch-delay", self.max_batch_delay_ms, 0, 60_000)
        _check("--min-workers", self.min_workers, 1, 64)
        _check("--max-workers", self.max_workers, 1, 64)
        _check("--response-timeout", self.response_timeout_s, 1, 86_400)
        _check("--startup-timeout", self.startup_timeout_s, 1, 86_400)
        _check("--netty-threads", self.netty_threads, 1, 256)
        _check("--job-queue-size", self.job_queue_size, 1, 1_000_000)
        _check("--max-request-size", self.max_request_bytes, *MAX_REQUEST_BYTES_RANGE)
        if not 0.0 <= self.min_label_agreement <= 1.0:
            raise InputError(
                f"--min-label-agreement {self.min_label_agreement} is out of range "
                "(expected 0 to 1: a share of held-out texts)",
                fix="pass --min-label-agreement between 0 and 1, e.g. 0.98",
            )
        if self.max_workers < self.min_workers:
            raise InputError(
                f"--max-workers {self.max_workers} is below --min-workers {self.min_workers}",
                fix=f"pass --max-workers {self.min_workers} or more",
            )
        ports = self.ports.as_dict()
        for key, port in ports.items():
            _check(f"--{key.replace('_', '-')}-port", port, 1, 65_535)
        if len(set(ports.values())) != len(ports):
            raise InputError(
                f"ports must be distinct, got {ports}",
                fix="give each API its own port",
            )

    @property
    def archive_name(self) -> str:
        return self.name + ARCHIVE_SUFFIX[self.archive_format]


def _check(option: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InputError(
            f"{option} {value} is out of range (expected {low} to {high})",
            fix=f"pass {option} between {low} and {high}",
        )


def _shown(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...{text[-12:]}"
