"""Transform coding of weights in the DCT domain (CNNpack) and hashed weight sharing
(HashedNets, FreshNets).

The stage classes live in :mod:`deepshrink.transform.stage` (imported by the stage registry),
the encodings in :mod:`deepshrink.transform.encoding` (imported by the encoding registry).
"""
