/**
 * Scheduler API: config resolution and validation (exact messages), schedulerFromConfig,
 * multistep state, clones, noise draws, tensor lifetimes, and the pure schedule functions.
 */
import { describe, expect, it } from "vitest";
import { Generator, randn, tensor, tidy, type Tensor } from "../lib/tensor";
import { memory } from "../lib/runtime";
import {
  SCHEDULERS,
  schedulerFromConfig,
  DDIMScheduler,
  DDIMInverseScheduler,
  DDPMScheduler,
  DPMSolverMultistepScheduler,
  EulerDiscreteScheduler,
  FlowMatchEulerDiscreteScheduler,
  UniPCMultistepScheduler,
  HeunDiscreteScheduler,
  betaPpf,
  betaCdf,
  karrasSigmas,
  shiftedCosineLogSnr,
  singlestepOrders,
  torchLinspace32,
  numpyArange,
  ddimTimesteps,
  dpmTimesteps,
  calculateShift,
  lmsCoefficient,
  type Scheduler,
} from "../lib/schedulers";
import { fma32, roundHalfEven } from "../lib/schedulers/f32";

const live = () => memory().numTensors;

describe("config resolution", () => {
  it("fills diffusers' __init__ defaults and freezes the snake_case config", () => {
    const s = new DDIMScheduler({ beta_schedule: "scaled_linear", unknown_key: 3, _diffusers_version: "0.40.0" });
    expect(s.config).toMatchObject({ _class_name: "DDIMScheduler", num_train_timesteps: 1000, beta_start: 0.0001, beta_schedule: "scaled_linear", clip_sample: true, set_alpha_to_one: true, timestep_spacing: "leading" });
    expect("unknown_key" in s.config).toBe(false);
    expect(Object.isFrozen(s.config)).toBe(true);
    expect("resolution" in s.config).toBe(false); // shifted-cosine keys only with that schedule
    expect(new DDIMScheduler({ beta_schedule: "shifted_cosine" }).config).toMatchObject({ resolution: 64, base_resolution: 64, base_resolution_high: null, logsnr_min: -15, logsnr_max: 15 });
  });

  it("applies diffusers' remapped values", () => {
    const s = new DPMSolverMultistepScheduler({ algorithm_type: "deis", solver_type: "bh2", lambda_min_clipped: "-Infinity" });
    expect(s.config.algorithm_type).toBe("dpmsolver++");
    expect(s.config.solver_type).toBe("midpoint");
    expect(s.config.lambda_min_clipped).toBe(-Infinity);
    expect(new UniPCMultistepScheduler({ solver_type: "midpoint" }).config.solver_type).toBe("bh2");
  });

  it("rejects bad values with one error naming the class and key", () => {
    expect(() => new DDIMScheduler({ beta_schedule: "cosine" })).toThrow(
      new Error('DDIMScheduler: config.beta_schedule must be one of linear, scaled_linear, squaredcos_cap_v2, sigmoid but received "cosine"'),
    );
    expect(() => new DDPMScheduler({ num_train_timesteps: -1 })).toThrow(new Error("DDPMScheduler: config.num_train_timesteps must be an integer >= 1 but received -1"));
    expect(() => new DDPMScheduler({ beta_start: "0.1" })).toThrow(new Error('DDPMScheduler: config.beta_start must be a number >= 0 but received "0.1"'));
    expect(() => new DDPMScheduler({ clip_sample: 1 })).toThrow(new Error("DDPMScheduler: config.clip_sample must be a boolean but received 1"));
    expect(() => new DDPMScheduler({ prediction_type: "flow" })).toThrow(
      new Error('DDPMScheduler: config.prediction_type must be one of epsilon, sample, v_prediction but received "flow"'),
    );
    expect(() => new DDIMScheduler({ timestep_spacing: null })).toThrow(new Error("DDIMScheduler: config.timestep_spacing must be one of leading, trailing, linspace but received null"));
    expect(() => new DDPMScheduler({ trained_betas: [0.1, "x"] })).toThrow(
      new Error('DDPMScheduler: config.trained_betas must be a non-empty array of finite numbers or null but received [0.1,"x"]'),
    );
    expect(() => new DDPMScheduler({ trained_betas: [0.1, 0.2] })).toThrow(
      new Error('DDPMScheduler: config.trained_betas must be an array of num_train_timesteps (1000) numbers but received "2 numbers"'),
    );
    expect(() => new EulerDiscreteScheduler({ use_karras_sigmas: true, use_beta_sigmas: true })).toThrow(
      new Error("EulerDiscreteScheduler: only one of config.use_karras_sigmas, config.use_exponential_sigmas, config.use_beta_sigmas can be true but received use_karras_sigmas=true, use_beta_sigmas=true"),
    );
    expect(() => new DPMSolverMultistepScheduler({ algorithm_type: "dpmsolver" })).toThrow(
      new Error('DPMSolverMultistepScheduler: config.final_sigmas_type must be "sigma_min" for algorithm_type dpmsolver but received "zero"'),
    );
    expect(() => new DPMSolverMultistepScheduler({ algorithm_type: "unipc" })).toThrow(
      new Error('DPMSolverMultistepScheduler: config.algorithm_type must be one of dpmsolver, dpmsolver++, sde-dpmsolver, sde-dpmsolver++ but received "unipc"'),
    );
    expect(() => new DPMSolverMultistepScheduler({ solver_order: 4 })).toThrow(new Error("DPMSolverMultistepScheduler: config.solver_order must be an integer in [1, 3] but received 4"));
    expect(() => new DDIMScheduler("x" as never)).toThrow(new Error('DDIMScheduler: config must be an object but received "x"'));
    expect(() => new FlowMatchEulerDiscreteScheduler({ shift: 0 })).toThrow(new Error("FlowMatchEulerDiscreteScheduler: config.shift must be a number > 0 but received 0"));
  });

  it("schedulerFromConfig picks the class from _class_name", () => {
    for (const name of Object.keys(SCHEDULERS)) {
      const s = schedulerFromConfig({ _class_name: name });
      expect(s.constructor.name).toBe(name);
      expect(s.config._class_name).toBe(name);
    }
    expect(() => schedulerFromConfig({ _class_name: "FooScheduler" })).toThrow(/^schedulerFromConfig: config._class_name must be one of DDPMScheduler, .* but received "FooScheduler"$/);
  });
});

describe("setTimesteps and step arguments", () => {
  it("validates numInferenceSteps and timesteps", () => {
    const s = new DDIMScheduler();
    expect(() => s.setTimesteps(0)).toThrow(new Error("DDIMScheduler: setTimesteps: numInferenceSteps must be an integer >= 1 but received 0"));
    expect(() => s.setTimesteps(2000)).toThrow(new Error("DDIMScheduler: setTimesteps: numInferenceSteps must be <= num_train_timesteps (1000) but received 2000"));
    expect(() => new DDIMScheduler().step(tensor([1]), 10, tensor([1]))).toThrow(new Error("DDIMScheduler: call setTimesteps(numInferenceSteps) before step()"));
    const e = new EulerDiscreteScheduler();
    e.setTimesteps(10);
    expect(() => tidy(() => e.step(tensor([1]), 123.5, tensor([1])))).toThrow(new Error("EulerDiscreteScheduler: timestep must be one of scheduler.timesteps but received 123.5"));
    const f = new FlowMatchEulerDiscreteScheduler({ use_dynamic_shifting: true });
    expect(() => f.setTimesteps(10)).toThrow("needs opts.mu");
  });

  it("noise given verbatim equals drawing from the same generator", () => {
    const s1 = new DDPMScheduler();
    const s2 = new DDPMScheduler();
    s1.setTimesteps(10);
    s2.setTimesteps(10);
    tidy(() => {
      const x = randn([1, 4, 8, 8], { generator: new Generator(1) });
      const eps = randn([1, 4, 8, 8], { generator: new Generator(2) });
      const a = s1.step(eps, 900, x, { generator: new Generator(3) }).prevSample.toFloat32Array();
      const noise = randn([1, 4, 8, 8], { generator: new Generator(3) });
      const b = s2.step(eps, 900, x, { noise }).prevSample.toFloat32Array();
      expect(Array.from(a)).toEqual(Array.from(b));
      expect(() => s2.step(eps, 800, x, { noise: randn([2]) })).toThrow("DDPMScheduler: step: noise must be a tensor of shape [1,4,8,8] but received");
    });
  });

  it("setTimesteps resets multistep history", () => {
    const run = (s: DPMSolverMultistepScheduler) =>
      tidy(() => {
        let x = randn([1, 2, 4, 4], { generator: new Generator(0) });
        for (const t of s.timesteps) x = s.step(x.mul(0.1), t, x).prevSample;
        return Array.from(x.toFloat32Array());
      });
    const s = new DPMSolverMultistepScheduler({ solver_order: 3 });
    s.setTimesteps(6);
    const first = run(s);
    s.setTimesteps(6);
    expect(run(s)).toEqual(first);
    s.dispose();
  });
});

describe("clone", () => {
  // every class with its defaults, plus the multistep and stateful variants people use
  const CONFIGS: Record<string, unknown>[] = [
    ...Object.keys(SCHEDULERS).map((name) => ({ _class_name: name })),
    { _class_name: "DPMSolverMultistepScheduler", algorithm_type: "sde-dpmsolver++", solver_order: 3 },
    { _class_name: "DPMSolverSinglestepScheduler", solver_order: 3 },
    { _class_name: "UniPCMultistepScheduler", solver_order: 3, solver_type: "bh1" },
    { _class_name: "DEISMultistepScheduler", solver_order: 3 },
    { _class_name: "EulerDiscreteScheduler", rescale_betas_zero_snr: true, timestep_spacing: "trailing" },
    { _class_name: "PNDMScheduler", skip_prk_steps: true },
  ];
  const SHAPE = [1, 2, 4, 4];

  /** A sampling run advanced one step at a time; step k's noise is the same in every run. */
  class Run {
    k = 0;
    x: Tensor;
    constructor(readonly s: Scheduler) {
      s.setTimesteps(6);
      this.x = randn(SHAPE, { generator: new Generator(1) }).mul(s.initNoiseSigma);
    }
    step(): void {
      const t = this.s.timesteps[this.k];
      const next = tidy(() => {
        const noise = randn(SHAPE, { generator: new Generator(100 + this.k) });
        const inp = this.s.scaleModelInput(this.x, t);
        return this.s.step(inp.mul(0.2).add(inp.mul(3).sin().mul(0.1)), t, this.x, { noise }).prevSample;
      });
      this.x.dispose();
      this.x = next;
      this.k++;
    }
    finish(): number[] {
      while (this.k < this.s.timesteps.length) this.step();
      const out = Array.from(this.x.toFloat32Array());
      this.x.dispose();
      this.s.dispose();
      return out;
    }
  }

  it("is a fresh scheduler of the same class and config, with no timesteps set", () => {
    for (const cfg of CONFIGS) {
      const label = JSON.stringify(cfg);
      const run = new Run(schedulerFromConfig(cfg));
      run.step();
      run.step();
      const c = run.s.clone();
      const fresh = schedulerFromConfig(cfg);
      expect(c, label).not.toBe(run.s);
      expect(c.constructor, label).toBe(run.s.constructor);
      expect(c.config, label).toEqual(run.s.config);
      expect(c.numInferenceSteps, label).toBeNull();
      expect(c.stepIndex, label).toBeNull();
      expect(c.timesteps, label).toEqual(fresh.timesteps);
      expect(c.sigmas, label).toEqual(fresh.sigmas);
      expect(run.s.numInferenceSteps, label).toBe(6); // the original keeps its schedule
      run.finish();
    }
  });

  it("a clone's trajectory equals the original's, stepped side by side", () => {
    for (const cfg of CONFIGS) {
      const label = JSON.stringify(cfg);
      const solo = new Run(schedulerFromConfig(cfg)).finish();
      const original = schedulerFromConfig(cfg);
      const a = new Run(original);
      const b = new Run(original.clone());
      while (a.k < original.timesteps.length) {
        a.step();
        b.step();
      }
      expect(a.finish(), label).toEqual(solo);
      expect(b.finish(), label).toEqual(solo);
    }
  });

  it("cloning and stepping the clone mid-run leaves the original's state and history alone", () => {
    for (const cfg of CONFIGS) {
      const label = JSON.stringify(cfg);
      const solo = new Run(schedulerFromConfig(cfg)).finish();
      const a = new Run(schedulerFromConfig(cfg));
      for (let k = 0; k < 3; k++) a.step(); // mid-way: history / a Heun or KDPM2 pair half done
      expect(new Run(a.s.clone()).finish(), label).toEqual(solo);
      expect(a.finish(), label).toEqual(solo);
    }
  });
});

describe("tensor lifetimes", () => {
  it("a sampling loop leaks no tensors, for every scheduler", () => {
    for (const name of Object.keys(SCHEDULERS)) {
      const base = live();
      const s = schedulerFromConfig({ _class_name: name, ...(name === "DPMSolverMultistepScheduler" ? { algorithm_type: "sde-dpmsolver++", solver_order: 3 } : {}) });
      s.setTimesteps(6);
      let x = randn([1, 2, 4, 4], { generator: new Generator(0) });
      const g = new Generator(1);
      for (const t of s.timesteps) {
        const next = tidy(() => {
          const inp = s.scaleModelInput(x, t);
          const out = s.step(inp.mul(0.2).add(0.01), t, x, { generator: g, eta: name === "DDIMScheduler" ? 1 : undefined });
          out.predOriginalSample?.dispose();
          return out.prevSample;
        });
        x.dispose();
        x = next;
      }
      const noisy = s.addNoise(x, x, s.timesteps[1]);
      noisy.dispose();
      x.dispose();
      s.dispose();
      expect(live(), name).toBe(base);
    }
  });

  it("multistep history survives an enclosing tidy", () => {
    const s = new UniPCMultistepScheduler({ solver_order: 3 });
    s.setTimesteps(5);
    let x = randn([1, 2, 4, 4], { generator: new Generator(0) });
    for (const t of s.timesteps) {
      const next = tidy(() => s.step(x.mul(0.1), t, x).prevSample);
      x.dispose();
      x = next;
    }
    expect(Number.isFinite(x.toFloat32Array()[0])).toBe(true);
    x.dispose();
    s.dispose();
  });

  it("returns new tensors, never the caller's", () => {
    const s = new HeunDiscreteScheduler();
    s.setTimesteps(4);
    tidy(() => {
      const x = randn([1, 2, 2, 2]);
      expect(s.scaleModelInput(x, s.timesteps[0])).not.toBe(x);
      const out = s.step(x, s.timesteps[0], x);
      expect(out.prevSample).not.toBe(x);
      expect(out.predOriginalSample).not.toBe(x);
    });
    s.dispose();
  });
});

describe("schedule math", () => {
  it("reproduces numpy/torch rounding", () => {
    expect([0.5, 1.5, 2.5, -0.5, -2.5].map(roundHalfEven)).toEqual([0, 2, 2, -0, -2]);
    expect(fma32(Math.fround(0.1), 3, Math.fround(0.2))).toBe(Math.fround(Math.fround(0.1) * 3 + Math.fround(0.2)));
    expect(torchLinspace32(0, 1, 5)).toEqual([0, 0.25, 0.5, 0.75, 1]);
    expect(numpyArange(1000, 0, -1000 / 3).length).toBe(3);
    expect(ddimTimesteps("leading", 1000, 10, 1)).toEqual([901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    expect(ddimTimesteps("trailing", 1000, 3, 0)).toEqual([999, 666, 332]);
    expect(ddimTimesteps("linspace", 1000, 5, 0)).toEqual([999, 749, 500, 250, 0]);
    expect(dpmTimesteps("linspace", 1000, 20, 0).slice(0, 3)).toEqual([999, 949, 899]);
  });

  it("beta distribution quantiles and Karras sigmas", () => {
    expect(betaCdf(0.5, 0.6, 0.6)).toBeCloseTo(0.5, 14);
    for (const p of [0.01, 0.3, 0.77]) expect(betaCdf(betaPpf(p, 0.6, 0.6), 0.6, 0.6)).toBeCloseTo(p, 13);
    expect(betaPpf(0.5, 2, 5)).toBeCloseTo(0.26444998329566, 12); // scipy.stats.beta.ppf(0.5, 2, 5)
    const k = karrasSigmas(0.1, 10, 5);
    expect(k[0]).toBeCloseTo(10, 12);
    expect(k[4]).toBeCloseTo(0.1, 12);
  });

  it("shifted cosine logSNR follows the paper's formulas", () => {
    const o = { resolution: 512, baseResolution: 64, baseResolutionHigh: null, logsnrMin: -15, logsnrMax: 15 };
    const plain = { ...o, resolution: 64 };
    expect(shiftedCosineLogSnr(0.5, o) - shiftedCosineLogSnr(0.5, plain)).toBeCloseTo(2 * Math.log(64 / 512), 12);
    expect(shiftedCosineLogSnr(0, plain)).toBeCloseTo(15, 10);
    expect(shiftedCosineLogSnr(1, plain)).toBeCloseTo(-15, 10);
    const interp = { resolution: 512, baseResolution: 32, baseResolutionHigh: 512, logsnrMin: -15, logsnrMax: 15 };
    expect(shiftedCosineLogSnr(1, interp)).toBeCloseTo(-15 + 2 * Math.log(32 / 512), 10); // t = 1: the low-res shift
    expect(shiftedCosineLogSnr(0, interp)).toBeCloseTo(15, 10); // t = 0: the high-res shift (none here)
    const s = new DDIMScheduler({ beta_schedule: "shifted_cosine", resolution: 256 });
    const l = shiftedCosineLogSnr(500 / 1000, { ...o, resolution: 256 });
    expect(s.alphasCumprod[499]).toBe(Math.fround(1 / (1 + Math.exp(-l))));
  });

  it("misc helpers", () => {
    expect(singlestepOrders(9, 3, true, true)).toEqual([1, 2, 3, 1, 2, 3, 1, 2, 1]);
    expect(calculateShift(4096, { base_image_seq_len: 256, max_image_seq_len: 4096, base_shift: 0.5, max_shift: 1.15 })).toBeCloseTo(1.15, 12);
    expect(lmsCoefficient([2, 1, 0.5], 1, 1, 0)).toBeCloseTo(-0.5, 14);
  });

  it("DDIMInverseScheduler.solveStep is the x_t that DDIMScheduler.step takes back to the sample, for every prediction type", () => {
    for (const prediction_type of ["epsilon", "v_prediction", "sample"]) {
      for (const [timestep_spacing, steps_offset, set_alpha_to_one] of [["leading", 1, false], ["trailing", 0, true]] as const) {
        const config = { beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, prediction_type, timestep_spacing, steps_offset, set_alpha_to_one, clip_sample: false };
        const forward = new DDIMScheduler(config);
        const inverse = new DDIMInverseScheduler(config);
        forward.setTimesteps(7);
        inverse.setTimesteps(7);
        expect(inverse.timesteps).toEqual([...forward.timesteps].reverse());
        const g = new Generator(3);
        let apart = 0;
        for (const t of inverse.timesteps) {
          const [previous, output] = [randn([2, 3, 4], { generator: g }), randn([2, 3, 4], { generator: g })];
          const solved = inverse.solveStep(output, t, previous);
          const back = forward.step(output, t, solved).prevSample;
          const error = tidy(() => back.sub(previous).abs().max().item());
          expect(error, `${prediction_type} ${timestep_spacing} t=${t}`).toBeLessThan(2e-5);
          // With ε or x₀ frozen the plain inverse step is already the exact inverse; a frozen v is converted at x_{t−Δ}'s level instead.
          const plain = inverse.step(output, t, previous).prevSample;
          apart = Math.max(apart, tidy(() => plain.sub(solved).abs().max().item()));
          for (const x of [previous, output, solved, back, plain]) x.dispose();
        }
        if (prediction_type === "v_prediction") expect(apart).toBeGreaterThan(1e-2);
        else expect(apart).toBeLessThan(2e-5);
      }
    }
  });
});
