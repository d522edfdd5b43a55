"""User-facing errors: the CLI prints their message (no traceback) and exits with code 2.

Messages name the bad input (file, row, key) and what would fix it.
"""


class UserError(Exception):
    """Bad input or environment that the user can fix; the message says how."""
