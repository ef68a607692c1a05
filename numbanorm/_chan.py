"""Chan's merge of two (count, mean, M2) triples: the one formula every reduction of numbanorm
ends in, on the CPU and on the GPU. Plain Python here; cpu/_moments compiles it with njit and
cuda/_reduce as a CUDA device function, so both backends merge with the same arithmetic."""


def chan_merge(n, mean, m2, nb, mb, m2b):
    """Merge the triple (nb, mb, m2b) into (n, mean, m2); either may be empty."""
    if nb == 0:
        return n, mean, m2
    if n == 0:
        return nb, mb, m2b
    nn = n + nb
    delta = mb - mean
    return nn, mean + delta * (nb / nn), m2 + m2b + delta * delta * (n * nb / nn)
