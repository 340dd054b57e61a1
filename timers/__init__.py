"""Durable one-shot timers: at a given instant, POST this JSON to this URL, once."""

__version__ = "0.1.0"
