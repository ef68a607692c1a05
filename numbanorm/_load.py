"""Is this machine busy? Whether other processes' runnable threads fill every core this
process may use, so that a parallel kernel's threads would wait at its barrier for a
descheduled one (issue 29). Read from the kernel's count of runnable threads (the fourth field
of /proc/loadavg: an instantaneous count, unlike the load averages), at most once per
BUSY_SAMPLE_SECONDS; the answer changes after BUSY_SAMPLES samples in a row that disagree with
it. Where there is no /proc/loadavg (not Linux) the machine never counts as busy.

The count includes the thread that reads it and any other running thread of this process
(OpenMP workers spin for a moment after a parallel region): the hysteresis keeps those
moments from flipping the answer, and a serial call leaves no worker spinning."""
import os
import time

from ._config import BUSY_SAMPLE_SECONDS, BUSY_SAMPLES

try:
    CORES = len(os.sched_getaffinity(0))
except (AttributeError, OSError):  # not Linux
    CORES = os.cpu_count() or 1
_PATH = "/proc/loadavg"
_AVAILABLE = os.path.exists(_PATH)

# [time of the next sample, answer, samples in a row disagreeing with it]
_state = [0.0, False, 0]


def runnable_others():
    """Runnable threads on the machine besides the calling one, now (None without
    /proc/loadavg)."""
    if not _AVAILABLE:
        return None
    with open(_PATH, "rb") as f:
        return int(f.read().split()[3].split(b"/")[0]) - 1


def busy():
    """Whether other runnable threads fill every core (see the module docstring); costs a
    clock read between samples, ~10 us for a sample."""
    if not _AVAILABLE:
        return False
    now = time.monotonic()
    state = _state
    if now < state[0]:
        return state[1]
    state[0] = now + BUSY_SAMPLE_SECONDS
    others = runnable_others()
    if (others >= CORES) != state[1]:
        state[2] += 1
        if state[2] >= BUSY_SAMPLES:
            state[1] = not state[1]
            state[2] = 0
    else:
        state[2] = 0
    return state[1]
