"""Hysteresis: GlimpRouter with momentum, as R2R's switching does.

Once the glimpse entropy reaches `threshold` the large model takes over, and it keeps writing
until the entropy falls below the lower threshold `lower`: a chain does not flip between the
models on every step that sits near the cut. Written only against glimprouter's public API:

    glimprouter eval --method examples.strategies.hysteresis:Hysteresis --knob lower=0.5
"""

from __future__ import annotations

from dataclasses import dataclass

from glimprouter import ModelRole, StepView, Strategy, choose_writer, knob


class Hysteresis(Strategy):
    name = "hysteresis"
    description = "glimpse entropy >= threshold: large writes until it falls below lower"
    glimpse = True
    costlier = {"threshold": "lower"}

    @dataclass(frozen=True)
    class Knobs:
        lower: float = knob(
            0.5,
            "glimpse entropy (nats) below which the small model takes back over from the large",
            costlier="lower",  # a lower one keeps the large model writing longer
        )

    def decide(self, view: StepView) -> ModelRole:
        if view.steps and view.steps[-1]["model"] == "large":
            return "small" if view.entropy < view.knobs.lower else "large"
        return choose_writer(view.entropy, view.context.threshold)

    def label(self, config: dict) -> str:
        lower = self.knobs_of(config.get("knobs", "")).lower
        return f"hysteresis t={config['threshold']:.4g} lower={lower:.4g}"
