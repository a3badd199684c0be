"""A LangGraph graph interrupted for a human's approval, resumed by another process.

    python examples/langgraph_resume.py DATA_DIR start "a haiku about Redis"
    python examples/langgraph_resume.py DATA_DIR resume yes

Each run starts a Redis server on DATA_DIR (appendfsync always: a checkpoint is on disk
before Redis acknowledges it), runs the thread "post-1" of the graph draft -> review ->
publish, and stops the server. ``start`` drafts a post with the model and stops at
``review``, which asks for approval (LangGraph's ``interrupt``): the process exits there.
``resume`` is a new process on a new server: the graph goes on from the checkpoint the first
left in redsession, with the draft it made, and is not drafted again. The model is a fake
(LangChain's GenericFakeChatModel), so no API key or network is needed; each node prints
what it does as "node <name>: ...".

Needs ``pip install 'redsession[langgraph,embedded]'``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, interrupt

from redsession import AsyncSessionManager
from redsession.integrations.langgraph import RedsessionSaver
from redsession.services.embedded import RedisServer

THREAD = {"configurable": {"thread_id": "post-1", "user_id": "editor"}}


def build(saver: RedsessionSaver) -> Any:
    haiku = "Keys in one slot / a TTL that slides along / nothing left behind"
    model = GenericFakeChatModel(messages=iter([AIMessage(haiku)]))

    async def draft(state: MessagesState) -> dict[str, Any]:
        reply = await model.ainvoke(state["messages"])
        print("node draft: the model wrote", repr(reply.content))
        return {"messages": [reply]}

    def review(state: MessagesState) -> dict[str, Any]:
        answer = interrupt({"approve": state["messages"][-1].content})
        print("node review: the human answered", repr(answer))
        return {"messages": [HumanMessage(f"approved: {answer}")]}

    def publish(state: MessagesState) -> dict[str, Any]:
        print("node publish:", repr(state["messages"][-2].content))
        return {"messages": [AIMessage("published")]}

    g = StateGraph(MessagesState)
    g.add_node("draft", draft)
    g.add_node("review", review)
    g.add_node("publish", publish)
    g.add_edge(START, "draft")
    g.add_edge("draft", "review")
    g.add_edge("review", "publish")
    g.add_edge("publish", END)
    return g.compile(checkpointer=saver)


async def run(url: str, action: str, text: str) -> None:
    async with AsyncSessionManager.from_url(url) as manager:
        graph = build(RedsessionSaver(manager))
        if action == "start":
            out = await graph.ainvoke({"messages": [HumanMessage(text)]}, THREAD)
        else:
            out = await graph.ainvoke(Command(resume=text), THREAD)
        if "__interrupt__" in out:
            print("interrupted: waiting for", out["__interrupt__"][0].value)
        else:
            print("done:", [m.content for m in out["messages"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="where Redis keeps its data")
    parser.add_argument("action", choices=["start", "resume"])
    parser.add_argument("text", help="the request (start) or the human's answer (resume)")
    args = parser.parse_args()
    with RedisServer(args.data_dir, appendfsync="always") as server:
        asyncio.run(run(server.url, args.action, args.text))


if __name__ == "__main__":
    main()
