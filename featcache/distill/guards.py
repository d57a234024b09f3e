"""Stopping a training run cleanly: signals that wait for the step under way, and numbers that
must stay finite.

A signal that interrupts an optimizer step part-way leaves that step's forward pass in the
BatchNorm running statistics (and possibly half of an optimizer update) while the run's position
still says the step was not taken: a resume redoes it, so the resumed run's statistics count one
batch twice and its validation curve, and the best.pt chosen from it, are another run's. So
during the labelled epochs the first SIGINT or SIGTERM only asks to stop: the step under way
finishes, and training stops at the next step boundary with a resume point there. A second
signal stops at once and writes no resume point of that moment (the last one written stays).

A loss or weight that is NaN or inf is never a result: training stops with one line naming the
optimizer step, before a checkpoint of it is written (the earlier ones stay).
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from featcache.errors import CheckpointError, ConfigError
from featcache.runs.checkpoint import state_dict_error

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """SIGINT and SIGTERM as KeyboardInterrupt, deferred to a step boundary inside `deferred()`."""

    def __init__(self) -> None:
        self.requested = False  # a deferred stop is pending
        self.forced = False  # a second signal stopped the run mid-step: no resume point of it
        self._deferring = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        """The handlers, while training runs (only the main thread can install them; elsewhere
        signals keep Python's own behaviour)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self._deferring and not self.requested:
            self.requested = True  # the step under way finishes first
            return
        self.forced = self._deferring
        raise KeyboardInterrupt

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    def check(self) -> None:
        """At a step boundary: stop here if a signal asked to."""
        if self.requested:
            raise KeyboardInterrupt


class Diverged(ConfigError):
    """The loss or the weights became NaN or inf: the settings (lr, grad_clip) let it diverge."""


def check_loss(loss: float, step: int, what: str = "training") -> float:
    """`loss` when it is finite; a Diverged error naming optimizer step `step` otherwise."""
    if not math.isfinite(loss):
        raise Diverged(f"{what} diverged: the loss is {loss} at optimizer step {step}; lower "
                       "training.lr or keep training.grad_clip above 0 (checkpoints of earlier "
                       "epochs are kept; nothing of this step was saved)")
    return loss


def learned(module: torch.nn.Module) -> set[str]:
    """The state-dict names a run learns: parameters and BatchNorm running statistics. Other
    buffers may be NaN by design (output trust's probe score before it is first measured)."""
    names = {name for name, _ in module.named_parameters()}
    return names | {name for name, _ in module.named_buffers()
                    if name.rsplit(".", 1)[-1] in ("running_mean", "running_var")}


def finite_state(state: dict[str, Any], names: set[str]) -> bool:
    """Whether the tensors `names` of a state dict are all finite (a name it lacks is left to
    load_state, which names it)."""
    return _first_non_finite(state, names) is None


def _first_non_finite(state: dict[str, Any], names: set[str]) -> str | None:
    return next((k for k in sorted(names) if isinstance(state.get(k), torch.Tensor)
                 and state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all())), None)


def check_weights(module: torch.nn.Module, step: int, what: str = "training") -> None:
    """A Diverged error when a learned tensor of `module` is NaN or inf after optimizer step `step`."""
    bad = _first_non_finite(module.state_dict(), learned(module))
    if bad is not None:
        raise Diverged(f"{what} diverged: weight {bad} is not finite after optimizer step {step}; "
                       "lower training.lr or keep training.grad_clip above 0 (nothing of it was "
                       "saved)")


def load_state(module: torch.nn.Module, state: dict[str, Any], path: Any) -> None:
    """module.load_state_dict(state), a file's tensors that do not fit the module (edited by hand
    or damaged) being one CheckpointError naming the file."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path} does not fit this run's model ({state_dict_error(exc)}); "
                              "it was edited or damaged: delete it and it is made again") from None
