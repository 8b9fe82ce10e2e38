"""hpo.data.cache keys: content digest and version count, fidelity knobs do not; entries of an older format are rebuilt."""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field

from hpo.data import cache as C
from hpo.data.cache import CACHE_FORMAT, DataCache, data_key, fingerprint


@dataclass
class Cfg:
    max_len: int = 10
    train_stride: int = 1  # declared a fidelity knob by name
    subsample: float = field(default=1.0, metadata={"fidelity": True})  # declared in the field metadata


def test_key_changes_with_content_and_version_not_with_a_fidelity_knob(tmp_path):
    cache = DataCache(tmp_path / "c")
    f = tmp_path / "data.csv"
    f.write_text("a,b\n1,2\n")
    key = data_key(Cfg(), fidelity=("train_stride",), version=1, digest=cache.content_digest([f]))
    assert data_key(Cfg(train_stride=4, subsample=0.5), fidelity=("train_stride",), version=1,
                    digest=cache.content_digest([f])) == key
    assert data_key(Cfg(max_len=11), fidelity=("train_stride",), version=1, digest=cache.content_digest([f])) != key
    assert data_key(Cfg(), fidelity=("train_stride",), version=2, digest=cache.content_digest([f])) != key
    f.write_text("a,b\n1,3\n")
    assert data_key(Cfg(), fidelity=("train_stride",), version=1, digest=cache.content_digest([f])) != key
    assert "train_stride" in data_key(Cfg())["data"] and "subsample" not in data_key(Cfg())["data"]
    assert data_key(Cfg(), fields=("max_len",))["data"] == {"max_len": 10}
    assert cache.content_digest([]) is None and cache.content_digest([tmp_path / "missing"]) is None


def test_a_fidelity_knob_shares_one_entry(tmp_path):
    cache, builds = DataCache(tmp_path / "c"), []
    for stride in (1, 2, 3):
        cache.get_or_build("ns", data_key(Cfg(train_stride=stride), fidelity=("train_stride",)), lambda: builds.append(1) or 42)
    assert builds == [1]


def test_the_format_is_part_of_every_key_and_an_old_entry_is_rebuilt(tmp_path, caplog):
    assert CACHE_FORMAT == 3 and C.MAGIC == b"HPOCACHE3\n"
    key = data_key(Cfg(), version=1)
    digest = fingerprint({"format": CACHE_FORMAT, "namespace": "ns", "key": key})
    path = tmp_path / "c" / "ns" / f"{digest[:32]}.pkl"
    path.parent.mkdir(parents=True)
    payload = pickle.dumps("stale")
    import hashlib

    path.write_bytes(b"HPOCACHE2\n" + hashlib.sha256(payload).digest() + payload)  # an entry of format 2's layout
    cache = DataCache(tmp_path / "c")
    with caplog.at_level(logging.WARNING, logger="hpo.data.cache"):
        assert cache.get_or_build("ns", key, lambda: "fresh") == "fresh"
    assert cache.stats.rebuilt == 1 and "rebuilding" in caplog.text
    assert DataCache(tmp_path / "c").get_or_build("ns", key, lambda: "again") == "fresh"  # the rebuilt entry is read back
