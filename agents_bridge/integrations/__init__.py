"""Framework integrations: one line to monitor and control agents built with a framework.

Each module is imported on its own, so the core install never needs a framework:

* :mod:`agents_bridge.integrations.langchain` - LangChain and LangGraph callback handler
  (``pip install 'total-runtime-control[langchain]'``)
* :mod:`agents_bridge.integrations.openai_agents` - OpenAI Agents SDK tracing processor
  and run hooks (``[openai-agents]``)
* :mod:`agents_bridge.integrations.otel` - OpenTelemetry span processor for spans that
  follow the GenAI semantic conventions (``[otel]``)
* :mod:`agents_bridge.integrations.plain` - decorators and context managers for plain
  Python agents (no extra)

All of them go through the public :class:`~agents_bridge.AgentRun` API: a KILL raises
:class:`~agents_bridge.AgentKilled` at the next boundary the framework reaches.
"""

__all__: list[str] = []
