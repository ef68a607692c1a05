"""A reduction over any set of axes as one of the two kernel geometries, without moving data
where the memory order allows (DESIGN: "any axis is still one of the two geometries").

Size-1 axes are ignored and adjacent axes of the same kind (reduced or kept) merged; the
remaining runs, in memory order, decide:

    kept, reduced           rows      (R, L)      statistics per row         (rows kernels)
    reduced, kept           columns   (1, N, M)   statistics per column      (column kernels)
    kept, reduced, kept     columns   (A, N, M)   A independent column problems
    reduced, kept, reduced  slabs     (N, C, S)   statistics per channel c   (rows kernels on
                                                  (N*C, S), merged over N)
    all reduced             rows      (1, size)

C-contiguous arrays are read as they are, Fortran-ordered ones through their transpose (the
same memory, axes reversed). Anything else (interleaved runs such as reduced, kept, reduced,
kept; strided views) is copied once, with the kept axes first and the reduced axes last, into
a C-contiguous array read as rows.
"""
import math

import numpy as np


class Layout:
    """How to read x for a reduction over `axes`.

    kind: "rows", "columns" or "slabs"; dims: (R, L), (A, N, M) or (N, C, S); view(a): an
    array laid out like x (x itself, y or dy) as the kernels' C-contiguous array of dims, or
    None where it is not (out= of another layout); stats(v): a statistic in slot order (R,),
    (A*M,) or (C,) as the public shape `shape` (x's shape without the reduced axes, in x's
    order); slots(s): the inverse; copies: whether x is copied once to be read.
    """

    __slots__ = ("kind", "dims", "shape", "keepdims_shape", "copies", "_perm", "_transposed",
                 "_slot_shape", "_x_shape")

    def __init__(self, kind, dims, shape, keepdims_shape, copies, perm, transposed, slot_shape,
                 x_shape):
        self.kind, self.dims, self.shape, self.keepdims_shape = kind, dims, shape, keepdims_shape
        self.copies, self._perm, self._transposed = copies, perm, transposed
        self._slot_shape, self._x_shape = slot_shape, x_shape

    @property
    def perm(self):
        """The axes order of the one copy (kept axes, then reduced) when x is copied to be
        read, else None."""
        return self._perm

    @property
    def count(self):
        """Values per slot (before any NaN is left out)."""
        if self.kind == "rows":
            return self.dims[1]
        if self.kind == "columns":
            return self.dims[1]
        return self.dims[0] * self.dims[2]

    def read(self, x):
        """x as the kernels' C-contiguous array of dims (a copy only when `copies`)."""
        if self._perm is not None:
            x = np.ascontiguousarray(x.transpose(self._perm))
        elif self._transposed:
            x = x.T
        else:
            x = np.ascontiguousarray(x)
        return x.reshape(self.dims)

    def view(self, a):
        """a (x's shape) as the kernels' array when its memory is laid out as they read it
        (so a kernel may write into it), else None."""
        if self._perm is not None:
            return None
        if self._transposed:
            a = a.T
        if not a.flags.c_contiguous:
            return None
        return a.reshape(self.dims)

    def empty(self, dtype):
        """A fresh array the kernels can write, and the same memory as an array of x's
        shape: (kernel array, x-shaped array)."""
        if self._perm is not None:
            perm_shape = tuple(self._x_shape[a] for a in self._perm)
            buf = np.empty(perm_shape, dtype)
            return buf.reshape(self.dims), buf.transpose(np.argsort(self._perm))
        if self._transposed:
            buf = np.empty(self._x_shape[::-1], dtype)
            return buf.reshape(self.dims), buf.T
        buf = np.empty(self._x_shape, dtype)
        return buf.reshape(self.dims), buf

    def stats(self, v):
        """A per-slot statistic (flat, slot order) in the public shape."""
        v = v.reshape(self._slot_shape)
        if self._transposed:
            v = v.T
        return v.reshape(self.shape)

    def keep(self, v):
        """A per-slot statistic in the keepdims shape (broadcasts against x)."""
        return self.stats(v).reshape(self.keepdims_shape)

    def slots(self, s):
        """A statistic of the public shape in slot order (flat, contiguous)."""
        s = np.asarray(s).reshape(self._slot_shape[::-1] if self._transposed else
                                  self._slot_shape)
        if self._transposed:
            s = s.T
        return np.ascontiguousarray(s).reshape(-1)


class DataView:
    """x as one backend reads it for a reduction over `axes`: the Layout, and xk, the array
    its kernels read (x itself, a view of it, or its one copy). The backends' data functions
    (data_moments, data_affine, data_norms) take it; statistics come back per slot, and
    stats(v) / keep(v) give them x's shape without the reduced axes, or with them as 1."""

    __slots__ = ("x", "axes", "lay", "xk")

    def __init__(self, x, axes, lay, xk):
        self.x, self.axes, self.lay, self.xk = x, axes, lay, xk

    @property
    def count(self):
        return self.lay.count

    def stats(self, v):
        return self.lay.stats(v)

    def keep(self, v):
        return self.lay.keep(v)


def runs(shape, reduced):
    """[(is_reduced, size)] of the axes in order, size-1 axes dropped, like neighbours merged."""
    out = []
    for a, n in enumerate(shape):
        if n == 1:
            continue
        r = a in reduced
        if out and out[-1][0] == r:
            out[-1][1] *= n
        else:
            out.append([r, n])
    return out


def _plan(shape, reduced):
    """(kind, dims) for a C-contiguous array of `shape` reduced over `reduced`, or None."""
    rs = runs(shape, reduced)
    kinds = [r for r, _ in rs]
    sizes = [n for _, n in rs]
    size = math.prod(shape)
    kept = math.prod(n for a, n in enumerate(shape) if a not in reduced)
    if kinds in ([], [True], [False], [False, True]):
        return "rows", (kept, size // kept if kept else math.prod(shape[a] for a in reduced))
    if kinds == [True, False]:
        return "columns", (1, sizes[0], sizes[1])
    if kinds == [False, True, False]:
        return "columns", tuple(sizes)
    if kinds == [True, False, True]:
        return "slabs", tuple(sizes)
    return None


def layout(x, axes):
    """The Layout of a reduction of ndarray x over the sorted tuple of axes."""
    return layout_of(x.shape, axes, x.flags.c_contiguous, x.flags.f_contiguous)


def layout_of(shape, axes, c_contiguous=True, f_contiguous=False):
    """The Layout of a reduction over the sorted tuple of axes of an array of `shape` whose
    memory is C-contiguous, Fortran-contiguous or neither (the GPU path: always C)."""
    shape = tuple(shape)
    ndim = len(shape)
    reduced = set(axes)
    kept_axes = [a for a in range(ndim) if a not in reduced]
    out_shape = tuple(shape[a] for a in kept_axes)
    keep = tuple(1 if a in reduced else n for a, n in enumerate(shape))
    slot_shape = out_shape
    if c_contiguous or not f_contiguous:
        plan = _plan(shape, reduced)
        if plan is not None:
            return Layout(plan[0], _dims(plan, shape, reduced), out_shape, keep,
                          not c_contiguous, None, False, slot_shape, shape)
    else:  # Fortran order: the transpose is C-contiguous, its axes reversed
        rev = {ndim - 1 - a for a in reduced}
        plan = _plan(shape[::-1], rev)
        if plan is not None:
            return Layout(plan[0], _dims(plan, shape[::-1], rev), out_shape, keep, False, None,
                          True, out_shape[::-1], shape)
    perm = tuple(kept_axes) + tuple(sorted(reduced))
    kept = math.prod(out_shape)
    L = math.prod(shape[a] for a in reduced)
    return Layout("rows", (kept, L), out_shape, keep, True, perm, False, slot_shape, shape)


def _dims(plan, shape, reduced):
    kind, dims = plan
    if kind == "columns" and len(dims) == 2:
        return (1,) + dims
    return dims


class ChannelsLast:
    """An (N, C, *spatial) op computed on channels-last memory: arrays of the public shape
    `shape` (channel axis `axis`: 1, or the last) whose memory is (N, *spatial, C)
    C-contiguous, read by the kernels as (N, S, C) without a copy (numbanorm.cpu.channels_last;
    batch_norm as the (N*S, C) columns of numbanorm.cpu.channels). GPU arrays come here only
    with the channel axis last, where the public and the kernel arrays are one reshape apart."""

    __slots__ = ("shape", "axis", "kernel_shape", "_last_shape")

    def __init__(self, shape, axis):
        self.shape = tuple(shape)
        self.axis = axis
        N, C = shape[0], shape[axis]
        spatial = [n for a, n in enumerate(shape) if a not in (0, axis)]
        self._last_shape = (N, *spatial, C)
        self.kernel_shape = (N, math.prod(spatial), C)

    def _last(self, a):
        return a if self.axis == len(self.shape) - 1 else np.moveaxis(a, self.axis, -1)

    def view(self, a):
        """a (public shape) as the kernels' (N, S, C) array when its memory is channels-last,
        else None."""
        if not isinstance(a, np.ndarray):  # a GPU array: C-contiguous, channels last
            return a.reshape(self.kernel_shape)
        v = self._last(a)
        return v.reshape(self.kernel_shape) if v.flags.c_contiguous else None

    def read(self, a):
        """a as the kernels' (N, S, C) array: a view, or one copy when a is laid out otherwise
        (a dy of another layout than x's)."""
        k = self.view(a)
        return k if k is not None else np.ascontiguousarray(self._last(a)).reshape(
            self.kernel_shape)

    def public(self, k):
        """A kernel array (N, S, C), or (N*S, C), as an array of the public shape (a view)."""
        v = k.reshape(self._last_shape)
        if not isinstance(v, np.ndarray) or self.axis == len(self.shape) - 1:
            return v
        return np.moveaxis(v, -1, self.axis)


def channels_last(x, axis):
    """Whether NumPy x, an (N, C, *spatial) array with its channels on `axis`, is to be
    computed channels-last: its memory is (N, *spatial, C) C-contiguous, with at least one
    spatial axis and not C-contiguous as a whole in the public order of axis 1 (that is the
    channels-first kernels' own layout: (N, C, 1, 1) images, say)."""
    if x.ndim < 3 or not x.size:
        return False
    first = x if axis == 1 else np.moveaxis(x, axis, 1)
    if first.flags.c_contiguous:
        return False
    return (x if axis == x.ndim - 1 else np.moveaxis(x, axis, -1)).flags.c_contiguous
