"""What the benchmark scripts share."""

import json
import os


def counts_with(path, key, counts):
    """The ``counts`` block of the result file at ``path`` (empty if none), with ``key`` set to
    ``counts``: counts measured under other keys (e.g. before a change) stay."""
    merged = {}
    if os.path.exists(path):
        with open(path) as f:
            merged = json.load(f).get("counts", {})
    merged[key] = counts
    return merged


def write_counts_only(path, key, counts):
    """Set ``counts.<key>`` of the existing result file at ``path``, keeping everything else."""
    with open(path) as f:
        result = json.load(f)
    result.setdefault("counts", {})[key] = counts
    write_result(path, result)


def write_result(path, result):
    """Write a benchmark's result dict as json (creating its folder) and print it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
