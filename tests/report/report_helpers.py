"""Helpers of the report tests: a hostile name, an analysis document measured on a real model (the
schema ``deepshrink analyze`` writes), and the checks every page must pass."""

from __future__ import annotations

import base64
import time
from html.parser import HTMLParser

import numpy as np
import torch

from deepshrink.coding import Coder
from deepshrink.prune import prunable_layers
from deepshrink.report.html import CSP
from deepshrink.share.kmeans import kmeans_1d
from deepshrink.storage.tensor_codec import TensorCoding, encode_tensor
from deepshrink.train import evaluate

HOSTILE = '<script>alert(1)</script> "onload=alert(2) & <img src=x onerror=alert(3)>'
"""A name that would run script if a page pasted it into its markup unescaped."""


def coded_bytes(name: str, w: np.ndarray) -> int:
    """The layer's real coded bytes: the weights stored as a .dsz stores them (Huffman)."""
    return encode_tensor(name, np.ascontiguousarray(w, dtype=np.float32), TensorCoding(coder=Coder.HUFFMAN)).nbytes


def _rank90(s: np.ndarray) -> int:
    e = np.cumsum(s.astype(np.float64) ** 2)
    return int(np.searchsorted(e / e[-1], 0.9) + 1)


def analysis_doc(model: torch.nn.Module, val: tuple[torch.Tensor, torch.Tensor], *, model_name: str,
                 data_name: str, extra_layer_name: str | None = None) -> dict:
    """The analysis document of ``model``, measured on ``val``: each layer changed alone (magnitude
    pruning, k-means sharing, uniform quantisation, truncated SVD), its coded bytes measured by
    encoding it; noise robustness; the empirical diagonal Fisher; spectra before and after
    pruning to 90%. ``extra_layer_name`` renames the first layer in the document (a hostile name
    that torch.fx could not trace in a real model)."""
    start = time.perf_counter()
    model = model.eval()
    base = evaluate(model, val)
    mods = prunable_layers(model)
    shown = {n: (extra_layer_name if extra_layer_name and i == 0 else n) for i, n in enumerate(mods)}
    doc: dict = {"model": model_name, "data": data_name, "metric": "accuracy", "baseline": {"val": base},
                 "layers": [], "curves": [], "noise": [], "fisher": [], "spectra": []}
    x, y = val
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y, reduction="sum").backward()  # empirical Fisher, one pass
    rng = np.random.default_rng(0)
    for name, m in mods.items():
        w0 = m.weight.detach().clone()
        w = w0.numpy().astype(np.float64)
        key = f"{name}.weight"

        def score(new: np.ndarray) -> float:
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(new.astype(np.float32)))
                v = evaluate(model, val)
                m.weight.copy_(w0)
            return v

        def curve(tech: str, setting: str, variants: list[tuple[float, np.ndarray, int]]) -> None:
            doc["curves"].append({"layer": shown[name], "technique": tech, "setting": setting,
                                  "points": [{"value": v, "bytes": b, "val": score(new)} for v, new, b in variants]})

        def pruned(s: float) -> np.ndarray:
            return np.where(np.abs(w) > np.quantile(np.abs(w), s), w, 0.0)

        doc["layers"].append({"name": shown[name], "kind": "linear", "shape": list(w.shape), "params": int(w.size),
                              "dense_bytes": int(w.size * 4)})
        curve("prune", "sparsity", [(s, p, coded_bytes(key, p)) for s in (0.5, 0.8, 0.9, 0.95, 0.98)
                                    for p in [pruned(s)]])
        shared = []
        for bits in (1, 2, 3, 4):
            c, lab = kmeans_1d(w, 2 ** bits)
            q = c[lab].reshape(w.shape).astype(np.float64)
            shared.append((bits, q, coded_bytes(key, q)))
        curve("share", "bits", shared)
        quant = []
        for bits in (2, 3, 4, 6):
            step = np.abs(w).max() / (2 ** (bits - 1) - 1)
            q = np.round(w / step) * step
            quant.append((bits, q, coded_bytes(key, q)))
        curve("quantize", "bits", quant)
        u, s, vt = (t.double().numpy() for t in torch.linalg.svd(w0, full_matrices=False))
        curve("svd", "rank", [(r, (u[:, :r] * s[:r]) @ vt[:r], 4 * r * sum(w.shape))
                              for r in sorted({max(1, len(s) * f // 100) for f in (2, 5, 10, 25, 50)})])
        noise = [{"scale": sc, "val": score(w + rng.standard_normal(w.shape) * sc * w.std())}
                 for sc in (0.05, 0.1, 0.2, 0.5, 1.0)]
        doc["noise"].append({"layer": shown[name], "points": noise})
        g2 = float((m.weight.grad.double() ** 2).sum()) / len(y)
        doc["fisher"].append({"layer": shown[name], "trace": g2, "per_weight": g2 / w.size})
        sp = torch.linalg.svdvals(torch.from_numpy(pruned(0.9).astype(np.float32))).double().numpy()
        doc["spectra"].append({"layer": shown[name], "sparsity": 0.9, "dense": s.tolist(), "pruned": sp.tolist(),
                               "rank90_dense": _rank90(s), "rank90_pruned": _rank90(sp)})
    model.zero_grad()
    doc["dense_bytes"] = sum(x["dense_bytes"] for x in doc["layers"])
    doc["seconds"] = time.perf_counter() - start
    return doc


ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4", "p", "dl", "dt", "dd",
                "table", "caption", "thead", "tbody", "tr", "th", "td", "figure", "img", "figcaption", "footer"}


class _Parsed(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend((tag, k, v) for k, v in attrs)

    def handle_data(self, data):
        self.text.append(data)


def check_page(page: str) -> _Parsed:
    """Assert the page is one self-contained, script-free document, and return it parsed:
    no ``<script`` anywhere, only the builder's tags, no event-handler attributes, no links,
    the Content-Security-Policy, and every image a PNG data URI."""
    assert "<script" not in page.lower()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    parsed = _Parsed()
    parsed.feed(page)
    parsed.close()
    assert set(parsed.tags) <= ALLOWED_TAGS, set(parsed.tags) - ALLOWED_TAGS
    assert not [a for a in parsed.attrs if a[1].startswith("on") or a[1] in ("href", "srcset", "action")]
    csp = [v for t, k, v in parsed.attrs if t == "meta" and k == "content" and v == CSP]
    assert csp and ('meta', 'http-equiv', 'Content-Security-Policy') in parsed.attrs
    srcs = [v for t, k, v in parsed.attrs if k == "src"]
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    parsed.images = len(srcs)
    parsed.joined = "".join(parsed.text)
    return parsed
