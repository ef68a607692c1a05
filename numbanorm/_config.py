"""Every tunable of numbanorm in one place: JIT flags, block sizes, thresholds.

Kernels import their numbers from here; nothing else in the package hard-codes a size.
"""
import os

from numba import config as _numba_config

__version__ = "0.1.0"  # (pyproject.toml's; here so that no module imports the package)

# Calls from several Python threads at once must be safe: numba's default "workqueue" layer
# aborts on concurrent parallel regions, so ask for a thread-safe layer (OpenMP or TBB) unless
# the user chose one explicitly.
if "NUMBA_THREADING_LAYER" not in os.environ:
    _numba_config.THREADING_LAYER = "threadsafe"

# How the CPU kernels convert float16 (see numbanorm.cpu._half): "f16c", LLVM's half<->float
# conversions (x86's F16C instructions), or "integer", integer arithmetic that runs on every
# CPU. F16C only where the CPU Numba compiles for has it: without it LLVM calls compiler-rt
# routines Numba does not link, and the process crashes (under NUMBA_CPU_NAME=generic, whose
# feature list is empty, too). NUMBANORM_FLOAT16_ROUTE=integer forces the integer route, as
# on a CPU without F16C: it takes f16c out of the features Numba compiles for, so that no
# F16C instruction is emitted and Numba's on-disk cache (keyed by the CPU name and features)
# keeps these kernels apart from the F16C ones. LLVM drops what depends on F16C with it
# (AVX-512), so every kernel of that process compiles for 256-bit vectors, as on such a CPU.
# Set it before Numba compiles anything (in the environment).
FLOAT16_ROUTE_ENV = "NUMBANORM_FLOAT16_ROUTE"


def _float16_route():
    forced = os.environ.get(FLOAT16_ROUTE_ENV, "auto").strip().lower()
    if forced not in ("auto", "integer"):
        raise ValueError(f"{FLOAT16_ROUTE_ENV} must be 'auto' or 'integer', got {forced!r}")
    features = _numba_config.CPU_FEATURES
    if features is None:
        from llvmlite import binding
        features = binding.get_host_cpu_features().flatten()
    has_f16c = "+f16c" in features.split(",")
    if forced == "integer":
        if has_f16c:
            # in the environment too, where a later reload of Numba's config reads it
            os.environ["NUMBA_CPU_FEATURES"] = _numba_config.CPU_FEATURES = ",".join(
                f for f in features.split(",") if f != "+f16c") + ",-f16c"
        return "integer"
    return "f16c" if has_f16c else "integer"


FLOAT16_ROUTE = _float16_route()

# Reassociation lets LLVM vectorise the sums; "nnan"/"ninf" are never set because NaN and inf
# must propagate to the output of their own group.
FASTMATH = {"nsz", "arcp", "contract", "reassoc"}

# Every kernel: cached on disk (a second process loads instead of compiling), GIL released so
# Python threads run kernels concurrently, NumPy's division semantics (x/0 -> inf/nan, no raise).
JIT = dict(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")

# Elementwise kernels (no reduction to vectorise) keep their written association: with
# "reassoc", LLVM folds k2*((x - mean)*rstd) into (k2*rstd)*(x - mean), and k2*rstd ~ rstd^3
# underflows to 0 for float64 data of |x| ~ 1e300 (measured: batch_norm dx off by 10%).
ELEMENTWISE_JIT = dict(JIT, fastmath=FASTMATH - {"reassoc"})

# The rows backward rounds g = dy*w in float32 both where mean(g) sums it and where dx subtracts
# mean(g) from it; "contract" would fuse the second into an fma with the unrounded product, and
# a group of one value would get dx = rstd*(rounding error of g) instead of exactly 0.
BACKWARD_JIT = dict(JIT, fastmath=FASTMATH - {"contract"})

# The merge of a batch_norm column block's sums into its statistics keeps its written
# arithmetic (no 'arcp', no 'reassoc'): for a block of one repeated value x, d = n*(x - m) is
# exact, d/n gives back x - m exactly and the block's mean m + d/n is exactly x, and the first
# merge, 0 + mean*(n/n), keeps it. With 'arcp' (d*(1/n)), 9 rows of 0.1 in float64 came out one
# ulp off; with 'reassoc' ((mean*n)/n), 3 rows did; either way batch_norm's output for that
# channel missed `bias` by 4e-15. The loop runs across columns, once per block of rows: it
# vectorises without 'reassoc', and the divisions cost nothing measurable.
MERGE_JIT = dict(JIT, fastmath=FASTMATH - {"arcp", "reassoc"})

# Host arithmetic on the small per-(n, c) statistics (numbanorm._mixing): compiled because a
# dozen NumPy calls on (N, C) arrays cost switch_norm 0.1-0.2 ms a call, a third of the
# kernels' time on (8, 256, 28, 28); the written order of operations, no fastmath.
HOST_JIT = dict(cache=True, nogil=True, error_model="numpy")

# Elements per Welford/Chan block: small enough that the second (centring) read hits L1.
BLOCK = 1024

# float32 blocks whose mean square deviation from the block mean is below this are reduced
# again in float64: deviations under ~1e-19 square to float32 subnormals or 0, and below this
# floor their share of the sum is no longer negligible (see cpu._moments._block).
TINY_MEAN_SQUARE = 2.0 ** -100

# layer_norm/rms_norm: rows of at least this many bytes are normalised two at a time, forward
# and backward (cpu.rows.forward_pairs, backward_pairs), so that each weight and bias value is
# loaded once for both rows.
# Long rows push the weight and bias out of L1 (a row of x, of y, the weight and the bias:
# 64 KiB at 4096 float32 values, L1 here 32 KiB), and their loads then cost a fifth of the
# forward: (4096, 4096) float32 with preallocated y took 4.3 ms with weight and bias as scalars
# against 5.5 ms with them as arrays. Pairs against single rows, time single/pair, interleaved,
# parallel kernels, float32 rows of 1024 values: 0.95, 2048: 1.08, 4096: 1.22, 8192: 1.23;
# of 128: 0.87, 768: 0.85. Backward (backward_pairs, with its fused parameter sums), float32,
# kernel alone, time single/pair: (4096, 4096) 1.20-1.26 in three runs; (4096, 768) 0.84,
# (16384, 128) 0.72; in cache (256, 2048) 1.11, (64, 1024) 1.30; the same threshold.
ROW_PAIR_MIN_BYTES = 16 * 1024

# Inputs with at most this many elements run a serial kernel: a parallel region costs ~1.5 us.
SERIAL_MAX_ELEMENTS = 1 << 15

# batch_norm inputs run the fused serial kernels (channels.small_forward/small_backward: one
# call instead of three parallel regions) up to SERIAL_MAX_ELEMENTS, and up to this many
# elements when the spatial size is below SLAB_MIN (column layout, e.g. (N, C) input). Measured
# on (64, 1024): 0.12 -> 0.06 ms forward; on (8, 32, 32, 32) the fused kernel was 3x slower.
FUSED_COLUMNS_MAX_ELEMENTS = 1 << 18

# Cross-row reductions (dweight/dbias, batch_norm statistics) are split into at most this many
# partial buffers, merged in a fixed order. The split depends on the shape only, never on the
# thread count, so results are bitwise identical for any number of threads.
MAX_PARTIALS = 64

# ... and each partial covers at least this many input elements: a partial buffer row is as
# wide as the channels, so (64, 1024) layer_norm split 64 ways zeroed and summed 1 MiB of
# partials for 256 KiB of input.
PARTIAL_MIN_ELEMENTS = 1 << 14

# ... and batch_norm's column statistics and backward sums split their rows into chunks of at
# least this many values: each chunk writes a partial row as wide as the columns, merged serially
# afterwards. (The backward sums split (512, 2048) float32 64 ways before: 0.48 ms, 0.39 at 4.)
# (4096, 1024) float32, statistics kernel alone, 2 threads: 64 chunks 0.54-0.79 ms, 16 chunks
# 0.49-0.71, 8 chunks 0.47-0.69; the serial merge of 64 x 1024 partials took 36-110 us.
# Fewer chunks cap the parallelism of mid-sized inputs on many-core machines (16 work items
# for 4M values at this setting).
COLUMN_PARTIAL_MIN_ELEMENTS = 1 << 18

# The data-normalization column statistics (cpu.channels.data_column_moments) sum in float64,
# so their row blocks are cut by bytes alone (COLUMN_BLOCK_BYTES, no COLUMN_BLOCK_MAX_ROWS):
# with 32-row blocks of 32 columns, the per-block merge (two divisions a column) and resets
# cost as much as the sums. Their chunks hold at least this many values: a scaler's
# partial_fit on 10000 x 32 then runs on several threads.
DATA_PARTIAL_MIN_ELEMENTS = 1 << 16

# Compressed sparse matrices (cpu.sparse): the statistics per minor position (CSR's columns)
# split the slots into K chunks of about equal nnz, each with its own partial row as wide as
# the minor axis, merged in order; K depends on the matrix only (never the thread count): at
# most SPARSE_MAX_CHUNKS, each of at least SPARSE_CHUNK_MIN_NNZ stored values and of
# SPARSE_NNZ_PER_POSITION times the minor size, so that the partial rows (six float64 values
# per position) stay a fraction of the data they summarise.
SPARSE_MAX_CHUNKS = 16
SPARSE_CHUNK_MIN_NNZ = 1 << 16
SPARSE_NNZ_PER_POSITION = 4
# the per-position scaling (cpu.sparse.scale_minor) runs in chunks of this many stored values
SPARSE_SCALE_CHUNK = 1 << 16

# local_response_norm (cpu/window.py): a work item is one sample and a tile of spatial
# positions whose scratch (about 2*(C + size) + 2*C rows of the tile in the compute dtype)
# fits in this many bytes, at least WINDOW_TILE_MIN positions (a multiple of 16 that keeps the
# loops vectorised). Results never depend on the tile.
WINDOW_TILE_BYTES = 256 * 1024
WINDOW_TILE_MIN = 16

# batch_norm: channels whose contiguous slabs (the spatial size S) are at least this long are
# reduced slab by slab; shorter slabs ((N, C) input, tiny spatial sizes) are reduced as columns
# of an (N, C*S) matrix, vectorised across the columns.
SLAB_MIN = 64

# ... in the backward pass, where the column layout's dx reads six per-column parameter arrays
# for every row (the slabs' dx takes six scalars per slab). Backward time of slabs against
# columns, float32, interleaved: S = 16: (64, 64, 4, 4) 1.98x, (512, 256, 4, 4) 2.83x; S = 25:
# (256, 64, 5, 5) 1.41x; S = 36: (128, 128, 6, 6) 0.81x; S = 49: (32, 64, 7, 7) 0.67x,
# (128, 256, 7, 7) 0.49x.
SLAB_MIN_BACKWARD = 32

# ... and from this many values up, when the column layout's rows (C*S values) are so wide that
# a column block (COLUMN_BLOCK_BYTES) holds fewer than COLUMN_MIN_ROWS of them: the column
# kernels then stream per-column partials and parameters as wide as the rows for every row or
# two. Time of slabs against columns, float32, interleaved, forward / backward: (16, 2048, 7, 7)
# 0.15 / -, (32, 1024, 6, 6) 0.22 / -, (64, 512, 7, 7) 0.41 / -, (64, 1024, 5, 5) 0.55 / 0.29,
# (64, 2048, 4, 4) 0.71 / 0.42 (columns 0.3-0.8x PyTorch's time on these); where blocks keep 8
# rows or more, columns stay ahead: (128, 256, 7, 7) 0.96 (5 rows), (64, 128, 6, 6) 1.49 (14),
# (512, 256, 4, 4) 2.2 / 1.10 (16). Below 16 values a slab is not measured.
SLAB_MIN_WIDE = 16
COLUMN_MIN_ROWS = 8

# Bytes of a column-reduction row block, kept in L2 between the two reads of the block.
COLUMN_BLOCK_BYTES = 256 * 1024

# ... and at most this many rows: a column's block sums are chains of rows/4 float32 additions
# (four rows at a time), so 32 rows keep them to 8 links. Measured on (4096, 64) float32 with
# mean 1e4: 1024-row blocks (the byte limit alone) gave variances 1.8e-6 off and y 3.6e-6;
# 64 rows 3.7e-7 and 1.1e-6; 32 rows 2.1e-7 and 6.9e-7; 16 rows 4e-8 and 3.3e-7. Single-thread
# in-cache cost of the column statistics against 64 rows: +17-20% at 32 rows, +50% at 16.
COLUMN_BLOCK_MAX_ROWS = 32

# The channels-last kernels' blocks (numbanorm.cpu.channels_last): rows of C contiguous values,
# per image. Their per-block merges cost more of an image than the column kernels' do of a
# batch: single-thread in-cache statistics of one float32 (3136, 64) image took 46.0 us in
# 32-row blocks, 33.7 in 64, 29.9 in 128 ((784, 256): 27.7, 23.5, 20.8). 64 rows: two thirds
# of the gain at the float32 accuracy the table above gives 64-row blocks.
CHANNELS_LAST_BLOCK_ROWS = 64

# Few large channels-last images are cut into chunks of rows, so that the threads share them:
# fewer than CHANNELS_LAST_SPLIT_ITEMS images (above the serial size) are cut into
# K = min(ceil(CHANNELS_LAST_SPLIT_ITEMS / N), S // CHANNELS_LAST_SPLIT_MIN_ROWS) chunks each.
# The shape decides K, never the thread count, so results do not depend on it; the chunks
# cost a second read of the image from memory (its statistics, then its output pass).
CHANNELS_LAST_SPLIT_ITEMS = 4
CHANNELS_LAST_SPLIT_MIN_ROWS = 256

# Bytes of a strip of the column statistics and backward sums: wider rows are cut into strips of
# this many bytes, reduced as separate work items, so that blocks keep COLUMN_BLOCK_MAX_ROWS rows
# and each item's per-column arrays stay in L1/L2. Unstripped, (64, 65536) float32 ran blocks of
# one row (each read twice, and a float64 merge per value) and its statistics took 14 ms,
# PyTorch's whole batch_norm 3.2 ms.
COLUMN_STRIP_BYTES = 8 * 1024

# Rows of a batch_norm column backward block (sum(dy), sum(dy*(x - mean)) in x's dtype, one row
# at a time): chains of 8 float32 additions, as in the statistics' 32-row blocks.
COLUMN_SUMS_ROWS = 8

# batch_norm's column statistics shift the first block of each chunk of rows by the mean of the
# first rows of x (see cpu.channels._column_chunk), and read it once while every column's block
# mean o lies within sqrt(COLUMN_SHIFT_MAX) standard deviations of that shift
# (cpu.channels._shift_ok); a block beyond that is read again with its own mean. The block's M2
# then carries at most 1 + COLUMN_SHIFT_MAX times the relative rounding error of a block
# centred on its own mean (measured on float32 (4096, 1024) columns, mean 0 and 1e4: variance
# errors 2.8e-8 and 2.4e-7 against 2.4e-8 and 2.2e-7). At 1.0, iid normal data sent a quarter
# of the first blocks of (4096, 1024) back for a second read (block means of 1024 columns
# stray past one standard deviation of a 32-row variance); from 2.0 on, none.
COLUMN_SHIFT_MAX = 3.0

# ... for blocks of at least this many rows. Shorter blocks are wide (COLUMN_BLOCK_BYTES), their
# variances noisy, and some of their thousands of columns always stray: simulated on iid normal
# data, 70% of 16-row blocks of 4096 columns and all 8-row blocks failed the test above, against
# none of the 32-row blocks of 2048 columns.
COLUMN_SHIFT_MIN_ROWS = 32

# ---------------------------------------------------------------------------------------------
# CUDA (numbanorm.cuda). Read once at import; the test suite sets NUMBANORM_CUDA_THREADS small
# so that the simulator runs multi-block reductions and partial merges on tiny shapes.

# Threads per block of every kernel: a power of two (the tree reductions halve it).
CUDA_THREADS = int(os.environ.get("NUMBANORM_CUDA_THREADS", "256"))
if CUDA_THREADS < 2 or CUDA_THREADS & (CUDA_THREADS - 1):
    raise ValueError(f"NUMBANORM_CUDA_THREADS must be a power of two >= 2, got {CUDA_THREADS}")

# Values per thread the rows kernels aim for: a row of L values gets the smallest power-of-two
# group of threads (at most CUDA_THREADS) with L/width at most this, so short rows share a block
# (layer_norm over 128 features: 32 threads a row, 8 rows a block) instead of leaving most of
# a block idle. Set by L only, so a row's reduction order never depends on the launch.
CUDA_ROW_VALUES_PER_THREAD = 4

# Rows too few to fill the GPU with a block each (fewer than CUDA_TARGET_BLOCKS) and longer than
# this many values are cut into chunks of at least this many, a block each (one group_norm
# group of 8M values: 1024 blocks instead of 1); their partial statistics merge per row in a
# fixed order.
CUDA_ROW_CHUNK = 8192

# Blocks a grid-stride launch aims for (enough to fill an H100's 132 SMs several times over);
# launch size never changes results, only which block handles which item.
CUDA_TARGET_BLOCKS = int(os.environ.get("NUMBANORM_CUDA_TARGET_BLOCKS", "1024"))

# Column reductions (batch_norm statistics and sums, layer/group norm dweight/dbias) split the
# rows into at most this many partitions, set by the shape only; partials merge in a fixed
# order, so results are bitwise identical from run to run.
CUDA_MAX_PARTIALS = 256

# Environment variable that sends NumPy input to the GPU for a whole program ("cuda" or "cpu").
DEVICE_ENV = "NUMBANORM_DEVICE"
