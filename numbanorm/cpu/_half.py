"""16-bit floats in the CPU kernels: float16 and bfloat16 values converted to float32 where they
are read, and float32 results rounded to 16 bits where they are written.

Numba's CPU target has no float16 or bfloat16 type. 16-bit arrays reach the kernels as integer
views (numbanorm._dtypes: float16 as int16, bfloat16 as uint16), and three helpers, chosen at
compile time by the element type, make one kernel source serve every dtype:

    ld(v)        a value read from an array as the kernels compute with it: float32 and
                 float64 values as they are, 16-bit values converted to float32 (exact)
    st(a, v)     the value to store into array a: v itself for float arrays (the store
                 converts as usual), v rounded to a's 16-bit format for 16-bit arrays
    bits_of(v)   the bits of ld(v) as an integer of its width (for the order keys of min/max)

The conversions are written as LLVM instructions without branches, so the loops that call them
still vectorise:

- bfloat16 -> float32: the 16 bits shifted to the top of a 32-bit word. float32 -> bfloat16:
  round to nearest even, (b + 0x7fff + ((b >> 16) & 1)) >> 16 on the float32 bits b; NaN
  becomes the quiet NaN 0x7fc0 with its sign (as ml_dtypes).
- float16, integer route (runs on every CPU): the exponent rebiased, subnormals normalised by
  one float subtraction of a power of two, inf and NaN payloads kept (as NumPy); float32 ->
  float16 rounds to nearest even with one float addition of 0.5 for the subnormal range, and
  NaN keeps its sign and top payload bits (NumPy's rule: 0x7c00 + (payload >> 13), 0x7c01
  where that is 0x7c00).
- float16, F16C route: LLVM's fpext/fptrunc between half and float, which x86 CPUs with F16C
  run as vcvtph2ps/vcvtps2ph. Without F16C LLVM lowers them to calls of compiler-rt's
  __extendhfsf2/__truncsfhf2, which Numba's JIT does not link (the process crashes), so the
  route is taken only where the CPU Numba compiles for has F16C (_config.FLOAT16_ROUTE). The
  values are the integer route's, except that a signalling NaN comes back quiet.

Every conversion is exact (16 -> 32 bits) or one correct rounding (32 -> 16 bits): a 16-bit
kernel's result is the float32 kernel's result on the same values, rounded once.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .._config import FLOAT16_ROUTE

_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_F32 = ir.FloatType()


def _c(value):
    """An i32 constant of the 32-bit pattern value (given signed or unsigned)."""
    value &= 0xffffffff
    return ir.Constant(_I32, value - (1 << 32) if value >= 1 << 31 else value)


def _f32(value_bits):
    """The float32 constant with the given bits."""
    return ir.Constant(_F32, float(np.array([value_bits], np.uint32).view(np.float32)[0]))


# ---------------------------------------------------------------------------------------------
# the conversions, as LLVM IR

def _bf16_load(builder, h):
    return builder.bitcast(builder.shl(builder.zext(h, _I32), _c(16)), _F32)


def _bf16_store(builder, f):
    u = builder.bitcast(f, _I32)
    top = builder.lshr(u, _c(16))
    rounded = builder.lshr(builder.add(builder.add(u, _c(0x7fff)), builder.and_(top, _c(1))),
                           _c(16))
    nan = builder.or_(builder.and_(top, _c(0x8000)), _c(0x7fc0))
    is_nan = builder.fcmp_unordered("uno", f, f)
    return builder.trunc(builder.select(is_nan, nan, rounded), _I16)


def _f16_load_int(builder, h):
    w = builder.zext(h, _I32)
    o = builder.shl(builder.and_(w, _c(0x7fff)), _c(13))
    exp = builder.and_(o, _c(0x0f800000))
    o = builder.add(o, _c(112 << 23))  # rebias 15 -> 127
    special = builder.add(o, _c(112 << 23))  # inf/NaN: exponent all ones
    # subnormal: as the normal number 2^-14*(1 + m/1024), less 2^-14 (exact)
    sub = builder.fsub(builder.bitcast(builder.add(o, _c(1 << 23)), _F32), _f32(113 << 23))
    o = builder.select(builder.icmp_unsigned("==", exp, _c(0x0f800000)), special,
                       builder.select(builder.icmp_unsigned("==", exp, _c(0)),
                                      builder.bitcast(sub, _I32), o))
    sign = builder.shl(builder.and_(w, _c(0x8000)), _c(16))
    return builder.bitcast(builder.or_(o, sign), _F32)


def _f16_store_int(builder, f):
    u = builder.bitcast(f, _I32)
    sign = builder.and_(u, _c(0x80000000))
    a = builder.xor(u, sign)
    # |f| >= 65536: inf, or NaN with NumPy's payload rule
    nan = builder.add(_c(0x7c00), builder.lshr(builder.and_(a, _c(0x7fffff)), _c(13)))
    nan = builder.select(builder.icmp_unsigned("==", nan, _c(0x7c00)), _c(0x7c01), nan)
    big = builder.select(builder.icmp_unsigned(">", a, _c(0x7f800000)), nan, _c(0x7c00))
    # |f| < 2^-14: adding 0.5 rounds |f| to a multiple of 2^-24 (to nearest even); the bits
    # above 0.5's are the subnormal (or the smallest normal) half
    half = _f32(0x3f000000)
    small = builder.sub(builder.bitcast(builder.fadd(builder.bitcast(a, _F32), half), _I32),
                        _c(0x3f000000))
    # normal: rebias 127 -> 15 and round the 13 dropped bits to nearest even (a carry into
    # the exponent is the correct rounding, up to inf)
    odd = builder.and_(builder.lshr(a, _c(13)), _c(1))
    normal = builder.lshr(builder.add(builder.add(a, _c((-112 << 23) + 0xfff)),
                                      odd), _c(13))
    r = builder.select(builder.icmp_unsigned(">=", a, _c(0x47800000)), big,
                       builder.select(builder.icmp_unsigned("<", a, _c(0x38800000)), small,
                                      normal))
    return builder.trunc(builder.or_(r, builder.lshr(sign, _c(16))), _I16)


def _f16_load_f16c(builder, h):
    return builder.fpext(builder.bitcast(h, ir.HalfType()), _F32)


def _f16_store_f16c(builder, f):
    return builder.bitcast(builder.fptrunc(f, ir.HalfType()), _I16)


_F16_LOAD = _f16_load_f16c if FLOAT16_ROUTE == "f16c" else _f16_load_int
_F16_STORE = _f16_store_f16c if FLOAT16_ROUTE == "f16c" else _f16_store_int


def _load_intrinsic(build):
    @intrinsic
    def load(typingctx, h):
        def codegen(context, builder, sig, args):
            return build(builder, args[0])
        return types.float32(h), codegen
    return load


def _store_intrinsic(build, result):
    @intrinsic
    def store(typingctx, f):
        def codegen(context, builder, sig, args):
            return build(builder, args[0])
        return result(types.float32), codegen
    return store


bf16_load = _load_intrinsic(_bf16_load)
bf16_store = _store_intrinsic(_bf16_store, types.uint16)
f16_load = _load_intrinsic(_F16_LOAD)
f16_store = _store_intrinsic(_F16_STORE, types.int16)
# both float16 routes, whichever the kernels use (the conversion tests check each)
f16_load_int = _load_intrinsic(_f16_load_int)
f16_store_int = _store_intrinsic(_f16_store_int, types.int16)


@intrinsic
def _f32_bits(typingctx, f):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], _I32)
    return types.int32(types.float32), codegen


@intrinsic
def _f64_bits(typingctx, f):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


# ---------------------------------------------------------------------------------------------
# ld, st, bits_of: plain Python meanings (NUMBA_DISABLE_JIT=1) and their compiled overloads

def _is_view(t, which):
    return isinstance(t, types.Integer) and t.bitwidth == 16 and t.signed == (which == "f16")


def ld(v):
    """v as the kernels compute with it (see the module docstring)."""
    if isinstance(v, np.uint16):
        return (np.array(v, np.uint32) << 16).view(np.float32)[()]
    if isinstance(v, np.int16):
        return np.array(v).view(np.float16).astype(np.float32)[()]
    return v


# inline='always': inlined in Numba's IR, so that LLVM sees plain loads (float data) and the
# conversions (16-bit data) inside the loops from its first pass on.
@overload(ld, inline="always")
def _ld(v):
    if _is_view(v, "bf16"):
        return lambda v: bf16_load(v)
    if _is_view(v, "f16"):
        return lambda v: f16_load(v)
    return lambda v: v


def st(a, v):
    """The value to store into array a (see the module docstring)."""
    if a.dtype == np.uint16:
        f = np.float32(v)
        if f != f:
            return np.uint16(0xffc0 if np.signbit(f) else 0x7fc0)
        b = int(np.array(f).view(np.uint32))
        return np.uint16((b + 0x7fff + ((b >> 16) & 1)) >> 16)
    if a.dtype == np.int16:
        return np.array(np.float32(v)).astype(np.float16).view(np.int16)[()]
    return v


@overload(st, inline="always")
def _st(a, v):
    if _is_view(a.dtype, "bf16"):
        return lambda a, v: bf16_store(np.float32(v))
    if _is_view(a.dtype, "f16"):
        return lambda a, v: f16_store(np.float32(v))
    return lambda a, v: v


def bits_of(v):
    """The bits of ld(v) as an integer of its width (int32 for 16-bit and float32 values,
    int64 for float64 ones)."""
    f = ld(v)
    return np.array(f).view(np.int32 if f.dtype.itemsize == 4 else np.int64)[()]


@overload(bits_of, inline="always")
def _bits_of(v):
    if v == types.float64:
        return lambda v: _f64_bits(v)
    return lambda v: _f32_bits(ld(v))
