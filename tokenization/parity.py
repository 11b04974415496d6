"""Inputs on which a NeoX encoder must give exactly the ids of ``tokenizers`` (issue 13, item 1).

Shared by tests/test_encoder_parity.py and benchmarks/encoders.py: the adversarial set (each class where a
byte-level BPE re-implementation may part ways with ``tokenizers``), 1 MB single-line documents, and the
per-code-point probes.
"""
from __future__ import annotations

import random
import unicodedata

# whitespace that the ByteLevel regex (\s) or NeoX's space-run added tokens treat specially, and look-alikes
WHITESPACE = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x85", "\xa0", "\u1680", "\u2000", "\u2009", "\u2028",
              "\u2029", "\u202f", "\u205f", "\u3000", "\u200b", "\ufeff"]
# (composed, decomposed) and other canonical-equivalence cases, incl. reordering and singletons
NFC_NFD = ["\u00e9", "e\u0301", "\u00c5", "A\u030a", "\u212b", "\u1100\u1161\u11a8", "\uac01", "a\u0316\u0301",
           "a\u0301\u0316", "\u0344", "\u1e0d\u0307", "d\u0323\u0307", "d\u0307\u0323", "\u0958", "\ufb01", "\u2460",
           "\uff26\uff55\uff4c\uff4c", "\u00f1", "n\u0303", "<\u0338", ">\u0338", "=\u0338", "\u1e9b\u0323",
           "\u0f73", "\U0001d15e", "\u2126", "\u00c7\u0301", "\u30ac", "\u30ab\u3099"]
EMOJI = ["\U0001F600", "\U0001F44D\U0001F3FD", "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466",
         "\U0001F1EB\U0001F1F7\U0001F1E9\U0001F1EA", "\U0001FAE8\U0001FABF", "\U0001FAE9", "hi \U0001F600\U0001F600 there",
         "\u2764\ufe0f", "#\ufe0f\u20e3", "\U0001F6DC", "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F"]
CONTROL = ["".join(chr(c) for c in range(32)), "\x00abc\x00", "\x7f\x80\x9f", "a\u202eb\u202c", "\u200d\u200c",
           "\ufffd\ufffe\uffff", "x\x1b[0my", "\U000F0000\U0010FFFF", "\ue000"]
ADDED = ["<|endoftext|>", "<|padding|>", "a<|endoftext|>b", " <|endoftext|> ", "<|endoftext|>\u0338",
         "<\u0338|endoftext|>", "<|endoftext", "|endoftext|>", "<|endoftext|><|padding|>", "<|endoftext|>" * 5,
         "  <|endoftext|>  ", "it's<|padding|>'s", "<|ENDOFTEXT|>", "<|endoftext|>  \n"]
MISC = ["'s't're've'm'll'd", "I'M DON'T", "\u2019s", "'S", "x's" * 10, "1234567890" * 5, "\u0661\u0662\u0663",
        "\u00bd\u2153", "\U0001d7d8\U0001d7d9", "\U0001D2C0", "\U00031350\U00031351", "a\U00031350b",
        "\U00011F04\U00011F05", "x\U0001E4D0y", "\u0897\u1ac1\u1df6 \U00010d24",
        ("caf\u00e9 \u65e5\u672c\u8a9e "
         "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0939\u093f\u0928\u094d\u0926\u0940 \u0e44\u0e17\u0e22"),
        "\u05e9\u05c1\u05b8\u05dc\u05d5\u05b9\u05dd", "Stra\u00dfe \u0130stanbul \u03a3\u03c3\u03c2"]


def adversarial_texts(seed: int = 0) -> list[str]:
    """A few thousand short texts (no 1 MB documents; see ``big_texts``)."""
    rng = random.Random(seed)
    out: list[str] = []
    for n in list(range(1, 60)) + [100, 1000, 4096]:
        for w in (" ", "\t", "\n", "\r\n", " \n", "\u3000", "\xa0 "):
            out += [w * n, "a" + w * n + "b", w * n + "x", "x" + w * n, "\n" + w * n + "def", "'" + w * n + "s"]
    for _ in range(400):
        out.append("".join(rng.choice(WHITESPACE + ["a", "b", "1", "!", "'s", "\u00e9", "e\u0301", "\u65e5"])
                           for _ in range(rng.randint(1, 80))))
    for p in NFC_NFD:
        out += [p, " " + p, "x" + p + "y", p * 5, unicodedata.normalize("NFD", "Caf\u00e9 na\u00efve \u00c5ngstr\u00f6m " + p),
                unicodedata.normalize("NFD", p), unicodedata.normalize("NFC", p)]
    out += EMOJI + CONTROL + ADDED + MISC
    out += [t + " " + t for t in EMOJI + CONTROL + ADDED + MISC]
    return out


def big_texts(size: int = 1_000_000, seed: int = 0) -> dict[str, str]:
    """1 MB single-line documents (no newline unless the class is newlines), by class."""
    rng = random.Random(seed)
    words = ["the", "quick", "brown", "fox", "\u03bb\u03cc\u03b3\u03bf\u03c2", "\u65e5\u672c\u8a9e", "12", "!?",
             "\u00e9clair", "e\u0301clair", "\U0001F600", "it's", "  ", "\t"]
    prose = " ".join(rng.choice(words) for _ in range(size // 3))[:size]
    return {"mixed words": prose, "one letter run": "a" * size, "CJK run": "\u65e5" * (size // 3),
            "digit run": "1" * size, "punct run": "!" * size, "spaces": " " * size, "newlines": "\n" * size,
            "ab run": "ab" * (size // 2), "x-space": "x " * (size // 2), "tabs+spaces": "\t  " * (size // 3),
            "NFD prose": unicodedata.normalize("NFD", "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 ") * (size // 24)}


def codepoint_probes(ch: str) -> list[str]:
    """Contexts in which one code point may be classified (\\p{L}, \\p{N}, \\s), normalized or reordered
    (combining class) differently by another implementation's Unicode tables."""
    return [ch, "a" + ch + "a", "1" + ch, " " + ch + " ", "a\u0301" + ch + "\u0316",
            unicodedata.normalize("NFD", ch) + "x", ch + ch]


def all_codepoints() -> list[int]:
    return [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]  # lone surrogates: see the surrogate test
