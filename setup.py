"""Only the C extension lives here; everything else is declared in setup.cfg.

``streamguard_ml._fastgraph`` (native/fastgraph.c) builds program graphs ~9x faster
than graphs.py, against the tree-sitter runtime vendored in native/tree-sitter (the
same release as the ``tree-sitter`` wheel, so both parse identically).  The extension
is optional: where no C compiler is found the package installs without it and
graphs.py builds every graph (``streamguard_ml.fastgraph.available()`` says which).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "streamguard_ml._fastgraph",
            sources=["native/fastgraph.c", "native/tree-sitter/src/lib.c"],
            include_dirs=["native/tree-sitter/include", "native/tree-sitter/src"],
            extra_compile_args=["-O2", "-std=gnu11", "-fvisibility=hidden", "-Wno-unused-parameter"],
            define_macros=[("_POSIX_C_SOURCE", "200112L"), ("_DEFAULT_SOURCE", None)],
            optional=True,
        )
    ]
)
