"""Foreign-accented English for espeak-ng: respell English pronunciation in another language's writing.

Why: espeak-ng's Hindi, Tamil or Swahili voices do not speak English with an accent. Given English text,
they switch every Latin-script word to the English voice (`espeak-ng -v hi -x` prints "(en)...(hi)"), so
labelling that audio "South-Asia" would be false. Instead we take espeak's English phonemes (IPA) and
write them the way a speaker of the other language would spell the loanword (Devanagari for Hindi,
phonemic Latin spelling for Swahili, Indonesian and Malay), then let that language's voice read it: its
own phoneme inventory, letter-to-sound rules and intonation turn it into English with that language's
accent (retroflex t/d and the v/w merger for Hindi, th -> t and d for Indonesian). The transcript stays
the original English text.
"""

from __future__ import annotations

from dataclasses import dataclass

# Longest symbols first so "tʃ" is one token, not "t" + "ʃ". Stress, length-only and combining marks
# (syllabic n̩) are dropped by the tokenizer.
_SYMBOLS = sorted(
    "tʃ dʒ oʊ əʊ eɪ aɪ aʊ ɔɪ ɪə eə ʊə iː uː ɑː ɔː ɜː "
    "p b t d k ɡ g f v θ ð s z ʃ ʒ h m n ŋ l ɹ r w j ɾ ʔ x ʍ ɬ "
    "ə ɚ ɜ ɐ ʌ æ a ɑ ɒ ɔ o e ɛ ɪ ᵻ i ʊ u".split(),
    key=len,
    reverse=True,
)
_VOWELS = set("oʊ əʊ eɪ aɪ aʊ ɔɪ ɪə eə ʊə iː uː ɑː ɔː ɜː ə ɚ ɜ ɐ ʌ æ a ɑ ɒ ɔ o e ɛ ɪ ᵻ i ʊ u".split())


def tokenize_ipa(word: str) -> list[str]:
    """Split one word of espeak-ng IPA into phoneme symbols; unknown marks are skipped."""
    tokens, i = [], 0
    while i < len(word):
        for symbol in _SYMBOLS:
            if word.startswith(symbol, i):
                tokens.append(symbol)
                i += len(symbol)
                break
        else:
            i += 1
    return tokens


@dataclass(frozen=True)
class Respelling:
    """How one language writes English sounds. `source` is the English voice whose phonemes are used
    (rhotic en-us or non-rhotic en-gb, matching the accent); `vowels` map to (alone, after a consonant)."""

    source: str
    consonants: dict
    vowels: dict
    script: str = "latin"
    rhotic: bool = True  # r-coloured vowels become vowel + r, as learners pronounce them from the spelling
    final_schwa: str = ""  # what a word-final schwa becomes (Devanagari writes "sofa" as सोफ़ा)

    def respell_word(self, ipa_word: str) -> str:
        """Respell one word of IPA."""
        tokens = []
        for token in tokenize_ipa(ipa_word):
            if tokens and token == "ɹ" and tokens[-1] == "ɹ":
                continue  # espeak writes linking r after ɚ ("measure of" -> mˈɛʒɚɹ)
            tokens.extend(["ə", "ɹ"] if token in ("ɚ", "ɜː", "ɜ") and self.rhotic else [token])
        if self.script == "deva":
            return self._deva(tokens)
        return "".join(self.vowels.get(t, ("", ""))[0] if t in _VOWELS else self.consonants.get(t, "") for t in tokens)

    def _deva(self, tokens: list[str]) -> str:
        out, after_consonant = [], False
        for k, token in enumerate(tokens):
            if token in _VOWELS:
                alone, sign = self.vowels.get(token, ("", ""))
                several_vowels = sum(t in _VOWELS for t in tokens) > 1  # "the" stays द, "sofa" is सोफ़ा
                if token in ("ə", "ɐ") and k == len(tokens) - 1 and several_vowels:
                    alone, sign = self.vowels[self.final_schwa]
                out.append(sign if after_consonant else alone)
                after_consonant = False
            elif token in self.consonants:
                # Virama (्) joins consonant clusters; a bare final consonant loses its schwa in espeak's rules.
                out.append(("्" if after_consonant else "") + self.consonants[token])
                after_consonant = True
        return "".join(out)


_DEVANAGARI = Respelling(
    source="en-us",
    script="deva",
    final_schwa="ɑː",
    consonants={
        "p": "प", "b": "ब", "t": "ट", "d": "ड", "k": "क", "ɡ": "ग", "g": "ग", "f": "फ़", "v": "व", "w": "व",
        "ʍ": "व", "θ": "थ", "ð": "द", "s": "स", "z": "ज़", "ʃ": "श", "ʒ": "ज़", "h": "ह", "m": "म", "n": "न",
        "ŋ": "ङ्ग", "l": "ल", "ɬ": "ल", "ɹ": "र", "r": "र", "j": "य", "tʃ": "च", "dʒ": "ज", "ɾ": "ट",
        "ʔ": "ट", "x": "ख",
    },
    vowels={
        "ə": ("अ", ""), "ɐ": ("अ", ""), "ʌ": ("अ", ""), "æ": ("ऐ", "ै"), "a": ("ऐ", "ै"), "ɛ": ("ए", "े"),
        "e": ("ए", "े"), "eɪ": ("ए", "े"), "eə": ("ए", "े"), "ɪ": ("इ", "ि"), "ᵻ": ("इ", "ि"),
        "i": ("इ", "ि"), "iː": ("ई", "ी"), "ɪə": ("इय", "िय"), "ɑː": ("आ", "ा"), "ɑ": ("आ", "ा"),
        "ɒ": ("ऑ", "ॉ"), "ɔː": ("ऑ", "ॉ"), "ɔ": ("ऑ", "ॉ"), "o": ("ओ", "ो"), "oʊ": ("ओ", "ो"),
        "əʊ": ("ओ", "ो"), "ʊ": ("उ", "ु"), "ʊə": ("उअ", "ुअ"), "u": ("ऊ", "ू"), "uː": ("ऊ", "ू"),
        "aɪ": ("आइ", "ाइ"), "aʊ": ("आउ", "ाउ"), "ɔɪ": ("ऑय", "ॉय"),
    },
)

_LATIN_CONSONANTS = {
    "p": "p", "b": "b", "t": "t", "d": "d", "k": "k", "ɡ": "g", "g": "g", "f": "f", "v": "v", "w": "w",
    "ʍ": "w", "s": "s", "z": "z", "h": "h", "m": "m", "n": "n", "ŋ": "ng", "l": "l", "ɬ": "l", "ɹ": "r",
    "r": "r", "j": "y", "ɾ": "t", "ʔ": "t", "x": "kh",
}
_LATIN_VOWELS = {
    "ə": "a", "ɐ": "a", "ʌ": "a", "æ": "a", "a": "a", "ɛ": "e", "e": "e", "eɪ": "ei", "eə": "e", "ɪ": "i",
    "ᵻ": "i", "i": "i", "iː": "i", "ɪə": "ia", "ɑː": "a", "ɑ": "a", "ɒ": "o", "ɔː": "o", "ɔ": "o", "o": "o",
    "oʊ": "o", "əʊ": "o", "ʊ": "u", "ʊə": "ua", "u": "u", "uː": "u", "aɪ": "ai", "aʊ": "au", "ɔɪ": "oi",
    "ɜː": "a", "ɜ": "a", "ɚ": "a",
}


def _latin(source: str, consonants: dict, vowels: dict, rhotic: bool = True) -> Respelling:
    return Respelling(
        source=source,
        rhotic=rhotic,
        consonants={**_LATIN_CONSONANTS, **consonants},
        vowels={k: (v, v) for k, v in {**_LATIN_VOWELS, **vowels}.items()},
    )


# Swahili spelling (East African English is non-rhotic, hence en-gb phonemes): th, dh, sh, ch, j.
_SWAHILI = _latin("en-gb", {"θ": "th", "ð": "dh", "ʃ": "sh", "ʒ": "sh", "tʃ": "ch", "dʒ": "j"}, {}, rhotic=False)
# Indonesian/Malay spelling: no dental fricatives (th -> t, d), sy for sh, c for ch, pepet e for schwa.
_MALAY = _latin(
    "en-us",
    {"θ": "t", "ð": "d", "ʃ": "sy", "ʒ": "sy", "tʃ": "c", "dʒ": "j"},
    {"ə": "e", "æ": "e", "ɜː": "er", "ɜ": "er", "ɚ": "er"},
)
RESPELLINGS: dict[str, Respelling] = {
    "hi": _DEVANAGARI, "sw": _SWAHILI, "id": _MALAY, "ms": _MALAY,
}


def respell(ipa_clauses: list[str], language: str) -> str:
    """Respell espeak IPA output (one clause a line, words separated by spaces) for `language`'s voice."""
    spelling = RESPELLINGS[language]
    clauses = []
    for clause in ipa_clauses:
        words = [spelling.respell_word(w) for w in clause.split()]
        clauses.append(" ".join(w for w in words if w))
    return ", ".join(c for c in clauses if c) + "."
