"""anychip scan: find CUDA lock-in in a PyTorch codebase and say how to port each piece."""
