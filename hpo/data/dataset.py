"""The base of every ``task.dataset`` section: :data:`DataPath` and :class:`DatasetSpec`.

A family declares one :class:`DatasetSpec` subclass per file format (``format: Literal["name"]``) under
a base of its own; validating the base dispatches on ``format`` like a pydantic tagged union. A spec says
which input files key the cache (:meth:`~DatasetSpec.source_files`), checks cheaply that they resolve
(:meth:`~DatasetSpec.check`) and reads them (:meth:`~DatasetSpec.read`). Split fractions are declared
by name (:attr:`~DatasetSpec.split_fractions`) and validated here, once for every format: their sum must
leave a non-empty rest.

An explicit split is declared here too, once for every family: ``split_file`` (a JSON or CSV file of ids
or row indices per part, :func:`hpo.data.split.read_split_file`) or ``split_field`` (a column / record
field whose values are train / val / test). A format opts in by mixing in :class:`SplitFile` / :class:`SplitField`;
the file is read and checked (shape, overlaps, empty parts) by every format's ``check``, before the
first trial; ids are matched to the records when the data is read (:func:`hpo.data.split.explicit_split`).
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

if typing.TYPE_CHECKING:
    from hpo.errors import Problem


def _resolve_data_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    value = Path(value).expanduser()
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return value.resolve() if not value.is_absolute() else value


#: A file or folder named in a study; relative paths are resolved against the study file's folder
#: (the loader passes it as validation context ``base_dir``). Existence is checked by ``Task.check``.
DataPath = Annotated[Path, AfterValidator(_resolve_data_path)]


class DatasetSpec(BaseModel):
    """Base of a task's ``task.dataset`` section.

    A family with several formats declares a base subclass (the task's ``DatasetSpec``) and one
    subclass per format with ``format: Literal["name"]``. Validating the base returns the instance of
    the subclass that ``format`` names; a missing or unknown ``format`` is reported like a pydantic
    tagged union (listing the formats). :meth:`formats` and :meth:`variant_for` name the subclasses.

    ``split_fractions`` names the fields holding split fractions, in the order messages name them
    (e.g. ``("val_fraction", "test_fraction")``); their sum must be < 1 so that the rest (the training
    part, or the test part when a ``train`` fraction is named) is not empty.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    split_fractions: ClassVar[tuple[str, ...]] = ()
    #: how a format matches ``split_file`` entries (for its docs)
    split_file_ids: ClassVar[str] = "row indices (0-based)"
    #: settings that a random split reads and an explicit split replaces (refused beside one)
    random_split_settings: ClassVar[tuple[str, ...]] = ("split_seed",)
    #: settings added after caches were keyed: left out of :meth:`settings` while None (old keys stay valid)
    keyed_when_set: ClassVar[tuple[str, ...]] = ("split_file", "split_field")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("check")
        if own is not None and not getattr(own, "_checks_split", False):
            def check(self, target: str | None = None, _own=own):
                problems = list(_own(self, target))
                return problems + [p for p in self.check_split() if p not in problems]
            check._checks_split = True  # type: ignore[attr-defined]
            check.__doc__ = own.__doc__
            cls.check = check  # every format's check also checks the explicit split (read once, before the first trial)

    @model_validator(mode="wrap")
    @classmethod
    def _dispatch_on_format(cls, data: Any, handler, info: ValidationInfo):
        if isinstance(data, dict) and cls is not DatasetSpec and not _literal_format(cls):
            formats = cls.formats()
            if formats:
                fmt = data.get("format")
                if fmt in formats:
                    return formats[fmt].model_validate(data, context=info.context)
                tags = ", ".join(repr(k) for k in sorted(formats))
                err = ({"type": "union_tag_not_found", "loc": (), "input": data, "ctx": {"discriminator": "'format'"}}
                       if fmt is None else
                       {"type": "union_tag_invalid", "loc": (), "input": data,
                        "ctx": {"discriminator": "'format'", "tag": str(fmt), "expected_tags": tags}})
                raise ValidationError.from_exception_data(cls.__name__, [err])
        return handler(data)

    @model_validator(mode="after")
    def _split_fractions_leave_a_rest(self):
        names = self.split_fractions
        if names:
            values = [getattr(self, name) for name in names]
            if sum(values) >= 1.0:
                rest = "test" if any(name.startswith("train") for name in names) else "training"
                raise ValueError(f"{' + '.join(names)} must be < 1 (the rest is the {rest} part), but got "
                                 f"{' + '.join(f'{v:g}' for v in values)}")
        return self

    @model_validator(mode="after")
    def _explicit_split_replaces_the_random_one(self):
        given = [key for key in ("split_file", "split_field") if getattr(self, key, None) is not None]
        if len(given) == 2:
            raise key_error(self, "split_field", "must not be set beside split_file (one explicit split)")
        if given:
            clash = [k for k in (*self.split_fractions, *self.random_split_settings) if k in self.model_fields_set]
            if clash:
                raise key_error(self, clash[0], f"must not be set beside {given[0]}: an explicit split replaces the random one")
        return self

    def check_split(self) -> "list[Problem]":
        """The explicit split file read and checked: exists, has the shape, no part empty, no overlap."""
        from hpo.errors import DataError, Problem

        if getattr(self, "split_file", None) is None:
            return []
        from hpo.data.split import SPLIT_FILE_KEY, read_split_file

        try:
            read_split_file(self.split_file)
        except DataError as e:
            message = str(e).split(f"{SPLIT_FILE_KEY}: ", 1)[-1]
            must, _, got = message.rpartition(", but got ")
            return [Problem("split_file", must or message, _Text(got) if must else str(self.split_file))]
        return []

    @property
    def split_file_digest(self) -> str | None:
        """The sha256 of the split file's content (what a cache key of the split reads), or None."""
        import hashlib

        path = getattr(self, "split_file", None)
        if path is None or not Path(path).is_file():
            return None
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    def read_split(self, n: int, ids: "typing.Sequence[Any] | None", label: str, what: str = "records"):
        """Sorted indices of train / val / test from ``split_file`` over ``n`` items (``ids``: the records'
        ids, or None to match row indices); a :class:`hpo.errors.DataError` when an entry names no item."""
        from hpo.data.split import explicit_split, read_split_file

        return explicit_split(read_split_file(self.split_file), n, ids, label, what, file=self.split_file)

    # -- what a format implements --------------------------------------------------------------
    def source_files(self) -> list[Path]:
        """The input files whose content keys the cache (none: the spec's settings say it all)."""
        return []

    def check(self, target: str | None = None) -> "list[Problem]":
        """Cheap checks that the files exist and hold what is needed; user errors are returned, not raised.
        (Every format's ``check`` also returns :meth:`check_split`'s problems, added once here.)"""
        return self.check_split()

    check._checks_split = True  # type: ignore[attr-defined]

    def read(self, target: str | None = None) -> Any:
        """The records of the dataset, parsed and checked (a malformed file raises :class:`hpo.errors.DataError`)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement read()")

    def settings(self, exclude: typing.Iterable[str] = ()) -> dict[str, Any]:
        """The spec's settings as JSON values, without path fields (the cache keys on their content)."""
        paths = {name for name, f in type(self).model_fields.items() if _is_path(f.annotation)}
        unset = {name for name in self.keyed_when_set if getattr(self, name, 0) is None}  # keys as before they existed
        exclude = {name for name in exclude if name in type(self).model_fields}
        return self.model_dump(mode="json", exclude=paths | unset | exclude)

    # -- formats -------------------------------------------------------------------------------
    @classmethod
    def formats(cls) -> dict[str, type["DatasetSpec"]]:
        """``format`` name -> subclass, for every subclass (at any depth) with a literal ``format``."""
        out: dict[str, type[DatasetSpec]] = {}
        stack: list[type] = list(cls.__subclasses__())
        while stack:
            c = stack.pop()
            f = c.model_fields.get("format")
            if _literal_format(c):
                for name in typing.get_args(f.annotation):
                    out[name] = c
            stack.extend(c.__subclasses__())
        return out

    @classmethod
    def variant_for(cls, data: Any) -> type["DatasetSpec"]:
        """The subclass whose literal ``format`` is ``data["format"]``, else this class."""
        fmt = data.get("format") if isinstance(data, dict) else None
        return cls.formats().get(fmt, cls) if not _literal_format(cls) else cls


class _Text:
    """A found value already phrased for a message (shown as is, not quoted)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Text) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def key_error(model: BaseModel, key: str, message: str) -> ValidationError:
    """A validation error at ``key`` of ``model`` (a rule across keys, reported where the user wrote the
    offending one: ``task.dataset.KEY: message, but got VALUE``)."""
    return ValidationError.from_exception_data(type(model).__name__, [
        {"type": "value_error", "loc": (key,), "input": getattr(model, key, None), "ctx": {"error": ValueError(message)}}])


class SplitFile(BaseModel):
    """Mix into a format that reads an explicit ``split_file`` (its reader calls :meth:`DatasetSpec.read_split`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split_file: Optional[DataPath] = Field(
        None, description="an explicit split instead of the random one: a JSON file {\"train\": [...], \"val\": [...], "
                          "\"test\": [...]} of ids or row indices (values may also be objects keyed by id, the JARVIS "
                          "leaderboard's shape; ALIGNN's id_train/id_val/id_test are read too), or a CSV of 'id,split' rows; "
                          "records it does not list are not used")


class SplitField(BaseModel):
    """Mix into a format whose records carry their split in a column / field (``split_field``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split_field: Optional[str] = Field(
        None, description="an explicit split instead of the random one: the column / record field whose values "
                          "are train, val or test")


def _literal_format(cls: type) -> bool:
    f = cls.model_fields.get("format") if hasattr(cls, "model_fields") else None
    return f is not None and typing.get_origin(f.annotation) is typing.Literal


def _is_path(annotation: Any) -> bool:
    """Whether a field holds a path (``DataPath``, ``Path``, or an optional one)."""
    if annotation is Path:
        return True
    return any(_is_path(a) for a in typing.get_args(annotation))
