"""Connected components in Beam on constructed graphs: chains, stars, cycles, random graphs, and the
convergence check / residual path."""
import random

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines.engine.dedupe.components import ConnectedComponents, large_star, small_star, union_find_labels


def _expected(edges):
    return sorted((n, r) for n, r in union_find_labels(edges).items() if n != r)


def _run(edges, rounds=6, max_residual_edges=5_000_000):
    with beam.Pipeline() as p:
        out = p | beam.Create(edges) | ConnectedComponents(rounds, max_residual_edges)
        assert_that(out, equal_to(_expected(edges)))


def test_union_find_reference():
    assert union_find_labels([(3, 2), (2, 9), (7, 8)]) == {2: 2, 3: 2, 9: 2, 7: 7, 8: 7}


def test_pure_star_steps():
    assert sorted(large_star(5, [1, 7, 9, 7])) == [(7, 1), (9, 1)]
    assert sorted(large_star(5, [7, 9])) == [(7, 5), (9, 5)]
    assert sorted(small_star(9, [4, 2, 6])) == [(4, 2), (6, 2), (9, 2)]


def test_chain_star_cycle_and_isolated_pairs():
    edges = [(100 + i, 101 + i) for i in range(40)]                 # long chain
    edges += [(500, 500 + i) for i in range(1, 30)]                 # star, centre is the minimum
    edges += [(700 + i, 650) for i in range(1, 30)]                 # star, centre is NOT the minimum side
    edges += [(900 + i, 900 + (i + 1) % 12) for i in range(12)]     # cycle
    edges += [(2, 1), (4, 3), (4, 3)]                               # pairs, duplicate edge
    edges += [(60, 60)]                                             # self loop (ignored)
    _run(edges)


def test_reversed_chain_and_random_graphs():
    edges = [(1000 - i, 999 - i) for i in range(60)]  # chain labelled against the direction of growth
    rng = random.Random(7)
    nodes = list(range(5000, 5400))
    edges += [(rng.choice(nodes), rng.choice(nodes)) for _ in range(350)]
    edges = [(a, b) for a, b in edges if a != b]
    _run(edges)


def test_one_round_leaves_residual_that_the_finish_resolves():
    # a long zig-zag path does not converge in one large/small-star round; the residual union-find must
    # still produce exact labels
    order = list(range(10, 210))
    random.Random(3).shuffle(order)
    edges = list(zip(order, order[1:]))
    _run(edges, rounds=1)


def test_unconverged_beyond_limit_fails_loudly():
    order = list(range(10, 210))
    random.Random(3).shuffle(order)
    edges = list(zip(order, order[1:]))
    with pytest.raises(Exception, match="did not converge"):
        _run(edges, rounds=1, max_residual_edges=0)
