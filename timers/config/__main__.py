"""`python -m timers.config` prints the README's configuration table."""

from timers.config import markdown_table

print(markdown_table())
