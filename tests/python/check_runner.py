"""What the SDK checks share: a failed check, and running a script's checks against a base URL.

Each check script (sdk_check.py, anthropic_check.py) prints one JSON line on stdout and exits 0
when every check holds, or prints the reason on stderr and exits 1 otherwise.
"""

import json
import sys


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def run(name, argv, make_client, checks):
    """Runs `checks(client)` against the base URL in `argv`; returns the exit status.

    `make_client(base_url)` builds the SDK's client (and raises ImportError without the SDK);
    `checks` returns what to print besides `"ok": true`.
    """
    if len(argv) != 2:
        print(f"usage: {name}.py BASE_URL", file=sys.stderr)
        return 2
    try:
        client = make_client(argv[1])
    except ImportError as err:
        print(f"{name}: the SDK is not installed: {err}", file=sys.stderr)
        return 1
    try:
        results = checks(client)
    except CheckFailed as err:
        print(f"{name}: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # an SDK or connection error is a failed check too
        print(f"{name}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"ok": True, **results}))
    return 0
