"""Resuming: which checkpoint, and which config changes a resume allows (no TensorFlow).

``distvmc run --resume RUN_DIR`` (or ``distvmc.run(..., resume=RUN_DIR)``)
takes the newest checkpoint that reads and verifies, skipping damaged ones
with a message. The config is the checkpoint's own, or a given file, with
overrides; keys outside :data:`RESUME_MAY_CHANGE` would change the
trajectory, so a resume refuses them in one line.
"""

from __future__ import annotations

import copy
import os

from distvmc import __version__
from distvmc.checkpoint import checkpoint_dir, find_latest, list_checkpoints
from distvmc.config import ConfigError

# Keys that may differ between a checkpoint's config and the config of the run
# that resumes it ("section.*" means every key of the section).
RESUME_MAY_CHANGE = ("optimizer.iterations", "output.*", "evaluation.*", "checkpoint.*",
                     "distributed.backend", "recovery.max_rewinds")


def _flatten(tree, prefix="") -> dict:
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(tree, list) and tree and all(isinstance(v, dict) for v in tree):
        for i, v in enumerate(tree):
            out.update(_flatten(v, f"{prefix}.{i}"))
        out[f"{prefix}.#"] = len(tree)
    else:
        out[prefix] = tree
    return out


def may_change(key: str) -> bool:
    for pattern in RESUME_MAY_CHANGE:
        if key == pattern or (pattern.endswith(".*") and key.startswith(pattern[:-1])):
            return True
    return False


def config_changes(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """(key, old value, new value) for every key that differs between two resolved configs."""
    a, b = _flatten(old), _flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


class Resume:
    """What a resume continues: run directory, config, checkpoint.

    Attributes:
      run_dir, cfg (validated Section), checkpoint (read and verified: meta,
      config, history, state, path), messages (skipped checkpoints), changes
      (allowed config changes).
    """

    def __init__(self, run_dir, cfg, checkpoint, messages, changes):
        self.run_dir, self.cfg, self.checkpoint = run_dir, cfg, checkpoint
        self.messages, self.changes = messages, changes


def prepare_resume(run_dir: str, config_path: str | None, overrides: list[str]) -> Resume:
    """Find the latest valid checkpoint and the config to continue with.

    Raises ConfigError (one line) when there is nothing to resume or when a
    key outside :data:`RESUME_MAY_CHANGE` differs from the checkpoint's config.
    """
    from distvmc import config as config_mod

    if not os.path.isdir(run_dir):
        raise ConfigError(f"--resume {run_dir!r}: no such run directory")
    if not list_checkpoints(run_dir):
        raise ConfigError(f"--resume {run_dir!r}: no checkpoints in "
                          f"{checkpoint_dir(run_dir)!r}; start the run with --out {run_dir}")
    messages: list[str] = []
    ckpt = find_latest(run_dir, messages)
    if ckpt is None:
        raise ConfigError(f"--resume {run_dir!r}: no usable checkpoint ({'; '.join(messages)})")
    if config_path:
        cfg = config_mod.load(config_path, list(overrides) + [f"output.dir={run_dir}"])
    else:
        raw = config_mod.apply_overrides(copy.deepcopy(ckpt["config"]),
                                         list(overrides) + [f"output.dir={run_dir}"])
        cfg = config_mod.validate(raw)
    try:  # keys added to distvmc since the checkpoint get their defaults on both sides
        old = config_mod.validate(copy.deepcopy(ckpt["config"])).to_dict()
    except ConfigError as e:
        raise ConfigError(f"--resume {run_dir!r}: the checkpoint's config is not valid for "
                          f"this distvmc {__version__}: {e}") from None
    changes = config_changes(old, cfg.to_dict())
    refused = [c for c in changes if not may_change(c[0])]
    if refused:
        listed = ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in refused)
        raise ConfigError(f"--resume {run_dir!r}: config differs from the checkpoint's in {listed}; "
                          f"only {', '.join(RESUME_MAY_CHANGE)} may change on resume")
    return Resume(run_dir, cfg, ckpt, messages, [c for c in changes if c[0] != "output.dir"])
