"""Korean morpheme boundaries for BPE training (EXAONE pre-tokenized Korean with MeCab).

Only *where to split* comes from the analyser; no character is added, removed or changed,
so the trained tokenizer still decodes to exactly the input bytes. Splits are made only
inside whitespace-delimited words and only next to Hangul (the byte-level regex already
separates words, and English or digits are left to it), e.g. ``학교에`` -> ``학교`` | ``에``.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ANALYZERS", "MorphemeSplitter", "load_morpheme_splitter"]

ANALYZERS = ("none", "mecab", "kiwi")

_INSTALL_HINT = {
    "mecab": "pip install python-mecab-ko  (bundles the mecab-ko dictionary)",
    "kiwi": "pip install kiwipiepy",
}


def _is_hangul(char: str) -> bool:
    code = ord(char)
    return 0xAC00 <= code <= 0xD7A3 or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F


def _mecab_starts() -> Callable[[str], list[int]]:
    import mecab  # python-mecab-ko

    analyser = mecab.MeCab()
    return lambda text: [m.span.start for m in analyser.parse(text)]


def _kiwi_starts() -> Callable[[str], list[int]]:
    from kiwipiepy import Kiwi

    analyser = Kiwi()
    return lambda text: [token.start for token in analyser.tokenize(text)]


class MorphemeSplitter:
    """A ``tokenizers`` custom pre-tokenizer that cuts Korean words at morpheme starts.

    Used only while training: custom pre-tokenizers cannot be serialized, and they need not
    be, since merges learned on morphemes already keep tokens inside morphemes.
    """

    def __init__(self, morpheme_starts: Callable[[str], list[int]]) -> None:
        self._morpheme_starts = morpheme_starts

    def cut_points(self, text: str) -> list[int]:
        """Character offsets where ``text`` is split (sorted, inside words, next to Hangul)."""
        cuts = set()
        for start in self._morpheme_starts(text):
            if 0 < start < len(text):
                before, after = text[start - 1], text[start]
                if before.isspace() or after.isspace():
                    continue
                if _is_hangul(before) or _is_hangul(after):
                    cuts.add(start)
        return sorted(cuts)

    def _split(self, _index, normalized):
        text = str(normalized)
        if not any(_is_hangul(ch) for ch in text):
            return [normalized]
        bounds = [0, *self.cut_points(text), len(text)]
        return [normalized[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]

    def pre_tokenize(self, pretok) -> None:
        pretok.split(self._split)


def load_morpheme_splitter(analyser: str) -> MorphemeSplitter | None:
    """Return a splitter for ``analyser`` ("mecab" or "kiwi"), or None for "none".

    Raises ValueError with the install command when the analyser is not installed.
    """
    if analyser == "none":
        return None
    loaders = {"mecab": _mecab_starts, "kiwi": _kiwi_starts}
    if analyser not in loaders:
        raise ValueError(f"unknown morphological analyser {analyser!r}; choose from {ANALYZERS}")
    try:
        return MorphemeSplitter(loaders[analyser]())
    except ImportError as exc:
        raise ValueError(
            f"Korean pre-tokenization with {analyser!r} needs a package that is not installed "
            f"({exc.name}): {_INSTALL_HINT[analyser]}"
        ) from None
