"""Choosing the backend: a frontend's use_backend entries over its live backends, with
runs of same-shape rules turned into one lookup.

Entries apply in order: the first whose condition holds and whose backend exists wins (a
template that renders no backend's name goes on to the next entry), else default_backend.
A routing table of thousands of entries

    - {backend: shop, if: "{ host shop.example.com }"}
    - {backend: blog, if: "{ host blog.example.com }"}
    - {backend: api, if: "{ path_beg /api /v1 }"}

would test each entry in turn. So at load time a run of two or more consecutive entries
that name a backend, each with a condition that is exactly one ACL of exact strings or
prefixes on the same fetch (`host`, `hdr(host)`, `-m str`, `path_beg`, the same `-i`; see
`Shape` in lbproxy/routing/acl.py), becomes one step:

- exact strings: one dict from value to the first entry holding it: one lookup;
- prefixes: one dict per run from prefix to the first entry holding it, probed once per
  distinct prefix length (up to the input's length); the earliest entry of those found
  wins, which is the one a rule-by-rule scan would pick.

A fetch with several values (`hdr`) looks each up and keeps the earliest entry. Other
entries (templates, other conditions, negations, `unless`) stay steps of their own, in
place, so the order between them and the runs is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lbproxy.routing.acl import Shape, Test, shape_of
from lbproxy.routing.interpolate import Render

Choose = Callable[[Any], Any]        # request -> the backend, or None: the next step
Step = tuple[Test | None, Choose]    # (condition, None: always; the backend it gives)
Entry = tuple[Test | None, str, Render | None]    # condition, backend name, its template
Hit = tuple[int, Any]                # (position of the entry in its run, backend)

MIN_RUN = 2          # a lone rule is already one matcher call


def backend_steps(entries: Sequence[Entry], backends: Mapping[str, Any]) -> list[Step]:
    """The steps routing runs in order over live `backends` (name -> what it returns):
    a named backend is looked up now, a template's result per request."""
    steps: list[Step] = []
    run: list[tuple[Test, Shape, Any]] = []
    for test, name, render in entries:
        shape = shape_of(test) if render is None else None
        if run and (shape is None or shape.key != run[0][1].key):
            steps += _run_steps(run)
            run = []
        if shape is not None and test is not None:
            run.append((test, shape, backends[name]))
        elif render is None:
            steps.append((test, _constant(backends[name])))
        else:
            steps.append((test, _rendered(render, backends.get)))
    return steps + _run_steps(run)


def _constant(backend: Any) -> Choose:
    return lambda _request: backend


def _rendered(render: Render, find: Callable[[str], Any]) -> Choose:
    return lambda request: find(render(request))


def _run_steps(run: list[tuple[Test, Shape, Any]]) -> list[Step]:
    if len(run) < MIN_RUN:
        return [(test, _constant(backend)) for test, _shape, backend in run]
    first: dict[str, Hit] = {}
    for position, (_test, shape, backend) in enumerate(run):
        for value in shape.values:
            first.setdefault(value, (position, backend))
    _fetch, method, icase = run[0][1].key
    find = first.get if method == "str" else _prefix(first)
    return [(None, _each(run[0][1], find, icase))]


def _prefix(first: dict[str, Hit]) -> Callable[[str], Hit | None]:
    lengths = sorted({len(prefix) for prefix in first})
    get = first.get

    def find(value: str) -> Hit | None:
        best = None
        size = len(value)
        for length in lengths:
            if length > size:
                break
            hit = get(value[:length])
            if hit is not None and (best is None or hit[0] < best[0]):
                best = hit
        return best
    return find


def _each(shape: Shape, find: Callable[[str], Hit | None], icase: bool) -> Choose:
    """The run's step: the backend of the earliest entry matching the fetch's value."""
    get = shape.get
    if not shape.multi:
        def choose(request: Any) -> Any:
            value = get(request)
            if value is None:
                return None
            hit = find(value.lower() if icase else value)
            return None if hit is None else hit[1]
        return choose

    def choose_any(request: Any) -> Any:
        hits = [hit for value in get(request) or ()
                if (hit := find(value.lower() if icase else value)) is not None]
        return min(hits, key=_position)[1] if hits else None
    return choose_any


def _position(hit: Hit) -> int:
    return hit[0]
