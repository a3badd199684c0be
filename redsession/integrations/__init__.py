"""Backends for agent frameworks, each behind its own extra; the core imports none of them.

- ``redsession.integrations.openai_agents``: the OpenAI Agents SDK's ``Session``
  (``pip install redsession[openai-agents]``);
- ``redsession.integrations.adk``: Google ADK's ``BaseSessionService``
  (``pip install redsession[adk]``);
- ``redsession.integrations.pydantic_ai``: pydantic-ai's ``ConversationStore``
  (``pip install redsession[pydantic-ai]``).
- ``redsession.integrations.langgraph``: LangGraph's ``BaseCheckpointSaver``
  (``pip install redsession[langgraph]``).

Each is thin: it translates the framework's calls into AsyncSessionManager operations and
the manager's errors into the framework's; no Redis command or key name appears in them.
"""
