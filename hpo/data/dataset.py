"""The base of every ``task.dataset`` section: :data:`DataPath` and :class:`DatasetSpec`.

A family declares one :class:`DatasetSpec` subclass per file format (``format: Literal["name"]``) under
a base of its own; validating the base dispatches on ``format`` like a pydantic tagged union. A spec says
which input files key the cache (:meth:`~DatasetSpec.source_files`), checks cheaply that they resolve
(:meth:`~DatasetSpec.check`) and reads them (:meth:`~DatasetSpec.read`). Split fractions are declared
by name (:attr:`~DatasetSpec.split_fractions`) and validated here, once for every format: their sum must
leave a non-empty rest.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator

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

    # -- what a format implements --------------------------------------------------------------
    def source_files(self) -> list[Path]:
        """The input files whose content keys the cache (none: the spec's settings say it all)."""
        return []

    def check(self, target: str | None = None) -> "list[Problem]":
        """Cheap checks that the files exist and hold what is needed; user errors are returned, not raised."""
        return []

    def read(self, target: str | None = None) -> Any:
        """The records of the dataset, parsed and checked (a malformed file raises :class:`hpo.errors.DataError`)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement read()")

    def settings(self, exclude: typing.Iterable[str] = ()) -> dict[str, Any]:
        """The spec's settings as JSON values, without path fields (the cache keys on their content)."""
        paths = {name for name, f in type(self).model_fields.items() if _is_path(f.annotation)}
        return self.model_dump(mode="json", exclude=paths | set(exclude))

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


def _literal_format(cls: type) -> bool:
    f = cls.model_fields.get("format") if hasattr(cls, "model_fields") else None
    return f is not None and typing.get_origin(f.annotation) is typing.Literal


def _is_path(annotation: Any) -> bool:
    """Whether a field holds a path (``DataPath``, ``Path``, or an optional one)."""
    if annotation is Path:
        return True
    return any(_is_path(a) for a in typing.get_args(annotation))
