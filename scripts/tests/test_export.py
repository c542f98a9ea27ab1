"""Import -> export -> torch.jit.load round trips, fused attention, loading errors, fixtures."""
import contextlib
import io
import json
import os
import shutil
import tempfile
import unittest

import _helpers
import torch

import build_fixtures as bf
import export as exporter
import safetensors_io as st
import torch_diffusion_models as tdm

OP = "torch_diffusion::attention"


def graph_text(module: torch.jit.ScriptModule) -> str:
    text = str(module.inlined_graph)
    for name in ("encode", "decode"):
        if hasattr(module, name):
            text += str(getattr(module, name).inlined_graph)
    return text


class ExportRoundTrip(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.src = {}
        for fx in bf.FIXTURES:
            folder = os.path.join(cls.tmp.name, "diffusers", fx["name"])
            model = bf.random_model(fx["config"], fx["seed"])
            bf.write_diffusers_folder(folder, fx["config"], model, fx["weights"])
            cls.src[fx["name"]] = (folder, fx)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def export(self, name, fused=False, dtype="float32"):
        folder, _ = self.src[name]
        dst = os.path.join(self.tmp.name, "out", f"{name}-{fused}-{dtype}")
        meta = exporter.export(folder, dst, dtype, fused, log=lambda *_: None)
        return dst, meta, torch.jit.load(os.path.join(dst, "model.pt"))

    def eager(self, name):
        model, _, _, _ = exporter.load_component(self.src[name][0])
        tdm.set_fused_attention(False, model)
        return model

    def compare_cases(self, name, loaded, eager):
        folder, fx = self.src[name]
        for case in fx["cases"](bf._case_config(fx)):
            with torch.no_grad():
                a = getattr(eager, case["method"])(*case["inputs"])
                b = getattr(loaded, case["method"])(*case["inputs"])
            self.assertLessEqual(_helpers.max_diff(a, b), 1e-5, f"{name}/{case['name']}")

    def test_every_architecture_round_trips(self):
        for name in ("tiny-unet", "tiny-unet-sdxl", "tiny-vae", "tiny-clip-text", "tiny-clip-text-proj", "tiny-dit"):
            with self.subTest(name=name):
                dst, meta, loaded = self.export(name)
                self.assertEqual(sorted(os.listdir(dst)), ["config.json", "model.pt", "torch_diffusion.json"])
                self.assertNotIn(OP, graph_text(loaded))
                self.assertEqual(meta["dtype"], "float32")
                with open(os.path.join(dst, "config.json")) as f:
                    self.assertEqual(json.load(f), self.src[name][1]["config"])
                extra = {"torch_diffusion.json": ""}
                torch.jit.load(os.path.join(dst, "model.pt"), _extra_files=extra)
                self.assertEqual(json.loads(extra["torch_diffusion.json"])["class"], meta["class"])
                self.compare_cases(name, loaded, self.eager(name))

    def test_fused_attention_records_custom_op(self):
        for name in ("tiny-unet", "tiny-clip-text", "tiny-vae", "tiny-dit"):
            with self.subTest(name=name):
                _, meta, loaded = self.export(name, fused=True)
                self.assertTrue(meta["fused_attention"])
                self.assertIn(OP, graph_text(loaded))
                self.compare_cases(name, loaded, self.eager(name))
        self.assertFalse(tdm.fused_attention_enabled())  # exporting does not flip the global switch

    def test_global_switch_routes_eager_attention(self):
        calls = []
        q = torch.randn(1, 2, 3, 4)
        original = tdm.attention.__globals__["fused_attention"]
        tdm.attention.__globals__["fused_attention"] = lambda *a: calls.append(1) or original(*a)
        try:
            tdm.set_fused_attention(True)
            tdm.attention(q, q, q)
            tdm.set_fused_attention(False)
            tdm.attention(q, q, q)
        finally:
            tdm.attention.__globals__["fused_attention"] = original
            tdm.set_fused_attention(False)
        self.assertEqual(calls, [1])

    def test_other_resolutions(self):
        g = torch.Generator().manual_seed(7)
        _, _, unet = self.export("tiny-unet")
        eager = self.eager("tiny-unet")
        for h, w in ((16, 8), (5, 11), (12, 12)):
            args = (torch.randn(1, 4, h, w, generator=g), torch.tensor(3), torch.randn(1, 4, 16, generator=g))
            self.assertLessEqual(_helpers.max_diff(unet(*args), eager(*args)), 1e-5)
            self.assertEqual(tuple(unet(*args).shape), (1, 4, h, w))
        _, _, vae = self.export("tiny-vae")
        z = torch.randn(1, 4, 3, 10, generator=g)
        self.assertEqual(tuple(vae.decode(z).shape), (1, 3, 6, 20))
        self.assertLessEqual(_helpers.max_diff(vae.decode(z), self.eager("tiny-vae").decode(z)), 1e-5)
        _, _, dit = self.export("tiny-dit")
        x = torch.randn(2, 4, 16, 16, generator=g)
        out = dit(x, torch.tensor(10), torch.tensor([3, 10]))
        self.assertEqual(tuple(out.shape), (2, 8, 16, 16))
        self.assertLessEqual(_helpers.max_diff(out, self.eager("tiny-dit")(x, torch.tensor(10), torch.tensor([3, 10]))),
                             1e-5)

    def test_half_precision_exports(self):
        _, meta, unet = self.export("tiny-unet", dtype="bfloat16")
        self.assertEqual(meta["dtype"], "bfloat16")
        self.assertTrue(all(p.dtype == torch.bfloat16 for p in unet.parameters()))
        x = torch.randn(1, 4, 8, 8)
        out = unet(x, torch.tensor(10), torch.randn(1, 3, 16))
        self.assertEqual(out.dtype, torch.bfloat16)
        self.assertTrue(torch.isfinite(out.float()).all())
        _, meta, vae = self.export("tiny-vae", dtype="float16")
        self.assertEqual(meta["dtype"], "float32")  # force_upcast keeps the VAE in float32
        _, meta, clip = self.export("tiny-clip-text", dtype="float16")
        self.assertEqual(meta["dtype"], "float16")
        self.assertTrue(all(p.dtype == torch.float16 for p in clip.parameters()))

    def test_missing_and_unexpected_keys(self):
        folder, fx = self.src["tiny-vae"]
        bad = os.path.join(self.tmp.name, "bad-vae")
        shutil.copytree(folder, bad)
        weights = os.path.join(bad, fx["weights"])
        sd = st.load_file(weights)
        del sd["decoder.conv_out.bias"]
        sd["encoder.extra.weight"] = torch.zeros(1)
        sd["quant_conv.weight"] = torch.zeros(3, 3, 1, 1)
        st.save_file(sd, weights)
        with self.assertRaises(tdm.StateDictMismatchError) as ctx:
            exporter.export(bad, os.path.join(self.tmp.name, "never"), log=lambda *_: None)
        err = ctx.exception
        self.assertEqual(err.missing, ["decoder.conv_out.bias"])
        self.assertEqual(err.unexpected, ["encoder.extra.weight"])
        self.assertEqual([m[0] for m in err.shape_mismatch], ["quant_conv.weight"])
        msg = str(err)
        for part in ("decoder.conv_out.bias", "encoder.extra.weight", "quant_conv.weight", weights, "AutoencoderKL"):
            self.assertIn(part, msg)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            rc = exporter.main(["--from", bad, "--to", os.path.join(self.tmp.name, "never")])
        self.assertEqual(rc, 1)
        self.assertIn("missing keys (1)", stderr.getvalue())
        empty = os.path.join(self.tmp.name, "no-weights")
        os.makedirs(empty)
        shutil.copyfile(os.path.join(folder, "config.json"), os.path.join(empty, "config.json"))
        with self.assertRaisesRegex(exporter.ExportError, "no weights found"):
            exporter.export(empty, os.path.join(self.tmp.name, "never"), log=lambda *_: None)

    def test_weights_selection_and_hub_folder(self):
        folder, fx = self.src["tiny-dit"]
        hub = os.path.join(self.tmp.name, "models--org--tiny")
        snap = os.path.join(hub, "snapshots", "abc123")
        shutil.copytree(folder, snap)
        os.makedirs(os.path.join(hub, "refs"))
        with open(os.path.join(hub, "refs", "main"), "w") as f:
            f.write("abc123\n")
        self.assertEqual(exporter.resolve_source(hub), snap)
        os.rename(os.path.join(snap, fx["weights"]), os.path.join(snap, "diffusion_pytorch_model.fp16.safetensors"))
        self.assertTrue(exporter.find_weights(snap).endswith(".fp16.safetensors"))
        shutil.copyfile(os.path.join(snap, "diffusion_pytorch_model.fp16.safetensors"),
                        os.path.join(snap, fx["weights"]))
        self.assertTrue(exporter.find_weights(snap).endswith("model.safetensors"))
        self.assertTrue(exporter.find_weights(snap, "fp16").endswith(".fp16.safetensors"))
        meta = exporter.export(hub, os.path.join(self.tmp.name, "from-hub"), log=lambda *_: None)
        self.assertEqual(meta["class"], "DiTTransformer2DModel")

    def test_pipeline_export(self):
        root = os.path.join(self.tmp.name, "pipe")
        os.makedirs(os.path.join(root, "diffusers"))
        for comp in ("tiny-unet", "tiny-vae", "tiny-clip-text"):
            shutil.copytree(self.src[comp][0], os.path.join(root, "diffusers", comp))
        bf.build_pipeline(root, log=lambda *_: None)
        tok = os.path.join(root, "diffusers", "tiny-sd", "tokenizer")
        with open(os.path.join(tok, "vocab.json")) as f:
            self.assertEqual(len(json.load(f)), 1000)  # cut to the tiny text encoder's vocabulary
        with open(os.path.join(root, "diffusers", "tiny-sd", "model_index.json")) as f:
            index = json.load(f)
        self.assertEqual(index["tokenizer"], ["transformers", "CLIPTokenizer"])
        index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
        os.makedirs(os.path.join(root, "diffusers", "tiny-sd", "safety_checker"))
        with open(os.path.join(root, "diffusers", "tiny-sd", "model_index.json"), "w") as f:
            json.dump(index, f)
        out = os.path.join(root, "exported")
        result = exporter.export(os.path.join(root, "diffusers", "tiny-sd"), out, log=lambda *_: None)
        td = result["torch_diffusion"]
        self.assertEqual(sorted(td["components"]), ["scheduler", "text_encoder", "tokenizer", "unet", "vae"])
        self.assertIn("safety_checker", td["skipped"])
        self.assertTrue(os.path.isfile(os.path.join(out, "tokenizer", "vocab.json")))
        self.assertTrue(os.path.isfile(os.path.join(out, "tokenizer", "merges.txt")))
        self.assertTrue(os.path.isfile(os.path.join(out, "scheduler", "scheduler_config.json")))
        with open(os.path.join(out, "model_index.json")) as f:
            self.assertEqual(json.load(f)["unet"], ["diffusers", "UNet2DConditionModel"])
        for comp in ("unet", "vae", "text_encoder"):
            torch.jit.load(os.path.join(out, comp, "model.pt"))

    def test_instruct_pix2pix_pipeline_export(self):
        """An InstructPix2Pix folder (tiny-ip2p): the pipeline class kept, the 8-channel U-Net exported, the image processor skipped."""
        root = os.path.join(self.tmp.name, "ip2p")
        os.makedirs(os.path.join(root, "diffusers"))
        for comp in ("tiny-vae", "tiny-clip-text"):
            shutil.copytree(self.src[comp][0], os.path.join(root, "diffusers", comp))
        bf.build_ip2p(root, log=lambda *_: None)
        src = os.path.join(root, "diffusers", "tiny-ip2p")
        out = os.path.join(root, "exported")
        result = exporter.export(src, out, log=lambda *_: None)
        self.assertEqual(result["_class_name"], "StableDiffusionInstructPix2PixPipeline")
        td = result["torch_diffusion"]
        self.assertEqual(sorted(td["components"]), ["scheduler", "text_encoder", "tokenizer", "unet", "vae"])
        self.assertEqual(sorted(td["skipped"]), ["feature_extractor"])
        with open(os.path.join(out, "unet", "config.json")) as f:
            self.assertEqual(json.load(f)["in_channels"], 8)
        eager, _, _, _ = exporter.load_component(os.path.join(src, "unet"))
        self.assertGreater(eager.conv_in.weight[:, 4:].abs().min().item(), 0)  # the image channels' weights are not zero
        scripted = torch.jit.load(os.path.join(out, "unet", "model.pt"))
        g = torch.Generator().manual_seed(0)
        args = (torch.randn(3, 8, 8, 8, generator=g), torch.tensor(999.0), torch.randn(3, 16, 16, generator=g))
        with torch.no_grad():
            self.assertLessEqual(_helpers.max_diff(scripted(*args), eager(*args)), 1e-6)


class CommittedFixtures(unittest.TestCase):
    """The fixtures under test/fixtures reproduce their reference.json (what the Node tests check)."""

    def test_references(self):
        models = os.path.join(_helpers.REPO, "test", "fixtures", "models")
        if not os.path.isdir(models):
            self.skipTest("fixtures not built (scripts/build_fixtures.py)")
        tdm.ensure_attention_op()  # the *-fused fixtures record torch_diffusion::attention
        checked = 0
        for name in sorted(os.listdir(models)):
            ref_path = os.path.join(models, name, "reference.json")
            if not os.path.isfile(ref_path):
                continue
            with open(ref_path) as f:
                ref = json.load(f)
            module = torch.jit.load(os.path.join(models, name, "model.pt"))
            for case in ref["cases"]:
                args = [None if i.get("none") else
                        torch.tensor(i["data"], dtype=torch.float32 if i["dtype"] == "float32" else torch.int64)
                        .reshape(i["shape"]) for i in case["inputs"]]
                with torch.no_grad():
                    out = getattr(module, case["method"])(*args)
                outs = list(out) if isinstance(out, (tuple, list)) else [out]
                self.assertEqual(len(outs), len(case["outputs"]))
                for got, want in zip(outs, case["outputs"]):
                    exp = torch.tensor(want["data"]).reshape(want["shape"])
                    self.assertLessEqual(_helpers.max_diff(got, exp), ref["atol"], f"{name}/{case['name']}")
                checked += 1
        self.assertGreater(checked, 0)


if __name__ == "__main__":
    unittest.main()
