#!/usr/bin/env python3
"""Prints markdown tables from criterion's saved estimates: one table per group, each arm's median
time and throughput, and its ratio to the fastest peer arm and to the floor of the same run.

    python3 benches/scripts/table.py [target/criterion] [group-prefix ...]
"""
import json
import os
import sys

OURS = ("agentwire",)
NOT_PEERS = ("floor", "memcpy")


def main():
    args = sys.argv[1:]
    root = args.pop(0) if args and os.path.isdir(args[0]) else "target/criterion"
    prefixes = args or [""]
    groups = {}
    for dirpath, _dirs, files in os.walk(root):
        if "benchmark.json" not in files or not dirpath.endswith("/new"):
            continue
        bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
        est = json.load(open(os.path.join(dirpath, "estimates.json")))
        group = bench["group_id"]
        if not any(group.startswith(p) for p in prefixes):
            continue
        tp = bench.get("throughput") or {}
        nbytes = tp.get("Bytes") or tp.get("BytesDecimal")
        elems = tp.get("Elements")
        median_ns = est["median"]["point_estimate"]
        groups.setdefault(group, []).append(
            (bench["function_id"] or bench["value_str"], median_ns, nbytes, elems)
        )
    for group in sorted(groups):
        arms = sorted(groups[group], key=lambda a: a[1])
        peers = [a for a in arms if not a[0].startswith(OURS) and a[0] not in NOT_PEERS]
        best_peer = peers[0] if peers else None
        floor = next((a for a in arms if a[0] == "floor"), None)
        print(f"\n### {group}\n")
        print("| arm | median | MB/s | × best peer | × floor |")
        print("|---|---:|---:|---:|---:|")
        for name, ns, nbytes, _ in arms:
            mbs = f"{nbytes / ns * 1e3:.0f}" if nbytes else ""
            vs_peer = f"{best_peer[1] / ns:.2f}" if best_peer else ""
            vs_floor = f"{floor[1] / ns:.2f}" if floor else ""
            print(f"| {name} | {ns / 1e6:.3f} ms | {mbs} | {vs_peer} | {vs_floor} |")


if __name__ == "__main__":
    main()
