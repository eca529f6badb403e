"""The stages a message goes through, each behind a small interface.

intake (validation) → analysis (intent, entities; cached by message hash) →
decision (the per-chat state machine) → tools → response generation (the LLM
fallback chain) → moderation → sending. :mod:`..handler` runs them in that
order; :mod:`..app` builds them and injects their dependencies.
"""
