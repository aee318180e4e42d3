"""A numpy-only parser for plain CSV bodies of names and small integers (the HPatches task
lists: ``s1,t1,idx1,s2,t2,idx2`` a row, a million rows a list).

Every field is read as 8-byte little-endian words of the byte buffer: a number of up to 8
digits from the word that ends with it, a name of up to :data:`MAX_NAME` bytes from its words.
A body is parsed in parts of ~2 MB (a few dozen passes over each part's arrays then run in
the CPU caches rather than from memory), in threads. Anything that is not plain (quotes, CR, signs,
spaces, longer fields, two names with one hash) makes :func:`parse_plain_csv` return None, so
that the caller can fall back to the ``csv`` module, which also words the errors.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: the longest name read word-wise (longer ones go through the csv module); the generated
#: sets have names like ``v_synth_immunohistochemistry`` (28 bytes)
MAX_NAME = 32

_U = np.uint64
_ASCII_ZEROS = _U(0x3030303030303030)
_DIGIT_CHECK = _U(0x7676767676767676)  # + a byte 0..9 stays below 0x80, + 10 or more does not
_HIGH_BITS = _U(0x8080808080808080)
#: ``_LOW_BYTES[c]``: a uint64 mask of the c (0..8) lowest bytes
_LOW_BYTES = np.array([(1 << (8 * c)) - 1 for c in range(9)], dtype=np.uint64)
_KEY_STEP = _U(0x9E3779B97F4A7C15)
_PART_MULTIPLIERS = (_U(0xC2B2AE3D27D4EB4F), _U(0x165667B19E3779F9))
_MIDDLE_MULTIPLIERS = (0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD)
#: a body is cut into parts of about this size (see :func:`parse_plain_csv`)
_PART_BYTES = 2 << 20


def _hash_slots(unique: np.ndarray) -> tuple[np.uint64, int] | None:
    """A multiplier and a table size (bits) under which the ``unique`` keys have no collision."""
    bits = max(8, 2 * len(unique).bit_length() + 2)
    for multiplier in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93):
        if len(np.unique((unique * _U(multiplier)) >> _U(64 - bits))) == len(unique):
            return _U(multiplier), bits
    return None


def _distinct_codes(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(distinct keys, index of each key among them)``. The distinct keys of a sample go
    into a collision-free hash table; when every key is found there (a task list has a few
    hundred names in millions of fields) that one look-up replaces a full ``np.unique`` and a
    search per key; otherwise the same with all distinct keys, or a binary search."""
    sample = np.unique(key[:: max(1, len(key) // 4096)])
    for unique in (sample, None):
        if unique is None:
            unique = np.unique(key)
        slots = _hash_slots(unique)
        if slots is None:
            break
        multiplier, bits = slots
        table_key = np.zeros(1 << bits, dtype=np.uint64)
        table_code = np.zeros(1 << bits, dtype=np.int64)
        slot = (unique * multiplier) >> _U(64 - bits)
        table_key[slot], table_code[slot] = unique, np.arange(len(unique))
        slot = key * multiplier
        slot >>= _U(64 - bits)
        if (table_key[slot] == key).all():
            return unique, table_code[slot]
    unique = np.unique(key)
    return unique, np.searchsorted(unique, key)


def _separators(buffer: np.ndarray, start: int, end: int, n_columns: int, position) -> np.ndarray | None:
    """``(rows, n_columns)`` positions of the ',' and '\\n' that end each field, or None when a
    byte at or below ',' other than those two occurs or a row has another number of fields.
    Digits and name characters are all above ','; a '+', '"', CR, space, tab or NUL is not.
    One scan of the part (a few MB: see :func:`parse_plain_csv`)."""
    body = buffer[start:end]
    here = np.flatnonzero(body <= 44)
    found = body[here]
    n_commas = int(np.count_nonzero(found == 44))
    n_newlines = int(np.count_nonzero(found == 10))
    ends = np.add(here, start, dtype=position, casting="unsafe")
    n_rows = n_newlines
    if len(ends) != n_rows * n_columns or n_commas != n_rows * (n_columns - 1):
        return None
    ends = ends.reshape(n_rows, n_columns)
    # with the counts above, every row's last separator being a newline puts the commas in place
    if not (buffer[ends[:, -1]] == 10).all():
        return None
    return ends


def _read_integers(buffer: np.ndarray, words: np.ndarray, field_end: np.ndarray, width: np.ndarray) -> np.ndarray | None:
    """The unsigned integers (up to 8 digits) whose text ends before ``field_end``, or None
    when a field holds a byte that is not 0-9."""
    if width.min() < 1 or width.max() > 8:
        return None
    if width.max() == 1:  # one digit a field (the lists' image indices t1, t2): one byte each
        digits = buffer[field_end - 1] - np.uint8(48)
        return digits.astype(np.int64) if (digits < 10).all() else None
    low = _LOW_BYTES[8 - width]  # the bytes before the field: set to '0'
    digits = words[field_end - 8]
    scratch = np.bitwise_xor(digits, _ASCII_ZEROS)
    scratch &= low
    digits ^= scratch
    digits -= _ASCII_ZEROS
    np.add(digits, _DIGIT_CHECK, out=scratch)
    scratch |= digits
    scratch &= _HIGH_BITS
    if scratch.any():
        return None
    # byte 0 is the most significant digit: combine neighbours, then pairs, then quads
    for shift, scale, mask in ((8, 10, 0x00FF00FF00FF00FF), (16, 100, 0x0000FFFF0000FFFF), (32, 10000, 0xFFFFFFFF)):
        np.right_shift(digits, _U(shift), out=scratch)
        digits *= _U(scale)
        digits += scratch
        digits &= _U(mask)
    return digits.view(np.int64)


def _name_codes(buffer: np.ndarray, words: np.ndarray, first: np.ndarray, width: np.ndarray):
    """``(sorted distinct names, code of each field)`` for the names ``buffer[first:first +
    width]``, or None when a name is longer than :data:`MAX_NAME` or two names share a hash.
    A name's key hashes its length, its first 8 bytes, its last 8 bytes (all of a name of up
    to 16 bytes) and, for longer names only, the words between; every name is then compared
    with its representative's on those words."""
    if width.min() < 1 or width.max() > MAX_NAME:
        return None
    short = int(width.min()) < 8
    head = words[first]
    tail = words[first + width - 8]
    if short:  # mask off the bytes after (head) and before (tail) a name shorter than a word
        within = np.minimum(width, 8)
        head &= _LOW_BYTES[within]
        tail &= ~_LOW_BYTES[8 - within]
    key = width.astype(np.uint64)
    key *= _KEY_STEP
    scratch = np.multiply(head, _PART_MULTIPLIERS[0])
    key += scratch
    np.multiply(tail, _PART_MULTIPLIERS[1], out=scratch)
    key += scratch
    # names of over 16 bytes: the words between head and tail join their key
    long = np.flatnonzero(width > 16)
    long_first, long_width = first[long], width[long]
    middles = []
    if len(long):
        extra = np.zeros(len(long), dtype=np.uint64)
        for w in range(1, -(-int(long_width.max()) // 8) - 1):
            middle = words[long_first + 8 * w]
            middle &= _LOW_BYTES[np.clip(long_width - 8 * w, 0, 8)]
            middles.append(middle)
            extra += middle * _U(_MIDDLE_MULTIPLIERS[w - 1])
        key[long] += extra
    unique, codes = _distinct_codes(key)
    representative = np.empty(len(unique), dtype=np.int64)
    representative[codes] = np.arange(len(codes))
    same = width == width[representative][codes]
    same &= head == head[representative][codes]
    same &= tail == tail[representative][codes]
    if not same.all():
        return None
    long_codes = codes[long]
    for w, middle in enumerate(middles, start=1):
        expected = words[first[representative] + 8 * w] & _LOW_BYTES[np.clip(width[representative] - 8 * w, 0, 8)]
        if not (middle == expected[long_codes]).all():
            return None
    found = np.array([bytes(buffer[first[r] : first[r] + width[r]]).decode() for r in representative], dtype=str)
    order = np.argsort(found, kind="stable")
    return found[order], np.argsort(order)[codes]


def parse_plain_csv(buffer: np.ndarray, start: int, end: int, columns: list[str], workers: int | None = None):
    """Columns of a plain ``a,b,...`` CSV body ``buffer[start:end]`` (uint8, ending with a
    newline, 8 spare bytes before, :data:`MAX_NAME` after) as ``(names, {column: int64
    array})``, or None when it is not plain. Columns named ``s*`` are names: they come back
    as codes into one sorted name table shared by all of them; the others are integers.

    The body is cut at newlines into parts of about :data:`_PART_BYTES`, whose arrays stay in
    the CPU caches through the dozens of passes over them, parsed by ``workers`` threads
    (default: the cores this process may use; numpy releases the GIL), then merged."""
    n_parts = max(1, (end - start) // _PART_BYTES)
    cuts = [start]
    for k in range(1, n_parts):
        cut = _next_row_start(buffer, start + (end - start) * k // n_parts, end)
        if cuts[-1] < cut < end:
            cuts.append(cut)
    cuts.append(end)
    if len(cuts) == 2:
        return _parse_part(buffer, start, end, columns)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(workers, len(cuts) - 1))
    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(lambda k: _parse_part(buffer, cuts[k], cuts[k + 1], columns), range(len(cuts) - 1)))
    if any(part is None for part in parts):
        return None
    names = np.unique(np.concatenate([part_names for part_names, _ in parts]))
    # a part's codes index its own sorted names: map them into the merged table
    to_merged = [np.searchsorted(names, part_names) for part_names, _ in parts]
    out = {}
    for column in columns:
        pieces = [mapping[values[column]] if column.startswith("s") else values[column] for mapping, (_, values) in zip(to_merged, parts)]
        out[column] = np.concatenate(pieces)
    return names, out


def _next_row_start(buffer: np.ndarray, position: int, end: int) -> int:
    """One past the first newline at or after ``position`` (``end`` when there is none)."""
    step = 4096  # rows are short: look a little ahead, then further
    while position < end:
        found = bytes(buffer[position : min(position + step, end)]).find(b"\n")
        if found >= 0:
            return position + found + 1
        position, step = position + step, 2 * step
    return end


def _parse_part(buffer: np.ndarray, start: int, end: int, columns: list[str]):
    """:func:`parse_plain_csv` of whole rows ``buffer[start:end]`` in this thread."""
    n_columns = len(columns)
    position = np.int32 if len(buffer) < 2**31 else np.int64  # half the memory traffic
    ends = _separators(buffer, start, end, n_columns, position)
    if ends is None:
        return None
    # field j starts one past the end of field j - 1 (of the previous row for j = 0)
    row_starts = np.empty(len(ends), dtype=position)
    row_starts[0] = start
    row_starts[1:] = ends[:-1, -1] + 1

    def field_start(j: int) -> np.ndarray:
        return row_starts if j == 0 else ends[:, j - 1] + 1

    # the 8 bytes from every position as one little-endian uint64 (an unaligned strided view)
    words = np.ndarray((len(buffer) - 7,), dtype="<u8", buffer=buffer, strides=(1,))
    out = {}
    for j, column in enumerate(columns):
        if not column.startswith("s"):
            field_end = np.ascontiguousarray(ends[:, j])
            values = _read_integers(buffer, words, field_end, (field_end - field_start(j)).astype(np.int64))
            if values is None:
                return None
            out[column] = values
    text = [j for j, c in enumerate(columns) if c.startswith("s")]
    if not text:
        return np.zeros(0, dtype=str), out
    first = np.concatenate([field_start(j) for j in text])
    width = (np.concatenate([ends[:, j] for j in text]) - first).astype(np.int64)
    named = _name_codes(buffer, words, first, width)
    if named is None:
        return None
    names, codes = named
    n = len(ends)
    out.update({columns[j]: codes[i * n : (i + 1) * n] for i, j in enumerate(text)})
    return names, out
