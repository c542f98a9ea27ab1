import json
import os
import struct
import tempfile
import unittest

import _helpers  # noqa: F401  (sys.path)
import torch

import safetensors_io as st


class SafetensorsRoundTrip(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.tmp.name, "x.safetensors")

    def tearDown(self):
        self.tmp.cleanup()

    def test_round_trip_all_dtypes(self):
        g = torch.Generator().manual_seed(0)
        tensors = {
            "f32": torch.randn(3, 4, generator=g),
            "f16": torch.randn(5, generator=g).half(),
            "bf16": torch.randn(2, 3, generator=g).to(torch.bfloat16),
            "f64": torch.randn(2, generator=g).double(),
            "i64": torch.arange(7),
            "i32": torch.arange(3, dtype=torch.int32),
            "i16": torch.tensor([-3, 4], dtype=torch.int16),
            "i8": torch.tensor([-1, 2, 3], dtype=torch.int8),
            "u8": torch.tensor([1, 255], dtype=torch.uint8),
            "bool": torch.tensor([True, False, True]),
            "scalar": torch.tensor(2.5),
            "empty": torch.zeros(0, 4),
            "noncontig": torch.randn(4, 6, generator=g).t(),
        }
        st.save_file(tensors, self.path, {"format": "pt"})
        loaded = st.load_file(self.path)
        self.assertEqual(sorted(loaded), sorted(tensors))
        for k, v in tensors.items():
            self.assertEqual(loaded[k].dtype, v.dtype, k)
            self.assertEqual(tuple(loaded[k].shape), tuple(v.shape), k)
            self.assertTrue(torch.equal(loaded[k], v), k)
        header, meta, start = st.read_header(self.path)
        self.assertEqual(meta, {"format": "pt"})
        self.assertEqual(start % 8, 0)
        self.assertEqual(header["bf16"]["dtype"], "BF16")
        self.assertEqual(header["scalar"]["shape"], [])
        for entry in header.values():  # every tensor aligned to its element size
            size = torch.empty((), dtype=st.DTYPES[entry["dtype"]]).element_size()
            self.assertEqual(entry["data_offsets"][0] % size, 0)

    def test_reads_hand_written_file(self):
        # header written by hand exactly as the format specifies (unsorted, unaligned offsets)
        data = struct.pack("<2f", 1.5, -2.0) + struct.pack("<q", 42)
        header = {"b": {"dtype": "I64", "shape": [1], "data_offsets": [8, 16]},
                  "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
        hb = json.dumps(header).encode()
        with open(self.path, "wb") as f:
            f.write(struct.pack("<Q", len(hb)) + hb + data)
        loaded = st.load_file(self.path)
        self.assertEqual(loaded["a"].tolist(), [1.5, -2.0])
        self.assertEqual(loaded["b"].tolist(), [42])

    def test_errors(self):
        with open(self.path, "wb") as f:
            f.write(b"\x01\x02")
        with self.assertRaises(st.SafetensorsError):
            st.load_file(self.path)
        hb = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
        with open(self.path, "wb") as f:
            f.write(struct.pack("<Q", len(hb)) + hb + b"\0" * 8)
        with self.assertRaisesRegex(st.SafetensorsError, "inconsistent"):
            st.load_file(self.path)
        hb = json.dumps({"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}).encode()
        with open(self.path, "wb") as f:
            f.write(struct.pack("<Q", len(hb)) + hb + b"\0")
        with self.assertRaisesRegex(st.SafetensorsError, "unsupported dtype"):
            st.load_file(self.path)

    def test_sharded_and_bin(self):
        st.save_file({"a": torch.ones(2)}, os.path.join(self.tmp.name, "m-00001.safetensors"))
        st.save_file({"b": torch.zeros(3)}, os.path.join(self.tmp.name, "m-00002.safetensors"))
        index = {"metadata": {}, "weight_map": {"a": "m-00001.safetensors", "b": "m-00002.safetensors"}}
        ipath = os.path.join(self.tmp.name, "m.safetensors.index.json")
        with open(ipath, "w") as f:
            json.dump(index, f)
        loaded = st.load_checkpoint(ipath)
        self.assertEqual(sorted(loaded), ["a", "b"])
        bpath = os.path.join(self.tmp.name, "p.bin")
        torch.save({"w": torch.arange(4.0)}, bpath)
        self.assertTrue(torch.equal(st.load_checkpoint(bpath)["w"], torch.arange(4.0)))


if __name__ == "__main__":
    unittest.main()
