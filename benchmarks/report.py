"""Tables from a saved pytest-benchmark run, in RESULTS.md's style: per group, each case's median time, its
speed relative to the group's baseline(s) and, where a case records the bytes it moves, achieved GB/s and
its share of a memory-bandwidth floor.

A case's ``extra_info`` (set by ``benchmarks/suite.py``'s ``record``) names it (``case``) and its baseline(s)
(``baseline``); the baseline is the case of that name in the same group with the same ``shape``, ``device``
and ``variant``. "x BASELINE" is the baseline's time over the case's (above 1: faster), per item when both
record ``items``. The floor is ``--bandwidth-gbs``, or a large ``torch`` copy (bytes read + written per
second) measured now on each device the cases ran on: run this on the machine that ran the benchmarks.

    pytest benchmarks/ --benchmark-only --benchmark-json=run.json
    python benchmarks/report.py run.json [--markdown RESULTS.md] [--bandwidth-gbs 4268]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def copy_bandwidth_gbs(device: str) -> float | None:
    """GB/s of a large copy on ``device`` (read + write), or None when that device is not here."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return None
    n = (1 << 30) if device.startswith("cuda") else (1 << 27)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(6):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        dst.copy_(src)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * n / statistics.median(times[1:]) / 1e9


def _key(info: dict, case: str) -> tuple:
    return case, tuple(info.get("shape", ())), info.get("device", ""), info.get("variant", "")


def _baselines(info: dict) -> list[str]:
    names = info.get("baseline", [])
    return [names] if isinstance(names, str) else list(names)


def group_table(group: str, cases: list[dict], floors: dict[str, float | None]) -> list[str]:
    """The Markdown lines of one group: header, then one row per case in the run's order."""
    by_key = {_key(c["extra_info"], c["extra_info"].get("case", c["name"])): c for c in cases}
    baseline_names = list(dict.fromkeys(name for c in cases for name in _baselines(c["extra_info"])))
    with_bytes = any("bytes" in c["extra_info"] for c in cases)
    header = ["case", "variant", "shape", "device", "median ms"] + [f"x {name}" for name in baseline_names]
    header += ["GB/s", "% of floor"] if with_bytes else []
    lines = [f"### {group}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in cases:
        info, median = c["extra_info"], c["stats"]["median"]
        row = [info.get("case", c["name"]), info.get("variant", ""), "x".join(map(str, info.get("shape", ()))),
               info.get("device", ""), f"{median * 1e3:.3f}"]
        for name in baseline_names:
            base = by_key.get(_key(info, name)) if name in _baselines(info) else None
            if base is None:
                row.append("-")
                continue
            ratio = base["stats"]["median"] / median
            if "items" in info and "items" in base["extra_info"]:
                ratio *= info["items"] / base["extra_info"]["items"]
            row.append(f"{ratio:.2f}")
        if with_bytes:
            gbs = info["bytes"] / median / 1e9 if "bytes" in info else None
            floor = floors.get(info.get("device", ""))
            row.append("-" if gbs is None else f"{gbs:.3g}")
            row.append("-" if gbs is None or not floor else f"{100 * gbs / floor:.0f}%")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def render(run: dict, bandwidth_gbs: float | None = None) -> str:
    """The Markdown report of a ``--benchmark-json`` run (a dict as pytest-benchmark writes it)."""
    groups: dict[str, list[dict]] = {}
    for bench in run["benchmarks"]:
        groups.setdefault(bench.get("group") or "(no group)", []).append(bench)
    devices = {b["extra_info"].get("device", "") for b in run["benchmarks"] if "bytes" in b["extra_info"]}
    if bandwidth_gbs is not None:
        floors, source = {d: bandwidth_gbs for d in devices}, f"{bandwidth_gbs:g} GB/s (given)"
    else:
        floors = {d: copy_bandwidth_gbs(d) for d in sorted(devices)}
        source = ", ".join(f"{d} copy {g:.0f} GB/s" if g else f"{d}: not measurable here" for d, g in floors.items())
    machine = run.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw") or machine.get("processor", "")
    lines = [f"Machine {machine.get('node', '?')} ({cpu}), {run.get('datetime', '')}; median of each case's "
             f"rounds; x BASELINE: the baseline's time over the case's (per item where both count items)"
             + (f"; bandwidth floor: {source}" if devices else ""), ""]
    for group, cases in groups.items():
        lines += group_table(group, cases, floors) + [""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a file written by pytest --benchmark-json")
    parser.add_argument("--markdown", metavar="OUT", help="also append the tables to OUT")
    parser.add_argument("--bandwidth-gbs", type=float, default=None,
                        help="memory-bandwidth floor in GB/s (default: measure a torch copy here)")
    args = parser.parse_args(argv)
    with open(args.run, encoding="utf-8") as f:
        table = render(json.load(f), args.bandwidth_gbs)
    print(table)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
