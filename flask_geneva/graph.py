"""The step graph of a workflow class: sequence, edges, validation and the ready set.

Built once per class when the class is created; pure Python, no app or database.
Default edges make a class without ``after=`` a straight line, in the order given by
definition order with ``before_step=`` / ``after_step=`` insertions applied.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence

from .errors import DefinitionError
from .steps import StepDefinition


def fingerprint(
    sequence: Sequence[StepDefinition], predecessors: Mapping[str, tuple[str, ...]]
) -> str:
    """A short hash of what shapes a workflow's flow: its steps and their edges.

    Step names in sequence order, each step's predecessors, and the options that
    change what runs next (``for_each``, ``wait_for``, ``resumable``). Waits,
    policies, conditions and bodies are left out: changing them leaves every running
    workflow where it is. Two classes with the same flow share a fingerprint.
    """
    shape = [
        [d.name, list(predecessors[d.name]), d.for_each, d.wait_for, d.resumable] for d in sequence
    ]
    text = json.dumps(shape, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class StepGraph:
    """The validated DAG of one workflow class.

    :param class_name: used in error messages.
    :param definitions: every step, inherited ones first, in definition order.
    """

    def __init__(self, class_name: str, definitions: Sequence[StepDefinition]) -> None:
        self.class_name = class_name
        sequence: list[StepDefinition] = []
        seen: set[str] = set()
        for definition in definitions:
            if definition.name in seen:
                raise DefinitionError(
                    f"{class_name}.{definition.name}: step {definition.name!r} is already "
                    "defined (step names must be unique, inherited ones included)"
                )
            seen.add(definition.name)
            target = definition.before_step or definition.after_step
            if target is None:
                sequence.append(definition)
                continue
            option = "before_step" if definition.before_step else "after_step"
            names = [d.name for d in sequence]
            if target not in names:
                raise DefinitionError(
                    f"{class_name}.{definition.name}: {option}={target!r} references "
                    "non-existent step; it must name a step that has already been defined"
                )
            index = names.index(target) + (1 if option == "after_step" else 0)
            sequence.insert(index, definition)

        #: Every step by name, in sequence order.
        self.steps: dict[str, StepDefinition] = {d.name: d for d in sequence}
        preds: dict[str, tuple[str, ...]] = {}
        for index, definition in enumerate(sequence):
            if definition.after is not None:
                for name in definition.after:
                    if name not in self.steps and name == definition.for_each:
                        raise DefinitionError(
                            f"{class_name}.{definition.name}: for_each={name!r} is not a "
                            "step of this class; it must name the step whose returned list "
                            "this step maps over"
                        )
                    if name not in self.steps:
                        raise DefinitionError(
                            f"{class_name}.{definition.name}: after={name!r} references "
                            "non-existent step"
                        )
                preds[definition.name] = tuple(dict.fromkeys(definition.after))
            elif index == 0:
                preds[definition.name] = ()
            else:
                preds[definition.name] = (sequence[index - 1].name,)
        #: Each step's predecessors (all must be done before it runs).
        self.predecessors: Mapping[str, tuple[str, ...]] = preds
        succ: dict[str, list[str]] = {name: [] for name in self.steps}
        for name, before in preds.items():
            for pred in before:
                succ[pred].append(name)
        #: Each step's successors, in sequence order.
        self.successors: Mapping[str, tuple[str, ...]] = {k: tuple(v) for k, v in succ.items()}
        #: Steps with no predecessors: they start when the workflow is created.
        self.roots: tuple[str, ...] = tuple(n for n, p in preds.items() if not p)
        #: Steps in an order where each comes after all its predecessors.
        self.topological_order: tuple[str, ...] = self._toposort()
        ancestors: dict[str, frozenset[str]] = {}
        for name in self.topological_order:
            found: set[str] = set()
            for pred in preds[name]:
                found |= ancestors[pred] | {pred}
            ancestors[name] = frozenset(found)
        #: Each step's ancestors: every step that must be done before it runs, the only
        #: ones whose outputs it may read.
        self.ancestors: Mapping[str, frozenset[str]] = ancestors
        #: Each step's descendants: every step that runs after it (a rerun's reach).
        self.descendants: Mapping[str, frozenset[str]] = {
            name: frozenset(n for n, a in ancestors.items() if name in a) for name in self.steps
        }
        for definition in sequence:
            self._check_data(definition)
        #: The map steps, and the producer each maps over.
        self.maps: Mapping[str, str] = {
            d.name: d.for_each for d in sequence if d.for_each is not None
        }
        #: The steps whose output a map step runs over: their list is checked when stored.
        self.producers: frozenset[str] = frozenset(self.maps.values())
        #: What a workflow stores of its class's graph when it is created (see
        #: :func:`fingerprint`).
        self.fingerprint = fingerprint(sequence, preds)

    def _check_data(self, definition: StepDefinition) -> None:
        """A map step's producer and a body's parameters must name ancestors."""
        where = f"{self.class_name}.{definition.name}"
        ancestors = self.ancestors[definition.name]
        producer = definition.for_each
        if producer is not None and producer not in ancestors:
            problem = "is not a step" if producer not in self.steps else "is not an ancestor"
            raise DefinitionError(
                f"{where}: for_each={producer!r} {problem} of this step; a map step runs over "
                "the list an ancestor returned (for_each= alone implies after= that step)"
            )
        for parameter in definition.parameters:
            if parameter not in ancestors:
                known = ", ".join(sorted(ancestors)) or "none"
                raise DefinitionError(
                    f"{where}: parameter {parameter!r} names no ancestor of this step; a "
                    "step's parameters receive the outputs of the ancestors they name "
                    f"(its ancestors: {known})"
                )

    def _toposort(self) -> tuple[str, ...]:
        remaining = {name: len(p) for name, p in self.predecessors.items()}
        ready = [name for name, count in remaining.items() if count == 0]
        order: list[str] = []
        while ready:
            name = ready.pop(0)
            order.append(name)
            for succ in self.successors[name]:
                remaining[succ] -= 1
                if remaining[succ] == 0:
                    ready.append(succ)
        if len(order) != len(self.steps):
            cycle = self._find_cycle(set(self.steps) - set(order))
            raise DefinitionError(
                f"{self.class_name}.{cycle[0]}: the steps form a cycle "
                f"({' -> '.join(cycle)}); a workflow must be a DAG, so remove one of "
                "these after= edges (a step without after= follows the step defined before it)"
            )
        return tuple(order)

    def _find_cycle(self, blocked: set[str]) -> list[str]:
        """Return one cycle among ``blocked`` steps as ``[a, b, ..., a]``, in edge order.

        Every blocked step has a blocked predecessor, so walking predecessors from any of
        them must revisit a step; the walk between the two visits is the cycle.
        """
        start = next(name for name in self.steps if name in blocked)
        path: list[str] = []
        seen: dict[str, int] = {}
        name = start
        while name not in seen:
            seen[name] = len(path)
            path.append(name)
            name = next(p for p in self.predecessors[name] if p in blocked)
        loop = path[seen[name] :] + [name]
        loop.reverse()  # predecessors were walked backwards; show edges forwards
        return loop

    def __contains__(self, name: object) -> bool:
        return name in self.steps

    def __len__(self) -> int:
        return len(self.steps)

    def ready_steps(self, done: Iterable[str], started: Iterable[str]) -> list[str]:
        """Return the steps whose predecessors are all done and that have not started.

        :param done: names of steps that are completed or skipped.
        :param started: names of steps that already have an execution.
        """
        done_set = set(done)
        started_set = set(started)
        return [
            name
            for name in self.steps
            if name not in started_set and all(pred in done_set for pred in self.predecessors[name])
        ]

    def describe(self) -> list[tuple[str, tuple[str, ...]]]:
        """Return ``(step, predecessors)`` pairs in sequence order (for printing)."""
        return [(name, self.predecessors[name]) for name in self.steps]
