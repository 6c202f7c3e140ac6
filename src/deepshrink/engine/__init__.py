"""The C engine: a network run from its compressed weights, as generated C99 or from Python.

* ``kernels.c`` / ``kernels.h``: every layer kernel, decoding the packed weights on the fly
  (one definition, copied into each exported ``model.c`` and compiled for :mod:`.native`);
* :mod:`.layout`: typed compressed tensors as the packed layouts the kernels read;
* :mod:`.native`: the kernels compiled into a shared library and wrapped for numpy;
* :mod:`.codegen`: graph + typed tensors -> ``model.c``, ``model.h``, ``main.c``, ``Makefile``;
* :mod:`.export`: ``deepshrink export model.dsz -o DIR --format c``, checked against PyTorch.
"""
