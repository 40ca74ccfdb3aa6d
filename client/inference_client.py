"""A small KServe v2 client for a served scibert-pack model (predict and explain).

The HTTP session is injectable (`session=`), so tests and other transports plug in without
monkeypatching; every failure becomes a ClientError that says what to do next.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from scibert_pack.config.properties import LOCAL_INFERENCE_URL
from scibert_pack.errors import ClientError, InputError
from scibert_pack.files import load_json
from scibert_pack.serving.run_dir import default_run_dir
from scibert_pack.serving.server import KEY_FILE, is_loopback, read_serving_record, read_token

TOKEN_ENV = "SCIBERT_PACK_TOKEN"
# Answers worth sending again: the worker is busy, restarting or failed for a moment.
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504, 507})


@dataclass(frozen=True)
class ServerLimit:
    """The handler setting a request went over, from the error body (limit_name, limit, value)."""

    name: str
    limit: int
    value: int


class RequestFailed(ClientError):
    """A request that got no 200: `status` is the HTTP code, None when no answer came at all."""

    def __init__(
        self, message: str, *, fix: str, status: int | None, limit: ServerLimit | None = None
    ) -> None:
        super().__init__(message, fix=fix)
        self.status = status
        self.limit = limit

    @property
    def retryable(self) -> bool:
        """Connection errors, timeouts and busy/failing servers may pass on a second try."""
        return self.status is None or self.status in RETRYABLE_STATUSES


@dataclass(frozen=True)
class ServedPrediction:
    text: str
    label: str
    probabilities: dict[str, float]
    truncated: bool


@dataclass(frozen=True)
class ServedExplanation:
    text: str
    label: str
    target: str
    words: list[str]
    importances: list[float]
    delta: float
    truncated: bool
    # Integration steps the server used (None: a server that does not say).
    n_steps: int | None = None
    # Tolerance mode: False when the steps ran out before |delta| reached the tolerance.
    converged: bool | None = None
    # Why the explanation is not what was asked for (word pieces from a slow tokenizer, ...).
    note: str | None = None


def find_token(url: str, *, token: str | None = None, key_file: Path | None = None) -> str | None:
    """An explicit token, $SCIBERT_PACK_TOKEN, an explicit key file, or else the key of the
    loopback server `scibert-pack serve` runs at exactly `url` (local_server_token)."""
    if token:
        return token
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    if key_file is not None:
        found = read_token(key_file)
        if found is None:
            raise ClientError(
                f"key file {key_file} has no inference key",
                fix="pass the key_file.json TorchServe wrote in its working directory",
            )
        return found
    return local_server_token(url)


def local_server_token(url: str, api: str = "inference") -> str | None:
    """The key `serve` keeps for the server at `url`, only when `url` is a loopback address
    and that server listens on exactly this host and port and still runs: a key found by port
    alone would go to whatever listens on another address (127.0.0.2, another machine)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if parts.scheme != "http" or host is None or port is None or not is_loopback(host):
        return None
    run_dir = default_run_dir(port)
    record = read_serving_record(run_dir)
    if record is None or not record.serves(host, port) or not record.alive():
        return None
    return read_token(run_dir / KEY_FILE, api)


# The request parameters `explain` sends and the CLI options that set them: a refusal that
# names a parameter is told as the option a CLI user typed.
PARAMETER_OPTIONS = {"n_steps": "--explain-steps", "target": "--target"}


def _token_fix(url: str) -> str:
    """How to send the key: when `serve` runs a server on this port under another address
    (localhost for 127.0.0.1), name the address its key is sent to and the key file."""
    fix = "pass --token, or --key-file with the key_file.json TorchServe wrote"
    try:
        port = urlsplit(url).port
    except ValueError:
        return fix
    if port is None:
        return fix
    run_dir = default_run_dir(port)
    record = read_serving_record(run_dir)
    if record is None or not record.alive():
        return fix
    host = f"[{record.host}]" if ":" in record.host else record.host
    return (
        f"`scibert-pack serve` runs a server on port {port} at {host}; its key is sent only to "
        f"that address: pass --url http://{host}:{port}, or --key-file {run_dir / KEY_FILE}"
    )


def checked_url(url: str) -> str:
    """`url` when it is an http(s) URL with a host; InputError naming --url otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(
            f"--url {url!r} is not an http(s) URL", fix=f"pass e.g. --url {LOCAL_INFERENCE_URL}"
        )
    return url


class InferenceClient:
    def __init__(
        self,
        url: str,
        model: str,
        *,
        token: str | None = None,
        session: requests.Session | None = None,
        timeout_s: float = 300.0,
    ) -> None:
        self.url = checked_url(url).rstrip("/")
        if not 0 < timeout_s < math.inf:
            raise InputError(
                f"--timeout {timeout_s:g} is not a number of seconds above 0",
                fix="pass --timeout SECONDS, e.g. --timeout 300",
            )
        self.model = model
        self.token = token
        self.session = session or requests.Session()
        self.timeout_s = timeout_s

    def infer(
        self, texts: Sequence[str], *, request_id: str | None = None
    ) -> tuple[list[ServedPrediction], dict[str, Any]]:
        body = self._post("infer", self._payload(texts, request_id, {}))
        outputs = {o.get("name"): o for o in body.get("outputs", [])}
        labels = body.get("parameters", {}).get("labels", [])
        try:
            names = outputs["label"]["data"]
            flat = outputs["probabilities"]["data"]
            width = int(outputs["probabilities"]["shape"][1])
            truncated = body.get("parameters", {}).get("truncated", [False] * len(texts))
            predictions = [
                ServedPrediction(
                    text=text,
                    label=str(names[i]),
                    probabilities=dict(zip(labels, flat[i * width : (i + 1) * width], strict=True)),
                    truncated=bool(truncated[i]),
                )
                for i, text in enumerate(texts)
            ]
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise self._unexpected(body, err) from err
        return predictions, body

    def explain(
        self,
        texts: Sequence[str],
        *,
        target: str | int | None = None,
        n_steps: int | None = None,
        merge_subwords: bool | None = None,
        request_id: str | None = None,
        tolerance: float | None = None,
    ) -> tuple[list[ServedExplanation], dict[str, Any]]:
        parameters: dict[str, Any] = {}
        if target is not None:
            parameters["target"] = target
        if n_steps is not None:
            parameters["n_steps"] = n_steps
        if tolerance is not None:
            parameters["tolerance"] = tolerance
        if merge_subwords is not None:
            parameters["merge_subwords"] = merge_subwords
        body = self._post("explain", self._payload(texts, request_id, parameters))
        try:
            items = body["outputs"][0]["data"]
            explanations = [
                ServedExplanation(
                    text=text,
                    label=str(item["label"]),
                    target=str(item.get("target", item["label"])),
                    words=list(item["words"]),
                    importances=[float(v) for v in item["importances"]],
                    delta=float(item["delta"]),
                    truncated=bool(item.get("truncated", False)),
                    n_steps=int(item["n_steps"]) if "n_steps" in item else None,
                    converged=bool(item["converged"]) if "converged" in item else None,
                    note=str(item["note"]) if item.get("note") else None,
                )
                for text, item in zip(texts, items, strict=True)
            ]
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise self._unexpected(body, err) from err
        return explanations, body

    def _payload(
        self, texts: Sequence[str], request_id: str | None, parameters: Mapping[str, Any]
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": request_id or str(uuid.uuid4()),
            "inputs": [
                {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": list(texts)}
            ],
        }
        if parameters:
            payload["parameters"] = dict(parameters)
        return payload

    def _post(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.url}/v2/models/{self.model}/{action}"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = self.session.post(url, json=payload, headers=headers, timeout=self.timeout_s)
        except requests.ConnectionError as err:
            raise RequestFailed(
                f"cannot reach {self.url} ({type(err).__name__})",
                fix="start the server with `scibert-pack serve OUT` or check --url",
                status=None,
            ) from err
        except requests.Timeout as err:
            raise RequestFailed(
                f"{url} did not answer within {self.timeout_s:g} s",
                fix="retry, or raise the timeout if the batch is large",
                status=None,
            ) from err
        if response.status_code != 200:
            message, fix = _http_failure(url, response, self.model)
            limit = _server_limit(response)
            raise RequestFailed(message, fix=fix, status=response.status_code, limit=limit)
        try:
            body = load_json(response.content)
        except ValueError as err:
            raise ClientError(
                f"{url} answered 200 with a body that is not JSON: {response.text[:200]!r}",
                fix="check that --url points at TorchServe serving a scibert-pack archive",
            ) from err
        if not isinstance(body, dict):
            raise self._unexpected(body, TypeError("not an object"))
        return body

    def _unexpected(self, body: object, err: Exception) -> ClientError:
        return ClientError(
            f"the server's answer is not a scibert-pack v2 response ({err}): {str(body)[:300]}",
            fix="check that the model was built with scibert-pack build",
        )


def _server_limit(response: requests.Response) -> ServerLimit | None:
    """The limit_name, limit and value fields of a handler's error body, when it has them."""
    try:
        detail = load_json(response.content)
    except ValueError:
        return None
    if not isinstance(detail, dict):
        return None
    name, limit, value = detail.get("limit_name"), detail.get("limit"), detail.get("value")
    numbers = [n for n in (limit, value) if isinstance(n, int) and not isinstance(n, bool)]
    if not isinstance(name, str) or len(numbers) != 2:
        return None
    return ServerLimit(name, *numbers)


def _http_failure(url: str, response: requests.Response, model: str) -> tuple[str, str]:
    try:
        detail = load_json(response.content)
    except ValueError:
        detail = None
    if isinstance(detail, dict):
        message = detail.get("error") or detail.get("message") or str(detail)
    else:
        message = response.text.strip()[:300] or response.reason
    code = response.status_code
    text = f"{url} answered {code}: {message}"
    # TorchServe 0.12 refuses a missing or wrong token with 400 InvalidKeyException, not 401.
    if code == 401 or "Token Authorization failed" in message:
        return text, _token_fix(url)
    if code == 404:
        return text, f"check --model-name (is {model!r} the name the store serves?) and --url"
    if code in (503, 507):
        return text, "the server is busy or restarting its worker: retry in a moment"
    if 400 <= code < 500:
        named = [o for p, o in PARAMETER_OPTIONS.items() if message.startswith(f"{p} ")]
        if named:
            return text, f"pass {named[0]} as the message says"
        return text, "fix the request as the message says"
    return text, "read the server's logs (scibert-pack serve prints where they are)"
