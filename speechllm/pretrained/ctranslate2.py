"""Read CTranslate2 `model.bin` files with numpy alone (the `ctranslate2` package is not needed).

Layout (binary version 6, little-endian): u32 version, string spec name, u32 spec revision, u32 variable count, then
for each variable: string name, u8 rank, u32 dims[rank], u8 dtype id, u32 byte count, raw bytes; then u32 alias count
and (alias, target) string pairs. A string is a u16 length (counting a trailing NUL), the UTF-8 bytes, the NUL.
"""

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechllm.errors import ConfigError

BINARY_VERSION = 6
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


@dataclass
class CT2Model:
    """A parsed `model.bin`: the spec's name (e.g. "WhisperSpec"), its revision, and every variable by name
    (aliases included, pointing at the same array). Arrays are read-only views of the file's bytes."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]


def read_ct2_model(paths: str | Path | Iterable[str | Path]) -> CT2Model:
    """Parse a CTranslate2 `model.bin`; several paths are read as one file split in parts, concatenated in order.

    Raises ConfigError when the bytes are not a whole model.bin of a supported binary version.
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    data = b"".join(path.read_bytes() for path in paths)
    offset = 0

    def take(fmt: str) -> tuple:
        nonlocal offset
        values = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return values

    def string() -> str:
        nonlocal offset
        (size,) = take("H")
        offset += size
        return data[offset - size : offset - 1].decode()

    try:
        (version,) = take("I")
        if version != BINARY_VERSION:
            raise ValueError(f"binary version {version}, this reader knows {BINARY_VERSION}")
        spec, (revision,), variables = string(), take("I"), {}
        for _ in range(take("I")[0]):
            name, (rank,) = string(), take("B")
            shape, (dtype_id, size) = take(f"{rank}I"), take("BI")
            raw, offset = data[offset : offset + size], offset + size
            if _DTYPES[dtype_id] == "bfloat16":  # numpy has no bfloat16: widen the 16 high bits to float32
                array = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                array = np.frombuffer(raw, _DTYPES[dtype_id])
            variables[name] = array.reshape(shape)
        for _ in range(take("I")[0]):
            alias, target = string(), string()
            variables[alias] = variables[target]
        if offset != len(data):
            raise ValueError(f"{len(data) - offset} unread bytes at the end")
    except (struct.error, KeyError, ValueError, UnicodeDecodeError) as error:
        names = " + ".join(str(path) for path in paths)
        raise ConfigError(f"{names} is not a readable CTranslate2 model.bin ({error!r}).") from error
    return CT2Model(spec, revision, variables)
