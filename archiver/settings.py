"""Build settings: one frozen, validated record of everything `scibert-pack build` was asked."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from scibert_pack.config.properties import PROFILES, Ports, Profile
from scibert_pack.errors import InputError
from scibert_pack.handlers.settings import (
    HandlerSettings,
    SettingsError,
    check_declared,
    declarations,
    option_problem,
    required_setting,
    setting,
)

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
    name: str = required_setting(
        f"Model name: the key in request URLs and the archive's file name ({NAME_RULE}).",
        option="--model-name",
        old=("--name",),
    )
    version: str = setting("1.0", "Model version (e.g. 1.0 or 2024-05); it names upload folders.")
    profile: Profile = setting(
        "kserve",
        "kserve: listen on 0.0.0.0, store at /mnt/models/model-store. local: loopback only.",
        choices=PROFILES,
    )
    archive_format: ArchiveFormat = setting(
        "zip-store",
        "zip-store does not compress: weights do not compress, and it loads faster.",
        choices=ARCHIVE_FORMATS,
    )
    batch_size: int = setting(8, "TorchServe batchSize.", low=1, high=1024)
    # A lone request waits the whole delay. 5 ms served as much at concurrency 16 as 10 ms and
    # 9-26% more at concurrency 4; 2 ms lost 4-8% at 16 (BENCHMARKS.md, "maxBatchDelay").
    max_batch_delay_ms: int = setting(
        5,
        "Milliseconds TorchServe waits to fill a batch.",
        low=0,
        high=60_000,
        option="--max-batch-delay",
    )
    # Two workers, each with its share of the CPUs (handler torch_threads 0): on CPU they keep
    # the cores busier than one worker with all threads (BENCHMARKS.md, "Figures behind default
    # settings"), and one keeps answering while the other restarts.
    min_workers: int = setting(
        2,
        "Python workers started per model; each gets its share of the CPUs (--torch-threads 0).",
        low=1,
        high=64,
    )
    max_workers: int = setting(2, "Most Python workers per model.", low=1, high=64)
    response_timeout_s: int = setting(
        120,
        "Seconds a worker may take to answer a batch before TorchServe restarts it.",
        low=1,
        high=86_400,
        option="--response-timeout",
    )
    startup_timeout_s: int = setting(
        120,
        "Seconds a worker may take to load the model.",
        low=1,
        high=86_400,
        option="--startup-timeout",
    )
    netty_threads: int = setting(4, "TorchServe's front-end threads.", low=1, high=256)
    job_queue_size: int = setting(
        1000, "Requests TorchServe queues per model before it answers 503.", low=1, high=1_000_000
    )
    # TorchServe's max_request_size: the front end refuses bigger bodies with 413.
    max_request_bytes: int = setting(
        DEFAULT_MAX_REQUEST_BYTES,
        "Largest request body TorchServe accepts (bytes, or e.g. 10MiB); bigger ones get 413.",
        low=MAX_REQUEST_BYTES_RANGE[0],
        high=MAX_REQUEST_BYTES_RANGE[1],
        option="--max-request-size",
    )
    token_auth: bool = setting(False, "Require TorchServe's bearer token on every call.")
    ports: Ports = field(default_factory=Ports)
    # None: the handler's default capped at the model's own maximum (build checks the range,
    # since it knows the model's maximum).
    max_length: int | None = setting(
        None,
        f"Truncate texts to this many tokens ({declarations(HandlerSettings)['max_length'].low} "
        f"or more; default: the smaller of {HandlerSettings.max_length} and the model's "
        "maximum).",
    )
    # handler.allow_pickle (`build --allow-pickle`) also lets build read pickle weights.
    handler: HandlerSettings = field(default_factory=HandlerSettings)
    # --runtime torch-int8 / onnx-int8: the least share of held-out texts whose int8 label must
    # be fp32's (archiver/int8_check.py says why 0.98).
    min_label_agreement: float = setting(
        0.98,
        "--runtime torch-int8 / onnx-int8: the least share of held-out demo-corpus texts whose "
        "int8 label must be fp32's, else the build fails.",
        low=0,
        high=1,
    )

    def __post_init__(self) -> None:
        if len(self.name) > MAX_NAME_LENGTH:
            raise InputError(
                f"model name {quoted(self.name)} is {len(self.name)} characters long, more than "
                f"the {MAX_NAME_LENGTH} allowed: it names the archive file (NAME.tar.gz) and "
                "staging files, which must stay under the 255-byte file name limit",
                fix=f"pass a --model-name of at most {MAX_NAME_LENGTH} characters",
            )
        if not NAME_PATTERN.fullmatch(self.name):
            raise InputError(
                f"model name {quoted(self.name)} is not allowed: it is the key in request URLs "
                f"and must match {NAME_RULE}",
                fix="pass --model-name with letters, digits, '.', '_' or '-', "
                "e.g. --model-name scibert",
            )
        if len(self.version) > MAX_VERSION_LENGTH:
            raise InputError(
                f"model version {quoted(self.version)} is {len(self.version)} characters long, "
                f"more than the {MAX_VERSION_LENGTH} allowed (it names upload folders)",
                fix=f"pass a --version of at most {MAX_VERSION_LENGTH} characters, e.g. 1.0",
            )
        if not VERSION_PATTERN.fullmatch(self.version):
            raise InputError(
                f"model version {quoted(self.version)} is not allowed "
                "(expected e.g. 1.0 or 2024-05)",
                fix="pass --version with letters, digits, '.', '_' or '-'",
            )
        try:
            check_declared(self)
        except SettingsError as err:
            raise setting_error(err, BuildSettings) from err
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


def build_settings(values: Mapping[str, Any]) -> BuildSettings:
    """BuildSettings from flat values keyed by setting name, build's and the handler's alike
    (name, batch_size, explain_steps, ports, ...); a key left out takes its default.

    Every bad value is an InputError naming the `build` option that sets it, the value and the
    range; when two settings conflict it blames the one that was given.
    """
    build_keys = {*declarations(BuildSettings), "ports"}
    handler_keys = set(declarations(HandlerSettings)) - build_keys
    unknown = sorted(set(values) - build_keys - handler_keys)
    if unknown:
        raise InputError(
            f"unknown build setting(s) {', '.join(unknown)}",
            fix=f"use one of {', '.join(sorted(build_keys | handler_keys))}",
        )
    if "name" not in values:
        raise InputError("a model name is required", fix="pass --model-name, e.g. scibert")
    given = {key: value for key, value in values.items() if key in handler_keys}
    try:
        handler = HandlerSettings(**given)
    except SettingsError as err:
        raise setting_error(err, HandlerSettings, given=given) from err
    return BuildSettings(
        **{key: value for key, value in values.items() if key in build_keys}, handler=handler
    )


def setting_error(err: SettingsError, cls: type, *, given: Collection[str] = ()) -> InputError:
    """A SettingsError of a settings dataclass as an InputError naming the option that sets the
    setting; `given` names the settings the user set (a conflict blames one of those)."""
    message, fix = option_problem(err, cls, given=given)
    return InputError(message, fix=fix)


def _check(option: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InputError(
            f"{option} {value} is out of range (expected {low} to {high})",
            fix=f"pass {option} between {low} and {high}",
        )


def quoted(value: object) -> str:
    """A user's value as a message quotes it: repr (escapes newlines), long ones cut short."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...{text[-12:]}"
