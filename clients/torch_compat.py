"""What the device side needs from torch releases older than the project's x86 pin (2.13).

A Raspberry Pi 4 or Zero 2 W (ARMv8.0) installs Debian's own torch (`apt-get install
python3-torch`: 1.13.1 on bookworm, version string 1.13.0a0): PyPI's torch 2.13.0 for
aarch64 is a CUDA build whose threaded BLAS runs ARMv8.1 atomics and dies with SIGILL
there (README, "Plug in a Raspberry Pi"). The device side runs on torch 1.13 and later
with one difference papered over here:

- torch 1.13's `torch.load(weights_only=True)` refuses Python floats (pickle's BINFLOAT,
  "Unsupported operand 71") and bytes, which a learner state holds. On torch < 2,
  `install()` makes the weights-only path use `RestrictedUnpickler`: Python's own
  unpickler, which reads every opcode, with globals limited to the ones torch 1.13's
  weights-only unpickler allows (tensor rebuilders, storages, dtypes, OrderedDict) plus
  `_codecs.encode` (how protocol 2 pickles bytes). Anything else is refused, as torch
  2.x refuses it.

On torch 2 and later `install()` changes nothing. The server side (the simulation,
scenario checks on the meta device) needs torch 2.
"""

from __future__ import annotations

import pickle
import re
import types

SUPPORTED = ">=1.13.0a0"            # the device side's torch range (pyproject's aarch64 pin)
EXTRA_GLOBALS = ("_codecs.encode",)  # bytes in pickle protocol 2 (torch.save's default)


def torch_major(version: str) -> int:
    found = re.match(r"(\d+)\.", version)
    return int(found.group(1)) if found else 0


class RestrictedUnpickler(pickle.Unpickler):
    """Python's unpickler with a fixed set of globals: plain data, tensors and storages only."""

    allowed: dict = {}

    def find_class(self, module: str, name: str):
        full = f"{module}.{name}"
        if full in self.allowed:
            return self.allowed[full]
        raise pickle.UnpicklingError(f"weights-only load refuses the global {full}")


def allowed_globals(torch) -> dict:
    import _codecs

    found = {}
    old = getattr(torch, "_weights_only_unpickler", None)
    if old is not None and hasattr(old, "_get_allowed_globals"):
        found.update(old._get_allowed_globals())
    found["_codecs.encode"] = _codecs.encode
    return found


def install() -> bool:
    """On torch < 2, route `torch.load(weights_only=True)` through RestrictedUnpickler; True if it did."""
    import torch
    import torch.serialization as serialization

    if torch_major(torch.__version__) >= 2 or getattr(serialization, "_sparcl_compat", False):
        return False
    RestrictedUnpickler.allowed = allowed_globals(torch)
    module = types.ModuleType("sparcl_weights_only_unpickler")
    module.__dict__.update(  # a module built at run time: its attributes are set, not declared
        Unpickler=RestrictedUnpickler,
        load=lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load(),
        UnpicklingError=pickle.UnpicklingError,
    )
    serialization._weights_only_unpickler = module  # torch.load's weights-only branch reads this name
    setattr(serialization, "_sparcl_compat", True)  # our own mark (read by getattr above), unknown to torch
    return True
