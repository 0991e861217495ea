"""File names from names found in data (site ids, tile names, recipe names).

A site id of a user's mining inventory or a recipe's ``name`` can hold anything; before it
becomes part of a path it goes through :func:`safe_name`: letters, digits, ``.``, ``_`` and
``-`` are kept, anything else (path separators, ``..``, spaces, control characters) is
replaced, and a cleaned name gets a short digest of the original so that two different names
never meet in one file. LAMES site ids (digits) and generated tile names pass unchanged.
"""

from __future__ import annotations

import hashlib
import re

from lames_cube.errors import (
    UnsafeNameError,
)

__all__ = ["UnsafeNameError", "safe_name"]

_KEEP = re.compile(r"[^A-Za-z0-9._-]+")
#: Longest name kept as it is (file systems allow 255 bytes; stores add a prefix and suffix).
MAX_LENGTH = 100



def safe_name(value: object, what: str = "name") -> str:
    """``value`` as one path component that stays inside its folder.

    Parameters
    ----------
    value
        The name (a string, or an int such as a numeric site id).
    what
        What the name is, for the error message (``"site id"``).

    Returns
    -------
    str
        ``value`` itself when it is already safe, else the kept characters joined by ``_``
        plus ``-`` and 8 hex digits of the original's SHA-256.

    Raises
    ------
    UnsafeNameError
        An empty name, or one that is neither a string nor an int.

    Examples
    --------
    >>> safe_name("2504"), safe_name("r043c020"), safe_name(817)
    ('2504', 'r043c020', '817')
    >>> safe_name("../../etc/passwd")
    'etc_passwd-3754d6cb'
    >>> safe_name("Mina El Toqui") != safe_name("Mina_El_Toqui")
    True
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise UnsafeNameError(f"{what} {value!r} is a {type(value).__name__}, not a string; "
                              f"give {what}s as text (e.g. '2504').")
    text = str(value)
    kept = _KEEP.sub("_", text).strip("._-")
    if not kept and not text.strip():
        raise UnsafeNameError(f"{what} {text!r} is empty; every {what} needs a name.")
    if kept == text and len(text) <= MAX_LENGTH:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{kept[:MAX_LENGTH - 9] or 'x'}-{digest}"
