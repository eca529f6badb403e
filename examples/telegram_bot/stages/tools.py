"""Tools: reminders and notes, run in the ``tools`` bulkhead with a timeout.

:class:`ToolBackend` stands in for an external service (a calendar, a notes
API): in memory, with an optional ``latency`` so the demo can show a slow
tool. Its writes are idempotent by request id (the update id), because an
update whose handling was cut short by a crash is handled again after the
restart, and must not set the same reminder twice.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from resilient import Policy

__all__ = ["ToolBackend", "ToolRunner", "Tools"]


@dataclass(slots=True)
class ToolBackend:
    """In-memory reminders and notes per chat. ``latency``: seconds per call."""

    latency: float = 0.0
    reminders: dict[int, dict[int, tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    notes: dict[int, dict[int, str]] = field(default_factory=lambda: defaultdict(dict))
    calls: int = 0

    async def _work(self) -> None:
        self.calls += 1
        if self.latency > 0:
            await anyio.sleep(self.latency)

    async def create_reminder(self, request_id: int, chat_id: int, what: str, when: str) -> int:
        await self._work()
        self.reminders[chat_id][request_id] = (what, when)
        return len(self.reminders[chat_id])

    async def add_note(self, request_id: int, chat_id: int, text: str) -> int:
        await self._work()
        self.notes[chat_id][request_id] = text
        return len(self.notes[chat_id])

    async def list_notes(self, chat_id: int) -> list[str]:
        await self._work()
        return [self.notes[chat_id][k] for k in sorted(self.notes[chat_id])]


class Tools(Protocol):
    async def run(self, tool: str, chat_id: int, request_id: int, args: dict[str, str]) -> str:
        """Run ``tool`` and return the reply text; raise if it failed."""
        ...


class ToolRunner:
    """Runs a tool through the ``tools`` policy (bulkhead, then timeout)."""

    def __init__(self, backend: ToolBackend, policy: Policy) -> None:
        self._backend = backend
        self._policy = policy

    async def run(self, tool: str, chat_id: int, request_id: int, args: dict[str, str]) -> str:
        return await self._policy.call(self._run, tool, chat_id, request_id, args)

    async def _run(self, tool: str, chat_id: int, request_id: int, args: dict[str, str]) -> str:
        b = self._backend
        if tool == "reminder":
            count = await b.create_reminder(request_id, chat_id, args["what"], args["when"])
            return f"Reminder set: '{args['what']}' {args['when']}. You have {count} reminder(s)."
        if tool == "note":
            count = await b.add_note(request_id, chat_id, args["text"])
            return f"Noted: {args['text']} (note {count})."
        if tool == "list_notes":
            notes = await b.list_notes(chat_id)
            if not notes:
                return "You have no notes yet. Say 'note <text>' to add one."
            return "Your notes:\n" + "\n".join(f"{i}. {n}" for i, n in enumerate(notes, 1))
        raise ValueError(f"ToolRunner: unknown tool {tool!r}")
