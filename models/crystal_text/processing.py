"""From raw records to cached arrays: graphs, line graphs, descriptions, the split and token ids.

Two cache entries per dataset, so a study builds graphs once:

1. *structures* (expensive): every usable record's atom graph, line graph and description, keyed by
   the input files' content digest, the target and the graph/description settings.
2. *split* (cheap): the split indices (:func:`hpo.data.split.random_split` with ``rule="floor"``;
   ``split: alignn``: ALIGNN's own, :func:`hpo.data.split.alignn_split`; ``split: matbench``: a Matbench fold; or the explicit ``split_file`` /
   ``split_field``), the vocabulary of the training descriptions, every description's token ids and the
   training target statistics, keyed by entry 1's key plus the split and tokenisation settings.

Both are plain numpy arrays and lists (ragged per-structure arrays are concatenated, with offsets),
which pickle fast and do not depend on the torch / PyG version.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any, Optional

import numpy as np

from hpo.data.scaling import Standardizer
from hpo.errors import DataError
from models.crystal_text.config import CrystalDataConfig
from models.crystal_text.data import CrystalTextDataset, RawStructure, target_value
from models.crystal_text.graphs import build_crystal_graph
from models.crystal_text.text import build_vocab, describe, encode, tokenize

logger = logging.getLogger(__name__)

#: bump when the content of cached entries changes (2: entries are built only from data that passed the
#: record checks, so an entry built before them, from a file they refuse, is never a hit)
PROCESSING_VERSION = 2
#: dataset settings of the split entry (left out of the structures entry's key)
#: (split_file_digest: the explicit split file's content; split_field changes entry 1, which stores the labels)
SPLIT_FIELDS = ("val_fraction", "test_fraction", "split_seed", "max_samples", "split", "train_fraction", "split_file",
                "split_file_digest")
#: data-config fields each entry depends on (keys by :func:`hpo.data.cache.data_key`)
STRUCTURE_SETTINGS = ("cutoff", "max_neighbors", "description_source", "symprec", "coordination_tolerance")
TOKEN_SETTINGS = ("max_text_tokens", "min_token_freq", "max_vocab_size", "lowercase")
#: malformed records listed in one error (each one line); the rest are counted
MAX_PROBLEMS = 20


def build_structures(spec: CrystalTextDataset, target: Optional[str], data_cfg: CrystalDataConfig) -> dict[str, Any]:
    """Read every record, skip (and count) those whose target is documented as missing ("na"), build
    graphs and descriptions. Every malformed record is a line of one :class:`DataError` (up to
    ``MAX_PROBLEMS``), raised before anything is cached."""
    ids, targets, descriptions, split_labels = [], [], [], []
    numbers, edge_index, edge_vec, lg_index, lg_cos = [], [], [], [], []
    n_nodes, n_edges, n_lg = [], [], []
    skipped, grown, from_data, n_read = 0, 0, 0, 0
    problems: list[str] = []
    more = 0  # malformed records beyond the first MAX_PROBLEMS (counted, not listed)
    label = spec.label()

    def refuse(error: DataError | str) -> None:
        nonlocal more
        if len(problems) >= MAX_PROBLEMS:
            more += 1
        else:
            problems.extend(line for line in str(error).splitlines() if line.strip())

    for rec in spec.records(target):
        if isinstance(rec, DataError):  # a record the reader refused
            refuse(rec)
            continue
        n_read += 1
        try:
            y = target_value(rec, target)
            if y is None:
                skipped += 1
                continue
            g = _graph(rec, data_cfg)
        except DataError as e:
            refuse(e)
            continue
        grown += g.cutoff > data_cfg.cutoff
        text = rec.description if data_cfg.description_source != "generated" else None
        if text is None and data_cfg.description_source == "data":
            refuse(f"{rec.where or label}: must have a text description, as description_source is 'data', but got none")
            continue
        if problems:  # the data will be refused: check the rest, build nothing more
            continue
        if text is None:
            text = describe(rec.numbers, rec.positions, rec.cell, rec.pbc, g.edge_index, g.distances,
                            symprec=data_cfg.symprec, coordination_tolerance=data_cfg.coordination_tolerance)
        else:
            from_data += 1
        ids.append(rec.id)
        split_labels.append(rec.split)
        targets.append(y)
        descriptions.append(text)
        numbers.append(g.numbers)
        edge_index.append(g.edge_index)
        edge_vec.append(g.edge_vec)
        lg_index.append(g.lg_index)
        lg_cos.append(g.lg_cos)
        n_nodes.append(len(g.numbers))
        n_edges.append(g.edge_index.shape[1])
        n_lg.append(g.lg_index.shape[1])
        if len(ids) % 5000 == 0:
            logger.info("built graphs of %d structures", len(ids))
    if problems:
        if more:
            problems.append(f"{label}: every record must be well-formed, but got {more} more malformed records than the "
                            f"{MAX_PROBLEMS} listed above")
        raise DataError("\n".join(problems))
    if skipped:
        logger.warning("%s: skipped %d of %d records whose target %r is missing (\"na\" or null)", label, skipped, n_read, target)
    if not ids:
        raise DataError(f"{label}: must hold at least one record with a value of the target {target!r}, but got none "
                        f"({n_read} read, {skipped} skipped as \"na\")")
    if grown:
        logger.info("%d of %d structures needed a cutoff above %.1f Å to give every atom %d neighbours",
                    grown, len(ids), data_cfg.cutoff, data_cfg.max_neighbors)
    return {
        "ids": ids,
        **({"split_labels": split_labels} if getattr(spec, "split_field", None) is not None else {}),
        "targets": np.asarray(targets, dtype=np.float64),
        "descriptions": descriptions,
        "numbers": np.concatenate(numbers),
        "node_ptr": _ptr(n_nodes),
        "edge_index": np.concatenate(edge_index, axis=1),
        "edge_vec": np.concatenate(edge_vec),
        "edge_ptr": _ptr(n_edges),
        "lg_index": np.concatenate(lg_index, axis=1),
        "lg_cos": np.concatenate(lg_cos),
        "lg_ptr": _ptr(n_lg),
        "stats": {"read": n_read, "skipped_missing_target": skipped, "cutoff_grown": int(grown),
                  "descriptions_from_data": from_data},
    }


def _graph(rec: RawStructure, data_cfg: CrystalDataConfig):
    """The graph of one record; a structure the builder refuses (it would give NaN/inf features) is a
    :class:`DataError` naming the record."""
    at = rec.where or f"record {rec.id!r}"
    if len(rec.numbers) == 0:
        raise DataError(f"{at}: must hold at least one atom, but got none")
    try:
        return build_crystal_graph(rec.numbers, rec.positions, rec.cell, rec.pbc,
                                   cutoff=data_cfg.cutoff, max_neighbors=data_cfg.max_neighbors)
    except (ValueError, np.linalg.LinAlgError) as e:
        raise DataError(f"{at}: {e}") from None


def _ptr(counts: list[int]) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64)


def split_parts(structures: dict, spec: CrystalTextDataset) -> dict[str, np.ndarray]:
    """Sorted indices of train / val / test over the usable records: the dataset's own definition
    (:meth:`models.crystal_text.data.CrystalTextDataset.split_parts`: explicit, ALIGNN's, a Matbench fold or
    the seeded random split)."""
    return spec.split_parts(structures)


def build_split(structures: dict, spec: CrystalTextDataset, data_cfg: CrystalDataConfig) -> dict[str, Any]:
    """Split, vocabulary (training descriptions only), token ids and the training target statistics."""
    parts = split_parts(structures, spec)
    tokens = [tokenize(t, data_cfg.lowercase) for t in structures["descriptions"]]
    vocab = build_vocab((tokens[i] for i in parts["train"]), min_freq=data_cfg.min_token_freq, max_size=data_cfg.max_vocab_size)
    index = {t: i for i, t in enumerate(vocab)}
    ids = [encode(t, index, data_cfg.max_text_tokens) for t in tokens]
    scaler = Standardizer.fit(structures["targets"][parts["train"]], min_std=1e-12)  # the training split only
    return {
        "parts": parts,
        "vocab": vocab,
        "token_ids": np.concatenate(ids),
        "token_ptr": _ptr([len(t) for t in ids]),
        "target_mean": scaler.mean,
        "target_std": scaler.scale,
        "data_config": asdict(data_cfg),
    }
