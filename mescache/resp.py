"""Redis commands packed into RESP in one pass: the same bytes as redis-py's packer.

redis-py's asyncio connection packs a command by joining each argument onto a growing
buffer of up to 6 KB, copying it again for every argument; the listener's batches send
scripts with tens of thousands of keys, where that packing was the largest share of its
time. :func:`pack` builds each argument's frame once and joins them at the end (about
seven times faster on a 30,000-key command). It packs only what it can pack exactly as
redis-py does: str (UTF-8), bytes and int arguments, the command name without spaces;
for anything else it returns None and the caller lets redis-py pack it.
"""

from __future__ import annotations

from collections.abc import Sequence


def pack(args: Sequence[object]) -> bytes | None:
    """The RESP array of `args`, or None where redis-py's packer must decide."""
    if not args:
        return None
    name = args[0]
    # redis-py splits a command name holding spaces ("CONFIG GET") into several arguments.
    if (type(name) is str and name.split() != [name]) or (type(name) is bytes and b" " in name):
        return None
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        # Exact types: a bool is an int to isinstance, and redis-py refuses it.
        if type(arg) is str:
            data = arg.encode()
        elif type(arg) is bytes:
            data = arg
        elif type(arg) is int:
            data = b"%d" % arg
        else:
            return None  # float, bool, memoryview...: redis-py's own rules
        append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)
