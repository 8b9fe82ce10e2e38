"""fusion-hpo: hyperparameter optimisation for multimodal fusion models.

Declarative search spaces (``search_spaces/*.yaml``) and studies (``studies/*.yaml``) run as pruned
Optuna studies of the models in ``models/``, stored in a relational study store, browsed in
optuna-dashboard and exported as re-runnable configs. The command line is ``hpo`` (:mod:`hpo.cli`).
"""

from __future__ import annotations


def _version() -> str:
    """The version, written once: ``version`` in pyproject.toml. From a source checkout (an editable install,
    or the tree on sys.path) the checkout's pyproject.toml is read, so a changed version shows without
    reinstalling; an installed wheel answers through :mod:`importlib.metadata`."""
    from pathlib import Path

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        try:
            import tomllib  # Python 3.11+

            project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
            if project.get("name") == "fusion-hpo" and isinstance(project.get("version"), str):
                return project["version"]
        except Exception:  # Python 3.10, or an unreadable file: the installed metadata
            pass
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("fusion-hpo")
    except PackageNotFoundError:
        return "0+unknown"  # neither installed nor a checkout


__version__ = _version()
