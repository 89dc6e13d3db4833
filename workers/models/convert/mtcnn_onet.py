"""MTCNN O-Net (facenet-pytorch's `onet.pt`, a legacy torch state dict) -> ONNX, without torch.

The file is torch's pre-1.6 serialisation: five pickles in a row (magic number, protocol version,
system info, the state dict whose tensors point at storages by persistent id, the storage keys in file
order), then each storage as an int64 element count and its raw little-endian float32 data. The state
dict is read with an unpickler that resolves only the four names such a file uses (OrderedDict, the
tensor rebuild function, FloatStorage); anything else is refused, so a tampered file cannot run code.

The network is facenet-pytorch's `ONet` (facenet_pytorch/models/mtcnn.py): 48x48 RGB in, NCHW in the
image's own (H, W) orientation (facenet-pytorch folded the Caffe original's transposed layout into the
weights; the transpose before `dense5` keeps the flattening order). The ONNX graph takes raw RGB values
(0..255, float32, NCHW, dynamic batch) and normalises them itself ((x - 127.5) / 128, as MTCNN does).
Outputs: `prob` (N, 2) softmax [non-face, face]; `box` (N, 4) box regression; `points` (N, 10) five
points, x1..x5 then y1..y5, as fractions of the crop.
"""

from __future__ import annotations

import collections
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # loadable by every onnxruntime >= 1.14
INPUT_SIZE = 48
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LAYERS = ("conv1", "conv2", "conv3", "conv4", "dense5", "dense6_1", "dense6_2", "dense6_3")


class TorchFormatError(ValueError):
    """The file is not a legacy torch state dict of float32 tensors we can read."""


def _rebuild_tensor(storage: Any, offset: int, shape: tuple, stride: tuple, *_: Any) -> tuple:
    return ("tensor", storage, offset, tuple(shape), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch", "FloatStorage"):
            return "FloatStorage"
        raise TorchFormatError(f"refusing to load {module}.{name} from a model file")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise TorchFormatError(f"unexpected persistent id {pid!r}")
        if pid[1] != "FloatStorage":
            raise TorchFormatError(f"only float32 storages are supported, not {pid[1]}")
        return str(pid[2])  # the storage key


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The float32 tensors of a legacy (pre-1.6) torch state-dict file, by name."""
    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            raise TorchFormatError("zip-format torch files are not supported (expected the legacy format)")
        f.seek(0)
        header = [_StateDictUnpickler(f).load() for _ in range(3)]
        if header[0] != LEGACY_MAGIC or header[1] != 1001 or not header[2].get("little_endian"):
            raise TorchFormatError("not a little-endian legacy torch file")
        state = _StateDictUnpickler(f).load()
        keys = _StateDictUnpickler(f).load()
        storages: dict[str, np.ndarray] = {}
        for key in keys:
            (count,) = struct.unpack("<q", f.read(8))
            raw = f.read(4 * count)
            if len(raw) != 4 * count:
                raise TorchFormatError(f"storage {key} is truncated")
            storages[str(key)] = np.frombuffer(raw, dtype="<f4")
    out = {}
    for name, value in state.items():
        if not (isinstance(value, tuple) and value and value[0] == "tensor"):
            raise TorchFormatError(f"{name} is not a tensor")
        _, key, offset, shape, stride = value
        data = storages[key]
        last = offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True)) if shape else offset
        if last >= data.size:
            raise TorchFormatError(f"{name} reads past its storage")
        # Torch strides are in elements; some of these tensors are stored transposed (not contiguous).
        view = np.lib.stride_tricks.as_strided(
            data[offset:], shape=shape, strides=[4 * s for s in stride], writeable=False
        )
        out[name] = np.ascontiguousarray(view, dtype=np.float32)
    return out


def build_model(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    missing = [f"{layer}.{kind}" for layer in LAYERS for kind in ("weight", "bias")]
    missing += [f"prelu{i}.weight" for i in range(1, 6)]
    missing = [name for name in missing if name not in weights]
    if missing:
        raise TorchFormatError(f"not an MTCNN O-Net state dict: missing {', '.join(missing)}")
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    x = node("Sub", ["input", const("mean", np.array(127.5))], "centred")
    x = node("Mul", [x, const("scale", np.array(0.0078125))], "normalised")
    pools = {1: (3, 2), 2: (3, 2), 3: (2, 2)}
    for i in range(1, 5):
        w, b = weights[f"conv{i}.weight"], weights[f"conv{i}.bias"]
        x = node("Conv", [x, const(f"conv{i}.w", w), const(f"conv{i}.b", b)], f"conv{i}")
        slope = weights[f"prelu{i}.weight"].reshape(-1, 1, 1)
        x = node("PRelu", [x, const(f"prelu{i}.slope", slope)], f"prelu{i}")
        if i in pools:
            k, s = pools[i]
            x = node("MaxPool", [x], f"pool{i}", kernel_shape=[k, k], strides=[s, s], ceil_mode=1)
    # facenet-pytorch flattens in (W, H, C) order: x.permute(0, 3, 2, 1) before dense5.
    x = node("Transpose", [x], "whc", perm=[0, 3, 2, 1])
    x = node("Reshape", [x, "flat_shape"], "flat")
    inits.append(
        numpy_helper.from_array(np.array([-1, weights["dense5.weight"].shape[1]], np.int64), "flat_shape")
    )

    def dense(name: str, inp: str, out: str) -> str:
        w, b = weights[f"{name}.weight"], weights[f"{name}.bias"]
        return node("Gemm", [inp, const(f"{name}.w", w), const(f"{name}.b", b)], out, transB=1)

    x = dense("dense5", x, "dense5")
    x = node("PRelu", [x, const("prelu5.slope", weights["prelu5.weight"])], "prelu5")
    logits = dense("dense6_1", x, "logits")
    node("Softmax", [logits], "prob", axis=1)
    dense("dense6_2", x, "box")
    dense("dense6_3", x, "points")
    graph = helper.make_graph(
        nodes,
        "mtcnn_onet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])],
        [
            helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("box", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("points", TensorProto.FLOAT, ["N", 10]),
        ],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facequeue"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def convert(src: Path, dst: Path) -> None:
    onnx.save(build_model(read_state_dict(Path(src))), str(dst))
