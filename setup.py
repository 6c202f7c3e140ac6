"""Build configuration of the optional C extension (everything else is in pyproject.toml).

``deepshrink.coding._fastcode`` holds compiled decoders for Huffman and ANS streams. It is
optional: without a C compiler the build skips it and deepshrink uses its numpy decoders.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "deepshrink.coding._fastcode",
            ["src/deepshrink/coding/_fastcode.c"],
            extra_compile_args=["-O3"] if __import__("sys").platform != "win32" else [],
            optional=True,
        )
    ]
)
