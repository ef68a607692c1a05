"""`Saved`: what a forward pass keeps for its backward pass."""


class Saved:
    """What a deep-learning forward (``*_forward``) keeps for its backward.

    Built by the forward functions, not by users. The record holds a reference to x, as
    autograd does: modifying x in place between forward and backward makes the backward
    wrong.

    Attributes
    ----------
    op : str
        The op's name ('layer_norm', 'batch_norm', ...).
    mean, rstd : ndarray or None
        The statistics x was normalised with, in x's dtype (float32 for 16-bit x), shaped by
        the normalised groups: (C,) for batch_norm, (N, num_groups) for group_norm, (N, C) for
        instance_norm, x's leading shape for layer_norm and rms_norm. mean is None for
        rms_norm; both are None for local_response_norm.

    See Also
    --------
    layer_norm_forward, batch_norm_forward

    Examples
    --------
    >>> y, saved = nbn.layer_norm_forward(np.array([[1.0, 2.0, 3.0]]), 3)
    >>> saved.op, saved.mean, saved.rstd.round(4)
    ('layer_norm', array([2.]), array([1.2247]))
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
