"""Tolerance mode: the fewest ladder steps (8, 16, ...) whose |convergence delta| meets the
tolerance, checked by invariants against the model itself and against explicit n_steps."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from support.fake_context import HttpRequest
from support.in_process_service import TEST_SETTINGS, call, target_probability
from support.tiny_models import Family

from scibert_pack.handlers.explain import TOLERANCE_METHOD, ExplainJob, explain_to_tolerance
from scibert_pack.handlers.explain import explain as run_explain
from scibert_pack.handlers.service import ClassifierService
from scibert_pack.handlers.settings import LADDER_START, HandlerSettings

TEXTS = [
    "risk assessment implications of site-specific oral relative bioavailability .",
    "quantum states of the photon decay in the magnetic field .",
    "cells divide",
]
LABELS = ["biology", "chemistry", "physics"]
FAMILIES = ["bert", "roberta", "distilbert"]


def service(pair: tuple[Any, Any], settings: HandlerSettings = TEST_SETTINGS) -> ClassifierService:
    # A generous response timeout: the budget is tested in test_handler_budget.py.
    return ClassifierService.from_model(*pair, settings, response_timeout_s=3600.0)


def explain(svc: ClassifierService, texts: list[str], **params: object) -> list[dict]:
    (response,) = call(svc, [HttpRequest({"texts": texts, "parameters": params}, explain=True)])
    assert response.status == 200, response.body
    return list(response.body)


def rung(svc: ClassifierService, text: str, target: int, steps: int) -> float:
    """The delta of one ladder rung: `steps` steps of the tolerance mode's rule."""
    job = ExplainJob((0,), (target,), steps, 64, 10**6, method=TOLERANCE_METHOD)
    (result,) = run_explain(svc.classifier, svc.classifier.tokenize([text]), job)
    return result.delta


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("tolerance", [None, 1e-2, 1e-5], ids=["server-default", "1e-2", "1e-5"])
def test_tolerance_invariants(
    trained: dict[Family, tuple[Any, Any]], family: Family, tolerance: float | None
) -> None:
    model, tokenizer = trained[family]
    svc = service(trained[family])
    params: dict[str, object] = {"granularity": "pieces"}
    if tolerance is not None:
        params["tolerance"] = tolerance
    asked = TEST_SETTINGS.explain_tolerance if tolerance is None else tolerance
    items = explain(svc, TEXTS, **params)
    assert len(items) == len(TEXTS)
    # Each text's cap: max_explain_steps and its request's share of max_explain_work.
    cap = min(TEST_SETTINGS.max_explain_steps, TEST_SETTINGS.max_explain_work // len(TEXTS))
    for text, item in zip(TEXTS, items, strict=True):
        assert len(item["words"]) == len(item["importances"])
        fx, fb = target_probability(model, tokenizer, text, LABELS.index(item["target"]))
        assert sum(item["importances"]) - (fx - fb) == pytest.approx(item["delta"], abs=1e-4)
        steps = item["n_steps"]
        assert item["tolerance"] == asked
        assert item["converged"] == (abs(item["delta"]) <= asked)
        assert steps in [LADDER_START * 2**k for k in range(8)] and steps <= cap
        if not item["converged"]:  # the ladder ran out: no next rung fits the cap
            assert steps * 2 > cap
        if steps > LADDER_START:  # the fewest steps: the rung below missed the tolerance
            assert abs(rung(svc, text, LABELS.index(item["target"]), steps // 2)) > asked


def test_a_tight_tolerance_climbs_the_ladder(trained: dict[Family, tuple[Any, Any]]) -> None:
    """The invariants above must be able to fail: some text needs more than the first rung."""
    items = explain(service(trained["bert"]), TEXTS, tolerance=1e-6)
    assert max(item["n_steps"] for item in items) > LADDER_START


def test_the_ladder_stops_at_max_explain_steps(trained: dict[Family, tuple[Any, Any]]) -> None:
    settings = dataclasses.replace(TEST_SETTINGS, max_explain_steps=12, explain_steps=12)
    items = explain(service(trained["bert"], settings), TEXTS, tolerance=1e-6)
    assert [item["n_steps"] for item in items] == [LADDER_START] * len(TEXTS)
    assert all(item["converged"] == (abs(item["delta"]) <= 1e-6) for item in items)
    assert not all(item["converged"] for item in items)


@pytest.mark.parametrize("family", FAMILIES)
def test_explicit_n_steps_is_exactly_todays_explanation(
    trained: dict[Family, tuple[Any, Any]], family: Family
) -> None:
    """n_steps in the request: that many Gauss-Legendre steps, no tolerance fields."""
    svc = service(trained[family])
    items = explain(svc, TEXTS, n_steps=20, granularity="pieces")
    batch = svc.classifier.tokenize(TEXTS)
    targets = tuple(LABELS.index(item["target"]) for item in items)
    job = ExplainJob((0, 1, 2), targets, 20, TEST_SETTINGS.internal_batch_size, 10**6)
    direct = run_explain(svc.classifier, batch, job)
    for item, expected in zip(items, direct, strict=True):
        assert "tolerance" not in item and "converged" not in item
        assert item["n_steps"] == 20
        assert item["importances"] == pytest.approx(expected.importances, abs=1e-6)
        assert item["delta"] == pytest.approx(expected.delta, abs=1e-7)


def test_server_tolerance_off_uses_explain_steps(trained: dict[Family, tuple[Any, Any]]) -> None:
    settings = dataclasses.replace(TEST_SETTINGS, explain_tolerance=0.0, explain_steps=24)
    (item,) = explain(service(trained["bert"], settings), TEXTS[:1])
    assert item["n_steps"] == 24 and "tolerance" not in item


def test_the_budget_stops_the_ladder(trained: dict[Family, tuple[Any, Any]]) -> None:
    """A next rung runs only when may_continue agrees; the texts it stops keep their last rung."""
    svc = service(trained["bert"])
    batch = svc.classifier.tokenize(TEXTS)
    job = ExplainJob((0, 1, 2), (0, 0, 0), LADDER_START, 64, 10**6)
    asked: list[tuple[tuple[int, ...], int]] = []

    def refuse(positions: tuple[int, ...], steps: int) -> bool:
        asked.append((positions, steps))
        return False

    results = explain_to_tolerance(svc.classifier, batch, job, 1e-9, [512] * 3, refuse)
    assert [r.n_steps for r in results] == [LADDER_START] * 3
    assert [r.converged for r in results] == [abs(r.delta) <= 1e-9 for r in results]
    short = tuple(k for k, r in enumerate(results) if not r.converged)
    assert short and asked == [(short, LADDER_START * 2)]
