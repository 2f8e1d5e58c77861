"""Tool latency spikes against the tool's own rolling baseline (an EWMA).

One slow call is a signal; ``repeat`` spikes inside ``window_s`` in one task
are an anomaly. Spikes do not feed the baseline, so a degrading tool cannot
teach the detector that slow is normal.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.detectors._state import US, Config, State
from app.detectors.finding import Finding
from app.detectors.tool_stages import is_outcome

__all__ = ["LatencyConfig", "SpikeWindow", "ToolBaseline", "detect_latency"]


class LatencyConfig(Config):
    spike_factor: float = Field(5.0, gt=1, description="latency / baseline that is a spike")
    min_samples: int = Field(5, ge=1, description="calls before the baseline is trusted")
    alpha: float = Field(0.1, gt=0, le=1, description="EWMA weight of the newest sample")
    repeat: int = Field(3, ge=2, description="spikes in one task that make an anomaly")
    window_s: float = Field(300.0, gt=0)


class ToolBaseline(State):
    samples: int = 0
    ewma_ms: float = 0.0


class SpikeWindow(State):
    spikes: tuple[tuple[int, str], ...] = ()
    """(emitted_at µs, event id) of this task's recent spikes."""


def detect_latency(
    baseline: ToolBaseline, spikes: SpikeWindow, event: dict[str, Any], config: LatencyConfig
) -> tuple[ToolBaseline, SpikeWindow, list[Finding]]:
    """Fold an event with ``tool_name`` and ``duration_ms`` into the tool baseline."""
    duration = event.get("duration_ms")
    tool = event.get("tool_name")
    if duration is None or not is_outcome(event):
        return baseline, spikes, []
    trusted = baseline.samples >= config.min_samples
    if not (trusted and duration >= config.spike_factor * baseline.ewma_ms):
        ewma = (
            duration
            if baseline.samples == 0
            else baseline.ewma_ms + config.alpha * (duration - baseline.ewma_ms)
        )
        return ToolBaseline(samples=baseline.samples + 1, ewma_ms=ewma), spikes, []
    now = event["emitted_at"]
    recent = (
        *(s for s in spikes.spikes if s[0] > now - int(config.window_s * US)),
        (now, event["event_id"]),
    )
    ratio = duration / baseline.ewma_ms if baseline.ewma_ms else float("inf")
    detail = (
        f"tool {tool!r} took {duration:.0f} ms, {ratio:.1f}x its {baseline.ewma_ms:.0f} ms baseline"
    )
    if len(recent) >= config.repeat:
        finding = Finding.for_event(
            event,
            "latency_spike",
            f"{len(recent)} latency spikes in {config.window_s:g} s; {detail}",
            value=len(recent),
            threshold=config.repeat,
            evidence=tuple(i for _, i in recent),
        )
        return baseline, SpikeWindow(), [finding]
    signal = Finding.for_event(
        event, "latency_spike", detail, level="signal", value=ratio, threshold=config.spike_factor
    )
    return baseline, SpikeWindow(spikes=recent), [signal]
