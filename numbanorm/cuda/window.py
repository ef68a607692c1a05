"""Window geometry on CUDA: local_response_norm (see numbanorm.cpu.window for the formulas and
PyTorch's window). One thread per element of the (N, C, S) array, consecutive threads along S
(coalesced reads of each channel row). Each thread sums its own window of `size` squares
directly: size loads per value, from cache after the first, and no running add/subtract sum
to cancel; the GPU is bound by memory here, not by the additions. All arithmetic in float64,
rounded once to the output's dtype.

Backward in two launches: backward_terms writes t = dy*x*d^(-beta - 1) (float64 scratch), then
backward sums t over each value's mirrored window [c - (size - 1)//2, c + size//2]:

    dx = dy*d^(-beta) - (2*alpha*beta/size)*x*(sum of t)
"""
from numba import cuda

from ._reduce import THREADS, ld


@cuda.jit(device=True)
def _divisor(x3, n, c, s, size, alpha, k):
    """k + alpha*(sum of x^2 over c's window)/size, PyTorch's window and order."""
    C = x3.shape[1]
    acc = 0.0
    for j in range(max(0, c - size // 2), min(C, c + (size - 1) // 2 + 1)):
        v = ld(x3[n, j, s])
        acc += v * v
    return acc / size * alpha + k


@cuda.jit(device=True, inline=True)
def _element(i, C, S):
    """(n, c, s) of flat index i of an (N, C, S) array."""
    return i // (S * C), (i // S) % C, i % S


@cuda.jit
def forward(x3, size, alpha, beta, k, y3):
    N, C, S = x3.shape
    for i in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, N * C * S,
                   cuda.gridDim.x * THREADS):
        n, c, s = _element(i, C, S)
        d = _divisor(x3, n, c, s, size, alpha, k)
        y3[n, c, s] = ld(x3[n, c, s]) * d ** (-beta)


@cuda.jit
def backward_terms(dy3, x3, size, alpha, beta, k, t3):
    N, C, S = x3.shape
    for i in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, N * C * S,
                   cuda.gridDim.x * THREADS):
        n, c, s = _element(i, C, S)
        d = _divisor(x3, n, c, s, size, alpha, k)
        t3[n, c, s] = ld(dy3[n, c, s]) * ld(x3[n, c, s]) * d ** (-beta - 1.0)


@cuda.jit
def backward(dy3, x3, t3, size, alpha, beta, k, dx3):
    N, C, S = x3.shape
    coef = 2.0 * alpha * beta / size
    for i in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, N * C * S,
                   cuda.gridDim.x * THREADS):
        n, c, s = _element(i, C, S)
        d = _divisor(x3, n, c, s, size, alpha, k)
        acc = 0.0
        for j in range(max(0, c - (size - 1) // 2), min(C, c + size // 2 + 1)):
            acc += t3[n, j, s]
        dx3[n, c, s] = ld(dy3[n, c, s]) * d ** (-beta) - coef * ld(x3[n, c, s]) * acc
