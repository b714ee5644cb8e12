#!/usr/bin/env python3
"""Writes linkfarm-formats' test corpus into OUTDIR, with OUTDIR/manifest.json saying what each
file must be judged: {"file", "expect": "ok"|"corrupt"|"unsafe", "kind"?, "words"?}.

Valid files come from the real writers: the `safetensors` and `gguf` packages (with numpy), and
stdlib zipfile/pickle for torch-format archives whose globals are the real torch names (a stub
`torch` package on sys.path stands in for torch, which is not needed). The malicious corpus holds
the classic payloads and the bypasses reported against picklescan and modelscan; the damaged one
holds truncations, lying headers and a zip bomb. Nothing here is ever unpickled.

Usage: make_corpus.py OUTDIR        (pip-installs safetensors, gguf, numpy when missing)
"""

import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile


def ensure_packages():
    missing = []
    for mod in ("numpy", "safetensors", "gguf"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        subprocess.check_call(
            [sys.executable, "-m", "pip", "install", "--quiet", *missing],
            stdout=sys.stderr,
        )


ensure_packages()
import numpy as np  # noqa: E402
import gguf  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
MANIFEST = []


def put(name, data, expect, kind=None, words=None):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    MANIFEST.append({"file": name, "expect": expect, "kind": kind, "words": words})


def note(name, expect, kind=None, words=None):
    MANIFEST.append({"file": name, "expect": expect, "kind": kind, "words": words})


def raw_safetensors(tensors, metadata=None):
    """A safetensors file written by hand, for dtypes numpy lacks (BF16, F8, F4, ...)."""
    header, data, off = {}, b"", 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


# ---------------------------------------------------------------- safetensors: every dtype
numpy_dtypes = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "U16": np.uint16,
    "U32": np.uint32, "U64": np.uint64,
}
for name, dt in numpy_dtypes.items():
    path = f"st_{name.lower()}.safetensors"
    save_file({"w": np.ones((3, 5), dtype=dt), "b": np.zeros((5,), dtype=dt)},
              os.path.join(OUT, path), metadata={"format": "np", "dtype": name})
    note(path, "ok", kind="unknown")
for dtype, nbytes in [("BF16", 2), ("F8_E4M3", 1), ("F8_E5M2", 1), ("F8_E8M0", 1), ("C64", 8),
                      ("F8_E4M3FNUZ", 1), ("F8_E5M2FNUZ", 1)]:
    put(f"st_{dtype.lower()}.safetensors",
        raw_safetensors({"w": (dtype, [4, 2], b"\0" * 8 * nbytes)}, {"format": "pt"}), "ok")
put("st_f4.safetensors", raw_safetensors({"w": ("F4", [4, 2], b"\0" * 4)}), "ok")
put("st_f6.safetensors", raw_safetensors({"w": ("F6_E2M3", [4, 4], b"\0" * 12)}), "ok")
save_file({}, os.path.join(OUT, "st_empty_tensors.safetensors"), metadata={"only": "metadata"})
note("st_empty_tensors.safetensors", "ok")
save_file({"s": np.array(1.0, dtype=np.float32), "z": np.zeros((0, 4), dtype=np.float32)},
          os.path.join(OUT, "st_scalar_and_zero.safetensors"))
note("st_scalar_and_zero.safetensors", "ok")

# ---------------------------------------------------------------- safetensors: kinds
def kind_file(name, kind, names, metadata=None):
    save_file({n: np.zeros((2, 2), dtype=np.float16) for n in names}, os.path.join(OUT, name),
              metadata=metadata)
    note(name, "ok", kind=kind)


kind_file("kind_lora.safetensors", "lora", [
    f"lora_unet_down_blocks_0_attentions_0_proj_in.{p}" for p in ("lora_down.weight", "lora_up.weight", "alpha")
] + ["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"],
    metadata={"ss_network_module": "networks.lora"})
kind_file("kind_lycoris.safetensors", "lora",
          ["lycoris_a.hada_w1_a", "lycoris_a.hada_w1_b", "lycoris_a.hada_w2_a", "lycoris_a.hada_w2_b", "lycoris_a.alpha"])
kind_file("kind_vae.safetensors", "vae",
          ["encoder.conv_in.weight", "encoder.down.0.block.0.conv1.weight", "decoder.conv_in.weight",
           "decoder.up.0.block.0.conv1.weight", "quant_conv.weight", "post_quant_conv.weight"])
kind_file("kind_checkpoint.safetensors", "checkpoint",
          ["model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.out.2.weight",
           "first_stage_model.decoder.conv_in.weight", "first_stage_model.encoder.conv_in.weight",
           "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"])
kind_file("kind_controlnet.safetensors", "controlnet",
          ["control_model.input_blocks.0.0.weight", "control_model.input_hint_block.0.weight",
           "control_model.zero_convs.0.0.weight", "control_model.middle_block_out.0.weight"])
kind_file("kind_text_encoder.safetensors", "text_encoder",
          ["text_model.embeddings.token_embedding.weight", "text_model.encoder.layers.0.mlp.fc1.weight",
           "text_model.final_layer_norm.weight"])
kind_file("kind_embedding.safetensors", "embedding", ["emb_params"])
kind_file("kind_upscaler.safetensors", "upscaler",
          ["conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "trunk_conv.weight", "upconv1.weight",
           "HRconv.weight", "conv_last.weight"])
kind_file("kind_diffusion_model.safetensors", "diffusion_model",
          ["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight", "img_in.weight",
           "txt_in.weight", "time_in.in_layer.weight", "final_layer.linear.weight"])

# ---------------------------------------------------------------- safetensors: damaged
good = raw_safetensors({"a": ("F32", [256], b"\1" * 1024), "b": ("F16", [16], b"\2" * 32)})
put("bad_truncated_half.safetensors", good[: len(good) // 2], "corrupt", words="truncated")
put("bad_truncated_one_byte.safetensors", good[:-1], "corrupt", words="truncated")
put("bad_trailing.safetensors", good + b"\0", "corrupt")
put("bad_header_longer_than_file.safetensors",
    struct.pack("<Q", 10_000_000) + b'{"a":1}', "corrupt", words="truncated")
put("bad_header_2pow63.safetensors", struct.pack("<Q", 1 << 63) + b"{}", "corrupt", words="limit")
h = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}).encode()
put("bad_overlapping_offsets.safetensors", struct.pack("<Q", len(h)) + h + b"\0" * 24, "corrupt")
h = json.dumps({"a": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}}).encode()
put("bad_unknown_dtype.safetensors", struct.pack("<Q", len(h)) + h + b"\0" * 16, "corrupt")
h = json.dumps({"a": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}).encode()
put("bad_shape_mismatch.safetensors", struct.pack("<Q", len(h)) + h + b"\0" * 16, "corrupt")
put("bad_empty.safetensors", b"", "corrupt", words="empty")
put("bad_not_json.safetensors", struct.pack("<Q", 4) + b"\xff\xfe\0\0", "corrupt")

# ---------------------------------------------------------------- GGUF
def gguf_path(name):
    return os.path.join(OUT, name)


w = gguf.GGUFWriter(gguf_path("gguf_every_type.gguf"), "llama")
w.add_block_count(1)
w.add_array("tokenizer.ggml.tokens", ["a", "b", "<s>"])
w.add_array("some.ints", [1, 2, 3])
w.add_float32("some.float", 0.5)
for qt, (block, size) in gguf.GGML_QUANT_SIZES.items():
    n_blocks = 2
    if block == 1:
        np_t = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8,
                "I16": np.int16, "I32": np.int32, "I64": np.int64}.get(qt.name)
        if np_t is not None:
            w.add_tensor(f"t.{qt.name}", np.zeros((2, 3), dtype=np_t))
            continue
    raw = np.zeros((2, n_blocks * size), dtype=np.uint8)
    w.add_tensor(f"t.{qt.name}", raw, raw_dtype=qt)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
note("gguf_every_type.gguf", "ok")

w = gguf.GGUFWriter(gguf_path("gguf_align64.gguf"), "flux")
w.add_custom_alignment(64)
w.add_tensor("x", np.ones((7, 3), dtype=np.float32))
w.add_tensor("y", np.ones((5,), dtype=np.float16))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
note("gguf_align64.gguf", "ok")
g = open(gguf_path("gguf_align64.gguf"), "rb").read()
put("bad_gguf_truncated.gguf", g[:-60], "corrupt", words="truncated")
put("bad_gguf_header_cut.gguf", g[:40], "corrupt")
put("bad_gguf_version9.gguf", g[:4] + struct.pack("<I", 9) + g[8:], "corrupt", words="version")
put("bad_gguf_count_2pow63.gguf", g[:8] + struct.pack("<Q", 1 << 63) + g[16:], "corrupt")
put("bad_gguf_magic.gguf", b"GGML" + g[4:], "corrupt")

# ---------------------------------------------------------------- torch: a stub package
stub = tempfile.mkdtemp()
os.makedirs(os.path.join(stub, "torch"))
with open(os.path.join(stub, "torch", "__init__.py"), "w") as f:
    f.write(
        "class _S:\n    pass\n"
        + "".join(f"class {n}(_S):\n    pass\n" for n in (
            "FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage", "ByteStorage"))
    )
with open(os.path.join(stub, "torch", "_utils.py"), "w") as f:
    f.write("def _rebuild_tensor_v2(*a):\n    pass\n\ndef _rebuild_parameter(*a):\n    pass\n")
sys.path.insert(0, stub)
import torch  # noqa: E402  (the stub)
import torch._utils  # noqa: E402


class Storage:
    def __init__(self, cls, key, numel):
        self.cls, self.key, self.numel = cls, key, numel


class Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, shape

    def __reduce__(self):
        stride = tuple(int(np.prod(self.shape[i + 1:])) for i in range(len(self.shape)))
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, 0, self.shape, stride, False, collections.OrderedDict()))


class Parameter:
    def __init__(self, t):
        self.t = t

    def __reduce__(self):
        return (torch._utils._rebuild_parameter, (self.t, True, collections.OrderedDict()))


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def state_dict_pickle(protocol=2, extra=None):
    sd = collections.OrderedDict()
    sd["model.diffusion_model.input_blocks.0.0.weight"] = Tensor(Storage(torch.FloatStorage, "0", 4), (2, 2))
    sd["model.diffusion_model.out.2.bias"] = Tensor(Storage(torch.HalfStorage, "1", 2), (2,))
    sd["p"] = Parameter(Tensor(Storage(torch.BFloat16Storage, "2", 2), (2,)))
    obj = {"state_dict": sd, "global_step": 1234, "epoch": 3}
    if extra is not None:
        obj["extra"] = extra
    buf = io.BytesIO()
    TorchPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def torch_zip(data_pkl, archive="archive", compress=False, extra_entries=(), storages=3):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        z.writestr(f"{archive}/data.pkl", data_pkl)
        z.writestr(f"{archive}/byteorder", "little")
        for i in range(storages):
            z.writestr(f"{archive}/data/{i}", b"\0" * 16)
        z.writestr(f"{archive}/version", "3\n")
        z.writestr(f"{archive}/.data/serialization_id", "0123456789")
        for name, data in extra_entries:
            z.writestr(name, data)
    return buf.getvalue()


for proto in (2, 3, 4, 5):
    put(f"torch_zip_p{proto}.ckpt", torch_zip(state_dict_pickle(proto)), "ok")
put("torch_zip_named.pt", torch_zip(state_dict_pickle(2), archive="my_model"), "ok")
put("torch_bare_p2.pth", state_dict_pickle(2), "ok")
# A legacy (pre-1.6) file: five pickles, then raw storage bytes.
legacy = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
legacy += state_dict_pickle(2) + pickle.dumps(["0", "1", "2"], protocol=2) + b"\0" * 64
put("torch_legacy.pt", legacy, "ok")

# ---------------------------------------------------------------- malicious
class Reduce:
    def __init__(self, f, args):
        self.f, self.args = f, args

    def __reduce__(self):
        return (self.f, self.args)


import builtins  # noqa: E402
for proto in (0, 2, 4):
    put(f"evil_os_system_p{proto}.pt", pickle.dumps(Reduce(os.system, ("echo pwned",)), protocol=proto),
        "unsafe", words="system")
put("evil_os_system_in_zip.ckpt", torch_zip(state_dict_pickle(2, extra=Reduce(os.system, ("id",)))),
    "unsafe", words="system")
put("evil_builtins_exec.pt", pickle.dumps(Reduce(builtins.exec, ("import os",)), protocol=4),
    "unsafe", words="builtins.exec")
put("evil_builtins_eval_in_zip.pt", torch_zip(pickle.dumps(Reduce(builtins.eval, ("1",)), protocol=2)),
    "unsafe", words="builtin__.eval")
put("evil_nested_pickle_loads.pt",
    pickle.dumps(Reduce(pickle.loads, (pickle.dumps(Reduce(os.system, ("id",))),)), protocol=2),
    "unsafe", words="loads")
# picklescan #14: BINPUT/MEMOIZE confusion feeding STACK_GLOBAL.
p = (b"\x80\x04" + b"T\x02\x00\x00\x00os" + b"q\x00" + b"T\x06\x00\x00\x00system" + b"q\x01"
     + b"T\x0c\x00\x00\x00torch._utils" + b"\x94" + b"T\x12\x00\x00\x00_rebuild_tensor_v2" + b"\x94"
     + b"h\x00h\x01\x93" + b"\x8c\x02id\x85R.")
put("evil_memo_confusion.pt", p, "unsafe", words="os.system")
# A memo slot overwritten: a scanner remembering the first PUT sees torch.
p = (b"\x80\x04\x8c\x05torchq\x00\x8c\x05posixq\x0000h\x00\x8c\x06system\x93" + b"\x8c\x02id\x85R.")
put("evil_memo_overwrite.pt", p, "unsafe", words="posix.system")
# STACK_GLOBAL fed by a call result: _codecs.encode('bf', 'rot13') == 'os'.
p = (b"\x80\x04\x8c\x07_codecs\x8c\x06encode\x93\x8c\x02bf\x8c\x05rot13\x86R\x94"
     b"0h\x00\x8c\x06system\x93\x8c\x02id\x85R.")
put("evil_stack_global_from_call.pt", p, "unsafe", words="not plain strings")
# modelscan #330: numpy's __builtins__.
p = bytes.fromhex("80049566000000000000008c056e756d70798c0473697a659394948c056e756d70798c0c5f5f6275696c74696e735f5f93949468017d7d8c0573686170656803738662680168018c046576616c86528c1d5f5f696d706f72745f5f28226f7322292e73797374656d28226964222985522e")
put("evil_numpy_builtins.pt", p, "unsafe")
# modelscan #85: BUILD on a global, then dotted attribute names.
p = (b"\x80\x05cnumpy\nprod\nN(Va\nVos\ndt\x86b" b"N(Vb\nVsystem\ndt\x86b0"
     b"cnumpy\nprod.a\np0\ncnumpy\nprod.b\np1\n00g0\ng1\n\x93Vecho pwned\n\x85R.")
put("evil_build_on_global.pt", p, "unsafe")
# modelscan #331 / picklescan #74: importlib.import_module.
import importlib  # noqa: E402
put("evil_importlib.pt", pickle.dumps(Reduce(importlib.import_module, ("os",)), protocol=4),
    "unsafe", words="importlib")
# modelscan #338: a torch name that runs commands.
p = b"\x80\x02ctorch.utils.collect_env\nrun\n\x8c\x02id\x85R."
put("evil_torch_collect_env_run.pt", p, "unsafe", words="collect_env")
# A zip whose CRC is wrong (picklescan's zip reader gave up; torch loads it anyway).
z = bytearray(torch_zip(pickle.dumps(Reduce(os.system, ("id",)), protocol=2)))
i = z.find(b"PK\x03\x04")
z[i + 14] ^= 0xFF
z[z.find(b"PK\x01\x02") + 16] ^= 0xFF
put("evil_zip_bad_crc.pt", bytes(z), "unsafe", words="system")
# A pickle in front of a harmless torch zip: torch.load runs the pickle.
put("evil_polyglot.pt", pickle.dumps(Reduce(os.system, ("id",)), protocol=2) + torch_zip(state_dict_pickle(2)),
    "unsafe", words="system")
# The unsafe global in the 4th pickle of a legacy file.
put("evil_legacy_fourth.pt", legacy.replace(state_dict_pickle(2), pickle.dumps(Reduce(os.system, ("id",)), protocol=2)),
    "unsafe", words="system")
# An unknown opcode.
put("evil_unknown_opcode.pt", b"\x80\x02\xfe.", "unsafe", words="opcode")

# ---------------------------------------------------------------- torch zips: damaged
sd = state_dict_pickle(2)
# zipfile only warns about a duplicate name.
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as zf:
    zf.writestr("archive/data.pkl", sd)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zf.writestr("archive/data.pkl", sd)
    zf.writestr("archive/version", "3\n")
put("bad_zip_two_data_pkl.ckpt", buf.getvalue(), "corrupt", words="two data.pkl")
put("bad_zip_compressed.ckpt", torch_zip(sd, compress=True), "corrupt", words="compressed")
put("bad_zip_cut_short.ckpt", torch_zip(sd)[:-30], "corrupt", words="cut short")
put("bad_zip_extra_entry.ckpt", torch_zip(sd, extra_entries=[("archive/code/evil.py", "import os")]),
    "corrupt", words="does not write")
# A zip bomb: 256 MiB of zeros deflated into a few hundred KiB, as data.pkl.
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
    with zf.open("archive/data.pkl", "w", force_zip64=True) as e:
        chunk = b"\0" * (1 << 20)
        for _ in range(256):
            e.write(chunk)
put("bad_zip_bomb.ckpt", buf.getvalue(), "corrupt", words="compressed")
put("bad_pickle_truncated.pt", sd[: len(sd) // 2], "corrupt")
put("bad_not_a_pickle.pt", b"<html>not a model</html>", "corrupt")

# ---------------------------------------------------------------- companions
put("ok.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 32, "ok")
put("ok.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 32, "ok")
put("ok.webp", b"RIFF\x24\0\0\0WEBPVP8 " + b"\0" * 24, "ok")
put("ok.json", b'{"prompt": "a cat", "steps": 20}', "ok")
put("ok.yaml", b"model:\n  base: sdxl\n  steps: [1, 2]\n", "ok")
put("ok.txt", "trigger words: gr\u00fcn".encode(), "ok")
put("bad_fake.png", b"GIF89a" + b"\0" * 32, "corrupt")
put("bad.json", b'{"prompt": ', "corrupt")
put("bad.yaml", b"a: [1, 2\n", "corrupt")
put("bad.txt", b"\xff\xfe\xfa", "corrupt")

with open(os.path.join(OUT, "manifest.json"), "w") as f:
    json.dump(MANIFEST, f, indent=1)
total = sum(os.path.getsize(os.path.join(OUT, m["file"])) for m in MANIFEST)
print(f"{len(MANIFEST)} files, {total} bytes in {OUT}", file=sys.stderr)
