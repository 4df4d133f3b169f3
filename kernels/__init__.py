"""Triton kernels of gotr1, installed as ``gotr1.kernels``."""
