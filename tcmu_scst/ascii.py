"""Numbers as people and kernels write them: ASCII decimal digits only.

``str.isdigit()`` is True for superscript two (U+00B2; ``int()`` of it then
raises) and for other scripts' digits such as U+0660 ARABIC-INDIC DIGIT ZERO
(which ``int()`` reads as 0): a config line ``LUN`` + U+00B2 crashed with a
traceback and ``LUN`` + U+0660 became LUN 0. Every check of user or kernel text
for "a decimal number" goes through :func:`is_decimal`.
"""

from __future__ import annotations


def is_decimal(text: str) -> bool:
    """Non-empty and made of the ASCII digits 0-9 only."""
    return text.isascii() and text.isdigit()
