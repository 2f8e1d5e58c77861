"""Embed in agent workers: emit step-level events and obey kill commands.

The codec, topic names and settings here are shared with the cluster app.
"""

from agents_bridge.monitor import Monitor
from agents_bridge.propagation import in_context
from agents_bridge.run import AgentKilled, AgentRun, ToolCall
from agents_bridge.settings import Settings, SettingsError, load_settings
from agents_bridge.validation import InvalidEventError

__all__ = [
    "AgentKilled",
    "AgentRun",
    "InvalidEventError",
    "Monitor",
    "Settings",
    "SettingsError",
    "ToolCall",
    "in_context",
    "load_settings",
]
