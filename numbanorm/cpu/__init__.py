"""Numba CPU kernels: one module per reduction geometry (rows, channels)."""
