/**
 * The DPM-Solver update formulas, shared by the multistep and the singlestep sampler: Lu et al.
 * (2022), "DPM-Solver", https://arxiv.org/abs/2206.00927 (noise prediction, `dpmsolver`, and its
 * SDE variant `sde-dpmsolver`), and "DPM-Solver++", https://arxiv.org/abs/2211.01095 (data
 * prediction, `dpmsolver++`, and DPM-Solver++ SDE `sde-dpmsolver++`), as diffusers computes
 * them: every scalar there is a float32 0-d tensor, so every coefficient is rounded to float32.
 *
 * Both samplers step from a point s to t with the exponential integrator and a Taylor
 * expansion of the converted model output in λ = log α - log σ: D0 is the model output at s,
 * D1 (and D2) its scaled first (and second) differences. They differ only in where the other
 * points come from: the multistep sampler takes them from its history (points before s), the
 * singlestep one from the intermediate points of a block (points between s and t). The
 * samplers keep the history and pick the order; `dpmSolverStep` builds D0, D1, D2 for either
 * layout and `dpmSolverUpdate` / `dpmSolverThirdOrderUpdate` turn them into x_t.
 */
import { Tensor } from "../tensor";
import { add32, div32, exp32, f32, mul32, pow32, sqrt32, sub32 } from "./f32";
import { Lambdas, em1 } from "./solver_base";

/** The config keys the updates read. */
export interface DPMSolverUpdateConfig {
  algorithm_type: string;
  solver_type: string;
}

/**
 * The first- and second-order DPM-Solver update from `s` to `t`: DPM-Solver-1 (≡ DDIM, eq. 5
 * of DPM-Solver++ / eq. 3.7 of DPM-Solver) when `D1` is null, else DPM-Solver-2 with the
 * difference term in midpoint or Heun form (`solver_type`). `noise` is the SDE variants' draw.
 *
 * @example
 * // DPM-Solver-1 from sigma index i to i + 1 with the newest converted model output m0
 * const prev = dpmSolverUpdate(scheduler.config, x, lambdasAt(i), lambdasAt(i + 1), m0, null, null);
 */
export function dpmSolverUpdate(
  c: DPMSolverUpdateConfig,
  x: Tensor,
  s: Lambdas,
  t: Lambdas,
  D0: Tensor,
  D1: Tensor | null,
  noise: Tensor | null,
): Tensor {
  const h = sub32(t.lambdaT, s.lambdaT);
  const heun = c.solver_type === "heun";
  if (c.algorithm_type === "dpmsolver++") {
    const b = mul32(t.alphaT, em1(-h));
    const base = x.mul(div32(t.sigmaT, s.sigmaT)).sub(D0.mul(b));
    if (!D1) return base;
    return heun ? base.add(D1.mul(mul32(t.alphaT, add32(div32(em1(-h), h), 1)))) : base.sub(D1.mul(mul32(0.5, b)));
  }
  if (c.algorithm_type === "dpmsolver") {
    const b = mul32(t.sigmaT, em1(h));
    const base = x.mul(div32(t.alphaT, s.alphaT)).sub(D0.mul(b));
    if (!D1) return base;
    return heun ? base.sub(D1.mul(mul32(t.sigmaT, sub32(div32(em1(h), h), 1)))) : base.sub(D1.mul(mul32(0.5, b)));
  }
  if (c.algorithm_type === "sde-dpmsolver++") {
    const e2 = exp32(mul32(-2, h));
    const b = mul32(t.alphaT, f32(1 - e2));
    let out = x.mul(mul32(div32(t.sigmaT, s.sigmaT), exp32(-h))).add(D0.mul(b));
    if (D1) out = out.add(heun ? D1.mul(mul32(t.alphaT, add32(div32(f32(1 - e2), mul32(-2, h)), 1))) : D1.mul(mul32(0.5, b)));
    return out.add(noise!.mul(mul32(t.sigmaT, sqrt32(f32(1 - e2)))));
  }
  // sde-dpmsolver
  const b = mul32(t.sigmaT, em1(h));
  let out = x.mul(div32(t.alphaT, s.alphaT)).sub(D0.mul(mul32(2, b)));
  if (D1) out = out.sub(heun ? D1.mul(mul32(2, mul32(t.sigmaT, sub32(div32(em1(h), h), 1)))) : D1.mul(b));
  return out.add(noise!.mul(mul32(t.sigmaT, sqrt32(em1(mul32(2, h))))));
}

/**
 * The third-order DPM-Solver update from `s` to `t` (DPM-Solver-3, Algorithm 2 of DPM-Solver;
 * the multistep 3M of DPM-Solver++, App. B): x_t from D0, D1 and D2 with the φ-function
 * coefficients of each algorithm. `D2` null is the singlestep midpoint form, which keeps
 * only the first-difference term (diffusers passes it D1_1 as `D1`). diffusers has no
 * third-order `sde-dpmsolver` update; callers reject it with their own message first.
 *
 * @example
 * const prev = dpmSolverThirdOrderUpdate(config, x, s0, t, m0, D1, D2, null); // see dpmSolverStep for D1, D2
 */
export function dpmSolverThirdOrderUpdate(
  c: DPMSolverUpdateConfig,
  x: Tensor,
  s: Lambdas,
  t: Lambdas,
  D0: Tensor,
  D1: Tensor,
  D2: Tensor | null,
  noise: Tensor | null,
): Tensor {
  const h = sub32(t.lambdaT, s.lambdaT);
  if (c.algorithm_type === "dpmsolver++") {
    const e = em1(-h);
    const out = x.mul(div32(t.sigmaT, s.sigmaT)).sub(D0.mul(mul32(t.alphaT, e))).add(D1.mul(mul32(t.alphaT, add32(div32(e, h), 1))));
    return D2 ? out.sub(D2.mul(mul32(t.alphaT, sub32(div32(add32(e, h), pow32(h, 2)), 0.5)))) : out;
  }
  if (c.algorithm_type === "dpmsolver") {
    const e = em1(h);
    const out = x.mul(div32(t.alphaT, s.alphaT)).sub(D0.mul(mul32(t.sigmaT, e))).sub(D1.mul(mul32(t.sigmaT, sub32(div32(e, h), 1))));
    return D2 ? out.sub(D2.mul(mul32(t.sigmaT, sub32(div32(sub32(e, h), pow32(h, 2)), 0.5)))) : out;
  }
  if (c.algorithm_type === "sde-dpmsolver++") {
    // e = 1 - e^{-2h}. diffusers writes the D2 coefficient as (e - 2h)/(2h)² - ½ (multistep) and
    // as (e + (-2h))/(-2h)² - ½ (singlestep): both round to the same float32, so one form serves
    const e = f32(1 - exp32(mul32(-2, h)));
    let out = x.mul(mul32(div32(t.sigmaT, s.sigmaT), exp32(-h))).add(D0.mul(mul32(t.alphaT, e)))
      .add(D1.mul(mul32(t.alphaT, add32(div32(e, mul32(-2, h)), 1))));
    if (D2) out = out.add(D2.mul(mul32(t.alphaT, sub32(div32(sub32(e, mul32(2, h)), pow32(mul32(2, h), 2)), 0.5))));
    return out.add(noise!.mul(mul32(t.sigmaT, sqrt32(e))));
  }
  throw new Error(`dpmSolverThirdOrderUpdate: no third-order update for algorithm_type ${c.algorithm_type} (as in diffusers)`);
}

/**
 * One DPM-Solver step of order `s.length` (1–3) to `t`, from the points `s` = [s0, s1, s2]
 * (newest first) and the converted model outputs `m` = [m0, m1, m2] there. The multistep
 * sampler (`form: "multistep"`, DPM-Solver++(2M)/(3M), App. B of DPM-Solver++) starts at the
 * newest point s0 and takes the differences over earlier steps; the singlestep sampler
 * (DPM-Solver-2/3, Algorithms 1–2 of DPM-Solver) starts at the block's first point, the
 * oldest, and takes them over the block's intermediate points.
 *
 * @example
 * // DPM-Solver++(2M) step from sigma index i to i + 1
 * const prev = dpmSolverStep(config, x, lambdasAt(i + 1), [lambdasAt(i), lambdasAt(i - 1)], [m0, m1], "multistep", null);
 */
export function dpmSolverStep(
  c: DPMSolverUpdateConfig,
  x: Tensor,
  t: Lambdas,
  s: Lambdas[],
  m: Tensor[],
  form: "multistep" | "singlestep",
  noise: Tensor | null,
): Tensor {
  // 1. first order: DPM-Solver-1 (≡ DDIM)
  if (s.length === 1) return dpmSolverUpdate(c, x, s[0], t, m[0], null, noise);
  // 2. second order from `start`: r₀ = (λ_s0 - λ_s1)/(λ_t - λ_start), D1 = (m0 - m1)/r₀
  if (s.length === 2) {
    const start = form === "multistep" ? 0 : 1;
    const r0 = div32(sub32(s[0].lambdaT, s[1].lambdaT), sub32(t.lambdaT, s[start].lambdaT));
    return dpmSolverUpdate(c, x, s[start], t, m[start], m[0].sub(m[1]).mul(div32(1, r0)), noise);
  }
  const [s0, s1, s2] = s;
  const [m0, m1, m2] = m;
  // 3. third order, multistep: backward differences from s0 over s1 and s2
  if (form === "multistep") {
    const h = sub32(t.lambdaT, s0.lambdaT);
    const r0 = div32(sub32(s0.lambdaT, s1.lambdaT), h);
    const r1 = div32(sub32(s1.lambdaT, s2.lambdaT), h);
    const D1_0 = m0.sub(m1).mul(div32(1, r0));
    const D1_1 = m1.sub(m2).mul(div32(1, r1));
    const diff = D1_0.sub(D1_1);
    const D1 = D1_0.add(diff.mul(div32(r0, add32(r0, r1))));
    const D2 = diff.mul(div32(1, add32(r0, r1)));
    return dpmSolverThirdOrderUpdate(c, x, s0, t, m0, D1, D2, noise);
  }
  // 4. third order, singlestep: forward differences from the block start s2 over s1 and s0;
  //    the midpoint form keeps only D1_1
  const h = sub32(t.lambdaT, s2.lambdaT);
  const r0 = div32(sub32(s0.lambdaT, s2.lambdaT), h);
  const r1 = div32(sub32(s1.lambdaT, s2.lambdaT), h);
  const D1_0 = m1.sub(m2).mul(div32(1, r1));
  const D1_1 = m0.sub(m2).mul(div32(1, r0));
  if (c.solver_type !== "heun") return dpmSolverThirdOrderUpdate(c, x, s2, t, m2, D1_1, null, noise);
  const D1 = D1_0.mul(r0).sub(D1_1.mul(r1)).div(sub32(r0, r1));
  const D2 = D1_1.sub(D1_0).mul(2).div(sub32(r0, r1));
  return dpmSolverThirdOrderUpdate(c, x, s2, t, m2, D1, D2, noise);
}
