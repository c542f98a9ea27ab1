"""Minimal reader/writer for the safetensors format (no safetensors package needed), plus
loaders for sharded checkpoints and PyTorch .bin files.

File layout: 8-byte little-endian unsigned header length N, N bytes of UTF-8 JSON
{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}
(offsets relative to the end of the header), then the raw little-endian tensor bytes.
"""
import json
import os
import struct
import sys
from typing import Dict, List, Optional, Tuple

import torch

DTYPES: Dict[str, torch.dtype] = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
    "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
}
NAMES: Dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    pass


def _check_little_endian() -> None:
    if sys.byteorder != "little":  # pragma: no cover
        raise SafetensorsError("safetensors_io only supports little-endian hosts")


def read_header(path: str) -> Tuple[Dict[str, dict], Dict[str, str], int]:
    """Return (tensor entries, __metadata__, byte offset of the data section)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise SafetensorsError(f"{path}: file too short for a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER:
            raise SafetensorsError(f"{path}: header length {n} is implausible")
        header_bytes = f.read(n)
        if len(header_bytes) != n:
            raise SafetensorsError(f"{path}: truncated header")
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafetensorsError(f"{path}: invalid JSON header ({exc})") from None
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + n


def load_file(path: str, device: str = "cpu") -> Dict[str, torch.Tensor]:
    """Read every tensor of a .safetensors file (one read of the data section)."""
    _check_little_endian()
    header, _, data_start = read_header(path)
    size = os.path.getsize(path)
    data_len = size - data_start
    buf = bytearray(data_len)
    with open(path, "rb") as f:
        f.seek(data_start)
        view = memoryview(buf)
        got = 0
        while got < data_len:
            n = f.readinto(view[got:])
            if not n:
                raise SafetensorsError(f"{path}: truncated data section")
            got += n
    out: Dict[str, torch.Tensor] = {}
    for name, entry in header.items():
        dtype_name = entry.get("dtype")
        if dtype_name not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {dtype_name!r}")
        dtype = DTYPES[dtype_name]
        shape = [int(s) for s in entry["shape"]]
        begin, end = (int(x) for x in entry["data_offsets"])
        numel = 1
        for s in shape:
            numel *= s
        itemsize = torch.empty((), dtype=dtype).element_size()
        if end - begin != numel * itemsize or begin < 0 or end > data_len:
            raise SafetensorsError(f"{path}: tensor {name!r} has inconsistent data_offsets {begin}..{end}")
        if numel == 0:
            tensor = torch.empty(shape, dtype=dtype)
        else:
            tensor = torch.frombuffer(buf, dtype=dtype, count=numel, offset=begin).reshape(shape)
            if begin % itemsize:  # unaligned data: give the tensor its own aligned storage
                tensor = tensor.clone()
        out[name] = tensor if device == "cpu" else tensor.to(device)
    return out


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return b""
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def save_file(tensors: Dict[str, torch.Tensor], path: str, metadata: Optional[Dict[str, str]] = None) -> None:
    """Write tensors as a safetensors file (largest element size first, then by name, so every
    tensor stays aligned); the header is padded with spaces to a multiple of 8 bytes."""
    _check_little_endian()
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs: List[bytes] = []
    offset = 0
    for name in sorted(tensors, key=lambda k: (-tensors[k].element_size(), k)):
        t = tensors[name]
        if t.dtype not in NAMES:
            raise SafetensorsError(f"tensor {name!r}: dtype {t.dtype} cannot be stored")
        blob = _tensor_bytes(t)
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * ((8 - len(header_bytes) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def load_bin(path: str) -> Dict[str, torch.Tensor]:
    """Load a PyTorch pickle checkpoint (.bin/.pt/.pth), weights only when supported."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # very old torch without weights_only
        obj = torch.load(path, map_location="cpu")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """Load .safetensors, a sharded *.index.json, or a torch pickle."""
    if path.endswith(".index.json"):
        with open(path, "r", encoding="utf-8") as f:
            index = json.load(f)
        base = os.path.dirname(path)
        out: Dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            out.update(load_checkpoint(os.path.join(base, shard)))
        return out
    if path.endswith(".safetensors"):
        return load_file(path)
    return load_bin(path)
