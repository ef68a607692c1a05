"""Docstring sections that many public names share (numpydoc), put in place by `fill`.

A docstring line holding only ``%(name)s`` becomes the snippet `name`, every line of it
indented as that placeholder was (snippets may hold placeholders too). The examples in the
docstrings assume ``import numpy as np`` and ``import numbanorm as nbn`` (tests/test_docs.py
runs them so).
"""
import re

SNIPPETS = {
    "device": """\
device : {None, 'cpu', 'cuda'}, optional
    Where the call runs. None: where the input lives (NumPy on the CPU; a GPU array, such
    as CuPy's, a PyTorch CUDA tensor or a Numba device array, on the GPU; a Dask array as
    a lazy graph of CPU kernel calls per block), unless the NUMBANORM_DEVICE environment
    variable says 'cuda'. 'cuda' with NumPy input runs on the GPU and returns NumPy
    arrays.""",
    "out": """\
out : ndarray, optional
    Where y goes: an array of x's shape and dtype (x itself for an in-place result). y is
    returned either way.""",
    "dx_out": """\
dx_out : ndarray, optional
    Where dx goes: an array of dy's shape and dtype that shares no memory with dy or the
    saved input. dx is returned either way.""",
    "saved": """\
saved : Saved
    The record the matching ``*_forward`` call returned.""",
    "channel_axis": """\
channel_axis : {1, -1}, optional
    Where the channels are: 1 (default, PyTorch's ``(N, C, *spatial)``) or -1
    (``(N, *spatial, C)``, as Keras and Flax). Channels-last memory either way round (an
    (N, H, W, C) array, its ``transpose(0, 3, 1, 2)``, a PyTorch ``channels_last`` tensor's
    ``.numpy()``) is computed where it lies, without a copy, and y keeps x's memory
    layout.""",
    "dtypes": """\
The input is float64, float32, float16 or bfloat16 (ml_dtypes); y has its dtype. 16-bit
inputs compute in float32 and take float32 parameters (or their own dtype). Statistics
come from a blocked Welford/Chan reduction merged in float64, whatever the thread count
(bitwise the same results).""",
    "raises": """\
Raises
------
TypeError
    An input of a dtype other than float16, bfloat16, float32 or float64, or an argument
    of the wrong type.
ValueError
    A shape, value, layout or device that does not fit. The message names the argument,
    what was expected and what was given; nothing is written before the check.""",
    "raises_backward": """\
Raises
------
TypeError
    saved is not the record of the matching forward, or dy's dtype is not the forward
    input's.
ValueError
    dy's shape or side (NumPy or GPU) differs from the forward's, or dx_out does not
    fit.""",
    "raises_data_backward": """\
Raises
------
TypeError
    saved is not the record of the matching ``*_forward``.
ValueError
    dy's shape or side (NumPy or GPU) differs from the forward's.""",
    "saved_returns": """\
saved : Saved
    What the backward needs (x is kept by reference, as autograd keeps it: modifying x
    before the backward makes the backward wrong). saved.mean and saved.rstd are the
    statistics used, in x's dtype.""",
}

# -- the layers --------------------------------------------------------------------------------
SNIPPETS.update({
    "layer_device_dtype": """\
device : {None, 'cpu', 'cuda'}, optional
    'cuda' puts the parameters and buffers on the GPU (see `to`): the layer then takes GPU
    input.
dtype : dtype, optional
    The parameters' dtype, float32 by default (as PyTorch's). float32 parameters serve
    float16 and bfloat16 input too; float64 input needs ``dtype=np.float64``.""",
    "channel_params": """\
num_features : int
    C, the number of channels.
eps : float, default 1e-5
momentum : float or None, default 0.1
    The running statistics' update factor; None: their cumulative average over the batches
    seen (num_batches_tracked).""",
    "channel_flags": """\
track_running_stats : bool
    Whether the layer keeps running_mean, running_var and num_batches_tracked, updated in
    training mode and used in eval mode.""",
    "channel_keywords": """\
bias : bool, default True
    Keyword-only: False builds the layer without a bias, as PyTorch's ``bias=False``.
channel_axis : {1, -1}, default 1
    Keyword-only: -1 takes ``(N, *spatial, C)`` input (Keras's and Flax's layout); see
    `batch_norm`.""",
    "layer_attributes": """\
weight, bias : ndarray or None
    The affine parameters (None where absent), NumPy arrays or, after ``to('cuda')``, GPU
    arrays.
grad_weight, grad_bias : ndarray or None
    Their gradients, set by `backward`.
training : bool
    Training mode (True after construction; `eval` and `train` switch it).""",
    "running_attributes": """\
running_mean, running_var : ndarray or None
    The running statistics (zeros and ones at first; None without track_running_stats).
num_batches_tracked : int or None
    The training batches seen.""",
    "layer_methods": """\
The layer is called on x (``layer(x)``, its `forward`) and keeps what `backward` needs;
``backward(dy)`` returns dx and sets the parameters' gradients. `train`, `eval`, `to`,
`state_dict` and `load_state_dict` (NumPy arrays or PyTorch tensors, under PyTorch's key
names) behave as PyTorch's.""",
})

# -- the layer families' shared sections (1d, 2d and 3d differ in shape only) -----------------
SNIPPETS.update({
    "batch_norm_layer": """\
Parameters
----------
%(channel_params)s
affine : bool, default True
    Whether the layer has weight (ones) and bias (zeros).
track_running_stats : bool, default True
    Whether the layer keeps running_mean, running_var and num_batches_tracked: updated in
    training mode, used in eval mode (without them, batch statistics in both modes).
%(layer_device_dtype)s
%(channel_keywords)s

Attributes
----------
%(layer_attributes)s
%(running_attributes)s

Notes
-----
%(layer_methods)s

See Also
--------
batch_norm""",
    "instance_norm_layer": """\
Parameters
----------
%(channel_params)s
affine : bool, default False
    Whether the layer has weight (ones) and bias (zeros).
track_running_stats : bool, default False
    Whether the layer keeps running_mean, running_var and num_batches_tracked: updated in
    training mode and used in eval mode (without them, instance statistics in both modes).
%(layer_device_dtype)s
%(channel_keywords)s

Attributes
----------
%(layer_attributes)s
%(running_attributes)s

Notes
-----
%(layer_methods)s
Unbatched input (without N) is taken, as PyTorch takes it.

See Also
--------
instance_norm""",
    "batch_instance_norm_layer": """\
Parameters
----------
%(channel_params)s
affine : bool, default True
    Whether the layer has weight (ones) and bias (zeros).
track_running_stats : bool, default True
    Whether the layer keeps BN's running statistics.
%(layer_device_dtype)s

Attributes
----------
%(layer_attributes)s
gate, grad_gate : ndarray of shape (C,)
    The gate and its gradient (set by `backward`).
%(running_attributes)s

See Also
--------
batch_instance_norm""",
})

SNIPPETS.update({
    "backward_params": """\
dy : ndarray
    The gradient of y: y's shape and dtype.
%(saved)s
%(dx_out)s""",
    "returns_y": """\
Returns
-------
y : ndarray
    x's shape and dtype.""",
    "switch_norm_params": """\
using_moving_average : bool, default True
    False averages the batch statistics over the batches seen instead (running =
    sum/count, with the unbiased variance; num_batches_tracked counts them and is saved in
    the state_dict). The reference release adds raw sums into its buffers and never divides
    by the count, so its eval mode normalises with sums, not averages.
using_bn : bool, default True
    Whether BN's statistics enter the mix.
last_gamma : bool, default False
    Whether weight starts at zeros (the last layer of a residual block) instead of ones.
reference : bool, default False
    The reference code's variances (see `switch_norm`); by default exact biased ones.
%(layer_device_dtype)s""",
})

SNIPPETS.update({
    "switch_norm_state": """\
grad_weight, grad_bias, grad_mean_weight, grad_var_weight : ndarray or None
    Set by `backward`, in the parameters' shapes.
num_batches_tracked : int or None
    The batches averaged (using_moving_average=False only).
training : bool
    Training mode.""",
    "switch_norm_spatial": """\
The reference code's parameters, buffers and state_dict keys and shapes
(switchablenorms/Switchable-Normalization), so its checkpoints load as they are (use
reference=True for its numbers). mean_weight and var_weight have 2 entries (IN, LN) with
using_bn=False.

Parameters
----------
num_features : int
    C, the number of channels.
eps : float, default 1e-5
momentum : float, optional
    PyTorch's convention, ``new = (1 - momentum)*old + momentum*batch``; None: 0.1, the
    reference's decay of 0.9.""",
})

SNIPPETS.update({
    "channel_grads": """\
Returns
-------
dx : ndarray
    x's shape and dtype (dy's memory layout).
dweight, dbias : ndarray of shape (C,) or None
    The parameters' dtype; None where the forward had no weight (bias).""",
})

_PLACEHOLDER = re.compile(r"^([ \t]*)%\((\w+)\)s[ \t]*$", re.M)


def _expand(match):
    indent, name = match.group(1), match.group(2)
    return "\n".join((indent + line) if line else "" for line in SNIPPETS[name].split("\n"))


def fill(obj):
    """obj with the placeholders of its docstring expanded (docstrings stripped by python -OO
    stay None)."""
    doc = obj.__doc__
    while doc and _PLACEHOLDER.search(doc):  # (a snippet may hold placeholders of its own)
        doc = _PLACEHOLDER.sub(_expand, doc)
    obj.__doc__ = doc
    return obj
