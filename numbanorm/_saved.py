"""`Saved`: what a forward pass keeps for its backward pass."""


class Saved:
    """What a forward pass keeps for its backward pass.

    op, mean, rstd (read-only): the op's name and the statistics used to normalise, shaped by
    the normalised groups and in the input's dtype (mean is None for rms_norm). The rest is
    private: the input (the contiguous view the kernels read), float64 statistics, the weight,
    the geometry and the placement. The record holds a reference to x, as autograd does:
    modifying x in place between forward and backward makes the backward wrong.

    A plain slotted class, not a frozen dataclass: building one took 1.7-2.9 us, as long as a
    whole tiny layer_norm, and a layer builds one per call. mean and rstd are made from the
    float64 statistics on first access (by the backend's host.public): a training step that
    never reads them skips two casts (~1 us).
    """
    __slots__ = ("_op", "_x", "_mean64", "_rstd64", "_weight", "_bias_shape", "_param_dtype",
                 "_geometry", "_shape", "_place", "_stats", "_stat_shape", "_public_shape",
                 "_axis", "_last")

    def __init__(self, op, x, mean64, rstd64, weight, bias, geometry, shape, place,
                 stat_shape, public_shape=None):
        self._op = op
        self._x = x
        self._mean64 = mean64
        self._rstd64 = rstd64
        self._weight = weight
        self._bias_shape = None if bias is None else tuple(bias.shape)  # None: no bias
        # the gradients' dtype: the parameters' (x's, or float32 for 16-bit x)
        self._param_dtype = (weight if weight is not None else bias if bias is not None
                             else x).dtype
        self._geometry = geometry
        self._shape = shape
        self._place = place
        self._stats = None  # (mean, rstd) once asked for
        self._stat_shape = stat_shape  # the statistics' own shape
        self._public_shape = public_shape  # a larger shape they are broadcast to, or None
        self._axis = 1  # the channel axis of x's public shape (the channel ops' channel_axis)
        self._last = None  # a numbanorm._layout.ChannelsLast where x was read channels-last

    @property
    def op(self):
        return self._op

    @property
    def mean(self):
        return self._public_stats()[0]

    @property
    def rstd(self):
        return self._public_stats()[1]

    def _public_stats(self):
        stats = self._stats
        if stats is None:
            place = self._place
            public = place.host.public
            dtype = self._x.dtype
            centered = self._geometry[-1] if self._geometry[0] in ("rows", "add") else True
            stats = tuple(
                None if s is None else place.stat(public(s, dtype, self._stat_shape,
                                                         self._public_shape))
                for s in (self._mean64 if centered else None, self._rstd64))
            self._stats = stats
        return stats

    def __repr__(self):
        return f"Saved(op={self._op!r}, mean={self.mean!r}, rstd={self.rstd!r})"
