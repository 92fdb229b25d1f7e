"""The device-wide unit attention queue.

TCMU hands us commands without the initiator's identity, so a unit attention is
kept per device, not per I_T nexus: it is reported once, to whichever initiator
sends the next command that is not exempt (INQUIRY, REQUEST SENSE, REPORT LUNS).
The kernel core keeps its own per-nexus unit attentions (resets, LUN changes).
"""

from __future__ import annotations

import threading
from collections import deque

from tcmu_scst.scsi.sense import SenseError

#: More than this many different conditions pending means the initiator is not
#: listening; the oldest is dropped (a newer condition supersedes it anyway).
MAX_PENDING = 8


class UnitAttentionQueue:
    """Pending (ASC, ASCQ) unit attention conditions, oldest first, without duplicates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[tuple[int, int]] = deque()

    def post(self, asc: int, ascq: int) -> None:
        with self._lock:
            if (asc, ascq) in self._pending:
                return
            if len(self._pending) >= MAX_PENDING:
                self._pending.popleft()
            self._pending.append((asc, ascq))

    def __bool__(self) -> bool:
        return bool(self._pending)

    def pop(self) -> SenseError | None:
        """Take the oldest condition as a UNIT ATTENTION sense, or None."""
        if not self._pending:  # lock-free fast path: the common case
            return None
        with self._lock:
            if not self._pending:
                return None
            asc, ascq = self._pending.popleft()
        return SenseError.unit_attention(asc, ascq)

    def pending(self) -> list[tuple[int, int]]:
        with self._lock:
            return list(self._pending)

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
