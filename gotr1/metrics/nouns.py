"""The prompt parsing T2I-CompBench's scripts do with spaCy: noun phrases, nouns, adjectives.

The official scripts (github.com/Karine-Huang/T2I-CompBench) parse prompts with spaCy's ``en_core_web_sm``:
noun chunks become BLIP-VQA's questions (``BLIPvqa_eval/BLIP_vqa.py``), the first and last noun are the
objects of the 2D-spatial score (``UniDet_eval/2D_spatial_eval.py``), adjectives are dropped from complex
prompts before CLIP reads them (``CLIPScore_eval/CLIP_similarity.py --complex``). This module does the same
with spaCy when it is installed with its model (the official route)::

    pip install spacy && python -m spacy download en_core_web_sm

Without it, a rule-based tagger and chunker of this module's own stands in: a departure from the official
scripts. It tags words from small lexicons (determiners, numbers, prepositions, conjunctions, verbs, the
benchmark's colour, shape, texture and size words; unknown words are nouns), and a noun phrase is an
optional determiner or number, adjectives, then nouns ("a green bench and a blue bowl" -> "a green bench",
"a blue bowl"; "a black and white cat" stays one phrase). It matches spaCy on the benchmark's two-object
attribute prompts; on long free-form sentences it can split or merge phrases differently.
"""

from __future__ import annotations

import re
from functools import lru_cache

MAX_PHRASES = 8
"""BLIP_vqa.py's ``--np_num`` default: at most this many noun phrases become questions."""
DROPPED_PHRASES = ("top", "the side", "the left", "the right")
"""Noun chunks BLIP_vqa.py leaves out (parts of spatial relations, not objects)."""
COMPLEX_PREPOSITIONS = ("on top of", "on bottom of", "on the left", "on the right", "next to", "on side of", "near")
"""The relations 2D_spatial_eval.py ``--complex`` looks for, by tokens, to find the two objects around them."""

# ------------------------------------------------------------------------------------------ lexicons

_DET = set("a an the this that these those its his her their my your our some each every another".split())
_NUM = set("one two three four five six seven eight nine ten".split())
_ADP = set(
    "on in at of with by for from to into onto inside under over above below behind beside besides near "
    "between through across around against along beneath atop next within without toward towards upon "
    "among off out up down like past via".split()
)
_CCONJ = set("and or but nor while as which who whose where when that than so yet".split())
_PRON = set("it they them he she him we i you itself themselves".split())
_ADV = set("nearby together only very gracefully neatly lazily seamlessly ominously also just there here".split())
_AUX = set("is are was were be been being has have had do does did can could will would may might should".split())
_VERBS = set(
    "sat sit sits sitting lay lies lying hung hang hangs hold holds held rest rests resting stood stand stands "
    "floated flowed shone shines shine features feature parked nestled contrasted covered draped provided "
    "provide created mix mixes reads read glided gleamed sparkled spun swam strode sped twirled ticked melted "
    "made cast danced drifted fluttered fell leaned loomed jutted embraced perched reflected illuminated grew "
    "wrote write release releases sank settled soared slept snuggled swayed looks looking placed arranged "
    "filled topped lined surrounded".split()
)
_ADJ = set(
    # colours
    "red orange yellow green blue purple pink brown black white grey gray silver gold golden beige tan "
    "whitish colorful multicolored bright dark "
    # shapes and sizes
    "round square rectangular triangular circular oval spherical cubic conical cylindrical pyramidal "
    "pentagonal hexagonal oblong teardrop diamond crescent angular curved tall short small big large long "
    "narrow wide tiny huge little thick thin "
    # textures and materials
    "metallic wooden fabric glass leather plastic rubber fluffy soft smooth rough shiny sleek bumpy hard "
    "fuzzy silky glossy matte velvet woolen cotton furry ceramic marble stainless "
    # others of the benchmark
    "hot cold warm cool cozy sharp striped old new modern ancient fresh crisp juicy sweet".split()
)
_ADJ_SUFFIXES = ("ful", "ous", "less", "ive")
# Closed word lists by tag, in the order they are tried (a word in two lists takes the first).
_LEXICON = (("DET", _DET), ("NUM", _NUM), ("ADP", _ADP), ("CCONJ", _CCONJ), ("PRON", _PRON), ("ADV", _ADV),
            ("AUX", _AUX), ("VERB", _VERBS), ("ADJ", _ADJ))

_WORD = re.compile(r"[A-Za-z0-9']+(?:-[A-Za-z0-9']+)*|[^\sA-Za-z0-9]")


def _rule_tag(words: list[str]) -> list[str]:
    """spaCy-style coarse tags (DET NUM ADJ NOUN VERB AUX ADP CCONJ PRON ADV PUNCT) from the lexicons."""
    tags: list[str] = []
    for word in words:
        low = word.lower()
        prev = tags[-1] if tags else None
        listed = next((tag for tag, words in _LEXICON if low in words), None)
        if not low[0].isalnum():
            tag = "PUNCT"
        elif low.isdigit():
            tag = "NUM"
        elif listed is not None:
            tag = listed
        elif low.endswith(_ADJ_SUFFIXES):
            tag = "ADJ"
        elif low.endswith("ing") and prev == "NOUN":  # "a vase sitting on": a verb after its subject
            tag = "VERB"
        elif low.endswith("ed"):  # "are parked" is a verb, "checkered flooring" an adjective
            tag = "VERB" if prev in ("NOUN", "AUX", "PRON") else "ADJ"
        else:
            tag = "NOUN"
        tags.append(tag)
    return tags


def _rule_chunks(words: list[str], tags: list[str]) -> list[str]:
    """Noun phrases: [DET|NUM] (ADJ ["and" ADJ])* NOUN+, each holding at least one noun."""
    chunks: list[str] = []
    current: list[str] = []
    has_noun = False

    def flush():
        nonlocal current, has_noun
        if has_noun:
            chunks.append(" ".join(current))
        current, has_noun = [], False

    for i, (word, tag) in enumerate(zip(words, tags)):
        if tag in ("DET", "NUM"):
            flush()
            current = [word]
        elif tag == "ADJ":
            if has_noun:  # an adjective after a noun starts the next phrase
                flush()
            current.append(word)
        elif tag == "NOUN":
            current.append(word)
            has_noun = True
        elif (word.lower() == "and" and current and not has_noun and tags[i - 1] == "ADJ"
              and i + 1 < len(tags) and tags[i + 1] == "ADJ"):
            current.append(word)  # "a black and white cat": coordinated adjectives of one noun
        else:
            flush()
    flush()
    return chunks


# ------------------------------------------------------------------------------------------ backends


@lru_cache(maxsize=1)
def _spacy():
    """spaCy's ``en_core_web_sm`` pipeline, or None when spaCy or the model is not installed."""
    try:
        import spacy

        return spacy.load("en_core_web_sm")
    except (ImportError, OSError):
        return None


def chunker() -> str:
    """Which parser this process uses: ``"spacy"`` (the official route) or ``"rules"``."""
    return "spacy" if _spacy() is not None else "rules"


def tagged_words(prompt: str) -> list[tuple[str, str]]:
    """The prompt's tokens with coarse part-of-speech tags (spaCy's ``pos_`` or the rule tagger's)."""
    nlp = _spacy()
    if nlp is not None:
        return [(token.text, token.pos_) for token in nlp(prompt)]
    words = _WORD.findall(prompt)
    return list(zip(words, _rule_tag(words)))


# ------------------------------------------------------------------------------------------ parses


def noun_phrases(prompt: str) -> tuple[list[str], str]:
    """BLIP-VQA's questions' subjects: the prompt's noun phrases, as BLIP_vqa.py collects them.

    Parameters
    ----------
    prompt : str

    Returns
    -------
    phrases : list of str
        At most :data:`MAX_PHRASES` noun chunks in prompt order, :data:`DROPPED_PHRASES` left out.
    chunker : str
        ``"spacy"`` or ``"rules"`` (see the module docstring).
    """
    nlp = _spacy()
    if nlp is not None:
        chunks = [chunk.text for chunk in nlp(prompt).noun_chunks]
    else:
        words = _WORD.findall(prompt)
        chunks = _rule_chunks(words, _rule_tag(words))
    phrases = [c for c in chunks if c not in DROPPED_PHRASES][:MAX_PHRASES]
    return phrases, chunker()


def spatial_objects(prompt: str) -> tuple[str, str] | None:
    """The two objects of a 2D-spatial prompt: its first and last noun (2D_spatial_eval.py, simple prompts).

    "a girl on the top of a frog" -> ("girl", "frog"). None when the prompt has no noun (the official script
    would fail there). A prompt with one noun gives it twice, as the official indexing does.
    """
    nouns = [text for text, pos in tagged_words(prompt) if pos == "NOUN"]
    return (nouns[0], nouns[-1]) if nouns else None


def complex_spatial_objects(prompt: str) -> tuple[str, str] | None:
    """The two objects around a relation of a complex prompt (2D_spatial_eval.py ``--complex``).

    At each token where a :data:`COMPLEX_PREPOSITIONS` entry starts (three, two or one tokens long), the
    nearest noun (or proper noun) before it and the first noun after it are taken; when no noun follows,
    the first proper noun not followed by another. The pair exists only when exactly two objects were
    found in the whole prompt, else None (the official score is then 0).
    """
    tokens = tagged_words(prompt)
    texts = [text for text, _ in tokens]
    pos = [p for _, p in tokens]
    n = len(tokens)
    objects: list[str] = []
    for i in range(n):
        for k in (3, 2, 1):
            if " ".join(texts[i:i + k]) in COMPLEX_PREPOSITIONS:
                break
        else:
            continue
        for j in range(i - 1, -1, -1):
            if pos[j] in ("NOUN", "PROPN"):
                objects.append(texts[j])
                break
        after = next((j for j in range(i + k, n) if pos[j] == "NOUN"), None)
        if after is not None:
            objects.append(texts[after])
        else:
            proper = next((j for j in range(i + k, n - 1) if pos[j] == "PROPN" and pos[j + 1] != "PROPN"), None)
            if proper is not None:
                objects.append(texts[proper])
    return (objects[0], objects[1]) if len(objects) == 2 else None


def without_adjectives(prompt: str) -> str:
    """The prompt with its adjectives removed, tokens joined by spaces (CLIP_similarity.py ``--complex``)."""
    return " ".join(text for text, pos in tagged_words(prompt) if pos != "ADJ")
