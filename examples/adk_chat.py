"""One chat turn with a Google ADK agent whose session lives in an embedded Redis.

    python examples/adk_chat.py DATA_DIR [MESSAGE]

Each run starts a Redis server on DATA_DIR (appendfsync always: a write is on disk before
Redis acknowledges it), runs one turn of the session "chat-1" of the user "me", and stops
the server. Run it twice: the second process continues the same session, and its model is
shown the first turn. The model is a fake (EchoLlm), so no API key or network is needed;
it prints every message it is shown as "model saw <role>: <text>".

Needs ``pip install 'redsession[adk,embedded]'``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path

from google.adk.agents import LlmAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.genai import types

from redsession.integrations.adk import RedsessionSessionService
from redsession.services.embedded import RedisServer

APP, USER, SESSION = "adk-chat", "me", "chat-1"


class EchoLlm(BaseLlm):
    """An offline model: it prints what it is shown and says how much that was."""

    model: str = "echo"

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        seen = [
            f"{c.role}: {p.text}" for c in llm_request.contents for p in c.parts or [] if p.text
        ]
        for line in seen:
            print("model saw", line)
        reply = f"I have been shown {len(seen)} message(s), the last: {seen[-1]!r}."
        # Counts, so ADK's telemetry has usage to record (it warns on a response without).
        usage = types.GenerateContentResponseUsageMetadata(
            prompt_token_count=len(seen), candidates_token_count=1
        )
        yield LlmResponse(
            content=types.Content(role="model", parts=[types.Part.from_text(text=reply)]),
            usage_metadata=usage,
        )


async def chat(url: str, message: str) -> str:
    """One turn of the session (created by the first turn); the agent's answer."""
    service = RedsessionSessionService.from_url(url)
    agent = LlmAgent(name="echo", model=EchoLlm(), instruction="Answer briefly.")
    runner = Runner(app_name=APP, agent=agent, session_service=service, auto_create_session=True)
    answer = ""
    try:
        new = types.Content(role="user", parts=[types.Part.from_text(text=message)])
        async for event in runner.run_async(user_id=USER, session_id=SESSION, new_message=new):
            if event.is_final_response() and event.content and event.content.parts:
                answer = event.content.parts[0].text or ""
    finally:
        await runner.close()
        await service.close()
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="where Redis keeps its data")
    parser.add_argument("message", nargs="?", default="hello", help="what the user says")
    args = parser.parse_args()
    with RedisServer(args.data_dir, appendfsync="always") as server:
        print("agent:", asyncio.run(chat(server.url, args.message)))


if __name__ == "__main__":
    main()
