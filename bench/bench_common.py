"""What the benchmark scripts share."""

import json
import os


def write_result(path, result):
    """Write a benchmark's result dict as json (creating its folder) and print it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
