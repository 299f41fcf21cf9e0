"""Assembling generated text: UTF-8 across token boundaries, stop strings, stream hold-back.

Pure: the engine feeds the bytes of each generated token and gets back the text that may be
sent now. Text that could be the start of a stop string is held back until it is known not
to be one, so a streamed answer never shows a stop string or part of one.
"""

from __future__ import annotations

import codecs


class TextAssembler:
    """Collects generated text and watches for stop strings.

    Attributes:
        text: the text accepted so far (cut before the stop string once one is seen).
        stopped: a stop string was seen; the generation should end.
    """

    def __init__(self, stop: tuple[str, ...] = ()) -> None:
        self._stop = stop
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._sent = 0
        self.text = ""
        self.stopped = False

    def push(self, piece: bytes) -> str:
        """Add one token's bytes; return the new text that is safe to send now."""
        if self.stopped:
            return ""
        before = len(self.text)
        self.text += self._decoder.decode(piece)
        if self._stop:
            # Only a stop string that ends in the new text can be new: search from just
            # before it, far enough back to catch one that straddles the boundary.
            longest = max(len(s) for s in self._stop)
            start = max(0, before - longest + 1)
            hits = [i for i in (self.text.find(s, start) for s in self._stop) if i >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.stopped = True
                return self._flush(len(self.text))
        return self._flush(len(self.text) - self._held_back())

    def finish(self) -> str:
        """End of generation: return everything not sent yet."""
        if not self.stopped:
            self.text += self._decoder.decode(b"", final=True)
        return self._flush(len(self.text))

    def _held_back(self) -> int:
        """The length of the longest tail of the text that starts some stop string."""
        held = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(self.text)), held, -1):
                if self.text.endswith(stop[:size]):
                    held = size
                    break
        return held

    def _flush(self, end: int) -> str:
        end = max(end, self._sent)
        piece = self.text[self._sent : end]
        self._sent = end
        return piece
