"""(A method family being written; registry.py says how families plug in.)"""

from __future__ import annotations

METHODS: frozenset[str] = frozenset()


def call(method, params, portal, context):
    raise AssertionError(method)
