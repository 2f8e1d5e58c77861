"""Small runnable agents, one per framework integration, offline (scripted models).

Each module runs as a script (``python examples/langgraph_agent.py [--loop]``)
and exposes ``run_example(monitor, agent_id, *, loop=False) -> str`` for the
demo: a healthy run returns the agent's answer; with ``loop=True`` the agent
repeats one tool call until the detection engine kills it, and the returned
text starts with ``killed after 3``.

* ``langgraph_agent``     - a LangGraph ReAct agent (``instrument``)
* ``openai_agents_agent`` - an OpenAI Agents SDK agent with a handoff (``run_agent``)
* ``otel_agent``          - an agent emitting OpenTelemetry GenAI spans (``TrcSpanProcessor``)
* ``plain_agent``         - a plain-Python agent (``@agent``, ``@step``, ``@tool``)
"""
