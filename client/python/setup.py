"""Builds tenantcache._native from the repository's own client sources
(client/src), so that `pip install ./client/python` needs no system library.

The C++ flags mirror tc_common in the top-level CMakeLists.txt: C++20, xxHash inlined
(header only, Debian's libxxhash-dev), and every symbol hidden but the
module's init function, so the module never clashes with a libtenantcache.so
loaded in the same process.
"""

import glob
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class ParallelBuildExt(build_ext):
    """Compiles the extension's eight sources in parallel unless told otherwise
    (pip gives no way to pass --parallel)."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1


here = os.path.dirname(os.path.abspath(__file__))
client = os.path.normpath(os.path.join(here, ".."))
# Relative paths: setuptools refuses absolute ones, and pip builds in place.
os.chdir(here)
library_sources = sorted(os.path.relpath(p) for p in glob.glob(os.path.join(client, "src", "*.cc")))
if not library_sources:
    raise SystemExit("tenantcache: %s/src holds no client sources; build from a checkout of the repository" % client)

# Package layout here rather than in pyproject.toml's [tool.setuptools],
# which Debian's setuptools still calls beta and warns about.
setup(
    packages=["tenantcache"],
    package_data={"tenantcache": ["py.typed", "*.pyi"]},
    # Only those files: the extension's sources (some outside this directory)
    # are not package data.
    include_package_data=False,
    cmdclass={"build_ext": ParallelBuildExt},
    ext_modules=[
        Extension(
            "tenantcache._native",
            sources=[os.path.join("src", "native.cc")] + library_sources,
            include_dirs=[os.path.join("..", "include"), os.path.join("..", "src")],
            language="c++",
            extra_compile_args=["-std=c++20", "-fvisibility=hidden", "-fvisibility-inlines-hidden", "-O2",
                                "-Wno-missing-field-initializers"],
            extra_link_args=["-pthread"],
        )
    ],
)
