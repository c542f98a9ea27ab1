/** The `torch-diffusion` command run in-process, as the CLI tests use it. */
import { main } from "../../lib/cli";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the command line `args` in this process (stderr as a non-terminal) and collects its output;
 * `onStderr` sees each stderr write (to abort on a progress line).
 * @example const { code, stderr } = await runCli(["generate", "a bag", "--steps", "1"]);
 */
export async function runCli(args: string[], options: { signal?: AbortSignal; onStderr?: (text: string) => void } = {}): Promise<CliResult> {
  let stdout = "";
  let stderr = "";
  const io = {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => { stderr += s; options.onStderr?.(s); }, isTTY: false },
  };
  const code = await main(args, io, options.signal);
  return { code, stdout, stderr };
}
