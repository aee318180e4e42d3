"""``python -m benchmarks.gpu_check``: the options, the package check, then the run."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from benchmarks import gpu_check
from benchmarks.gpu_check import OPTIONAL, PARTS, RESULTS, SIZES, missing_packages

log = logging.getLogger("gpu_check")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=gpu_check.__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=os.environ.get("DEVICE", "cuda"), choices=["cuda", "cpu"], help="DEVICE (default cuda)")
    parser.add_argument("--out", type=Path, default=None, help="where gpu.json / gpu.md go (default: a folder under /tmp)")
    parser.add_argument("--publish", action="store_true", help=f"write into {RESULTS}")
    parser.add_argument("--budget-s", type=float, default=float(os.environ.get("GPU_CHECK_BUDGET_S", 420)), help="global deadline in seconds")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (CPU tests)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of: " + ", ".join(PARTS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    missing = missing_packages()
    if missing:
        print(f"gpu_check: missing packages: {', '.join(missing)} (make gpu-prepare builds their wheels into .whl/)", file=sys.stderr)
        return 3
    absent = missing_packages(OPTIONAL)
    if absent:
        log.warning("optional packages missing: %s (their comparisons are left out)", ", ".join(absent))
    # after the package check: a missing package gives its one line, not a traceback
    import torch

    from benchmarks.gpu_check.check import run_check

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: DEVICE=cuda but torch sees no GPU (DEVICE=cpu for the CPU run)", file=sys.stderr)
        return 3
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    out = RESULTS if args.publish else (args.out or Path(tempfile.mkdtemp(prefix="gpu_check_")))
    results = run_check(args.device, out, args.budget_s, SIZES["tiny" if args.tiny else "full"], [p for p in PARTS if p in parts])
    print((out / "gpu.md").read_text())
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
