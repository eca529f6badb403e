"""Decision: the per-chat state machine.

The states (:class:`~..models.DecisionState`)::

    IDLE ──flow needs input──▶ AWAITING_INPUT ──last slot──▶ AWAITING_CONFIRMATION
      │                          │   ▲ (more slots)             │ yes        │ no
      │                          └───┘                          ▼            ▼
      ├──flow complete, no confirmation needed──────────▶ TOOL_REQUIRED     IDLE
      └──anything else: answer (LLM), stay IDLE           │ tool done
                                                          ▼
                                                         IDLE

Every legal move is one row of :data:`TRANSITIONS`; anything else raises
:class:`IllegalTransition`. A chat's state changes only through
:meth:`DecisionEngine.decide` and :meth:`DecisionEngine.after_tool`, and it is
put back to IDLE outside the table only by :meth:`DecisionEngine.reset`,
called for ``/reset`` or by error recovery, which logs the reason. (The bot
this example grew from reset every chat after every message, which broke
every multi-turn flow: there is no such call here.)
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..models import Analysis, Conversation, DecisionState, Intent
from .analysis import WHEN_PATTERN

__all__ = [
    "FLOWS",
    "TRANSITIONS",
    "Action",
    "Decision",
    "DecisionEngine",
    "Event",
    "Flow",
    "IllegalTransition",
    "Slot",
]

log = logging.getLogger("examples.telegram_bot.decision")

S = DecisionState


class Event(enum.StrEnum):
    """What happened, as the state machine sees it."""

    CHAT = "chat"  # an ordinary message: answer it
    COMMAND = "command"  # /help, /style: answer it, keep the flow
    NEEDS_INPUT = "needs_input"  # a flow needs (more) slots
    NEEDS_CONFIRMATION = "needs_confirmation"
    READY = "ready"  # every slot known, no confirmation needed
    CONFIRMED = "confirmed"
    DENIED = "denied"
    UNCLEAR = "unclear"  # not a yes or a no
    TOOL_DONE = "tool_done"


TRANSITIONS: dict[tuple[DecisionState, Event], DecisionState] = {
    (S.IDLE, Event.CHAT): S.IDLE,
    (S.IDLE, Event.COMMAND): S.IDLE,
    (S.IDLE, Event.NEEDS_INPUT): S.AWAITING_INPUT,
    (S.IDLE, Event.NEEDS_CONFIRMATION): S.AWAITING_CONFIRMATION,
    (S.IDLE, Event.READY): S.TOOL_REQUIRED,
    (S.AWAITING_INPUT, Event.COMMAND): S.AWAITING_INPUT,
    (S.AWAITING_INPUT, Event.NEEDS_INPUT): S.AWAITING_INPUT,
    (S.AWAITING_INPUT, Event.NEEDS_CONFIRMATION): S.AWAITING_CONFIRMATION,
    (S.AWAITING_INPUT, Event.READY): S.TOOL_REQUIRED,
    (S.AWAITING_INPUT, Event.DENIED): S.IDLE,
    (S.AWAITING_CONFIRMATION, Event.COMMAND): S.AWAITING_CONFIRMATION,
    (S.AWAITING_CONFIRMATION, Event.UNCLEAR): S.AWAITING_CONFIRMATION,
    (S.AWAITING_CONFIRMATION, Event.CONFIRMED): S.TOOL_REQUIRED,
    (S.AWAITING_CONFIRMATION, Event.DENIED): S.IDLE,
    (S.TOOL_REQUIRED, Event.TOOL_DONE): S.IDLE,
}
"""(state, event) → next state. The whole machine; nothing else moves a chat."""


class IllegalTransition(RuntimeError):
    """An event that the current state has no row for."""


class Action(enum.StrEnum):
    """What the handler must do to answer."""

    REPLY = "reply"  # send ``Decision.reply`` as it is
    ANSWER = "answer"  # generate an answer (the LLM fallback chain)
    RUN_TOOL = "run_tool"  # run ``Decision.tool`` with ``Decision.args``, then after_tool()
    RESET = "reset"  # /reset: clear state and history, then reply


@dataclass(frozen=True, slots=True)
class Slot:
    name: str
    question: str
    pattern: str | None = None  # a regex the answer must contain
    hint: str = ""


@dataclass(frozen=True, slots=True)
class Flow:
    """A tool that needs parameters, asked for one by one, then maybe confirmed."""

    name: str
    slots: tuple[Slot, ...]
    confirm: bool
    confirmation: str = ""  # format string over the slots

    def missing(self, slots: dict[str, str]) -> Slot | None:
        return next((s for s in self.slots if s.name not in slots), None)


FLOWS: dict[str, Flow] = {
    "reminder": Flow(
        "reminder",
        (
            Slot("what", "What should I remind you about?"),
            Slot(
                "when",
                "When should I remind you? (for example 'in 10 minutes', 'at 18:30', 'tomorrow')",
                pattern=WHEN_PATTERN.pattern,
                hint="I didn't get the time. ",
            ),
        ),
        confirm=True,
        confirmation="Set a reminder '{what}' {when}? (yes/no)",
    ),
    "note": Flow("note", (Slot("text", "What should I note down?"),), confirm=False),
    "list_notes": Flow("list_notes", (), confirm=False),
}

HELP = (
    "I answer questions and keep reminders and notes.\n"
    "- 'remind me' starts a reminder (I ask what and when, then confirm)\n"
    "- 'note <text>' saves a note, 'my notes' lists them\n"
    "- /style short|normal sets how long my answers are\n"
    "- /reset forgets this conversation"
)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one message: the event, the next state, and what to do."""

    event: Event | None
    state: DecisionState
    action: Action
    reply: str = ""
    tool: str | None = None
    args: dict[str, str] = field(default_factory=dict)
    style: str | None = None  # a new answer style for the user's preferences


class DecisionEngine:
    """Decides per message, and moves the chat's :class:`~..models.Conversation`.

    ``decide`` reads the conversation and the analysis and changes the
    conversation in place (the caller saves it); it does no I/O.
    ``on_transition(old, new)`` is called for every change of state (the
    bot counts them for ``/metrics``).
    """

    def __init__(
        self, on_transition: Callable[[DecisionState, DecisionState], None] | None = None
    ) -> None:
        self._on_transition = on_transition

    def decide(self, conv: Conversation, analysis: Analysis, text: str) -> Decision:
        intent = analysis.intent
        if intent is Intent.RESET:
            return Decision(None, S.IDLE, Action.RESET, "Done: I forgot this conversation.")
        if intent is Intent.HELP:
            return self._move(conv, Event.COMMAND, Action.REPLY, reply=HELP)
        if intent is Intent.STYLE:
            style = analysis.slot("style") or ""
            if style not in ("short", "normal"):
                return self._move(
                    conv, Event.COMMAND, Action.REPLY, reply="Use /style short or /style normal."
                )
            reply = f"Okay, {style} answers from now on."
            return self._move(conv, Event.COMMAND, Action.REPLY, reply=reply, style=style)
        if conv.state is S.AWAITING_INPUT:
            return self._input(conv, analysis, text)
        if conv.state is S.AWAITING_CONFIRMATION:
            return self._confirmation(conv, intent)
        if intent is Intent.REMINDER:
            return self._start(conv, FLOWS["reminder"], analysis)
        if intent is Intent.NOTE:
            return self._start(conv, FLOWS["note"], analysis)
        if intent is Intent.LIST_NOTES:
            return self._start(conv, FLOWS["list_notes"], analysis)
        return self._move(conv, Event.CHAT, Action.ANSWER)

    def after_tool(self, conv: Conversation) -> None:
        """The tool ran: the flow is over."""
        self._move(conv, Event.TOOL_DONE, Action.REPLY)
        conv.flow, conv.slots, conv.awaiting = None, {}, None

    def reset(self, conv: Conversation, reason: str, *, clear_history: bool) -> None:
        """Back to IDLE outside the table: only for /reset and error recovery."""
        log.info("chat state reset from %s (flow %s): %s", conv.state.value, conv.flow, reason)
        if conv.state is not S.IDLE and self._on_transition is not None:
            self._on_transition(conv.state, S.IDLE)
        conv.state, conv.flow, conv.slots, conv.awaiting = S.IDLE, None, {}, None
        if clear_history:
            conv.history.clear()

    # -- helpers ---------------------------------------------------------------

    def _move(
        self,
        conv: Conversation,
        event: Event,
        action: Action,
        *,
        reply: str = "",
        tool: str | None = None,
        args: dict[str, str] | None = None,
        style: str | None = None,
    ) -> Decision:
        nxt = TRANSITIONS.get((conv.state, event))
        if nxt is None:
            raise IllegalTransition(f"no transition from {conv.state.value} on {event.value}")
        if nxt is not conv.state and self._on_transition is not None:
            self._on_transition(conv.state, nxt)
        conv.state = nxt
        return Decision(event, nxt, action, reply, tool, dict(args or {}), style)

    def _start(self, conv: Conversation, flow: Flow, analysis: Analysis) -> Decision:
        conv.flow = flow.name
        conv.slots = {k: v for k, v in analysis.slots if any(s.name == k for s in flow.slots)}
        conv.awaiting = None
        return self._next_step(conv, flow)

    def _next_step(self, conv: Conversation, flow: Flow, prefix: str = "") -> Decision:
        missing = flow.missing(conv.slots)
        if missing is not None:
            conv.awaiting = missing.name
            return self._move(
                conv, Event.NEEDS_INPUT, Action.REPLY, reply=prefix + missing.question
            )
        conv.awaiting = None
        if flow.confirm:
            text = flow.confirmation.format(**conv.slots)
            return self._move(conv, Event.NEEDS_CONFIRMATION, Action.REPLY, reply=text)
        return self._ready(conv, Event.READY)

    def _ready(self, conv: Conversation, event: Event) -> Decision:
        return self._move(conv, event, Action.RUN_TOOL, tool=conv.flow, args=conv.slots)

    def _input(self, conv: Conversation, analysis: Analysis, text: str) -> Decision:
        flow = FLOWS[conv.flow or ""]
        if analysis.intent is Intent.CANCEL:
            conv.flow, conv.slots, conv.awaiting = None, {}, None
            return self._move(conv, Event.DENIED, Action.REPLY, reply="Okay, cancelled.")
        slot = next(s for s in flow.slots if s.name == conv.awaiting)
        value = text.strip()
        if slot.pattern is not None:
            found = re.search(slot.pattern, value, re.IGNORECASE)
            if found is None:
                return self._move(
                    conv, Event.NEEDS_INPUT, Action.REPLY, reply=slot.hint + slot.question
                )
            value = found.group(1).lower()
        conv.slots[slot.name] = value
        return self._next_step(conv, flow)

    def _confirmation(self, conv: Conversation, intent: Intent) -> Decision:
        if intent is Intent.CONFIRM:
            return self._ready(conv, Event.CONFIRMED)
        if intent in (Intent.DENY, Intent.CANCEL):
            conv.flow, conv.slots, conv.awaiting = None, {}, None
            return self._move(conv, Event.DENIED, Action.REPLY, reply="Okay, I won't.")
        flow = FLOWS[conv.flow or ""]
        question = flow.confirmation.format(**conv.slots)
        return self._move(
            conv, Event.UNCLEAR, Action.REPLY, reply="Please answer yes or no. " + question
        )
