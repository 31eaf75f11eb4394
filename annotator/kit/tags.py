"""Distribution names and wheel tags, read with `packaging` (or the copy pip carries): which
wheels fit this interpreter, for the kit's wheelhouse and its llama-cpp-python build."""

from __future__ import annotations


def _packaging():
    try:
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:  # every venv has pip, and pip carries packaging
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.utils import canonicalize_name
    return Requirement, canonicalize_name


def _wheel_tags():
    """(parse_wheel_filename, rank): rank(name) is the wheel's best place in this interpreter's
    supported tags (pip's own order, 0 best), None when it fits none: another Python's or
    platform's build."""
    try:
        from packaging.tags import sys_tags
        from packaging.utils import parse_wheel_filename
    except ImportError:  # every venv has pip, and pip carries packaging
        from pip._vendor.packaging.tags import sys_tags
        from pip._vendor.packaging.utils import parse_wheel_filename
    order = {tag: i for i, tag in enumerate(sys_tags())}

    def rank(name: str) -> int | None:
        return min((order[t] for t in parse_wheel_filename(name)[3] if t in order), default=None)

    return parse_wheel_filename, rank
