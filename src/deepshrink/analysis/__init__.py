"""Analysis of a trained network before compressing it: per-layer sensitivity to each technique
(with the layer's real coded bytes), weight robustness (noise, Fisher information), singular-value
spectra before and after pruning, and the automatic per-layer budget built on them."""
