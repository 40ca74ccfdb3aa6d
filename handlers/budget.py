"""Keeps a batch's explanation work inside TorchServe's response timeout.

TorchServe restarts a worker whose batch outlives the model's responseTimeout, failing every
request of that batch. Explanations are the only work whose cost a client controls (texts x
tokens x n_steps), and the static caps (max_explain_work, max_batch_tokens) cannot know how fast
this model runs on this machine. So before explaining, each request's cost is estimated from a
measured rate, and a request that would push the batch past half the timeout is refused alone:
413 when it is too big even alone, 503 (retry) when only its neighbours' work leaves no room.

The rate is seconds per (token x step): the last explanation's, or, before any, this batch's
forward pass times EXPLAIN_COST_FACTOR. That estimate can be wrong many times over (the first
forward pass of a freshly started worker is cold, a busy machine slows one pass), so it never
earns a 413: a request it judges too big alone gets a 503 (retry) instead, and the service
measures a real rate before judging again.

A measured explanation also has a fixed cost per Captum call (hooks, the baseline, the
gradient set-up) that a rate of seconds / token-steps would spread over its few token-steps:
after a small explanation, or one slowed by a busy machine, every ordinary request would look
too big (413). So the calibration explains one text twice, with few and with more steps, and
their difference gives the rate without that fixed cost (`calibrate`); later explanations are
learnt net of it, and a slower pace is taken only half way (`learn`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# An integrated-gradients row costs a forward and a backward pass (no weight gradients): about
# twice a forward pass (BENCHMARKS.md, "Figures behind default settings"). The forward pass it
# scales was run on the same texts, so their length is already in it.
EXPLAIN_COST_FACTOR = 2.0
# Of the response timeout, the share explanations may take: the rest covers the forward pass,
# a rate that was measured on shorter texts, and the front end's own time.
BUDGET_SHARE = 0.5


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


@dataclass
class ExplainBudget:
    """Explanation seconds one batch may spend, and the rate that predicts them."""

    response_timeout_s: float
    seconds_per_token_step: float | None = None
    # Fixed seconds of one explanation call, whatever its size (from the calibration).
    overhead_s: float = 0.0

    @property
    def budget_s(self) -> float:
        return self.response_timeout_s * BUDGET_SHARE

    @property
    def measured(self) -> bool:
        """Whether the rate comes from an explanation that ran (not from a forward pass)."""
        return self.seconds_per_token_step is not None

    def rate(self, forward_s: float, forward_tokens: int) -> float:
        if self.seconds_per_token_step is not None:
            return self.seconds_per_token_step
        return EXPLAIN_COST_FACTOR * forward_s / max(1, forward_tokens)

    def learn(self, seconds: float, token_steps: int) -> None:
        """Learn from an explanation that just ran: its time net of the fixed cost per call.

        A faster pace is taken at once; a slower one half way, so that one batch slowed by a
        busy machine does not make every later request look too big.
        """
        if token_steps <= 0 or seconds <= 0:
            return
        rate = (seconds - self.overhead_s) / token_steps
        if rate <= 0:  # all of it was the fixed cost: nothing learnt about the rate
            return
        old = self.seconds_per_token_step
        self.seconds_per_token_step = rate if old is None or rate < old else (old + rate) / 2

    def calibrate(self, small: tuple[float, int], large: tuple[float, int]) -> None:
        """Rate and fixed cost from two explanations (seconds, token-steps) of one text."""
        (small_s, small_steps), (large_s, large_steps) = small, large
        if large_steps > small_steps and large_s > small_s:
            rate = (large_s - small_s) / (large_steps - small_steps)
            self.overhead_s = max(0.0, small_s - rate * small_steps)
        else:  # timing noise swamped the difference: the larger one's plain rate
            rate = large_s / max(1, large_steps)
            self.overhead_s = 0.0
        self.seconds_per_token_step = rate

    def admit(
        self, costs: Sequence[int], rate: float, spent_s: float = 0.0
    ) -> list[Refusal | None]:
        """For requests costing `costs` token-steps, in order: None (explain it) or a refusal.

        `spent_s` is what the batch has already used (its forward pass): it counts against the
        batch, not against a request judged alone. Only a measured rate makes a request too big
        (413); on an estimate it is deferred (503).
        """
        verdicts: list[Refusal | None] = []
        planned = spent_s
        for cost in costs:
            seconds = self.overhead_s + cost * rate
            if seconds > self.budget_s and not self.measured:
                verdicts.append(Refusal(503, self._unmeasured()))
            elif seconds > self.budget_s:
                verdicts.append(Refusal(413, self._too_big(seconds)))
            elif planned + seconds > self.budget_s:
                verdicts.append(Refusal(503, self._busy(planned)))
            else:
                planned += seconds
                verdicts.append(None)
        return verdicts

    def _too_big(self, seconds: float) -> str:
        return (
            f"explaining this request would take about {seconds:.0f} s on this server "
            f"(texts x tokens x n_steps), more than the {self.budget_s:.0f} s a batch may spend "
            f"on explanations (half the model's responseTimeout of {self.response_timeout_s:.0f}"
            " s); send fewer or shorter texts or a smaller n_steps, or rebuild the archive with "
            "a larger --response-timeout"
        )

    def _unmeasured(self) -> str:
        return (
            "this server has not yet measured how fast it explains, and its first estimate "
            f"puts this request past the {self.budget_s:.0f} s a batch may spend on "
            "explanations; retry it"
        )

    def _busy(self, planned: float) -> str:
        return (
            f"this batch already holds about {planned:.0f} s of explanations, and this request "
            f"would take it past the {self.budget_s:.0f} s a batch may spend on them; retry it"
        )
