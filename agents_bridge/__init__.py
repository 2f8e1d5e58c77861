"""Embed in agent workers: emit step-level events and obey kill commands.

The codec, topic names and settings here are shared with the cluster app.
"""

from agents_bridge.monitor import Monitor
from agents_bridge.run import AgentKilled, AgentRun
from agents_bridge.settings import Settings, SettingsError, load_settings

__all__ = ["AgentKilled", "AgentRun", "Monitor", "Settings", "SettingsError", "load_settings"]
