"""Token embeddings across checkpoints in one PCA plane (seed 001's ``visualize_embd``).

The PCA is fitted once, on the newest checkpoint's embedding matrix (``fit="last"``) or on
all checkpoints together (``fit="joint"``: the mean and covariance accumulated checkpoint by
checkpoint), and every checkpoint is projected into that same plane, so a token's path across
checkpoints is drift, not a change of axes. Each axis's sign is fixed (its largest-magnitude
loading is positive): an eigen-solver that returns ``-v`` instead of ``v`` gives the same
picture. One checkpoint's embedding matrix is in memory at a time; the projections of every
token are kept (``[checkpoints, vocab, 2]`` floats).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lminspect.compare.checkpoints import Checkpoint
from lminspect.errors import UserError

EMBED = "embed.tokens.weight"


@dataclass
class EmbeddingPCA:
    """The fitted plane and every checkpoint's projection."""

    steps: list[int]
    tokens_seen: list[int | None]
    mean: np.ndarray  # [d]
    components: np.ndarray  # [d, k], sign-fixed columns
    explained: list[float]  # fraction of the variance on each axis
    fit: str
    proj: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 2), np.float32))  # [checkpoints, vocab, k]


def fix_signs(components: np.ndarray) -> np.ndarray:
    """Flip each column so its largest-magnitude entry is positive (a sign convention)."""
    c = np.array(components, dtype=np.float64, copy=True)
    idx = np.abs(c).argmax(axis=0)
    signs = np.sign(c[idx, np.arange(c.shape[1])])
    signs[signs == 0] = 1
    return c * signs


def _embedding(ck: Checkpoint, shape: tuple[int, ...] | None) -> np.ndarray:
    from lminspect.weights import open_store

    store = open_store(ck.path)
    if EMBED not in store:
        raise UserError(f"{ck.path}: no token embedding ({EMBED})")
    x = np.asarray(store[EMBED], dtype=np.float32)
    if shape is not None and x.shape != shape:
        raise UserError(f"{ck.path}: embedding is {x.shape[0]}x{x.shape[1]}, other checkpoints "
                        f"{shape[0]}x{shape[1]}: one PCA plane needs one shape (was the model grown?)")
    return x


def fit_pca(cks: Sequence[Checkpoint], fit: str = "last", k: int = 2) -> EmbeddingPCA:
    """Fit the plane (``last`` or ``joint``), then project every checkpoint into it."""
    if fit not in ("last", "joint"):
        raise UserError(f"--fit {fit!r}: choose last or joint")
    shape = _embedding(cks[-1], None).shape
    d = shape[1]
    s1 = np.zeros(d)
    s2 = np.zeros((d, d))
    n = 0
    for ck in (cks if fit == "joint" else cks[-1:]):
        x = _embedding(ck, shape).astype(np.float64)
        s1 += x.sum(0)
        s2 += x.T @ x
        n += x.shape[0]
        del x
    mean = s1 / n
    cov = s2 / n - np.outer(mean, mean)
    evals, evecs = np.linalg.eigh(cov)
    k = min(k, d)
    comps = fix_signs(evecs[:, ::-1][:, :k])
    total = float(np.clip(evals, 0, None).sum()) or 1.0
    explained = [float(max(e, 0.0) / total) for e in evals[::-1][:k]]
    pca = EmbeddingPCA([c.step for c in cks], [c.tokens for c in cks], mean, comps, explained, fit)
    pca.proj = np.stack([project(_embedding(ck, shape), pca) for ck in cks])
    return pca


def project(x: np.ndarray, pca: EmbeddingPCA) -> np.ndarray:
    """Rows of ``x`` in the plane: ``(x - mean) @ components``, float32 ``[rows, k]``."""
    return ((np.asarray(x, np.float64) - pca.mean) @ pca.components).astype(np.float32)


def token_ids(tokenizer: Any, words: Sequence[str]) -> list[tuple[str, int]]:
    """``(label, id)`` per word: the word as one token, else with a leading space (BPE's ``Ġthe``);
    a word with its own outer spaces (``" cat"``, typed in quotes) is taken exactly as written."""
    out = []
    for w in words:
        ids = None
        tries = (w,) if w != w.strip() else (w, " " + w)
        lengths = []
        for text in tries:
            enc = tokenizer.encode(text, add_special_tokens=False)
            lengths.append(f"{text!r}: {len(enc)} tokens")
            if len(enc) == 1:
                ids = enc
                break
        if ids is None:
            raise UserError(f"--token-labels: {w!r} is not one token of this tokenizer ({', '.join(lengths)}); "
                            "pick a word that is")
        out.append((w, ids[0]))
    return out


def most_moved(pca: EmbeddingPCA, n: int = 6) -> list[int]:
    """The ids of the ``n`` tokens that moved furthest in the plane from first to last checkpoint."""
    moved = np.linalg.norm(pca.proj[-1] - pca.proj[0], axis=1)
    return [int(i) for i in np.argsort(-moved, kind="stable")[:n]]


def labelled_pca(cks: Sequence[Checkpoint], words: Sequence[str] = (), fit: str = "last",
                 n: int = 6) -> tuple[EmbeddingPCA, list[tuple[str, int]]]:
    """A run's embeddings in one PCA plane and the tokens to label: ``words`` (each one token of
    the newest checkpoint's tokenizer), else the ``n`` that moved most (``compare --embeddings``
    and the TUI's view)."""
    from lminspect.models.open import open_model

    tok = open_model(cks[-1].path, lazy=True).tokenizer
    labelled = token_ids(tok, words)
    pca = fit_pca(cks, fit)
    if not labelled:
        labelled = [(tok.decode([i]).strip() or repr(tok.decode([i])), i) for i in most_moved(pca, n)]
    return pca, labelled


def embedding_figure(pca: EmbeddingPCA, labelled: Sequence[tuple[str, int]], *, cloud: int = 400,
                     width: int = 100, height: int = 30, color: bool = False) -> str:
    """The plane as text: a sample of tokens at the newest checkpoint (dots) and each labelled
    token's path across checkpoints, ending at its label."""
    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("pro" if color else "clear")
    last = pca.proj[-1]
    step = max(1, last.shape[0] // cloud)
    plt.scatter(last[::step, 0].tolist(), last[::step, 1].tolist(), marker="dot",
                label=f"tokens at step {pca.steps[-1]}")
    for label, i in labelled:
        path = pca.proj[:, i, :]
        plt.plot(path[:, 0].tolist(), path[:, 1].tolist(), marker="braille")
        plt.text(label, float(path[-1, 0]), float(path[-1, 1]))
    ev = ", ".join(f"{e:.0%}" for e in pca.explained)
    plt.title(f"token embeddings, PCA ({pca.fit} fit; variance {ev}), steps {pca.steps[0]}-{pca.steps[-1]}")
    plt.xlabel("PC1")
    text = plt.build()
    plt.clear_figure()
    return text if color else re.sub(r"\x1b\[[0-9;]*m", "", text)
