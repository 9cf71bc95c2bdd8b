"""Which tokens of a prepared text say which of its words: word timestamps for duration-predicting models.

A VITS model predicts how long each input token lasts, so once the tokens of every word are known, the
audio can be timed word by word exactly at the model's own boundaries (no recognizer afterwards). The hard
part is the mapping: the model's tokens are phonemes (Piper) or normalised characters (MMS) of the whole
sentence, and they do not split where the text's words do. espeak-ng says "of the" as one word ("ʌvðə"),
"$3.50" as five, and links words ("weather is" → "wˈɛðɚɹ ɪz").

So each word is first said alone (its expected sounding tokens), and those expectations, one after the
other with a word break between them, are matched against the sentence's sounding tokens and word breaks
(``difflib``'s longest matching blocks, which is near-linear for sequences this alike; the breaks anchor
the match where a word is said differently in context). A matched token belongs to the word it matched; a
run of tokens between two matches belongs, spread evenly, to the words whose expected tokens lie between
the same two matches. Every word then spans from its first sounding token to its last (and the blank after it, where
the model puts one), so pauses and punctuation between words belong to no word.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from difflib import SequenceMatcher

import numpy as np
import numpy.typing as npt

from inference.backends.base import WordSpan

__all__ = ["BREAK", "align_words"]

#: A word break in an expected token sequence (a word that is said as several: "42" → "forty two").
BREAK = -1


def align_words(
    words: Sequence[str],
    expected: Sequence[Sequence[int]],
    jobs: Sequence[npt.NDArray[np.int64]],
    silent: Collection[int],
    blanks: Collection[int] = (),
    breaks: Collection[int] = (),
) -> list[tuple[WordSpan, ...]]:
    """The words of each job (``WordSpan`` token indices into that job's ids), in order.

    ``words`` are the text's words as written and ``expected`` the sounding token ids of each said alone
    (``BREAK`` between the words it is said as); ``jobs`` the token ids the text was prepared into (one
    array per job, in order); ``silent`` the ids that make no sound of their own (padding, pauses,
    punctuation, stress marks); ``blanks`` the ids a model puts between sounds (a word's span takes the one
    after its last sound); ``breaks`` the ids that separate words. Each word goes to the job its first
    sound is in.
    """
    out: list[list[WordSpan]] = [[] for _ in jobs]
    if not words or not jobs:
        return [tuple(spans) for spans in out]
    # The sentence's sounding tokens and word breaks (a job's end is one), with where each sound is.
    places: list[tuple[int, int]] = []
    said: list[int] = [BREAK]
    for j, ids in enumerate(jobs):
        for i, token in enumerate(ids.tolist()):
            if token in breaks:
                if said[-1] != BREAK:
                    said.append(BREAK)
            elif token not in silent:
                places.append((j, i))
                said.append(token)
        if said[-1] != BREAK:
            said.append(BREAK)
    owners = [w for w, token in zip(_owners(expected, said), said, strict=True) if token != BREAK]

    # Each word's first and last sounding token (owners never decrease, so they are contiguous).
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for position, word in enumerate(owners):
        first.setdefault(word, position)
        last[word] = position
    at = (0, _first_sound(jobs, silent))  # where a word with no sound of its own is placed
    for w, text in enumerate(words):
        if w not in first:
            out[at[0]].append(WordSpan(text, at[1], at[1]))
            continue
        job, start = places[first[w]]
        end_job, end = places[last[w]]
        end = end + 1 if end_job == job else len(jobs[job])  # (a word cut by a job boundary ends with its job)
        if end < len(jobs[job]) and int(jobs[job][end]) in blanks:
            end += 1
        out[job].append(WordSpan(text, start, end))
        at = (job, end)
    return [tuple(spans) for spans in out]


def _owners(expected: Sequence[Sequence[int]], said: Sequence[int]) -> list[int]:
    """The word each token of ``said`` (sounds and breaks) belongs to (non-decreasing)."""
    words = len(expected)
    if not said:
        return []
    # Each word's expected sounds after a break that belongs to it: a stretch that follows a matched break
    # goes to the word after the break.
    wanted: list[int] = []
    owner_of: list[int] = []
    for w, ids in enumerate(expected):
        if ids:
            wanted.extend((BREAK, *ids))
            owner_of.extend([w] * (len(ids) + 1))
    if wanted:
        wanted.append(BREAK)
        owner_of.append(owner_of[-1])
    else:  # no word says anything alone: spread the sentence's sounds over them evenly
        return [min(words - 1, p * words // len(said)) for p in range(len(said))]
    owners: list[int] = []
    matcher = SequenceMatcher(None, wanted, said, autojunk=False)
    done_a = done_b = 0
    for a, b, size in matcher.get_matching_blocks():
        # The unmatched stretch said[done_b:b] belongs to the words of wanted[done_a:a], spread evenly; with
        # no expected token in between, to the word before it (or, at the start, the one after it).
        gap_a, gap_b = a - done_a, b - done_b
        for k in range(gap_b):
            if gap_a:
                owners.append(owner_of[done_a + k * gap_a // gap_b])
            elif owners:
                owners.append(owners[-1])
            else:
                owners.append(owner_of[min(a, len(owner_of) - 1)])
        owners.extend(owner_of[a : a + size])
        done_a, done_b = a + size, b + size
    return owners


def _first_sound(jobs: Sequence[npt.NDArray[np.int64]], silent: Collection[int]) -> int:
    for i, token in enumerate(jobs[0].tolist()):
        if token not in silent:
            return int(i)
    return 0
