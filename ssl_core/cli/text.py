"""Text from outside (paths, recipe values, error messages, a child's log) made safe to show.

A terminal acts on control characters: an escape sequence inside a folder name, a
recipe string or a plugin's error message could clear the screen, rewrite the line
before it or retitle the window, and Unicode direction marks can make a name read
other than it is. sslrun shows every such character as an escape (``\\x1b``,
``\\u202e``) and prints outside text without rich markup.
"""

from __future__ import annotations

import re

#: C0 controls but tab and newline, DEL, C1 controls, zero-width and direction marks.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on shown as an escape."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
