"""Linear layers whose per-sample weight gradients can be read off one batched backward pass.

:func:`linear` computes ``y = x @ w (+ b)`` for a ``(n_in, n_out)`` variable ``w``
(and a ``(n_out,)`` bias ``b``). Every network layer of the bundled factors goes
through it (:class:`~distvmc.wavefunctions.mlp.Dense`, the FermiNet orbital streams),
which lets :class:`~distvmc.optimizers.jacobian.LogDerivatives` build the per-sample
log-derivatives O[s] = d log|psi(x_s)| / d theta without a per-sample backward pass:

While a :class:`Recording` is active (only while LogDerivatives traces its function),
:func:`linear` records its input x and output y and has the tape watch y. One
backward pass of sum_s log|psi(x_s)| gives G = d sum / d y; walkers are independent,
so row s of G is the gradient of log|psi(x_s)| alone, and

    dW[s] = sum_r x[s, r, :]^T G[s, r, :],   db[s] = sum_r G[s, r, :]

where r runs over the axes between the sample axis and the feature axis (particles,
pairs, permutations; x reshaped to (S, R, n_in)), summed over all calls of the layer.

Parameters that enter psi elementwise (envelope exponents, Jastrow and tail
parameters, determinant weights) are read through :func:`per_sample`: under a
Recording it returns the variable repeated per sample, shape (S, 1, ..., *v.shape),
a tensor the tape watches, so the same backward pass gives their per-sample
gradients directly; otherwise it returns the variable itself.

A call is recorded only when its input's leading axis is the (dynamic) sample axis
or a sample-major multiple of it (``tf.reshape(x, [-1, d])`` of (S, N, d)); a wanted
variable used in a call that is not recorded is listed in :attr:`Recording.other`
and LogDerivatives differentiates it by the general per-sample method (so does
any parameter that is neither a linear layer's nor read through :func:`per_sample`). A layout
that is not sample-major (leading axis n * S ordered n-major), or any use of a
layer's variables outside :func:`linear`, gives wrong columns here, which is why
LogDerivatives compares this route against the per-sample gradient on its first
call and falls back when they differ.
"""

from __future__ import annotations

from distvmc.lazytf import tf

_ACTIVE: list = []


class Call:
    """One recorded call: input x (..., n_in), output y (..., n_out), variables w and b.

    A :func:`per_sample` read is a Call with x = None, b = None, w the variable and y
    its per-sample copy (S, 1, ..., *w.shape)."""

    __slots__ = ("x", "y", "w", "b")

    def __init__(self, x, y, w, b):
        self.x, self.y, self.w, self.b = x, y, w, b


class Recording:
    """Context manager: :func:`linear` calls on ``variables`` made while it is active.

    Args:
      tape: the ``tf.GradientTape`` of the backward pass; it is told to watch every
        recorded output y.
      variables: the variables whose per-sample gradients are wanted (calls on other
        variables, such as frozen lower states, are not recorded).

    Attributes:
      calls: the recorded :class:`Call` objects, in call order.
      other: ids of wanted variables met in a call that could not be recorded.
    """

    def __init__(self, tape, variables):
        self.tape = tape
        self.wanted = {id(v) for v in variables}
        self.calls: list[Call] = []
        self.other: set[int] = set()

    def __enter__(self):
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc):
        _ACTIVE.remove(self)
        return False

    def record(self, x, w, b, y) -> None:
        mine = [v for v in (w, b) if v is not None and id(v) in self.wanted]
        if not mine:
            return
        ok = (isinstance(w, tf.Variable) and w.shape.rank == 2
              and (b is None or (isinstance(b, tf.Variable) and b.shape.rank == 1))
              and x.shape.rank is not None and x.shape.rank >= 2
              and x.shape[0] is None)  # the dynamic sample axis (or a multiple of it)
        if not ok:
            self.other.update(id(v) for v in mine)
            return
        self.tape.watch(y)
        self.calls.append(Call(x, y, w, b))


    def repeat(self, v, x, extra_axes: int):
        """v repeated per sample of x, (S, 1 * extra_axes, *v.shape), watched; or v."""
        if not (isinstance(v, tf.Variable) and id(v) in self.wanted):
            return v
        if x.shape.rank is None or x.shape.rank < 1 or x.shape[0] is not None:
            self.other.add(id(v))
            return v
        lead = [1] * (1 + extra_axes)
        y = tf.tile(tf.reshape(v, lead + v.shape.as_list()),
                    [tf.shape(x)[0]] + [1] * (extra_axes + v.shape.rank))
        self.tape.watch(y)
        self.calls.append(Call(None, y, v, None))
        return y


def recording():
    """The active :class:`Recording`, or None."""
    return _ACTIVE[-1] if _ACTIVE else None


def linear(x, w, b=None):
    """x @ w (+ b): x (..., n_in), w (n_in, n_out), b (n_out,) -> (..., n_out)."""
    y = tf.matmul(x, w)
    if b is not None:
        y = y + b
    if _ACTIVE:
        _ACTIVE[-1].record(x, w, b, y)
    return y


def per_sample(v, x, extra_axes: int = 0):
    """The parameter v as read by a factor evaluated on configurations x (S, N, D).

    Outside a :class:`Recording` (always, except while LogDerivatives traces O) this
    is v itself. Under one that wants v it is v repeated per sample, shape
    (S, 1 * extra_axes, *v.shape): the same values, broadcasting the same way against
    a tensor of rank 1 + extra_axes + v.rank whose leading axis is the sample axis
    (so index it from the end: ``a[..., 0]``, not ``a[0]``), with its own gradient
    per sample."""
    if _ACTIVE:
        return _ACTIVE[-1].repeat(v, x, extra_axes)
    return v


__all__ = ["Call", "Recording", "linear", "per_sample", "recording"]
