"""Grading helpers for the assignments' hidden tests (``assignments/hidden/``; see ``docs/teaching.md``).

A hidden test must tell a student's own implementation from a call to the one adlkit already ships:
``from adlkit.losses import deviation_loss`` would otherwise pass every test. :func:`own_work` runs the
student's function while a profiler hook (:func:`sys.setprofile`) records every Python call into the
reference functions named for that exercise, whatever name or module path the student reached them by
(an import alias, a wrapper, another adlkit function that calls them). A call to any of them fails the
test with a message saying so; the value is checked separately, against numbers the hidden test
computes by hand or with the reference outside :func:`own_work`.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable
from contextlib import contextmanager

__all__ = ["ReferenceCallError", "own_work", "record_calls"]


class ReferenceCallError(AssertionError):
    """The student's function reached adlkit's reference implementation of the exercise."""


def _code(fn: Callable):
    fn = inspect.unwrap(fn)
    code = getattr(fn, "__code__", None)
    if code is None:
        raise TypeError(f"{fn!r} is not a Python function: its calls cannot be recorded")
    return code


def _name(fn: Callable) -> str:
    fn = inspect.unwrap(fn)
    return f"{fn.__module__}.{fn.__qualname__}"


@contextmanager
def record_calls(functions: Iterable[Callable]):
    """Yield a list that receives the qualified name of each call into ``functions`` made in the block."""
    codes = {_code(f): _name(f) for f in functions}
    seen: list[str] = []
    previous = sys.getprofile()

    def hook(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            seen.append(codes[frame.f_code])

    sys.setprofile(hook)
    try:
        yield seen
    finally:
        sys.setprofile(previous)


def own_work(student_fn: Callable, *args, forbidden: Iterable[Callable], **kwargs):
    """``student_fn(*args, **kwargs)``, failing with :class:`ReferenceCallError` if it called a ``forbidden`` one.

    ``forbidden`` lists adlkit's reference implementations of the exercise (e.g. ``[adlkit.losses.deviation_loss]``).
    """
    forbidden = list(forbidden)
    with record_calls(forbidden) as seen:
        out = student_fn(*args, **kwargs)
    if seen:
        raise ReferenceCallError(
            f"{getattr(student_fn, '__name__', 'your function')} calls adlkit's own {seen[0]}: the exercise asks you "
            "to write it yourself, so these tests earn no points until it does not")
    return out
