"""Each known trap gives its warning, with the message pinned; a clean setup gives none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.manifest_store import write_store

from scibert_pack.kserve.manifest import build_manifest
from scibert_pack.kserve.options import ManifestOptions
from scibert_pack.kserve.store_info import read_store_for_manifest

BASE = {"name": "scibert", "storage_uri": "s3://models/scibert/v1/"}

TOKEN_AUTH_OFF = (
    "the model store was built with --token-auth, but the scibert-pack runtime starts "
    "TorchServe with --disable-token-auth: in the pod every inference and management call is "
    "answered without a key. TorchServe 0.12 makes its keys at start inside the pod and "
    "expires them, so neither KServe's probes nor your clients could present one"
)
TOKEN_AUTH_OFF_FIX = (
    "authenticate in front of the pod instead (an ingress or gateway that checks tokens, e.g. "
    "Istio RequestAuthentication with an AuthorizationPolicy) and keep the pod's other ports "
    "in the cluster with a NetworkPolicy; rebuild the store without --token-auth once that is "
    "in place, and this warning goes away"
)

# (id, options, store overrides or None for no store, code, message, fix)
TRAPS: list[tuple[str, dict[str, Any], dict[str, Any] | None, str, str, str]] = [
    (
        "batcher-with-v2",
        {"protocol": "v2", "batcher_max_batch_size": 8},
        None,
        "batcher-v2",
        "KServe's batcher only batches v1 requests (kserve#2275): with --protocol v2 it does "
        "nothing useful",
        "drop the --batcher-* options and batch in TorchServe instead (`scibert-pack build "
        "--batch-size N --max-batch-delay MS`), or use --protocol v1",
    ),
    (
        "batcher-timeout",
        {"protocol": "v1", "batcher_timeout": 30},
        None,
        "batcher-timeout",
        "batcher.timeout 30 is not passed on to the batcher by KServe, so it has no effect",
        "drop --batcher-timeout; use --timeout for the request timeout and "
        "--batcher-max-latency for how long a batch waits",
    ),
    (
        "stock-runtime-old-image",
        {"runtime": "kserve-torchserve", "protocol": "v1", "runtime_version": "0.9.0"},
        None,
        "stock-runtime-image",
        "runtimeVersion '0.9.0' runs pytorch/torchserve-kfs:0.9.0, but the archive was built "
        "for TorchServe 0.12.0 (the runtime's default image is still 0.9.0)",
        "use --runtime-version 0.12.0 or leave it out",
    ),
    (
        "stock-runtime-old-image-gpu",
        {"runtime": "kserve-torchserve", "protocol": "v1", "runtime_version": "0.11.1", "gpu": 1},
        None,
        "stock-runtime-image",
        "runtimeVersion '0.11.1' runs pytorch/torchserve-kfs:0.11.1, but the archive was built "
        "for TorchServe 0.12.0 (the runtime's default image is still 0.9.0)",
        "use --runtime-version 0.12.0-gpu or leave it out",
    ),
    (
        "token-auth-with-wrapper",
        {"runtime": "kserve-torchserve", "protocol": "v1"},
        {"token_auth": True},
        "token-auth-wrapper",
        "the model store has TorchServe token authorization on; KServe's wrapper in the "
        "kserve-torchserve image sends no token, so the pod never becomes ready "
        "(pytorch/serve#3301)",
        "rebuild the store without --token-auth, or use --runtime scibert-pack (it starts "
        "TorchServe with --disable-token-auth)",
    ),
    (
        "token-auth-with-our-runtime",
        {},
        {"token_auth": True},
        "token-auth-off",
        TOKEN_AUTH_OFF,
        TOKEN_AUTH_OFF_FIX,
    ),
    (
        "v2-explain-behind-wrapper",
        {"runtime": "kserve-torchserve", "protocol": "v2"},
        None,
        "wrapper-v2-explain",
        "KServe's wrapper in the kserve-torchserve image has no /v2/models/scibert/explain "
        "route: v2 explanations return 404",
        "use --runtime scibert-pack (TorchServe answers /v2/.../explain itself), or "
        "--protocol v1 and POST /v1/models/NAME:explain",
    ),
    (
        "url-name-differs",
        {"name": "abstracts"},
        {"model_name": "scibert"},
        "url-model-name",
        "the InferenceService is named 'abstracts' but TorchServe serves the model as "
        "'scibert': request URLs must say /v2/models/scibert/infer or "
        "/v1/models/scibert:predict",
        "use that name in requests, or give both the same name (--name of "
        "`scibert-pack manifest`, --model-name of `scibert-pack build`)",
    ),
    (
        "model-name-not-in-snapshot",
        {"model_name": "sci-bert"},
        {"model_name": "scibert"},
        "model-not-served",
        "model name 'sci-bert' is not a key of model_snapshot in the store's config.properties "
        "(it serves scibert): every request would 404",
        "use --model-name scibert, or rebuild the store with `scibert-pack build --model-name sci-bert`",
    ),
    (
        "storage-uri-without-slash",
        {"storage_uri": "s3://models/scibert/v1"},
        None,
        "storage-uri-slash",
        "storageUri 's3://models/scibert/v1' has no trailing slash: KServe downloads every "
        "object under the prefix, so s3://models/scibert/v10/... or "
        "s3://models/scibert/v1-old/... would be mixed in (kserve#3776)",
        "use --storage-uri s3://models/scibert/v1/",
    ),
    (
        "metrics-port-mismatch",
        {"metrics_port": 9090},
        {"metrics_port": 8082},
        "metrics-port",
        "Prometheus would scrape port 9090, but config.properties serves metrics on 8082: "
        "scrapes would fail",
        "use --metrics-port 8082 or leave it out",
    ),
    (
        "metrics-port-mismatch-no-store",
        {"metrics_port": 9090},
        None,
        "metrics-port",
        "Prometheus would scrape port 9090, but config.properties serves metrics on 8082: "
        "scrapes would fail",
        "use --metrics-port 8082 or leave it out",
    ),
    (
        "metrics-mode-log",
        {},
        {"metrics_mode": "log"},
        "metrics-mode",
        "config.properties has metrics_mode=log: /metrics stays empty and Prometheus scrapes "
        "nothing",
        "rebuild the store with `scibert-pack build` (it sets metrics_mode=prometheus)",
    ),
    (
        "local-profile-store",
        {},
        {"host": "127.0.0.1"},
        "loopback-bind",
        "config.properties binds TorchServe to 127.0.0.1 (the local profile): KServe cannot "
        "reach it inside the pod",
        "rebuild the store with `scibert-pack build --profile kserve`",
    ),
    (
        "timeout-over-knative-max",
        {"timeout": 900},
        None,
        "knative-timeout",
        "--timeout 900 is above Knative's default max-revision-timeout-seconds (600): the "
        "revision is rejected unless the cluster raised it",
        "use --timeout 600 or less, or raise max-revision-timeout-seconds in the "
        "config-defaults ConfigMap of knative-serving",
    ),
    (
        "pvc-without-store",
        {"storage_uri": "pvc://claim/scibert"},
        None,
        "pvc-fill-needs-store",
        "no steps to fill the claim of pvc://claim/scibert: they copy and check every file of "
        "the model store, which was not given",
        "pass --from-store OUT to get them (the same steps `scibert-pack upload OUT "
        "pvc://CLAIM/PATH` prints)",
    ),
]


@pytest.mark.parametrize(
    ("extra", "store_overrides", "code", "message", "fix"),
    [t[1:] for t in TRAPS],
    ids=[t[0] for t in TRAPS],
)
def test_trap_gives_its_warning(
    tmp_path: Path,
    extra: dict[str, Any],
    store_overrides: dict[str, Any] | None,
    code: str,
    message: str,
    fix: str,
) -> None:
    store = None
    if store_overrides is not None:
        store = read_store_for_manifest(write_store(tmp_path / "out", **store_overrides))
    warnings = build_manifest(ManifestOptions(**{**BASE, **extra}), store).warnings
    matching = [w for w in warnings if w.code == code]
    assert len(matching) == 1, [w.code for w in warnings]
    assert (matching[0].message, matching[0].fix) == (message, fix)


def test_stock_runtime_always_warns_about_its_missing_libraries(tmp_path: Path) -> None:
    store = read_store_for_manifest(write_store(tmp_path / "out"))
    options = ManifestOptions(**{**BASE, "runtime": "kserve-torchserve", "protocol": "v1"})
    (warning,) = build_manifest(options, store).warnings
    assert warning.code == "stock-runtime-libraries"
    assert warning.message == (
        "pytorch/torchserve-kfs images ship torch but not transformers or captum, and the "
        "store's config.properties keeps install_py_dep_per_model=false: the handler cannot "
        "import them and the model never loads"
    )
    assert warning.fix.startswith("use the default --runtime scibert-pack (its Dockerfile pins ")


# Setups that look like a trap but are right: no warning at all (the stock runtime's
# always-present library warning aside).
CLEAN: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = [
    ("defaults", {}, None),
    ("store-matches", {}, {}),
    ("batcher-with-v1", {"protocol": "v1", "batcher_max_batch_size": 8}, None),
    ("stock-v1-default-image", {"runtime": "kserve-torchserve", "protocol": "v1"}, {}),
    ("stock-gpu-image", {"runtime": "kserve-torchserve", "protocol": "v1", "gpu": 1}, None),
    # With the store, the PVC documents come with their copy steps: nothing to warn about.
    ("pvc-uri-without-slash", {"storage_uri": "pvc://claim/scibert"}, {}),
    ("pvc-serving-only", {"storage_uri": "pvc://claim/scibert", "only": "serving"}, None),
    ("no-prometheus-ignores-ports", {"prometheus": False, "metrics_port": 9090}, None),
    ("timeout-600", {"timeout": 600}, None),
    ("hpa-long-timeout", {"autoscaler": "hpa", "timeout": 900}, None),
    ("explicit-matching-model-name", {"model_name": "scibert"}, {}),
]


@pytest.mark.parametrize(
    ("extra", "store_overrides"), [c[1:] for c in CLEAN], ids=[c[0] for c in CLEAN]
)
def test_no_warning_when_right(
    tmp_path: Path, extra: dict[str, Any], store_overrides: dict[str, Any] | None
) -> None:
    store = None
    if store_overrides is not None:
        store = read_store_for_manifest(write_store(tmp_path / "out", **store_overrides))
    warnings = build_manifest(ManifestOptions(**{**BASE, **extra}), store).warnings
    assert [w.code for w in warnings if w.code != "stock-runtime-libraries"] == []


def test_manifest_says_on_stderr_that_token_auth_is_off_in_the_pod(tmp_path: Path) -> None:
    """Never silent: the YAML on stdout is unchanged, the warning and its reason on stderr."""
    from click.testing import CliRunner

    from scibert_pack.cli import cli

    args = ["manifest", "--storage-uri", "s3://models/scibert/v1/", "--no-dockerfile"]
    for token_auth in (True, False):
        store = write_store(tmp_path / f"out-{token_auth}", token_auth=token_auth)
        result = CliRunner().invoke(cli, [*args, "--from-store", str(store)])
        assert result.exit_code == 0, result.output
        assert "--disable-token-auth" in result.stdout
        warning = f"Warning: [token-auth-off] {TOKEN_AUTH_OFF}\n  fix: {TOKEN_AUTH_OFF_FIX}\n"
        assert (warning in result.stderr) is token_auth, result.stderr
