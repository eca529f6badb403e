"""Runnable examples of ``resilient`` (``python -m examples.telegram_bot demo``)."""
