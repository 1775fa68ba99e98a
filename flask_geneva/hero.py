"""Polymorphic heroes: a mapped instance ⇄ (hero_type, hero_id) strings.

``hero_type`` is the mapped class name (a model may pin another with
``__geneva_hero_type__``); ``hero_id`` is the primary key as a string, so integer,
string and UUID keys all fit one column. Composite primary keys are not supported.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapper
from sqlalchemy.orm import Session

from .errors import GenevaError


def hero_type_of(model: type) -> str:
    """Return the string stored in ``hero_type`` for a mapped class."""
    pinned = model.__dict__.get("__geneva_hero_type__")
    return str(pinned) if pinned else model.__name__


def reference(hero: Any) -> tuple[str | None, str | None]:
    """Return ``(hero_type, hero_id)`` for a persisted mapped instance, or Nones for None."""
    if hero is None:
        return None, None
    try:
        mapper: Mapper[Any] = sa.inspect(type(hero))
    except sa.exc.NoInspectionAvailable:
        raise GenevaError(f"the hero must be a mapped model instance, got {hero!r}") from None
    if len(mapper.primary_key) != 1:
        raise GenevaError(
            f"{type(hero).__name__} has a composite primary key; a hero needs a single-column key"
        )
    identity = sa.inspect(hero).identity
    if identity is None:
        raise GenevaError(
            f"the hero {hero!r} has no primary key yet: add it to the session and flush "
            "(or commit) before creating a workflow for it"
        )
    return hero_type_of(type(hero)), str(identity[0])


class HeroResolver:
    """Finds hero model classes by their stored ``hero_type`` in one declarative registry."""

    def __init__(self, model_base: Any) -> None:
        self._base = model_base
        self._cache: dict[str, type] = {}

    def model_for(self, hero_type: str) -> type | None:
        """Return the mapped class for ``hero_type``, or None if no class has that name."""
        found = self._cache.get(hero_type)
        if found is not None:
            return found
        for mapper in self._base.registry.mappers:
            cls = mapper.class_
            if hero_type_of(cls) == hero_type:
                self._cache[hero_type] = cls
                return cls  # type: ignore[no-any-return]
        return None

    def load(self, session: Session, hero_type: str, hero_id: str) -> Any:
        """Load the hero row, or return None if it was deleted.

        :raises LookupError: when no mapped class is called ``hero_type``.
        """
        model = self.model_for(hero_type)
        if model is None:
            raise LookupError(f"no model class named {hero_type!r} is mapped (hero type missing)")
        return session.get(model, coerce_key(model, hero_id))

    def exists(self, conn: sa.Connection, hero_type: str, hero_id: str) -> bool:
        """Return whether the hero row exists, with one primary-key lookup (no ORM load).

        :raises LookupError: when no mapped class is called ``hero_type``.
        """
        model = self.model_for(hero_type)
        if model is None:
            raise LookupError(f"no model class named {hero_type!r} is mapped (hero type missing)")
        mapper: Mapper[Any] = sa.inspect(model)
        key = mapper.primary_key[0]
        query = sa.select(key).where(key == coerce_key(model, hero_id))
        return conn.execute(query).first() is not None


_INTEGER = re.compile(r"-?[0-9]+")


def coerce_key(model: type, hero_id: str) -> Any:
    """Turn a stored ``hero_id`` string back into the key's Python type.

    :raises LookupError: the string does not parse as the key's type (``'A-17'`` for
        an integer key); the message names the hero type, the id and the key type.
    """
    mapper: Mapper[Any] = sa.inspect(model)
    column = mapper.primary_key[0]
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return hero_id
    try:
        if python_type is int:
            # What str(key) wrote: ASCII digits (int() also reads '١٢' and ' 12 ').
            if not _INTEGER.fullmatch(hero_id):
                raise ValueError(hero_id)
            value = int(hero_id)
            if not -(2**63) <= value < 2**63:
                raise ValueError(hero_id)
            return value
        if python_type is uuid.UUID:
            return uuid.UUID(hero_id)
    except (TypeError, ValueError):
        raise LookupError(
            f"hero id {hero_id!r} of hero type {model.__name__} does not parse as its "
            f"primary key type ({python_type.__name__})"
        ) from None
    return hero_id
