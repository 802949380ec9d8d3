"""One linear product's cost under each instruction-set cap of ``toolmaster.cpu_isa``, bf16 and fp32.

Each cap runs in its own child process (the libraries read their caps when they start). Section "A host
without AVX-512, emulated" of docs/performance.md.

    .venv/bin/python experiments/perf/isa_products.py
"""

from __future__ import annotations

import os
import subprocess
import sys

CHILD = """
import time, torch
torch.manual_seed(0)
cells = []
for dtype in (torch.bfloat16, torch.float32):
    weight = torch.randn(1536, 576, dtype=dtype)
    for rows, calls in ((8, 2000), (400, 100)):
        x = torch.randn(rows, 576, dtype=dtype)
        for _ in range(20):
            torch.nn.functional.linear(x, weight)
        start = time.perf_counter()
        for _ in range(calls):
            torch.nn.functional.linear(x, weight)
        cells.append(f"{(time.perf_counter() - start) / calls * 1e6:.0f} us")
print(" | ".join(cells))
"""


def main() -> None:
    from toolmaster.cpu_isa import CAP_VARIABLES, LEVELS

    print("| cap | bf16, 8 rows | bf16, 400 rows | fp32, 8 rows | fp32, 400 rows |")
    print("|---|---|---|---|---|")
    for name, caps in [("native", {}), *LEVELS.items()]:
        env = {k: v for k, v in os.environ.items() if k not in CAP_VARIABLES} | caps
        out = subprocess.run(
            [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
        )
        print(f"| {name} | {out.stdout.strip()} |")


if __name__ == "__main__":
    main()
