"""Language consistency (DeepSeek-R1's language-consistency reward): the share of text in the target language.

Counting is by script, so Chinese-English mixing is caught without a detector: every CJK character is
one unit, every Latin (or Cyrillic, ...) word is one unit. Math, code and LaTeX commands are removed
first and one-letter words (variables) and short all-caps tokens (point names, "GCD") are skipped, so
"设 x 为 ABC 的边长" is pure Chinese. Languages that share a script (English/French) are not told apart
by counting; ``detect_language`` (lingua) names the language of a problem when the row does not.
"""

from __future__ import annotations

import functools
import re

from verifiers.verdict import OK, Verdict

# Unit patterns by script. CJK scripts count per character, alphabetic scripts per word.
_SCRIPTS = {
    "han": r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]",
    "kana": r"[\u3040-\u30ff\u31f0-\u31ff]",
    "hangul": r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]+",
    "latin": r"[A-Za-z\u00c0-\u024f]+(?:'[A-Za-z]+)?",
    "cyrillic": r"[\u0400-\u04ff]+",
    "arabic": r"[\u0600-\u06ff]+",
    "devanagari": r"[\u0900-\u097f]+",
}
_UNIT_RE = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in _SCRIPTS.items()))

# Which scripts count as written in each target language.
TARGET_SCRIPTS = {
    "zh": {"han"},
    "ja": {"han", "kana"},
    "ko": {"hangul", "han"},
    "ru": {"cyrillic"},
    "uk": {"cyrillic"},
    "ar": {"arabic"},
    "hi": {"devanagari"},
    **{code: {"latin"} for code in ("en", "fr", "de", "es", "it", "pt", "nl", "vi", "id", "tr", "pl")},
}

# Removed before counting: fenced/inline code, display and inline math, LaTeX commands, think tags.
_NOT_PROSE_RE = re.compile(
    r"```.*?```|`[^`\n]*`"
    # inline $...$ stays on one line: a lone "$5" must not swallow the text up to the next dollar
    r"|\$\$.*?\$\$|(?<!\\)\$[^$\n]+?(?<!\\)\$|\\\[.*?\\\]|\\\(.*?\\\)"
    r"|\\[A-Za-z]+"
    r"|</?think>",
    re.DOTALL,
)
# Latin tokens that are math or abbreviations, not words: one or two letters ("x", "ab", "cm"), short
# all-caps names ("ABC", "GCD"), function names, and anything glued to digits or operators ("2x", "a^2").
_SKIPPED_LATIN_RE = re.compile(
    r"[A-Za-z]{1,2}|[A-Z]{3,4}|(?:sin|cos|tan|cot|sec|csc|log|ln|lim|max|min|mod|gcd|lcm|det|exp|arc\w*)"
)
_MATH_NEIGHBOUR = set("0123456789^_=+-*/\\(){}[]<>|.,'")

DEFAULT_MIN_SHARE = 0.95


def script_counts(text: str) -> dict[str, int]:
    """Units of prose per script, math and code excluded."""
    counts: dict[str, int] = {}
    prose = _NOT_PROSE_RE.sub(" ", text)
    for match in _UNIT_RE.finditer(prose):
        script = match.lastgroup
        if script == "latin" and _is_math_token(prose, match):
            continue
        counts[script] = counts.get(script, 0) + 1
    return counts


def _is_math_token(text: str, match: re.Match) -> bool:
    if _SKIPPED_LATIN_RE.fullmatch(match.group()):
        return True
    before = text[match.start() - 1] if match.start() else " "
    after = text[match.end()] if match.end() < len(text) else " "
    # Sentence punctuation may follow a word; only digits/operators glued on mean math.
    return before in _MATH_NEIGHBOUR or (after in _MATH_NEIGHBOUR and after not in ".,')")


def language_share(text: str, target: str) -> float | None:
    """Share of prose units written in the target language's script(s); None when there is no prose."""
    scripts = TARGET_SCRIPTS.get(target.lower().split("-")[0])
    if scripts is None:
        raise ValueError(f"unsupported target language {target!r}; known: {sorted(TARGET_SCRIPTS)}")
    counts = script_counts(text)
    total = sum(counts.values())
    if not total:
        return None
    return sum(n for script, n in counts.items() if script in scripts) / total


def check_language(text: str, target: str = "en", *, min_share: float = DEFAULT_MIN_SHARE) -> Verdict:
    """passed when at least ``min_share`` of the prose is in ``target``; score = that share."""
    if target.lower().split("-")[0] not in TARGET_SCRIPTS:
        return Verdict(None, "unsupported_language")
    share = language_share(text, target)
    if share is None:
        return Verdict(None, "no_text")
    return Verdict(share >= min_share, OK if share >= min_share else "mixed_language", score=share)


# Languages the detector is built for: few languages make it small (~26 MB) and fast (~0.6 ms per text).
DETECTABLE = ("en", "zh", "ja", "ko", "ru", "fr", "de", "es")


@functools.lru_cache(maxsize=1)
def _detector():
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    languages = [Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())) for code in DETECTABLE]
    return LanguageDetectorBuilder.from_languages(*languages).build()


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the problem's language among ``DETECTABLE``, or None when undecidable."""
    counts = script_counts(text)
    total = sum(counts.values())
    if not total:
        return None
    # Script decides where it is unambiguous: lingua calls short Chinese math problems with a few
    # Latin tokens Spanish or English. Kana means Japanese, which also uses Han.
    if "kana" not in counts and counts.get("han", 0) * 2 > total:
        return "zh"
    if counts.get("hangul", 0) * 2 > total:
        return "ko"
    language = _detector().detect_language_of(_NOT_PROSE_RE.sub(" ", text))
    return language.iso_code_639_1.name.lower() if language is not None else None
