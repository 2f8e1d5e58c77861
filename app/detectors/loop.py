"""Reasoning loop: the same tool with equivalent arguments, again and again.

Two calls are equivalent when their normalized argument hashes match (key
order, whitespace, case and number format folded on the agent side) or when
their argument word sets are similar enough (estimated from MinHash sketches,
so rephrased text is caught without the text leaving the agent). The finding
fires on the call that makes the count reach ``max_repeats`` inside
``window_s``, so a kill lands before the next one.

State stays small whatever the call rate: calls are grouped into clusters of
equivalent calls (one sketch per cluster), and only ``max_clusters`` recent
clusters with their last ``max_repeats`` calls are kept.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agents_bridge.similarity import estimate_jaccard
from app.detectors.finding import Finding
from app.detectors.tool_stages import is_invocation

__all__ = ["LoopConfig", "LoopWindow", "detect_loop"]

_US = 1_000_000


class LoopConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_repeats: int = Field(3, ge=2, description="equivalent calls that make a loop")
    window_s: float = Field(90.0, gt=0)
    similarity: float = Field(
        0.8, gt=0, le=1, description="word-set Jaccard at or above which arguments are equivalent"
    )
    max_clusters: int = Field(16, ge=1, description="distinct recent calls remembered per task")


class _Cluster(BaseModel):
    """Equivalent calls of one tool: unreported calls as (emitted_at µs, event id)."""

    model_config = ConfigDict(frozen=True)

    tool: str
    args_hash: str
    sketch: tuple[int, ...] = ()
    calls: tuple[tuple[int, str], ...] = ()


class LoopWindow(BaseModel):
    """The recent clusters of one task, least recently used first."""

    model_config = ConfigDict(frozen=True)

    clusters: tuple[_Cluster, ...] = ()
    last_ids: tuple[str, ...] = ()
    """The last event ids seen, so a redelivered call is not counted twice."""

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> LoopWindow:
        return cls.model_validate(data) if data else cls()


def _matches(
    cluster: _Cluster, tool: str, args_hash: str, sketch: tuple[int, ...], similarity: float
) -> bool:
    if cluster.tool != tool:
        return False
    if cluster.args_hash == args_hash:
        return True
    return bool(cluster.sketch and sketch) and (
        estimate_jaccard(cluster.sketch, sketch) >= similarity
    )


def detect_loop(
    window: LoopWindow, event: dict[str, Any], config: LoopConfig
) -> tuple[LoopWindow, Finding | None]:
    """Fold one event into ``window``; return the new window and a finding, if any.

    Only invocations count (a whole-call event or the ``invoked`` stage). A
    redelivered event (same event id) is ignored, so at-least-once delivery
    cannot fake a loop.
    """
    if not is_invocation(event):
        return window, None
    event_id = event["event_id"]
    if event_id in window.last_ids:
        return window, None
    now = event["emitted_at"]
    horizon = now - int(config.window_s * _US)
    tool, args_hash = event["tool_name"], event.get("tool_args_hash") or ""
    sketch = tuple(event.get("tool_args_sketch") or ())
    clusters = []
    match: _Cluster | None = None
    for cluster in window.clusters:
        if cluster.calls and cluster.calls[0][0] < horizon:  # copy only what the window trims
            cluster = cluster.model_copy(
                update={"calls": tuple(c for c in cluster.calls if c[0] >= horizon)}
            )
        if match is None and _matches(cluster, tool, args_hash, sketch, config.similarity):
            match = cluster
        elif cluster.calls:
            clusters.append(cluster)
    if match is None:
        match = _Cluster(tool=tool, args_hash=args_hash, sketch=sketch)
    calls = (*match.calls, (now, event_id))
    last_ids = (*window.last_ids, event_id)[-2 * config.max_repeats :]
    finding = None
    if len(calls) >= config.max_repeats:
        finding = Finding.for_event(
            event,
            "reasoning_loop",
            f"tool {tool!r} called {len(calls)} times with equivalent arguments "
            f"within {config.window_s:g} s",
            value=len(calls),
            threshold=config.max_repeats,
            evidence=tuple(i for _, i in calls),
        )
        calls = ()  # reported: the next loop needs max_repeats new calls
    clusters.append(match.model_copy(update={"calls": calls}))  # most recent last
    return LoopWindow(clusters=tuple(clusters[-config.max_clusters :]), last_ids=last_ids), finding
