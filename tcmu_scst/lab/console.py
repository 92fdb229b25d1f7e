"""The guest's serial console: separate boot noise, command output and the exit status.

/init prints START_MARKER just before the command runs and ``EXIT_PREFIX<n>>>>`` after
it ends. Everything between is the command's output and is streamed; what comes
before is boot noise, kept (for error reports) and shown only when asked. Lines /init
prints about its own failures (``tcmu-scst-lab: ...``) are always shown.
"""

from __future__ import annotations

import codecs
import re
from collections import deque

START_MARKER = "<<<tcmu-scst-lab:start>>>"
EXIT_PREFIX = "<<<tcmu-scst-lab:exit="
_EXIT_RE = re.compile(r"<<<tcmu-scst-lab:exit=(\d+)>>>")
_INIT_SAYS = "tcmu-scst-lab: "


def parse_exit_status(text: str) -> int | None:
    """The status in the last exit marker of ``text``, or None if there is none."""
    found = _EXIT_RE.findall(text)
    return int(found[-1]) if found else None


class ConsoleFilter:
    """Feed raw console bytes; get back the text to show the user."""

    def __init__(self, *, verbose: bool = False, boot_log_lines: int = 200) -> None:
        self.verbose = verbose
        self.started = False
        self.exit_status: int | None = None
        self.boot_log: deque[str] = deque(maxlen=boot_log_lines)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._line_buf = ""  # the current, incomplete line
        self._emitted = 0  # how much of it was already shown (streamed partial line)

    def feed(self, chunk: bytes) -> str:
        *lines, partial = (self._line_buf + self._decoder.decode(chunk)).split("\n")
        out = [self._complete(line.removesuffix("\r")) for line in lines]
        self._line_buf = partial
        if self.started and self.exit_status is None and partial:
            # Stream partial lines (progress output) but hold back anything that may
            # be the start of the exit marker until its line is complete.
            cut = partial.find("<")
            cut = len(partial) if cut < 0 else cut
            if partial.endswith("\r") and cut == len(partial):
                cut -= 1  # may be the \r of a \r\n split across reads
            if cut > self._emitted:
                out.append(partial[self._emitted : cut])
                self._emitted = cut
        return "".join(out)

    def flush(self) -> str:
        """Whatever is still held back once the console is closed."""
        rest = self._line_buf + self._decoder.decode(b"", final=True)
        self._line_buf = ""
        if not rest:
            return ""
        return self._complete(rest.removesuffix("\r")).removesuffix("\n")

    def _complete(self, line: str) -> str:
        """Show what is left of a complete line after its streamed head."""
        shown = self._line(line) or ""
        already, self._emitted = self._emitted, 0
        return shown[already:] if already <= len(shown) else shown

    def _line(self, line: str) -> str | None:
        """Classify one complete line; return what to show (with newline) or None."""
        if self.exit_status is not None:
            return None  # after the command: only poweroff noise follows
        if not self.started:
            if START_MARKER in line:
                self.started = True
                return None
            status = parse_exit_status(line)
            if status is not None:
                self.exit_status = status  # /init gave up before starting the command
                return None
            self.boot_log.append(line)
            if self.verbose or line.startswith(_INIT_SAYS):
                return line + "\n"
            return None
        status = parse_exit_status(line)
        if status is not None:
            self.exit_status = status
            head = line[: line.find(EXIT_PREFIX)]
            return head + "\n" if head else None  # output without its final newline
        return line + "\n"
