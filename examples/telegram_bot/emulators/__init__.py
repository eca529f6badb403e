"""Offline stand-ins for Telegram's Bot API and an OpenAI-compatible LLM server."""

from .bot_api import BotAPIEmulator, Delay, RetryAfter, SentMessage, ServerError, UserMessage
from .llm_api import Latency, LLMEmulator, LLMRequest, Outage, RateLimited, echo_answer

__all__ = [
    "BotAPIEmulator",
    "Delay",
    "LLMEmulator",
    "LLMRequest",
    "Latency",
    "Outage",
    "RateLimited",
    "RetryAfter",
    "SentMessage",
    "ServerError",
    "UserMessage",
    "echo_answer",
]
