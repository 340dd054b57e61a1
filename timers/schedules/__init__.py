"""Recurring schedules: each slot of a schedule becomes one one-shot timer."""
