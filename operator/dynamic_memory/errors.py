"""The one error type a user's input earns: the command line prints its words and exits non-zero.

Everything a user hands us (a file, a flag, a trace, a policy) is checked where it is read and,
when wrong, raises UserError with a message that names the file, line or field and says what to
do. Anything else that escapes is a bug in our code, and is allowed to show its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: a few lines naming the problem, shown without a traceback (exit 2)."""
