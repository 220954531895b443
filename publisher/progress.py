"""Progress lines on stderr for long-running commands (throttled; quiet when disabled)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Prints ``label: done/total (pct)`` to stderr at most every ``interval`` seconds."""

    def __init__(self, label: str, enabled: bool = True, interval: float = 0.5) -> None:
        self.label = label
        self.enabled = enabled
        self.interval = interval if sys.stderr.isatty() else max(interval, 5.0)
        self._last = 0.0
        self._shown = False

    def update(self, done: int, total: int) -> None:
        """Report that ``done`` of ``total`` items are finished."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.interval and done < total:
            return
        self._last = now
        pct = 100.0 * done / total if total else 100.0
        end = "\r" if sys.stderr.isatty() else "\n"
        print(f"{self.label}: {done}/{total} ({pct:.0f}%)", end=end, file=sys.stderr, flush=True)
        self._shown = True

    def done(self) -> None:
        """Finish the progress line."""
        if self.enabled and self._shown and sys.stderr.isatty():
            print(file=sys.stderr)
