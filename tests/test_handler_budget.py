"""Explanation work stays inside the response timeout: too big alone -> 413, no room left -> 503,
and the requests around them are answered."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from support.fake_context import FakeContext, HttpRequest
from support.in_process_service import TEST_SETTINGS, call, load_trained
from support.tiny_models import Family

from scibert_pack.handlers.budget import ExplainBudget, Refusal
from scibert_pack.handlers.service import ClassifierService

TOO_BIG = (
    "explaining this request would take about 80 s on this server (texts x tokens x n_steps), "
    "more than the 60 s a batch may spend on explanations (half the model's responseTimeout of "
    "120 s); send fewer or shorter texts or a smaller n_steps, or rebuild the archive with a "
    "larger --response-timeout"
)


def busy(planned: int) -> str:
    return (
        f"this batch already holds about {planned} s of explanations, and this request would take "
        "it past the 60 s a batch may spend on them; retry it"
    )


@pytest.mark.parametrize(
    ("costs", "spent_s", "expected"),
    [
        pytest.param([10, 20], 0.0, [None, None], id="all-fit"),
        pytest.param([80], 0.0, [Refusal(413, TOO_BIG)], id="too-big-alone"),
        pytest.param(
            [40, 30, 15], 0.0, [None, Refusal(503, busy(40)), None], id="no-room-then-room"
        ),
        pytest.param([30], 35.0, [Refusal(503, busy(35))], id="forward-pass-used-the-room"),
        pytest.param([80], 35.0, [Refusal(413, TOO_BIG)], id="too-big-is-judged-alone"),
        pytest.param([60], 0.0, [None], id="exactly-the-budget"),
    ],
)
def test_admit(costs: list[int], spent_s: float, expected: list[Refusal | None]) -> None:
    budget = ExplainBudget(120.0, seconds_per_token_step=1.0)
    assert budget.admit(costs, rate=1.0, spent_s=spent_s) == expected


UNMEASURED = (
    "this server has not yet measured how fast it explains, and its first estimate puts this "
    "request past the 60 s a batch may spend on explanations; retry it"
)


@pytest.mark.parametrize(
    ("costs", "spent_s", "expected"),
    [
        pytest.param([10, 20], 0.0, [None, None], id="all-fit"),
        pytest.param([80], 0.0, [Refusal(503, UNMEASURED)], id="estimate-too-big-is-no-413"),
        pytest.param([80, 10], 0.0, [Refusal(503, UNMEASURED), None], id="the-rest-still-runs"),
        pytest.param([40, 30], 0.0, [None, Refusal(503, busy(40))], id="no-room"),
    ],
)
def test_an_unmeasured_estimate_never_refuses_a_request_as_too_big(
    costs: list[int], spent_s: float, expected: list[Refusal | None]
) -> None:
    """The flaky fault test's 413: the first batch of a restarted worker judged a normal
    explain request on its cold forward pass. Only a measured rate may say 413."""
    budget = ExplainBudget(120.0)
    assert not budget.measured
    assert budget.admit(costs, rate=1.0, spent_s=spent_s) == expected


def test_rate_is_the_forward_estimate_until_an_explanation_is_measured() -> None:
    budget = ExplainBudget(120.0)
    assert budget.rate(forward_s=0.5, forward_tokens=100) == pytest.approx(0.01)  # 2 x 0.005
    budget.learn(seconds=2.0, token_steps=1000)
    assert budget.rate(forward_s=0.5, forward_tokens=100) == pytest.approx(0.002)
    budget.learn(seconds=0.0, token_steps=0)  # nothing measured: the last rate stays
    assert budget.rate(forward_s=9.0, forward_tokens=1) == pytest.approx(0.002)


def test_the_calibration_cancels_the_fixed_cost_of_a_small_explanation() -> None:
    """A small explanation is mostly fixed cost: its plain rate (0.5 s / 80 token-steps) would
    judge an ordinary 24,000 token-step request at 150 s, past the 60 s budget (the flaky 413)."""
    budget = ExplainBudget(120.0)
    budget.calibrate(small=(0.5, 80), large=(0.6, 320))
    assert budget.rate(forward_s=9.0, forward_tokens=1) == pytest.approx(0.1 / 240)
    assert budget.overhead_s == pytest.approx(0.5 - 80 * 0.1 / 240)
    assert budget.admit([24_000], budget.rate(0.0, 1)) == [None]  # ~10.5 s
    assert budget.admit([200_000], budget.rate(0.0, 1)) == [
        Refusal(413, TOO_BIG.replace("about 80 s", "about 84 s"))
    ]


@pytest.mark.parametrize(
    ("small", "large", "rate", "overhead"),
    [
        pytest.param((0.5, 80), (0.6, 320), 0.1 / 240, 0.5 - 80 * 0.1 / 240, id="fixed-cost"),
        pytest.param((0.1, 80), (0.4, 320), 0.3 / 240, 0.0, id="no-fixed-cost"),
        pytest.param((0.6, 80), (0.5, 320), 0.5 / 320, 0.0, id="noise-swamped-the-difference"),
    ],
)
def test_calibrate(
    small: tuple[float, int], large: tuple[float, int], rate: float, overhead: float
) -> None:
    budget = ExplainBudget(120.0)
    budget.calibrate(small, large)
    assert budget.measured
    assert budget.seconds_per_token_step == pytest.approx(rate)
    assert budget.overhead_s == pytest.approx(overhead, abs=1e-12)


@pytest.mark.parametrize(
    ("learnt", "expected"),
    [
        pytest.param([(2.0, 1000)], 0.0015, id="net-of-the-fixed-cost"),
        pytest.param([(2.0, 1000), (1.0, 1000)], 0.0005, id="faster-at-once"),
        pytest.param([(2.0, 1000), (4.5, 1000)], (0.0015 + 0.004) / 2, id="slower-half-way"),
        pytest.param([(2.0, 1000), (0.4, 10)], 0.0015, id="all-fixed-cost-teaches-nothing"),
    ],
)
def test_learn(learnt: list[tuple[float, int]], expected: float) -> None:
    budget = ExplainBudget(120.0, seconds_per_token_step=None, overhead_s=0.5)
    for seconds, token_steps in learnt:
        budget.learn(seconds, token_steps)
    assert budget.seconds_per_token_step == pytest.approx(expected)


@pytest.fixture(scope="module")
def model(tiny_models: dict[Family, Path]) -> tuple[Any, Any]:
    return load_trained(tiny_models["bert"])


def _service(model: tuple[Any, Any], seconds_per_token_step: float) -> ClassifierService:
    service = ClassifierService.from_model(*model, TEST_SETTINGS, name="scibert", version="2.1")
    service.budget.seconds_per_token_step = seconds_per_token_step
    return service


def _explain(text: str, n_steps: int) -> HttpRequest:
    body = {"text": text, "parameters": {"n_steps": n_steps}}
    return HttpRequest(body, explain=True, route="native")


def test_requests_over_the_budget_fail_alone(model: tuple[Any, Any]) -> None:
    tokens = len(model[1]("cells divide")["input_ids"])
    # One explanation of 50 steps takes 36 s of the 60 s budget: it fits alone, not twice.
    service = _service(model, 36.0 / (tokens * 50))
    responses = call(
        service,
        [
            _explain("cells divide", 50),
            HttpRequest({"text": "cells divide"}),  # infer: no explanation cost
            _explain("cells divide", 50),
            _explain("cells divide", 100),  # 72 s alone
        ],
    )
    assert [r.status for r in responses] == [200, 200, 503, 413]
    assert responses[2].body["error"].startswith("this batch already holds about 36 s")
    assert responses[3].body["error"].startswith("explaining this request would take about 72 s")
    assert "words" in responses[0].body and "label" in responses[1].body


def test_an_explanation_teaches_the_budget_its_rate(model: tuple[Any, Any]) -> None:
    service = _service(model, 1e9)  # a wildly pessimistic start refuses everything
    assert call(service, [_explain("cells divide", 10)])[0].status == 413
    service.budget.seconds_per_token_step = None  # back to the forward-pass estimate
    assert call(service, [_explain("cells divide", 10)])[0].status == 200
    learned = service.budget.seconds_per_token_step
    assert learned is not None and 0 < learned < 1.0


@pytest.mark.parametrize(
    ("yaml_timeout", "expected"),
    [
        pytest.param(7, 7.0, id="from-model-config"),
        pytest.param(None, 120.0, id="torchserve-default"),
        pytest.param("soon", 120.0, id="not-a-number"),
    ],
)
def test_budget_follows_the_archive_response_timeout(
    tiny_models: dict[Family, Path], yaml_timeout: object, expected: float
) -> None:
    context = FakeContext(tiny_models["bert"])
    if yaml_timeout is not None:
        context.model_yaml_config["responseTimeout"] = yaml_timeout
    service = ClassifierService.from_context(context)
    assert service.budget.response_timeout_s == expected


class ColdClock:
    """perf_counter, except that the batch's forward pass seems to take `forward_s` (a cold
    worker: its third reading, the end of the forward pass, and every later one are shifted)."""

    def __init__(self, forward_s: float) -> None:
        self.forward_s = forward_s
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return time.perf_counter() + (self.forward_s if self.readings >= 3 else 0.0)


def test_a_cold_first_forward_pass_does_not_refuse_an_ordinary_explanation(
    model: tuple[Any, Any],
) -> None:
    base = ClassifierService.from_model(*model, TEST_SETTINGS, name="scibert", version="2.1")
    clock = ColdClock(forward_s=20.0)  # a third of the 60 s budget, for a few tokens
    service = ClassifierService(base.classifier, TEST_SETTINGS, base.info, clock)
    (response,) = call(service, [_explain("cells divide", 50)])
    assert response.status == 200, response.body
    assert clock.readings >= 3  # the cold forward pass was really measured as 20 s
    # The service measured a real rate (a short calibration explanation) instead of guessing.
    assert service.budget.measured
    assert service.budget.rate(20.0, 4) < 0.01
    # That measured rate still refuses what is really too big.
    service.budget.seconds_per_token_step = 1.0
    assert call(service, [_explain("cells divide", 50)])[0].status == 413


class RecordedBudget(ExplainBudget):
    """An ExplainBudget that records when it is calibrated and when it learns."""

    def __init__(self, response_timeout_s: float) -> None:
        super().__init__(response_timeout_s)
        self.calls: list[str] = []

    def calibrate(self, small: tuple[float, int], large: tuple[float, int]) -> None:
        self.calls.append("calibrate")
        super().calibrate(small, large)

    def learn(self, seconds: float, token_steps: int) -> None:
        self.calls.append("learn")
        super().learn(seconds, token_steps)


def test_an_explain_only_batch_is_judged_on_a_measured_rate(model: tuple[Any, Any]) -> None:
    """Explained texts are predicted by their explanations, so a batch of explain requests has
    no forward pass to estimate from: a fresh worker measures the rate before it judges (a rate
    of 0 would let anything through)."""
    service = ClassifierService.from_model(*model, TEST_SETTINGS, name="scibert", version="2.1")
    service.budget = budget = RecordedBudget(service.budget.response_timeout_s)
    (response,) = call(service, [_explain("cells divide", 50)])
    assert response.status == 200, response.body
    assert budget.calls == ["calibrate", "learn"]
    # A batch with a prediction pass estimates from it: no calibration for an ordinary request.
    service.budget = budget = RecordedBudget(service.budget.response_timeout_s)
    call(service, [HttpRequest({"text": "cells divide"}), _explain("cells divide", 50)])
    assert budget.calls == ["learn"]
