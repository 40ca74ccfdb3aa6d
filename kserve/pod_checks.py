"""What can be seen wrong before the pod starts: the manifest against the store it serves
and the environment that stands in for the image. Each finding names the value and the fix."""

from __future__ import annotations

import contextlib
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Literal

from scibert_pack.config import properties
from scibert_pack.kserve.deployment_values import resolve
from scibert_pack.kserve.dockerfile import TORCHSERVE_IMAGE_PYTHON, dockerfile
from scibert_pack.kserve.options import ManifestOptions
from scibert_pack.kserve.pod_sandbox import MODEL_ROOT, POD_IP
from scibert_pack.kserve.pod_spec import Container, PodPlan
from scibert_pack.layout import CONFIG_FILE, StoreFacts

Severity = Literal["problem", "note"]
# `scibert-pack manifest -o FILE` writes the runtime's Dockerfile under this name beside FILE.
DOCKERFILE_NAME = "Dockerfile.scibert-pack"
# The image's user (Dockerfile: useradd --uid 1000 model-server; TorchServe's images alike).
IMAGE_UID = 1000
IMAGE_GID = 1000


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    fix: str
    severity: Severity = "problem"

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}; {self.fix}"


def check_before_start(
    plan: PodPlan, store: Path, info: StoreFacts, *, isolated: bool, dockerfile: Path
) -> list[Finding]:
    """Findings from the manifest, the store's config.properties and the Dockerfile (or the
    one `manifest` would write for this store when `dockerfile` does not exist)."""
    assert plan.container is not None
    return _Checks(plan, plan.container, store, info, isolated, dockerfile).run()


@dataclass
class _Checks:
    plan: PodPlan
    container: Container
    store: Path
    info: StoreFacts
    isolated: bool
    dockerfile: Path
    findings: list[Finding] = field(default_factory=list)

    def run(self) -> list[Finding]:
        c, plan = self.container, self.plan
        if plan.runtime_formats and plan.model_format not in plan.runtime_formats:
            self._problem(
                "model-format",
                f"the InferenceService asks for model format {plan.model_format!r}, but "
                f"runtime {plan.runtime_name!r} supports {', '.join(plan.runtime_formats)}: "
                "KServe would not select it",
                "write both with the same `scibert-pack manifest` run",
            )
        if plan.runtime_protocols and plan.protocol not in plan.runtime_protocols:
            self._problem(
                "protocol",
                f"protocolVersion {plan.protocol} is not among the runtime's "
                f"{', '.join(plan.runtime_protocols)}",
                "use --protocol v1 or v2",
            )
        self._check_paths()
        self._check_ports()
        sec = c.security
        uid = sec.run_as_user if sec.run_as_user is not None else IMAGE_UID
        if sec.run_as_non_root and uid == 0:
            self._problem(
                "run-as-root",
                "securityContext has runAsNonRoot: true and runAsUser: 0: the kubelet refuses "
                "to start the container (CreateContainerConfigError)",
                f"use runAsUser: {IMAGE_UID}, the image's user",
            )
        if self.isolated and sec.run_as_user is not None and sec.run_as_user != IMAGE_UID:
            self._note(
                "run-as-user",
                f"runAsUser {sec.run_as_user} is not the image's user ({IMAGE_UID}, who owns "
                "the working folder)",
                f"use runAsUser: {IMAGE_UID}, or an image whose WORKDIR that user can write",
            )
        self._check_versions()
        return self.findings

    def _check_paths(self) -> None:
        args = list(self.container.argv)
        for flag in ("--model-store", "--ts-config"):
            value = _flag_value(args, flag)
            if value is None:
                continue
            if not value.startswith(MODEL_ROOT + "/"):
                self._problem(
                    "path-outside-mount",
                    f"the runtime passes {flag} {value}, which is not under {MODEL_ROOT}, where "
                    "KServe mounts the storageUri: TorchServe will not find the store",
                    f"use {flag}={MODEL_ROOT}/"
                    + ("model-store" if flag == "--model-store" else CONFIG_FILE),
                )
            elif not (self.store / value[len(MODEL_ROOT) + 1 :]).exists():
                self._problem(
                    "path-not-in-store",
                    f"the runtime passes {flag} {value}, but the store has no "
                    f"{value[len(MODEL_ROOT) + 1 :]}",
                    "rebuild the store with `scibert-pack build` or fix the runtime's args",
                )
        config = properties.parse((self.store / CONFIG_FILE).read_text(encoding="utf-8"))
        model_store = config.get("model_store", "")
        if model_store and not model_store.startswith(MODEL_ROOT + "/"):
            self._problem(
                "model-store-path",
                f"config.properties has model_store={model_store}, a path on the machine that "
                f"built the store, not under {MODEL_ROOT}: its allowed_urls "
                f"({config.get('allowed_urls', 'unset')}) and any runtime without "
                "--model-store point where the pod has nothing",
                "rebuild the store with `scibert-pack build --profile kserve` "
                f"(model_store={MODEL_ROOT}/model-store)",
            )
        hosts = [h for h in self.info.bind_hosts if h in ("127.0.0.1", "localhost", "::1")]
        if hosts:
            self._problem(
                "loopback-bind",
                f"config.properties binds TorchServe to {hosts[0]} (the local profile): the "
                f"kubelet and the ingress reach the pod at its address ({POD_IP} here), not "
                "at its loopback",
                "rebuild the store with `scibert-pack build --profile kserve`",
            )

    def _check_ports(self) -> None:
        c, served = self.container, self.info.inference_port
        for port in c.ports:
            if port != served:
                self._problem(
                    "container-port",
                    f"the runtime's containerPort is {port}, but config.properties serves "
                    f"inference on {served}: the ingress would send requests to a closed port",
                    f"set containerPort: {served} (or rebuild with --inference-port {port})",
                )
        for kind, probe in (("readinessProbe", c.readiness), ("livenessProbe", c.liveness)):
            if probe is None:
                if kind == "readinessProbe":
                    self._problem(
                        "no-readiness-probe",
                        "the runtime has no readinessProbe: the pod is Ready as soon as the "
                        "container starts, long before the model can answer",
                        "add readinessProbe httpGet /ping on the inference port",
                    )
                continue
            if probe.port is not None and probe.port != served:
                self._problem(
                    "probe-port",
                    f"the {kind} checks port {probe.port}, but config.properties serves "
                    f"inference (and /ping) on {served}",
                    f"set the {kind}'s port to {served}",
                )
            if (
                self.plan.deployment_mode != "RawDeployment"
                and probe.port is not None
                and c.ports
                and probe.port != c.ports[0]
            ):
                self._note(
                    "knative-probe-port",
                    f"Knative only probes the containerPort ({c.ports[0]}), not {probe.port}",
                    "probe the containerPort",
                )

    def _check_versions(self) -> None:
        path = self.dockerfile
        if path.is_file():
            text, origin = path.read_text(encoding="utf-8"), str(path)
        else:
            options = ManifestOptions(name=self.plan.isvc_name, storage_uri=self.plan.storage_uri)
            text = dockerfile(resolve(options, self.info))
            origin = f"the Dockerfile `manifest` writes for this store ({path} not found)"
            self._note(
                "no-dockerfile",
                f"no Dockerfile at {path}: the stand-in's versions were checked against the one "
                "`manifest` writes for this store, not against the image you build",
                "pass --dockerfile PATH (manifest writes Dockerfile.scibert-pack in the folder it "
                "ran in)",
            )
        differ = version_differences(dockerfile_pins(text), environment_versions())
        if differ:
            self._problem(
                "stand-in-versions",
                f"{origin} pins versions this environment does not have: {'; '.join(differ)}; "
                "the rehearsal would not show what the image does",
                "rehearse in the environment the store was built with, or rebuild the store "
                "here and write the manifest again",
            )

    def _problem(self, code: str, message: str, fix: str) -> None:
        self.findings.append(Finding(code, message, fix))

    def _note(self, code: str, message: str, fix: str) -> None:
        self.findings.append(Finding(code, message, fix, severity="note"))


def dockerfile_pins(text: str) -> dict[str, str]:
    """The versions a Dockerfile fixes: `pkg==x.y` pins, the Python and TorchServe images."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        base = re.fullmatch(r"\s*FROM\s+(\S+)(?:\s.*)?", line, re.IGNORECASE)
        if base:
            image, _, tag = base.group(1).partition(":")
            if image.endswith("/torchserve"):
                pins["torchserve"] = tag.split("-", 1)[0]
                pins["python"] = TORCHSERVE_IMAGE_PYTHON
            elif image in ("python", "docker.io/library/python"):
                pins["python"] = ".".join(tag.split("-", 1)[0].split(".")[:2])
        for dist, version in re.findall(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+!\-]+)", line):
            pins[dist.lower()] = version.split("+", 1)[0]
    return pins


def environment_versions() -> dict[str, str]:
    """What the stand-in has of what the Dockerfile pins (local tags such as +cpu dropped)."""
    found = {"python": ".".join(sys.version.split()[0].split(".")[:2])}
    for dist in ("torchserve", "torch", "transformers", "captum"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist).split("+", 1)[0]
    return found


def version_differences(pins: dict[str, str], have: dict[str, str]) -> list[str]:
    """Each pin the environment does not match, as 'dist WANT (environment: HAVE)'."""
    return [
        f"{dist} {want} (environment: {have.get(dist, 'not installed')})"
        for dist, want in pins.items()
        if have.get(dist) != want
    ]


def _flag_value(args: list[str], flag: str) -> str | None:
    for i, word in enumerate(args):
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
        if word == flag and i + 1 < len(args):
            return args[i + 1]
    return None
