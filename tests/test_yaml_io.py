import pytest

from hpo.errors import SpecError
from hpo.yaml_io import loads_yaml


def test_yaml12_floats_are_numbers():
    doc = loads_yaml("a: 3e-4\nb: 1E5\nc: .5\nd: 1.0e-3\ne: '3e-4'\nf: \"2,3\"\ng: 2,3\nh: 7")
    assert doc == {"a": 3e-4, "b": 1e5, "c": 0.5, "d": 1e-3, "e": "3e-4", "f": "2,3", "g": "2,3", "h": 7}
    assert isinstance(doc["h"], int)


def test_duplicate_keys_and_syntax_errors_name_the_line():
    with pytest.raises(SpecError, match="line 2.*duplicate key 'lr'"):
        loads_yaml("lr: 1\nlr: 2\n", "s.yaml")
    with pytest.raises(SpecError, match=r"s.yaml: invalid YAML at line 2"):
        loads_yaml("a: [1, 2\nb: 3\n", "s.yaml")
