"""What a report must name to be reproducible: torch, python, device, date."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re


def device_slug() -> str:
    """Short device tag for file names: `cpu` or e.g. `cuda-nvidia-h100-80gb-hbm3`."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return "cpu"


def describe() -> dict:
    """Environment fields of a report (JSON-ready)."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        device = f"{props.name} (CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU)"
    else:
        device = f"cpu ({platform.machine()}, {os.cpu_count()} cores, no CUDA)"
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "device_slug": device_slug(),
        "platform": platform.platform(terse=True),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
