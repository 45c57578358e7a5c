"""Cython kernels. Private: call them through the optimizer classes, which validate input."""
