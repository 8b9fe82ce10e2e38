"""Crystal graph building time per structure (issue #17 item 4): today's builder against the builder
before it (the frozen copy in tests/models/_legacy_crystal_graphs.py), on the 50 JARVIS crystals of
``jarvis_alignn_sample/optb88vdw_bandgap``, in the same process and run.

    python bench/crystal_graphs.py            # 7 rounds, about half a minute
    python bench/crystal_graphs.py --quick    # 2 rounds: only checks the script runs
    python bench/crystal_graphs.py --json out.json

Three measurements, each in ms per structure (the default data settings: cutoff 8 Å, 12 neighbours):

- ``graph``: ``build_crystal_graph`` alone (periodic atom graph + line graph of bond angles);
- ``graph + text``: the same plus the generated description (``text.describe``: spglib space group,
  coordination), as the data loader does when the data carry no description;
- ``loader``: ``processing.build_structures`` end to end, uncached (reading the 50 POSCAR files,
  graphs, descriptions), with the builder swapped for the frozen one for the "before" column.

Rounds alternate between the two builders, so both see the same machine load; each figure is the
median over the rounds of the wall-clock time, and of the process's CPU time (``time.process_time``:
steadier than wall time on a machine other processes load; the work is single-threaded). Before timing, every graph of the new builder
is checked to be the frozen one's (same edges, images, line graph; vectors and cosines within 1e-6).
Timings on a shared machine depend on its load: the 1-minute load average is reported with them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

from common import ROOT, data, machine, save, table

LEGACY = ROOT / "tests" / "models" / "_legacy_crystal_graphs.py"
TARGET = "optb88vdw_bandgap"


def load_legacy():
    """The frozen builder, imported by path (the tests' copy; no package import of tests/)."""
    spec = importlib.util.spec_from_file_location("legacy_crystal_graphs", LEGACY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def records():
    from hpo.tasks import get_task

    T = get_task("crystal_text")
    spec = T.DatasetSpec.model_validate({"format": "alignn_folder", "path": str(data("jarvis_alignn_sample", TARGET))})
    return spec, T.DataConfig(), [r for r in spec.records(TARGET)]


def check_same(old, new, recs, cfg) -> int:
    import numpy as np

    for r in recs:
        a = old.build_crystal_graph(r.numbers, r.positions, r.cell, r.pbc, cutoff=cfg.cutoff, max_neighbors=cfg.max_neighbors)
        b = new.build_crystal_graph(r.numbers, r.positions, r.cell, r.pbc, cutoff=cfg.cutoff, max_neighbors=cfg.max_neighbors)
        same = (np.array_equal(a.edge_index, b.edge_index) and np.array_equal(a.edge_shift, b.edge_shift)
                and np.array_equal(a.lg_index, b.lg_index) and a.cutoff == b.cutoff
                and np.allclose(a.edge_vec, b.edge_vec, rtol=0, atol=1e-6) and np.allclose(a.lg_cos, b.lg_cos, rtol=0, atol=1e-6))
        if not same:
            raise SystemExit(f"{r.where}: the new builder's graph differs from the frozen one's")
    return len(recs)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 rounds (checks the script runs)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per builder (default 7; --quick 2)")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 7)

    from models.crystal_text import graphs as new
    from models.crystal_text import processing
    from models.crystal_text.text import describe

    old = load_legacy()
    spec, cfg, recs = records()
    n = check_same(old, new, recs, cfg)
    kw = {"cutoff": cfg.cutoff, "max_neighbors": cfg.max_neighbors}

    def graphs_only(module):
        for r in recs:
            module.build_crystal_graph(r.numbers, r.positions, r.cell, r.pbc, **kw)

    def with_text(module):
        for r in recs:
            g = module.build_crystal_graph(r.numbers, r.positions, r.cell, r.pbc, **kw)
            describe(r.numbers, r.positions, r.cell, r.pbc, g.edge_index, g.distances, symprec=cfg.symprec,
                     coordination_tolerance=cfg.coordination_tolerance)

    def loader(module):
        swapped = processing.build_crystal_graph
        processing.build_crystal_graph = module.build_crystal_graph
        try:
            processing.build_structures(spec, TARGET, cfg)
        finally:
            processing.build_crystal_graph = swapped

    load_before = os.getloadavg()[0]
    rows, result = [], {"machine": machine(), "structures": n, "rounds": rounds, "cutoff": cfg.cutoff,
                        "max_neighbors": cfg.max_neighbors, "identical_graphs": n, "ms_per_structure": {}}
    for name, fn in (("graph", graphs_only), ("graph + text", with_text), ("loader", loader)):
        wall, cpu = {old: [], new: []}, {old: [], new: []}
        for module in (old, new):  # warm-up (imports, spglib, file cache)
            fn(module)
        for _ in range(rounds):
            for module in (old, new):
                t0, c0 = time.perf_counter(), time.process_time()
                fn(module)
                wall[module].append((time.perf_counter() - t0) / n * 1e3)
                cpu[module].append((time.process_time() - c0) / n * 1e3)
        before, after = statistics.median(wall[old]), statistics.median(wall[new])
        cpu_before, cpu_after = statistics.median(cpu[old]), statistics.median(cpu[new])
        result["ms_per_structure"][name] = {"before": before, "after": after, "speedup": before / after,
                                            "cpu_before": cpu_before, "cpu_after": cpu_after, "cpu_speedup": cpu_before / cpu_after}
        rows.append([name, round(before, 3), round(after, 3), f"{before / after:.2f}x", round(cpu_before, 3), round(cpu_after, 3),
                     f"{cpu_before / cpu_after:.2f}x"])
        print(f"{name}: {before:.3f} -> {after:.3f} ms per structure ({before / after:.2f}x); CPU {cpu_before:.3f} -> "
              f"{cpu_after:.3f} ms ({cpu_before / cpu_after:.2f}x)", flush=True)
    result["load_average"] = [load_before, os.getloadavg()[0]]
    print(f"\n{n} JARVIS crystals, cutoff {cfg.cutoff:g} Å, {cfg.max_neighbors} neighbours; graphs identical to the frozen "
          f"builder's: {n}/{n}; median of {rounds} rounds; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    print(table(rows, ["ms per structure", "before (frozen)", "after", "speed-up", "CPU before", "CPU after", "CPU speed-up"]))
    save("crystal_graphs" + ("-quick" if args.quick else ""), result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
