"""The message handler: runs one update through every stage, in order.

It is called for one chat at a time (the poller serialises each chat), so a
conversation is loaded, changed and saved without interleaving: two messages
of one chat cannot lose each other's update.

Per update, under the chat's lock (:mod:`.locks`: in this process, or in
Redis across replicas)::

    outbox entry?  sent: done (a duplicate: redelivered, or sent to two replicas)
                   unsent: send the parts not yet delivered
    intake → load conversation → abuse limits (too long, too fast: a notice)
           → admin command? (admins only: else a notice)
           → load preferences → analysis → decision
           → tool | LLM chain | fixed reply → moderation
           → lock still ours? → save conversation + outbox entry (one atomic write)
           → send (each part of a split reply recorded) → mark sent
           → analytics (background)

The outbox entry, keyed by ``update_id`` and kept ``dedupe_ttl`` (a day),
is what makes a reply happen once: an update delivered twice finds it.

Anything that fails between the decision and the reply is *error recovery*:
the chat goes back to IDLE (reason logged), and the user gets an apology, so
every message is still answered. A failure to save or to send leaves the
update unfinished: the poller hands it over again later.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from aiogram.types import Update

from .config import Limits, Timings
from .locks import ChatBusy, ChatLocks, Lease, LocalChatLocks
from .models import Conversation, Incoming, Outbox, Preferences, Turn
from .stages.admin import AdminCommands
from .stages.analysis import Analyzer
from .stages.analytics import Analytics
from .stages.decision import Action, DecisionEngine
from .stages.intake import Intake
from .stages.moderation import Moderator
from .stages.responder import Responder
from .stages.sending import Sender
from .stages.tools import Tools
from .stats import BotStats
from .stores import StateStore

__all__ = ["RATE_LIMITED_TEXT", "RECOVERY_TEXT", "TOO_LONG_TEXT", "MessageHandler"]

log = logging.getLogger("examples.telegram_bot.handler")

RECOVERY_TEXT = "Sorry, something went wrong on my side, so I started over. Please try again."
TOO_LONG_TEXT = (
    "That message is too long for me ({length} characters; I read up to {limit}). "
    "Could you send a shorter one?"
)
RATE_LIMITED_TEXT = (
    "You're writing faster than I can answer well. "
    "Please wait about {seconds} seconds, then send it again."
)
NOT_IN_HISTORY = frozenset({"reset", "too_long", "rate_limited", "refused", "admin"})

Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


class MessageHandler:
    """The pipeline of stages; every dependency is injected (see :mod:`.app`)."""

    def __init__(
        self,
        *,
        intake: Intake,
        analyzer: Analyzer,
        engine: DecisionEngine,
        tools: Tools,
        responder: Responder,
        moderator: Moderator,
        sender: Sender,
        store: StateStore,
        analytics: Analytics,
        stats: BotStats,
        timings: Timings,
        history_kept: int,
        spawn: Spawn,
        locks: ChatLocks | None = None,
        limits: Limits | None = None,
        admin: AdminCommands | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._intake = intake
        self._analyzer = analyzer
        self._engine = engine
        self._tools = tools
        self._responder = responder
        self._moderator = moderator
        self._sender = sender
        self._store = store
        self._analytics = analytics
        self._stats = stats
        self._t = timings
        self._history_kept = history_kept
        self._spawn = spawn
        self._locks: ChatLocks = LocalChatLocks(timings.chat_lock_wait) if locks is None else locks
        self._limits = Limits() if limits is None else limits
        self._admin = admin
        # The rate limit's timestamps are stored with the conversation and read by
        # every replica: Unix time, not the loop clock (which is per process).
        self._wall_clock = wall_clock

    async def handle(self, update: Update, received_at: float) -> bool:
        """Handle one update; ``True`` when it is finished (answered or ignored).

        ``received_at`` is when the poller (or the webhook) got it, on the loop
        clock: the answer deadline counts from then.
        """
        msg = self._intake.parse(update)
        if msg is None:
            return True
        try:
            async with self._locks.hold(msg.chat_id) as lease:
                return await self._handle(msg, received_at, lease)
        except ChatBusy as exc:
            self._stats.lock_timeouts += 1
            log.warning("update %d: %s; it will be tried again", msg.update_id, exc)
            return False

    async def _handle(self, msg: Incoming, received_at: float, lease: Lease) -> bool:
        box = await self._store.outbox(msg.update_id)
        if box is not None:
            if box.sent:  # answered already: redelivered, or delivered to two replicas
                self._stats.duplicates_skipped += 1
                return True
            self._stats.redelivered += 1
            return await self._deliver(box)

        self._stats.messages_in += 1
        conv = await self._store.load(msg.chat_id)
        limited = self._over_limits(msg, conv)
        if limited is not None:
            reply, level = limited
            prefs = style = None
        elif self._admin is not None and (command := self._admin.command(msg.text)):
            reply, level = self._admin.answer(command, msg)
            prefs = style = None
        else:
            typing = self._typing_later(msg.chat_id)
            try:
                prefs = await self._store.load_preferences(msg.user_id)
                style = prefs.style
                deadline = received_at + self._t.answer_budget
                reply, level = await self._answer(msg, conv, prefs, deadline)
            finally:
                typing.cancel()
            reply = self._moderator.review(reply)
        if level not in NOT_IN_HISTORY:
            conv.history += [Turn("user", msg.text), Turn("assistant", reply)]
            del conv.history[: -self._history_kept]
        conv.version += 1
        box = Outbox(msg.update_id, msg.chat_id, msg.message_id, reply)
        if not lease.held():
            # Stalled past the lock's TTL: another replica may have this chat now.
            # Saving could overwrite its state; leave the update to be handled again.
            self._stats.lock_lost += 1
            log.warning("update %d: the chat's lock ran out; not saved", msg.update_id)
            return False
        await self._store.save(msg.chat_id, conv, box)
        if prefs is not None and prefs.style != style:
            await self._store.save_preferences(msg.user_id, prefs)
        self._stats.levels[level] += 1
        delivered = await self._deliver(box)
        if delivered:
            self._stats.handling_seconds.append(anyio.current_time() - received_at)
        self._analytics.record(
            {"chat": msg.chat_id, "update": msg.update_id, "level": level, "sent": delivered}
        )
        return delivered

    def _typing_later(self, chat_id: int) -> anyio.CancelScope:
        """Show "typing…" if the answer takes longer than ``typing_delay``; cancel the
        returned scope once it is ready. (A quick answer needs no typing action: under
        load that saved a Bot API call per message, and Telegram limits calls.)"""
        scope = anyio.CancelScope()

        async def typing() -> None:
            with scope:
                await anyio.sleep(self._t.typing_delay)
                await self._sender.typing(chat_id)

        self._spawn(typing)
        return scope

    def _over_limits(self, msg: Incoming, conv: Conversation) -> tuple[str, str] | None:
        """A notice when the message is too long or comes too fast, else ``None``.

        Accepted messages are counted in ``conv.recent`` (saved with the state);
        those over the rate are not, so a chat that slows down is served again.
        """
        limits = self._limits
        if len(msg.text) > limits.max_message_length:
            self._stats.notices["too_long"] += 1
            text = TOO_LONG_TEXT.format(length=len(msg.text), limit=limits.max_message_length)
            return text, "too_long"
        if limits.rate_messages is None:
            return None
        now = self._wall_clock()
        window_start = now - limits.rate_window
        conv.recent = [t for t in conv.recent if window_start < t <= now]
        if len(conv.recent) >= limits.rate_messages:
            self._stats.notices["rate_limited"] += 1
            wait = max(1, math.ceil(conv.recent[0] - window_start))
            return RATE_LIMITED_TEXT.format(seconds=wait), "rate_limited"
        conv.recent.append(now)
        return None

    async def _answer(
        self, msg: Incoming, conv: Conversation, prefs: Preferences, deadline: float
    ) -> tuple[str, str]:
        """The reply and who produced it: flow, tool, reset, error, or an LLM chain level."""
        try:
            analysis = self._analyzer.analyze(msg.text)
            decision = self._engine.decide(conv, analysis, msg.text)
            if decision.action is Action.RESET:
                self._engine.reset(conv, "the user sent /reset", clear_history=True)
                self._stats.resets["command"] += 1
                return decision.reply, "reset"
            if decision.style is not None:
                prefs.style = "short" if decision.style == "short" else "normal"
            if decision.action is Action.REPLY:
                return decision.reply, "flow"
            if decision.action is Action.RUN_TOOL:
                left = max(deadline - anyio.current_time(), 0.0)
                with anyio.fail_after(left):
                    text = await self._tools.run(
                        decision.tool or "", msg.chat_id, msg.update_id, decision.args
                    )
                self._engine.after_tool(conv)
                return text, "tool"
            answer = await self._responder.answer(
                msg.text, analysis, conv, prefs, deadline, chat_id=msg.chat_id
            )
            return answer.text, answer.level
        except Exception as exc:
            reason = f"error recovery after {type(exc).__name__}: {exc}"
            self._engine.reset(conv, reason, clear_history=False)
            self._stats.resets["error"] += 1
            log.warning("chat %d: %s", msg.chat_id, reason)
            return RECOVERY_TEXT, "error"

    async def _deliver(self, box: Outbox) -> bool:
        async def part_sent(parts: int) -> None:
            # Recorded before the next part goes out: when a later part fails for
            # good (or the bot stops), the resend starts after the parts delivered.
            try:
                await self._store.mark_parts_sent(box.update_id, parts)
            except Exception as exc:
                # Not worth holding back the rest of the reply: a resend, if one is
                # needed, repeats the parts that were not recorded.
                log.warning("update %d: part %d sent, not recorded: %r", box.update_id, parts, exc)

        try:
            parts = await self._sender.send(
                box.chat_id, box.text, box.reply_to, skip=box.parts_sent, on_part=part_sent
            )
        except Exception as exc:
            self._stats.send_failures += 1
            log.warning("update %d: reply not sent, will try again: %r", box.update_id, exc)
            return False
        self._stats.replies_out += 1
        self._stats.parts_sent += parts
        try:
            await self._store.mark_sent(box.update_id)
        except Exception as exc:
            # Delivered: finished for this process. Only a restart before the
            # offset moves on could send it again (see docs/bot.md).
            log.warning("update %d: sent, but not marked sent: %r", box.update_id, exc)
        return True
