"""drug_target: a corpus of malformed data files, each refused before the first trial.

Every format the family reads (a DeepDTA folder: ``ligands_can.txt``, ``proteins.txt``, ``Y`` as text
and as a pickle, ``folds/``; a CSV of pairs) is broken in each way a stranger's file can be: empty,
truncated, missing fields or columns, non-numeric / NaN / infinite targets, Y of the wrong shape, fold
indices out of range or shared, empty strings, characters no encoder takes, ragged rows, too few rows
for the split. ``task.load`` must refuse each with a :class:`DataError` whose every line reads
``file: where: what must hold, but got X``; ``hpo validate`` and ``hpo run`` must exit 2 on them before
any trial, with nothing stored. NaN in ``Y`` is DeepDTA's documented "not measured" marker: kept.

Everything runs on tiny files written into ``tmp_path`` (never the shared data) in a few seconds.
"""

from __future__ import annotations

import json
import pickle
import textwrap

import numpy as np
import pytest

from hpo.cli import main
from hpo.errors import DataError
from hpo.tasks import get_task
from models.drug_target.data import DTADataset
from tests.conftest import stored_studies

Task = get_task("drug_target")
DATA_CFG = Task.DataConfig(max_smiles_len=12, max_protein_len=12)

# ---- a valid DeepDTA folder -------------------------------------------------------------------------
LIGANDS = {"11": "CCO", "22": "c1ccccc1N", "33": "CC(=O)Cl"}
PROTEINS = {"K1": "MKVLA", "K2": "MSTNPKPQRK", "K3": "GGHW", "K4": "MAAAWYHHC"}
KD = np.array([[10.0, 1000.0, np.nan, 0.5], [10000.0, 30.0, 2.0, 100.0], [1.0, 5000.0, 250.0, 10000.0]])
TRAIN_FOLDS = [[0, 1, 2], [3, 4, 5], [6, 7]]  # 11 measured pairs (one NaN): three training folds and a test fold
TEST_FOLD = [8, 9, 10]


def write_deepdta(folder, y_as="text"):
    (folder / "folds").mkdir(parents=True)
    (folder / "ligands_can.txt").write_text(json.dumps(LIGANDS))
    (folder / "proteins.txt").write_text(json.dumps(PROTEINS))
    write_y(folder, KD, y_as)
    (folder / "folds" / "train_fold_setting1.txt").write_text(json.dumps(TRAIN_FOLDS))
    (folder / "folds" / "test_fold_setting1.txt").write_text(json.dumps(TEST_FOLD))
    return folder


def write_y(folder, Y, y_as="text"):
    if y_as == "text":
        np.savetxt(folder / "Y", np.asarray(Y, dtype=float))
    else:
        with open(folder / "Y", "wb") as f:
            pickle.dump(Y, f, protocol=2)


def put(name, content):
    """A mutation that writes ``content`` (str or bytes) to ``name`` in the folder."""
    def apply(folder):
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return apply


def put_json(name, obj):
    return put(name, json.dumps(obj))


def put_y(Y, y_as="pickle"):
    return lambda folder: write_y(folder, Y, y_as)


def y_text(*lines):
    return put("Y", "\n".join(lines) + "\n")


def with_kd(r, c, value, y_as="text"):
    Y = KD.copy()
    Y[r, c] = value
    return put_y(Y, y_as)


def cut(name, keep):
    def apply(folder):
        path = folder / name
        path.write_bytes(path.read_bytes()[:keep])
    return apply


def ligands(**change):
    return put_json("ligands_can.txt", {**LIGANDS, **change})


def proteins(**change):
    return put_json("proteins.txt", {**PROTEINS, **change})


TRAIN, TEST = "folds/train_fold_setting1.txt", "folds/test_fold_setting1.txt"
GOOD_ROW = "CC(=O)Cl GGHW 1.0"

#: (case, mutation of the valid folder, dataset overrides, file that must be named, message fragment)
DEEPDTA_CORPUS = [
    # ligands_can.txt / proteins.txt
    ("ligands empty file", put("ligands_can.txt", ""), {}, "ligands_can.txt", "must hold a JSON object (an object ligand id -> SMILES), but got an empty file"),
    ("ligands cut JSON", put("ligands_can.txt", '{"11": "CCO", "22": "c1cc'), {}, "ligands_can.txt", "the file ends early: truncated?"),
    ("ligands a list", put_json("ligands_can.txt", ["CCO", "CCN", "CCC"]), {}, "ligands_can.txt", "must hold a JSON object (an object ligand id -> SMILES), but got a list"),
    ("ligands empty object", put_json("ligands_can.txt", {}), {}, "ligands_can.txt", "must hold at least one ligand"),
    ("ligands empty SMILES", ligands(**{"22": ""}), {}, "ligands_can.txt", "ligand 1 (id 22): SMILES must not be empty, but got ''"),
    ("ligands blank SMILES", ligands(**{"22": "   "}), {}, "ligands_can.txt", "ligand 1 (id 22): SMILES must not be empty"),
    ("ligands number for SMILES", ligands(**{"33": 42}), {}, "ligands_can.txt", "ligand 2 (id 33): SMILES must be a string, but got 42"),
    ("ligands null SMILES", ligands(**{"33": None}), {}, "ligands_can.txt", "SMILES must be a string, but got null"),
    ("ligands SMILES with a name after a tab", ligands(**{"11": "CCO\tethanol"}), {}, "ligands_can.txt",
     "ligand 0 (id 11): SMILES must be printable ASCII without spaces, but got '\\t' at position 3"),
    ("ligands SMILES non-ASCII", ligands(**{"11": "CC\u00e9O"}), {}, "ligands_can.txt", "printable ASCII without spaces, but got 'é'"),
    ("ligands repeated id", put("ligands_can.txt", '{"11": "CCO", "22": "CCN", "11": "CCC"}'), {}, "ligands_can.txt",
     "must name each id once (a repeated id shifts the rows of Y), but got '11' more than once"),
    ("ligands not UTF-8", put("ligands_can.txt", b'{"11": "CC\xffO"}'), {}, "ligands_can.txt", "must be UTF-8 text, but got byte 0xff"),
    ("proteins empty file", put("proteins.txt", b""), {}, "proteins.txt", "but got an empty file"),
    ("proteins empty sequence", proteins(K3=""), {}, "proteins.txt", "protein 2 (id K3): sequence must not be empty, but got ''"),
    ("proteins lower-case sequence", proteins(K2="mstnp"), {}, "proteins.txt",
     "protein 1 (id K2): sequence must be one-letter amino-acid codes A-Z, but got 'm' at position 0"),
    ("proteins digit in sequence", proteins(K4="MAAA1WY"), {}, "proteins.txt", "but got '1' at position 4"),
    ("proteins stop codon", proteins(K1="MKVLA*"), {}, "proteins.txt", "but got '*' at position 5"),
    ("proteins a list", put_json("proteins.txt", [["K1", "MKV"]]), {}, "proteins.txt", "must hold a JSON object"),
    # Y as text
    ("Y text empty file", put("Y", ""), {}, "Y", "must hold a drugs x proteins affinity matrix, but got an empty file"),
    ("Y text only comments", put("Y", "# no numbers\n\n"), {}, "Y", "but got no numbers"),
    ("Y text abc", y_text("10 1000 nan 0.5", "10000 30 abc 100", "1 5000 250 10000"), {}, "Y",
     "line 2 column 3: must be a number (nan: not measured), but got 'abc'"),
    ("Y text ragged row", y_text("10 1000 nan 0.5", "10000 30 2", "1 5000 250 10000"), {}, "Y",
     "line 2: must have 4 values (one per protein) like line 1, but got 3"),
    ("Y text inf", y_text("10 1000 nan 0.5", "10000 inf 2 100", "1 5000 250 10000"), {}, "Y",
     "measured affinities must be finite numbers, but got pair 4 (id Y[1, 1]: ligand 22, protein K2) = inf"),
    ("Y text -inf", y_text("10 1000 nan -inf", "10000 30 2 100", "1 5000 250 10000"), {}, "Y", "= -inf"),
    ("Y text overflow to inf", y_text("1e400 1000 nan 0.5", "10000 30 2 100", "1 5000 250 10000"), {}, "Y",
     "pair 0 (id Y[0, 0]: ligand 11, protein K1) = inf"),
    ("Y text extra column", y_text("1 2 3 4 5", "1 2 3 4 5", "1 2 3 4 5"), {}, "Y",
     "must have shape (ligands, proteins) = (3, 4) as ligands_can.txt and proteins.txt list, but got (3, 5)"),
    ("Y text missing row", y_text("10 1000 nan 0.5", "10000 30 2 100"), {}, "Y", "= (3, 4) as ligands_can.txt and proteins.txt list, but got (2, 4)"),
    ("Y text all nan", y_text("nan nan nan nan", "nan nan nan nan", "NaN NaN NaN NaN"), {}, "Y",
     "must hold at least one measured affinity (NaN marks a pair not measured), but got 12 NaN"),
    # Y as a pickle
    ("Y pickle inf", with_kd(2, 3, np.inf, "pickle"), {}, "Y", "measured affinities must be finite numbers, but got pair 10 (id Y[2, 3]: ligand 33, protein K4) = inf"),
    ("Y pickle 1-D", put_y(KD.reshape(-1)), {}, "Y", "must hold a 2-D matrix (drugs x proteins), but got shape (12,)"),
    ("Y pickle 3-D", put_y(KD.reshape(3, 2, 2)), {}, "Y", "but got shape (3, 2, 2)"),
    ("Y pickle transposed", put_y(KD.T.copy()), {}, "Y", "= (3, 4) as ligands_can.txt and proteins.txt list, but got (4, 3)"),
    ("Y pickle ragged lists", put_y([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0], [1.0, 2.0, 3.0, 4.0]]), {}, "Y",
     "must hold a rectangular matrix (every row as long as row 0: 4), but got row 1 of length 2"),
    ("Y pickle dict", put_y({"Y": KD.tolist()}), {}, "Y", "must hold a numeric matrix (drugs x proteins), but got a pickled dict"),
    ("Y pickle None", put_y(None), {}, "Y", "but got a pickled NoneType"),
    ("Y pickle strings", put_y([["1", "2", "3", "4"]] * 3), {}, "Y", "must hold numbers (NaN: not measured), but got dtype <U1"),
    ("Y pickle object array abc", put_y(np.array([[1.0, 2.0, np.nan, 4.0], [1.0, "abc", 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]], dtype=object)), {}, "Y",
     "must hold numbers (NaN: not measured), but got 'abc' at Y[1, 1]"),
    ("Y pickle bool", put_y(np.ones((3, 4), dtype=bool)), {}, "Y", "but got dtype bool"),
    ("Y pickle complex", put_y(KD.astype(complex)), {}, "Y", "but got dtype complex128"),
    ("Y pickle all nan", put_y(np.full((3, 4), np.nan)), {}, "Y", "must hold at least one measured affinity"),
    ("Y pickle truncated", lambda f: (put_y(KD)(f), cut("Y", 60)(f)), {}, "Y", "pickle"),
    ("Y pickle empty file", put("Y", b""), {"affinity_format": "pickle"}, "Y", "but got an empty file"),
    # folds
    ("test fold out of range", put_json(TEST, [8, 9, 11]), {}, TEST,
     "test fold: pair indices must lie in [0, 11) (the measured pairs of Y), but got entry 2 = 11"),
    ("test fold negative", put_json(TEST, [-1, 9, 10]), {}, TEST, "but got entry 0 = -1"),
    ("training fold out of range", put_json(TRAIN, [[0, 1, 2], [3, 4, 500], [6, 7]]), {}, TRAIN,
     "training fold 1: pair indices must lie in [0, 11) (the measured pairs of Y), but got entry 2 = 500"),
    ("training fold float index", put_json(TRAIN, [[0, 1, 2.5], [3, 4, 5], [6, 7]]), {}, TRAIN,
     "training fold 0: pair indices must be integers, but got entry 2 = 2.5"),
    ("training fold bool index", put_json(TRAIN, [[0, 1, True], [3, 4, 5], [6, 7]]), {}, TRAIN, "must be integers, but got entry 2 = true"),
    ("training fold string index", put_json(TRAIN, [[0, 1, "2"], [3, 4, 5], [6, 7]]), {}, TRAIN, "must be integers, but got entry 2 = '2'"),
    ("test fold NaN index", put(TEST, "[8, 9, NaN]"), {}, TEST, "test fold: pair indices must be integers, but got entry 2 = nan"),
    ("test fold nested", put_json(TEST, [[8, 9], [10]]), {}, TEST, "must be integers, but got entry 0 = [8, 9]"),
    ("test fold empty", put_json(TEST, []), {}, TEST, "test fold: must hold at least one pair index, but got an empty list"),
    ("training fold empty", put_json(TRAIN, [[0, 1, 2], [], [3, 4, 5, 6, 7]]), {}, TRAIN, "training fold 1: must hold at least one pair index"),
    ("training fold not a list", put_json(TRAIN, [[0, 1, 2], 3, [4, 5, 6, 7]]), {}, TRAIN, "training fold 1: must be a list of pair indices, but got 3"),
    ("one training fold", put_json(TRAIN, [[0, 1, 2, 3, 4, 5, 6, 7]]), {}, TRAIN,
     "must hold at least two training folds (one is the validation split), but got 1"),
    ("no training folds", put_json(TRAIN, []), {}, TRAIN, "but got 0"),
    ("training folds an object", put_json(TRAIN, {"0": [0, 1]}), {}, TRAIN, "must hold a JSON list (a list of training folds, each a list of pair indices), but got a dict"),
    ("training folds empty file", put(TRAIN, ""), {}, TRAIN, "but got an empty file"),
    ("test fold cut JSON", put(TEST, "[8, 9, 1"), {}, TEST, "must be valid JSON (a list of test pair indices)"),
    ("train and test share a pair", put_json(TEST, [7, 8, 9, 10]), {}, TEST,
     "the test fold: must share no pair with training fold 2, but got pair 7 (Y[2, 0]: ligand 33, protein K1) in both"),
    ("two training folds share a pair", put_json(TRAIN, [[0, 1, 2], [2, 3, 4, 5], [6, 7]]), {}, TRAIN,
     "training fold 1: must share no pair with training fold 0, but got pair 2 (Y[0, 3]: ligand 11, protein K4) in both"),
    ("pair twice in a fold", put_json(TEST, [8, 9, 10, 9]), {}, TEST, "test fold: must list each pair index once, but got pair 9"),
    ("val_fold past the folds", lambda f: None, {"val_fold": 3}, "task.dataset.val_fold", "must be < the number of training folds"),
    # Davis Kd with pkd: true
    ("pkd zero Kd", with_kd(0, 0, 0.0), {"pkd": True}, "Y",
     "pkd: true needs every Kd to be a finite number > 0 (nM), but got pair 0 (id Y[0, 0]: ligand 11, protein K1) = 0.0"),
    ("pkd negative Kd", with_kd(1, 2, -3.0, "pickle"), {"pkd": True}, "Y", "needs every Kd to be a finite number > 0 (nM), but got pair 5"),
    ("pkd inf Kd", with_kd(1, 1, np.inf), {"pkd": True}, "Y", "measured affinities must be finite numbers, but got pair 4"),
]

# ---- a valid CSV --------------------------------------------------------------------------------------
DRUGS = ["CCO", "CCN", "c1ccccc1", "CC(=O)O", "CCCl", "OCCO", "NCCN", "CC=O"]
SEQS = ["MKVLA", "MSTNPK", "GGHWY", "MAAAWY", "KLLVV"]
HEADER = "smiles,sequence,affinity"


def csv_rows(n=20):
    return [f"{DRUGS[i % 8]},{SEQS[(i * 3) % 5]},{11.0 + 0.1 * i:.3f}" for i in range(n)]


def csv_text(*replace, n=20, header=HEADER):
    """The valid CSV with data rows replaced: ``(row number from 1, new text)`` pairs."""
    rows = csv_rows(n)
    for i, text in replace:
        rows[i - 1] = text
    return "\n".join([header, *rows]) + "\n"


#: (case, CSV content, dataset overrides, message fragment); the file must be named in each line
CSV_CORPUS = [
    ("empty file", "", {}, "must be a readable CSV file"),
    ("header only", HEADER + "\n", {}, "must hold at least 3 rows (pairs) for a training, validation and test split, but got 0"),
    ("two rows", csv_text(n=2), {}, "must hold at least 3 rows"),
    ("missing target column", csv_text(header="smiles,sequence,kd"), {}, "task.target: must name a column of"),
    ("missing sequence column", csv_text(header="smiles,protein,affinity"), {}, "task.dataset.sequence_column: must name a column of"),
    ("ragged row with an extra field", csv_text((3, "CCO,MKVLA,1.5,7")), {}, "row 3 (line 4): must have 3 fields like the header, but got 4"),
    ("ragged row missing a field", csv_text((5, "CCO,MKVLA")), {}, "row 5 (line 6): must have 3 fields like the header, but got 2"),
    ("abc target", csv_text((2, "CCO,MKVLA,abc")), {}, "affinity (column 3) must be numbers, but got row 2 = 'abc'"),
    ("empty target", csv_text((7, "CCO,MKVLA,")), {}, "must be numbers, but got row 7 = ''"),
    ("nan target", csv_text((4, "CCO,MKVLA,nan")), {}, "affinity (column 3) must be finite numbers, but got row 4 = nan"),
    ("inf target", csv_text((4, "CCO,MKVLA,inf")), {}, "must be finite numbers, but got row 4 = inf"),
    ("-inf target", csv_text((9, "CCO,MKVLA,-Infinity")), {}, "row 9 = -inf"),
    ("empty SMILES", csv_text((2, ",MKVLA,1.0")), {}, "row 2 (line 3): smiles must not be empty, but got ''"),
    ("empty sequence", csv_text((6, "CCO,  ,1.0")), {}, "row 6 (line 7): sequence must not be empty"),
    ("SMILES with a space", csv_text((2, "CC O,MKVLA,1.0")), {}, "smiles must be printable ASCII without spaces, but got ' ' at position 2"),
    ("sequence with a digit", csv_text((2, "CCO,MKV3LA,1.0")), {}, "sequence must be one-letter amino-acid codes A-Z, but got '3' at position 3"),
    ("not UTF-8", csv_text().encode() + b"CCO,MK\xfeV,1.0\n", {}, "must be UTF-8 text, but got byte 0xfe"),
    ("unterminated quote", csv_text((4, '"CCO,MKVLA,1.0')), {}, "must be well-formed CSV, but got unexpected end of data"),
    ("repeated column", csv_text(header="smiles,sequence,affinity,affinity"), {}, "must name column 'affinity' once, but got it 2 times"),
    ("test split left empty", csv_text(n=10), {"test_fraction": 0.04}, "(the test split would be empty)"),
    ("test_fraction 0", csv_text(n=10), {"test_fraction": 0.0}, "(the test split would be empty)"),
    ("too few rows for the split", csv_text(n=4), {"test_fraction": 0.5, "val_fraction": 0.4},
     "to leave no split empty (at least 5 pairs), but got 4 pairs (the training split would be empty)"),
    ("cold split with one drug", "\n".join([HEADER, *[f"CCO,{SEQS[i % 5]},{i}.0" for i in range(12)]]) + "\n", {"split": "cold_drug"},
     "but got 1 drugs"),
    ("pkd zero Kd", csv_text((3, "CCO,MKVLA,0")), {"pkd": True}, "pkd: true needs every Kd to be a finite number > 0 (nM), but got row 3 = 0.0"),
    ("pkd negative Kd", csv_text((8, "CCO,MKVLA,-5")), {"pkd": True}, "but got row 8 = -5.0"),
    ("pkd inf Kd", csv_text((8, "CCO,MKVLA,inf")), {"pkd": True}, "must be finite numbers, but got row 8 = inf"),
]


def assert_lines_name_file_and_value(message: str, file_hint: str):
    """Each line of a refusal is ``file: [where: ]what must hold, but got X`` and names the bad file."""
    lines = [line for line in message.splitlines() if line.strip()]
    assert lines, message
    for line in lines:
        # (the pickle reader, hpo/data/safe_pickle.py, says "..., but reading it failed: X")
        assert ": " in line and (", but got " in line or ", but reading it failed" in line), line
        head = line.split(": ", 1)[0]
        assert head.endswith(file_hint) or head == file_hint, (file_hint, line)


def make_deepdta(tmp_path, mutate, y_as="text"):
    folder = write_deepdta(tmp_path / "davis", y_as)
    mutate(folder)
    return folder


def refusal_deepdta(tmp_path, mutate, overrides) -> str:
    folder = make_deepdta(tmp_path, mutate)
    spec = DTADataset.model_validate({"format": "deepdta", "path": str(folder), **overrides})
    with pytest.raises(DataError) as e:
        Task(spec).load(DATA_CFG)
    return str(e.value)


def refusal_csv(tmp_path, content, overrides) -> str:
    path = tmp_path / "pairs.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    spec = DTADataset.model_validate({"format": "csv", "path": str(path), **overrides})
    with pytest.raises(DataError) as e:
        Task(spec, target="affinity").load(DATA_CFG)
    return str(e.value)


# ---- the valid files load (so every refusal below is the mutation's doing) -------------------------------
@pytest.mark.parametrize("y_as", ["text", "pickle"])
def test_the_valid_deepdta_folder_loads_and_nan_means_not_measured(tmp_path, y_as):
    folder = write_deepdta(tmp_path / "d", y_as)
    splits = Task(DTADataset.model_validate({"format": "deepdta", "path": str(folder)})).load(DATA_CFG)
    assert {k: splits.size(k) for k in ("train", "val", "test")} == {"train": 5, "val": 3, "test": 3}
    all_y = np.concatenate([splits[k].y for k in ("train", "val", "test")])
    assert np.isfinite(all_y).all() and len(all_y) == int((~np.isnan(KD)).sum())  # the NaN pair is left out, not kept


def test_nan_spellings_in_a_text_y_are_not_measured_pairs(tmp_path):
    folder = write_deepdta(tmp_path / "d")
    (folder / "Y").write_text("# Kd (nM)\n10 1000 NaN 0.5\n\n10000 30 2 100\n1 5000 250 10000\n")
    splits = Task(DTADataset.model_validate({"format": "deepdta", "path": str(folder), "pkd": True})).load(DATA_CFG)
    assert splits.info["n_pairs"] == 11
    assert np.isfinite(splits["train"].y).all()


def test_the_valid_csv_loads(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text(csv_text())
    splits = Task(DTADataset.model_validate({"format": "csv", "path": str(path)}), target="affinity").load(DATA_CFG)
    assert splits.info["n_pairs"] == 20 and all(splits.size(k) > 0 for k in ("train", "val", "test"))


def test_characters_outside_the_alphabet_encode_as_unk_and_are_counted(tmp_path):
    """DeepDTA's alphabets lack J (proteins) and * (SMILES): such strings are valid, and what becomes
    <unk> is counted in the data info (and logged), not hidden."""
    folder = write_deepdta(tmp_path / "d")
    (folder / "proteins.txt").write_text(json.dumps({**PROTEINS, "K3": "GJHW"}))
    (folder / "ligands_can.txt").write_text(json.dumps({**LIGANDS, "11": "C*O"}))
    splits = Task(DTADataset.model_validate({"format": "deepdta", "path": str(folder)})).load(DATA_CFG)
    assert splits.info["unknown_tokens"] == {"smiles": 1, "protein": 1}


# ---- the corpus -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case, mutate, overrides, file, fragment", DEEPDTA_CORPUS, ids=[c[0] for c in DEEPDTA_CORPUS])
def test_malformed_deepdta_folder_is_refused(tmp_path, case, mutate, overrides, file, fragment):
    msg = refusal_deepdta(tmp_path, mutate, overrides)
    assert fragment in msg, msg
    assert_lines_name_file_and_value(msg, file)


@pytest.mark.parametrize("case, content, overrides, fragment", CSV_CORPUS, ids=[c[0] for c in CSV_CORPUS])
def test_malformed_csv_is_refused(tmp_path, case, content, overrides, fragment):
    msg = refusal_csv(tmp_path, content, overrides)
    assert fragment in msg, msg
    assert_lines_name_file_and_value(msg, "pairs.csv")


def test_every_problem_of_a_file_is_listed_not_only_the_first(tmp_path):
    msg = refusal_csv(tmp_path, csv_text((2, ",MKVLA,1"), (4, "CCO,MKVLA"), (6, "CCO,mk,2")), {})
    lines = msg.splitlines()
    assert len(lines) == 3 and "row 2 (line 3)" in lines[0] and "row 4 (line 5)" in lines[1] and "row 6 (line 7)" in lines[2]
    many = refusal_csv(tmp_path, csv_text(*[(i, "CCO,MKVLA,inf") for i in range(1, 13)]), {})
    assert "row 1 = inf" in many and "row 5 = inf" in many and "(and 7 more)" in many


def test_the_corpus_is_refused_before_training(tmp_path, report_figures):
    """Every malformed file of the corpus is refused by the load a trial (and ``hpo validate``) does."""
    refused = {"deepdta": 0, "csv": 0}
    for k, (_, mutate, overrides, _, fragment) in enumerate(DEEPDTA_CORPUS):
        if fragment in refusal_deepdta(tmp_path / f"d{k}", mutate, overrides):
            refused["deepdta"] += 1
    for k, (_, content, overrides, fragment) in enumerate(CSV_CORPUS):
        (tmp_path / f"c{k}").mkdir()
        if fragment in refusal_csv(tmp_path / f"c{k}", content, overrides):
            refused["csv"] += 1
    report_figures("drug_target malformed data files refused before training",
                   {"deepdta": f"{refused['deepdta']}/{len(DEEPDTA_CORPUS)}", "csv": f"{refused['csv']}/{len(CSV_CORPUS)}"})
    assert refused == {"deepdta": len(DEEPDTA_CORPUS), "csv": len(CSV_CORPUS)}


# ---- through the command line -----------------------------------------------------------------------------
STUDY = """
name: {name}
task:
  family: drug_target
  dataset: {dataset}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
  fixed: {{hidden_dim: 16, feature_dim: 16, fusion_heads: 2, fusion_layers: 1, embed_dim: 8, encoder_layers: 1,
           max_smiles_len: 12, max_protein_len: 12}}
objectives: [val_rmse]
sampler: {{type: random, seed: 0}}
pruner: {{type: none}}
budget: {{n_trials: 1}}
training: {{epochs: 1, batch_size: 4}}
storage: sqlite:///{db}
artifacts: {artifacts}
"""


def write_study(tmp_path, dataset: dict, name="bad-dta"):
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(STUDY).format(name=name, dataset=json.dumps(dataset), db=tmp_path / "hpo.db",
                                                  artifacts=tmp_path / "artifacts"))
    return path


CLI_CASES = ["Y text inf", "Y text abc", "Y pickle inf", "test fold out of range", "train and test share a pair",
             "pkd inf Kd", "proteins empty sequence", "ligands cut JSON"]
CLI_CSV_CASES = ["ragged row with an extra field", "inf target", "abc target", "test split left empty", "empty SMILES"]


def test_validate_accepts_the_valid_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_deepdta(tmp_path / "davis")
    assert main(["validate", str(write_study(tmp_path, {"format": "deepdta", "path": "davis"}))]) == 0
    assert "valid" in capsys.readouterr().out


@pytest.mark.parametrize("case", CLI_CASES)
def test_validate_refuses_a_malformed_deepdta_folder_with_exit_2(tmp_path, monkeypatch, capsys, case):
    _, mutate, overrides, _, fragment = next(c for c in DEEPDTA_CORPUS if c[0] == case)
    monkeypatch.chdir(tmp_path)
    make_deepdta(tmp_path, mutate)
    study = write_study(tmp_path, {"format": "deepdta", "path": "davis", **overrides})
    assert main(["validate", str(study)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err, err


@pytest.mark.parametrize("case", CLI_CSV_CASES)
def test_validate_refuses_a_malformed_csv_with_exit_2(tmp_path, monkeypatch, capsys, case):
    _, content, overrides, fragment = next(c for c in CSV_CORPUS if c[0] == case)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pairs.csv").write_text(content)
    study = write_study(tmp_path, {"format": "csv", "path": "pairs.csv", **overrides})
    assert main(["validate", str(study)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err, err


@pytest.mark.parametrize("fmt", ["deepdta", "csv"])
def test_run_on_a_malformed_file_exits_2_and_stores_nothing(tmp_path, monkeypatch, capsys, fmt):
    monkeypatch.chdir(tmp_path)
    if fmt == "deepdta":
        make_deepdta(tmp_path, y_text("10 1000 nan 0.5", "10000 inf 2 100", "1 5000 250 10000"))
        dataset, fragment = {"format": "deepdta", "path": "davis", "pkd": True}, "= inf"
    else:
        (tmp_path / "pairs.csv").write_text(csv_text((3, "CCO,MKVLA,1.5,7")))
        dataset, fragment = {"format": "csv", "path": "pairs.csv"}, "must have 3 fields like the header, but got 4"
    assert main(["run", str(write_study(tmp_path, dataset))]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err, err
    assert stored_studies(tmp_path / "hpo.db") == []
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").rglob("*"))
