"""numbanorm's CPU kernels as Numba dispatchers: where their on-disk cache lives, and how many
signatures this process compiled and how many it loaded from that cache (Numba's own dispatcher
statistics, not timings). Used by `numbanorm warmup`, `numbanorm info` and the tests."""
import importlib
import sys

from numba.core.dispatcher import Dispatcher

# Every module holding CPU kernels (their SERIAL namespaces included).
KERNEL_MODULES = ("numbanorm._chan", "numbanorm._mixing", "numbanorm.cpu._half",
                  "numbanorm.cpu._moments", "numbanorm.cpu.rows", "numbanorm.cpu.channels",
                  "numbanorm.cpu.channels_last", "numbanorm.cpu.sparse",
                  "numbanorm.cpu.window")


def dispatchers(imported_only=False):
    """Every CPU kernel and kernel helper with its own dispatcher (inlined helpers have none),
    once each. imported_only: only from the kernel modules already imported (importing one
    would not compile anything, but a caller counting what a process did need not import)."""
    seen = {}
    for name in KERNEL_MODULES:
        module = sys.modules.get(name)
        if module is None:
            if imported_only:
                continue
            module = importlib.import_module(name)
        values = list(vars(module).values())
        serial = vars(module).get("SERIAL")
        if serial is not None:
            values += list(vars(serial).values())
        for v in values:
            if isinstance(v, Dispatcher) and v.py_func.__module__ == name:
                seen[id(v)] = v
    return list(seen.values())


def counts():
    """(compiled, loaded): signatures this process compiled (missing from the cache) and
    loaded from the cache, over every numbanorm CPU dispatcher."""
    compiled = loaded = 0
    for d in dispatchers(imported_only=True):
        compiled += sum(d.stats.cache_misses.values())
        loaded += sum(d.stats.cache_hits.values())
    return compiled, loaded


def compiled_signatures():
    """How many signatures the numbanorm CPU dispatchers hold in this process (compiled or
    loaded); 0 right after `import numbanorm`."""
    return sum(len(d.signatures) for d in dispatchers(imported_only=True))


def location():
    """The directory of the kernels' on-disk cache (Numba's choice: NUMBA_CACHE_DIR if set,
    else __pycache__ beside the package's sources when writable, else a per-user directory)."""
    from .cpu import rows
    return rows.forward_serial.stats.cache_path
