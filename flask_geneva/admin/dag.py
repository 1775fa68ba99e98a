"""Lay out a workflow's step graph for the server-rendered SVG (left to right, by layer).

Each step sits in the column of its longest path from a root, so every edge points
right; steps of one column keep their definition order. The template draws the boxes
and the edges; this module only computes coordinates and colours.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass

NODE_WIDTH = 180
#: The width of every box when some show a progress line ("9,990/10,000 done · 5 running").
WIDE_NODE_WIDTH = 250
NODE_HEIGHT = 40
COLUMN_GAP = 60
ROW_GAP = 22
MARGIN = 10


@dataclass(frozen=True)
class Node:
    """One step box."""

    name: str
    #: Latest execution state, or ``pending`` when the step has not been created yet.
    state: str
    x: int
    y: int
    #: Whether the step is the one to look at (running or failed).
    focus: bool
    attempts: int
    #: What the box says under its name instead of the state (a map step's progress).
    detail: str = ""


@dataclass(frozen=True)
class Edge:
    """A dependency: ``source`` must be done before ``target`` runs."""

    source: str
    target: str
    #: SVG path data (a cubic curve from the source's right to the target's left).
    path: str


@dataclass(frozen=True)
class Layout:
    """Everything the SVG template needs."""

    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int
    node_width: int = NODE_WIDTH
    node_height: int = NODE_HEIGHT


def layout(
    predecessors: Mapping[str, Sequence[str]],
    latest_states: Mapping[str, str],
    attempts: Mapping[str, int] | None = None,
    details: Mapping[str, str] | None = None,
) -> Layout:
    """Return the layout of a DAG.

    :param predecessors: each step (in definition order) with the steps it waits for.
    :param latest_states: the latest execution state per step (missing: ``pending``).
    :param attempts: how many executions each step has had.
    :param details: a line to show under a step's name instead of its state (map
        steps: their progress); the boxes widen to :data:`WIDE_NODE_WIDTH` for it.
    """
    attempts = attempts or {}
    details = details or {}
    width_of = WIDE_NODE_WIDTH if details else NODE_WIDTH
    column: dict[str, int] = {}

    def depth(name: str, trail: tuple[str, ...] = ()) -> int:
        if name not in column:
            preds = [p for p in predecessors.get(name, ()) if p in predecessors and p not in trail]
            column[name] = 1 + max((depth(p, trail + (name,)) for p in preds), default=-1)
        return column[name]

    rows_in: dict[int, int] = {}
    nodes: dict[str, Node] = {}
    for name in predecessors:
        col = depth(name)
        row = rows_in.get(col, 0)
        rows_in[col] = row + 1
        state = latest_states.get(name, "pending")
        nodes[name] = Node(
            name=name,
            state=state,
            x=MARGIN + col * (width_of + COLUMN_GAP),
            y=MARGIN + row * (NODE_HEIGHT + ROW_GAP),
            focus=state in ("in_progress", "failed"),
            attempts=attempts.get(name, 0),
            detail=details.get(name, ""),
        )
    edges = []
    for name, preds in predecessors.items():
        for pred in preds:
            if pred in nodes:
                edges.append(Edge(pred, name, _curve(nodes[pred], nodes[name], width_of)))
    columns = max(rows_in, default=-1) + 1
    rows = max(rows_in.values(), default=0)
    width = 2 * MARGIN + max(columns, 1) * width_of + max(columns - 1, 0) * COLUMN_GAP
    height = 2 * MARGIN + max(rows, 1) * NODE_HEIGHT + max(rows - 1, 0) * ROW_GAP
    return Layout(list(nodes.values()), edges, width, height, node_width=width_of)


def _curve(a: Node, b: Node, node_width: int) -> str:
    x1, y1 = a.x + node_width, a.y + NODE_HEIGHT // 2
    x2, y2 = b.x, b.y + NODE_HEIGHT // 2
    mid = (x1 + x2) // 2
    return f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2 - 6},{y2}"
