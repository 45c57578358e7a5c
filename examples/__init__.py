"""Runnable examples: short scripts to read, run (``python examples/<name>.py``) and copy from.

Distributions ship this directory as the subpackage ``sparseopt.examples`` so that
``python -m sparseopt demo`` (``demo.py``) works from any install; nothing here is public API.
"""
