"""Sphinx configuration of numbanorm's documentation (see docs/README.md to build it)."""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))
import numbanorm  # noqa: E402

project = "numbanorm"
author = "the numbanorm developers"
copyright = "2026, the numbanorm developers"
version = release = numbanorm.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "README.md", "generated/*.md"]
autosummary_generate = True
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_validation_checks = set()  # tests/test_docs.py validates the docstrings
myst_heading_anchors = 3
default_role = "py:obj"
nitpicky = False

html_theme = "pydata_sphinx_theme"
html_title = f"numbanorm {release}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
