"""Policy: thresholds from a file, categories, and escalation of correlated breaches."""

from app.policy.config import Category, PolicyConfig, PolicyError, PolicyFile, load_policy
from app.policy.decide import BreachWindow, Decision, decide
from app.policy.store import PolicyStore

__all__ = [
    "BreachWindow",
    "Category",
    "Decision",
    "PolicyConfig",
    "PolicyError",
    "PolicyFile",
    "PolicyStore",
    "decide",
    "load_policy",
]
