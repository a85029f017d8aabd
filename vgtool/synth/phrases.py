"""Referring expressions for a scene, each checked against the scene before it is kept.

Three kinds: ``single`` phrases denote exactly one object (by attributes, a relation or a superlative),
``multi`` phrases two or more ("all red circles"), ``none`` phrases nothing ("the green triangle" when
there is none). Every phrase is built as a ``Query`` and kept only if ``resolve`` gives a set of the
right size; ambiguous candidates (``AmbiguousQueryError``) are dropped.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vgtool.synth.query import AmbiguousQueryError, Query, relation_holds, resolve, to_text
from vgtool.synth.scene import Scene, SceneObject
from vgtool.synth.vocabulary import (
    COLOURS,
    PHRASE_KINDS,
    RELATIONS,
    SHAPES,
    SIZE_SUPERLATIVES,
    SIZES,
    SUPERLATIVES,
)

Weights = tuple[tuple[str, float], ...]
DEFAULT_KIND_WEIGHTS: Weights = (("single", 0.6), ("multi", 0.2), ("none", 0.2))
_SINGLE_MODES: Weights = (("attributes", 0.5), ("relation", 0.25), ("superlative", 0.25))
_NONE_POOLS: Weights = (("absent_combination", 0.5), ("false_relation", 0.25), ("absent", 0.25))
_P_MINIMAL = 0.7  # chance of using the fewest attributes that single an object out, else more


@dataclass(frozen=True)
class Phrase:
    """A generated phrase, the query it was built from, and the objects it denotes (indices, ascending)."""

    text: str
    kind: str
    object_indices: tuple[int, ...]
    query: Query


def denotation(query: Query, scene: Scene) -> list[int] | None:
    """``resolve`` with ambiguity as ``None`` instead of an exception."""
    try:
        return resolve(query, scene)
    except AmbiguousQueryError:
        return None


def _n_attributes(query: Query) -> int:
    return sum(a is not None for a in query.attributes)


def _descriptions(obj: SceneObject, with_size: bool = True) -> list[Query]:
    """Every singular attribute-only query true of ``obj``, fewest attributes first."""
    sizes = (None, obj.size) if with_size else (None,)
    combos = itertools.product(sizes, (None, obj.colour), (None, obj.shape))
    queries = [Query(size=s, colour=c, shape=sh) for s, c, sh in combos]
    return sorted(queries, key=_n_attributes)


def _pick(rng: np.random.Generator, queries: list[Query]) -> Query | None:
    return queries[int(rng.integers(len(queries)))] if queries else None


def _pick_by_length(rng: np.random.Generator, queries: list[Query]) -> Query | None:
    """A random query, the number of attributes drawn first (else three-word phrases would dominate)."""
    lengths = sorted({_n_attributes(q) for q in queries})
    if not lengths:
        return None
    length = lengths[int(rng.integers(len(lengths)))]
    return _pick(rng, [q for q in queries if _n_attributes(q) == length])


def _prefer_minimal(rng: np.random.Generator, queries: list[Query]) -> list[Query]:
    """The queries with the fewest attributes, or (sometimes) those with more."""
    if not queries:
        return []
    fewest = min(_n_attributes(q) for q in queries)
    minimal = [q for q in queries if _n_attributes(q) == fewest]
    more = [q for q in queries if _n_attributes(q) > fewest]
    return more if more and rng.random() >= _P_MINIMAL else minimal


def _unique_descriptions(scene: Scene, index: int) -> list[Query]:
    """Attribute-only queries that denote exactly object ``index``."""
    return [q for q in _descriptions(scene.objects[index]) if denotation(q, scene) == [index]]


def _by_attributes(scene: Scene, index: int) -> list[Query]:
    return [q for q in _unique_descriptions(scene, index) if _n_attributes(q) > 0]


def _by_relation(scene: Scene, index: int) -> list[Query]:
    """Relational queries for object ``index``, preferring those where attributes alone are ambiguous."""
    target = scene.objects[index]
    found: list[Query] = []
    for ref_index, ref in enumerate(scene.objects):
        if ref_index == index:
            continue
        ref_queries = [q for q in _unique_descriptions(scene, ref_index) if q.shape is not None]
        relations = [r for r in RELATIONS if relation_holds(r, target.bbox_xyxy, ref.bbox_xyxy)]
        for ref_query, relation in itertools.product(ref_queries, relations):
            for own in _descriptions(target)[1:]:
                query = dataclasses.replace(own, relation=relation, reference=ref_query)
                if denotation(query, scene) == [index]:
                    found.append(query)
    needed = [q for q in found if denotation(_without_relation(q), scene) is None]
    return needed or found


def _without_relation(query: Query) -> Query:
    return dataclasses.replace(query, relation=None, reference=None)


def _by_superlative(scene: Scene, index: int) -> list[Query]:
    """Superlative queries for object ``index`` that pick it among two or more attribute matches."""
    found = []
    for superlative in SUPERLATIVES:
        with_size = superlative not in SIZE_SUPERLATIVES
        for own in _descriptions(scene.objects[index], with_size=with_size):
            pool = denotation(dataclasses.replace(own, plural=True), scene) or []
            query = dataclasses.replace(own, superlative=superlative)
            if len(pool) >= 2 and denotation(query, scene) == [index]:
                found.append(query)
    return found


_SINGLE_BUILDERS = {"attributes": _by_attributes, "relation": _by_relation, "superlative": _by_superlative}


def _draw_order(rng: np.random.Generator, weights: Weights) -> list[str]:
    """Names from ``weights``: one drawn by weight first, then all of them in their listed order."""
    names = [name for name, _ in weights]
    probabilities = np.array([w for _, w in weights], dtype=np.float64)
    first = names[int(rng.choice(len(names), p=probabilities / probabilities.sum()))]
    return [first] + [name for name in names if name != first]


def _single(scene: Scene, rng: np.random.Generator, used: set[str]) -> Query | None:
    order = _draw_order(rng, _SINGLE_MODES)
    targets = rng.permutation(len(scene.objects)).tolist()
    for mode in order:
        for index in targets:
            queries = [q for q in _SINGLE_BUILDERS[mode](scene, index) if to_text(q) not in used]
            choice = _pick(rng, _prefer_minimal(rng, queries))
            if choice is not None:
                return choice
    return None


def _all_attribute_queries(plural: bool) -> list[Query]:
    """Every attribute-only query with at least one attribute."""
    combos = itertools.product((None, *SIZES), (None, *COLOURS), (None, *SHAPES))
    queries = [Query(size=s, colour=c, shape=sh, plural=plural) for s, c, sh in combos]
    return [q for q in queries if _n_attributes(q) > 0]


def _multi(scene: Scene, rng: np.random.Generator, used: set[str]) -> Query | None:
    queries = [q for q in _all_attribute_queries(plural=True) if len(denotation(q, scene) or []) >= 2]
    return _pick_by_length(rng, [q for q in queries if to_text(q) not in used])


def _absent(scene: Scene, plural: bool, rng: np.random.Generator) -> list[Query]:
    return [q for q in _all_attribute_queries(plural) if denotation(q, scene) == []]


def _absent_combinations(scene: Scene, plural: bool, rng: np.random.Generator) -> list[Query]:
    """Hard negatives: two or more attribute values that each occur in the scene, but never together."""
    present = {w for o in scene.objects for w in (o.size, o.colour, o.shape)}
    return [
        q
        for q in _absent(scene, plural, rng)
        if _n_attributes(q) >= 2 and all(a in present for a in q.attributes if a is not None)
    ]


def _false_relations(scene: Scene, plural: bool, rng: np.random.Generator) -> list[Query]:
    """Hard negatives: objects that exist, next to a unique reference, but not in the stated relation.

    References are tried in random order and the first that yields any phrase is used (enumerating all
    of them is the slowest step of generation).
    """
    for ref_index in rng.permutation(len(scene.objects)).tolist():
        ref_queries = [q for q in _unique_descriptions(scene, ref_index) if q.shape is not None]
        owns = {q for i, o in enumerate(scene.objects) if i != ref_index for q in _descriptions(o)[1:]}
        candidates = itertools.product(ref_queries, sorted(owns, key=to_text), RELATIONS)
        queries = (dataclasses.replace(own, relation=r, reference=ref) for ref, own, r in candidates)
        found = [q for q in queries if denotation(q, scene) == []]
        if found:
            return found
    return []


_NONE_BUILDERS: dict[str, Callable[[Scene, bool, np.random.Generator], list[Query]]] = {
    "absent_combination": _absent_combinations,
    "false_relation": _false_relations,
    "absent": _absent,
}


def _none(scene: Scene, rng: np.random.Generator, used: set[str]) -> Query | None:
    """Mostly hard negatives (words that occur, but not together; false relations), else anything absent."""
    plural = rng.random() < 0.2  # "all green triangles" may name nothing too
    for pool in _draw_order(rng, _NONE_POOLS):
        if pool == "false_relation" and plural:
            continue
        queries = [q for q in _NONE_BUILDERS[pool](scene, plural, rng) if to_text(q) not in used]
        choice = _pick_by_length(rng, queries)
        if choice is not None:
            return choice
    return None


_KIND_BUILDERS: dict[str, Callable[[Scene, np.random.Generator, set[str]], Query | None]] = {
    "single": _single,
    "multi": _multi,
    "none": _none,
}


def generate_phrases(
    scene: Scene,
    rng: np.random.Generator,
    n_phrases: int,
    kind_weights: tuple[tuple[str, float], ...] = DEFAULT_KIND_WEIGHTS,
) -> list[Phrase]:
    """Up to ``n_phrases`` distinct phrases whose kinds are drawn with ``kind_weights``.

    When a scene has no phrase of the drawn kind (say, no two objects share a word for ``multi``), the
    other kinds are tried in the order of ``kind_weights``.
    """
    kinds = [k for k, _ in kind_weights]
    if set(kinds) - set(PHRASE_KINDS):
        raise ValueError(f"kinds must be among {PHRASE_KINDS}, got {kinds}")
    used: set[str] = set()
    phrases = []
    for _ in range(n_phrases):
        for kind in _draw_order(rng, kind_weights):
            query = _KIND_BUILDERS[kind](scene, rng, used)
            if query is None:
                continue
            indices = resolve(query, scene)
            expected = {"single": len(indices) == 1, "multi": len(indices) >= 2, "none": not indices}
            assert expected[kind], f"{to_text(query)!r} denotes {indices}, not a {kind} phrase"
            used.add(to_text(query))
            phrases.append(Phrase(to_text(query), kind, tuple(indices), query))
            break
    return phrases
