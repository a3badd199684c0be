"""RedsessionConversationStore, pydantic-ai's ConversationStore (integrations/pydantic_ai.py).

pydantic-ai ships no store test suite, so these are our own contract tests, written from
the ConversationStore documentation, on one server and on a cluster (``url``): revisions
and conflicts from many concurrent writers, scope filtering, branching, forks, entries read
by id, deletes with a stale revision; and examples/pydantic_ai_chat.py run twice.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet
from pydantic_ai import Agent
from pydantic_ai.conversation import Conversation
from pydantic_ai.conversation_store import (
    ConversationConflict,
    ConversationEntry,
    ConversationRecord,
)
from pydantic_ai.exceptions import UserError
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models.test import TestModel

from redsession.async_manager import AsyncSessionManager
from redsession.integrations.pydantic_ai import (
    RedsessionConversationStore,
    owner_of,
    session_key,
)
from redsession.storage.keys import Keys
from tests.topology import redis_cluster  # noqa: F401  (the session's cluster)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "pydantic_ai_chat.py"
WRITERS = 8  # concurrent writers per round
ROUNDS = 5


@pytest.fixture
async def manager(url: str) -> AsyncIterator[AsyncSessionManager]:
    m = AsyncSessionManager.from_url(url)
    yield m
    await m.close()


@pytest.fixture
def store(manager: AsyncSessionManager) -> RedsessionConversationStore:
    return RedsessionConversationStore(manager)


def agent() -> Agent[None, str]:
    return Agent(TestModel(custom_output_text="ok"))


def request(text: str) -> ModelRequest:
    return ModelRequest(parts=[UserPromptPart(content=text)])


def response(text: str) -> ModelResponse:
    return ModelResponse(parts=[TextPart(content=text)])


async def turn(
    store: RedsessionConversationStore, cid: str, prompt: str, scope: str | None = None
) -> Conversation:
    """One agent run on the stored conversation, saved; the conversation after it."""
    conv = await store.load(cid, scope=scope) or Conversation(conversation_id=cid)
    result = await agent().run(prompt, conversation=conv)
    await store.save(result, scope=scope)
    return result.conversation


def prompts(conv: Conversation) -> list[str]:
    return [
        str(p.content)
        for m in conv.messages
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, UserPromptPart)
    ]


# -- records and revisions ------------------------------------------------------------------


async def test_an_agent_run_saved_loads_back_whole(store: RedsessionConversationStore) -> None:
    first = await turn(store, "c1", "Hello")
    second = await turn(store, "c1", "Again")
    loaded = await store.load("c1")
    assert loaded is not None
    assert loaded.messages == second.messages
    assert len(loaded.messages) == 4
    assert prompts(loaded) == ["Hello", "Again"]
    assert loaded.usage == second.usage
    assert loaded.usage.requests == 2
    assert loaded.revision == second.revision != first.revision
    record = await store.read_record("c1")
    assert record is not None
    assert record.conversation_id == "c1"
    assert record.scope is None
    window = await store.load("c1", limit=2)
    assert window is not None
    assert window.messages == second.messages[-2:]


async def test_a_conversation_is_a_session_of_its_owner(
    store: RedsessionConversationStore, manager: AsyncSessionManager
) -> None:
    await turn(store, "c1", "Hello", scope="alice")
    s = await manager.get_session(session_key("c1"), history=100)
    assert s.user_id == owner_of("alice") == "pai:alice"
    assert s.scope == {"framework": "pydantic-ai", "conversation_id": "c1", "scope": "alice"}
    assert len(s.history) == 2 == s.total_interactions  # one item per message
    export = await manager.export_session(session_key("c1"))
    assert export.session.revision == (await store.read_record("c1")).revision  # type: ignore[union-attr]
    # An id that is no session id maps to a digest; a scope that is no name likewise.
    odd = "conversation with spaces/and {braces}"
    await turn(store, odd, "Hi", scope="a scope: odd")
    assert session_key(odd).startswith("pai_")
    assert owner_of("a scope: odd").startswith("pai:=")
    assert prompts(await store.load(odd)) == ["Hi"]  # type: ignore[arg-type]


async def test_concurrent_writers_exactly_one_wins_each_revision(url: str) -> None:
    """WRITERS stores, each on its own client, load the same revision and save at once:
    exactly one save lands per round, every other one raises ConversationConflict."""
    managers = [AsyncSessionManager.from_url(url) for _ in range(WRITERS)]
    stores = [RedsessionConversationStore(m) for m in managers]
    try:
        await stores[0].save(Conversation(conversation_id="hot", messages=[request("start")]))
        revisions = {(await stores[0].read_record("hot")).revision}  # type: ignore[union-attr]
        for n in range(ROUNDS):
            loaded = [await s.load("hot") for s in stores]
            assert len({c.revision for c in loaded if c is not None}) == 1

            async def save(i: int, conv: Conversation | None, n: int = n) -> bool:
                assert conv is not None
                conv.messages.append(request(f"round {n} writer {i}"))
                try:
                    await stores[i].save(conv)
                except ConversationConflict:
                    return False
                return True

            won = await asyncio.gather(*(save(i, c) for i, c in enumerate(loaded)))
            assert sum(won) == 1, won
            record = await stores[0].read_record("hot")
            assert record is not None
            assert record.revision not in revisions
            revisions.add(record.revision)
            winner = won.index(True)
            now = await stores[0].load("hot")
            assert now is not None
            assert prompts(now)[-1] == f"round {n} writer {winner}"
            assert len(now.messages) == n + 2  # one message per round, nothing else
    finally:
        for m in managers:
            await m.close()


async def test_write_record_checks_the_revision(store: RedsessionConversationStore) -> None:
    entry = ConversationEntry(parent_id=None, message=request("one"))
    first = ConversationRecord(conversation_id="w", head_id=entry.id)
    await store.write_record(first, new_entries=[entry], expected_revision=None)
    again = ConversationRecord(conversation_id="w", head_id=entry.id)
    with pytest.raises(ConversationConflict):  # it exists: None is stale
        await store.write_record(again, expected_revision=None)
    with pytest.raises(ConversationConflict):
        await store.write_record(again, expected_revision="not-the-revision")
    nxt = ConversationEntry(parent_id=entry.id, message=response("two"))
    second = ConversationRecord(conversation_id="w", head_id=nxt.id)
    await store.write_record(second, new_entries=[nxt], expected_revision=first.revision)
    with pytest.raises(ConversationConflict):  # the first revision is stale now
        await store.write_record(again, expected_revision=first.revision)
    # A head that neither the store nor the new entries hold is refused.
    lost = ConversationRecord(conversation_id="w", head_id="no-such-entry")
    with pytest.raises(ConversationConflict):
        await store.write_record(lost, expected_revision=second.revision)
    got = await store.read_record("w")
    assert got is not None
    assert got.revision == second.revision
    assert got.head_id == nxt.id
    assert [e.id for e in await store.read_history(got.head_id)] == [entry.id, nxt.id]
    with pytest.raises(ConversationConflict):  # a revision for a conversation never stored
        await store.write_record(
            ConversationRecord(conversation_id="never", head_id=None), expected_revision="x"
        )
    assert await store.read_record("never") is None


async def test_delete_with_a_stale_revision_is_refused(store: RedsessionConversationStore) -> None:
    first = await turn(store, "d", "one")
    await turn(store, "d", "two")
    with pytest.raises(ConversationConflict):
        await store.delete_record("d", expected_revision=first.revision)  # type: ignore[arg-type]
    assert prompts(await store.load("d")) == ["one", "two"]  # type: ignore[arg-type]
    record = await store.read_record("d")
    assert record is not None
    await store.delete_record("d", expected_revision=record.revision)
    assert await store.read_record("d") is None
    assert await store.load("d") is None
    with pytest.raises(ConversationConflict):  # deleted: nothing to delete
        await store.delete_record("d", expected_revision=record.revision)
    with pytest.raises(ConversationConflict):  # a late save of the deleted copy
        await store.save(first)
    assert await store.read_record("d") is None
    fresh = await turn(store, "d", "anew")  # created again under the same id: a new revision
    assert fresh.revision not in (first.revision, record.revision)
    assert prompts(await store.load("d")) == ["anew"]  # type: ignore[arg-type]
    await store.delete("d")  # the ABC's delete: reads the revision, then deletes
    assert await store.load("d") is None


# -- scope -----------------------------------------------------------------------------------


async def test_scope_filters_reads_lists_and_writes(store: RedsessionConversationStore) -> None:
    for cid, scope in (("a1", "alice"), ("b1", "bob"), ("a2", "alice"), ("n1", None)):
        await turn(store, cid, f"hi from {cid}", scope=scope)
    await turn(store, "a1", "a1 again", scope="alice")  # a1 is now alice's newest
    alice = await store.list_conversations(scope="alice")
    assert [r.conversation_id for r in alice] == ["a1", "a2"]
    assert all(r.scope == "alice" for r in alice)
    assert alice[0].updated_at > alice[1].updated_at
    assert [r.conversation_id for r in await store.list_conversations(scope="alice", limit=1)] == [
        "a1"
    ]
    assert [r.conversation_id for r in await store.list_conversations(scope="bob")] == ["b1"]
    assert await store.list_conversations(scope="carol") == []
    everyone = await store.list_conversations()
    assert [r.conversation_id for r in everyone] == ["a1", "n1", "a2", "b1"]
    assert [r.conversation_id for r in await store.list_conversations(limit=2)] == ["a1", "n1"]
    # Another scope reads as missing, and may not write.
    assert await store.load("a1", scope="bob") is None
    conv = await store.load("a1")
    assert conv is not None
    conv.messages.append(request("bob's"))
    with pytest.raises(ConversationConflict):
        await store.save(conv, scope="bob")
    await store.delete("a1", scope="bob")  # left as it is
    assert await store.load("a1", scope="alice") is not None


async def test_listing_skips_sessions_that_are_not_conversations(
    store: RedsessionConversationStore, manager: AsyncSessionManager
) -> None:
    await manager.create_session("someone")
    await turn(store, "c", "hi")
    assert [r.conversation_id for r in await store.read_records()] == ["c"]


# -- branches, forks, entries --------------------------------------------------------------


async def test_branching_keeps_the_history_it_leaves(store: RedsessionConversationStore) -> None:
    await turn(store, "br", "one")
    await turn(store, "br", "two")
    old = await store.read_record("br")
    assert old is not None
    branched = await store.branch("br", at=2, expected_revision=old.revision)
    result = await agent().run("two, edited", conversation=branched)
    await store.save(result)
    now = await store.load("br")
    assert now is not None
    assert prompts(now) == ["one", "two, edited"]
    # A window that reaches past the branch point, across the branch it left in the log.
    window = await store.load("br", limit=3)
    assert window is not None
    assert window.messages == now.messages[-3:]
    record = await store.read_record("br")
    assert record is not None
    assert record.branches == [old.head_id]
    # The branch left is stored, and the conversation can go back to it.
    back = await store.branch("br", from_entry=old.head_id, expected_revision=record.revision)
    assert prompts(back) == ["one", "two"]
    assert prompts(await store.load("br")) == ["one", "two"]  # type: ignore[arg-type]
    with pytest.raises(ConversationConflict):  # branching needs the current revision
        await store.branch("br", at=1, expected_revision=record.revision)


async def test_a_rewritten_history_branches_off_what_it_shares(
    store: RedsessionConversationStore,
) -> None:
    first = request("a")  # messages compare by value, timestamps included
    conv = Conversation(conversation_id="rw", messages=[first, response("b")])
    await store.save(conv)
    rewritten = Conversation(
        conversation_id="rw", messages=[first, response("B")], revision=conv.revision
    )
    saved = await store.save(rewritten)
    assert len(saved) == 1
    assert saved[0].parent_id is not None
    entries = await store.load_entries("rw")
    assert entries is not None
    assert [e.message for e in entries] == rewritten.messages
    record = await store.read_record("rw")
    assert record is not None
    assert len(record.branches) == 1
    left = await store.read_history(record.branches[0])
    assert [e.message for e in left] == conv.messages
    assert left[0].id == entries[0].id  # the shared first message is stored once


async def test_a_fork_is_whole_in_its_own_session(
    store: RedsessionConversationStore, manager: AsyncSessionManager
) -> None:
    await turn(store, "src", "one", scope="alice")
    await turn(store, "src", "two", scope="alice")
    fork = await store.fork("src", at=2, new_conversation_id="fork", scope="bob")
    assert prompts(fork) == ["one"]
    record = await store.read_record("fork")
    assert record is not None
    assert record.forked_from == "src"
    assert record.scope == "bob"
    src_entries = await store.load_entries("src")
    assert src_entries is not None
    assert record.forked_at == src_entries[1].id
    result = await agent().run("fork's own", conversation=fork)
    await store.save(result)
    # The source goes away: the fork keeps its history (copied, ids and links kept).
    await store.delete("src")
    forked = await store.load_entries("fork")
    assert forked is not None
    assert [e.id for e in forked[:2]] == [e.id for e in src_entries[:2]]
    assert prompts(await store.load("fork")) == ["one", "fork's own"]  # type: ignore[arg-type]
    s = await manager.get_session(session_key("fork"), history=100)
    assert s.user_id == "pai:bob"
    assert len(s.history) == 4
    with pytest.raises(ConversationConflict):  # a fork under an id already stored
        await store.fork("fork", new_conversation_id="fork")


async def test_entries_are_read_by_id(url: str, store: RedsessionConversationStore) -> None:
    await turn(store, "e", "one")
    conv = await store.load("e")
    assert conv is not None
    conv.messages.append(request("two"))
    saved = await store.save(conv)
    assert len(saved) == 1
    assert await store.read_entry(saved[0].id) == saved[0]
    for entry in await store.load_entries("e") or []:
        assert await store.read_entry(entry.id) == entry
    with pytest.raises(KeyError):
        await store.read_entry("no-such-entry")
    # Another store finds an entry once it has read the conversation it belongs to.
    other = RedsessionConversationStore.from_url(url)
    try:
        with pytest.raises(KeyError):
            await other.read_entry(saved[0].id)
        await other.load_entries("e")
        assert await other.read_entry(saved[0].id) == saved[0]
        await store.delete("e")
        with pytest.raises(KeyError):  # the conversation is gone, so is the entry
            await other.read_entry(saved[0].id)
    finally:
        await other.close()


async def test_entry_ids_that_are_not_item_ids_still_work(
    store: RedsessionConversationStore,
) -> None:
    a = ConversationEntry(id="entry one/with a slash", parent_id=None, message=request("a"))
    b = ConversationEntry(id="entry two/with a slash", parent_id=a.id, message=response("b"))
    rec = ConversationRecord(conversation_id="odd-ids", head_id=b.id)
    await store.write_record(rec, new_entries=[a, b], expected_revision=None)
    assert await store.read_entry(a.id) == a
    assert await store.read_history(b.id) == [a, b]


# -- redsession's guarantees hold for conversations -----------------------------------------


async def test_conversations_are_encrypted_at_rest(redis_url: str) -> None:
    key = Fernet.generate_key().decode()
    store = RedsessionConversationStore.from_url(redis_url, encryption_keys=[key])
    try:
        await turn(store, "secret", "my password is hunter2")
        assert prompts(await store.load("secret")) == ["my password is hunter2"]  # type: ignore[arg-type]
        sid = session_key("secret")
        hash_key, log, _, ops, *_side = Keys().session_keys(sid)
        with redis.Redis.from_url(redis_url) as r:
            stored = repr(r.hgetall(hash_key)).encode() + b"".join(r.lrange(log, 0, -1))
            assert b"secret" in stored  # the scope's conversation id is in the clear
            assert b"hunter2" not in stored
            assert b"requests" not in stored
            expiries = {r.pexpiretime(k) for k in (hash_key, log, ops)}
            assert len(expiries) == 1
            assert next(iter(expiries)) > 0
    finally:
        await store.close()


# -- the example ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_example_continues_its_conversation_in_a_second_process(tmp_path: Path) -> None:
    data = tmp_path / "data"

    def run(message: str) -> str:
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), str(data), message],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    first = run("Hello, my name is Ada.")
    assert "stored messages before this turn: 0" in first
    second = run("What is my name?")
    assert "stored messages before this turn: 2" in second
    assert "  user: Hello, my name is Ada.\n" in second
    assert "conversations in scope 'me': 1" in second


async def test_bad_input_is_refused_and_nothing_is_written(url: str) -> None:
    store = RedsessionConversationStore.from_url(url, max_message_bytes=1024)
    try:
        big = ConversationEntry(parent_id=None, message=request("x" * 4096))
        rec = ConversationRecord(conversation_id="big", head_id=big.id)
        with pytest.raises(UserError, match="cannot be stored"):
            await store.write_record(rec, new_entries=[big], expected_revision=None)
        assert await store.read_record("big") is None
        bad = ConversationRecord(conversation_id="bad", head_id=None, revision="not a token")
        with pytest.raises(UserError, match="invalid revision"):
            await store.write_record(bad, expected_revision=None)
        assert await store.read_record("bad") is None
        with pytest.raises(UserError):
            await store.read_records(limit=-1)
    finally:
        await store.close()


async def test_a_conversation_dumped_and_restored_carries_on(
    redis_url: str, tmp_path: Path
) -> None:
    store = RedsessionConversationStore.from_url(redis_url, data_dir=tmp_path / "data")
    try:
        await turn(store, "kept", "one", scope="alice")
        before = await turn(store, "kept", "two", scope="alice")
        await store.manager.dump_sessions()
        with redis.Redis.from_url(redis_url) as r:
            r.flushall()  # the suite's own server: Redis lost its data
        assert await store.load("kept") is None
        report = await store.manager.restore_sessions()
        assert report.restored == 1
        after = await store.load("kept", scope="alice")
        assert after is not None
        assert (after.messages, after.revision, after.usage) == (
            before.messages, before.revision, before.usage
        )
        result = await agent().run("three", conversation=after)
        await store.save(result)  # the restored revision is the one to save against
        assert prompts(await store.load("kept")) == ["one", "two", "three"]  # type: ignore[arg-type]
    finally:
        await store.close()
