"""An example Telegram bot that uses ``resilient`` at every external call.

Run ``python -m examples.telegram_bot demo`` for the offline demo, or
``python -m examples.telegram_bot run`` for the bot itself (configured from the
environment, see :mod:`.config`). ``docs/bot.md`` walks through the design;
:mod:`.policies` shows every policy the bot uses, by name; :mod:`.app` is the
composition root that wires the stages together.
"""
