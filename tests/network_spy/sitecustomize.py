"""Imported at start by every Python process whose PYTHONPATH holds this folder (tests only): appends every
name lookup and connection that leaves the machine to the file named by VECSET_NETWORK_LOG."""

import os
import sys

LOG = os.environ.get("VECSET_NETWORK_LOG")
LOCAL = {None, "", "localhost", "127.0.0.1", "::1", "0.0.0.0"}


def _leaves_the_machine(event: str, args: tuple) -> str | None:
    if event == "socket.getaddrinfo" and args[0] not in LOCAL:
        return f"{event} {args[0]}:{args[1]}"
    if event == "socket.connect" and isinstance(args[1], tuple) and args[1][0] not in LOCAL:
        return f"{event} {args[1][0]}:{args[1][1]}"
    return None


def _spy(event: str, args: tuple) -> None:
    if event.startswith("socket.") and (line := _leaves_the_machine(event, args)) is not None:
        with open(LOG, "a") as handle:  # type: ignore[arg-type]
            handle.write(f"{os.getpid()} {line}\n")


if LOG:
    sys.addaudithook(_spy)
