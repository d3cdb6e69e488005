"""videogpa.kernels: Triton kernels with plain-PyTorch references (a leaf: torch and triton only)."""
