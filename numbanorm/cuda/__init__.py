"""CUDA kernels (numba.cuda), twins of numbanorm.cpu; imported only when data is on a GPU."""
