/**
 * File helpers of the model-directory loader: every error names the file it is about and,
 * inside `loadModel`, why the file was wanted (`(model_index.json lists unet)`).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, invalid } from "../errors";

/** Who is loading and, optionally, why (appended to each message). */
export interface FileContext {
  who: string;
  because?: string;
}

/** The one error factory of the loader: `loadModel: /m/unet/model.pt is missing (model_index.json lists unet)`. */
export function fileError(context: FileContext, message: string): Error {
  return new Error(`${context.who}: ${message}${context.because ? ` (${context.because})` : ""}`);
}

export function isDirectory(dir: string): boolean {
  return fs.existsSync(dir) && fs.statSync(dir).isDirectory();
}

export function isFile(file: string): boolean {
  return fs.existsSync(file) && fs.statSync(file).isFile();
}

export function requireDirectory(dir: string, context: FileContext): void {
  if (!isDirectory(dir)) throw fileError(context, `${dir} is missing or not a directory`);
}

export function requireFile(file: string, context: FileContext): void {
  if (!isFile(file)) throw fileError(context, `${file} is missing`);
}

/** Reads a file holding one JSON object. */
export function readJsonObject(file: string, context: FileContext): Record<string, unknown> {
  requireFile(file, context);
  let value: unknown;
  try {
    value = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (error) {
    throw fileError(context, `${file} is not valid JSON (${(error as Error).message})`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw fileError(context, `${file} must hold a JSON object but holds ${describe(value)}`);
  }
  return value as Record<string, unknown>;
}

/** Validates a directory argument and returns it resolved. */
export function directoryArgument(dir: unknown, who: string): string {
  if (typeof dir !== "string" || dir.length === 0) throw invalid("directory path", `${who} dir`, dir);
  return path.resolve(dir);
}
