/**
 * A line chart as a PNG (an SVG rendered by sharp): enough for a benchmark's trade-off plot.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";

export interface Series {
  name: string;
  points: { x: number; y: number; label?: string }[];
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Nice tick values covering [lo, hi]. */
function ticks(lo: number, hi: number, count = 5): number[] {
  const step = 10 ** Math.floor(Math.log10((hi - lo) / count || 1));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= count) ?? 10 * step;
  const out: number[] = [];
  for (let v = Math.ceil(lo / nice) * nice; v <= hi + 1e-9; v += nice) out.push(Number(v.toPrecision(6)));
  return out;
}

/** Writes `series` as a line chart with markers (and point labels) to a PNG file. */
export async function writeLineChart(file: string, series: Series[], o: { title: string; xLabel: string; yLabel: string; width?: number; height?: number }): Promise<void> {
  const width = o.width ?? 720;
  const height = o.height ?? 480;
  const margin = { left: 70, right: 150, top: 40, bottom: 55 };
  const xs = series.flatMap((s) => s.points.map((p) => p.x));
  const ys = series.flatMap((s) => s.points.map((p) => p.y));
  const pad = (lo: number, hi: number) => [lo - 0.05 * (hi - lo || 1), hi + 0.05 * (hi - lo || 1)];
  const [x0, x1] = pad(Math.min(...xs), Math.max(...xs));
  const [y0, y1] = pad(Math.min(...ys), Math.max(...ys));
  const px = (x: number) => margin.left + ((x - x0) / (x1 - x0)) * (width - margin.left - margin.right);
  const py = (y: number) => height - margin.bottom - ((y - y0) / (y1 - y0)) * (height - margin.top - margin.bottom);
  const parts: string[] = [
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="24" text-anchor="middle" font-size="16" font-family="sans-serif">${escape(o.title)}</text>`,
    `<line x1="${margin.left}" y1="${height - margin.bottom}" x2="${width - margin.right}" y2="${height - margin.bottom}" stroke="black"/>`,
    `<line x1="${margin.left}" y1="${margin.top}" x2="${margin.left}" y2="${height - margin.bottom}" stroke="black"/>`,
    `<text x="${(margin.left + width - margin.right) / 2}" y="${height - 12}" text-anchor="middle" font-size="13" font-family="sans-serif">${escape(o.xLabel)}</text>`,
    `<text x="18" y="${(margin.top + height - margin.bottom) / 2}" text-anchor="middle" font-size="13" font-family="sans-serif" transform="rotate(-90 18 ${(margin.top + height - margin.bottom) / 2})">${escape(o.yLabel)}</text>`,
  ];
  for (const t of ticks(x0, x1)) parts.push(`<line x1="${px(t)}" y1="${height - margin.bottom}" x2="${px(t)}" y2="${height - margin.bottom + 5}" stroke="black"/><text x="${px(t)}" y="${height - margin.bottom + 18}" text-anchor="middle" font-size="11" font-family="sans-serif">${t}</text>`);
  for (const t of ticks(y0, y1)) parts.push(`<line x1="${margin.left - 5}" y1="${py(t)}" x2="${margin.left}" y2="${py(t)}" stroke="black"/><text x="${margin.left - 8}" y="${py(t) + 4}" text-anchor="end" font-size="11" font-family="sans-serif">${t}</text>`);
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${s.points.map((p) => `${px(p.x)},${py(p.y)}`).join(" ")}"/>`);
    for (const p of s.points) {
      parts.push(`<circle cx="${px(p.x)}" cy="${py(p.y)}" r="4" fill="${color}"/>`);
      if (p.label) parts.push(`<text x="${px(p.x) + 6}" y="${py(p.y) - 6}" font-size="10" font-family="sans-serif" fill="${color}">${escape(p.label)}</text>`);
    }
    const ly = margin.top + 10 + 20 * i;
    parts.push(`<line x1="${width - margin.right + 15}" y1="${ly}" x2="${width - margin.right + 35}" y2="${ly}" stroke="${color}" stroke-width="2"/><text x="${width - margin.right + 40}" y="${ly + 4}" font-size="12" font-family="sans-serif">${escape(s.name)}</text>`);
  });
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${parts.join("")}</svg>`;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await sharp(Buffer.from(svg)).png().toFile(file);
}
