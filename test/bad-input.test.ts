import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import type { Tensor } from "../lib";
import { binding } from "../lib/native";
import { fixtures } from "./helpers";

/** The addon's own entry points, as any code that requires the .node can reach them (no TS checks in front). */
const raw = binding as unknown as Record<string, (...args: unknown[]) => unknown>;
const nativeModule = binding.NativeModule.prototype as unknown as Record<string, (this: unknown, ...args: unknown[]) => unknown>;

/** A zip archive of stored (uncompressed) files, as torch.save writes them. */
function storedZip(files: [string, Buffer][]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of files) {
    const crc = zlib.crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(name.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, Buffer.from(name), data);
    centrals.push(central, Buffer.from(name));
    offset += 30 + name.length + data.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(files.length, 8);
  end.writeUInt16LE(files.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, directory, end]);
}

function nested(depth: number): unknown {
  let value: unknown = [];
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

const junk: unknown[] = [undefined, null, 0, -1, 1.5, NaN, Infinity, "x", "", true, [], [1, "a"], {}, { shape: [1] }, () => 1, Symbol("s"), 10n, new Uint8Array(3), Object.create(td.Tensor.prototype)];

describe("bad input never crashes the process", () => {
  it("exact messages for common mistakes", () => {
    const x = td.ones([2, 3]);
    expect(() => x.add("a" as unknown as number)).toThrow("aten::add.Tensor: argument 'other': expected a Tensor but received string \"a\"");
    expect(() => x.matmul(td.ones([2, 3]))).toThrow("aten::matmul: mat1 and mat2 shapes cannot be multiplied (2x3 and 2x3) (self: [2, 3] float32 cpu, other: [2, 3] float32 cpu)");
    expect(() => x.reshape([4, 4])).toThrow("aten::reshape: shape '[4, 4]' is invalid for input of size 6");
    expect(() => x.add(td.ones([4]))).toThrow(/aten::add.Tensor: The size of tensor a \(3\) must match the size of tensor b \(4\)/);
    // A device this machine lacks: any CUDA one here, a 100th GPU on a CUDA machine.
    expect(() => x.to(td.cuda.isAvailable() ? "cuda:99" : "cuda")).toThrow(/aten::to.device: .*(not linked with support for cuda|no CUDA GPUs|CUDA|device)/);
    expect(() => x.to("float99" as td.DType)).toThrow("aten::to.device: argument 'device': Invalid device string: 'float99'");
    expect(() => td.tensor([1, 2, 3], [2, 2])).toThrow("tensor: 3 values do not fill shape [2, 2] (4 elements)");
    expect(() => td.tensor([[1, 2], [3]])).toThrow("tensor: ragged nested array (length 1 at depth 1, expected 2)");
    expect(() => td.zeros([-1])).toThrow("Expected array of non-negative integers for shape but received array of length 1");
    expect(() => td.op("aten::nope")).toThrow('op: unknown op "aten::nope"');
    expect(() => td.op("aten::add.Tensor", x)).toThrow("aten::add.Tensor: missing argument 'other'");
    expect(() => td.op("aten::add.Tensor", x, x, 1, 2)).toThrow("aten::add.Tensor: expected at most 3 arguments but received 4");
    expect(() => td.op("aten::add.Tensor", x, x, { beta: 1 })).toThrow("aten::add.Tensor: unknown keyword argument");
    expect(() => td.cat([])).toThrow("Expected non-empty array of Tensors for tensors but received array of length 0");
    expect(() => td.interpolate(x, { scaleFactor: 2 })).toThrow("interpolate: expected an NCHW tensor (4 dimensions) but received shape [2, 3]");
    expect(() => td.mseLoss(x, x, "avg" as "mean")).toThrow('Expected one of none, mean, sum for reduction but received "avg" of type string');
    expect(() => new (td.Tensor as unknown as new () => Tensor)()).toThrow("Tensor: tensors are created by tensor(), zeros(), randn() and the other factories, not with new");
    expect(() => x.index(0.5)).toThrow("Expected integer for index but received 0.5 of type number");
    expect(() => td.setNumThreads(0)).toThrow("Expected positive integer for setNumThreads(n) but received 0 of type number");
  });

  it("hundreds of wrong calls all throw Errors with messages", () => {
    const x = td.ones([2, 2]);
    const calls: ((v: unknown) => unknown)[] = [
      (v) => td.tensor(v as number[]), (v) => td.tensor([1, 2], v as number[]), (v) => td.tensor([1], [1], { dtype: v as td.DType }),
      (v) => td.zeros(v as number[]), (v) => td.randn([2], { generator: v as td.Generator }), (v) => td.full([2], v as number),
      (v) => x.add(v as Tensor), (v) => x.mul(v as Tensor), (v) => x.reshape(v as number[]), (v) => x.permute(v as number[]),
      (v) => x.sum(v as number), (v) => x.slice(v as number, 0, 1), (v) => x.index(v as number), (v) => x.to(v as string),
      (v) => x.clamp(v as number, v as number), (v) => td.cat(v as Tensor[]), (v) => td.stack([x, v as Tensor]), (v) => td.where(v as Tensor, x, x),
      (v) => td.conv2d(x, v as Tensor), (v) => td.interpolate(v as Tensor, { size: [2, 2] }), (v) => td.op(v as string),
      (v) => td.op("aten::add.Tensor", x, v), (v) => td.load(v as string), (v) => td.manualSeed(v as number), (v) => new td.Generator(v as number),
      (v) => td.setNumThreads(v as number), (v) => { x.requiresGrad = v as boolean; }, (v) => { x.grad = v as Tensor; }, (v) => x.backward(v as Tensor),
      (v) => td.deserialize(v as Buffer), (v) => td.serialize(v), (v) => new td.AdamW(v as Tensor[]), (v) => td.mseLoss(x, v as Tensor),
    ];
    let thrown = 0;
    let total = 0;
    for (const call of calls) {
      for (const value of junk) {
        total++;
        try {
          td.tidy(() => {
            call(value);
          });
        } catch (error) {
          thrown++;
          expect(error).toBeInstanceOf(Error);
          expect((error as Error).message.length).toBeGreaterThan(5);
          expect((error as Error).message).not.toMatch(/Exception raised from|frame #0/);
        }
      }
    }
    expect(total).toBeGreaterThan(500);
    expect(thrown).toBeGreaterThan(total * 0.8);
    expect(x.toArray()).toEqual([[1, 1], [1, 1]]);
  });

  // Each of these aborted or crashed the process before (issue: "bad input never crashes the process").
  describe("calls that crashed the process", () => {
    it("Module.attribute / methodSchema without a string name", () => {
      const m = td.load(path.join(fixtures, "modules", "echo.pt"));
      const call = (fn: string, ...args: unknown[]) => () => (m as unknown as Record<string, (...a: unknown[]) => unknown>)[fn](...args);
      expect(call("attribute")).toThrow("Expected attribute name for attribute(name) but received undefined of type undefined");
      expect(call("attribute", 0)).toThrow("Expected attribute name for attribute(name) but received 0 of type number");
      expect(call("methodSchema")).toThrow("Expected method name for methodSchema(method) but received undefined of type undefined");
      expect(call("methodSchema", 123)).toThrow("Expected method name for methodSchema(method) but received 123 of type number");
      // The same calls past the TS layer.
      expect(() => nativeModule.attribute.call(m)).toThrow(new TypeError("Module.attribute: name: expected a string but received undefined"));
      expect(() => nativeModule.attribute.call(m, 0)).toThrow("Module.attribute: name: expected a string but received number 0");
      expect(() => nativeModule.methodSchema.call(m)).toThrow("Module.methodSchema: method name: expected a string but received undefined");
      expect(() => nativeModule.methodSchema.call(m, 123)).toThrow("Module.methodSchema: method name: expected a string but received number 123");
      expect(() => nativeModule.run.call(m, 5, [])).toThrow("Module.run: method name: expected a string but received number 5");
      expect(() => nativeModule.run.call(m, "forward", [], 5)).toThrow("Module.forward: expected keyword arguments as an object but received number 5");
      expect(() => nativeModule.to.call(m, 5, null)).toThrow('Module.to: device: expected a device string such as "cpu" or "cuda:0" but received number 5');
      expect(() => nativeModule.to.call(m, null, 5)).toThrow('Module.to: dtype: expected a dtype name such as "float32" but received number 5');
      expect(() => nativeModule.setAttribute.call(m, "x", td.ones([1]), "weird")).toThrow('Module.setAttribute: expected kind "parameter" or "buffer" but received "weird"');
      expect(() => raw.loadModule(path.join(fixtures, "modules", "echo.pt"), 5)).toThrow('load: device: expected a device string such as "cpu" or "cuda:0" but received number 5');
      expect(m.methodSchema("forward")).toMatch(/^forward\(/);
    });

    it("serialize / save of a cyclic or deeply nested value", () => {
      const o: Record<string, unknown> = {};
      o.o = o;
      expect(() => td.serialize(o)).toThrow(new TypeError("serialize: cyclic value at value.o"));
      const a: unknown[] = [1];
      a.push({ x: [a] });
      expect(() => td.serialize(a)).toThrow("serialize: cyclic value at value[1].x[0]");
      const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "td-bad-")), "cyclic.pt");
      expect(() => td.save(o, file)).toThrow("serialize: cyclic value at value.o");
      expect(fs.existsSync(file)).toBe(false);
      expect(() => td.serialize(nested(100_000))).toThrow(/^serialize: value nested deeper than 1000 levels at value\[0\]/);
      // The native converter guards itself too.
      expect(() => raw.saveValue(o)).toThrow("saveValue: cyclic value at saveValue.o");
      expect(() => raw.saveValue(nested(100_000))).toThrow("saveValue: value nested deeper than 1000 levels");
      // Shared (not cyclic) references and nesting up to the limit still save and load.
      const shared = { n: 1 };
      expect(td.deserialize(td.serialize({ a: shared, b: [shared, shared] }))).toEqual({ a: { n: 1 }, b: [{ n: 1 }, { n: 1 }] });
      expect(td.deserialize(td.serialize(nested(999)))).toEqual(nested(999));
      // A file of lists nested a million deep (pickle: "](" × 10^6, "]", "e" × 10^6): refused, and freed without recursion.
      const depth = 1_000_000;
      const pickle = Buffer.concat([Buffer.from([0x80, 0x02]), Buffer.from("](".repeat(depth) + "]" + "e".repeat(depth) + ".")]);
      const deep = storedZip([["archive/data.pkl", pickle], ["archive/version", Buffer.from("3\n")]]);
      expect(() => td.deserialize(deep)).toThrow("a result nested deeper than 1000 levels cannot be converted to JS");
    });

    it("tensorFromBuffer with arguments of the wrong kind", () => {
      const values = new Float32Array(4);
      expect(() => raw.tensorFromBuffer(values, [4], 5, 6, 7)).toThrow(new TypeError('tensor: source dtype: expected a dtype name such as "float32" but received number 5'));
      expect(() => raw.tensorFromBuffer()).toThrow("tensor: expected a TypedArray of values but received undefined");
      expect(() => raw.tensorFromBuffer(values, [4], "float32", 6, "cpu")).toThrow('tensor: dtype: expected a dtype name such as "float32" but received number 6');
      expect(() => raw.tensorFromBuffer(values, [4], "float32", "float32", 7)).toThrow('tensor: device: expected a device string such as "cpu" or "cuda:0" but received number 7');
      expect(() => raw.tensorFromBuffer(values, [4], "float32", "float99", "cpu")).toThrow('tensor: dtype: unknown dtype "float99"');
      expect(() => raw.tensorFromBuffer(values, [-4], "float32", "float32", "cpu")).toThrow("tensor: expected shape[0] to be a non-negative integer but received number -4");
      expect(() => raw.tensorFromBuffer(values, [2 ** 62, 2 ** 62], "float32", "float32", "cpu")).toThrow("tensor: size [4611686018427387904, 4611686018427387904] has more than 2^40 elements");
      expect(() => raw.tensorFromBuffer(values, [4], "float64", "float32", "cpu")).toThrow("tensor: a TypedArray of 4-byte elements cannot hold float64 values (8 bytes each)");
      expect(() => raw.tensorFromBuffer(values, [4], "float32", "float32", "meta")).toThrow('tensor: device: unsupported device "meta" (expected "cpu", "cuda" or "cuda:<index>")');
      expect(() => raw.tensorFromBuffer(values, [4], "float32", "float32", "cuda:zz")).toThrow("tensor: device: Invalid device string: 'cuda:zz'");
      // A SharedArrayBuffer's values are read; bool bytes other than 0 and 1 read as true.
      expect(td.tensor(new Float32Array(new SharedArrayBuffer(16)).fill(2), [4]).toArray()).toEqual([2, 2, 2, 2]);
      expect(td.tensor(new Uint8Array([0, 1, 2, 255]), [4], { dtype: "bool" }).logicalNot().toArray()).toEqual([true, false, false, false]);
    });

    it("ScalarType, Layout, MemoryFormat and Device values out of range", () => {
      const bytes = td.zeros([4], { dtype: "uint8" });
      expect(() => td.op("aten::view.dtype", bytes, 20)).toThrow(new TypeError('aten::view.dtype: argument \'dtype\': 20 is not a dtype id; give a dtype name such as "float32"'));
      for (const id of [-1, 12, 18, 19, 127]) expect(() => td.op("aten::view.dtype", bytes, id)).toThrow(`${id} is not a dtype id`);
      expect((td.op("aten::view.dtype", bytes, 11) as Tensor).dtype).toBe("bool"); // libtorch's id for bool
      expect((td.op("aten::view.dtype", bytes, "int8") as Tensor).dtype).toBe("int8");
      expect(() => td.op("aten::zeros", [2], { layout: 3 })).toThrow("aten::zeros: argument 'layout': expected a layout: 0 (\"strided\") but received number 3");
      expect(() => td.op("aten::empty.memory_format", [2], { memory_format: 9 })).toThrow("aten::empty.memory_format: argument 'memory_format': expected a memory format: 0 (\"contiguous_format\")");
      expect((td.op("aten::empty.memory_format", [1, 2, 3, 3], { memory_format: "channels_last" }) as Tensor).isContiguous()).toBe(false);
      expect(() => td.ones([2]).to("meta")).toThrow('aten::to.device: argument \'device\': unsupported device "meta" (expected "cpu", "cuda" or "cuda:<index>")');
      expect(() => new td.Generator(1, "xla")).toThrow('Generator: device: unsupported device "xla"');
      expect(() => new td.Generator(Infinity)).toThrow("Generator: expected a non-negative integer seed but received number inf");
    });

    it("ops that crash libtorch on malformed arguments are checked or refused", () => {
      expect(() => td.op("aten::_local_scalar_dense", td.zeros([0]))).toThrow("aten::_local_scalar_dense: a Tensor with 0 elements cannot be converted to a number (shape [0])");
      expect(() => td.op("aten::item", td.zeros([2]))).toThrow("aten::item: a Tensor with 2 elements cannot be converted to a number (shape [2])");
      expect(td.op("aten::item", td.full([1], 3))).toBe(3);
      expect(() => td.op("aten::zeros", [-2, 3])).toThrow("aten::zeros: argument 'size': negative size -2 in [-2, 3]");
      expect(() => td.op("aten::zeros", [2 ** 21, 2 ** 21])).toThrow("aten::zeros: argument 'size': size [2097152, 2097152] has more than 2^40 elements");
      expect(() => td.op("aten::empty.memory_format", [2 ** 62, 2 ** 62])).toThrow("has more than 2^40 elements");
      expect(() => td.op("aten::view", td.zeros([2, 3]), [-2, 3])).toThrow("aten::view: argument 'size': negative size -2 in [-2, 3]");
      expect((td.op("aten::view", td.zeros([2, 3]), [-1]) as Tensor).shape).toEqual([6]);
      expect(() => td.op("aten::reflection_pad2d", td.zeros([1, 1, 4, 4]), [])).toThrow("aten::reflection_pad2d: argument 'padding': expected 4 values but received []");
      expect(() => td.op("aten::max_pool2d", td.zeros([1, 1, 4, 4]), [2, 2, 2])).toThrow("aten::max_pool2d: argument 'kernel_size': expected 2 values but received [2, 2, 2]");
      expect((td.op("aten::max_pool2d", td.zeros([1, 1, 4, 4]), [2]) as Tensor).shape).toEqual([1, 1, 2, 2]);
      expect(() => td.op("aten::max_pool2d", td.zeros([1, 1, 4, 4]), [2, 2], [0, 1])).toThrow("aten::max_pool2d: argument 'stride': expected a positive integer below 2^31 but received 0");
      expect(() => td.op("aten::pixel_shuffle", td.zeros([1, 4, 2, 2]), 2 ** 32)).toThrow("aten::pixel_shuffle: argument 'upscale_factor': expected a positive integer below 2^31 but received 4294967296");
      expect(() => td.op("aten::special_hermite_polynomial_h.n_scalar", td.zeros([2]), 2 ** 32)).toThrow("aten::special_hermite_polynomial_h.n_scalar: argument 'n': polynomial degrees up to 2^20 are supported");
      expect(() => td.op("aten::_fft_r2c", td.zeros([3, 2]), [1, 2 ** 40], 0, false)).toThrow("aten::_fft_r2c: argument 'dim': dimension 1099511627776 is out of range for a tensor of 2 dimensions");
      expect(() => td.op("aten::histogramdd", td.zeros([4, 2]), [])).toThrow("aten::histogramdd: argument 'bins': expected one bin count per coordinate (2) but received []");
      expect(() => td.op("aten::set_.source_Tensor_storage_offset", td.zeros([1]), td.zeros([4]), 2 ** 53, [])).toThrow("aten::set_.source_Tensor_storage_offset: argument 'storage_offset': expected an offset from 0 to 2^40 but received 9007199254740992");
      expect(() => td.op("aten::_transform_bias_rescale_qkv", td.zeros([1, 2, 6]), td.zeros([6]), 0)).toThrow("aten::_transform_bias_rescale_qkv: argument 'num_heads': expected a positive integer below 2^31 but received 0");
      const refused = "refused, it crashes libtorch on malformed arguments instead of raising an error (see docs/unchecked-ops.md)";
      expect(() => td.op("aten::slow_conv3d_forward", td.zeros([1, 0, 2, 2, 2]), td.zeros([1, 0, 1, 1, 1]), [1, 1, 1], null, [1, 1, 1], [0, 0, 0])).toThrow(`aten::slow_conv3d_forward: ${refused}`);
      expect(() => td.op("aten::_stack", [], 0)).toThrow(`aten::_stack: ${refused}`);
      expect(td.opSchema("aten::slow_conv3d_forward")).toMatch(/^aten::slow_conv3d_forward\(/);
      // The public op the refused kernel sits under still runs.
      expect((td.op("aten::conv3d", td.ones([1, 1, 2, 2, 2]), td.ones([1, 1, 1, 1, 1])) as Tensor).shape).toEqual([1, 1, 2, 2, 2]);
    });

    it("the rest of the internal binding checks its arguments", () => {
      expect(() => raw.setNumThreads(1e6)).toThrow("setNumThreads: expected an integer from 1 to 1024 but received number 1e+06");
      expect(() => raw.callOp(1.5, [])).toThrow("callOp: unknown op handle number 1.5");
      expect(() => raw.opSchema("x")).toThrow('opSchema: expected an op handle from resolveOp but received string "x"');
      expect(() => td.ones([2])._data(5 as unknown as td.DType)).toThrow('Tensor.data: expected a dtype name such as "float32" but received number 5');
      // Tensor handles: anything but a live slot's index is an Error, never another tensor's memory.
      const disposed = td.ones([2]);
      disposed.dispose();
      for (const handle of [-1, 2 ** 31, 1.5, NaN]) expect(() => raw.tensorShape(handle)).toThrow("Tensor.shape: the Tensor was already disposed");
      expect(() => raw.tensorData("x")).toThrow('Tensor.data: expected a tensor handle but received string "x"');
      expect(() => disposed.shape).toThrow("Tensor.shape: the Tensor was already disposed");
      expect(() => disposed.add(1)).toThrow(/already disposed/);
      for (const handle of [-1, 2 ** 40, "x", undefined]) expect(raw.releaseTensor(handle)).toBeUndefined();
      expect(raw.binaryOp(0, 2 ** 31, 0)).toBeUndefined();
      const addHandle = raw.resolveOp("aten::add.Tensor");
      const maxHandle = raw.resolveOp("aten::max.dim");
      expect(raw.opReturnsTensor(addHandle)).toBe(true);
      expect(raw.opReturnsTensor(maxHandle)).toBe(false);
      expect(() => raw.callTensorOp(maxHandle, [td.ones([2]), 0])).toThrow("callTensorOp: aten::max.dim does not return exactly one Tensor");
      expect(() => raw.callTensorOp(addHandle, [td.ones([2])], { self: td.ones([2]) })).toThrow("aten::add.Tensor: argument 'self' given both by position and by name");
      expect(() => td.op("aten::add.Tensor", td.ones([2]), { other: td.ones([2]), beta: 2 })).toThrow("aten::add.Tensor: unknown keyword argument 'beta'");
      expect((td.op("aten::add.Tensor", td.ones([2]), { other: td.ones([2]), alpha: 3 }) as Tensor).toArray()).toEqual([4, 4]);
      expect(() => new (td.Tensor as unknown as new (a: unknown, b: unknown) => unknown)(Symbol("x"), 0)).toThrow("Tensor: tensors are created by tensor(), zeros(), randn() and the other factories, not with new");
      const x = td.ones([2]);
      expect(() => {
        x.grad = td.ones([2], { dtype: "int64" });
      }).toThrow("Tensor.grad: expected a gradient of dtype float32 but received int64");
      // A ZeroTensor has no memory behind it: reading it gives zeros.
      expect((td.op("aten::_efficientzerotensor", [2]) as Tensor).toArray()).toEqual([0, 0]);
      // A nested tensor's ragged sizes: an Error from the accessor, not std::terminate.
      const ragged = td.op("aten::_nested_tensor_from_tensor_list", [td.ones([2, 3]), td.ones([3, 3])]) as Tensor;
      expect(() => ragged.shape).toThrow(/^Tensor\.shape: /);
      expect(() => ragged.add(td.ones([5]))).toThrow("(self: nested float32 cpu, other: [5] float32 cpu)");
    });

    it("attention with a scale that is not a positive finite number", () => {
      const q = td.ones([1, 1, 2, 4]);
      for (const scale of [NaN, Infinity, 0, -1]) {
        expect(() => td.attention(q, q, q, { scale })).toThrow(`Expected positive finite number for attention options.scale but received ${scale} of type number`);
      }
      expect(() => td.attention(q, q, q, { scale: "2" as unknown as number })).toThrow('Expected positive finite number for attention options.scale but received "2" of type string');
      expect(td.attention(q, q, q, { scale: 0.5 }).shape).toEqual([1, 1, 2, 4]);
    });

    it("readImage with channels other than 1 or 3", async () => {
      const png = await td.encodePng(td.rand([3, 4, 4], { generator: new td.Generator(0) }));
      await expect(td.readImage(png, { channels: 2 as 3 })).rejects.toThrow("Expected 1 or 3 for readImage options.channels but received 2 of type number");
      await expect(td.readImage(png, { channels: 4 as 3 })).rejects.toThrow("Expected 1 or 3 for readImage options.channels but received 4 of type number");
      expect((await td.readImage(png, { channels: 1 })).shape).toEqual([1, 1, 4, 4]);
    });
  });
});
