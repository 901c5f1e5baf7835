"""Who sends: each sender (a digest's, the outbox's) has a name, ``host:pid:random``,
so that a sender on the same host can tell when another one died and take back its
claims at once rather than after their lease."""

import os
import random
import socket


def host_name() -> str:
    """This host's name as it appears in sender names (``host:pid:random``)."""
    return socket.gethostname().replace(":", "-")


def sender_name() -> str:
    """A new sender's name, ``host:pid:random``: a sender on the same host can tell
    when this one died (:func:`alive`)."""
    return f"{host_name()}:{os.getpid()}:{random.getrandbits(24):06x}"


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # A killed sender whose parent died too may linger unreaped: a zombie is dead.
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # someone else's process
        return True
