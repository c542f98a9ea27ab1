/**
 * The Fréchet distance between Gaussian fits of two feature sets (Heusel et al., "GANs Trained
 * by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", 2017, the FID):
 *
 *   FD = |μ1 − μ2|² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½)
 *
 * in float64. Tr((Σ1 Σ2)^½) is computed without a general matrix square root: Σ1 Σ2 is
 * similar to the symmetric PSD M = Σ1^½ Σ2 Σ1^½, so it equals Σ √λ(M), and both Σ1^½ and
 * λ(M) come from symmetric eigendecompositions (aten::linalg_eigh / linalg_eigvalsh).
 */
import * as td from "../../lib";

/** A Gaussian fit of a feature set. */
export interface GaussianFit {
  /** (D,) float64. */
  mean: td.Tensor;
  /** (D, D) float64, unbiased (divides by N − 1, like np.cov). */
  cov: td.Tensor;
}

/**
 * The mean and covariance of (N, D) features.
 * @example const fit = gaussianFit(features); // ... fit.mean.dispose(); fit.cov.dispose();
 */
export function gaussianFit(features: td.Tensor): GaussianFit {
  if (features.ndim !== 2 || features.shape[0] < 2) throw new Error(`gaussianFit: expected (N ≥ 2, D) features but received shape [${features.shape.join(", ")}]`);
  return td.tidy(() => {
    const x = features.double(); // (N, D)
    const mean = x.mean(0); // (D,)
    const centered = x.sub(mean); // (N, D)
    const cov = centered.transpose(0, 1).matmul(centered).div(x.shape[0] - 1); // (D, D)
    return { mean, cov };
  });
}

/** The symmetric square root of a symmetric PSD matrix (negative eigenvalues from rounding clamp to 0). */
function sqrtPsd(matrix: td.Tensor): td.Tensor {
  return td.tidy(() => {
    const [values, vectors] = td.op("aten::linalg_eigh", matrix, "L") as [td.Tensor, td.Tensor]; // (D,), (D, D)
    return vectors.mul(values.clamp(0).sqrt()).matmul(vectors.transpose(0, 1)); // V diag(√λ) Vᵀ
  });
}

/**
 * The Fréchet distance between two Gaussian fits.
 * @example const fd = frechetDistance(gaussianFit(real), gaussianFit(fake));
 */
export function frechetDistance(a: GaussianFit, b: GaussianFit): number {
  return td.tidy(() => {
    // 1. squared distance of the means
    const meanTerm = a.mean.sub(b.mean).square().sum().item();
    // 2. Tr((Σ1 Σ2)^½) = Σ √λ(M), M = Σ1^½ Σ2 Σ1^½ (symmetrized against rounding)
    const root = sqrtPsd(a.cov); // (D, D)
    const m = root.matmul(b.cov).matmul(root); // (D, D)
    const symmetric = m.add(m.transpose(0, 1)).mul(0.5);
    const eigenvalues = td.op("aten::linalg_eigvalsh", symmetric, "L") as td.Tensor; // (D,)
    const traceSqrt = eigenvalues.clamp(0).sqrt().sum().item();
    // 3. FD
    const trace = (t: td.Tensor) => (td.op("aten::trace", t) as td.Tensor).item();
    return meanTerm + trace(a.cov) + trace(b.cov) - 2 * traceSqrt;
  });
}

/**
 * The Fréchet distance between two (N, D) feature sets.
 * @example frechetDistanceOf(realFeatures, generatedFeatures)
 */
export function frechetDistanceOf(a: td.Tensor, b: td.Tensor): number {
  return td.tidy(() => frechetDistance(gaussianFit(a), gaussianFit(b)));
}
